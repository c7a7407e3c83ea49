"""Approvals: `/crm approval`, its buttons, modal and jobs (`listeners`), the units of work (`flow`)
and the rules of who may decide (`rules`)."""
