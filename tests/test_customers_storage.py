"""The customer repository on SQLite and PostgreSQL: encryption at rest, search, ordering, erasure."""

import asyncio
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.crypto import CryptoError, KeyRing
from storage.customers import Customers, StaleEdit
from storage.db import Database
from storage.models import BlindIndex, Customer, TimelineEntry
from storage.rotation import reindex, rewrap
from storage.vault import Vault
from tests.fixtures.db import KEY_LINE, OLD_KEY_LINE

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

PEOPLE = [
    (
        "C-100",
        {
            "name": "Ada Lovelace",
            "email": "ada@analytical.example",
            "phone": "+44 20 7946 0018",
            "company": "Analytical Engines Ltd",
            "notes": "Prefers email",
            "tier": "enterprise",
            "annual_value": 120000,
        },
    ),
    (
        "C-101",
        {
            "name": "Alan Turing",
            "email": "alan@bletchley.example",
            "phone": "+44 1908 640404",
            "company": "Bletchley Park",
            "tier": "strategic",
        },
    ),
    (
        "C-102",
        {
            "name": "Grace Hopper",
            "email": "grace@navy.example",
            "company": "Analytical Navy Systems",
            "tier": "smb",
        },
    ),
    ("C-103", {"name": "Zoë Ångström", "email": "zoe@optics.example", "company": "Optics AB"}),
]


async def seed(db, vault):
    async with db.transaction() as s:
        repo = Customers(s, vault)
        for ext, fields in PEOPLE:
            await repo.upsert(ext, fields, source="crm", occurred_at=T0)


async def search(db, vault, text):
    async with db.transaction() as s:
        return [r.external_id for r in await Customers(s, vault).search(text)]


async def test_round_trip(db, vault):
    await seed(db, vault)
    async with db.transaction() as s:
        repo = Customers(s, vault)
        record = repo.read(await repo.by_external_id("C-100"))
    assert (record.name, record.email, record.notes) == (
        "Ada Lovelace",
        "ada@analytical.example",
        "Prefers email",
    )
    assert record.annual_value == 120000


@pytest.mark.parametrize(
    "query, expected",
    [
        ("ada@analytical.example", ["C-100"]),
        ("ADA@Analytical.Example ", ["C-100"]),
        ("+44 20 7946 0018", ["C-100"]),
        ("442079460018", ["C-100"]),
        ("c-101", ["C-101"]),
        ("Turing", ["C-101"]),
        ("gra", ["C-102"]),
        ("zoe", ["C-103"]),
        ("ångs", ["C-103"]),
        ("analytical", ["C-100", "C-102"]),
        ("analytical navy", ["C-102"]),
        ("nobody", []),
        ("ab", []),
    ],
)
async def test_search(db, vault, query, expected):
    await seed(db, vault)
    found = await search(db, vault, query)
    assert sorted(found) == sorted(expected)


async def test_exact_match_ranks_first(db, vault):
    await seed(db, vault)
    async with db.transaction() as s:
        await Customers(s, vault).upsert(
            "C-104", {"name": "Ada Ada", "company": "Ada Corp"}, source="crm", occurred_at=T0
        )
    found = await search(db, vault, "c-100")
    assert found[0] == "C-100"


async def test_stale_upsert_changes_nothing_and_other_sources_still_apply(db, vault):
    await seed(db, vault)
    async with db.transaction() as s:
        repo = Customers(s, vault)
        stale = await repo.upsert(
            "C-100", {"name": "Old Name"}, source="crm", occurred_at=T0 - timedelta(hours=1)
        )
        other = await repo.upsert(
            "C-100", {"tier": "smb"}, source="billing", occurred_at=T0 - timedelta(hours=1)
        )
    assert not stale.applied and other.applied
    async with db.transaction() as s:
        record = Customers(s, vault).read(await Customers(s, vault).by_external_id("C-100"))
    assert record.name == "Ada Lovelace" and record.tier == "smb"
    assert await search(db, vault, "old") == []


async def test_absent_keeps_and_null_clears(db, vault):
    await seed(db, vault)
    async with db.transaction() as s:
        await Customers(s, vault).upsert(
            "C-100", {"phone": None}, source="crm", occurred_at=T0 + timedelta(1)
        )
    async with db.transaction() as s:
        record = Customers(s, vault).read(await Customers(s, vault).by_external_id("C-100"))
    assert record.phone is None and record.email == "ada@analytical.example"
    assert await search(db, vault, "+44 20 7946 0018") == []


async def test_edit_with_stale_version_is_refused(db, vault):
    await seed(db, vault)
    async with db.transaction() as s:
        c = await Customers(s, vault).by_external_id("C-101")
        cid, version = c.id, c.version
    async with db.transaction() as s:
        await Customers(s, vault).edit(cid, {"notes": "first"}, expected_version=version)
    with pytest.raises(StaleEdit):
        async with db.transaction() as s:
            await Customers(s, vault).edit(cid, {"notes": "second"}, expected_version=version)
    async with db.transaction() as s:
        assert Customers(s, vault).read(await Customers(s, vault).get(cid)).notes == "first"


async def test_a_batch_writes_its_changes_and_bumps_versions(db, vault):
    """A batch (the sync consumer's) writes its changed customers itself, not through the
    ORM: each change lands, each version moves on as the ORM's would, so a Slack edit made
    from the old version is still refused; a customer the batch did not change keeps its."""
    await seed(db, vault)
    async with db.transaction() as s:
        before = {c.external_id: c.version for c in (await s.execute(select(Customer))).scalars()}
    later = T0 + timedelta(hours=1)
    async with db.transaction() as s:
        repo = Customers(s, vault, batch=True)
        await repo.preload(["C-100", "C-101", "C-102", "C-105"])
        await repo.upsert("C-100", {"tier": "smb"}, source="crm", occurred_at=later)
        await repo.upsert(
            "C-101", {"name": "Alan Mathison Turing"}, source="crm", occurred_at=later
        )
        await repo.upsert(
            "C-102", {"tier": "strategic"}, source="crm", occurred_at=T0 - timedelta(1)
        )
        await repo.upsert("C-105", {"name": "New Person"}, source="crm", occurred_at=later)
        await repo.write_batch()
    async with db.transaction() as s:
        rows = {c.external_id: c for c in (await s.execute(select(Customer))).scalars()}
        repo = Customers(s, vault)
        assert repo.read(rows["C-100"]).tier == "smb"
        assert repo.read(rows["C-101"]).name == "Alan Mathison Turing"
        assert repo.read(rows["C-102"]).tier == "smb"  # the stale change was not applied
        assert rows["C-102"].version == before["C-102"]  # ... and wrote nothing
        assert rows["C-100"].source_clock["crm"] == later.isoformat()
        assert rows["C-100"].version == before["C-100"] + 1
        assert rows["C-101"].version == before["C-101"] + 1
        assert repo.read(rows["C-105"]).name == "New Person"
    assert await search(db, vault, "mathison") == ["C-101"]
    with pytest.raises(StaleEdit):
        async with db.transaction() as s:
            await Customers(s, vault).edit(
                rows["C-101"].id, {"notes": "x"}, expected_version=before["C-101"]
            )


async def test_erasure_shreds_every_ciphertext(db, vault):
    await seed(db, vault)
    async with db.transaction() as s:
        repo = Customers(s, vault)
        c = await repo.by_external_id("C-100")
        entry = TimelineEntry(customer_id=c.id, occurred_at=T0, kind="ticket.opened", source="hd")
        entry.id = uuid.uuid4()
        entry.summary_ct = vault.seal(c, "timeline", "summary", entry.id, "Asked about invoice 42")
        s.add(entry)
        note = TimelineEntry(customer_id=c.id, occurred_at=T0, kind="note", source="slack")
        note.id = uuid.uuid4()
        note.summary_ct = vault.seal(c, "timeline", "summary", note.id, "Plans to leave")
        s.add(note)  # a note added in Slack: deleted by the erasure, not only shredded
        wrapped = (c.key_id, c.wrapped_key, c.id)
    async with db.transaction() as s:
        repo = Customers(s, vault)
        await repo.erase(await repo.by_external_id("C-100"))
    async with db.transaction() as s:
        c = await Customers(s, vault).by_external_id("C-100")
        assert c.wrapped_key is None and c.email_ct is None
        left = (
            await s.execute(
                select(func.count()).select_from(BlindIndex).where(BlindIndex.customer_id == c.id)
            )
        ).scalar_one()
        assert left == 0
        entry = (await s.execute(select(TimelineEntry))).scalar_one()
        assert vault.open(c, "timeline", "summary", entry.id, entry.summary_ct) is None
    assert await search(db, vault, "ada@analytical.example") == []
    assert await search(db, vault, "lovelace") == []
    assert wrapped[1] is not None


async def test_rotation_then_search_with_new_key_alone(db, vault, db_url):
    await seed(db, vault)
    new_line = "k2:" + __import__("base64").b64encode(b"\x07" * 32).decode()
    both = Vault(KeyRing.parse(f"{new_line},{KEY_LINE}"))
    async with db.transaction() as s:
        await both.load(s)
    assert await rewrap(db, both) == len(PEOPLE)
    assert await rewrap(db, both) == 0  # resumable: nothing left
    await reindex(db, both)
    only_new = Vault(KeyRing.parse(new_line))
    async with db.transaction() as s:
        await only_new.load(s)
        repo = Customers(s, only_new)
        assert repo.read(await repo.by_external_id("C-102")).name == "Grace Hopper"
    for ext, fields in PEOPLE:
        assert ext in await search(db, only_new, fields["email"])
        assert ext in await search(db, only_new, fields["name"].split()[0][:3])


async def test_backup_unreadable_after_erasure_rotation_and_retirement(tmp_path):
    """A copy of the database taken before an erasure stops decrypting once the master key
    it was wrapped under is rotated away and retired."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    from storage.migrate import upgrade

    live = Database(url)
    await upgrade(live)
    old = Vault(KeyRing.parse(OLD_KEY_LINE))
    async with live.transaction() as s:
        await old.load(s)
    await seed(live, old)
    await live.close()
    shutil.copy(tmp_path / "live.db", tmp_path / "backup.db")
    live = Database(url)
    async with live.transaction() as s:
        repo = Customers(s, old)
        await repo.erase(await repo.by_external_id("C-100"))
    rotated = Vault(KeyRing.parse(f"{KEY_LINE},{OLD_KEY_LINE}"))
    async with live.transaction() as s:
        await rotated.load(s)
    await rewrap(live, rotated)
    await live.close()

    retired = Vault(KeyRing.parse(KEY_LINE))  # the old master key is gone
    backup = Database(f"sqlite+aiosqlite:///{tmp_path / 'backup.db'}")
    with pytest.raises(CryptoError, match="not in CRM_MASTER_KEYS"):
        async with backup.transaction() as s:
            await retired.load(s)  # even the backup's index key is under the old master key
    async with backup.transaction() as s:
        c = (await s.execute(select(Customer).where(Customer.external_id == "C-100"))).scalar_one()
        with pytest.raises(CryptoError):
            retired.key_of(c)
    await backup.close()


async def test_no_personal_value_in_the_raw_database(db, vault, db_url, tmp_path):
    await seed(db, vault)
    await db.close()
    if db_url.startswith("sqlite"):
        raw = b"".join(
            p.read_bytes() for p in Path(db_url.split("///", 1)[1]).parent.glob("crm.db*")
        )
    else:
        if not shutil.which("pg_dump"):
            pytest.skip("pg_dump is not installed")
        from sqlalchemy.engine import make_url

        u = make_url(db_url)
        dump = await asyncio.to_thread(
            subprocess.run,
            [
                "pg_dump",
                "-h",
                u.host,
                "-p",
                str(u.port or 5432),
                "-U",
                u.username or "postgres",
                u.database,
            ],
            check=True,
            capture_output=True,
        )
        raw = dump.stdout
    for _, fields in PEOPLE:
        for key in ("name", "email", "phone", "company", "notes"):
            value = fields.get(key)
            if value:
                assert value.encode() not in raw, f"{key} found in plaintext"
                assert value.encode("utf-16-le") not in raw
    assert b"C-100" in raw  # the external id is the join key and stays in clear
