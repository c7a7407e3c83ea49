"""Placeholder: replaced by the App Home capability."""


def register(app, deps) -> None:
    pass


async def publish_home(deps, user: str) -> None:
    pass
