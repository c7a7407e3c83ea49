"""Placeholder: replaced by the RabbitMQ sync capability."""


class InvalidEvent(Exception):
    pass


def make_handler(deps):
    async def handle(body: bytes, attempt: int) -> None:
        raise InvalidEvent("sync is not built yet")

    return handle, (InvalidEvent,)


def jobs(deps) -> list:
    return []
