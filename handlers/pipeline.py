"""`/crm pipeline [department|owner]`: open deals by stage, won and lost this month and last,
and the largest open deals, from the deal rows (storage/deals.py).

Who sees what: only people the access model (handlers/access.py) lets read customer data use
the command; `may_see_values` decides whether they see amounts and deal names (and, for the
largest deals, the customer's name): the `deals` card field granted to them, and one of their
departments among `[pipeline] values = [...]` when that is set. `department_sees_values` is the
same rule for a department (the digests). Without values the database is not even asked for
amounts.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy import select

from bot.lib.blocks import pipeline as render
from bot.lib.blocks import reply
from bot.lib.blocks.customers import label
from bot.lib.errors import NotFound, UserError
from bot.lib.interaction import Command
from handlers import access
from handlers.commands import CommandRouter
from handlers.deps import Deps
from storage import deals
from storage.customers import Customers
from storage.models import Customer

log = logging.getLogger(__name__)

USAGE = "pipeline [department|owner]"
USER_REF = re.compile(r"^<?@?([UW][A-Z0-9]{2,})(?:\|[^>]*)?>?$")


def department_sees_values(deps: Deps, department: str | None) -> bool:
    if department is None or department not in deps.config.departments:
        return False
    granted = deps.config.departments[department].fields
    if "deals" not in (granted if granted is not None else deps.config.access.fields):
        return False
    allowed = deps.config.pipeline.values
    return allowed is None or department in allowed


def may_see_values(deps: Deps, reader: access.Access) -> bool:
    """Whether the reader sees deal values and names: the access model grants them the
    `deals` card field, and one of their departments is among `[pipeline] values`."""
    return "deals" in reader.fields and any(
        department_sees_values(deps, d) for d in reader.reader.departments
    )


async def parse_scope(deps: Deps, cmd: Command) -> tuple[deals.Scope, str]:
    """(whose deals, the title) for the command's argument."""
    arg = cmd.args.strip()
    if not arg:
        return deals.Scope(), "Pipeline: every department"
    if len(arg.split()) > 1:
        raise UserError(f"Usage: `/crm {USAGE}`")
    if arg.lower() in ("mine", "me"):
        return deals.Scope(owner=cmd.user), "Pipeline: your deals"
    found = USER_REF.match(arg)
    if found:
        return deals.Scope(owner=found.group(1)), f"Pipeline: deals of <@{found.group(1)}>"
    try:
        dept = await deps.directory.get(arg)
    except NotFound:
        raise UserError(
            f"No department `{arg[:40]}`; try a department, `mine` or a user id. "
            f"Usage: `/crm {USAGE}`"
        ) from None
    return deals.Scope(department=dept.key), f"Pipeline: {dept.name}"


async def build(deps: Deps, scope: deals.Scope, title: str, *, values: bool) -> list[dict]:
    async with deps.db.transaction() as session:
        result = await deals.pipeline(session, scope, deps.clock(), with_values=values)
        return await blocks_of(deps, session, result, title, values=values)


async def blocks_of(
    deps: Deps, session, result: deals.Pipeline, title: str, *, values: bool
) -> list[dict]:
    """The pipeline's blocks; with values, the largest deals named (their names and their
    customers' decrypted here, for people allowed to see them)."""
    lines: list[render.DealLine] = []
    if values and result.largest:
        ids = {d.customer_id for d in result.largest}
        stmt = select(Customer).where(Customer.id.in_(ids))
        customers = list((await session.execute(stmt)).scalars())
        names = deals.open_names(deps.vault, customers, result.largest)
        repo = Customers(session, deps.vault)
        who = {c.id: label(repo.read(c)) for c in customers if c.erased_at is None}
        lines = [
            render.DealLine(
                names.get(d.deal_id), who.get(d.customer_id), d.stage, d.amount, d.currency
            )
            for d in result.largest
        ]

    def view(t: deals.Total) -> render.TotalView:
        return render.TotalView(t.count, t.amounts)

    return render.pipeline_blocks(
        title,
        {s: view(t) for s, t in result.by_stage.items()},
        {k: view(t) for k, t in result.won.items()},
        {k: view(t) for k, t in result.lost.items()},
        lines,
        values=values,
    )


async def pipeline_command(deps: Deps, cmd: Command) -> dict:
    reader = await access.require(deps, cmd.person)
    scope, title = await parse_scope(deps, cmd)
    values = may_see_values(deps, reader)
    blocks = await build(deps, scope, title, values=values)
    log.info("/crm pipeline by %s (values: %s)", cmd.user, values)
    return reply(title, blocks)


def register(router: CommandRouter) -> None:
    router.add("pipeline", pipeline_command, USAGE, "deals by stage, won and lost, largest open")
