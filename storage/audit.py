"""The audit log: append-only and hash-chained, so an edited, removed or reordered entry shows.

Each entry's hash is an HMAC-SHA256, under the audit key (random, stored wrapped under the
master key: storage.vault), over its own fields and the previous entry's hash. So someone who
can write the database but holds no master key cannot rewrite entries and recompute the chain
after them. Entries written before the audit key existed (`vault.audit_keyed_from`) keep the
plain SHA-256 of the first version. Free-text details are encrypted under the customer's data
key (they stay chained after an erasure; they just can no longer be read). Entries cut from
the end show only against a head (`SEQ:HASH`) noted outside the database: `verify(noted=...)`,
and handlers/audit_witness.py, which logs the head as it moves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from .crypto import CryptoError
from .models import AuditEntry, Customer, utcnow
from .vault import Vault

GENESIS = "0" * 64
LOCK_ID = 7_301_001  # pg_advisory_xact_lock key that serialises appends
Head = tuple[int, str]  # (seq, hash) of the last entry, written SEQ:HASH
_HEAD = re.compile(r"([1-9][0-9]*):([0-9a-f]{64})")


def _fields(entry: AuditEntry) -> dict:
    """The entry as plain values (what its hash covers, and what an export shows)."""
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "entity_type": entry.entity_type,
        "entity_id": entry.entity_id,
        "customer_id": str(entry.customer_id) if entry.customer_id else None,
        "data": entry.data or {},
    }


class MissingKey(CryptoError):
    """The audit key an entry names is not there (its audit_keys row was deleted)."""


def entry_hash(entry: AuditEntry, vault: Vault) -> str:
    """The entry's hash: HMAC-SHA256 under the key generation it names, or, for an entry from
    before the chain was keyed (names none, and comes before `keyed_from`), plain SHA-256.
    An entry that names a generation is checked with that generation's key only: marking it
    as another, or as unkeyed, does not make a rewritten entry pass."""
    fields = {
        **_fields(entry),
        "details_ct": entry.details_ct.hex() if entry.details_ct else None,
        "prev_hash": entry.prev_hash,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()
    if vault.audit_key_missing:
        raise MissingKey(vault.audit_key_missing)
    if entry.key_generation is None and entry.seq < vault.audit_keyed_from:
        return hashlib.sha256(canonical).hexdigest()  # written before the chain was keyed
    if entry.key_generation not in (None, vault.audit_generation):
        raise MissingKey(f"audit key generation {entry.key_generation} is not in audit_keys")
    if vault.audit_key is None:
        raise CryptoError("the audit key is not loaded")
    return hmac.new(vault.audit_key, canonical, hashlib.sha256).hexdigest()


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: object,
    customer: Customer | None = None,
    data: dict[str, Any] | None = None,
    details: str | None = None,
    vault: Vault,
) -> AuditEntry:
    """Add an entry in the caller's transaction (appends are serialised per database)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_ID})
    last = (
        await session.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))
    ).scalar_one_or_none()
    seq = (last.seq + 1) if last else 1
    entry = AuditEntry(
        seq=seq,
        at=utcnow(),
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        customer_id=customer.id if customer else None,
        data=data or {},
        prev_hash=last.hash if last else GENESIS,
        key_generation=vault.audit_generation if seq >= vault.audit_keyed_from else None,
    )
    if details and customer is not None:
        entry.details_ct = vault.seal(customer, "audit_log", "details", seq, details)
    entry.hash = entry_hash(entry, vault)
    session.add(entry)
    await session.flush()
    return entry


def parse_head(text: str) -> Head:
    """A head as `verify` prints it and the bot logs it (`SEQ:HASH`); ValueError otherwise."""
    match = _HEAD.fullmatch(text.strip())
    if match is None:
        raise ValueError("not an audit head: expected SEQ:HASH as `audit verify` prints it")
    return int(match[1]), match[2]


async def head(session: AsyncSession) -> Head | None:
    """The last entry's (seq, hash), or None for an empty log."""
    last = (
        await session.execute(
            select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
        )
    ).first()
    return (last.seq, last.hash) if last else None


@dataclass
class Verdict:
    ok: bool
    checked: int
    bad_seq: int | None = None
    problem: str | None = None
    head: str | None = None  # the last entry's hash, for auditors to note and compare later
    unkeyed: int = 0  # entries from before the audit key (plain hashes)
    noted: int | None = None  # the seq of a noted head found in the chain

    def __str__(self) -> str:
        if self.ok:
            if self.checked == 0:
                return "empty: no audit entries yet"
            older = f"; the first {self.unkeyed} from before it was keyed" if self.unkeyed else ""
            found = f"; the noted head {self.noted} is in it" if self.noted else ""
            return (
                f"ok: {self.checked} entries, chain intact{found} "
                f"(head {self.checked}:{self.head}{older})"
            )
        return f"broken at entry {self.bad_seq}: {self.problem} ({self.checked} entries checked)"


async def verify(
    session: AsyncSession, vault: Vault, batch: int = 2000, noted: Head | None = None
) -> Verdict:
    """Walk the chain in order and name the first entry that breaks it: one whose own hash does
    not match its content (edited), a gap in the sequence (removed), or one that does not
    follow the entry before it (reordered, or rewritten along with its hash).

    A chain cannot show entries removed from its end by itself: `noted`, a head noted earlier
    (printed by `verify`, logged by the bot), must still be in it, unchanged."""
    if vault.audit_key_missing:
        return Verdict(False, 0, 1, vault.audit_key_missing)
    prev_hash, expected, checked = GENESIS, 1, 0
    noted_hash = None
    async for entry in _entries(session, batch):
        if entry.seq != expected:
            return Verdict(False, checked, expected, f"entry {expected} is missing")
        if entry.prev_hash != prev_hash:
            problem = "it does not follow the previous entry (moved, or one of them rewritten)"
            return Verdict(False, checked, entry.seq, problem)
        try:
            digest = entry_hash(entry, vault)
        except MissingKey as exc:
            return Verdict(False, checked, entry.seq, str(exc))
        if digest != entry.hash:
            return Verdict(False, checked, entry.seq, "its content was changed")
        if noted is not None and entry.seq == noted[0]:
            noted_hash = entry.hash
        prev_hash, expected, checked = entry.hash, expected + 1, checked + 1
    if noted is not None:
        seq, digest = noted
        if checked < seq:
            problem = f"the chain ends at entry {checked}: the entries up to the noted head {seq}"
            return Verdict(False, checked, checked + 1, f"{problem} were removed")
        if noted_hash != digest:
            problem = "it is not the entry noted as the head (rewritten from there on)"
            return Verdict(False, checked, seq, problem)
    unkeyed = min(checked, vault.audit_keyed_from - 1)
    return Verdict(
        True,
        checked,
        head=prev_hash if checked else None,
        unkeyed=unkeyed,
        noted=noted[0] if noted else None,
    )


async def _entries(session: AsyncSession, batch: int, since: datetime | None = None):
    after = 0
    while True:
        stmt = select(AuditEntry).where(AuditEntry.seq > after)
        if since is not None:
            stmt = stmt.where(AuditEntry.at >= since)
        rows = (await session.execute(stmt.order_by(AuditEntry.seq).limit(batch))).scalars().all()
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1].seq
        session.expunge_all()


async def export(
    session: AsyncSession, since: datetime | None, vault: Vault | None = None
) -> AsyncIterator[dict]:
    """Entries as dicts for auditors (details decrypted where the customer still exists)."""
    keys: dict[uuid.UUID, Customer | None] = {}
    async for entry in _entries(session, 2000, since):
        details = None
        if entry.details_ct and entry.customer_id and vault is not None:
            if entry.customer_id not in keys:
                keys[entry.customer_id] = await session.get(Customer, entry.customer_id)
            customer = keys[entry.customer_id]
            if customer is not None:
                try:
                    details = vault.open(
                        customer, "audit_log", "details", entry.seq, entry.details_ct
                    )
                except CryptoError:  # tampered with: `audit verify` names the entry
                    details = None
        yield {
            **_fields(entry),
            "details": details,
            "hash": entry.hash,
            "prev_hash": entry.prev_hash,
        }


async def count(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one()


# --- the read audit ---------------------------------------------------------------------------

CARD_VIEWED = "customer.card_viewed"  # a full card shown to someone (data: {"via": ...})
READ_ALERT = "access.read_alert"  # someone's leads told they opened many cards in an hour


@dataclass(frozen=True)
class Read:
    seq: int
    at: datetime
    actor: str
    via: str


async def record_view(
    session: AsyncSession, vault: Vault, *, actor: str, customer: Customer, via: str
) -> AuditEntry:
    """A full card of `customer` shown to `actor` through `via` (a command or a button): ids
    only, nothing of the card itself."""
    return await append(
        session,
        actor=actor,
        action=CARD_VIEWED,
        entity_type="customer",
        entity_id=customer.id,
        customer=customer,
        data={"via": via},
        vault=vault,
    )


async def reads(session: AsyncSession, customer_id: uuid.UUID) -> list[Read]:
    """Every full card of this customer shown, oldest first: who, when, through what."""
    rows = await session.execute(
        select(AuditEntry)
        .where(AuditEntry.customer_id == customer_id, AuditEntry.action == CARD_VIEWED)
        .order_by(AuditEntry.seq)
    )
    return [Read(e.seq, e.at, e.actor, str((e.data or {}).get("via", "?"))) for e in rows.scalars()]


async def customers_viewed(session: AsyncSession, actor: str, since: datetime) -> int:
    """How many different customers' full cards `actor` was shown since `since`."""
    stmt = select(func.count(func.distinct(AuditEntry.customer_id))).where(
        AuditEntry.actor == actor, AuditEntry.action == CARD_VIEWED, AuditEntry.at >= since
    )
    return (await session.execute(stmt)).scalar_one()


async def alerted_since(session: AsyncSession, actor: str, since: datetime) -> bool:
    stmt = select(func.count()).where(
        AuditEntry.action == READ_ALERT, AuditEntry.entity_id == actor, AuditEntry.at >= since
    )
    return bool((await session.execute(stmt)).scalar_one())
