"""Validation of customer fields as the sync event contract defines them (`customer` object),
and of what the database can store at all (`check_storable`).

Used for imports and for sync events, so bad input gets one clear reason and changes nothing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# storage/models.py `Money` is Numeric(14, 2): PostgreSQL refuses more (SQLite would keep it).
MAX_MONEY = Decimal("999999999999.99")

MAX_LENGTH = {
    "external_id": 128,
    "name": 200,
    "email": 254,
    "phone": 40,
    "company": 200,
    "owner_department": 64,
    "owner_slack_user": 32,
    "notes": 5000,
}
ENUMS = {
    "tier": ("strategic", "enterprise", "mid_market", "smb"),
    "lifecycle_stage": ("lead", "prospect", "customer", "churned"),
}
KNOWN = (*MAX_LENGTH, *ENUMS, "annual_value")


class NotStorable(ValueError):
    """A value the schema admits but the database cannot hold; the message names where."""


def check_storable(value: Any, where: str = "") -> None:
    """Raise NotStorable when `value` (a parsed event or import row, walked whole) holds text
    the database cannot store (NUL: PostgreSQL text refuses it; a lone surrogate: not
    encodable as UTF-8, in a column or under encryption) or a customer field beyond its
    column's range (`annual_value` above MAX_MONEY). Checked before any transaction, so such an
    input is refused at once with the reason, never retried as if the database had failed.
    The reason names the field, never the value (it may be personal data)."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(str(key), path or "key")
                stack.append((f"{path}.{key}" if path else str(key), child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    customer = value.get("customer") if isinstance(value, dict) else None
    for fields, prefix in ((customer, "customer."), (value, "")):
        number = fields.get("annual_value") if isinstance(fields, dict) else None
        if isinstance(number, int | float) and not isinstance(number, bool):
            _check_money(number, f"{prefix}annual_value")


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise NotStorable(f"{where or 'text'}: contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NotStorable(f"{where or 'text'}: not valid Unicode (a lone surrogate)") from None


def _check_money(number: float, where: str) -> None:
    if number != number or number in (float("inf"), float("-inf")):
        raise NotStorable(f"{where}: not a finite number")
    if abs(Decimal(str(number))) > MAX_MONEY:
        raise NotStorable(f"{where}: above {MAX_MONEY:,} (what the database holds)")


def validate_customer(raw: dict[str, Any]) -> dict[str, Any]:
    """Return the known fields, typed; raise ValueError naming the first bad field."""
    check_storable(raw)
    out: dict[str, Any] = {}
    ext = raw.get("external_id")
    if not isinstance(ext, str) or not ext.strip():
        raise ValueError("external_id is required")
    for key, value in raw.items():
        if key not in KNOWN:
            continue
        if value == "" and key != "external_id":
            value = None
        if value is None:
            out[key] = None
        elif key == "annual_value":
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"annual_value {value!r} is not a number") from None
            if number < 0 or number != number or number in (float("inf"), float("-inf")):
                raise ValueError("annual_value must be a number of 0 or more")
            _check_money(number, "annual_value")
            out[key] = number
        elif not isinstance(value, str):
            raise ValueError(f"{key} must be text")
        elif key in ENUMS and value not in ENUMS[key]:
            raise ValueError(f"{key} must be one of {', '.join(ENUMS[key])}")
        elif key in MAX_LENGTH and len(value) > MAX_LENGTH[key]:
            raise ValueError(f"{key} is longer than {MAX_LENGTH[key]} characters")
        elif any(ord(c) < 32 and c not in "\n\t" for c in value):
            raise ValueError(f"{key} contains control characters")
        else:
            out[key] = value
    if out.get("email") and "@" not in out["email"]:
        raise ValueError("email is not an email address")
    out["external_id"] = ext.strip()
    return out
