"""``monitor reanalyze``: the archive re-run with the current vision on Dask, compared with what
was logged; the same report on 1 and 2 local workers and on a scheduler started here."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import monitor as monitor_package
from monitor.io.sources import DicomPairSource
from monitor.pipeline import Endpoints, RunSpec, run
from monitor.recordings import bundled_recordings
from monitor.replay import PaceOptions
from tests.conftest import monitor_cli


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The three bundled recordings logged as sessions; the posterior leak by an "older vision"
    that called cement a leak only 4 mm beyond the body's outline (the current one: 1.5 mm),
    so that its leak alarm came 2 frames later."""
    root = tmp_path_factory.mktemp("archive")
    for rec in bundled_recordings():
        older = {"leak_min_depth_mm": 4.0} if rec.name == "posterior-leak" else {}
        source = DicomPairSource(rec.lateral, rec.ap)
        spec = RunSpec(str(root / "2026" / rec.name), "L1", endpoints=Endpoints.private(), analysis=older)
        assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) in (0, 4)
        source.close()
    return root


def _reanalyze(archive, out, *options):
    done = monitor_cli("reanalyze", archive, "--out", out, "--quiet", *options)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stdout


@pytest.fixture(scope="module")
def one_worker(archive, tmp_path_factory):
    """The archive re-run on a local cluster of one worker: the report and its text."""
    return _reanalyze(archive, tmp_path_factory.mktemp("one") / "one.json", "--workers", "1")


def test_the_archive_rerun_names_what_changed_the_same_on_one_and_two_workers(archive, one_worker, tmp_path):
    one, text = one_worker
    two, _ = _reanalyze(archive, tmp_path / "two.json", "--workers", "2")
    assert one["sessions"] == two["sessions"]  # deterministic, whatever the workers
    assert one["run"]["workers"] == 1 and two["run"]["workers"] == 2
    by_name = {s["session"].rsplit("/", 1)[-1]: s for s in one["sessions"]}
    assert set(by_name) == {"posterior-leak", "no-leak", "venous-leak"}
    # logged by this vision: the re-run reproduces them, figure for figure
    for name in ("no-leak", "venous-leak"):
        s = by_name[name]
        assert not s["changed"] and s["alarms"] == {"added": [], "lost": [], "moved": [], "recounted": []}
        assert s["commands_refused_now"] == []
        assert s["levels"]["L1"]["volume_ml"]["change_ml"] == 0.0
        assert s["levels"]["L1"]["min_distance_mm"]["change_mm"] == 0.0
    # logged by the "older vision": the current one raises the leak earlier
    changed = by_name["posterior-leak"]
    assert changed["changed"]
    moved = changed["alarms"]["moved"]
    assert [(a["kind"], a["site"], a["logged_frame"], a["frame"]) for a in moved] == [
        ("extravasation", "posterior", 39, 37)
    ]
    assert changed["alarms"]["added"] == changed["alarms"]["lost"] == []
    assert one["summary"]["changed"] == 1 and one["summary"]["alarms_moved"] >= 1
    assert "1 would be judged differently" in text and "CHANGED" in text and "posterior-leak" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_archive_rerun_on_a_dask_scheduler_started_on_loopback(archive, one_worker, tmp_path):
    from dask.distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen(
        [*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while True:  # the scheduler takes a moment to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the dask scheduler never listened"
                time.sleep(0.2)
        # First a worker with other monitor code (one comment added to the vision): refused
        other = tmp_path / "other"
        shutil.copytree(Path(monitor_package.__file__).parent, other / "monitor")
        with open(other / "monitor" / "vision" / "analysis.py", "a") as f:
            f.write("# changed on this worker\n")
        worker = _dask_worker(address, cwd=other, env={**os.environ, "PYTHONPATH": str(other)})
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            changed = set(client.scheduler_info()["workers"])
        refused = monitor_cli("reanalyze", archive, "--out", tmp_path / "r.json", "--scheduler", address)
        assert refused.returncode == 1 and "1 of 1 Dask worker(s) run other monitor code" in refused.stderr
        assert not (tmp_path / "r.json").exists()
        worker.terminate()
        worker.wait(timeout=30)
        worker = _dask_worker(address)
        with Client(address, timeout="30s") as client:
            deadline = time.monotonic() + 60
            while (now := set(client.scheduler_info()["workers"])) & changed or not now:
                assert time.monotonic() < deadline, "the second dask worker never replaced the first"
                time.sleep(0.2)
        remote, text = _reanalyze(archive, tmp_path / "remote.json", "--scheduler", address)
        local, _ = one_worker
        assert remote["sessions"] == local["sessions"]
        assert remote["run"]["workers"] is None and address in remote["run"]["where"]
        assert "1 workers" in remote["run"]["where"]
    finally:
        for p in (worker, scheduler):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)


def _dask_worker(address: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """One single-threaded dask worker process joined to ``address``."""
    dask = [sys.executable, "-m", "distributed.cli.dask_worker", address]
    return subprocess.Popen(
        [*dask, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
    )


def test_reanalyze_refuses_what_it_cannot_do_in_one_line(tmp_path, archive):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = monitor_cli("reanalyze", empty, "--out", tmp_path / "r.json")
    assert done.returncode == 1 and "no logged sessions" in done.stderr and "Traceback" not in done.stderr
    both = monitor_cli("reanalyze", archive, "--out", tmp_path / "r.json", "--workers", "2",
                       "--scheduler", "tcp://127.0.0.1:1")  # fmt: skip
    assert both.returncode == 1 and "--workers" in both.stderr and both.stderr.count("\n") == 1


def test_a_session_with_live_edits_reruns_to_what_it_logged(tmp_path):
    """A session whose operator redrew the wall, entered a syringe and started a second level
    live, over the real control socket, re-runs to the same alarms, volumes and closest
    distances per level: each logged edit is applied where it came in the analysis. (Without
    them the syringe's scale, the drawn wall and the second level would all be missing.)"""
    from monitor.io.store import SessionStore
    from tests.test_session_log import _wait_for, operated_run

    live = tmp_path / "archive" / "2026" / "edited"

    def operate(send):
        _wait_for(live, "result", 12)
        store = SessionStore.open(live)
        walls = [r["overlay"]["wall"] for r in store.results() if r["overlay"].get("wall")]
        store.close()
        send("wall", [[x + 6.0, y] for x, y in walls[-1]])
        _wait_for(live, "result", 50)
        send("syringe", 1.0)
        _wait_for(live, "result", 70)
        send("level", "L2")

    assert operated_run(live, operate) in (0, 4)
    store = SessionStore.open(live)
    done = [(e["source"], e["event"]) for e in store.events() if e["source"] == "operator"]
    store.close()
    assert done == [("operator", "wall"), ("operator", "syringe"), ("operator", "level")], done
    report, _text = _reanalyze(tmp_path / "archive", tmp_path / "edited.json", "--workers", "1")
    (session,) = report["sessions"]
    assert not session["changed"], session
    assert session["commands_refused_now"] == []
    assert set(session["levels"]) == {"L1", "L2"}
    for level in session["levels"].values():
        assert level["volume_ml"]["change_ml"] in (0.0, None)
        assert level["min_distance_mm"]["change_mm"] in (0.0, None)
    assert session["levels"]["L1"]["volume_ml"]["logged"] is not None
