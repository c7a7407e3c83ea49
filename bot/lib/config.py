"""Settings from the environment, and the departments/alerts file (CRM_CONFIG) as typed objects.

Both fail with a `ConfigError` whose message is one readable line; the CLI prints it and exits 2.

Who reads customer data is configured here too (the rules are in handlers/access.py):

    [access]
    fields = ["email", "phone", "notes", "deals", "tickets", "activity", "handoffs", "approvals"]
    show_alert_per_hour = 50
    users_cache_seconds = 300

    [departments.finance]
    fields = ["email", "phone", "annual_value", "invoices", "approvals"]

`fields` name card fields (`CARD_FIELDS`); a department without `fields` gets `[access]
fields`, whose default is every field (so a file without them keeps the cards as they were).
One table for the defaults and one key per department keeps a department's grant next to its
members, where a reader of the file looks for it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A setting or the config file is wrong; the message is meant for the admin, as is."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    database_url: str = "sqlite+aiosqlite:///crm-bot.db"
    amqp_url: str | None = None
    crm_master_keys: str | None = None
    crm_config: str | None = None
    port: int = Field(default=3000, ge=1, le=65535)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_token: str | None = None

    def require(self, *names: str) -> tuple[str, ...]:
        """The values of these settings, in order; a ConfigError naming every one unset."""
        missing = [n.upper() for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(
                f"missing setting: {', '.join(missing)} (set it in the environment or .env)"
            )
        return tuple(str(getattr(self, n)) for n in names)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]).upper() if err["loc"] else "setting"
        raise ConfigError(f"bad setting {name}: {err['msg']}") from None


# --- CRM_CONFIG ---------------------------------------------------------------------------------

SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
SLACK_USERGROUP = re.compile(r"^S[A-Z0-9]{2,}$")
DEPT_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
APPROVAL_KINDS = ("discount", "refund", "credit", "exception")
# A department's name is the text of a menu option in the handoff modal (blocks.select_input),
# which Slack caps at 75 characters and refuses the whole modal over; everywhere else it is
# shown (section text, headers clipped to 150) has room for more. A blank name shows nothing.
DEPT_NAME_MAX = 75


# What a customer card shows beyond its head (name, company, tier, stage, owner, external id,
# which every reader sees, as on the redacted card): contact details, notes and value, the
# latest activity by kind (deals and leads, tickets, invoices and payments, everything else),
# and the open handoffs and pending approvals about the customer.
CardField = Literal[
    "email",
    "phone",
    "notes",
    "annual_value",
    "deals",
    "tickets",
    "invoices",
    "activity",
    "handoffs",
    "approvals",
]
CARD_FIELDS: tuple[CardField, ...] = get_args(CardField)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Department(_Strict):
    key: str = ""
    name: str
    channel: str
    members: tuple[str, ...] = ()
    usergroup: str | None = None
    leads: tuple[str, ...] = ()
    approval_limit: float | None = Field(default=None, ge=0)
    # The card fields its members see; unset: `[access] fields`. Its leads see every field.
    fields: tuple[CardField, ...] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is blank: Slack would show an empty menu option")
        if len(v) > DEPT_NAME_MAX:
            raise ValueError(
                f"is {len(v)} characters: Slack shows at most {DEPT_NAME_MAX} in a menu option"
            )
        return v

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        if not SLACK_CHANNEL.match(v):
            raise ValueError(f"{v!r} is not a Slack channel id (like C0SALES01)")
        return v

    @field_validator("members", "leads")
    @classmethod
    def _users(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for u in v:
            if not SLACK_USER.match(u):
                raise ValueError(f"{u!r} is not a Slack user id (like U0ALICE01)")
        return v

    @field_validator("usergroup")
    @classmethod
    def _usergroup(cls, v: str | None) -> str | None:
        if v is not None and not SLACK_USERGROUP.match(v):
            raise ValueError(f"{v!r} is not a Slack user group id (like S0SALES01)")
        return v


class HandoffRules(_Strict):
    claim_within_minutes: float = Field(default=60, gt=0)


class ApprovalRules(_Strict):
    expire_after_hours: float = Field(default=72, gt=0)
    department: dict[str, str] = Field(default_factory=dict)  # kind -> approving department


class AlertRule(_Strict):
    on: str
    when: dict[str, Any] = Field(default_factory=dict)
    notify: tuple[str, ...]
    broadcast: bool | None = None
    placement: Literal["thread", "top_level"] = "thread"


class SyncRules(_Strict):
    coalesce_seconds: float = Field(default=5.0, ge=0)
    broadcast_overdue_over: float = Field(default=10000, ge=0)
    # An event that failed for a passing reason (the database away, its customer not known
    # yet) is tried again after each delay in turn, the last one repeating, and dead-lettered
    # when its `max_attempts`-th attempt fails: 1 + 5 + 30 + 30 s by default.
    retry_delays: tuple[Annotated[float, Field(ge=0.01, le=86_400)], ...] = Field(
        default=(1.0, 5.0, 30.0), min_length=1, max_length=10
    )
    max_attempts: int = Field(default=5, ge=1, le=50)
    # A channel is in a storm when more alert messages are due there than this: its alerts
    # then go into one roll-up message per coalescing window. Unset: what the channel's budget
    # (one message per second) posts in one window; without a window (coalesce_seconds = 0),
    # no roll-ups unless this is set.
    storm_threshold: int | None = Field(default=None, ge=1)

    def storm_over(self) -> int | None:
        """The threshold in force (None: roll-ups off)."""
        if self.storm_threshold is not None:
            return self.storm_threshold
        return max(1, int(self.coalesce_seconds)) if self.coalesce_seconds > 0 else None


class PipelineRules(_Strict):
    # Departments whose members see deal values, names and invoice totals (in `/crm pipeline`
    # and their digests); None: every department. The access model will take this over.
    values: tuple[str, ...] | None = None


DIGEST_CONTENT = (
    "pipeline",
    "won_lost",
    "overdue_invoices",
    "escalations",
    "handoffs_waiting",
    "approvals_decided",
)
SCHEDULE = re.compile(
    r"^(?:(?P<days>(?:mon|tue|wed|thu|fri|sat|sun)(?:,(?:mon|tue|wed|thu|fri|sat|sun))*)|daily)"
    r" (?P<hh>[01]\d|2[0-3]):(?P<mm>[0-5]\d)$"
)


class Digest(_Strict):
    """A scheduled summary: for a department (posted in its channel, built from what it may
    see) or for a channel (no values: nobody's access applies to a channel)."""

    name: str | None = None  # stable key of the digest (its periods are remembered by it)
    department: str | None = None
    channel: str | None = None
    schedule: str  # "mon 08:00", "mon,thu 08:00", "daily 18:00"
    timezone: str = "UTC"
    content: tuple[str, ...] = DIGEST_CONTENT

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        v = " ".join(v.lower().split())
        if not SCHEDULE.match(v):
            raise ValueError(f"{v!r} is not a schedule like 'mon 08:00' or 'daily 18:00'")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not a time zone (like Europe/Berlin)") from None
        return v

    @field_validator("content")
    @classmethod
    def _content(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            if item not in DIGEST_CONTENT:
                raise ValueError(f"{item!r} is not one of {', '.join(DIGEST_CONTENT)}")
        return v

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None and not SLACK_CHANNEL.match(v):
            raise ValueError(f"{v!r} is not a Slack channel id (like C0SALES01)")
        return v

    @property
    def key(self) -> str:
        return (self.name or f"{self.department or self.channel}:{self.schedule}")[:64]


class AccessRules(_Strict):
    """Who reads customer data (handlers/access.py holds the rules themselves).

    Members of a configured department use the customer commands; Slack guests, people of
    another organisation (shared channels) and everyone in no department are refused. A
    department's members see the card fields of its `fields`, or these; leads see all."""

    fields: tuple[CardField, ...] = CARD_FIELDS
    # `/crm show` of more customers than this within an hour by one person: their leads are
    # told (a direct message each), at most once an hour.
    show_alert_per_hour: int = Field(default=50, ge=1, le=100_000)
    # How long what users.info said about a person (guest? which organisation?) is trusted.
    users_cache_seconds: float = Field(default=300, ge=0, le=86_400)


class CrmConfig(_Strict):
    departments: dict[str, Department] = Field(default_factory=dict)
    access: AccessRules = AccessRules()
    handoffs: HandoffRules = HandoffRules()
    approvals: ApprovalRules = ApprovalRules()
    alerts: tuple[AlertRule, ...] = ()
    sync: SyncRules = SyncRules()
    pipeline: PipelineRules = PipelineRules()
    digests: tuple[Digest, ...] = ()

    def department(self, key: str) -> Department | None:
        return self.departments.get(key)

    def approving_department(self, kind: str) -> str:
        return self.approvals.department.get(kind, "finance")


def parse_config(text: str, source: str = "CRM_CONFIG") -> CrmConfig:
    """Parse the TOML text; errors name the file, the line, and what is wrong."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    departments = raw.get("departments")
    if isinstance(departments, dict):
        for key, dept in departments.items():
            if isinstance(dept, dict):
                dept.setdefault("key", key)
    try:
        config = CrmConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        line = _line_of(text, loc)
        if "type" in err and err["type"].endswith("_type"):  # e.g. dict_type, string_type
            line = line or _line_of(text, loc[:1])
        where = f"{source}, line {line}" if line else source
        msg = _toml_words(err["msg"].removeprefix("Value error, "))
        raise ConfigError(f"{where}: {'.'.join(loc)}: {msg}") from None
    _check_references(config, text, source)
    return config


# pydantic names Python types; the file is TOML: say table and list (array).
_TOML_TYPES = (
    (re.compile(r"^Input should be a valid dictionary.*"), "must be a table ([section] or { })"),
    (re.compile(r"^Input should be a valid (tuple|list).*"), "must be a list ([ ... ])"),
    (re.compile(r"^Input should be a valid string.*"), "must be text in quotes"),
    (re.compile(r"^Input should be a valid (number|integer).*"), "must be a number"),
    (re.compile(r"^Input should be a valid boolean.*"), "must be true or false"),
)


def _toml_words(msg: str) -> str:
    for pattern, words in _TOML_TYPES:
        if pattern.match(msg):
            return words
    return msg


def _check_references(config: CrmConfig, text: str, source: str) -> None:
    for key, dept in config.departments.items():
        if not DEPT_KEY.match(key):
            line = _line_of(text, ["departments", key])
            raise ConfigError(f"{source}, line {line}: department key {key!r} must be lower-case")
        for lead in dept.leads:
            if dept.members and lead not in dept.members:
                line = _line_of(text, ["departments", key, "leads"])
                raise ConfigError(
                    f"{source}, line {line}: departments.{key}.leads: {lead} is not a member"
                )
    for i, rule in enumerate(config.alerts):
        for name in rule.notify:
            if name not in config.departments:
                line = _line_of(text, ["alerts", str(i), "notify"])
                raise ConfigError(
                    f"{source}, line {line}: alerts[{i}].notify: unknown department {name!r}"
                )
    for name in config.pipeline.values or ():
        if name not in config.departments:
            raise ConfigError(f"{source}: pipeline.values: unknown department {name!r}")
    keys = set()
    for i, digest in enumerate(config.digests):
        line = _line_of(text, ["digests", str(i)])
        where = f"{source}, line {line}" if line else source
        if (digest.department is None) == (digest.channel is None):
            raise ConfigError(f"{where}: digests[{i}]: give a department or a channel (one)")
        if digest.department and digest.department not in config.departments:
            raise ConfigError(
                f"{where}: digests[{i}].department: unknown department {digest.department!r}"
            )
        if digest.key in keys:
            raise ConfigError(f"{where}: digests[{i}]: two digests named {digest.key!r}")
        keys.add(digest.key)
    for kind, name in config.approvals.department.items():
        if kind not in APPROVAL_KINDS:
            raise ConfigError(f"{source}: approvals.department: unknown kind {kind!r}")
        if name not in config.departments:
            raise ConfigError(f"{source}: approvals.department.{kind}: unknown department {name!r}")


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best effort: the line of the TOML key at `loc` (table headers, then the key inside)."""
    lines = text.splitlines()
    start, table, remaining = 0, [], list(loc)
    # Walk down table headers ([a.b] or [[a]]) as far as the location allows.
    for depth in range(len(loc), 0, -1):
        parts = [p for p in loc[:depth] if not p.isdigit()]
        index = next((int(p) for p in loc[:depth] if p.isdigit()), None)
        header = re.compile(r"^\s*\[\[?\s*" + r"\s*\.\s*".join(map(re.escape, parts)) + r"\s*\]\]?")
        hits = [i for i, line in enumerate(lines) if header.match(line)]
        if hits:
            start = hits[index] if index is not None and index < len(hits) else hits[0]
            table, remaining = loc[:depth], loc[depth:]
            break
    key = next((p for p in remaining if not p.isdigit()), None)
    if key is None:
        return start + 1 if table else None
    pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
    for i in range(start, len(lines)):
        if i > start and table and lines[i].lstrip().startswith("["):
            break
        if pattern.match(lines[i]):
            return i + 1
    return start + 1 if table else None


def load_config(path: str | None) -> CrmConfig:
    """Load CRM_CONFIG, or `crm-bot.toml` in the working folder if present, else an empty config."""
    if path is None:
        default = Path("crm-bot.toml")
        if not default.exists():
            return CrmConfig()
        path = str(default)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"CRM_CONFIG: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return parse_config(text, source=path)
