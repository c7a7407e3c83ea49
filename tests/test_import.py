"""`crm-bot import`: CSV and JSON Lines, upsert by external id, rejects with line numbers."""

import json

from storage.customers import Customers
from tests.fixtures.cli import run_cli
from tests.fixtures.db import KEY_LINE

CSV = """external_id,name,email,phone,company,tier,lifecycle_stage,annual_value,notes
C-1,Ada Lovelace,ada@example.com,+44 20 1234 5678,Analytical Engines,enterprise,customer,120000,"Prefers email, not calls"
C-2,Alan Turing,alan@example.com,,Bletchley,gold,customer,1,
,No Id,x@example.com,,,,,,
C-3,Grace Hopper,grace@example.com,,Navy,smb,lead,-5,
C-4,Katherine Johnson,katherine@example.com,,NASA,,prospect,,
"""


async def test_csv_import_upserts_and_rejects_with_line_numbers(db, vault, tmp_path):
    from bot.importer import import_file

    path = tmp_path / "customers.csv"
    path.write_text(CSV)
    report = await import_file(db, vault, path)
    assert (report.created, report.updated) == (2, 0)
    assert report.rejected == [
        (3, "tier must be one of strategic, enterprise, mid_market, smb"),
        (4, "external_id is required"),
        (5, "annual_value must be a number of 0 or more"),
    ]
    async with db.transaction() as s:
        found = await Customers(s, vault).search("lovelace")
    assert [(r.external_id, r.notes, r.annual_value) for r in found] == [
        ("C-1", "Prefers email, not calls", 120000)
    ]

    path.write_text("external_id,tier\nC-1,strategic\nC-4,\n")  # again: updates, absent fields kept
    report = await import_file(db, vault, path)
    assert (report.created, report.updated, report.rejected) == (0, 1, [])
    async with db.transaction() as s:
        record = Customers(s, vault).read(await Customers(s, vault).by_external_id("C-1"))
    assert (record.tier, record.name) == ("strategic", "Ada Lovelace")


async def test_jsonl_import(db, vault, tmp_path):
    from bot.importer import import_file

    lines = [
        json.dumps(
            {
                "external_id": "J-1",
                "name": "Zoë Ångström",
                "email": "zoe@example.com",
                "annual_value": 5000,
            }
        ),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"external_id": "J-2", "name": "x" * 201}),
        "",
        json.dumps({"external_id": "J-3", "company": "Optics AB", "unknown_field": 1}),
    ]
    path = tmp_path / "customers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = await import_file(db, vault, path)
    assert report.created == 2
    assert [n for n, _ in report.rejected] == [2, 3, 4]
    assert "not JSON" in report.rejected[0][1] and "longer than 200" in report.rejected[2][1]
    async with db.transaction() as s:
        assert [r.external_id for r in await Customers(s, vault).search("angstrom")] == ["J-1"]


def test_import_command_end_to_end(tmp_path):
    (tmp_path / "c.csv").write_text(CSV)
    env = {"CRM_MASTER_KEYS": KEY_LINE, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}

    def crm(*args):
        return run_cli(*args, env=env, cwd=tmp_path)

    assert crm("import", "c.csv").returncode == 2  # not migrated yet: says so
    assert crm("migrate").returncode == 0
    result = crm("import", "c.csv")
    assert result.returncode == 0, result.stderr
    assert "line 3: tier must be one of" in result.stdout
    assert result.stdout.strip().endswith("created 2, updated 0, rejected 3")
    missing = crm("import", "nope.csv")
    assert missing.returncode == 2 and "no such file: nope.csv" in missing.stderr
    (tmp_path / "c.xlsx").write_text("x")
    wrong = crm("import", "c.xlsx")
    assert wrong.returncode == 2 and "use a .csv or .jsonl file" in wrong.stderr
    for secret in ("Ada Lovelace", "ada@example.com", "Prefers email"):
        assert secret not in result.stdout + result.stderr


async def test_a_batch_with_bad_rows_keeps_the_good_ones(db, vault, tmp_path):
    """Rows the database cannot hold or the reader cannot read are rejected with their line
    numbers and the rest of the batch is stored, on SQLite and PostgreSQL (each of these
    aborted the import with a traceback, losing the valid rows, or failed its transaction)."""
    from bot.importer import import_file

    csv_path = tmp_path / "customers.csv"
    huge = "x" * 200_000  # over the csv module's field limit
    csv_path.write_bytes(
        (
            "external_id,name,notes,annual_value\n"
            "G-1,Good One,,100\n"
            f'B-1,Big,"{huge}",\n'
            "G-2,Good Two,,\n"
            "B-2,Far Too Rich,,1e300\n"
            "B-3,Rich,,1e13\n"
            "B-4,Nul\x00Name,,\n"
        ).encode()
        + b"B-5,Caf\xe9 Latin-1,,\n"
        + b"G-3,Good Three,,999999999999.99\n"
    )
    report = await import_file(db, vault, csv_path)
    assert report.created == 3, report.rejected
    rejected = dict(report.rejected)
    assert sorted(rejected) == [3, 5, 6, 7, 8]
    assert "field larger than field limit" in rejected[3]
    assert "annual_value" in rejected[5] and "annual_value" in rejected[6]
    assert "NUL" in rejected[7] or "control characters" in rejected[7]
    assert rejected[8] == "not UTF-8"

    jsonl = tmp_path / "more.jsonl"
    jsonl.write_bytes(
        b"\n".join(
            [
                json.dumps({"external_id": "J-1", "name": "Good"}).encode(),
                b'{"external_id": "J-2", "annual_value": 1e300}',
                b'{"external_id": "J-3", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                b'{"external_id": "J-4", "name": "\xff\xfe"}',
                b'{"external_id": "J-5", "name": "\\ud800"}',
                b'{"external_id": "J-6", "annual_value": 1e400}',
                json.dumps({"external_id": "J-7", "name": "Also good"}).encode(),
            ]
        )
        + b"\n"
    )
    report = await import_file(db, vault, jsonl)
    assert report.created == 2, report.rejected
    rejected = dict(report.rejected)
    assert sorted(rejected) == [2, 3, 4, 5, 6]
    assert "annual_value" in rejected[2]
    assert rejected[3] == "nested deeper than 32 levels"
    assert rejected[4] == "not UTF-8"
    assert "lone surrogate" in rejected[5]
    assert "number too large" in rejected[6]
    async with db.transaction() as s:
        found = await Customers(s, vault).search("good")
    assert sorted(r.external_id for r in found) == ["G-1", "G-2", "G-3", "J-1", "J-7"]


async def _blind_index_indexes(db) -> set[str]:
    from sqlalchemy import inspect

    async with db.engine.connect() as conn:
        found = await conn.run_sync(lambda c: inspect(c).get_indexes("blind_index"))
    return {i["name"] for i in found}


async def test_a_first_load_builds_the_blind_index_after_it_and_a_resumed_one_finishes(
    db, vault, tmp_path
):
    """A first load inserts without the blind index's indexes and builds them at the end; one
    interrupted before its build (indexes still missing) is finished by the next import; a
    loaded table keeps its indexes."""
    from bot.importer import import_file
    from storage.bulk import begin_bulk_load

    wanted = {"ix_blind_index_digest", "ix_blind_index_customer_id"}
    assert wanted <= await _blind_index_indexes(db)
    assert await begin_bulk_load(db)  # empty table: dropped, as an interrupted load leaves it
    assert not wanted & await _blind_index_indexes(db)
    path = tmp_path / "customers.csv"
    path.write_text(CSV)
    assert (await import_file(db, vault, path)).created == 2
    assert wanted <= await _blind_index_indexes(db)
    assert not await begin_bulk_load(db)  # rows in it: never dropped
    assert wanted <= await _blind_index_indexes(db)
    async with db.transaction() as s:
        assert [r.external_id for r in await Customers(s, vault).search("katherine")] == ["C-4"]
