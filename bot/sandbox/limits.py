"""Slack's size limits on messages and Block Kit, checked the way Slack rejects them.

Deliberately independent of `bot.slack_out.fit_to_limits`: the sandbox stands in for Slack,
so a bug in the bot's trimming shows up here as `invalid_blocks` or `msg_too_long`.
"""

from __future__ import annotations

from typing import Any

MAX_TEXT = 40_000
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
TEXT_LIMITS = {"section": 3000, "header": 150}
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_CONTEXT_TEXT = 2000
MAX_BUTTON_TEXT = 75
MAX_ACTIONS_ELEMENTS = 25


def _text_of(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return ""


def _check_element(where: str, element: Any, errors: list[str]) -> None:
    if not isinstance(element, dict) or "type" not in element:
        errors.append(f"missing required field: type [json-pointer:{where}]")
        return
    if element["type"] == "button" and len(_text_of(element.get("text"))) > MAX_BUTTON_TEXT:
        errors.append(f"must be less than {MAX_BUTTON_TEXT + 1} characters [{where}/text]")


def block_errors(blocks: Any, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Slack-style error strings for `blocks`; empty when Slack would accept them."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"no more than {max_blocks} items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        where = f"/blocks/{i}"
        if not isinstance(block, dict) or "type" not in block:
            errors.append(f"missing required field: type [json-pointer:{where}]")
            continue
        kind = block["type"]
        limit = TEXT_LIMITS.get(kind)
        if limit is not None and len(_text_of(block.get("text"))) > limit:
            errors.append(f"must be less than {limit + 1} characters [json-pointer:{where}/text]")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"must provide text or fields [json-pointer:{where}]")
            fields = block.get("fields") or []
            if len(fields) > MAX_FIELDS:
                errors.append(f"no more than {MAX_FIELDS} items allowed [{where}/fields]")
            for j, f in enumerate(fields):
                if len(_text_of(f)) > MAX_FIELD_TEXT:
                    errors.append(f"must be less than 2001 characters [{where}/fields/{j}]")
            if "accessory" in block:
                _check_element(f"{where}/accessory", block["accessory"], errors)
        elif kind == "context":
            elements = block.get("elements") or []
            if len(elements) > MAX_CONTEXT_ELEMENTS:
                errors.append(f"no more than 10 items allowed [{where}/elements]")
            for j, e in enumerate(elements):
                if len(_text_of(e)) > MAX_CONTEXT_TEXT:
                    errors.append(f"must be less than 2001 characters [{where}/elements/{j}]")
        elif kind == "actions":
            elements = block.get("elements") or []
            if len(elements) > MAX_ACTIONS_ELEMENTS:
                errors.append(f"no more than 25 items allowed [{where}/elements]")
            for j, e in enumerate(elements):
                _check_element(f"{where}/elements/{j}", e, errors)
    return errors
