"""Shared fixtures: small simulated recordings rendered once per test session."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from monitor.sim.simulate import SimConfig, simulate


@contextlib.contextmanager
def _environment(name: str, value: str):
    """``name`` set to ``value`` for this process and those it starts, then put back."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@pytest.fixture(scope="session", autouse=True)
def log_signing_key(tmp_path_factory):
    """The installation's log-signing key for this test session (inherited by the processes
    the tests start), not the user's own."""
    folder = tmp_path_factory.mktemp("keys")
    with _environment("MONITOR_KEY_DIR", str(folder)):
        yield folder


@pytest.fixture(scope="session", autouse=True)
def runtime_dir():
    """The user's runtime directory (where monitors register their endpoints) for this test
    session, not the user's own: tests never attach to, or are seen by, a real monitor."""
    folder = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: IPC paths are limited to ~107 bytes
    with _environment("XDG_RUNTIME_DIR", str(folder)):
        yield folder
    shutil.rmtree(folder, ignore_errors=True)


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


def own_endpoints(args) -> list[str]:
    """A ``monitor`` command line, given private endpoints when it streams (replay, grab) and
    names none: the defaults are fixed loopback ports, and tests run side by side."""
    args = [str(a) for a in args]
    if args and args[0] in ("replay", "grab") and not any(a.endswith("-endpoint") for a in args):
        from monitor.pipeline import Endpoints

        args += Endpoints.private().args()
    return args


def audited(folder: Path) -> tuple[dict, str]:
    """A logged session's QA contract (``audit_json``) and its HTML report, as `monitor audit`
    makes them."""
    from monitor.audit import audit_json
    from monitor.io.store import SessionStore
    from monitor.report import html_report

    store = SessionStore.open(folder)
    try:
        report = audit_json(store)
        return report, html_report(store, report)
    finally:
        store.close()


def monitor_cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``monitor ARGS...`` as a user would, to the end; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *own_endpoints(args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def learn_baseline(frames, plane: str, info, grid=None):
    """:func:`monitor.vision.plane_baseline.learn_plane_baseline` of a recording's ``frames`` as
    the analyzer learns them, at the recording's own scale (``info``: its RecordingInfo) unless
    ``grid`` (a PixelGrid) is given: the default scatter physics and ROI."""
    from monitor.vision.pixels import PixelGrid
    from monitor.vision.plane_baseline import learn_plane_baseline
    from monitor.vision.scatter import ScatterPhysics

    grid = PixelGrid.for_spacing(info.spacing_at_vertebra_mm()[0]) if grid is None else grid
    return learn_plane_baseline(
        frames, plane, info.photometric, info.intensity_relationship, info.bits_stored, grid,
        ScatterPhysics(0.15, 20.0), 0.25, 42.0,
    )  # fmt: skip


def load_truth(folder: Path) -> dict:
    return json.loads((folder / "truth.json").read_text())


def assert_5mm_alarm_on_time(frame: int, truth: dict) -> None:
    """The high proximity alarm at ``frame`` is not late (within a frame of the truth's 5 mm
    crossing) and not false: the cement was truly within 6 mm then (the 5 mm line, plus the
    alarm's 0.5 mm allowance for a distance read long, plus the benchmark's 0.5 mm tolerance).
    It may come earlier than the crossing: the rule errs towards stopping."""
    assert frame <= truth["proximity_frame"] + 1, (frame, truth["proximity_frame"])
    true_mm = truth["frames"][frame]["distance_mm"]
    assert true_mm is not None and true_mm <= 6.0, (frame, true_mm)
