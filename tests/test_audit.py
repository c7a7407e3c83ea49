"""The audit log's hash chain: `verify` passes on a clean log and names the first entry broken
by an UPDATE, a DELETE or a swap done straight in the database; `export` writes JSON lines.
On SQLite and PostgreSQL; the CLI is run once as a real process."""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from bot.service import Tuning
from storage import audit
from storage.crypto import CryptoError, KeyRing
from storage.customers import Customers
from storage.models import AuditKey, utcnow
from storage.vault import Vault

from .fixtures.bot import bot_settings, start_bot
from .fixtures.cli import run_cli
from .fixtures.db import KEY_LINE
from .fixtures.slack import eventually

ENTRIES = 5


@pytest.fixture
async def chain(db, vault):
    """Five entries, the odd ones about a customer with encrypted details."""
    async with db.transaction() as session:
        customer = (
            await Customers(session, vault).upsert(
                "C-1", {"name": "Ada"}, source="test", occurred_at=utcnow()
            )
        ).customer
    for i in range(1, ENTRIES + 1):
        async with db.transaction() as session:
            await audit.append(
                session,
                actor="U0GRACE01",
                action="approval.approved" if i % 2 else "handoff.accepted",
                entity_type="approval",
                entity_id=f"id-{i}",
                customer=customer if i % 2 else None,
                data={"step": i, "amount": "1200.50", "unit": "EUR"},
                details=f"reason number {i}" if i % 2 else None,
                vault=vault,
            )
    return db


async def verdict(db, vault, noted: audit.Head | None = None) -> audit.Verdict:
    async with db.transaction() as session:
        return await audit.verify(session, vault, noted=noted)


async def sql(db, *statements: str) -> None:
    async with db.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def test_clean_log_verifies(chain, vault):
    result = await verdict(chain, vault)
    assert result.ok and result.checked == ENTRIES and result.bad_seq is None
    assert str(result).startswith(f"ok: {ENTRIES} entries, chain intact")


async def test_empty_log_verifies(db, vault):
    result = await verdict(db, vault)
    assert result.ok and str(result) == "empty: no audit entries yet"


@pytest.mark.parametrize(
    ("tamper", "bad", "problem"),
    [
        ("UPDATE audit_log SET actor = 'U0MALLORY' WHERE seq = 3", 3, "content was changed"),
        ("UPDATE audit_log SET action = 'approval.rejected' WHERE seq = 2", 2, "content"),
        ("UPDATE audit_log SET entity_id = 'id-9' WHERE seq = 5", 5, "content was changed"),
        ("UPDATE audit_log SET hash = prev_hash WHERE seq = 4", 4, "content was changed"),
        ("UPDATE audit_log SET prev_hash = hash WHERE seq = 2", 2, "does not follow"),
        ("DELETE FROM audit_log WHERE seq = 3", 3, "entry 3 is missing"),
        ("DELETE FROM audit_log WHERE seq = 1", 1, "entry 1 is missing"),
    ],
)
async def test_tampering_is_named(chain, vault, tamper, bad, problem):
    await sql(chain, tamper)
    result = await verdict(chain, vault)
    assert not result.ok and result.bad_seq == bad and problem in result.problem
    assert str(result).startswith(f"broken at entry {bad}:")


async def test_changed_data_and_details_are_named(chain, vault):
    async with chain.transaction() as session:
        entry = await session.get(audit.AuditEntry, 3)
        entry.data = {**entry.data, "amount": "99999.00"}
    assert (await verdict(chain, vault)).bad_seq == 3
    await sql(chain, "DELETE FROM audit_log WHERE seq > 2")
    assert (await verdict(chain, vault)).ok
    async with chain.transaction() as session:
        entry = await session.get(audit.AuditEntry, 1)
        entry.details_ct = entry.details_ct[:-1] + bytes([entry.details_ct[-1] ^ 1])
    assert (await verdict(chain, vault)).bad_seq == 1


async def test_swapped_rows_are_named(chain, vault):
    await sql(
        chain,
        "UPDATE audit_log SET seq = -2 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 4",
        "UPDATE audit_log SET seq = 4 WHERE seq = -2",
    )
    result = await verdict(chain, vault)
    assert not result.ok and result.bad_seq == 2 and "does not follow" in result.problem


async def test_rewritten_entry_with_its_hash_recomputed_breaks_the_next_link(chain, vault):
    async with chain.transaction() as session:
        entry = await session.get(audit.AuditEntry, 2)
        entry.actor = "U0MALLORY"
        entry.hash = audit.entry_hash(entry, vault)
    result = await verdict(chain, vault)
    assert not result.ok and result.bad_seq == 3 and "does not follow" in result.problem


async def test_a_tail_rewritten_without_the_master_key_is_named(chain, vault):
    """Someone who can write the database but holds no master key rewrites entries 3..5 and
    recomputes every hash after them the only way open to them (plain SHA-256): the chain is
    keyed, so the first rewritten entry is named."""
    plain = Vault(KeyRing.parse(KEY_LINE))
    plain.audit_keyed_from = 10**9  # hashes as the unkeyed first version made them
    async with chain.transaction() as session:
        prev = (await session.get(audit.AuditEntry, 2)).hash
        for seq in (3, 4, 5):
            entry = await session.get(audit.AuditEntry, seq)
            entry.actor, entry.prev_hash, entry.key_generation = "U0MALLORY", prev, None
            entry.hash = prev = audit.entry_hash(entry, plain)
    result = await verdict(chain, vault)
    assert not result.ok and result.bad_seq == 3 and "content was changed" in result.problem


def printed_head(result: audit.Verdict) -> audit.Head:
    """The head as `verify` prints it: (head SEQ:HASH)."""
    return audit.parse_head(str(result).split("(head ")[1].split(")")[0])


async def test_entries_cut_from_the_end_show_against_a_noted_head(chain, vault):
    noted = printed_head(await verdict(chain, vault))
    assert noted[0] == ENTRIES
    await sql(chain, "DELETE FROM audit_log WHERE seq > 3")
    assert (await verdict(chain, vault)).ok  # the chain alone cannot tell
    result = await verdict(chain, vault, noted)
    assert not result.ok and result.bad_seq == 4
    assert (
        result.problem
        == "the chain ends at entry 3: the entries up to the noted head 5 were removed"
    )


async def test_a_chain_rewritten_with_the_key_shows_against_a_noted_head(chain, vault):
    """Someone holding the master key can rewrite the last entry and its hash so the chain
    verifies again; not so that it still holds the head noted before."""
    noted = printed_head(await verdict(chain, vault))
    async with chain.transaction() as session:
        entry = await session.get(audit.AuditEntry, ENTRIES)
        entry.actor = "U0MALLORY"
        entry.hash = audit.entry_hash(entry, vault)
    assert (await verdict(chain, vault)).ok
    result = await verdict(chain, vault, noted)
    assert not result.ok and result.bad_seq == ENTRIES and "not the entry noted" in result.problem


async def test_a_noted_head_holds_as_the_chain_grows(chain, vault):
    noted = printed_head(await verdict(chain, vault))
    await _append(chain, vault, 2)
    result = await verdict(chain, vault, noted)
    assert result.ok and result.checked == ENTRIES + 2
    assert f"the noted head {ENTRIES} is in it" in str(result)
    assert printed_head(result)[0] == ENTRIES + 2


@pytest.mark.parametrize("text", ["", "5", "5:", "0:" + "a" * 64, "5:" + "a" * 63, "x:" + "a" * 64])
def test_a_head_that_is_not_seq_colon_hash_is_refused(text):
    with pytest.raises(ValueError, match="expected SEQ:HASH"):
        audit.parse_head(text)


async def test_the_bot_logs_the_head_when_it_moves(chain, db_url, sandbox, vault, caplog):
    """The running bot writes `audit head SEQ:HASH` to its log, once per head (its job runs
    every 50 ms here): the record outside the database that `verify --head` checks against."""
    caplog.set_level(logging.INFO, logger="handlers.audit_witness")
    bot = await start_bot(bot_settings(db_url, sandbox), sandbox, tuning=Tuning(job_interval=0.05))
    try:

        def logged() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "handlers.audit_witness"]

        first = printed_head(await verdict(chain, vault))
        await eventually(lambda: logged() == [f"audit head {first[0]}:{first[1]}"])
        await _append(chain, vault, 2)  # two transactions: the job may log the head between
        second = printed_head(await verdict(chain, vault))
        last = f"audit head {second[0]}:{second[1]}"
        await eventually(lambda: logged()[-1] == last)
        lines = logged()
        assert lines[0] == f"audit head {first[0]}:{first[1]}" and len(lines) == len(set(lines))
        assert len(lines) in (2, 3)
    finally:
        await bot.sim.close()
        await bot.service.stop()


async def test_entries_from_before_the_key_keep_plain_hashes_and_the_cutover_is_bound(db, ring):
    """A database whose log was written before the chain was keyed: those entries still verify
    (as plain hashes), new ones are keyed, and moving the cut-over breaks the key itself."""
    old = Vault(ring)
    async with db.transaction() as session:
        await old.load(session)
        await session.execute(text("DELETE FROM audit_keys"))
    old.audit_keyed_from = 10**9  # the first version: plain SHA-256
    await _append(db, old, 2)
    new = Vault(ring)
    async with db.transaction() as session:
        await new.load(session)
    assert new.audit_keyed_from == 3
    await _append(db, new, 2)
    result = await verdict(db, new)
    assert result.ok and result.checked == 4 and result.unkeyed == 2
    assert "the first 2 from before it was keyed" in str(result)
    await sql(db, "UPDATE audit_keys SET keyed_from = 5")
    with pytest.raises(CryptoError):
        async with db.transaction() as session:
            await Vault(ring).load(session)


async def test_a_deleted_audit_key_fails_verify_naming_it_and_is_not_replaced(chain, ring):
    """The key row deleted and an entry rewritten with a plain hash, marked as from before the
    key: loading the keys makes no new one (the others still name it), verify names the row,
    appends fail, and the bot refuses to start with one line."""
    await sql(chain, "DELETE FROM audit_keys")
    plain = Vault(ring)
    plain.audit_keyed_from = 10**9
    async with chain.transaction() as session:
        entry = await session.get(audit.AuditEntry, 1)
        entry.actor, entry.key_generation = "U0MALLORY", None
        entry.hash = audit.entry_hash(entry, plain)
    after = Vault(ring)
    async with chain.transaction() as session:
        await after.load(session)
        assert await session.get(AuditKey, 1) is None  # not replaced
    result = await verdict(chain, after)
    assert not result.ok
    assert "the audit key (audit_keys row 1) is missing, but 4 audit entries" in result.problem
    with pytest.raises(CryptoError, match="audit_keys row 1"):
        await _append(chain, after, 1)


async def test_cli_verify_fails_naming_a_deleted_key_row(chain, db_url, tmp_path):
    env = {"DATABASE_URL": db_url, "CRM_MASTER_KEYS": KEY_LINE}
    assert run_cli("audit", "verify", env=env, cwd=tmp_path).returncode == 0
    await sql(chain, "DELETE FROM audit_keys")
    broken = run_cli("audit", "verify", env=env, cwd=tmp_path)
    assert broken.returncode == 1, broken.stderr
    assert broken.stdout.strip().startswith(
        "broken at entry 1: the audit key (audit_keys row 1) is missing"
    )
    again = run_cli("audit", "verify", env=env, cwd=tmp_path)  # still: no new key was made
    assert again.returncode == 1 and "audit_keys row 1" in again.stdout


async def test_an_entry_naming_another_key_generation_is_named(chain, vault):
    await sql(chain, "UPDATE audit_log SET key_generation = 2 WHERE seq = 3")
    result = await verdict(chain, vault)
    assert not result.ok and result.bad_seq == 3
    assert result.problem == "audit key generation 2 is not in audit_keys"


async def _append(db, vault: Vault, n: int) -> None:
    for i in range(n):
        async with db.transaction() as session:
            await audit.append(
                session,
                actor="U0GRACE01",
                action="department.channel_linked",
                entity_type="department",
                entity_id=f"d-{i}",
                data={"i": i},
                vault=vault,
            )


async def test_export_decrypts_details_and_filters_by_time(chain, vault):
    async with chain.transaction() as session:
        rows = [e async for e in audit.export(session, None, vault)]
    assert [r["seq"] for r in rows] == list(range(1, ENTRIES + 1))
    assert rows[0]["details"] == "reason number 1" and rows[1]["details"] is None
    assert rows[2]["data"] == {"step": 3, "amount": "1200.50", "unit": "EUR"}
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    json.dumps(rows)  # JSON-ready as it is
    async with chain.transaction() as session:
        await session.execute(
            update(audit.AuditEntry)
            .where(audit.AuditEntry.seq <= 2)
            .values(at=utcnow() - timedelta(days=2))
        )
    async with chain.transaction() as session:
        since = utcnow() - timedelta(days=1)
        recent = [e async for e in audit.export(session, since, vault)]
    assert [r["seq"] for r in recent] == [3, 4, 5]


async def test_cli_verify_and_export(chain, db_url, tmp_path):
    def crm_bot(*args: str) -> subprocess.CompletedProcess:
        env = {"DATABASE_URL": db_url, "CRM_MASTER_KEYS": KEY_LINE}
        return run_cli(*args, env=env, cwd=tmp_path)

    ok = crm_bot("audit", "export", "--since", "2000-01-01")
    assert ok.returncode == 0, ok.stderr
    lines = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, ENTRIES + 1))
    assert lines[0]["details"] == "reason number 1"
    clean = crm_bot("audit", "verify")
    assert clean.returncode == 0, clean.stderr
    head = clean.stdout.split("(head ")[1].split(")")[0]
    assert head.startswith(f"{ENTRIES}:")
    refused = crm_bot("audit", "verify", "--head", "latest")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "crm-bot audit verify: argument --head: not an audit head: expected SEQ:HASH as "
        "`audit verify` prints it"
    ]
    await sql(chain, f"DELETE FROM audit_log WHERE seq = {ENTRIES}")
    cut = crm_bot("audit", "verify", "--head", head)
    assert cut.returncode == 1, cut.stderr
    assert cut.stdout.strip().startswith(f"broken at entry {ENTRIES}: the chain ends at entry")
    await sql(chain, "UPDATE audit_log SET actor = 'U0MALLORY' WHERE seq = 4")
    broken = crm_bot("audit", "verify")
    assert broken.returncode == 1, broken.stderr
    assert broken.stdout.strip().startswith("broken at entry 4: its content was changed")
