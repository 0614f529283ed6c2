"""The monitors running on this machine, and the endpoints each one owns.

A ``replay`` or ``grab`` given no endpoints gets IPC endpoints of its own, in a directory
only its user can enter, and registers them there for as long as it runs: two monitors on
one machine never meet on a port, and no other user can connect to either. ``monitor view``
and ``monitor analyze`` given no endpoints attach to the one monitor running (and name the
ones to choose from when there are several).

Layout: ``$XDG_RUNTIME_DIR/vertebroplasty-monitor`` (else ``/tmp/vertebroplasty-monitor-UID``),
mode 0700, holding the sockets and one ``PID.json`` per run:
``{"pid", "start_ticks", "started", "name", "endpoints": {"frames", "results", "flow", "control"}}``
(``start_ticks``: when the process started, so that a record whose pid was reused is seen
to be dead).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
import uuid
from pathlib import Path

from monitor.errors import MonitorError

ROLES = ("frames", "results", "flow", "control")


def runtime_dir() -> Path:
    """This user's directory for sockets and run records, created 0700 if missing. Refused
    (MonitorError) if it is not a directory owned by this user that only they can enter:
    another user could otherwise read the frames or send commands."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = (
        Path(base) / "vertebroplasty-monitor" if base else Path(f"/tmp/vertebroplasty-monitor-{os.getuid()}")
    )
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError as e:
        raise MonitorError(f"{path}: cannot create the monitor's runtime directory: {e}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise MonitorError(
            f"{path}: not a private directory of this user (owner {info.st_uid}, mode"
            f" {stat.S_IMODE(info.st_mode):o}): remove it, or give the endpoints explicitly"
        )
    return path


def private_endpoints() -> dict[str, str]:
    """Fresh IPC endpoints in :func:`runtime_dir`, one per role."""
    base = runtime_dir() / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return {role: f"ipc://{base}-{role}" for role in ROLES}


def register(endpoints: dict[str, str], name: str) -> Path:
    """Record this process's run (its endpoints and what it streams); returns the record,
    to :func:`unregister` when the run ends."""
    record = {
        "pid": os.getpid(),
        "start_ticks": _start_ticks(os.getpid()),
        "started": time.time(),
        "name": name,
        "endpoints": endpoints,
    }
    folder = runtime_dir()
    path = folder / f"{os.getpid()}.json"
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
        json.dump(record, f)
    os.replace(f.name, path)
    return path


def unregister(path: Path) -> None:
    """Remove a run's record and its sockets."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    for endpoint in (record.get("endpoints") or {}).values():
        if isinstance(endpoint, str) and endpoint.startswith("ipc://"):
            Path(endpoint[len("ipc://") :]).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def running() -> list[dict]:
    """The monitors running now, oldest first; records of runs that died are removed."""
    runs = []
    for path in sorted(runtime_dir().glob("*.json")):
        try:
            record = json.loads(path.read_text())
            pid = int(record["pid"])
            endpoints = record["endpoints"]
            if set(endpoints) != set(ROLES) or not all(isinstance(v, str) for v in endpoints.values()):
                raise ValueError("endpoints")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours, or half-written: left alone
        if not _alive(pid) or record.get("start_ticks") not in (None, _start_ticks(pid)):
            unregister(path)  # dead, or its pid now another process's
            continue
        runs.append(record)
    return sorted(runs, key=lambda r: r.get("started", 0))


def attach(pid: int | None = None) -> dict[str, str]:
    """The endpoints of the monitor to attach to: the one running (or the one of ``pid``).
    MonitorError naming the choices when there is none, or several and no ``pid``."""
    runs = running()
    if pid is not None:
        runs = [r for r in runs if r["pid"] == pid]
        if not runs:
            raise MonitorError(f"no monitor with pid {pid} is running on this machine{_listing()}")
    if not runs:
        raise MonitorError(
            "no monitor is running on this machine: start monitor replay or grab (or give the"
            " --frames-endpoint and --results-endpoint of one elsewhere)"
        )
    if len(runs) > 1:
        raise MonitorError(f"{len(runs)} monitors are running; choose one with --run PID{_listing()}")
    return dict(runs[0]["endpoints"])


def _listing() -> str:
    runs = running()
    if not runs:
        return ""
    return ": " + "; ".join(f"{r['pid']} ({r.get('name', '?')})" for r in runs)


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), which
    tells a run still alive from a later process that was given its pid; None without /proc."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        return int(stat_line.rpartition(")")[2].split()[19])  # fields from 3 on, after the name
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
