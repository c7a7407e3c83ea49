"""The locks are in step with pyproject.toml: every dependency is pinned, within its bounds
(which leave out releases with known advisories), with hashes, so `scripts/test` and a
deployment install what pyproject.toml allows and nothing else."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)")


def pins(lock: str) -> dict[str, list[Version]]:
    text = (ROOT / lock).read_text()
    found: dict[str, list[Version]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{lock}: {match.group(1)} has no hash"
            found.setdefault(canonicalize_name(match.group(1)), []).append(Version(match.group(2)))
    return found


def requirements(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return [Requirement(r) for r in listed]


@pytest.mark.parametrize(
    "lock, extra", [("requirements.lock", None), ("requirements-dev.lock", "dev")]
)
def test_every_dependency_is_pinned_within_its_bounds_with_hashes(lock, extra):
    pinned = pins(lock)
    for req in requirements(extra):
        versions = pinned.get(canonicalize_name(req.name))
        assert versions, f"{lock} does not pin {req.name}: refresh it (README, Dependencies)"
        for version in versions:
            assert req.specifier.contains(version, prereleases=True), (
                f"{lock} pins {req.name}=={version}, outside {req.specifier}"
            )
