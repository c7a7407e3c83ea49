"""Every table of the shared database. Columns ending in `_ct` hold AES-256-GCM ciphertext.

Ids are UUIDs made by the application. Times are timezone-aware UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware datetimes on both SQLite (which forgets the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Every model here is mapped to one Table. SQLAlchemy types `__table__` as the wider
    FromClause (a class may be mapped to a join or a select); the declaration below, seen only
    by type checkers, says what is true here, so Core statements (`insert(Model.__table__)`,
    bulk `executemany`) type-check without casts."""

    metadata = MetaData(naming_convention=NAMING)
    if TYPE_CHECKING:
        # pyright forbids narrowing an inherited ClassVar; true here, as every model has a Table
        __table__: ClassVar[Table]  # pyright: ignore[reportIncompatibleVariableOverride]


Id = Uuid(as_uuid=True)
Money = Numeric(14, 2)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class Department(Base):
    __tablename__ = "departments"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    channel_id: Mapped[str] = mapped_column(String(32))
    channel_linked_by: Mapped[str | None] = mapped_column(String(32))  # set by `/crm dept link`
    usergroup: Mapped[str | None] = mapped_column(String(32))
    approval_limit: Mapped[Decimal | None] = mapped_column(Money)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DepartmentMember(Base):
    __tablename__ = "department_members"

    department_key: Mapped[str] = mapped_column(
        ForeignKey("departments.key", ondelete="CASCADE"), primary_key=True
    )
    slack_user_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    is_lead: Mapped[bool] = mapped_column(Boolean, default=False)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(Id, primary_key=True, default=new_id)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    # The customer's data key, wrapped under master key `key_id`. Erasure sets both to NULL.
    key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    name_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    company_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    notes_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    tier: Mapped[str | None] = mapped_column(String(20))
    lifecycle_stage: Mapped[str | None] = mapped_column(String(20))
    owner_department: Mapped[str | None] = mapped_column(String(64))
    owner_slack_user: Mapped[str | None] = mapped_column(String(32))
    annual_value: Mapped[Decimal | None] = mapped_column(Money)
    # Last occurred_at applied per source: {"billing": "2026-11-25T10:00:00+00:00"}.
    source_clock: Mapped[dict] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __mapper_args__ = {"version_id_col": version}


class AuditKey(Base):
    """The key that seals the audit chain (HMAC), wrapped under a master key: one row. Whoever
    can write the database but does not hold a master key cannot recompute the chain. Entries
    before `keyed_from` (written before the key existed) keep their plain SHA-256 hashes; the
    number is bound into the wrapping, so raising it breaks the key."""

    __tablename__ = "audit_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    keyed_from: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(String(32))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IndexKey(Base):
    """Blind-index keys by generation, wrapped under a master key. Search uses every generation
    present, so a re-index can run while the bot serves."""

    __tablename__ = "index_keys"

    generation: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key_id: Mapped[str] = mapped_column(String(32))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlindIndex(Base):
    __tablename__ = "blind_index"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    generation: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(12))
    digest: Mapped[bytes] = mapped_column(LargeBinary(16))

    # Covering (digest, customer_id): a lookup never has to visit the table itself.
    __table_args__ = (Index("ix_blind_index_digest", "digest", "customer_id"),)


class CustomerThread(Base):
    """The thread in a channel where alerts about one customer go."""

    __tablename__ = "customer_threads"

    customer_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    thread_ts: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The event whose alert is the thread's top-level message (None: a thread started by a
    # header, before 0008), how many alerts were posted in the thread since, how many of them
    # the top-level message shows, the last one's time, and when the message was last updated.
    opened_by: Mapped[str | None] = mapped_column(String(128))
    updates: Mapped[int] = mapped_column(Integer, default=0)
    shown_updates: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    shown_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SharedCard(Base):
    """A redacted card shared to a channel, kept up to date as the record changes."""

    __tablename__ = "shared_cards"

    id: Mapped[uuid.UUID] = mapped_column(Id, primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    channel_id: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str] = mapped_column(String(32))
    shared_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Changes to the record this card does not show yet: raised in the transaction that makes
    # one, cleared once chat.update went through (unless raised again meanwhile).
    stale: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TimelineEntry(Base):
    __tablename__ = "timeline"

    id: Mapped[uuid.UUID] = mapped_column(Id, primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(64))
    summary_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    event_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A note added in Slack (kind "note"): who added it, from which department, and the Slack
    # message it came from. Ids and a link, no text: the note itself is `summary_ct`.
    author: Mapped[str | None] = mapped_column(String(32))
    department: Mapped[str | None] = mapped_column(String(32))
    permalink: Mapped[str | None] = mapped_column(String(500))


class Deal(Base):
    """A deal as its system of record last said (deal.stage_changed). Business data, not
    personal data, so in the clear (amounts are what the pipeline sums); the free-text name is
    sealed under the customer's key. The owner is copied from the customer so the pipeline per
    department or owner reads one table."""

    __tablename__ = "deals"

    deal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    name_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    owner_department: Mapped[str | None] = mapped_column(String(64))
    owner_slack_user: Mapped[str | None] = mapped_column(String(32))
    # Last occurred_at applied per source, as for customers.
    source_clock: Mapped[dict] = mapped_column(JSON, default=dict)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when won or lost
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # Each covers what the pipeline reads: per stage the largest first, and the totals.
        Index("ix_deals_stage_amount", "stage", "amount", "currency"),
        Index("ix_deals_department_stage", "owner_department", "stage", "amount", "currency"),
        Index("ix_deals_owner_stage", "owner_slack_user", "stage"),
        Index("ix_deals_won", "stage", "closed_at", "amount", "currency"),
    )


class DealTotal(Base):
    """The pipeline's sums, kept up to date with every deal change (storage/deals.py): deals
    and their amounts per owner, stage, currency and month closed ("" while open). `/crm
    pipeline` reads these few rows instead of summing every deal. Empty strings stand for
    "none" (key columns cannot be NULL)."""

    __tablename__ = "deal_totals"

    owner_department: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_slack_user: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(20), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "YYYY-MM" closed, or ""
    count: Mapped[int] = mapped_column(Integer, default=0)
    amount: Mapped[Decimal] = mapped_column(Money, default=0)


class OpenItem(Base):
    """Overdue invoices and escalated tickets while they are open (the digests count them):
    `invoice.overdue` opens one, `payment.received` closes it; `ticket.escalated` opens one,
    `ticket.resolved` closes it. Ids, amounts and states only."""

    __tablename__ = "open_items"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # invoice | escalation
    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    is_open: Mapped[bool] = mapped_column(Boolean, default=True)
    amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    owner_department: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_open_items_open", "kind", "is_open"),)


class DigestRun(Base):
    """One row per digest and period: the replica that inserts it posts that period's digest
    (the primary key refuses a second), once even across restarts. A claim not finished within
    its lease (the process died) may be taken over; the post's key finds what went out."""

    __tablename__ = "digest_runs"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    claimed_by: Mapped[str] = mapped_column(String(36))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    channel_id: Mapped[str | None] = mapped_column(String(32))
    ts: Mapped[str | None] = mapped_column(String(32))
    file_id: Mapped[str | None] = mapped_column(String(32))


class Handoff(Base):
    __tablename__ = "handoffs"

    id: Mapped[uuid.UUID] = mapped_column(Id, primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    from_department: Mapped[str | None] = mapped_column(String(32))
    to_department: Mapped[str] = mapped_column(String(32), index=True)
    requested_by: Mapped[str] = mapped_column(String(32), index=True)
    note_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    context_permalink: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), index=True)
    assignee: Mapped[str | None] = mapped_column(String(32))
    reason_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    channel_id: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    # Saved with the ts when the bot posts: lists and App Homes link it without asking Slack.
    message_permalink: Mapped[str | None] = mapped_column(String(500))
    requester_channel_id: Mapped[str | None] = mapped_column(String(32))
    requester_ts: Mapped[str | None] = mapped_column(String(32))
    claim_deadline: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0)
    closed_by: Mapped[str | None] = mapped_column(String(32))  # who declined/completed/cancelled
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[uuid.UUID] = mapped_column(Id, primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal | None] = mapped_column(Money)
    unit: Mapped[str | None] = mapped_column(String(8))  # "%" or a currency code
    reason_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    requested_by: Mapped[str] = mapped_column(String(32), index=True)
    requester_department: Mapped[str | None] = mapped_column(String(32))
    department: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_reason_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    channel_id: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class AuditEntry(Base):
    """Append-only, hash-chained: each entry's hash covers its fields and the previous hash."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Id)
    data: Mapped[dict] = mapped_column(JSON, default=dict)  # no personal data: ids, states, amounts
    details_ct: Mapped[bytes | None] = mapped_column(LargeBinary)  # free text, under customer key
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The audit key (audit_keys.id) whose HMAC seals this entry; None: from before the chain
    # was keyed (plain SHA-256). An entry naming a generation whose key row is gone fails
    # `audit verify` instead of being taken for an unkeyed one.
    key_generation: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_audit_log_customer", "customer_id", "action"),  # `audit reads <customer>`
        Index("ix_audit_log_actor", "actor", "action", "at"),  # views per person per hour
    )


class ProcessedEvent(Base):
    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(16))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertDelivery(Base):
    """One row per (event, channel) an alert goes to, written `pending` in the transaction that
    applies the event, then `posted` (with the message ts) once: redelivery never posts twice."""

    __tablename__ = "alert_deliveries"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE")
    )
    line_ct: Mapped[bytes | None] = mapped_column(LargeBinary)  # the alert text, customer key
    placement: Mapped[str] = mapped_column(String(16), default="thread")
    broadcast: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(12), default="pending")  # posted|failed|dropped
    error: Mapped[str | None] = mapped_column(String(32))  # SlackError kind when failed
    ts: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The delivery round that last set out to post it, and when: a row still pending with
    # these set may be in Slack already (the process died, or Slack's answer was lost), so
    # the next round looks for its post before posting it again.
    tried_in: Mapped[str | None] = mapped_column(String(32))
    tried_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_alert_deliveries_status", "status", "customer_id"),)


class ChannelLease(Base):
    """Which bot process posts the alerts of a channel, until when: with several replicas, one
    posts in a channel at a time (its threads, its roll-ups, its pace), renewing the lease
    right before each post."""

    __tablename__ = "channel_leases"

    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(36))
    until: Mapped[datetime] = mapped_column(UTCDateTime)


class ChannelBudget(Base):
    """Slack's posting budget of a channel, shared by every replica: `next_at` (Unix seconds)
    is the earliest moment the next post may go out (a GCRA), pushed on by each post and by
    a 429's Retry-After."""

    __tablename__ = "channel_budgets"

    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_at: Mapped[float] = mapped_column(Float)


class ChannelRollup(Base):
    """A channel's open roll-up message during an alert storm: the alerts it lists are the
    ledger rows posted with its ts; `listed` of them are shown (the rest wait for an update)."""

    __tablename__ = "channel_rollups"

    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ts: Mapped[str] = mapped_column(String(32))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    items: Mapped[int] = mapped_column(Integer, default=0)
    listed: Mapped[int] = mapped_column(Integer, default=0)
    shown_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxEvent(Base):
    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(Id, primary_key=True, default=new_id)
    routing_key: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_outbox_pending", "published_at", "created_at"),)


class SlackRequest(Base):
    """Interactive requests already handled, by a key derived from the payload (double clicks,
    Slack retries): the second one changes nothing."""

    __tablename__ = "slack_requests"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


__all__ = [
    "AlertDelivery",
    "Approval",
    "AuditEntry",
    "Base",
    "BlindIndex",
    "ChannelBudget",
    "ChannelLease",
    "ChannelRollup",
    "Customer",
    "CustomerThread",
    "Deal",
    "DealTotal",
    "Department",
    "DepartmentMember",
    "DigestRun",
    "Handoff",
    "IndexKey",
    "OpenItem",
    "OutboxEvent",
    "ProcessedEvent",
    "SharedCard",
    "SlackRequest",
    "TimelineEntry",
    "new_id",
    "utcnow",
]
