"""`crm-bot import FILE`: load existing customers from CSV or JSON Lines, upserting by external id.

Each bad row is rejected with its line number and reason; the good ones are stored.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bot.lib import bounded_json
from storage.bulk import Prepared, begin_bulk_load, bulk_settings, finish_bulk_load, prepare
from storage.bulk import write as write_prepared
from storage.customer_fields import validate_customer
from storage.db import Database
from storage.models import utcnow
from storage.vault import Vault

BATCH = 1000


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        return f"created {self.created}, updated {self.updated}, rejected {len(self.rejected)}"


def read_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, row, error) for each data row of a .csv or .jsonl/.ndjson/.json file.

    A bad row is an error on its line and reading goes on: a field over the csv module's size
    limit, bytes that are not UTF-8, JSON nested too deep or too large (bot/lib/bounded_json),
    a number too large for a float. Whether the values can be stored is `validate_customer`'s
    part (storage/customer_fields `check_storable`)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_rows(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        yield from _json_lines(path)
    else:
        raise ValueError(f"{path.name}: use a .csv or .jsonl file")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    # surrogateescape: bytes that are not UTF-8 reach the row as lone surrogates, and that row
    # alone is refused, instead of a UnicodeDecodeError ending the import.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        try:
            fieldnames = reader.fieldnames
        except csv.Error as exc:
            raise ValueError(f"{path.name}: the header row cannot be read ({exc})") from None
        if not fieldnames or "external_id" not in fieldnames:
            raise ValueError(f"{path.name}: the header row has no external_id column")
        while True:
            starts = reader.line_num + 1  # the bad row's line (line_num lags on an error)
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield starts, None, f"not CSV ({exc})"
                continue
            if None in row:
                yield reader.line_num, None, "more values than header columns"
            elif any(_not_utf8(v) for v in row.values() if isinstance(v, str)):
                yield reader.line_num, None, "not UTF-8"
            else:
                yield reader.line_num, dict(row), None


def _not_utf8(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


def _json_lines(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    with path.open("rb") as f:
        for n, line in enumerate(f, start=1):
            if n == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark
            if not line.strip():
                continue
            try:
                yield n, bounded_json.loads_object(line), None
            except bounded_json.JsonRefused as exc:
                yield n, None, str(exc)


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


async def import_file(
    db: Database, vault: Vault, path: Path, *, progress=None, source: str = "import"
) -> ImportReport:
    """Batches of BATCH rows, each committed on its own (a re-run resumes: rows already stored
    are upserts that change nothing). While one batch is written, the next is encrypted and
    indexed in a worker thread (`storage.bulk.prepare`) and the one after it parsed: the
    database (SQLite's thread, or the PostgreSQL server) works while Python does. Memory: at
    most three batches at a time (parsed, prepared, being written) whatever the file size."""
    report = ImportReport()
    batch: list[dict] = []
    at = utcnow()
    writing: asyncio.Task | None = None  # the previous batch's write
    bulk = await begin_bulk_load(db)

    async def write(prepared: Prepared, rows: int) -> None:
        async with db.transaction() as session:
            await bulk_settings(session)
            created, updated = await write_prepared(session, vault, prepared)
        report.created += created
        report.updated += updated
        if progress:
            progress(rows)

    async def flush() -> None:
        nonlocal writing
        if not batch:
            return
        rows = list(batch)
        batch.clear()
        prepared = await asyncio.to_thread(prepare, vault, rows, source=source, occurred_at=at)
        if writing is not None:
            await writing
        writing = asyncio.create_task(write(prepared, len(rows)))

    try:
        for line, raw, error in read_rows(path):
            if raw is None:  # read_rows gives a row or an error
                report.rejected.append((line, error or "unreadable row"))
                continue
            try:
                batch.append(validate_customer(raw))
            except ValueError as exc:
                report.rejected.append((line, str(exc)))
                continue
            if len(batch) >= BATCH:
                await flush()
        await flush()
        if writing is not None:
            await writing
    finally:  # on an error, let a write under way commit or fail on its own, never cut it
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
        if bulk:  # even after an error: the rows stored are searchable (a re-run resumes)
            await finish_bulk_load(db)
    return report
