"""The customer repository: encrypted records, blind-index search, per-source ordering, erasure.

Takes a session, never commits: the caller's unit of work does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, case, delete, func, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .blind_index import index_rows, insert_index_rows
from .crypto import decrypt_field, encrypt_field, normalise_email, query_terms
from .models import BlindIndex, Customer, TimelineEntry, utcnow
from .vault import Vault

PERSONAL = ("name", "email", "phone", "company", "notes")
PERSONAL_SET = frozenset(PERSONAL)
PLAIN = ("tier", "lifecycle_stage", "owner_department", "owner_slack_user", "annual_value")
FIELDS = PERSONAL + PLAIN
INDEXED = ("name", "email", "phone", "company")


class StaleEdit(Exception):
    """The record changed since the person loaded it."""


@dataclass
class CustomerRecord:
    """A customer as people see it: decrypted."""

    id: uuid.UUID
    external_id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    notes: str | None = None
    tier: str | None = None
    lifecycle_stage: str | None = None
    owner_department: str | None = None
    owner_slack_user: str | None = None
    annual_value: Decimal | None = None
    version: int = 1
    updated_at: datetime | None = None
    erased: bool = False

    @property
    def label(self) -> str:
        return self.name or self.company or self.external_id


@dataclass
class UpsertResult:
    customer: Customer
    created: bool
    applied: bool  # False when the change was older than one already applied from its source
    changed: set[str] = field(default_factory=set)


def clean_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Only known fields; annual_value as Decimal; empty strings as None."""
    out: dict[str, Any] = {}
    for key in FIELDS:
        if key not in changes:
            continue
        value = changes[key]
        if isinstance(value, str):
            value = value.strip() or None
        if key == "annual_value" and value is not None:
            value = Decimal(str(value)).quantize(Decimal("0.01"))
        out[key] = value
    return out


def _locking(stmt):
    """Lock the customers read until the transaction ends, as FOR NO KEY UPDATE: nothing here
    changes a customer's key, and a plain FOR UPDATE would also block the rows that point at
    the customer (delivery leases, threads, timeline entries) from being written meanwhile:
    a sync batch and the delivery of earlier alerts then deadlocked."""
    return stmt.with_for_update(key_share=True)


def read_record(vault: Vault, customer: Customer) -> CustomerRecord:
    """The customer decrypted (an erased one: no personal field)."""
    record = CustomerRecord(
        id=customer.id,
        external_id=customer.external_id,
        version=customer.version,
        updated_at=customer.updated_at,
        erased=customer.erased_at is not None,
        **{k: getattr(customer, k) for k in PLAIN},
    )
    if not record.erased:
        key = vault.key_of(customer)
        for name in PERSONAL:
            blob = getattr(customer, f"{name}_ct")
            setattr(record, name, decrypt_field(key, "customers", name, customer.id, blob))
    return record


class Customers:
    def __init__(self, session: AsyncSession, vault: Vault, *, batch: bool = False):
        """With `batch`, the changed customers and their blind-index rows are kept until
        `write_batch` (a batch of sync events writes them all at once); the caller must call
        it before committing."""
        self.session = session
        self.vault = vault
        self._locked: dict[str, Customer | None] = {}  # by external id, locked by `preload`
        self._changed: dict[uuid.UUID, Customer] = {}  # existing customers a batch changed
        # customer id -> (had no rows before, its rows), when deferring
        self._deferred: dict[uuid.UUID, tuple[bool, list[dict]]] | None = {} if batch else None

    # --- reading ---

    async def get(self, customer_id: uuid.UUID, *, for_update: bool = False) -> Customer | None:
        stmt = select(Customer).where(Customer.id == customer_id)
        if for_update:
            stmt = _locking(stmt)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def preload(self, external_ids: list[str]) -> None:
        """Load and lock these customers in one query (a batch of sync events); later
        `by_external_id` calls for them in this session are answered from memory."""
        wanted = {e.strip() for e in external_ids} - set(self._locked)
        if not wanted:
            return
        # In one order, so two batches (replicas) locking overlapping sets cannot deadlock.
        stmt = _locking(
            select(Customer).where(Customer.external_id.in_(wanted)).order_by(Customer.external_id)
        )
        found = {c.external_id: c for c in (await self.session.execute(stmt)).scalars()}
        self._locked.update({e: found.get(e) for e in wanted})

    def preloaded(self) -> list[Customer]:
        return [c for c in self._locked.values() if c is not None]

    async def by_external_id(self, external_id: str, *, for_update: bool = False):
        external_id = external_id.strip()
        if external_id in self._locked:
            return self._locked[external_id]
        stmt = select(Customer).where(Customer.external_id == external_id)
        if for_update:
            stmt = _locking(stmt)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_email(self, email: str) -> Customer | None:
        hits = await self._lookup([("email", normalise_email(email))])
        ids = [cid for cid, _, _ in hits]
        return await self.get(ids[0]) if ids else None

    async def by_ref(self, ref: str) -> Customer | None:
        """`<customer>` in commands: an email address or an external id."""
        ref = ref.strip().strip("<>")
        if ref.startswith("mailto:"):
            ref = ref.split("|", 1)[0].removeprefix("mailto:")
        customer = await self.by_email(ref) if "@" in ref else None
        if customer is None:
            customer = await self.by_external_id(ref)
        if customer is not None and customer.erased_at is not None:
            return None
        return customer

    def read(self, customer: Customer) -> CustomerRecord:
        return read_record(self.vault, customer)

    async def search(self, text: str, limit: int = 10) -> list[CustomerRecord]:
        """Exact email/phone/external id matches first, then customers matching every word of
        the text (whole words ahead of prefixes). Ranking runs in the database, so the cost
        stays flat as the table grows."""
        exact, words_ = query_terms(text)
        scores: dict[uuid.UUID, int] = {}
        for cid, _, _ in await self._lookup(exact):
            scores[cid] = scores.get(cid, 0) + 1000
        if words_ and "@" not in text and len(scores) < limit:
            for cid, score in await self._word_matches(words_, limit * 2):
                scores[cid] = scores.get(cid, 0) + score
        if not scores:
            return []
        ranked = sorted(scores, key=lambda c: -scores[c])[:limit]
        rows = await self.session.execute(select(Customer).where(Customer.id.in_(ranked)))
        records = [self.read(c) for c in rows.scalars() if c.erased_at is None]
        records.sort(key=lambda r: (-scores[r.id], (r.name or "").casefold(), r.external_id))
        return records[:limit]

    def _digests(self, terms: list[tuple[str, str]]) -> dict[bytes, tuple[str, str]]:
        """Digests of terms under every index generation (a re-index may be under way)."""
        return {
            indexer.digest(kind, term): (kind, term)
            for indexer in self.vault.indexers.values()
            for kind, term in terms
        }

    async def _lookup(self, terms: list[tuple[str, str]]):
        """Blind-index hits as (customer_id, kind, term)."""
        digests = self._digests(terms)
        if not digests:
            return []
        rows = await self.session.execute(
            select(BlindIndex.customer_id, BlindIndex.digest).where(
                BlindIndex.digest.in_(list(digests))
            )
        )
        return [(cid, *digests[bytes(digest)]) for cid, digest in rows]

    async def _word_matches(self, words_: list[str], limit: int) -> list[tuple[uuid.UUID, int]]:
        """Customers with every word (as a whole word: 2 points, as a prefix: 1), best first."""
        if len(words_) == 1:
            return await self._one_word_matches(words_[0], limit)
        weight, group = {}, {}
        for n, word in enumerate(words_):
            for kind, points in (("word", 2), ("prefix", 1)):
                for digest in self._digests([(kind, word)]):
                    weight[digest], group[digest] = points, n
        score = func.sum(case(weight, value=BlindIndex.digest, else_=0))
        groups = func.count(func.distinct(case(group, value=BlindIndex.digest)))
        stmt = (
            select(BlindIndex.customer_id, score)
            .where(BlindIndex.digest.in_(list(weight)))
            .group_by(BlindIndex.customer_id)
            .having(groups == len(words_))
            .order_by(score.desc())
            .limit(limit)
        )
        return [(cid, int(points)) for cid, points in await self.session.execute(stmt)]

    async def _one_word_matches(self, word: str, limit: int) -> list[tuple[uuid.UUID, int]]:
        """Whole-word matches, then prefix matches: each an index range read that stops at
        `limit`, however many customers share a common prefix."""
        found: dict[uuid.UUID, int] = {}
        for kind, points in (("word", 2), ("prefix", 1)):
            if len(found) >= limit:
                break
            stmt = select(BlindIndex.customer_id).where(
                BlindIndex.digest.in_(list(self._digests([(kind, word)])))
            )
            if found:
                stmt = stmt.where(BlindIndex.customer_id.not_in(list(found)))
            for cid in (await self.session.execute(stmt.limit(limit - len(found)))).scalars():
                found.setdefault(cid, points)
        return list(found.items())

    # --- writing ---

    def _encrypt_into(self, customer: Customer, key: bytes, values: dict[str, Any]) -> None:
        for name in PERSONAL:
            if name in values:
                blob = encrypt_field(key, "customers", name, customer.id, values[name])
                setattr(customer, f"{name}_ct", blob)
        for name in PLAIN:
            if name in values:
                setattr(customer, name, values[name])

    async def reindex(
        self, customer: Customer, record: CustomerRecord | None = None, *, new: bool = False
    ) -> None:
        """Replace the customer's blind-index rows with rows for its current values."""
        record = record or self.read(customer)
        rows = index_rows(self.vault, customer.id, record)
        if self._deferred is not None:
            earlier = self._deferred.get(customer.id)
            self._deferred[customer.id] = (new if earlier is None else earlier[0], rows)
            return
        if not new:
            await self.session.execute(
                delete(BlindIndex).where(BlindIndex.customer_id == customer.id)
            )
        if rows:
            await insert_index_rows(self.session, rows)

    async def write_batch(self) -> None:
        """Write the batch: its changed customers (`_write_changed`), its new ones (the
        session's flush), then one DELETE of the replaced blind-index rows and one bulk
        insert of the new ones."""
        if self._deferred is None:
            return
        await self._write_changed()
        deferred, self._deferred = self._deferred, {}
        await self.session.flush()
        replaced = [cid for cid, (new, _) in deferred.items() if not new]
        if replaced:
            await self.session.execute(
                delete(BlindIndex).where(BlindIndex.customer_id.in_(replaced))
            )
        rows = [row for _, rows in deferred.values() for row in rows]
        if rows:
            await insert_index_rows(self.session, rows)

    async def _write_changed(self) -> None:
        """The ORM sends one UPDATE per customer (its version check needs each row's count);
        a batch's customers are locked (`preload`, or `upsert` itself), so their versions
        cannot have moved, and one executemany per set of changed columns writes them all,
        each version bumped as the ORM's would be. They leave the session then, so its flush
        does not write them again."""
        table = Customer.__table__
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        written = []
        for customer in self._changed.values():
            # what changed since the last flush (an erasure in the batch flushes by itself)
            names = tuple(sorted(inspect(customer).committed_state))
            if not names:
                continue
            params = {"b_id": customer.id, **{f"v_{n}": getattr(customer, n) for n in names}}
            by_columns.setdefault(names, []).append(params)
            written.append(customer)
        self._changed = {}
        with self.session.no_autoflush:
            for names, rows in by_columns.items():
                values: dict[str, Any] = {n: bindparam(f"v_{n}") for n in names}
                stmt = (
                    update(table)
                    .where(table.c.id == bindparam("b_id"))
                    .values({**values, "version": table.c.version + 1})
                )
                await self.session.execute(stmt, rows)
        for customer in written:
            self.session.expunge(customer)

    async def upsert(
        self,
        external_id: str,
        changes: dict[str, Any],
        *,
        source: str,
        occurred_at: datetime,
    ) -> UpsertResult:
        """Create or update by external id. Absent fields stay, None clears. A change older than
        the last one applied from the same source changes nothing."""
        changes = clean_changes(changes)
        customer = await self.by_external_id(external_id, for_update=True)
        stamp = occurred_at.isoformat()
        if customer is None:
            customer = Customer(id=uuid.uuid4(), external_id=external_id.strip(), source_clock={})
            key = self.vault.new_customer_key(customer)
            self._encrypt_into(customer, key, changes)
            customer.source_clock = {source: stamp}
            self.session.add(customer)
            if customer.external_id in self._locked:
                self._locked[customer.external_id] = customer
            if self._deferred is None:
                await self.session.flush()  # the index rows refer to it
            await self.reindex(customer, self._record_from(customer, changes), new=True)
            return UpsertResult(customer, created=True, applied=True, changed=set(changes))
        last = (customer.source_clock or {}).get(source)
        if last is not None and datetime.fromisoformat(last) > occurred_at:
            return UpsertResult(customer, created=False, applied=False)
        was_erased = customer.erased_at is not None
        if was_erased:  # the system of record added them again
            customer.erased_at = None
            key = self.vault.new_customer_key(customer)
            changed = {k for k, v in changes.items() if v is not None}
        else:
            # Only the fields the change names are read (most sync events name none or one).
            key = self.vault.key_of(customer) if PERSONAL_SET & changes.keys() else b""
            changed = {k for k, v in changes.items() if self._current(customer, key, k) != v}
        self._encrypt_into(customer, key, {k: changes[k] for k in changed})
        if last != stamp:
            customer.source_clock = {**(customer.source_clock or {}), source: stamp}
        if changed:
            customer.updated_at = utcnow()
        if changed & {*INDEXED} or was_erased:
            await self.reindex(customer)
        if self._deferred is not None:
            self._changed[customer.id] = customer
        return UpsertResult(customer, created=False, applied=True, changed=changed)

    def _current(self, customer: Customer, key: bytes, name: str) -> Any:
        """One field's current value (decrypted when personal)."""
        if name in PERSONAL_SET:
            blob = getattr(customer, f"{name}_ct")
            return decrypt_field(key, "customers", name, customer.id, blob)
        return getattr(customer, name)

    def _record_from(self, customer: Customer, values: dict[str, Any]) -> CustomerRecord:
        return CustomerRecord(id=customer.id, external_id=customer.external_id, **values)

    async def edit(
        self, customer_id: uuid.UUID, changes: dict[str, Any], *, expected_version: int
    ) -> UpsertResult:
        """An edit made in Slack: refused with StaleEdit when the record moved on meanwhile."""
        customer = await self.get(customer_id, for_update=True)
        if customer is None or customer.erased_at is not None:
            raise LookupError("no such customer")
        if customer.version != expected_version:
            raise StaleEdit("this customer was changed meanwhile; open it again")
        changes = clean_changes(changes)
        before = self.read(customer)
        changed = {k for k, v in changes.items() if getattr(before, k) != v}
        self._encrypt_into(customer, self.vault.key_of(customer), {k: changes[k] for k in changed})
        if changed:
            customer.updated_at = utcnow()
        await self.session.flush()
        if changed & {*INDEXED}:
            await self.reindex(customer)
        return UpsertResult(customer, created=False, applied=True, changed=changed)

    async def erase(self, customer: Customer, *, occurred_at: datetime | None = None, source=None):
        """Crypto-shredding: the data key and index rows go, so every ciphertext about this
        customer, anywhere in the database, is unreadable at once."""
        await self.session.execute(delete(BlindIndex).where(BlindIndex.customer_id == customer.id))
        # Notes added in Slack go with the key (storage/notes.py says why).
        await self.session.execute(
            delete(TimelineEntry).where(
                TimelineEntry.customer_id == customer.id, TimelineEntry.kind == "note"
            )
        )
        if self._deferred is not None:
            self._deferred.pop(customer.id, None)
        for name in PERSONAL:
            setattr(customer, f"{name}_ct", None)
        for name in PLAIN:
            setattr(customer, name, None)
        customer.key_id = None
        customer.wrapped_key = None
        customer.erased_at = utcnow()
        if source and occurred_at:
            customer.source_clock = {
                **(customer.source_clock or {}),
                source: occurred_at.isoformat(),
            }
        await self.session.flush()
