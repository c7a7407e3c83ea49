"""The keys of one database: customers' data keys and the blind-index keys, under a key ring."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .crypto import (
    BlindIndexer,
    CryptoError,
    KeyRing,
    decrypt_field,
    derive_key,
    encrypt_field,
    new_data_key,
)
from .models import AuditEntry, AuditKey, Customer, IndexKey

AUDIT_KEY_ROW = 1
log = logging.getLogger(__name__)


def index_key_context(generation: int) -> str:
    """What a blind-index key's wrapping is bound to."""
    return f"index_keys:{generation}"


def audit_key_context(keyed_from: int) -> str:
    """What the audit key's wrapping is bound to: raising `keyed_from` (to pass rewritten
    entries off as from before the chain was keyed) makes the key unreadable."""
    return f"audit_keys:{AUDIT_KEY_ROW}:{keyed_from}"


class ErasedError(CryptoError):
    """The customer was erased: their data key is gone."""


class Vault:
    def __init__(self, ring: KeyRing):
        self.ring = ring
        self.indexers: dict[int, BlindIndexer] = {}
        self.audit_key: bytes | None = None  # HMAC key of the audit chain
        self.audit_keyed_from = 1  # the first entry sealed with it
        self.audit_generation = AUDIT_KEY_ROW  # its row in audit_keys, named by each entry
        self.audit_key_missing: str | None = None  # why the key could not be had, if so

    @property
    def active_generation(self) -> int:
        return max(self.indexers)

    @property
    def indexer(self) -> BlindIndexer:
        return self.indexers[self.active_generation]

    async def load(self, session: AsyncSession) -> None:
        """Load the blind-index keys, creating the first one in a new database."""
        rows = (await session.execute(select(IndexKey))).scalars().all()
        if not rows:
            rows = [await self.add_index_key(session, generation=1)]
        self.indexers = {
            row.generation: BlindIndexer(
                self.ring.unwrap(row.key_id, row.wrapped_key, index_key_context(row.generation))
            )
            for row in rows
        }
        await self._load_audit_key(session)

    async def _load_audit_key(self, session: AsyncSession) -> None:
        """The audit chain's key, made when first needed: entries already in the log (from
        before it existed) keep their plain hashes. Never made again once entries name it:
        a key row deleted after that would otherwise be replaced quietly and the entries
        before the new one passed off as unkeyed (rewritten with plain hashes); instead the
        key is missing (`audit_key_missing`), appends fail and `audit verify` names the row."""
        row = await session.get(AuditKey, AUDIT_KEY_ROW)
        if row is None:
            generation, sealed = (
                await session.execute(
                    select(func.min(AuditEntry.key_generation), func.count(AuditEntry.seq)).where(
                        AuditEntry.key_generation.is_not(None)
                    )
                )
            ).one()
            if sealed and generation is not None:  # the min is set whenever the count is
                self.audit_key, self.audit_generation = None, int(generation)
                self.audit_key_missing = (
                    f"the audit key (audit_keys row {generation}) is missing, but {sealed} "
                    "audit entries were sealed with it: restore that row from a backup"
                )
                return
            last = (await session.execute(select(func.max(AuditEntry.seq)))).scalar()
            keyed_from = (last or 0) + 1
            if last:  # a database from before the key, or a log rewritten to look like one
                log.warning(
                    "making the audit key over %d unkeyed audit entries; check them against "
                    "a noted head (`crm-bot audit verify --head SEQ:HASH`)",
                    last,
                )
            key_id, wrapped = self.ring.wrap(new_data_key(), audit_key_context(keyed_from))
            row = AuditKey(
                id=AUDIT_KEY_ROW, keyed_from=keyed_from, key_id=key_id, wrapped_key=wrapped
            )
            try:
                async with session.begin_nested():
                    session.add(row)
            except IntegrityError:  # another process made it first
                row = await session.get_one(AuditKey, AUDIT_KEY_ROW)
        key = self.ring.unwrap(row.key_id, row.wrapped_key, audit_key_context(row.keyed_from))
        self.audit_key = derive_key(key, b"crm-bot audit chain v1")
        self.audit_keyed_from = row.keyed_from
        self.audit_generation = row.id
        self.audit_key_missing = None

    async def add_index_key(self, session: AsyncSession, generation: int) -> IndexKey:
        key = new_data_key()
        key_id, wrapped = self.ring.wrap(key, index_key_context(generation))
        row = IndexKey(generation=generation, key_id=key_id, wrapped_key=wrapped)
        try:
            async with session.begin_nested():
                session.add(row)
        except IntegrityError:  # another process made it first
            row = await session.get_one(IndexKey, generation)
        self.indexers[generation] = BlindIndexer(
            self.ring.unwrap(row.key_id, row.wrapped_key, index_key_context(generation))
        )
        return row

    # --- data keys ---

    def new_customer_key(self, customer: Customer) -> bytes:
        if customer.id is None:
            customer.id = uuid.uuid4()
        key = new_data_key()
        customer.key_id, customer.wrapped_key = self.ring.wrap(key, f"customers:{customer.id}")
        return key

    def data_key(self, customer_id: uuid.UUID, key_id: str | None, wrapped: bytes | None) -> bytes:
        if key_id is None or wrapped is None:
            raise ErasedError("this customer was erased; their data can no longer be read")
        return self.ring.unwrap(key_id, wrapped, f"customers:{customer_id}")

    def key_of(self, customer: Customer) -> bytes:
        return self.data_key(customer.id, customer.key_id, customer.wrapped_key)

    # --- notes about a customer, in other tables ---

    def seal(self, customer: Customer, table: str, column: str, row_id, text: str | None):
        if text is None:
            return None
        return encrypt_field(self.key_of(customer), table, column, row_id, text)

    def open(self, customer: Customer, table: str, column: str, row_id, blob: bytes | None):
        """Decrypt a note; an erased customer's notes read as None."""
        if blob is None:
            return None
        try:
            key = self.key_of(customer)
        except ErasedError:
            return None
        return decrypt_field(key, table, column, row_id, blob)
