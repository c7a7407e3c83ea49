"""`/crm dept` and `/crm dept link`, as people see them, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from bot.lib.errors import UserError
from handlers.departments import limit_text, link_refusal, parse_args
from storage.departments import DepartmentView
from storage.models import AuditEntry, Department
from tests.fixtures.bot import ALICE, BOB, CAROL, FINANCE, GENERAL, SALES
from tests.fixtures.slack import block_texts, eventually


async def ask(bot, user: str, channel: str, text: str):
    before = len(bot.store.ephemerals(user))
    reply = await bot.sim.command(user, channel, "/crm", text)
    assert reply.status == 200
    await eventually(lambda: len(bot.store.ephemerals(user)) > before)
    return bot.store.ephemerals(user)[-1]


async def departments_and_audit(bot):
    async with bot.deps.db.transaction() as session:
        rows = (await session.execute(select(Department))).scalars().all()
        audit = (await session.execute(select(AuditEntry))).scalars().all()
    return {d.key: (d.channel_id, d.channel_linked_by) for d in rows}, audit


async def test_dept_lists_departments(bot):
    answer = await ask(bot, CAROL, GENERAL, "dept")
    assert answer.text == "4 departments"
    lines = block_texts(answer.blocks).splitlines()
    assert lines == [
        f"*Finance* (`finance`) · <#{FINANCE}> · 2 members, 1 lead · approval limit 10,000.00",
        "*Marketing* (`marketing`) · <#C0MARKET1> · 1 member, 1 lead · approval limit none",
        f"*Sales* (`sales`) · <#{SALES}> · 2 members, 1 lead · approval limit none",
        "*Customer Service* (`service`) · <#C0SERVICE> · 2 members, 1 lead · approval limit none",
    ]


async def test_a_lead_links_the_channel_where_they_type(bot):
    answer = await ask(bot, ALICE, GENERAL, "dept link Sales")
    assert answer.text.startswith(f"Linked <#{GENERAL}> to Sales")
    rows, audit = await departments_and_audit(bot)
    assert rows["sales"] == (GENERAL, ALICE)
    assert [(a.actor, a.action, a.entity_id, a.data) for a in audit] == [
        (
            ALICE,
            "department.channel_linked",
            "sales",
            {"channel": GENERAL, "previous_channel": SALES},
        )
    ]
    listing = await ask(bot, BOB, SALES, "dept")
    assert f"*Sales* (`sales`) · <#{GENERAL}>" in block_texts(listing.blocks)
    # the directory follows the link: the channel now belongs to sales
    assert (await bot.deps.directory.by_channel(GENERAL)).key == "sales"


@pytest.mark.parametrize(
    "user, channel, text, expected",
    [
        (BOB, GENERAL, "dept link sales", "Only a lead of Sales can link its channel."),
        (CAROL, GENERAL, "dept link sales", "Only a lead of Sales can link its channel."),
        (ALICE, "D0ALICE01", "dept link sales", "Type `/crm dept link` in the channel"),
        (ALICE, GENERAL, "dept link nowhere", "No department `nowhere`."),
        (ALICE, GENERAL, "dept link", "Usage: `/crm dept link <department>`"),
        (ALICE, GENERAL, "dept frob", "Usage: `/crm dept` or `/crm dept link <department>`"),
        (ALICE, GENERAL, "dept link " + "s" * 500, "No department `sss"),
    ],
)
async def test_refused_links_change_nothing(bot, user, channel, text, expected):
    before = await departments_and_audit(bot)
    answer = await ask(bot, user, channel, text)
    assert answer.text.startswith(expected), answer.text
    assert "\n" not in answer.text and len(answer.text) < 200
    rows, audit = await departments_and_audit(bot)
    assert rows == before[0] and audit == [] == before[1]


# --- rules, without Slack ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        ("", ("list", "")),
        ("link sales", ("link", "sales")),
        ("LINK  Customer   Service", ("link", "Customer Service")),
        ("link", UserError),
        ("show", UserError),
    ],
)
def test_parse_args(args, expected):
    if expected is UserError:
        with pytest.raises(UserError):
            parse_args(args)
    else:
        assert parse_args(args) == expected


SALES_DEPT = DepartmentView(
    "sales", "Sales", SALES, None, None, frozenset({ALICE, BOB}), frozenset({ALICE})
)


@pytest.mark.parametrize(
    "user, channel, refused",
    [
        (ALICE, GENERAL, None),
        (ALICE, "G0PRIVATE", None),
        (BOB, GENERAL, "Only a lead"),
        (ALICE, "D0ALICE01", "not in a direct message"),
        (ALICE, SALES, "already"),
    ],
)
def test_link_refusal(user, channel, refused):
    reason = link_refusal(SALES_DEPT, user, channel)
    assert (reason is None) if refused is None else (refused in reason)


def test_limit_text():
    assert limit_text(None) == "none" and limit_text(Decimal("10000")) == "10,000.00"
