"""Shared fixtures: small simulated recordings rendered once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.sim.simulate import SimConfig, simulate


@pytest.fixture(scope="session", autouse=True)
def log_signing_key(tmp_path_factory):
    """The installation's log-signing key for this test session (inherited by the processes
    the tests start), not the user's own."""
    import os

    folder = tmp_path_factory.mktemp("keys")
    previous = os.environ.get("MONITOR_KEY_DIR")
    os.environ["MONITOR_KEY_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("MONITOR_KEY_DIR", None)
    else:
        os.environ["MONITOR_KEY_DIR"] = previous


def _render(root: Path, name: str, **overrides) -> tuple[Path, dict]:
    out = root / name
    cfg = SimConfig(size=192, frames=14, fps=15.0, **overrides)
    truth = simulate(cfg, out)
    return out, truth


@pytest.fixture(scope="session")
def posterior_case(tmp_path_factory) -> tuple[Path, dict]:
    """A posterior leak, LIN 12-bit MONOCHROME2, with breathing motion."""
    return _render(
        tmp_path_factory.mktemp("sim"), "posterior", seed=5, scenario="posterior", breathing_mm=2.0
    )


@pytest.fixture(scope="session")
def still_case(tmp_path_factory) -> tuple[Path, dict]:
    """No leak, no breathing, open field: the cleanest case for physics checks."""
    return _render(
        tmp_path_factory.mktemp("sim"), "still", seed=6, scenario="none", breathing_mm=0.0, noise="low"
    )


def load_truth(folder: Path) -> dict:
    return json.loads((folder / "truth.json").read_text())
