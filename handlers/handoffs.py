"""Placeholder: replaced by the handoffs capability."""


def register(app, deps, router) -> None:
    pass


def jobs(deps) -> list:
    return []


async def home_section(deps, user: str) -> list[dict]:
    return []
