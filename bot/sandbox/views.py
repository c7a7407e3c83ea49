"""The Slack Web API's views methods (modals and App Home), answered from the store."""

from __future__ import annotations

import time
from typing import Any

from bot.sandbox.limits import view_errors
from bot.sandbox.store import APP_ID, BOT_ID, TEAM_ID
from bot.sandbox.webapi import Body, Method, WebApi, error, parse_json_args, registrar

METHODS: dict[str, Method] = {}
method = registrar(METHODS)


def _make_view(api: WebApi, spec: Body, view_id: str, previous: Body | None = None) -> Body:
    return {
        "id": view_id,
        "team_id": TEAM_ID,
        "type": spec.get("type", "modal"),
        "blocks": spec.get("blocks", []),
        "private_metadata": spec.get("private_metadata", ""),
        "callback_id": spec.get("callback_id", ""),
        "state": {"values": {}},
        "hash": f"{int(time.time())}.{api.store.next_id('H')}",
        "title": spec.get("title"),
        "close": spec.get("close"),
        "submit": spec.get("submit"),
        "clear_on_close": bool(spec.get("clear_on_close", False)),
        "notify_on_close": bool(spec.get("notify_on_close", False)),
        "external_id": spec.get("external_id", ""),
        "previous_view_id": None,
        "root_view_id": (previous or {}).get("root_view_id", view_id),
        "app_id": APP_ID,
        "bot_id": BOT_ID,
    }


# trigger_ids "expire in three seconds" and are exchanged once (docs.slack.dev/interactivity/
# handling-user-interaction; views.open "Errors": expired_trigger_id, exchanged_trigger_id,
# invalid_trigger_id).
TRIGGER_TTL = 3.0


def _exchange_trigger(api: WebApi, trigger_id: str) -> tuple[str | None, Body | None]:
    """(user, None) for a trigger_id that may open a view now, else (None, Slack's error)."""
    trigger = api.store.triggers.get(trigger_id)
    if trigger is None:
        if trigger_id in api.store.used_triggers:
            return None, error("exchanged_trigger_id")
        return None, error("invalid_trigger_id")
    user, issued = trigger
    if time.monotonic() - issued > TRIGGER_TTL:
        return None, error("expired_trigger_id")
    del api.store.triggers[trigger_id]
    api.store.used_triggers.add(trigger_id)
    return user, None


def _view_error(spec: Any, kind: str) -> Body | None:
    """Slack refuses a malformed view with invalid_arguments and says why in
    response_metadata.messages (views.open, "Errors")."""
    if not isinstance(spec, dict) or spec.get("type") != kind:
        return error("invalid_arguments", response_metadata={"messages": ["bad view type"]})
    problems = view_errors(spec)
    if problems:
        return error("invalid_arguments", response_metadata={"messages": problems})
    return None


@method("views.open")
async def views_open(api: WebApi, args: Body) -> Body:
    parse_json_args(args, "view")
    user, err = _exchange_trigger(api, str(args.get("trigger_id", "")))
    if err:
        return err
    assert user is not None
    err = _view_error(args.get("view"), "modal")
    if err:
        return err
    view = _make_view(api, args["view"], api.store.next_id("V"))
    api.store.put_view(user, view)
    return {"ok": True, "view": view}


@method("views.update")
async def views_update(api: WebApi, args: Body) -> Body:
    parse_json_args(args, "view")
    old = (
        api.store.view(str(args["view_id"]))
        if args.get("view_id")
        else api.store.view_by_external_id(str(args.get("external_id", "")))
    )
    if old is None:
        return error("not_found")
    if args.get("hash") and args["hash"] != old["hash"]:
        return error("hash_conflict")
    err = _view_error(args.get("view"), old["type"])
    if err:
        return err
    user = api.store.view_owner(old["id"])
    assert user is not None
    view = _make_view(api, args["view"], old["id"], old)
    if view["type"] == "home":
        api.store.set_home(user, view)
    else:
        api.store.put_view(user, view)
    return {"ok": True, "view": view}


@method("views.publish")
async def views_publish(api: WebApi, args: Body) -> Body:
    parse_json_args(args, "view")
    user = str(args.get("user_id", ""))
    if not user or (api.store.users and user not in api.store.users):
        return error("user_not_found")
    err = _view_error(args.get("view"), "home")
    if err:
        return err
    old = api.store.home(user)
    if old and args.get("hash") and args["hash"] != old["hash"]:
        return error("hash_conflict")
    view = _make_view(api, args["view"], old["id"] if old else api.store.next_id("V"), old)
    api.store.set_home(user, view)
    return {"ok": True, "view": view}
