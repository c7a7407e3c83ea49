"""Validation of customer fields as the sync event contract defines them (`customer` object).

Used for imports and for edits, so bad input gets one clear reason and changes nothing.
"""

from __future__ import annotations

from typing import Any

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


def validate_customer(raw: dict[str, Any]) -> dict[str, Any]:
    """Return the known fields, typed; raise ValueError naming the first bad field."""
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
