"""Placeholder: replaced by the departments capability."""


def register(app, deps, router) -> None:
    pass
