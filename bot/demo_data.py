"""What `crm-bot demo` plays with: its departments, ~50 plausible customers and a stream of
sample sync events. Deterministic (seeded), made up, and valid per the `crm.sync/1` contract.

The email domains use `.example`, reserved for exactly this (RFC 2606): no real person or
company is named or mailed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.lib.config import (
    AlertRule,
    CrmConfig,
    Department,
    Digest,
    HandoffRules,
    PipelineRules,
    SyncRules,
)
from bot.sandbox import DEMO_USERS

# The sandbox's people (bot/sandbox/server.py DEMO_USERS), in their departments.
ALICE, BOB, CAROL = "U0ALICE01", "U0BOB0001", "U0CAROL01"
DAVE, ERIN, FRANK, GRACE = "U0DAVE001", "U0ERIN001", "U0FRANK01", "U0GRACE01"
SALES, MARKETING, SERVICE, FINANCE, GENERAL = (
    "C0SALES01",
    "C0MARKET1",
    "C0SERVICE",
    "C0FINANCE",
    "C0GENERAL",
)


def demo_config() -> CrmConfig:
    """Four departments on the sandbox's channels, and alerts for every sample event type."""
    departments = {
        "sales": Department(
            key="sales", name="Sales", channel=SALES, members=(ALICE, BOB), leads=(ALICE,)
        ),
        "marketing": Department(
            key="marketing", name="Marketing", channel=MARKETING, members=(CAROL,), leads=(CAROL,)
        ),
        "service": Department(
            key="service",
            name="Customer Service",
            channel=SERVICE,
            members=(DAVE, ERIN),
            leads=(DAVE,),
        ),
        "finance": Department(
            key="finance",
            name="Finance",
            channel=FINANCE,
            members=(FRANK, GRACE),
            leads=(GRACE,),
            approval_limit=10000,
        ),
    }
    alerts = (
        AlertRule(on="deal.stage_changed", notify=("sales",)),
        AlertRule(
            on="deal.stage_changed", when={"stage": "closed_won"}, notify=("finance", "service")
        ),
        AlertRule(on="ticket.opened", notify=("service",)),
        AlertRule(on="ticket.escalated", notify=("service", "sales")),
        AlertRule(on="invoice.overdue", notify=("finance", "sales")),
        AlertRule(on="payment.received", notify=("finance",)),
        AlertRule(on="lead.qualified", notify=("sales", "marketing")),
    )
    return CrmConfig(
        departments=departments,
        handoffs=HandoffRules(claim_within_minutes=30),
        alerts=alerts,
        sync=SyncRules(coalesce_seconds=1, broadcast_overdue_over=10000),
        # Marketing sees the pipeline's counts, not its values.
        pipeline=PipelineRules(values=("sales", "finance", "service")),
        # Finance's Monday digest: the latest Monday 08:00 has passed, so it is posted as the
        # demo starts (a digest due while the bot was down).
        digests=(
            Digest(department="finance", schedule="mon 08:00", timezone="Europe/Berlin"),
            Digest(department="marketing", schedule="mon 08:00", timezone="Europe/Berlin"),
        ),
    )


def roles(config: CrmConfig) -> dict[str, str]:
    """What the page's user switcher says about each person: department, and lead or not."""
    out: dict[str, str] = {}
    for dept in config.departments.values():
        for member in dept.members:
            role = dept.name + (" lead" if member in dept.leads else "")
            if member in dept.leads and dept.approval_limit is not None:
                role += f", approves above {dept.approval_limit:,.0f}"
            out.setdefault(member, role)
    return out


def topics(config: CrmConfig) -> dict[str, str]:
    """The line under each channel's name on the page: who works there."""
    out = {GENERAL: "Everyone"}
    for dept in config.departments.values():
        people = [
            DEMO_USERS.get(m, {}).get("real_name", m) + (" (lead)" if m in dept.leads else "")
            for m in dept.members
        ]
        out[dept.channel] = f"{dept.name}: {', '.join(people)}"
    return out


# -- customers -----------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST = _words(
    "Ada Amelia Benedikt Chiara Dmitri Elena Farid Greta Hiroshi Ines Jonas Katarina Leon "
    "Maya Nikolai Olivia Pavel Quentin Rosa Samir Tamara Umberto Vera Wilhelm Ximena Yusuf "
    "Zofia Anton Brigitte Carlos Dalia Emil Fatima Gustav Helena Ivan Julia Kofi Lucia Malik"
)
LAST = _words(
    "Lovelace Hopper Okafor Lindqvist Moreau Novak Castillo Brennan Tanaka Kowalski Ferreira "
    "Schmidt Haddad Rossi Jansen Petrov Dubois Nakamura Oliveira Weber Andersen Costa Fischer "
    "Gallagher Ivanova Kapoor Laine Mbeki Nilsson Ortega Popescu Quinn Reyes Sato Varga"
)
COMPANY_A = _words(
    "Northwind Bluefin Granite Harbor Juniper Lumen Meridian Nimbus Orchard Polar Quarry "
    "Redwood Silverline Tidewater Upland Vantage Willow Aurora Beacon Cobalt Driftwood Evergreen"
)
COMPANY_B = _words(
    "Logistics Analytics Foods Robotics Health Energy Textiles Studios Pharma Systems Outfitters "
    "Mobility Labs Capital Freight Furniture Optics Software"
)
SUFFIX = ("GmbH", "Ltd", "Inc.", "AG", "B.V.", "S.A.", "Oy", "")
NOTES = (
    "Prefers email over calls; decision maker is the CFO.",
    "Renewal due next quarter; asked about volume pricing.",
    "Pilot went well, wants a rollout plan for three sites.",
    "Sensitive to delivery dates after last year's delays.",
    "Introduced by a partner; keep the partner in copy.",
    "Asked for a security questionnaire before signing.",
    None,
    None,
)
TIERS = ("strategic", "enterprise", "enterprise", "mid_market", "mid_market", "smb", "smb", "smb")
STAGES = ("lead", "prospect", "customer", "customer", "customer", "churned")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def demo_customers(count: int = 50, seed: int = 42) -> list[dict[str, Any]]:
    """`count` made-up customers (dicts as in the event contract's `customer`), the same
    every run. The first is always Ada Lovelace of Analytical Engines Ltd."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    for i in range(count):
        if i == 0:
            first, last, company = "Ada", "Lovelace", "Analytical Engines Ltd"
        else:
            while True:
                first, last = rng.choice(FIRST), rng.choice(LAST)
                if f"{first} {last}" not in used:
                    break
            company = f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)} {rng.choice(SUFFIX)}"
        used.add(f"{first} {last}")
        company = company.strip()
        domain = _slug(" ".join(company.split()[:2])) + ".example"
        tier = "strategic" if i == 0 else rng.choice(TIERS)
        base = {"strategic": 250_000, "enterprise": 90_000, "mid_market": 30_000, "smb": 6_000}
        rows.append(
            {
                "external_id": f"CUS-{1001 + i}",
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}@{domain}",
                "phone": f"+44 20 7946 {rng.randrange(0, 1000):04d}",
                "company": company,
                "tier": tier,
                "lifecycle_stage": "customer" if i == 0 else rng.choice(STAGES),
                "owner_department": rng.choice(("sales", "sales", "service")),
                "owner_slack_user": rng.choice((ALICE, BOB)),
                "annual_value": round(base[tier] * rng.uniform(0.5, 1.8), -2),
                "notes": NOTES[0] if i == 0 else rng.choice(NOTES),
            }
        )
    return rows


# -- sample sync events --------------------------------------------------------------------
DEAL_FLOW = ("qualification", "proposal", "negotiation")
SUBJECTS = (
    "Cannot export the monthly report",
    "Invoice shows the wrong VAT number",
    "Login fails after password reset",
    "Shipment arrived damaged",
    "API returns 502 during peak hours",
    "Request to add five more seats",
    "Data import stuck at 80%",
)
CAMPAIGNS = ("Spring webinar", "Trade fair Berlin", "Pricing page", "Partner referral")
DEAL_NAMES = ("Renewal", "Expansion", "Pilot", "Platform upgrade", "Multi-year deal")
SOURCES = {
    "deal": "sales-crm",
    "ticket": "helpdesk",
    "invoice": "billing",
    "payment": "billing",
    "lead": "marketing",
}


@dataclass
class _Deal:
    deal_id: str
    name: str
    amount: float
    stage: str | None = None


@dataclass
class SampleEvents:
    """An endless, plausible stream: deals move through their stages (some to closed_won),
    tickets open and some escalate, invoices fall overdue and get paid, leads qualify."""

    customers: list[dict[str, Any]]
    seed: int = 7
    rng: random.Random = field(init=False)
    _deals: dict[str, _Deal] = field(default_factory=dict)
    _tickets: list[tuple[str, str, str]] = field(default_factory=list)
    _overdue: list[tuple[str, str, float]] = field(default_factory=list)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next()

    def next(self) -> dict[str, Any]:
        self._seq += 1
        kinds = ["deal", "deal", "ticket", "lead", "invoice"]
        if self._tickets:
            kinds.append("escalate")
        if self._overdue:
            kinds.append("payment")
        kind = "deal" if self._seq == 1 else self.rng.choice(kinds)
        return getattr(self, f"_{kind}")()

    def _customer(self) -> str:
        # The first few customers come up more often, so their threads grow.
        pool = self.customers[:8] if self.rng.random() < 0.5 else self.customers
        return str(self.rng.choice(pool)["external_id"])

    def _event(self, type_: str, customer: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "spec": "crm.sync/1",
            "id": f"demo-{uuid.uuid4()}",
            "type": type_,
            "occurred_at": datetime.now(UTC).isoformat(),
            "source": SOURCES[type_.split(".")[0]],
            "customer": {"external_id": customer},
            "data": data,
        }

    def _deal(self) -> dict[str, Any]:
        customer = self._customer()
        deal = self._deals.get(customer)
        if deal is None or deal.stage in ("closed_won", "closed_lost"):
            deal = _Deal(
                deal_id=f"D-{self.rng.randrange(10000, 99999)}",
                name=f"{self.rng.choice(DEAL_NAMES)} {datetime.now(UTC).year + 1}",
                amount=float(self.rng.randrange(8, 240) * 500),
            )
            self._deals[customer] = deal
        previous = deal.stage
        if previous is None:
            deal.stage = "qualification"
        elif previous == "negotiation" or self.rng.random() < 0.3:
            deal.stage = "closed_won" if self.rng.random() < 0.75 else "closed_lost"
        else:
            deal.stage = DEAL_FLOW[DEAL_FLOW.index(previous) + 1]
        data = {
            "deal_id": deal.deal_id,
            "name": deal.name,
            "amount": deal.amount,
            "currency": "EUR",
            "stage": deal.stage,
            "previous_stage": previous,
        }
        return self._event("deal.stage_changed", customer, data)

    def _ticket(self) -> dict[str, Any]:
        customer = self._customer()
        ticket = (customer, f"T-{self.rng.randrange(1000, 9999)}", self.rng.choice(SUBJECTS))
        self._tickets.append(ticket)
        priority = self.rng.choice(("low", "normal", "normal", "high"))
        data = {"ticket_id": ticket[1], "subject": ticket[2], "priority": priority}
        return self._event("ticket.opened", customer, data)

    def _escalate(self) -> dict[str, Any]:
        customer, ticket_id, subject = self._tickets.pop(0)
        priority = self.rng.choice(("high", "urgent"))
        data = {"ticket_id": ticket_id, "subject": subject, "priority": priority}
        return self._event("ticket.escalated", customer, data)

    def _invoice(self) -> dict[str, Any]:
        customer = self._customer()
        amount = float(self.rng.randrange(4, 60) * 250)
        invoice = f"INV-{self.rng.randrange(20000, 29999)}"
        self._overdue.append((customer, invoice, amount))
        data = {
            "invoice_id": invoice,
            "amount": amount,
            "currency": "EUR",
            "days_overdue": self.rng.choice((7, 14, 30, 45)),
        }
        return self._event("invoice.overdue", customer, data)

    def _payment(self) -> dict[str, Any]:
        customer, invoice, amount = self._overdue.pop(0)
        data = {"invoice_id": invoice, "amount": amount, "currency": "EUR"}
        return self._event("payment.received", customer, data)

    def _lead(self) -> dict[str, Any]:
        customer = self._customer()
        data = {"campaign": self.rng.choice(CAMPAIGNS), "score": self.rng.randrange(55, 99)}
        return self._event("lead.qualified", customer, data)


# -- pipeline history ----------------------------------------------------------------------
DEMO_NOTE = (
    "CUS-1001 told me on the phone they will look at other vendors at renewal unless support "
    "answers within a day. Sales should call before the renewal talks."
)


def demo_deals(
    customers: list[dict[str, Any]], now: datetime, count: int = 60, seed: int = 5
) -> list[tuple[str, dict[str, Any], datetime]]:
    """(customer external id, deal.stage_changed data, when) for a pipeline with a history:
    open deals in every stage, and deals won and lost over the last eight weeks."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        customer = str(rng.choice(customers)["external_id"])
        stage = rng.choice((*DEAL_FLOW, *DEAL_FLOW, "closed_won", "closed_won", "closed_lost"))
        when = now - timedelta(days=rng.uniform(0.5, 56))
        data = {
            "deal_id": f"D-H{i:03d}",
            "name": f"{rng.choice(DEAL_NAMES)} {now.year + 1}",
            "amount": float(rng.randrange(8, 240) * 500),
            "currency": "EUR",
            "stage": stage,
        }
        out.append((customer, data, when))
    return out
