"""The rules of approvals, as plain functions: amounts, who may decide, when a request expires.

Amounts (`/crm approval <customer> <kind> <amount> [reason]`):
- `discount`: a percentage, `15%` (or `15`), more than 0 and at most 100, two decimals at most;
- `refund`, `credit`: money, `1200`, `1200 EUR`, `1,200.50 USD` (thousands commas allowed, two
  decimals at most, more than 0); without a currency it is EUR (`DEFAULT_CURRENCY`);
- `exception`: no amount, written `-`.

Who may decide (approve or reject) a request:
- members of the approving department (finance unless CRM_CONFIG's `[approvals.department]`
  names another per kind), never the person who asked;
- above the department's `approval_limit`, only its leads. What is compared with the limit
  (`money_at_stake`): a refund's or credit's amount as is (the limit is in the company's
  currency; no exchange rates are applied); for a discount, the percentage of the customer's
  annual value (a discount on a customer whose annual value is unknown cannot be bounded, so it
  needs a lead); an exception has no amount to compare, and being an exception to the rules
  it always needs a lead (even where no limit is configured);
- a request expires `expire_after_hours` after it was made (default 72) and can no longer be
  decided.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

KINDS = ("discount", "refund", "credit", "exception")
MONEY_KINDS = ("refund", "credit")
DEFAULT_CURRENCY = "EUR"
PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"
DECIDED = (APPROVED, REJECTED, EXPIRED)
MAX_MONEY = Decimal("999999999999.99")  # Numeric(14, 2)
MAX_REASON = 2000

# ISO 4217 codes accepted after (or before) an amount. A closed list, so that a reason that
# starts with a three-letter word ("1200 for the outage") is not read as a currency.
# fmt: off
CURRENCIES = frozenset({
    "EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON", "BGN", "ISK",
    "JPY", "CNY", "HKD", "SGD", "AUD", "NZD", "CAD", "MXN", "BRL", "INR", "ZAR", "AED", "SAR",
    "ILS", "TRY", "KRW",
})
# fmt: on

USAGE = "approval <customer> <discount|refund|credit|exception> <amount> [reason]"
AMOUNT_HELP = {
    "discount": "a percentage, like `15%` (more than 0, at most 100)",
    "refund": "money, like `1200`, `1200 EUR` or `1,200.50 USD`",
    "credit": "money, like `1200`, `1200 EUR` or `1,200.50 USD`",
    "exception": "`-` (an exception has no amount)",
}

_NUMBER = re.compile(r"^(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?$")


class AmountError(ValueError):
    """The amount does not fit its kind; the message says what would."""


@dataclass(frozen=True)
class Amount:
    value: Decimal | None
    unit: str | None  # "%" or a currency code; None for an exception

    def __str__(self) -> str:
        return format_amount(self.value, self.unit)


def format_amount(value: Decimal | None, unit: str | None) -> str:
    if value is None:
        return "no amount"
    if unit == "%":
        return f"{value.normalize():f}%"
    return f"{value:,.2f} {unit or DEFAULT_CURRENCY}"


def _number(text: str) -> Decimal | None:
    if not _NUMBER.match(text):
        return None
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern already rules this out
        return None


def parse_kind(text: str) -> str:
    kind = (text or "").strip().lower()
    if kind not in KINDS:
        raise AmountError(f"The kind must be one of {', '.join(KINDS)}.")
    return kind


def parse_amount(kind: str, text: str) -> Amount:
    """The amount of a request of `kind`, from what a person typed."""
    raw = " ".join((text or "").split())
    bad = AmountError(f"A {kind} amount is {AMOUNT_HELP[kind]}.")
    if kind == "exception":
        if raw in ("-", ""):
            return Amount(None, None)
        raise bad
    if kind == "discount":
        number = _number(raw.removesuffix("%").strip())
        if number is None or not Decimal(0) < number <= Decimal(100):
            raise bad
        return Amount(number, "%")
    parts = raw.split(" ")
    currency = DEFAULT_CURRENCY
    if len(parts) == 2:
        if parts[1].upper() in CURRENCIES:
            number_text, currency = parts[0], parts[1].upper()
        elif parts[0].upper() in CURRENCIES:
            number_text, currency = parts[1], parts[0].upper()
        else:
            raise bad
    elif len(parts) == 1:
        number_text = parts[0]
    else:
        raise bad
    number = _number(number_text)
    if number is None or not Decimal(0) < number <= MAX_MONEY:
        raise bad
    return Amount(number, currency)


@dataclass(frozen=True)
class RequestArgs:
    customer: str
    kind: str
    amount: Amount
    reason: str | None


def parse_request(args: str) -> RequestArgs:
    """`<customer> <kind> <amount> [reason]`; money may be followed by a currency code."""
    words = (args or "").split()
    if len(words) < 3:
        raise AmountError("Tell me the customer, the kind and the amount.")
    customer, kind = words[0], parse_kind(words[1])
    rest = words[2:]
    amount_words = 1
    if (
        kind in MONEY_KINDS
        and len(rest) >= 2
        and (rest[1].upper() in CURRENCIES or rest[0].upper() in CURRENCIES)
    ):
        amount_words = 2
    amount = parse_amount(kind, " ".join(rest[:amount_words]))
    reason = " ".join(rest[amount_words:]).strip() or None
    if reason and len(reason) > MAX_REASON:
        raise AmountError(f"The reason is too long (at most {MAX_REASON} characters).")
    return RequestArgs(customer, kind, amount, reason)


# --- who may decide -------------------------------------------------------------------------


def money_at_stake(
    kind: str, amount: Decimal | None, annual_value: Decimal | None
) -> Decimal | None:
    """What is compared with the approval limit; None when it cannot be known."""
    if kind in MONEY_KINDS:
        return amount
    if kind == "discount" and amount is not None and annual_value is not None:
        return (amount * annual_value / Decimal(100)).quantize(Decimal("0.01"))
    return None


def needs_lead(kind: str, stake: Decimal | None, limit: Decimal | None) -> bool:
    if kind == "exception":
        return True
    if limit is None:
        return False
    return stake is None or stake > limit


def expires_at(created: datetime, hours: float) -> datetime:
    return created + timedelta(hours=hours)


@dataclass(frozen=True)
class Facts:
    """What the server knows, from its own records, when someone clicks approve or reject."""

    kind: str
    status: str
    requested_by: str
    expires_at: datetime
    stake: Decimal | None
    limit: Decimal | None
    decided_by: str | None = None


@dataclass(frozen=True)
class Refusal:
    code: str  # decided | expired | own | not_member | above_limit | exception
    message: str


def may_decide(
    facts: Facts, user: str, *, is_member: bool, is_lead: bool, now: datetime, department: str
) -> Refusal | None:
    """None when `user` may approve or reject the request, else why not."""
    if facts.status != PENDING:
        by = f" by <@{facts.decided_by}>" if facts.decided_by else ""
        return Refusal("decided", f"This request was already {facts.status}{by}.")
    if now >= facts.expires_at:
        return Refusal("expired", "This request has expired; ask for it again if still needed.")
    if user == facts.requested_by:
        return Refusal("own", "You cannot decide your own request.")
    if not (is_member or is_lead):
        return Refusal("not_member", f"Only members of {department} can decide this request.")
    if facts.kind == "exception" and not is_lead:
        return Refusal(
            "exception",
            f"An exception has no amount to bound it: only {department}'s leads can decide it.",
        )
    if needs_lead(facts.kind, facts.stake, facts.limit) and not is_lead:
        return Refusal(
            "above_limit",
            f"This request is above {department}'s approval limit: only its leads can decide it.",
        )
    return None
