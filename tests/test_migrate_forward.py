"""An existing database moves forward: one made by the code before the bulk paths (commit
BEFORE, its own `crm-bot migrate` and `crm-bot import`), with customers in it, is upgraded by
this code, and every customer is found by email and by name, and reads back whole."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from storage.crypto import KeyRing
from storage.customers import Customers
from storage.db import Database
from storage.migrate import upgrade
from storage.vault import Vault
from tests.fixtures.cli import run_cli
from tests.fixtures.db import KEY_LINE, _admin
from tests.fixtures.services import PG_URL, need_service

BEFORE = "1dd4a27"  # main before the bulk paths (issue 19)
ROOT = Path(__file__).resolve().parents[1]
FIRST = ["Ada", "Alan", "Grace", "Zoë", "Edsger", "Radia", "Ken"]
LAST = ["Lovelace", "Turing", "Hopper", "Ångström", "Dijkstra", "Perlman", "Thompson"]


@pytest.fixture
def old_code(tmp_path) -> Path:
    """The packages as they were at BEFORE, from this repository's history."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", BEFORE, "bot", "storage"],
        capture_output=True,
    )
    if tar.returncode:
        pytest.skip(f"commit {BEFORE} is not in this clone")
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
        t.extractall(tmp_path / "old", filter="data")
    return tmp_path / "old"


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request, tmp_path):
    """A database nothing has touched yet."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    url = make_url(PG_URL)
    need_service("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    name = f"crm_forward_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def old_cli(code: Path, *args: str, env: dict[str, str]) -> None:
    """`python -m bot ARGS` run in the old code's folder, so its packages are the ones
    imported (the current directory comes first on sys.path)."""
    which = subprocess.run(
        [sys.executable, "-c", "import storage.bulk as b; print(b.__file__)"],
        cwd=code,
        capture_output=True,
        text=True,
    )
    assert which.stdout.startswith(str(code)), which.stdout + which.stderr
    done = run_cli(*args, env=env, cwd=code)
    assert done.returncode == 0, done.stderr


async def test_a_database_made_before_migrates_forward_and_finds_every_customer(
    old_code, new_url, tmp_path
):
    people = [
        {
            "external_id": f"OLD-{i:04d}",
            "name": f"{FIRST[i % 7]} {LAST[i // 7 % 7]}",
            "email": f"person{i}@example.com",
            "phone": f"+1 555 {i:07d}",
            "company": f"Company {i % 5} Industries",
            "notes": f"note {i}",
        }
        for i in range(120)
    ]
    path = tmp_path / "customers.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(people[0]))
        w.writeheader()
        w.writerows(people)
    env = {"CRM_MASTER_KEYS": KEY_LINE, "DATABASE_URL": new_url}
    old_cli(old_code, "migrate", env=env)
    old_cli(old_code, "import", str(path), env=env)

    db = Database(new_url)
    await upgrade(db)
    vault = Vault(KeyRing.parse(KEY_LINE))
    async with db.transaction() as s:
        await vault.load(s)
        repo = Customers(s, vault)
        for p in people:
            by_email = await repo.search(p["email"])
            assert [r.external_id for r in by_email][:1] == [p["external_id"]]
            assert (by_email[0].name, by_email[0].notes) == (p["name"], p["notes"])
            last = p["name"].split()[1]
            by_prefix = await repo.search(f"{p['name'].split()[0]} {last[:4]}", limit=50)
            assert p["external_id"] in {r.external_id for r in by_prefix}
    await db.close()
    # this code's import on top: the stored rows change nothing, a new one is found beside
    with path.open("a", newline="") as f:
        f.write("NEW-1,Barbara Liskov,barbara@example.com,,Company 1 Industries,\n")
    done = run_cli("import", str(path), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "created 1, updated 0, rejected 0" in done.stdout + done.stderr
    db = Database(new_url)
    async with db.transaction() as s:
        found = await Customers(s, vault).search("company")
        assert len(await Customers(s, vault).search("company", limit=200)) == 121
        assert found and (await Customers(s, vault).search("lisk"))[0].external_id == "NEW-1"
    await db.close()
