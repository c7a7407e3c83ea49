"""Block Kit as Slack checks it: each block and view parsed and validated with slack_sdk's
own models (slack_sdk.models.blocks / views, which know most of Slack's field limits), plus the
limits those models do not check, from Slack's Block Kit reference (docs.slack.dev/reference/
block-kit): at most 50 blocks in a message and 100 in a view, 2000 characters in a section
field and a context element, 75 in an option's text, 40000 in a message's `text`.

Deliberately independent of the bot's own trimming (`bot.lib.slack_out.fit_to_limits`): the
sandbox stands in for Slack, so a bug there shows up here as `invalid_blocks`.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

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
MAX_OPTION_TEXT = 75
MAX_MODAL_TITLE = 24


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


def model_errors(blocks: list[Any]) -> list[str]:
    """What slack_sdk's Block Kit models refuse in `blocks` (an unknown block type too)."""
    errors: list[str] = []
    for i, raw in enumerate(blocks):
        if not isinstance(raw, dict):
            continue
        try:
            block = Block.parse(raw)
            if block is None or type(block) is Block:
                errors.append(f"unknown block type [json-pointer:/blocks/{i}]")
                continue
            block.to_dict()
        except (SlackObjectFormationError, TypeError, ValueError, KeyError) as exc:
            errors.append(f"{exc} [json-pointer:/blocks/{i}]")
    return errors


def _options(node: Any, where: str, errors: list[str]) -> None:
    """Options anywhere under `node`: their text at most 75 characters."""
    if isinstance(node, dict):
        for key in ("options", "initial_options"):
            for j, option in enumerate(node.get(key) or []):
                if isinstance(option, dict) and len(_text_of(option.get("text"))) > MAX_OPTION_TEXT:
                    errors.append(
                        f"must be less than {MAX_OPTION_TEXT + 1} characters "
                        f"[json-pointer:{where}/{key}/{j}/text]"
                    )
        if isinstance(node.get("initial_option"), dict):
            _options({"options": [node["initial_option"]]}, where, errors)
        for key, value in node.items():
            if key not in ("options", "initial_options", "initial_option"):
                _options(value, f"{where}/{key}", errors)
    elif isinstance(node, list):
        for j, value in enumerate(node):
            _options(value, f"{where}/{j}", errors)


def view_errors(view: Any) -> list[str]:
    """What Slack refuses in a view: slack_sdk's View model (title 24, type, blocks 100,
    private_metadata 3000, ...) and the blocks as `block_errors` checks them."""
    if not isinstance(view, dict):
        return ["view must be an object"]
    errors: list[str] = []
    try:
        View(**view).to_dict()
    except (SlackObjectFormationError, TypeError, ValueError) as exc:
        errors.append(str(exc))
    title = view.get("title")
    if view.get("type") == "modal" and len(_text_of(title)) > MAX_MODAL_TITLE:
        limit = MAX_MODAL_TITLE + 1
        errors.append(f"must be less than {limit} characters [json-pointer:/view/title]")
    return errors + block_errors(view.get("blocks", []), MAX_VIEW_BLOCKS)


def block_errors(blocks: Any, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Slack-style error strings for `blocks`; empty when Slack would accept them."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    errors: list[str] = model_errors(blocks)
    _options(blocks, "/blocks", errors)
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
