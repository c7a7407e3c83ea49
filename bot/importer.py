"""`crm-bot import FILE`: load existing customers from CSV or JSON Lines, upserting by external id.

Each bad row is rejected with its line number and reason; the good ones are stored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from storage.bulk import upsert_many
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
    """(line number, row, error) for each data row of a .csv or .jsonl/.ndjson/.json file."""
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8-sig", newline="") as f:
        if suffix == ".csv":
            reader = csv.DictReader(f)
            if not reader.fieldnames or "external_id" not in reader.fieldnames:
                raise ValueError(f"{path.name}: the header row has no external_id column")
            for row in reader:
                if None in row:
                    yield reader.line_num, None, "more values than header columns"
                    continue
                yield reader.line_num, dict(row), None
        elif suffix in (".jsonl", ".ndjson", ".json"):
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, None, f"not JSON ({exc.msg})"
                    continue
                if not isinstance(obj, dict):
                    yield n, None, "not a JSON object"
                    continue
                yield n, obj, None
        else:
            raise ValueError(f"{path.name}: use a .csv or .jsonl file")


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


async def import_file(
    db: Database, vault: Vault, path: Path, *, progress=None, source: str = "import"
) -> ImportReport:
    report = ImportReport()
    batch: list[dict] = []
    at = utcnow()

    async def flush() -> None:
        if batch:
            async with db.transaction() as session:
                created, updated = await upsert_many(
                    session, vault, batch, source=source, occurred_at=at
                )
            report.created += created
            report.updated += updated
            if progress:
                progress(len(batch))
            batch.clear()

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
    return report
