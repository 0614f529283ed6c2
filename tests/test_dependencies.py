"""The environment under test is the one uv.lock describes, and the lock is the pyproject's.

scripts/setup installs uv.lock with `uv sync --frozen`, which does not re-resolve: a lock left
behind by a change to pyproject.toml's dependencies would install stale packages silently. The
lock records the requirements it was resolved from; they must be pyproject.toml's.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def _ours(lock: dict) -> dict:
    return next(p for p in lock["package"] if p["name"] == "vertebroplasty-monitor")


def _requirements(texts, extra: str | None = None) -> set[tuple[str, str, str | None]]:
    """(name, specifier in canonical order, extra) for each requirement."""
    out = set()
    for text in texts:
        req = Requirement(text)
        out.add((canonicalize_name(req.name), str(req.specifier), extra))
    return out


def test_the_lock_was_resolved_from_the_pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = _lock()
    assert SpecifierSet(lock["requires-python"]) == SpecifierSet(project["requires-python"])
    locked = _ours(lock)["metadata"]
    want = _requirements(project["dependencies"])
    for extra, reqs in project["optional-dependencies"].items():
        want |= _requirements(reqs, extra)
    got = set()
    for entry in locked["requires-dist"]:
        marker = entry.get("marker", "")
        extra = marker.split("'")[1] if marker.startswith("extra == ") else None
        got.add((canonicalize_name(entry["name"]), str(SpecifierSet(entry.get("specifier", ""))), extra))
    assert got == want, (
        "uv.lock is out of date with pyproject.toml: run `uv lock` (and the suite) and commit both"
    )


@pytest.mark.skipif(
    os.environ.get("MONITOR_DEPENDENCIES", "locked") != "locked",
    reason="scripts/test --latest/--oldest test other versions on purpose",
)
def test_every_installed_dependency_is_the_locked_version():
    """What runs is what was locked (and so what the benchmark figures were measured on): our
    direct dependencies at the very version locked for this Python, every other installed
    package the lock knows at one of its locked versions."""
    lock = _lock()
    ours = _ours(lock)
    entries = list(ours["dependencies"])
    for extra in ("test", "bench"):
        entries += ours["optional-dependencies"][extra]
    by_name = {canonicalize_name(p["name"]): p for p in lock["package"]}
    wrong = {}
    for entry in entries:  # several entries per name where the lock forks by Python version
        if "marker" in entry and not Marker(entry["marker"]).evaluate():
            continue
        name = canonicalize_name(entry["name"])
        want = entry.get("version") or by_name[name]["version"]
        if metadata.version(name) != want:
            wrong[name] = (metadata.version(name), want)
    locked_versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        locked_versions.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in locked_versions and dist.version not in locked_versions[name]:
            wrong[name] = (dist.version, sorted(locked_versions[name]))
    assert not wrong, f"installed against locked: {wrong}; run scripts/setup"
