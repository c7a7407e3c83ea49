"""The audit log's head in the bot's own log, whenever it moved (checked once a minute).

A hash chain cannot show entries cut from its end; a record of its head kept outside the
database can. The log lines `audit head SEQ:HASH` are that record: `crm-bot audit verify
--head SEQ:HASH`, with the last one logged, fails when the chain no longer reaches it. A head
is a sequence number and an HMAC: nothing personal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from storage import audit

if TYPE_CHECKING:
    from handlers.deps import Deps

log = logging.getLogger(__name__)

EVERY = 60.0  # seconds


def jobs(deps: Deps) -> list:
    logged: list[audit.Head | None] = [None]

    async def log_head() -> None:
        async with deps.db.transaction() as session:
            head = await audit.head(session)
        if head is not None and head != logged[0]:
            log.info("audit head %d:%s", *head)
            logged[0] = head

    return [("audit-head", EVERY, log_head)]
