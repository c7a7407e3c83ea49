"""Field encryption, key wrapping and blind-index terms, without a database."""

import base64
import uuid

import pytest

from storage.crypto import (
    BlindIndexer,
    CryptoError,
    KeyRing,
    UnknownKeyError,
    decrypt_field,
    encrypt_field,
    fold,
    index_terms,
    new_data_key,
    query_terms,
)


def ring(*ids: str) -> KeyRing:
    return KeyRing.parse(
        ",".join(f"{i}:{base64.b64encode(bytes([n]) * 32).decode()}" for n, i in enumerate(ids, 1))
    )


def test_round_trip_and_fresh_nonce():
    key, row = new_data_key(), uuid.uuid4()
    a = encrypt_field(key, "customers", "email", row, "ada@example.com")
    b = encrypt_field(key, "customers", "email", row, "ada@example.com")
    assert a != b  # a random nonce each time
    assert decrypt_field(key, "customers", "email", row, a) == "ada@example.com"


@pytest.mark.parametrize(
    "table, column, row",
    [("customers", "name", "same"), ("handoffs", "email", "same"), ("customers", "email", "other")],
)
def test_ciphertext_moved_to_another_row_or_column_fails(table, column, row):
    key = new_data_key()
    blob = encrypt_field(key, "customers", "email", "same", "ada@example.com")
    with pytest.raises(CryptoError):
        decrypt_field(key, table, column, row, blob)


def test_flipped_bit_fails():
    key = new_data_key()
    blob = bytearray(encrypt_field(key, "customers", "notes", 1, "called on Monday"))
    blob[-5] ^= 0x01
    with pytest.raises(CryptoError, match="authentication"):
        decrypt_field(key, "customers", "notes", 1, bytes(blob))


def test_wrap_unwrap_and_unknown_key_id():
    r = ring("k2", "k1")
    data_key = new_data_key()
    key_id, wrapped = r.wrap(data_key, "customers:1")
    assert key_id == "k2"
    assert r.unwrap(key_id, wrapped, "customers:1") == data_key
    with pytest.raises(CryptoError):
        r.unwrap(key_id, wrapped, "customers:2")  # bound to its row
    with pytest.raises(UnknownKeyError, match="'k9' is not in CRM_MASTER_KEYS"):
        r.unwrap("k9", wrapped, "customers:1")


@pytest.mark.parametrize(
    "setting, message",
    [
        ("", "empty"),
        ("nocolon", "not 'id:base64key'"),
        ("k1:!!!", "not base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "not 32 bytes"),
        (
            "k1:"
            + base64.b64encode(b"a" * 32).decode()
            + ",k1:"
            + base64.b64encode(b"b" * 32).decode(),
            "twice",
        ),
    ],
)
def test_bad_key_ring_setting(setting, message):
    with pytest.raises(CryptoError, match=message):
        KeyRing.parse(setting)


def test_normalisation_and_terms():
    assert fold("  Zoë   ÅNGSTRÖM ") == "zoe angstrom"
    terms = index_terms(
        email=" Ada@Example.COM ",
        phone="+44 (20) 7946-0018",
        external_id="CRM-1",
        texts=["Zoë Ångström", "Acme"],
    )
    assert ("email", "ada@example.com") in terms
    assert ("phone", "442079460018") in terms
    assert ("external_id", "crm-1") in terms
    assert {
        ("word", "zoe"),
        ("prefix", "ang"),
        ("prefix", "angstro"),
        ("word", "angstrom"),
    } <= terms
    assert ("prefix", "angstrom") not in terms
    assert ("prefix", "an") not in terms  # prefixes start at 3 characters
    _, words = query_terms("Ångs")
    assert words == ["angs"]
    assert ("phone", "442079460018") in query_terms("+44 20 7946 0018")[0]


def test_digests_are_keyed_and_kind_separated():
    a, b = BlindIndexer(b"a" * 32), BlindIndexer(b"b" * 32)
    assert a.digest("word", "acme") == a.digest("word", "acme")
    assert a.digest("word", "acme") != b.digest("word", "acme")
    assert a.digest("word", "acme") != a.digest("prefix", "acme")
