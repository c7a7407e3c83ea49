"""Handoffs: `/crm handoff`, its buttons and jobs (`listeners`), the units of work (`flow`) and the
rules that decide each step (`rules`)."""
