"""The App Home tab, published when a person opens it, and republished after a handoff or
approval of theirs changed (`refresh_homes`) for the people who opened it, in the background
(handlers.home_refresh.Homes, fed `publish_home` by `register`).

Its sections come from `deps.home_sections`, which the wiring fills (handlers/__init__.py): the
capabilities call `refresh_homes` from here, so this module must not import them."""

from __future__ import annotations

import logging
from functools import partial

from slack_bolt.async_app import AsyncApp

from bot.lib.blocks.home import home_view, refused_view
from bot.lib.errors import UserError
from bot.lib.interaction import Person, ack_only, lazy, parse_event
from bot.lib.slack_out import SlackError
from handlers import access
from handlers.deps import Deps

log = logging.getLogger(__name__)

SECTIONS = ("handoffs", "approvals")  # the tab's sections, in its order (see home_view)


async def publish_home(deps: Deps, who: Person | str) -> None:
    """Build and publish the home tab of `who` (the person who opened it, or a user id). Never
    raises for a section that fails: the tab says what could not be loaded, and the failure is
    logged. Someone who may not read customer data gets a tab saying who to ask instead."""
    user = who.id if isinstance(who, Person) else who
    checked = await access.check(deps, who)
    if not checked.decision:  # nothing about customers; who to ask instead
        await deps.slack.publish_home(user, refused_view(checked.decision.message or ""))
        return
    problems: list[str] = []
    parts: dict[str, list[dict]] = {}
    for name in SECTIONS:
        section = deps.home_sections.get(name)
        try:
            parts[name] = list(await section(deps, user)) if section else []
        except Exception:
            log.exception("home section %s failed for %s", name, user)
            problems.append(name)
            parts[name] = []
    try:
        departments = [d.name for d in await deps.directory.departments_of(user)]
    except SlackError:
        departments = []
    view = home_view(departments, parts["handoffs"], parts["approvals"], problems=problems)
    await deps.slack.publish_home(user, view)


async def refresh_homes(deps: Deps, department_key: str | None, requester: str) -> None:
    """After a handoff or approval changed: the App Home of the requester and of the members
    and leads of the department involved, for those who opened it, republished in the
    background (returns at once)."""
    deps.homes.schedule(department_key, requester)


async def opened(deps: Deps, body: dict) -> None:
    """The person opened the tab: publish it. Nobody asked a question, so a Slack failure
    is only logged (the tab shows its last version)."""
    event = parse_event(body)
    if event.event.get("tab", "home") != "home" or not event.person.id:
        return
    deps.homes.opened.add(event.person.id)  # republished after changes from now on
    try:
        await publish_home(deps, event.person)
    except SlackError as exc:
        log.warning("home tab of %s not published: %s", event.person.id, exc.kind)
    except UserError as exc:  # the access check could not be made: the old tab stays
        log.warning("home tab of %s not published: %s", event.person.id, exc)


def register(app: AsyncApp, deps: Deps) -> None:
    deps.homes.publish = partial(publish_home, deps)
    app.event("app_home_opened")(ack=ack_only, lazy=[lazy(opened, deps)])
