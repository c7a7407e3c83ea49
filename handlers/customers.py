"""Placeholder: replaced by the customers capability."""


def register(app, deps, router) -> None:
    pass
