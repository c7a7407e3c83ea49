"""`/crm pipeline` and the digests: totals by stage, won and lost, largest open deals, and the
digest's other lines, as pure Block Kit functions. Without values (a department not allowed
to see them) only counts are shown: the data passed in has no amounts then."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from . import Block, context, esc, header, section

STAGE_NAMES = {
    "qualification": "Qualification",
    "proposal": "Proposal",
    "negotiation": "Negotiation",
    "closed_won": "Won",
    "closed_lost": "Lost",
}


@dataclass(frozen=True)
class TotalView:
    count: int
    amounts: dict[str, Decimal]


@dataclass(frozen=True)
class DealLine:
    name: str | None  # None: not shown (no name, or not allowed)
    customer: str | None
    stage: str
    amount: Decimal | None
    currency: str | None


def money(amounts: dict[str, Decimal]) -> str:
    if not amounts:
        return ""
    parts = [f"{v:,.0f} {cur}".strip() for cur, v in sorted(amounts.items(), key=lambda i: -i[1])]
    return " + ".join(parts)


def total_line(label: str, total: TotalView, values: bool) -> str:
    n = f"{total.count} deal" + ("" if total.count == 1 else "s")
    worth = money(total.amounts) if values else ""
    return f"*{esc(label)}*: {n}" + (f" · {worth}" if worth else "")


def pipeline_blocks(
    title: str,
    by_stage: dict[str, TotalView],
    won: dict[str, TotalView],
    lost: dict[str, TotalView],
    largest: Sequence[DealLine],
    *,
    values: bool,
) -> list[Block]:
    stages = "\n".join(total_line(STAGE_NAMES.get(s, s), t, values) for s, t in by_stage.items())
    closed = "\n".join(
        [
            total_line("Won this month", won["this"], values),
            total_line("Won last month", won["last"], values),
            total_line("Lost this month", lost["this"], values),
            total_line("Lost last month", lost["last"], values),
        ]
    )
    blocks: list[Block] = [
        header(title),
        section("*Open deals by stage*\n" + stages),
        section(closed),
    ]
    if values and largest:
        lines = []
        for d in largest:
            what = esc(d.name) if d.name else "_a deal_"
            who = f" · {esc(d.customer)}" if d.customer else ""
            amount = money({d.currency or "": d.amount}) if d.amount is not None else "-"
            lines.append(f"• {what}{who} · {STAGE_NAMES.get(d.stage, d.stage)} · {amount}")
        blocks.append(section("*Largest open deals*\n" + "\n".join(lines)))
    if not values:
        blocks.append(context("Counts only: deal values are not shared with your department."))
    return blocks


def digest_lines(lines: Sequence[str]) -> Block:
    return section("\n".join(lines) if lines else "_nothing to report_")
