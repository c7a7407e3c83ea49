"""The interaction toolkit: what every Slack listener needs, done one way.

- **Parsing, once.** `parse_command`, `parse_click`, `parse_shortcut`, `parse_submission` and
  `parse_event` turn bolt's `body` into typed objects: the acting `Person` (with the fields of
  the signed payload an access check needs), where it happened (`Place`), the message and
  thread, the button's value, and the modal's `private_metadata` as a pydantic model
  (`ModalMeta` and its subclasses, one per modal).
- **Ids.** `parse_customer_id`, `parse_handoff_id`, `parse_approval_id`: one parser per kind of
  id that arrives from a button or a modal, each None for anything that is not one.
- **Errors.** `answer_for` maps an error to the text a person sees: a `UserError` (and its
  `NotFound`, `Forbidden`) is its message; anything else is logged with a short reference and
  answered with `SORRY`. `install` registers it with bolt's `app.error` (failures of ack
  functions) and with the lazy-listener runner (bolt would only log those), so no listener
  catches errors itself.
- **Answers.** `tell` answers a person where the interaction happened and falls back to their
  DM when that place refuses; a refusal is never only logged.
- **Drain.** `DrainableLazyRunner` keeps the tasks of bolt's lazy listeners, so a stop waits for
  the work already acknowledged to Slack. Every listener acks and hands its work to a lazy
  listener (`app.action(id)(ack=ack_only, lazy=[work])`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NewType, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from slack_bolt.async_app import AsyncApp
from slack_bolt.kwargs_injection.async_utils import build_async_required_kwargs
from slack_bolt.lazy_listener.asyncio_runner import AsyncioLazyListenerRunner
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.util.utils import get_arg_names_of_callable
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.lib.blocks import plain, section
from bot.lib.errors import UserError
from bot.lib.slack_out import SlackError, SlackOut

log = logging.getLogger(__name__)

SORRY = "Sorry, that did not work; it was logged (ref {ref}). Please try again."
MAX_ID = 64  # longer than any spelling of a UUID: not an id, whatever it parses to


# --- who and where ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """Who acted, with what Slack signed about them: enough for an access check to tell a
    member of this workspace from a guest of a shared channel or another organisation."""

    id: str
    team_id: str | None = None  # the person's own team (user.team_id; a command's team_id)
    workspace_id: str | None = None  # the team the request came from (team.id / team_id)
    enterprise_id: str | None = None
    is_enterprise_install: bool = False


@dataclass(frozen=True)
class Place:
    """Where an answer to an interaction is meant: its `response_url` when Slack gave one
    (it reaches the person in any conversation, the bot a member or not), else an ephemeral
    message in `channel` (in `thread_ts`'s thread), else the person's DM."""

    channel: str | None = None
    thread_ts: str | None = None
    response_url: str | None = None


def _flag(value: object) -> bool:
    return value is True or str(value).lower() == "true"  # commands send "true"/"false"


def _part(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _person(body: dict[str, Any]) -> Person:
    user = body.get("user")
    team = _part(body, "team")
    enterprise = _part(body, "enterprise")
    if isinstance(user, dict):  # interactivity payloads
        return Person(
            id=str(user.get("id") or ""),
            team_id=user.get("team_id") or team.get("id"),
            workspace_id=team.get("id"),
            enterprise_id=enterprise.get("id") or team.get("enterprise_id"),
            is_enterprise_install=_flag(body.get("is_enterprise_install")),
        )
    event = body.get("event") if isinstance(body.get("event"), dict) else None
    if event is not None:  # Events API
        return Person(
            id=str(event.get("user") or ""),
            team_id=event.get("user_team") or event.get("team") or body.get("team_id"),
            workspace_id=body.get("team_id"),
            enterprise_id=body.get("enterprise_id"),
            is_enterprise_install=_flag(
                ((body.get("authorizations") or [{}])[0] or {}).get("is_enterprise_install")
            ),
        )
    return Person(  # slash commands
        id=str(body.get("user_id") or ""),
        team_id=body.get("team_id"),
        workspace_id=body.get("team_id"),
        enterprise_id=body.get("enterprise_id"),
        is_enterprise_install=_flag(body.get("is_enterprise_install")),
    )


def channel_of_click(body: dict[str, Any]) -> str | None:
    """The channel of a click: the container's, else the payload's `channel`.

    The container is the surface that holds the button, and the click's `message_ts` comes from
    it too, so channel and ts always name the same message (the handoff flow compares the
    pair with the message it posted). Slack sets `channel` to the same id for a message
    container; it is the fallback for payloads without a container. A button in a view (App
    Home, modal) has neither: None, and answers go to the person's DM."""
    container = body.get("container") or {}
    return container.get("channel_id") or (body.get("channel") or {}).get("id")


# --- parsed interactions ----------------------------------------------------------------------


class _ByPerson:
    """What every parsed interaction has: the acting person, and their id as `user`."""

    person: Person

    @property
    def user(self) -> str:
        return self.person.id


@dataclass(frozen=True)
class Command(_ByPerson):
    """A slash command: who typed it, where, and its arguments (cleaned by the router)."""

    person: Person
    channel: str
    args: str
    trigger_id: str | None = None
    response_url: str | None = None

    @property
    def place(self) -> Place:
        return Place(channel=self.channel, response_url=self.response_url)


def parse_command(body: dict[str, Any], args: str = "") -> Command:
    return Command(
        person=_person(body),
        channel=str(body.get("channel_id") or ""),
        args=args,
        trigger_id=body.get("trigger_id"),
        response_url=body.get("response_url"),
    )


@dataclass(frozen=True)
class Click(_ByPerson):
    """A button click (block_actions)."""

    person: Person
    action_id: str
    value: str | None
    channel: str | None
    message_ts: str | None
    thread_ts: str | None
    trigger_id: str | None
    response_url: str | None

    @property
    def place(self) -> Place:
        return Place(self.channel, self.thread_ts, self.response_url)


def parse_click(body: dict[str, Any]) -> Click:
    container = body.get("container") or {}
    action = (body.get("actions") or [{}])[0]
    message = body.get("message") or {}
    value = action.get("value")
    return Click(
        person=_person(body),
        action_id=str(action.get("action_id") or ""),
        value=value if isinstance(value, str) else None,
        channel=channel_of_click(body),
        message_ts=container.get("message_ts"),
        thread_ts=container.get("thread_ts") or message.get("thread_ts"),
        trigger_id=body.get("trigger_id"),
        response_url=body.get("response_url"),
    )


@dataclass(frozen=True)
class Shortcut(_ByPerson):
    """A message shortcut (message_action): the message it was used on."""

    person: Person
    callback_id: str
    channel: str | None
    message: dict[str, Any]
    message_ts: str | None
    trigger_id: str | None
    response_url: str | None

    @property
    def place(self) -> Place:
        return Place(self.channel, response_url=self.response_url)


def parse_shortcut(body: dict[str, Any]) -> Shortcut:
    message = body.get("message") or {}
    return Shortcut(
        person=_person(body),
        callback_id=str(body.get("callback_id") or ""),
        channel=(body.get("channel") or {}).get("id"),
        message=message,
        message_ts=body.get("message_ts") or message.get("ts"),
        trigger_id=body.get("trigger_id"),
        response_url=body.get("response_url"),
    )


class ModalMeta(BaseModel):
    """Base of every modal's `private_metadata`: where the modal was opened, so that answers
    (and errors) about its submission go back there. Each modal subclasses it with its own
    fields; unknown fields are ignored so the base can be read from any of them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    channel_id: str | None = None


M = TypeVar("M", bound=ModalMeta)


@dataclass(frozen=True)
class Submission(_ByPerson):
    """A view submission: the values typed in, and the metadata the bot put in the modal."""

    person: Person
    view_id: str
    callback_id: str
    values: dict[str, Any]
    private_metadata: str

    def input(self, block: str, action: str) -> dict[str, Any]:
        return (self.values.get(block) or {}).get(action) or {}

    def text(self, block: str, action: str) -> str:
        """A text input's value, stripped ("" when empty)."""
        return str(self.input(block, action).get("value") or "").strip()

    def selected(self, block: str, action: str) -> str:
        """A select's chosen option's value ("" when none)."""
        return str((self.input(block, action).get("selected_option") or {}).get("value") or "")

    def meta(self, model: type[M]) -> M | None:
        """The metadata as `model`; None when it does not parse (an out-of-date form)."""
        try:
            return model.model_validate_json(self.private_metadata or "")
        except ValidationError:
            return None

    @property
    def place(self) -> Place:
        base = self.meta(ModalMeta)
        return Place(base.channel_id if base else None)


def parse_submission(body: dict[str, Any]) -> Submission:
    view = body.get("view") or {}
    return Submission(
        person=_person(body),
        view_id=str(view.get("id") or ""),
        callback_id=str(view.get("callback_id") or ""),
        values=((view.get("state") or {}).get("values")) or {},
        private_metadata=str(view.get("private_metadata") or ""),
    )


@dataclass(frozen=True)
class Event:
    """An Events API event (app_mention, app_home_opened): who, where, the event itself."""

    person: Person
    channel: str | None
    ts: str | None
    thread_ts: str | None
    event: dict[str, Any] = field(default_factory=dict)

    @property
    def place(self) -> Place:
        return Place(self.channel, self.thread_ts or self.ts)


def parse_event(body: dict[str, Any]) -> Event:
    event = body.get("event") or {}
    return Event(
        person=_person(body),
        channel=event.get("channel"),
        ts=event.get("ts"),
        thread_ts=event.get("thread_ts"),
        event=event,
    )


Interaction = Command | Click | Shortcut | Submission | Event


def parse(body: dict[str, Any]) -> Interaction | None:
    """Any request body bolt hands a listener, parsed by its kind (None for other kinds)."""
    kind = body.get("type")
    if "command" in body:
        return parse_command(body, str(body.get("text") or ""))
    if kind == "block_actions":
        return parse_click(body)
    if kind == "message_action":
        return parse_shortcut(body)
    if kind == "view_submission":
        return parse_submission(body)
    if kind == "event_callback":
        return parse_event(body)
    return None


# --- ids ------------------------------------------------------------------------------------

CustomerId = NewType("CustomerId", uuid.UUID)
HandoffId = NewType("HandoffId", uuid.UUID)
ApprovalId = NewType("ApprovalId", uuid.UUID)


def _uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str) or len(value) > MAX_ID:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def parse_customer_id(value: object) -> CustomerId | None:
    """A customer id from a card's button or a modal's metadata; None for anything else."""
    parsed = _uuid(value)
    return CustomerId(parsed) if parsed else None


def parse_handoff_id(value: object) -> HandoffId | None:
    """A handoff id from a handoff message's button or the decline modal's metadata."""
    parsed = _uuid(value)
    return HandoffId(parsed) if parsed else None


def parse_approval_id(value: object) -> ApprovalId | None:
    """An approval id from an approval message's button or the reject modal's metadata."""
    parsed = _uuid(value)
    return ApprovalId(parsed) if parsed else None


# --- answers ----------------------------------------------------------------------------------


async def tell(
    slack: SlackOut,
    person: Person | str,
    text: str,
    at: Place | None = None,
    blocks: list[dict[str, Any]] | None = None,
) -> None:
    """Answer `person` where the interaction happened (`at`): through its response_url, else
    as an ephemeral message in its channel; when that place refuses (or there is none), in
    their DM. Never raises: when even the DM fails, that is logged.

    A direct-message conversation (`D…`) gets no ephemeral try: it is the bot's DM with the
    person (where a DM lands anyway) or one between people the bot is not in, which Slack
    refuses; Slack refuses the channel too when the bot or the person is not in it, it is
    archived, private or gone: each ends in the DM."""
    user = person.id if isinstance(person, Person) else person
    at = at or Place()
    if at.response_url:
        try:
            webhook = AsyncWebhookClient(at.response_url)
            sent = await webhook.send(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
            if sent.status_code == 200:
                return
            log.warning(
                "answer via response_url refused (%s); trying the channel", sent.status_code
            )
        except Exception as exc:  # aiohttp's errors, timeouts: the next place may work
            log.warning(
                "answer via response_url failed (%s); trying the channel", type(exc).__name__
            )
    if at.channel and not at.channel.startswith("D"):
        try:
            await slack.ephemeral(at.channel, user, text, blocks, thread_ts=at.thread_ts)
            return
        except SlackError as exc:
            log.warning("ephemeral answer in %s failed (%s); sending a DM", at.channel, exc.kind)
    try:
        await slack.dm(user, text, blocks)
    except SlackError as exc:
        log.warning("DM answer to %s failed (%s)", user, exc.kind)


def answer_for(error: BaseException, what: str = "interaction") -> str:
    """The text a person sees for `error`: a UserError's own message; for anything else one
    apology with a short reference, the traceback logged under that reference."""
    if isinstance(error, UserError):
        return str(error)
    ref = uuid.uuid4().hex[:8]
    log.error("%s failed (ref %s)", what, ref, exc_info=error)
    return SORRY.format(ref=ref)


def _what(body: dict[str, Any], found: Interaction | None) -> str:
    if isinstance(found, Command):
        return f"{body.get('command')} {found.args.split(' ', 1)[0]}".strip()
    if isinstance(found, Click):
        return f"click on {found.action_id}"
    if isinstance(found, Shortcut):
        return f"shortcut {found.callback_id}"
    if isinstance(found, Submission):
        return f"submission of {found.callback_id}"
    if isinstance(found, Event):
        return f"event {found.event.get('type')}"
    return str(body.get("type") or "request")


async def answer_error(slack: SlackOut, error: BaseException, body: dict[str, Any]) -> None:
    """Tell the person behind `body` what `error` means for them (see `answer_for`)."""
    found = parse(body or {})
    text = answer_for(error, _what(body or {}, found))
    if found is None or not found.person.id:
        log.warning("no one to answer for a failed %s", _what(body or {}, found))
        return
    try:
        await tell(slack, found.person, text, found.place)
    except Exception:  # tell does not raise; an error handler must not either
        log.exception("answering an error failed")


# --- modals opened before their contents are ready -------------------------------------------


def notice_view(title: str, text: str) -> dict[str, Any]:
    """A modal that only says something (no submit button): "Loading…", or why not."""
    return {
        "type": "modal",
        "callback_id": "notice",
        "title": plain(title[:24]),
        "close": plain("Close"),
        "blocks": [section(text)],
    }


async def open_then_fill(
    slack: SlackOut,
    trigger_id: str | None,
    title: str,
    fill: Callable[[], Awaitable[dict[str, Any]]],
) -> None:
    """Open a modal saying it is loading, then replace it with the view `fill()` returns.

    A trigger_id is valid for 3 s; reading records (and Slack user groups) may take longer, so
    the modal is opened first. When `fill()` raises, the modal shows the answer instead, and a
    UserError with that answer is raised for `answer_error` to tell the person too."""
    if not trigger_id:
        raise UserError("Slack sent no trigger for this modal; please try again.")
    opened = await slack.open_view(trigger_id, notice_view(title, "Loading…"))
    try:
        view = await fill()
    except Exception as exc:
        text = answer_for(exc, f"modal {title}")
        try:
            await slack.update_view(str(opened.get("id")), notice_view(title, text))
        except SlackError as failed:
            log.warning("modal notice not shown (%s)", failed.kind)
        raise UserError(text) from exc
    await slack.update_view(str(opened.get("id")), view)


# --- wiring into bolt -------------------------------------------------------------------------


async def ack_only(ack: Callable[..., Awaitable[None]]) -> None:
    """The ack of a listener whose work all runs lazily."""
    await ack()


D = TypeVar("D")


def lazy(work: Callable[[D, dict[str, Any]], Awaitable[None]], deps: D):
    """`work(deps, body)` as a bolt lazy listener (bolt passes arguments by name: `body`)."""

    async def listener(body: dict[str, Any]) -> None:
        await work(deps, body)

    listener.__name__ = listener.__qualname__ = getattr(work, "__name__", "lazy_listener")
    return listener


class DrainableLazyRunner(AsyncioLazyListenerRunner):
    """bolt's asyncio runner of lazy listeners, keeping their tasks so that a stop lets the
    work acknowledged to Slack finish before the database closes, and sending their failures
    to `on_error` (bolt's own runner only logs them)."""

    def __init__(
        self,
        logger: logging.Logger,
        on_error: Callable[[BaseException, dict[str, Any]], Awaitable[None]],
    ):
        super().__init__(logger)
        self.on_error = on_error
        self.tasks: set[asyncio.Task] = set()

    def start(self, function: Callable[..., Awaitable[None]], request: AsyncBoltRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._run(function, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, function: Callable[..., Awaitable[None]], request: AsyncBoltRequest):
        try:
            kwargs = build_async_required_kwargs(
                logger=self.logger,
                required_arg_names=get_arg_names_of_callable(function),
                request=request,
                response=None,
                this_func=function,
            )
            await function(**kwargs)
        except Exception as exc:
            await self.on_error(exc, request.body)

    async def drain(self, within: float) -> None:
        """Wait (up to `within` seconds) for the lazy listeners running, and for those they
        are still starting."""
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=within)
            if late:
                log.warning("%d lazy listeners still running at shutdown", len(late))


def install(app: AsyncApp, slack: SlackOut) -> DrainableLazyRunner:
    """Route every failure of a listener, ack or lazy, to `answer_error`; returns the lazy
    runner, for the service to drain on stop."""

    async def on_error(error: BaseException, body: dict[str, Any]) -> None:
        await answer_error(slack, error, body)

    runner = DrainableLazyRunner(app.logger, on_error)
    app.listener_runner.lazy_listener_runner = runner
    app.error(on_error)
    return runner
