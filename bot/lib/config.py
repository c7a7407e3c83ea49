"""Settings from the environment, and the departments/alerts file (CRM_CONFIG) as typed objects.

Both fail with a `ConfigError` whose message is one readable line; the CLI prints it and exits 2.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

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

    def require(self, *names: str) -> None:
        missing = [n.upper() for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(
                f"missing setting: {', '.join(missing)} (set it in the environment or .env)"
            )


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


class CrmConfig(_Strict):
    departments: dict[str, Department] = Field(default_factory=dict)
    handoffs: HandoffRules = HandoffRules()
    approvals: ApprovalRules = ApprovalRules()
    alerts: tuple[AlertRule, ...] = ()
    sync: SyncRules = SyncRules()

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
    for key, dept in (raw.get("departments") or {}).items():
        if isinstance(dept, dict):
            dept.setdefault("key", key)
    try:
        config = CrmConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        line = _line_of(text, loc)
        where = f"{source}, line {line}" if line else source
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: {'.'.join(loc)}: {msg}") from None
    _check_references(config, text, source)
    return config


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
    return parse_config(text, source=path)
