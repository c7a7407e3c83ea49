"""Envelope encryption of customer data, and the keyed digests behind the blind indexes.

- A key ring of master keys (`CRM_MASTER_KEYS` = `id:base64(32 bytes)`, comma-separated, the first
  active) wraps each customer's random 256-bit data key with AES-256-GCM; the wrapped key is
  stored with the id of the master key that wrapped it, and is bound to the customer's row.
- Every personal field and free-text note is AES-256-GCM under the customer's data key, with a
  random 96-bit nonce and associated data naming table, column and row: moved elsewhere, a
  ciphertext no longer decrypts.
- Blind-index digests are HMAC-SHA256 under a separate random index key (itself stored wrapped),
  over normalised values, so equal values match without the values being stored.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import os
import re
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class CryptoError(Exception):
    """A key is missing or wrong, or a ciphertext was altered or moved."""


class UnknownKeyError(CryptoError):
    pass


def generate_key_line(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


@dataclass(frozen=True)
class KeyRing:
    """Master keys by id; the first is the active one that wraps new data keys."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, setting: str | None) -> KeyRing:
        if not setting or not setting.strip():
            raise CryptoError("CRM_MASTER_KEYS is empty (generate one with: crm-bot keys generate)")
        keys: list[tuple[str, bytes]] = []
        for n, item in enumerate(setting.split(","), start=1):
            key_id, sep, b64 = item.strip().partition(":")
            if not sep or not KEY_ID.match(key_id):
                raise CryptoError(f"CRM_MASTER_KEYS entry {n} is not 'id:base64key'")
            try:
                key = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise CryptoError(f"CRM_MASTER_KEYS entry {n} ({key_id}) is not base64") from None
            if len(key) != KEY_BYTES:
                raise CryptoError(f"CRM_MASTER_KEYS entry {n} ({key_id}) is not 32 bytes")
            if any(k == key_id for k, _ in keys):
                raise CryptoError(f"CRM_MASTER_KEYS has key id {key_id} twice")
            keys.append((key_id, key))
        return cls(tuple(keys))

    @property
    def active_id(self) -> str:
        return self.keys[0][0]

    def _key(self, key_id: str) -> bytes:
        for kid, key in self.keys:
            if kid == key_id:
                return key
        raise UnknownKeyError(
            f"master key {key_id!r} is not in CRM_MASTER_KEYS (was it retired too early?)"
        )

    def wrap(self, data_key: bytes, bound_to: str) -> tuple[str, bytes]:
        """Wrap a data key under the active master key; returns (master key id, wrapped)."""
        key_id, key = self.keys[0]
        return key_id, _seal(key, data_key, f"wrap:{key_id}:{bound_to}".encode())

    def unwrap(self, key_id: str, wrapped: bytes, bound_to: str) -> bytes:
        return _open(self._key(key_id), wrapped, f"wrap:{key_id}:{bound_to}".encode())


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != VERSION:
        raise CryptoError("ciphertext is malformed")
    nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise CryptoError("ciphertext failed authentication (altered, or moved)") from None


def field_aad(table: str, column: str, row_id: object) -> bytes:
    return f"{table}.{column}:{row_id}".encode()


def encrypt_field(data_key: bytes, table: str, column: str, row_id: object, value: str | None):
    if value is None:
        return None
    return _seal(data_key, value.encode("utf-8"), field_aad(table, column, row_id))


def decrypt_field(data_key: bytes, table: str, column: str, row_id: object, blob: bytes | None):
    if blob is None:
        return None
    return _open(data_key, blob, field_aad(table, column, row_id)).decode("utf-8")


# --- blind indexes ------------------------------------------------------------------------------

EXACT_KINDS = ("email", "phone", "external_id")
WORD = re.compile(r"[^\W_]+", re.UNICODE)
MIN_PREFIX = 3
MAX_PREFIX = 16


def fold(text: str) -> str:
    """Lower case, accents removed, white space collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def normalise_email(value: str) -> str:
    return value.strip().lower()


def normalise_phone(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def words(text: str) -> list[str]:
    return WORD.findall(fold(text))


def index_terms(
    *, email: str | None, phone: str | None, external_id: str | None, texts: list[str | None]
) -> set[tuple[str, str]]:
    """The (kind, normalised term) pairs a customer is findable by."""
    terms = set(exact_terms(email=email, phone=phone, external_id=external_id))
    for text in texts:
        for word in text_words(text or ""):
            terms.update(word_terms(word))
    return terms


def exact_terms(
    *, email: str | None, phone: str | None, external_id: str | None
) -> list[tuple[str, str]]:
    """The customer's own values: email, phone (4+ digits), external id."""
    terms = []
    if email and normalise_email(email):
        terms.append(("email", normalise_email(email)))
    if phone and len(normalise_phone(phone)) >= 4:
        terms.append(("phone", normalise_phone(phone)))
    if external_id and external_id.strip():
        terms.append(("external_id", external_id.strip().casefold()))
    return terms


@functools.lru_cache(maxsize=8192)
def text_words(text: str) -> tuple[str, ...]:
    """A name's or company's searchable words (3+ characters). Cached: names and companies
    repeat across customers (an import folds each distinct one once); 8,192 texts of at most
    200 characters bound it to a few MB."""
    return tuple(w for w in words(text) if len(w) >= MIN_PREFIX)


def word_terms(word: str) -> tuple[tuple[str, str], ...]:
    """A word's terms: the whole word, and its beginnings of 3..16 characters as prefixes."""
    prefixes = (("prefix", word[:n]) for n in range(MIN_PREFIX, min(len(word) - 1, MAX_PREFIX) + 1))
    return (("word", word), *prefixes)


def query_terms(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """What to look up for a search text: exact terms, and the words that must each match."""
    text = text.strip()
    exact: list[tuple[str, str]] = []
    if "@" in text:
        exact.append(("email", normalise_email(text)))
    digits = normalise_phone(text)
    if len(digits) >= 4 and re.fullmatch(r"[\d\s+().-]+", text):
        exact.append(("phone", digits))
    exact.append(("external_id", text.casefold()))
    found = [w[:MAX_PREFIX] for w in words(text) if len(w) >= MIN_PREFIX]
    return exact, found


def derive_key(key: bytes, purpose: bytes) -> bytes:
    """A key for one purpose (HKDF-SHA256), so one random key never serves two."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


class BlindIndexer:
    """HMAC digests of terms under the index key; one kind's digest never equals another's."""

    def __init__(self, index_key: bytes):
        self._key = derive_key(index_key, b"crm-bot blind index v1")
        # A word's digests (whole word and prefixes, ~10 HMACs) are computed once per distinct
        # word: first names, surnames and company words repeat across customers, and the
        # HMACs were a fifth of an import's time. 8,192 words of ~15 digests are ~10 MB.
        self.word_digests = functools.lru_cache(maxsize=8192)(self._word_digests)

    def digest(self, kind: str, term: str) -> bytes:
        return hmac.digest(self._key, f"{kind}\x00{term}".encode(), "sha256")[:16]

    def _word_digests(self, word: str) -> tuple[tuple[str, bytes], ...]:
        return tuple((kind, self.digest(kind, term)) for kind, term in word_terms(word))

    def customer_digests(
        self,
        *,
        email: str | None,
        phone: str | None,
        external_id: str | None,
        texts: list[str | None],
    ) -> dict[bytes, str]:
        """Digest -> kind for every term of `index_terms` (the same set, faster)."""
        out = {
            self.digest(kind, term): kind
            for kind, term in exact_terms(email=email, phone=phone, external_id=external_id)
        }
        for text in texts:
            for word in text_words(text or ""):
                for kind, digest in self.word_digests(word):
                    out[digest] = kind
        return out
