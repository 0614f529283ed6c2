"""Re-analysis of an archive: the current vision over every logged session, compared with
what was logged (``monitor reanalyze DIR --out REPORT``).

When the vision changes, the first question of a QA officer or a regulator is which past
sessions it would have judged differently. Each session is re-run as the analyzer would
have run it today: its frames in the order they were sent (``SessionSource``), the room's
calibration settings the session was measured with, and the operator's input as logged (the
command line's wall, boxes and cleft from the session's meta; live commands - wall, body,
confirm-wall, cleft, syringe, level, acknowledge - applied where they came in the analysis,
``SessionSource.logged_commands``). Everything else
(detection thresholds, anatomy, physics defaults) is the current vision's. The comparison
per session: alarms added, lost or moved (by kind, site and priority within a level), the
final volume and the closest distance per level, before and after.

The sessions run as tasks on Dask: a local cluster of ``workers`` processes by default, or
the cluster a hospital already runs (``scheduler``). A task is one session, run
single-threaded, so the report is the same whatever the number of workers; it is written
sorted by session.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path

from monitor import __version__
from monitor.errors import MonitorError
from monitor.messages import REPLAYED_EDITS

REPORT_VERSION = 1
CHANGED_VOLUME_ML = 0.05  # a level's volume changed by this much or more: a different judgement
CHANGED_DISTANCE_MM = 0.5  # ... or its closest distance to the wall
# the operator's commands a re-run applies again, where they came in the analyzer's work: what a
# replay applies (monitor.messages.REPLAYED_EDITS), and the acknowledgements, whose alarm states
# the report compares
REPLAYED_COMMANDS = (*REPLAYED_EDITS, "acknowledge")


def reanalyze_session(folder: str) -> tuple[str, dict]:
    """One session re-run with the current vision and compared with its log, with the code
    that ran it (``code_digest``: a worker that joined after the check is caught here too).
    Never raises: a session that cannot be read is reported with its ``error``."""
    try:
        return code_digest(), _reanalyze(Path(folder))
    except MonitorError as e:
        return code_digest(), {"session": str(folder), "error": str(e)}
    except Exception as e:  # a session the current vision cannot run is a finding, not a crash
        return code_digest(), {"session": str(folder), "error": f"{type(e).__name__}: {e}"}


def _reanalyze(folder: Path) -> dict:
    import cv2

    from monitor.analyzer import CommandRefused, VisionAnalysis, analyse_source
    from monitor.io.sources import SessionSource
    from monitor.io.store import SessionStore
    from monitor.messages import Command
    from monitor.vision.analysis import AnalysisConfig

    cv2.setNumThreads(1)  # one task, one core: the same results on any cluster
    store = SessionStore.open(folder)
    try:
        meta = store.meta()
        logged = _logged(store, meta.get("level"))
    finally:
        store.close()
    source = SessionSource(folder)
    try:
        analysis = VisionAnalysis(AnalysisConfig.from_settings(source.analysis_settings()), meta.get("level"))
        # each command where it came in the analyzer's work: before the frames after those whose
        # results were logged before it
        pending = source.logged_commands(REPLAYED_COMMANDS)  # in the log's order
    except BaseException:
        source.close()
        raise
    now = {"alarms": [], "levels": {}}
    refused = []

    def apply(c) -> None:
        try:
            if c.refused is not None:  # a value the control socket refuses: an edited log
                raise CommandRefused(c.refused)
            analysis.apply(Command("", c.source, 0.0, c.action, c.value))
        except CommandRefused as why:  # refused today (it may have been then too): said
            refused.append({"event": c.action, "value": c.value, "why": str(why)})

    class Commanded:  # the session's frames, each after the commands that came before it
        formats = source.formats

        @staticmethod
        def frames():
            seen: dict[str, int] = {}
            for item in source.frames():
                while pending and seen.get(item.plane, 0) >= pending[0].frames_before.get(item.plane, 0):
                    apply(pending.pop(0))
                seen[item.plane] = seen.get(item.plane, 0) + 1
                yield item

    try:
        for item, result in analyse_source(Commanded, analysis, "reanalysis"):
            _add(now, analysis.level, item.plane, result)
        for c in pending:  # after the last frame: they change no result, but are still refused or not
            apply(c)
    finally:
        source.store.close()
    return {"session": str(folder), **_compare(logged, now), "commands_refused_now": refused}


def _logged(store, first_level: str | None) -> dict:
    """What the session logged: alarms raised (level, kind, site, priority, plane, frame) and
    per level the final volume and the closest distance."""
    out = {"alarms": [], "levels": {}}
    for r in store.records("alarm"):
        if r.body["state"] == "raised":
            b = r.body
            out["alarms"].append(_alarm(r.level or first_level, b))
    for r in store.records("result"):
        level = out["levels"].setdefault(r.level or first_level or "-", _no_figures())
        _level_figures(level, r.plane, r.body.get("volume_ml"), r.body.get("distance_mm"))
        _count_unchecked(level, r.plane, r.body.get("status"), r.body.get("checks"))
    return out


def _add(now: dict, level: str | None, plane: str, result) -> None:
    for a in result.alarms:
        now["alarms"].append(_alarm(level, a))
    figures = now["levels"].setdefault(level or "-", _no_figures())
    _level_figures(figures, plane, result.volume_ml, result.distance_mm)
    _count_unchecked(figures, plane, result.status, result.checks)


def _no_figures() -> dict:
    return {"volume_ml": None, "min_distance_mm": None, "proximity_unchecked": 0}


def _count_unchecked(figures: dict, plane: str, status: str | None, checks) -> None:
    """Lateral frames after the baseline not checked against the 5 mm rule (no wall, a wall not
    confirmed, a skipped frame): where a change of alarms most often comes from."""
    if plane == "lateral" and status != "baseline" and checks is not None and "proximity" not in checks:
        figures["proximity_unchecked"] += 1


def _alarm(level: str | None, a: dict) -> dict:
    return {
        "level": level or "-",
        "kind": a["kind"],
        "site": a.get("site"),
        "priority": a["priority"],
        "plane": a.get("plane"),
        "frame": a["frame"],
    }


def _level_figures(figures: dict, plane: str, volume, distance) -> None:
    if volume is not None:
        figures["volume_ml"] = volume
    if plane == "lateral" and distance is not None:
        low = figures["min_distance_mm"]
        figures["min_distance_mm"] = distance if low is None else min(low, distance)


def _compare(logged: dict, now: dict) -> dict:
    """Alarms added, lost and moved (the first of each kind, site and priority per level), and
    per level the volume and closest distance before and after."""

    def key(a: dict) -> tuple:
        return (a["level"], a["kind"], a["site"] or "", a["priority"])

    def firsts(alarms: list[dict]) -> dict:
        out: dict = {}
        for a in alarms:
            out.setdefault(key(a), a)
        return out

    def counts(alarms: list[dict]) -> dict:
        out: dict = {}
        for a in alarms:
            out[key(a)] = out.get(key(a), 0) + 1
        return out

    before, after = firsts(logged["alarms"]), firsts(now["alarms"])
    n_before, n_after = counts(logged["alarms"]), counts(now["alarms"])
    # raised again after a clearing and an acknowledgement: as often now as then?
    recounted = [
        {**after[k], "logged_raises": n_before[k], "raises": n_after[k]}
        for k in sorted(before.keys() & after.keys())
        if n_before[k] != n_after[k]
    ]
    added = [after[k] for k in sorted(after.keys() - before.keys())]
    lost = [before[k] for k in sorted(before.keys() - after.keys())]
    moved = [
        {
            **after[k],
            "logged_frame": before[k]["frame"],
            "frames_later": after[k]["frame"] - before[k]["frame"],
        }
        for k in sorted(before.keys() & after.keys())
        if before[k]["frame"] != after[k]["frame"]
    ]
    levels = {}
    for name in sorted(logged["levels"].keys() | now["levels"].keys()):
        b = logged["levels"].get(name, {})
        a = now["levels"].get(name, {})
        vb, va = b.get("volume_ml"), a.get("volume_ml")
        levels[name] = {
            "volume_ml": {"logged": vb, "now": va, "change_ml": _diff(va, vb)},
            "min_distance_mm": {
                "logged": b.get("min_distance_mm"),
                "now": a.get("min_distance_mm"),
                "change_mm": _diff(a.get("min_distance_mm"), b.get("min_distance_mm")),
            },
            "proximity_unchecked_frames": {
                "logged": b.get("proximity_unchecked", 0),
                "now": a.get("proximity_unchecked", 0),
            },
        }
    changed = bool(added or lost or moved or recounted) or any(
        abs(lv["volume_ml"]["change_ml"] or 0.0) >= CHANGED_VOLUME_ML
        or abs(lv["min_distance_mm"]["change_mm"] or 0.0) >= CHANGED_DISTANCE_MM
        or lv["proximity_unchecked_frames"]["logged"] != lv["proximity_unchecked_frames"]["now"]
        or (lv["volume_ml"]["logged"] is None) != (lv["volume_ml"]["now"] is None)
        for lv in levels.values()
    )
    return {
        "changed": changed,
        "alarms": {"added": added, "lost": lost, "moved": moved, "recounted": recounted},
        "levels": levels,
    }


def _diff(a, b):
    return None if a is None or b is None else round(a - b, 4)


def find_archive(root: Path, unlisted: list | None = None) -> list[Path]:
    """The logged sessions under ``root`` (any depth), sorted; folders that cannot be listed
    go to ``unlisted`` (see :func:`monitor.audit.find_sessions`)."""
    from monitor.audit import find_sessions

    sessions = find_sessions(root, unlisted)
    if not sessions:
        raise MonitorError(f"{root}: no logged sessions under it (each has a session.sqlite)")
    return sessions


WORKER_WAIT_S = 30.0  # for a scheduler's first worker


def run(
    root: Path,
    out: Path,
    workers: int = 2,
    scheduler: str | None = None,
    progress: bool = True,
    say=print,
) -> dict:
    """Re-run every session under ``root`` on Dask, write the report to ``out`` (JSON) and
    return it. ``scheduler``: the address of a running Dask scheduler (its workers must have
    this monitor installed); else a local cluster of ``workers`` processes."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    unlisted: list[dict] = []
    sessions = find_archive(root, unlisted)
    started = time.monotonic()
    cluster = client = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise MonitorError(f"the Dask scheduler at {scheduler} cannot be reached ({e})") from None
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except TimeoutError:
                raise MonitorError(
                    f"the Dask scheduler at {scheduler} has no workers (waited {WORKER_WAIT_S:g} s)"
                ) from None
            where = f"scheduler {scheduler} ({len(client.scheduler_info()['workers'])} workers)"
        else:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = Client(cluster)
            where = f"a local cluster of {workers} worker process(es)"
        _same_code_everywhere(client)
        say(f"re-analysing {len(sessions)} session(s) on {where}")
        futures = {client.submit(reanalyze_session, str(s), pure=False): str(s) for s in sessions}
        results = []
        bar = tqdm(total=len(futures), unit="session", disable=not progress)
        here = code_digest()
        for future in as_completed(futures):
            try:
                code, result = future.result()
                if code != here:  # a worker that joined since the check, with other code
                    result = {"session": futures[future], "error": f"re-run by a worker with monitor {code}"}
                results.append(result)
            except Exception as e:  # the worker died on it (memory, a crash): said, the rest goes on
                results.append({"session": futures[future], "error": f"{type(e).__name__}: {e}"})
            bar.update(1)
        bar.close()
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    seconds = time.monotonic() - started
    results += [{"session": u["folder"], "error": u["error"]} for u in unlisted]  # not re-run: said
    results.sort(key=lambda r: r["session"])
    report = {
        "version": REPORT_VERSION,
        "root": str(root),
        "sessions": results,
        "summary": _summary(results),
        "run": {
            "where": where,
            "workers": None if scheduler else workers,
            "monitor": code_digest(),  # the code every worker was checked to run
            "seconds": round(seconds, 2),
            "sessions_per_minute": round(60.0 * len(results) / seconds, 1) if seconds else None,
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)
    return report


@functools.cache
def code_digest() -> str:
    """SHA-256 of the monitor's own source (every ``monitor/**/*.py``, path and content): what
    decides a re-analysis. The version number alone does not change between commits."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:16]}"


def _same_code_everywhere(client) -> None:
    """Refuse a cluster whose workers run other monitor code than this one: their sessions
    would be judged by a vision the report does not name, and differ for no reason shown."""
    here = code_digest()
    try:
        workers = client.run(code_digest)
    except Exception as e:  # a worker whose monitor has no digest (older), or none at all
        raise MonitorError(
            f"the Dask workers cannot say which monitor code they run ({type(e).__name__}: {e});"
            f" install this version ({here}) on them"
        ) from None
    other = {address: code for address, code in workers.items() if code != here}
    if other:
        listed = "; ".join(f"{address} runs {code}" for address, code in sorted(other.items()))
        raise MonitorError(
            f"{len(other)} of {len(workers)} Dask worker(s) run other monitor code than this one ({here}):"
            f" {listed}; install this version on them, or stop them"
        )


def _summary(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    return {
        "sessions": len(results),
        "unreadable": len(results) - len(ok),
        "changed": sum(r["changed"] for r in ok),
        "alarms_added": sum(len(r["alarms"]["added"]) for r in ok),
        "alarms_lost": sum(len(r["alarms"]["lost"]) for r in ok),
        "alarms_moved": sum(len(r["alarms"]["moved"]) for r in ok),
    }


def text_report(report: dict) -> str:
    """The report for people: one line per session that changed or could not be read."""
    s, run_ = report["summary"], report["run"]
    lines = [
        f"{s['sessions']} session(s) re-analysed on {run_['where']} in {run_['seconds']:.1f} s"
        f" ({run_['sessions_per_minute']} sessions/min): {s['changed']} would be judged differently,"
        f" {s['unreadable']} could not be read; alarms added {s['alarms_added']}, lost {s['alarms_lost']},"
        f" moved {s['alarms_moved']}"
    ]
    for r in report["sessions"]:
        if "error" in r:
            lines.append(f"  UNREADABLE {r['session']}: {r['error']}")
            continue
        if not r["changed"]:
            continue
        parts = []
        for what in ("added", "lost"):
            for a in r["alarms"][what]:
                site = f" {a['site']}" if a["site"] else ""
                parts.append(
                    f"{what} {a['priority']} {a['kind']}{site} (level {a['level']}, frame {a['frame']})"
                )
        for a in r["alarms"].get("recounted", []):
            parts.append(f"{a['priority']} {a['kind']} raised {a['logged_raises']} -> {a['raises']} times")
        for a in r["alarms"]["moved"]:
            site = f" {a['site']}" if a["site"] else ""
            parts.append(f"moved {a['priority']} {a['kind']}{site} frame {a['logged_frame']} -> {a['frame']}")
        for name, lv in r["levels"].items():
            unchecked = lv["proximity_unchecked_frames"]
            if unchecked["logged"] != unchecked["now"]:
                parts.append(
                    f"level {name}: lateral frames not checked against the 5 mm rule"
                    f" {unchecked['logged']} -> {unchecked['now']}"
                )
            closest = lv["min_distance_mm"]
            if closest["change_mm"] is not None and abs(closest["change_mm"]) >= CHANGED_DISTANCE_MM:
                parts.append(f"level {name} closest {closest['logged']:.1f} -> {closest['now']:.1f} mm")
            change = lv["volume_ml"]["change_ml"]
            if change is not None and abs(change) >= 0.05:
                parts.append(
                    f"level {name} volume {lv['volume_ml']['logged']:.2f} -> {lv['volume_ml']['now']:.2f} mL"
                )
        lines.append(f"  CHANGED {r['session']}: " + "; ".join(parts))
    return "\n".join(lines)
