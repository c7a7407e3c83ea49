"""The read audit: every full card shown is an entry in the audit chain, and someone shown
many customers' cards within an hour is reported to the leads of their departments.

- The entry (`customer.card_viewed`) holds who (a Slack user id), which customer (its id), when,
  and through what (`via`: `show`, `customer_open`); nothing of the card. It is written in the
  transaction that read the card, so a card is never shown without its entry.
- `[access] show_alert_per_hour` (default 50): when one person has been shown the full cards of
  more different customers than that within the last hour, each lead of their departments (the
  person excepted) gets a direct message, at most once an hour per person. A DM, not the
  department channel: whether a colleague's reading looks wrong is for the leads to judge
  before anyone else sees it. The alert is itself an audit entry (`access.read_alert`), which
  is what "once an hour" is counted from, across replicas.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.lib.slack_out import SlackError
from handlers.access import Reader, mentions
from handlers.deps import Deps
from storage import audit
from storage.models import Customer, utcnow

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)
BOT_ACTOR = "crm-bot"


async def card_shown(
    deps: Deps, session: AsyncSession, reader: Reader, customer: Customer, via: str
) -> int | None:
    """Record that `reader` was shown `customer`'s full card; the number of customers they were
    shown within the hour when that calls for an alert now (recorded as sent), else None."""
    await audit.record_view(session, deps.vault, actor=reader.user, customer=customer, via=via)
    since = utcnow() - WINDOW
    count = await audit.customers_viewed(session, reader.user, since)
    limit = deps.config.access.show_alert_per_hour
    if count <= limit or await audit.alerted_since(session, reader.user, since):
        return None
    await audit.append(
        session,
        actor=BOT_ACTOR,
        action=audit.READ_ALERT,
        entity_type="user",
        entity_id=reader.user,
        data={"customers": count, "limit": limit, "departments": sorted(reader.departments)},
        vault=deps.vault,
    )
    return count


def alert_text(user: str, count: int, limit: int) -> str:
    who = mentions([user]) or "Someone"
    return (
        f"{who} was shown the full cards of {count} customers within the last hour (more than "
        f"the {limit} set in CRM_CONFIG). `crm-bot audit reads <customer>` lists who looked at "
        "a customer, and when."
    )


async def alert_leads(deps: Deps, reader: Reader, count: int) -> list[str]:
    """DM each lead of the reader's departments (not the reader); the leads told."""
    departments = await deps.directory.departments()
    leads = sorted(
        {u for key in reader.departments if key in departments for u in departments[key].leads}
        - {reader.user}
    )
    if not leads:
        log.warning("read alert for %s: their departments have no other lead to tell", reader.user)
    text = alert_text(reader.user, count, deps.config.access.show_alert_per_hour)
    told = []
    for lead in leads:
        try:
            await deps.slack.dm(lead, text)
            told.append(lead)
        except SlackError as exc:  # the alert entry stays in the audit chain either way
            log.warning("read alert to a lead not sent: %s", exc.kind)
    return told
