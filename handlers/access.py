"""Who may read customer data, and which of it: the one gate every read goes through.

The rules (plain functions, table-tested in tests/test_access_rules.py):
- Only members of a configured department (its `members`, its user group, or its `leads`) read
  customer data at all: find, show, the card's buttons and modals, the handoff and approval
  lists, App Home, mentions.
- Never Slack guests (users.info `is_restricted` / `is_ultra_restricted`), deactivated accounts,
  or people of another organisation in a shared channel: a request whose user team differs from
  the installation's, or whom users.info reports with another `team_id` or as `is_stranger` (or
  does not know). This holds even when CRM_CONFIG lists them as members: a guest's membership is
  a configuration mistake the bot does not act on.
- A card shows its head (name, company, tier, stage, owner, external id: what the redacted
  card shows) to every reader; the other fields (`CARD_FIELDS`) as the reader's departments
  grant them: `[departments.X] fields`, else `[access] fields` (default: all, as before). A
  member of several departments sees the union. Leads see every field: they answer for what
  their department does with a customer and are the ones others are told to ask.
- Lists (`/crm handoffs`, `/crm approvals`, App Home) show only items the reader's departments
  are party to (`party_of`); the person's own requests are theirs too.
- A refusal says who to ask: the leads of the departments, as mentions built only from ids that
  look like Slack user ids.

The look-ups behind a `Reader` (users.info, cached `[access] users_cache_seconds`; auth.test for
the installation's team, once; the person's departments via handlers/directory.py) sit in
`reader_for`. A look-up whose outcome is unknown (a timeout, a 5xx, rate limited) is never
taken as a refusal: the person is asked to try again and nothing is cached.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bot.lib.config import CARD_FIELDS, CrmConfig
from bot.lib.errors import Forbidden, UserError
from bot.lib.interaction import Person
from bot.lib.slack_out import SlackError
from handlers.directory import Profile

if TYPE_CHECKING:
    from handlers.deps import Deps

log = logging.getLogger(__name__)

SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
ALL_FIELDS = frozenset(CARD_FIELDS)

# Timeline entries by the kind of event that made them, to the card field that shows them.
_TIMELINE = {"lead": "deals", "deal": "deals", "ticket": "tickets"}
_TIMELINE |= {"invoice": "invoices", "payment": "invoices"}

MEMBER, LEAD = "member", "lead"
GUEST, EXTERNAL, NO_DEPARTMENT = "guest", "external", "no_department"


class Dept(Protocol):
    """What the rules need of a department (storage.departments.DepartmentView has it;
    read-only, as that frozen dataclass's fields are)."""

    @property
    def key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def leads(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class Reader:
    """A person asking to read, as the bot established it (never from a payload's claims
    beyond the signed request's user and team)."""

    user: str
    departments: frozenset[str] = frozenset()  # keys of the departments they belong to
    leads: frozenset[str] = frozenset()  # keys of the departments they lead
    guest: bool = False  # a Slack guest, or a deactivated account
    external: bool = False  # of another organisation (shared channel), or unknown to Slack


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: str  # member | lead | guest | external | no_department
    fields: frozenset[str] = frozenset()  # the card fields the reader sees
    message: str | None = None  # the refusal, for the person

    def __bool__(self) -> bool:
        return self.allowed


class Refused(Forbidden):
    """A read the access model refuses; the message says who to ask."""

    def __init__(self, decision: Decision):
        super().__init__(decision.message or "You cannot see customer data.")
        self.decision = decision


# --- the rules --------------------------------------------------------------------------------


def visible_fields(reader: Reader, config: CrmConfig) -> frozenset[str]:
    """The card fields `reader` sees: all for a lead, else the union their departments grant."""
    if reader.leads:
        return ALL_FIELDS
    seen: set[str] = set()
    for key in reader.departments:
        dept = config.departments.get(key)
        granted = dept.fields if dept is not None and dept.fields is not None else None
        seen |= set(granted if granted is not None else config.access.fields)
    return frozenset(seen)


def decide(reader: Reader, config: CrmConfig, departments: Mapping[str, Dept]) -> Decision:
    """May `reader` read customer data (a card, a list, a modal about a customer), and which
    fields. Guests and outsiders first: being listed in a department does not let them in."""
    if reader.guest:
        return Decision(False, GUEST, message=_refusal(GUEST, departments, reader.departments))
    if reader.external:
        return Decision(False, EXTERNAL, message=_refusal(EXTERNAL, departments, ()))
    if not reader.departments:
        return Decision(False, NO_DEPARTMENT, message=_refusal(NO_DEPARTMENT, departments, ()))
    code = LEAD if reader.leads else MEMBER
    return Decision(True, code, fields=visible_fields(reader, config))


def party_of(reader: Reader) -> frozenset[str]:
    """The departments whose handoffs and approvals `reader` may list."""
    return reader.departments


@dataclass(frozen=True)
class Scope:
    """Which handoffs a list shows: sent to `to` or sent from `sent_from` (either), and of
    those only the ones one of `within` is party to (empty: no further limit)."""

    to: frozenset[str] = frozenset()
    sent_from: frozenset[str] = frozenset()
    within: frozenset[str] = frozenset()


def list_scope(reader: Reader, asked: str | None) -> Scope:
    """`/crm handoffs` (asked None): to or from one's departments. `/crm handoffs <department>`:
    one's own department, everything sent to it; another, only what one's own departments
    sent it (what they are party to)."""
    mine = party_of(reader)
    if asked is None:
        return Scope(to=mine, sent_from=mine)
    if asked in mine:
        return Scope(to=frozenset({asked}))
    return Scope(to=frozenset({asked}), within=mine)


def timeline_field(kind: str) -> str:
    """The card field under which a timeline entry of event type `kind` shows."""
    return _TIMELINE.get(kind.partition(".")[0], "activity")


def mentions(users: Iterable[str]) -> str:
    """`<@U..>, <@U..>` for the ids that look like Slack user ids (others are dropped)."""
    valid = sorted({u for u in users if isinstance(u, str) and SLACK_USER_ID.match(u)})
    return ", ".join(f"<@{u}>" for u in valid)


def who_to_ask(departments: Mapping[str, Dept], keys: Iterable[str] = ()) -> str:
    """The leads of `keys` (every department's when empty), as mentions; or a fallback."""
    chosen = [departments[k] for k in keys if k in departments] or list(departments.values())
    named = mentions(u for d in chosen for u in d.leads)
    return named or "your Slack admin"


def _refusal(code: str, departments: Mapping[str, Dept], keys: Iterable[str]) -> str:
    ask = who_to_ask(departments, keys)
    if code == GUEST:
        return f"Customer data is not shown to guest accounts. If you need it, ask {ask}."
    if code == EXTERNAL:
        return (
            "Customer data is only shown to people of this organisation. "
            f"If you need something about a customer, ask {ask}."
        )
    return (
        "Customer data is shown to members of a department that works on customers, and you "
        f"are in none. To be added to one, ask {ask}."
    )


# --- the look-ups -----------------------------------------------------------------------------


UNSURE = "I could not check your Slack account just now; please try again in a moment."


async def _profile(deps: Deps, user: str) -> Profile:
    cache = deps.readers
    cached = cache.get(user)
    if cached is not None:
        return cached
    try:
        info = await deps.slack.user_info(user)
    except SlackError as exc:
        if exc.detail in ("user_not_found", "user_not_visible"):
            profile = Profile(team=None, guest=False, stranger=True)
            cache.put(user, profile)
            return profile
        log.warning("users.info for an access check failed: %s", exc.kind)
        raise UserError(UNSURE) from None
    profile = Profile(
        team=info.get("team_id"),
        guest=bool(
            info.get("is_restricted") or info.get("is_ultra_restricted") or info.get("deleted")
        ),
        stranger=bool(info.get("is_stranger")),
    )
    cache.put(user, profile)
    return profile


async def _home_team(deps: Deps) -> str:
    if deps.readers.home_team is None:
        try:
            deps.readers.home_team = await deps.slack.team_id()
        except SlackError as exc:
            log.warning("auth.test for an access check failed: %s", exc.kind)
            raise UserError(UNSURE) from None
    return deps.readers.home_team


async def reader_for(deps: Deps, user: str, team: str | None = None) -> Reader:
    """The `Reader` for `user`, whose signed request said they belong to `team` (None when the
    request does not say, as slash commands do not). Someone in no department is not looked up
    in Slack: they are refused either way."""
    try:
        mine = await deps.directory.departments_of(user)
    except SlackError as exc:  # a user group could not be read: unknown, not "no department"
        log.warning("departments of a reader unknown: %s", exc.kind)
        raise UserError(UNSURE) from None
    departments = frozenset(d.key for d in mine)
    leads = frozenset(d.key for d in mine if user in d.leads)
    if not departments:
        return Reader(user)
    profile = await _profile(deps, user)
    home = await _home_team(deps)
    external = (
        profile.stranger
        or (profile.team is not None and profile.team != home)
        or (team is not None and team != home)
    )
    return Reader(user, departments, leads, guest=profile.guest, external=external)


@dataclass(frozen=True)
class Access:
    reader: Reader
    decision: Decision

    @property
    def fields(self) -> frozenset[str]:
        return self.decision.fields


async def check(deps: Deps, who: Person | str, team: str | None = None) -> Access:
    """The reader and the decision, refused or not (App Home shows a refusal as its content).
    `who` is the person of a parsed interaction (their signed team with them) or a user id."""
    user, team = (who.id, who.team_id) if isinstance(who, Person) else (who, team)
    reader = await reader_for(deps, user, team)
    decision = decide(reader, deps.config, await deps.directory.departments())
    if not decision:
        log.info("customer data refused to %s: %s", reader.user, decision.code)
    return Access(reader, decision)


async def require(deps: Deps, who: Person | str, team: str | None = None) -> Access:
    """The gate: the reader's access, or `Refused` (a UserError saying who to ask)."""
    access = await check(deps, who, team)
    if not access.decision:
        raise Refused(access.decision)
    return access
