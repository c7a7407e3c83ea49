"""JSON from outside (sync events, dead letters, Slack requests, import lines), parsed with a
size and a depth limit.

`json.loads` has neither: a deep body raises `RecursionError` (which stopped the sync consumer)
or, just under the interpreter's limit, hands a structure to code that recurses again. Here a
body is refused, with a short reason naming the limit, when it is larger than `max_bytes` or
nests deeper than `max_depth`. The depth is counted on the text before parsing (brackets
outside strings), so a deep body costs one linear scan and no parser recursion; the scan is a
regular expression that skips strings whole, so it runs at C speed.

Decision: 32 levels. The event contract nests 3 deep (event, customer/data, a value); Slack
payloads about 10 (view state values); 32 leaves room for producers' extra properties.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
MAX_BYTES = 1024 * 1024  # a sync event is a few kB; Slack's payloads stay well under this

# A JSON string (with escapes) or one bracket: strings are skipped whole, brackets counted.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JsonRefused(ValueError):
    """The text is not JSON within the limits; the message is the reason (never the value)."""


def depth_of(data: bytes) -> int:
    """How deep brackets nest in `data` (outside strings); 0 for a scalar."""
    deepest = level = 0
    for match in _TOKENS.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            level += 1
            deepest = max(deepest, level)
        elif token in (b"]", b"}"):
            level -= 1
    return deepest


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> Any:
    """The parsed value; JsonRefused with the reason when too large, too deep, not UTF-8 or
    not JSON. Numbers too large for a float (`1e400`) are refused too: Python would make them
    `inf`, which no column can hold."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise JsonRefused(f"larger than {max_bytes} bytes")
    if depth_of(raw) > max_depth:
        raise JsonRefused(f"nested deeper than {max_depth} levels")
    try:
        text = raw.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise JsonRefused("not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:  # cannot happen within max_depth; kept as a last fence
        raise JsonRefused(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, and ours from the hooks
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise JsonRefused(f"not JSON ({reason})") from None


def loads_object(data: bytes | str, **limits: int) -> dict[str, Any]:
    """`loads`, and the value must be an object."""
    value = loads(data, **limits)
    if not isinstance(value, dict):
        raise JsonRefused("not a JSON object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number too large")
    return value
