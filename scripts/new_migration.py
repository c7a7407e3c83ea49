"""Write the next migration from the models: `python scripts/new_migration.py "what changed"`.

Migrates a throwaway SQLite database to the current head, then lets Alembic compare it with
storage/models.py and write storage/migrations/versions/NNNN_<what>.py with the next number.
Read what it wrote before committing: autogenerate misses renames and server-side defaults, and
PostgreSQL-only types need a dialect check. tests/test_database.py fails while models and
migrations disagree."""

import asyncio
import re
import sys
import tempfile
from pathlib import Path

from alembic import command

from storage.db import Database
from storage.migrate import MIGRATIONS, alembic_config, head_revision, upgrade


def main(message: str) -> None:
    head = head_revision() or "0000"
    rev_id = f"{int(head) + 1:04d}"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'head.db'}"

        async def to_head() -> None:
            db = Database(url)
            await upgrade(db)
            await db.close()

        asyncio.run(to_head())
        slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
        command.revision(alembic_config(url), message=slug, autogenerate=True, rev_id=rev_id)
    print(f"wrote {MIGRATIONS / 'versions'}/{rev_id}_{slug}.py")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit('usage: python scripts/new_migration.py "what changed"')
    main(sys.argv[1])
