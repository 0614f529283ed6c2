"""QA audit of logged sessions.

``audit_json`` is the stable contract QA tools read (documented in the
README): the session's facts, whether its log is complete and intact, and per
level the image-based and syringe volumes, the closest approach to the
posterior wall, every alarm with its time and the operator's reaction (how long
until injection actually stopped, and how much cement went in after the
alarm), the caveats on the measurements (frames skipped, no anatomy found, a
guessed scale), and per frame the distance and the volume so far. Frame numbers are
the 0-based frame indices of the recording; times are seconds from the start
of the stream.

``summarize`` is the table over many sessions, per operator and level.
"""

from __future__ import annotations

import bisect
import datetime
import json
import os
import sqlite3
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import MonitorError
from monitor.io import signing
from monitor.io.store import DB_NAME, SessionStore
from monitor.messages import PLANES, unsent_phrase
from monitor.vision.alarms import CHECKS, PLANE_CHECKS
from monitor.vision.caveats import CaveatCode
from monitor.vision.stats import usual_step

DIGEST_VERSION = 7  # bump when session_digest changes, so cached digests are recomputed
NOT_RECORDED = "not recorded"  # an operator or level the session was not told
VOLUME_BINS_ML = 12  # the summary's volume histograms: 1 mL bins from 0, the last one open (12 mL and over)
# A level is monitored when the 5 mm rule (lateral view) and the leak check (each view
# present) were evaluated on at least this share of its frames after the baseline: the
# rest are frames on which "no alarm" meant "not looked" (a skipped frame, no outline
# of the body, no millimetre scale, an analysis error).
MONITORED_SHARE = 0.90
# ... and no stretch of the level longer than this went without a lateral frame checked
# against the 5 mm rule (the stream's own stale limit: at 1 mL/s, a few mm of cement)
MAX_UNCHECKED_S = 1.0
HOLD_S = 0.4  # the volume must stay flat this long to count as injection stopped
FLAT_ML = 0.05  # ... within this much (or 3 % of the volume): the image estimate's noise


def audit_json(store: SessionStore, verify_images: bool = True) -> dict:
    meta = store.meta()
    summary = meta.get("summary") or {}
    problems = list(summary.get("problems", ["the session is still open, or its logger died before the end"]))
    integrity = store.verify(images=verify_images) + store.head_problems()
    levels = level_reports(store, meta.get("level"))
    return {
        "session": meta.get("session"),
        "patient": meta.get("patient"),
        "operator": meta.get("operator"),
        "room": meta.get("room"),
        "software_version": meta.get("software_version"),
        "calibration": meta.get("calibration"),
        "created": meta.get("created"),
        # what the source assumed where its files did not say (a plane from the command line, an
        # intensity relationship, a frame rate given for the file's own)
        "source_warnings": list(meta.get("source_warnings") or []),
        "complete": bool(summary.get("complete")) and not integrity,
        # plane -> a recording's frames never sent: the run was stopped before its end (the log
        # whole, of part of the recording); None when it was sent whole, or from a live source
        "stopped_early": summary.get("unsent") or None,
        "problems": problems + integrity,
        "integrity": {"intact": not integrity, "problems": integrity},
        # False when any level was NOT MONITORED; None when the log does not say (older analyzer)
        "monitored": _all_monitored(levels),
        "faults": [
            {k: e[k] for k in ("time", "source", "event", "detail", "plane")}
            for e in store.events()
            if e["event"] in FAULTS
        ],
        "levels": levels,
    }


def _all_monitored(levels: list[dict]) -> bool | None:
    said = [lv["monitoring"]["monitored"] for lv in levels]
    if not said:
        return False  # no frame was analysed at all
    if any(m is False for m in said):
        return False
    return None if any(m is None for m in said) else True


FAULTS = {
    "stale",
    "dropped",
    "rejected",
    "restarted",
    "log-failed",
    "log-resumed",
    "incomplete",
    "silent",
    "stopped",
}
OPERATOR_EVENTS = {
    *("level", "syringe", "pause", "resume", "wall", "body", "acknowledge", "confirm-wall", "cleft"),
    *("rejected-command", "command-failed"),
}
# whether the 5 mm rule was armed on the posterior wall, and who armed it: the analyzer's
# decisions, and the operator's confirmation or drawing of the wall
# (and that a view's cement was not seen from its start: with no outline, cement apart from the
# bolus is not read as a leak, and thin lines leaving it are possible leaks only)
WALL_EVENTS = {"wall-armed", "wall-not-confirmed", "confirm-wall", "wall", "apart-off"}
PROCESSING_EVENTS = {"temporal-filter"}  # what the analyzer did to the images, said once a level
# how the analyzer read the level's volume: its darkness refused against the cement's shape, and
# each syringe's anchor with the growth it chose (the shape's or the darkness's)
VOLUME_EVENTS = {
    "scatter-seen",
    "darkness-reads-low",
    "syringe-entry",
    "darkness-rescale",
    "darkness-not-rescaled",
    "volume-scale-carried",
}
# a view whose frames stopped while the other's went on (the level judged and measured in the other
# alone meanwhile), and its frames coming back
VIEW_EVENTS = {"view-silent", "view-resumed"}


def level_reports(store: SessionStore, first_level: str | None) -> list[dict]:
    levels: dict[str, dict] = {}

    def level(name: str | None) -> dict:
        name = name or first_level
        if name not in levels:
            levels[name] = {"level": name, "results": [], "alarms": {}, "events": []}
        return levels[name]

    for r in store.records("result"):
        level(r.level)["results"].append(r)
    for r in store.records("alarm"):
        alarms = level(r.level)["alarms"]
        a = alarms.setdefault(r.body["id"], {"raised": None, "acknowledged": None, "cleared": None})
        a[r.body["state"]] = r
    for e in store.events():
        if e["event"] in OPERATOR_EVENTS | WALL_EVENTS | PROCESSING_EVENTS | VOLUME_EVENTS | VIEW_EVENTS:
            level(e["level"])["events"].append(e)
    return [_level_report(v) for v in levels.values()]


def monitoring(results) -> dict:
    """Which share of a level's frames after the baseline each safety rule was evaluated on,
    per plane, and whether that makes the level monitored (see MONITORED_SHARE and
    MAX_UNCHECKED_S).

    ``results``: the level's result records. Returns {"monitored": bool or None (the log
    predates the analyzer saying which rules it checked), "threshold", "planes": {plane:
    {"frames", "proximity" (lateral), "leak", and "leak-apart" where a view with no outline read
    cement apart from the bolus}}, "reasons": [why not monitored]}.
    """
    counts: dict[str, dict] = {}
    times, checked_lateral = [], []
    for r in results:
        if r.body.get("status") == "baseline":
            continue
        checks = r.body.get("checks")
        c = counts.setdefault(r.plane, {"frames": 0, "unsaid": 0, **dict.fromkeys(CHECKS, 0)})
        c["frames"] += 1
        c["unsaid"] += checks is None
        for check in checks or ():
            c[check] += 1
        t = r.body.get("acq_time")
        times.append(t)
        if r.plane == "lateral" and "proximity" in (checks or ()):
            checked_lateral.append(t)
    if "lateral" in counts:
        counts["lateral"]["max_gap_s"] = longest_unchecked(times, checked_lateral)
    return coverage_verdict(counts)


def longest_unchecked(times: list[float], checked: list[float]) -> float:
    """The longest stretch (s) of the level's stream, from its first frame after the
    baseline in any plane to its last, with no lateral frame checked against the 5 mm rule:
    a lateral view that stops while the AP goes on is not watched, whatever its share."""
    if not times:
        return 0.0
    marks = [min(times), *sorted(checked), max(times)]
    return float(max(b - a for a, b in zip(marks, marks[1:], strict=False)))


def coverage_verdict(counts: dict[str, dict]) -> dict:
    """The verdict of :func:`monitoring` from per-plane counts of frames after the baseline:
    {plane: {"frames", "unsaid" (results that do not say what was checked), "proximity",
    "leak"}, and for the lateral plane "max_gap_s" (longest_unchecked)}. One rule for the
    audit and the summary's digests."""
    planes = {}
    reasons = []
    names = {"proximity": "the 5 mm rule", "leak": "the leak check"}
    unsaid = False
    for plane in PLANES:
        c = counts.get(plane)
        if not c or not c["frames"]:
            continue
        # a plane's results all silent on their checks: an analyzer from before they were said
        silent = c["unsaid"] == c["frames"]
        unsaid = unsaid or silent
        planes[plane] = {"frames": c["frames"]}
        for rule in PLANE_CHECKS[plane]:
            share = c[rule] / c["frames"]
            planes[plane][rule] = round(share, 4)
            if share < MONITORED_SHARE and not silent:
                apart = c.get("leak-apart", 0) if rule == "leak" else 0
                only = f"; only cement apart from the bolus read on {apart}" if apart else ""
                of = f"{c[rule]} of {c['frames']} frames ({share:.0%}{only})"
                reasons.append(f"{plane}: {names[rule]} evaluated on {of}")
        if c.get("leak-apart"):
            planes[plane]["leak-apart"] = round(c["leak-apart"] / c["frames"], 4)
        gap = c.get("max_gap_s")
        if plane == "lateral" and gap is not None and not silent:
            planes[plane]["max_unchecked_s"] = round(gap, 2)
            if gap > MAX_UNCHECKED_S and not reasons:
                reasons.append(f"lateral: no frame checked against the 5 mm rule for {gap:.1f} s")
    if "lateral" not in planes:
        reasons.append("no lateral frame analysed after the baseline: the 5 mm rule was never evaluated")
    monitored = False if reasons else (None if unsaid else True)
    return {"monitored": monitored, "threshold": MONITORED_SHARE, "planes": planes, "reasons": reasons}


VOLUME_FROM_SHAPE = {CaveatCode.VOLUME_BELOW_SHAPE.value, CaveatCode.VOLUME_ABOVE_SHAPE.value}


def _caveat_kind(result: dict):
    """What makes a logged result's caveats the same as another's: their codes; for a log
    written before results carried them (2026-12), the status up to its first figures."""
    caveats = result.get("caveats")
    if caveats is None:
        return result.get("status", "").split(" (")[0]
    return tuple(c["code"] for c in caveats)


def _volume_from(result: dict) -> str | None:
    """Where a logged result's volume came from: "shape" when the image's darkness read well
    under or over the cement's shape in the two views (volume-below-shape, volume-above-shape),
    "shape-one-view" when that shape was one view's alone (volume-one-view);
    "syringe" when the operator's syringes set its scale (volume_scale other than 1: anchored on
    this level's syringes, or on the scale an earlier level's left); "darkness-and-shape" when
    the darkness, reading a little under or over the shape, was weighed with it (volume_darkness_weight
    between 0 and 1), "shape" too when it weighed nothing (0: a volume held, VOLUME_HELD, keeps
    that of the one it holds, not its caveat); else "darkness". None from a log whose results do
    not carry their caveats."""
    caveats = result.get("caveats")
    if caveats is None:
        return None
    if any(c["code"] in VOLUME_FROM_SHAPE for c in caveats):
        one_view = any(c["code"] == CaveatCode.VOLUME_ONE_VIEW.value for c in caveats)
        return "shape-one-view" if one_view else "shape"
    if result.get("volume_scale", 1.0) != 1.0:
        return "syringe"
    weight = result.get("volume_darkness_weight")
    if weight is None or weight >= 1.0:
        return "darkness"
    return "shape" if weight <= 0.0 else "darkness-and-shape"


def _picked(events: list[dict], kinds: set[str], *extra: str) -> list[dict]:
    """The ``events`` of these ``kinds``, in the order logged, each as the QA contract gives it:
    time, acq_time, source, event and detail, and the ``extra`` fields named."""
    keys = ("time", "acq_time", "source", "event", "detail", *extra)
    return [{k: e.get(k) for k in keys} for e in events if e["event"] in kinds]


def _stream_places(results) -> dict:
    """Each stream (one run of a source; None in logs from before results named theirs) -> its
    place in the order the level's results first name it."""
    places: dict = {}
    for r in results:
        places.setdefault(r.body.get("stream"), len(places))
    return places


def _index_runs(results) -> dict[tuple, int]:
    """(stream, plane, seq) -> the run of frame indexes that frame is in: within each stream and
    plane, in the order the source sent them (seq), a new run wherever the index goes back (a
    looped replay). A result written late is in its own run, not the one being written."""
    sent: dict[tuple, list] = {}
    for r in results:
        sent.setdefault((r.body.get("stream"), r.plane), []).append((r.seq, r.frame))
    runs: dict[tuple, int] = {}
    for (stream, plane), frames in sent.items():
        run, last = 0, None
        for seq, frame in sorted(set(frames)):
            if last is not None and frame < last:
                run += 1
            runs[(stream, plane, seq)] = run
            last = frame
    return runs


def _caveat_order(c: dict) -> tuple:
    return c["_place"], c["_first"].body["acq_time"], c["plane"]


def _caveat_row(c: dict) -> dict:
    """A caveat row as the QA contract has it: its first and last frame (index, stream time)."""
    first, last = c["_first"], c["_last"]
    return {
        "plane": c["plane"],
        "status": first.body.get("status", "ok"),  # the first frame's wording
        "first_frame": first.frame,
        "last_frame": last.frame,
        "first_s": first.body["acq_time"],
        "last_s": last.body["acq_time"],
        "frames": c["frames"],
    }


def _level_report(lv: dict) -> dict:
    """One level's part of the QA contract from its results, events and alarms (``lv``): per-instant
    rows, caveats, volumes, alarms, reaction times."""
    # One row per acquisition instant, both planes' results of that instant merged: planes
    # at different frame rates must not be merged by frame index (AP frame 10 of a 3.75 fps
    # view is lateral frame 20 of a 7.5 fps one), or the volume runs backwards in time and
    # every reaction time is wrong. Times are rounded to 0.1 ms so that a biplane pair
    # acquired together shares its row.
    # Over 60 lines on purpose: one pass over the level's results (rows, caveats, cannulas), then its
    # alarms with the operator's reaction to each, then its events, all read into one report.
    frames: dict[tuple[int, float], dict] = {}  # (the stream's place, the instant) -> its row
    caveats: dict[tuple, dict] = {}
    streams = _stream_places(lv["results"])
    runs = _index_runs(lv["results"])
    cannulas = 0
    for r in lv["results"]:  # in the order written: for one frame index, AP after lateral
        place = streams[r.body.get("stream")]
        status = r.body.get("status", "ok")
        if status not in ("ok", "baseline"):
            c = caveats.setdefault(
                # one row for "saturated frame (83 % ...)", (91 % ...), per run of frame indexes
                (r.plane, _caveat_kind(r.body), place, runs[(r.body.get("stream"), r.plane, r.seq)]),
                {"plane": r.plane, "frames": 0, "_first": r, "_last": r, "_place": place},
            )
            c["frames"] += 1
            c["_first"] = min(c["_first"], r, key=lambda x: x.seq)  # its first and last frames as sent
            c["_last"] = max(c["_last"], r, key=lambda x: x.seq)
        row = frames.setdefault(
            (place, round(r.body["acq_time"], 4)),
            {
                "frame": r.frame,
                "time_s": r.body["acq_time"],
                "distance_mm": None,
                "volume_ml": None,
                "volume_low_ml": None,
                "volume_high_ml": None,
                "volume_from": None,
                "image_volume_ml": None,
            },
        )
        if r.plane == "lateral" and r.body["distance_mm"] is not None:
            row["distance_mm"] = r.body["distance_mm"]
        if r.body["volume_ml"] is not None:
            row["volume_ml"] = r.body["volume_ml"]
            scale = r.body.get("volume_scale") or 1.0
            row["image_volume_ml"] = round(r.body["volume_ml"] / scale, 4)
            row["volume_low_ml"] = r.body.get("volume_low_ml")
            row["volume_high_ml"] = r.body.get("volume_high_ml")
            row["volume_from"] = _volume_from(r.body)
        if r.plane == "ap":
            cannulas = max(cannulas, len(r.body["overlay"].get("cannula_tips", [])))
    keys = sorted(frames)  # stream by stream, then by time
    ordered = [frames[key] for key in keys]
    # each stream's volume series (a source restarted in a session starts its time again)
    stream_series: dict[int, list] = {}
    for (place, _), f in zip(keys, ordered, strict=True):
        if f["volume_ml"] is not None:
            stream_series.setdefault(place, []).append((f["time_s"], f["volume_ml"]))
    last_volume = next((f for f in reversed(ordered) if f["volume_ml"] is not None), None)
    distances = [f["distance_mm"] for f in ordered if f["distance_mm"] is not None]
    pauses = [e["time"] for e in lv["events"] if e["event"] == "pause"]
    # an alarm's stream, where its record does not name it (raised off the frame's result, or
    # logged before 2026-12-06): the stream of the result written next, in the same transaction
    # (a frame's alarms are written before its result); one written after the level's last result
    # (at the end), the stream of that result
    written = [(r.rec, streams[r.body.get("stream")]) for r in lv["results"]]
    alarms, places = [], []
    for states in lv["alarms"].values():
        raised = states["raised"]
        if raised is None:
            continue  # acknowledged or cleared states of an alarm whose raise was lost
        b = raised.body
        t = b["acq_time"]
        place = streams.get(b.get("stream"))
        if place is None:
            after = bisect.bisect_left(written, (raised.rec, -1))
            place = written[after][1] if after < len(written) else written[-1][1] if written else 0
        keys = ("kind", "priority", "frame", "plane", "stream", "seq", "site", "distance_mm", "reason")
        alarm = {k: b.get(k) for k in keys}
        alarm |= {
            "time_s": t,
            "acknowledged_after_s": _after(states["acknowledged"], raised),
            "cleared_after_s": _after(states["cleared"], raised),
            "paused_after_s": next((round(p - raised.time, 2) for p in pauses if p >= raised.time), None),
            **reaction(stream_series.get(place, []), t),
            "evidence": b.get("evidence"),
        }
        alarms.append(alarm)
        places.append(place)
    order = sorted(range(len(alarms)), key=lambda i: (places[i], alarms[i]["time_s"], alarms[i]["frame"]))
    alarms = [alarms[i] for i in order]
    syringe = [e["value"] for e in lv["events"] if e["event"] == "syringe"]
    return {
        "level": lv["level"],
        # (over every stream: each starts its time again)
        "start_s": min(f["time_s"] for f in ordered) if ordered else None,
        "end_s": max(f["time_s"] for f in ordered) if ordered else None,
        "cannulas": cannulas or None,
        "volume_ml": last_volume["volume_ml"] if last_volume else None,
        # its 68 % interval (None from a log written before results carried one)
        "volume_low_ml": last_volume["volume_low_ml"] if last_volume else None,
        "volume_high_ml": last_volume["volume_high_ml"] if last_volume else None,
        # "shape" when the image's darkness read well under or over the cement's shape in the two
        # views (volume-below-shape, volume-above-shape) and the volume is the shape's, and so on
        # (_volume_from); None from a log whose results do not carry their caveats
        "volume_from": last_volume["volume_from"] if last_volume else None,
        "image_volume_ml": next(
            (f["image_volume_ml"] for f in reversed(ordered) if f["image_volume_ml"] is not None), None
        ),
        "syringe_ml": round(sum(syringe), 3) if syringe else None,
        "min_distance_mm": min(distances) if distances else None,
        "monitoring": monitoring(lv["results"]),
        "alarms": alarms,
        # why measurements were missing or qualified: a frame skipped, no anatomy, a guessed scale
        "caveats": [_caveat_row(c) for c in sorted(caveats.values(), key=_caveat_order)],
        "operator_events": _picked(lv["events"], OPERATOR_EVENTS, "value"),
        # the C-arm's temporal filter read and undone (by view), if it was
        "processing": _picked(lv["events"], PROCESSING_EVENTS, "plane", "value"),
        # how the volume was read: the darkness refused, each syringe's anchor and its growth
        "volume_events": _picked(lv["events"], VOLUME_EVENTS, "value"),
        # when the 5 mm rule was armed on the wall, or withheld, and by whom
        "wall": _picked(lv["events"], WALL_EVENTS),
        # when a view's frames stopped while the other's went on, and when they came back
        "views": _picked(lv["events"], VIEW_EVENTS, "value"),
        "frames": ordered,
    }


def _after(state, raised) -> float | None:
    return None if state is None else round(state.body["acq_time"] - raised.body["acq_time"], 3)


def _reaction_phrase(alarm: dict) -> str:
    """How injection went on after ``alarm`` (its :func:`reaction` fields), as the text report
    says it: a volume read after it, flat to the recording's end, is no injection that went on
    (it read "did not stop" where the recording ended under HOLD_S after the alarm), and none read
    after it is said (it raised a TypeError the audit died of: an independent test)."""
    total, stopped = alarm["total_after_ml"], alarm["stopped_after_s"]
    unseen = alarm.get("stop_unseen_s")  # absent from reactions read before session 79
    if stopped is not None and unseen:
        return (
            f"; stopped within {stopped:.1f} s, not seen for {unseen:.1f} s of it,"
            f" {alarm['injected_after_ml']:.2f} mL after"
        )
    if stopped is not None:
        return f"; stopped {stopped:.1f} s later, {alarm['injected_after_ml']:.2f} mL after"
    if total is None:
        return "; no volume read after it"
    if total <= FLAT_ML:
        return f"; no cement went in after it before the recording ended ({total:.2f} mL after)"
    return f"; injection did not stop ({total:.2f} mL after)"


def reaction(series: list[tuple[float, float]], t_alarm: float, hold_s: float = HOLD_S) -> dict:
    """How injection went on after an alarm at ``t_alarm``, from the volume over time.

    Injection has stopped at the first sample from which the volume stays flat
    (within the estimate's noise) for ``hold_s``. ``injected_after_ml`` is the
    cement that went in between the alarm and that stop; ``total_after_ml`` all
    that went in after the alarm, including any resumed injection. ``stop_unseen_s``: how long
    of the time to that stop no frame was read (stretches of blank, held or skipped frames):
    the stop came somewhere in it, not at the sample found, which is then only its latest
    time (it was said "stopped 2.2 s later" where frames went unread for 2 s of it).
    """
    after = [(t, v) for t, v in series if t >= t_alarm]
    if not after:
        return {
            "stopped_after_s": None,
            "injected_after_ml": None,
            "total_after_ml": None,
            "stop_unseen_s": None,
        }
    # a stretch not read is one over HOLD_S and 3 of the series' usual steps (pulses at 1-2/s are
    # each over HOLD_S apart, and read all through)
    unread_s = max(hold_s, 3.0 * (usual_step(t for t, _ in series) or 0.0))
    v0 = after[0][1]
    t_end, v_end = after[-1]
    total = round(max(0.0, v_end - v0), 3)
    for i, (t, v) in enumerate(after):
        if t_end - t < hold_s:
            break  # the recording ends before we could tell
        # the samples over the hold; with none after this one in it (pulses further apart than
        # HOLD_S), through the next: a window of one sample is flat whatever follows
        end = i + sum(1 for s, _ in after[i + 1 :] if s <= t + hold_s)
        end = max(end, i + 1)
        times = [s for s, _ in after[i : end + 2]]  # and the next, for the stretch not read
        window = [w for _, w in after[i : end + 1]]
        # read all through: frames not read (blank, held, a view silent) are no flat volume; a
        # stretch of them after an alarm was said "stopped 0.0 s later" (an independent test)
        if max(b - a for a, b in zip(times, times[1:], strict=False)) >= unread_s:
            continue
        if max(window) - v <= max(FLAT_ML, 0.03 * v):
            seen = [t_alarm] + [s for s, _ in after[: i + 1]]
            unseen = sum((b - a for a, b in zip(seen, seen[1:], strict=False) if b - a >= unread_s), 0.0)
            return {
                "stopped_after_s": round(t - t_alarm, 3),
                "injected_after_ml": round(max(0.0, v - v0), 3),
                "total_after_ml": total,
                "stop_unseen_s": round(unseen, 3),
            }
    return {
        "stopped_after_s": None,
        "injected_after_ml": total,
        "total_after_ml": total,
        "stop_unseen_s": None,
    }


# ------------------------------------------------------------------ many sessions


# Files and folders read at once when many sessions are looked at. Reading an archive whose
# inodes are not cached is a wait per file (10,000 sessions' three stats took 37 s one by one
# with the OS caches dropped, 1.1 s 32 at a time): the wait overlaps across threads.
IO_THREADS = 32


def find_sessions(root: Path, unlisted: list | None = None) -> list[Path]:
    """Every session directory (one holding a session log) under ``root``, at any depth,
    sorted; the folders are listed IO_THREADS at a time. A folder that cannot be listed (no
    permission, an I/O error) is added to ``unlisted`` as {"folder", "error"}, when given:
    what lies under it is not in the result, and a summary must say so."""
    from concurrent.futures import ThreadPoolExecutor

    if not root.is_dir():
        raise MonitorError(f"{root}: not a directory")
    found: list[Path] = []
    with ThreadPoolExecutor(IO_THREADS) as pool:
        level = [root]
        while level:
            listed = list(pool.map(_listing, level))
            level = []
            for folder, is_session, subfolders, problem in listed:
                if is_session:
                    found.append(folder)
                if problem is not None and unlisted is not None:
                    unlisted.append({"folder": str(folder), "error": problem})
                level += subfolders
    return sorted(found)


def _listing(folder: Path) -> tuple[Path, bool, list[Path], str | None]:
    """Whether ``folder`` holds a session log, its subfolders (symbolic links not followed),
    and why it could not be listed (None: it could)."""
    is_session, subfolders = False, []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name == DB_NAME and e.is_file():
                    is_session = True
                elif e.is_dir(follow_symlinks=False):
                    subfolders.append(Path(e.path))
    except OSError as e:  # vanished or unreadable while listed
        why = f"{folder}: cannot be listed ({e.strerror or e}): any session under it is left out"
        return folder, False, [], why
    return folder, is_session, subfolders, None


def _in_threads(function, items: list) -> list:
    """``function`` over ``items``, IO_THREADS at a time, in order (for file reads and stats)."""
    from concurrent.futures import ThreadPoolExecutor

    if len(items) < 2 * IO_THREADS:
        return [function(item) for item in items]
    with ThreadPoolExecutor(IO_THREADS) as pool:
        return list(pool.map(function, items, chunksize=16))


def session_digest(folder: Path) -> dict:
    """What the summary needs from one session, or why it could not be read.

    Lean on purpose (the summary reads thousands of sessions): aggregates in
    SQL, and the volume curve only after each alarm, until injection stopped.
    """
    try:
        store = SessionStore.open(folder)
    except MonitorError as e:
        return {"folder": str(folder), "error": str(e)}
    try:
        return {"folder": str(folder), **_digest(store)}
    except Exception as e:  # a damaged database can fail anywhere: report it, go on with the others
        return {"folder": str(folder), "error": f"{folder}: unreadable ({e})"}
    finally:
        store.close()


def record_digest(folder: Path) -> bool:
    """At close, once the log is signed: its digest written beside it, signed
    (``session.digest.json``), so that a summary takes it instead of reading the log, for as
    long as the log's files are as they are now. False when the log cannot be read."""
    digest = session_digest(folder)
    if "error" in digest:
        return False
    digest.pop("folder")  # where it is found is where it is, when it is read
    signing.sign_digest(folder, digest, DigestCache.stamp(folder), DIGEST_VERSION)
    return True


def _digest(store: SessionStore) -> dict:
    """What the summary needs of one session, read with a few SQL queries: per level its volume,
    syringe volume, closest distance, alarms, leaks, reaction times and whether it was monitored;
    the operator, and whether the log is complete and trusted."""
    # Over 60 lines on purpose: one query after another over one log, each result added to the same
    # digest.
    meta = store.meta()
    first = meta.get("level")
    levels: dict = {}
    for level, distance, last_rec in store.query(
        "SELECT level, MIN(json_extract(body, '$.distance_mm')), MAX(rec) FROM journal "
        "WHERE kind='result' GROUP BY level ORDER BY MIN(rec)"
    ):
        volume = store.query(
            "SELECT json_extract(body, '$.volume_ml') FROM journal WHERE kind='result' AND rec<=? "
            "AND level IS ? AND json_extract(body, '$.volume_ml') IS NOT NULL ORDER BY rec DESC LIMIT 1",
            (last_rec, level),
        ).fetchone()
        levels[level] = {
            "level": level or first,
            "volume_ml": volume[0] if volume else None,
            "syringe_ml": None,
            "min_distance_mm": distance,
            "alarms": 0,
            "leaks": 0,  # high leak alarms
            "possible_leaks": 0,  # medium ones: a leak the analyzer could not confirm
            "reactions": [],
        }
    for level, value in store.query(
        "SELECT level, json_extract(body, '$.value') FROM journal WHERE kind='event' "
        "AND json_extract(body, '$.event')='syringe'"
    ):
        if level in levels and isinstance(value, (int, float)):
            levels[level]["syringe_ml"] = round((levels[level]["syringe_ml"] or 0.0) + value, 3)
    for rec, level, kind, t, priority, stream in store.query(
        "SELECT rec, level, json_extract(body, '$.kind'), json_extract(body, '$.acq_time'),"
        " json_extract(body, '$.priority'), json_extract(body, '$.stream') FROM journal"
        " WHERE kind='alarm' AND json_extract(body, '$.state')='raised'"
    ):
        lv = levels.get(level)
        if lv is None:
            continue
        lv["alarms"] += 1
        lv["leaks"] += kind == "extravasation" and priority == "high"
        lv["possible_leaks"] += kind == "extravasation" and priority != "high"
        if stream is None:  # as the audit takes it: the stream of the level's result written next
            # (the alarm's own frame's, in the same transaction), else of its last one
            near = (
                store.query(
                    "SELECT json_extract(body, '$.stream') FROM journal WHERE +kind='result' AND level IS ?"
                    " AND rec>? ORDER BY rec LIMIT 1",
                    (level, rec),
                ).fetchone()
                or store.query(
                    "SELECT json_extract(body, '$.stream') FROM journal WHERE +kind='result' AND level IS ?"
                    " AND rec<? ORDER BY rec DESC LIMIT 1",
                    (level, rec),
                ).fetchone()
            )
            stream = near[0] if near else None
        # its own stream's volumes (a source restarted in a session starts its time again)
        # ("+kind": read along the records from the alarm on, not by the kind index, which sorted
        # every result of the log for each alarm: 0.22 s an alarm on 72,000 results, 0.013 s so)
        series = store.query(
            "SELECT json_extract(body, '$.acq_time'), json_extract(body, '$.volume_ml') FROM journal "
            "WHERE +kind='result' AND level IS ? AND rec>? AND json_extract(body, '$.volume_ml') IS NOT NULL "
            "AND json_extract(body, '$.stream') IS ? ORDER BY rec LIMIT 4000",
            (level, rec - 1, stream),
        ).fetchall()
        stopped = reaction(series, t)["stopped_after_s"]
        if stopped is not None:
            lv["reactions"].append(stopped)
    counts: dict = {}
    for level, plane, frames, unsaid, proximity, leak in store.query(
        "SELECT level, plane, COUNT(*), SUM(json_extract(body, '$.checks') IS NULL), "
        "SUM(instr(COALESCE(json_extract(body, '$.checks'), ''), '\"proximity\"') > 0), "
        "SUM(instr(COALESCE(json_extract(body, '$.checks'), ''), '\"leak\"') > 0) "
        "FROM journal WHERE kind='result' AND json_extract(body, '$.status') IS NOT 'baseline' "
        "GROUP BY level, plane"
    ):
        counts.setdefault(level, {})[plane] = {
            "frames": frames,
            "unsaid": unsaid,
            "proximity": proximity,
            "leak": leak,
        }
    spans = {
        level: (start, end)
        for level, start, end in store.query(
            "SELECT level, MIN(json_extract(body, '$.acq_time')), MAX(json_extract(body, '$.acq_time')) "
            "FROM journal WHERE kind='result' AND json_extract(body, '$.status') IS NOT 'baseline' "
            "GROUP BY level"
        )
    }
    for level, first, last, inner in store.query(
        "SELECT level, MIN(t), MAX(t), MAX(t - previous) FROM (SELECT level, "
        "json_extract(body, '$.acq_time') AS t, LAG(json_extract(body, '$.acq_time')) "
        "OVER (PARTITION BY level ORDER BY json_extract(body, '$.acq_time')) AS previous "
        "FROM journal WHERE kind='result' AND plane='lateral' "
        "AND instr(COALESCE(json_extract(body, '$.checks'), ''), '\"proximity\"') > 0) GROUP BY level"
    ):
        start, end = spans.get(level, (first, last))
        if "lateral" in counts.get(level, {}):
            counts[level]["lateral"]["max_gap_s"] = max(first - start, inner or 0.0, end - last)
    for level, lv in levels.items():
        lateral = counts.get(level, {}).get("lateral")
        if lateral is not None and "max_gap_s" not in lateral and level in spans:
            lateral["max_gap_s"] = spans[level][1] - spans[level][0]  # none checked at all
        verdict = coverage_verdict(counts.get(level, {}))
        lv["monitored"], lv["not_monitored_because"] = verdict["monitored"], verdict["reasons"]
    # The whole chain (without re-hashing the pixels: `monitor audit SESSION` does) and the
    # signed head: a record edited in place breaks the chain, a rewrite with the chain
    # recomputed breaks the head. Digests are cached, so each log is read once.
    untrusted = store.verify(images=False) + store.head_problems()
    return {
        "operator": meta.get("operator"),
        "room": meta.get("room"),
        "created": meta.get("created"),  # when the log was begun, epoch seconds
        "complete": bool((meta.get("summary") or {}).get("complete")) and not untrusted,
        # plane -> frames of the recording never sent (as audit_json's), or None
        "stopped_early": (meta.get("summary") or {}).get("unsent") or None,
        "untrusted": untrusted,
        "levels": list(levels.values()),
    }


@dataclass(frozen=True)
class SummaryFilter:
    """Which sessions and levels a summary covers (None: any). Dates are the local calendar
    days the logs were begun on, both ends included; operator, room and level match exactly.
    A session that cannot be read is never filtered out: QA must see it."""

    date_from: datetime.date | None = None
    date_to: datetime.date | None = None
    room: str | None = None
    operator: str | None = None
    level: str | None = None

    def session(self, digest: dict) -> bool:
        """Whether a readable session's digest is covered: begun in the days, in the room, by
        the operator, and (with a level) treating that level; its levels are filtered apart.
        An operator or level of "not recorded" selects those the session was not told."""
        if self.level is not None and not any(self.covers_level(lv["level"]) for lv in digest["levels"]):
            return False
        if self.date_from or self.date_to:
            created = digest.get("created")
            if created is None:
                return False
            day = datetime.date.fromtimestamp(created)
            if (self.date_from and day < self.date_from) or (self.date_to and day > self.date_to):
                return False
        return (self.room is None or (digest.get("room") or NOT_RECORDED) == self.room) and (
            self.operator is None or (digest.get("operator") or NOT_RECORDED) == self.operator
        )

    def covers_level(self, level: str | None) -> bool:
        return self.level is None or (level or NOT_RECORDED).upper() == self.level.upper()

    def describe(self) -> str:
        """The filter for people, to follow "sessions", e.g. "begun from 2026-11-01, in room
        '3', at level 'L1'" ("" for none)."""
        parts = [
            f"begun from {self.date_from}" if self.date_from else "",
            f"begun until {self.date_to}" if self.date_to else "",
            f"in room {self.room!r}" if self.room else "",
            f"by {self.operator!r}" if self.operator else "",
            f"at level {self.level!r}" if self.level else "",
        ]
        return ", ".join(p for p in parts if p)


def summarize(
    folders: Iterable[Path],
    workers: int = 1,
    progress: Callable[[int], None] = lambda n: None,
    cache: Path | None = None,
    only: SummaryFilter | None = None,
    close_digests: bool = True,
) -> dict:
    """Per operator and level over many sessions: volumes, alarms, reaction times, leaks;
    with ``only``, over the sessions and levels it covers.

    With ``cache`` (a SQLite file), each session's digest is kept there against
    the size and modification time of its log, so a later summary reads only the
    sessions that are new or changed. With ``close_digests``, a log not in the cache is
    not read either when the digest written at its close (signed, :func:`record_digest`)
    is for the log as it is now.
    """
    # Over 60 lines on purpose: the digests read (from the cache, in a pool or one by one), then one
    # pass over their levels that fills the per operator-and-level groups and the not-monitored list,
    # then a row per group.
    folders = list(folders)
    cached = DigestCache(cache) if cache is not None else None
    from_cache = cached.lookup(folders) if cached else {}
    digests: dict[Path, dict] = dict(from_cache)
    key = signing.installation_key(create=False) if close_digests else None
    unread = [f for f in folders if f not in digests] if key else []

    def closed_digest(f: Path) -> dict | None:
        return signing.signed_digest(f, DigestCache.stamp(f), DIGEST_VERSION, key)

    for f, closed in zip(unread, _in_threads(closed_digest, unread), strict=True):  # written at close
        if closed is not None:  # and still true of the log
            digests[f] = {"folder": str(f), **closed}
    from_close = len(digests) - len(from_cache)
    todo = [f for f in folders if f not in digests]
    if workers > 1 and len(todo) > 64:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for i, d in enumerate(pool.imap(session_digest, todo, chunksize=32), 1):
                digests[Path(d["folder"])] = d
                if i % 1000 == 0:
                    progress(i)
    else:
        for f in todo:
            digests[f] = session_digest(f)
    if cached:
        cached.store({f: digests[f] for f in folders if f not in from_cache})
        cached.close()
    only = only or SummaryFilter()
    digests = [digests[f] for f in folders]
    # logs that do not verify are listed whatever the filter: a filter must not hide tampering
    untrusted = [{"folder": d["folder"], "problems": d["untrusted"]} for d in digests if d.get("untrusted")]
    digests = [d for d in digests if "error" in d or only.session(d)]
    groups: dict[tuple, dict] = {}
    not_monitored: list[dict] = []  # (session, level) pairs: listed first by the summary's readers
    leaked: list[dict] = []  # (session, level) pairs with a leak alarm, high or possible, with its session
    for d in digests:
        for lv in d.get("levels", []):
            if not only.covers_level(lv["level"]):
                continue
            possible = lv["possible_leaks"]
            if lv["leaks"] or possible:
                leaked.append(
                    {
                        "folder": d["folder"],
                        "operator": d["operator"] or NOT_RECORDED,
                        "room": d.get("room"),
                        "created": d.get("created"),
                        "level": lv["level"] or NOT_RECORDED,
                        "leaks": lv["leaks"],
                        "possible_leaks": possible,
                        "volume_ml": lv["volume_ml"],
                    }
                )
            g = groups.setdefault(
                (d["operator"] or NOT_RECORDED, lv["level"] or NOT_RECORDED),
                {
                    "sessions": 0,
                    "volumes": [],
                    "alarms": 0,
                    "leaks": 0,
                    "possible_leaks": 0,
                    "reactions": [],
                    "incomplete": 0,
                    "not_monitored": 0,
                },
            )
            g["sessions"] += 1
            g["incomplete"] += not d["complete"]
            if lv.get("monitored") is False:
                g["not_monitored"] += 1
                not_monitored.append(
                    {
                        "folder": d.get("folder"),
                        "operator": d["operator"] or NOT_RECORDED,
                        "level": lv["level"] or NOT_RECORDED,
                        "reasons": lv.get("not_monitored_because", []),
                    }
                )
            if lv["volume_ml"] is not None:
                g["volumes"].append(lv["volume_ml"])
            g["alarms"] += lv["alarms"]
            g["leaks"] += lv["leaks"]
            g["possible_leaks"] += possible
            g["reactions"] += lv["reactions"]
    rows, histograms = [], []
    for (operator, level), g in sorted(groups.items()):
        v = sorted(g["volumes"])
        counts = [0] * (VOLUME_BINS_ML + 1)
        for ml in v:
            counts[min(VOLUME_BINS_ML, max(0, int(ml)))] += 1
        histograms.append({"operator": operator, "level": level, "counts": counts})
        rows.append(
            {
                "operator": operator,
                "level": level,
                "sessions": g["sessions"],
                "incomplete": g["incomplete"],
                "not_monitored": g["not_monitored"],
                "volume_median_ml": _round(statistics.median(v)) if v else None,
                "volume_p10_ml": _round(_quantile(v, 0.1)) if v else None,
                "volume_p90_ml": _round(_quantile(v, 0.9)) if v else None,
                "volume_max_ml": _round(v[-1]) if v else None,
                "alarms_per_level": _round(g["alarms"] / g["sessions"]),
                "leaks": g["leaks"],
                "possible_leaks": g["possible_leaks"],
                "median_reaction_s": _round(statistics.median(g["reactions"])) if g["reactions"] else None,
            }
        )
    return {
        "sessions": len(digests),
        "read": len(todo),  # logs read now; the others' digests from the cache or written at close
        "from_close": from_close,
        "unreadable": [d for d in digests if "error" in d],
        "matched": sum("error" not in d for d in digests),  # readable sessions the filter covers
        # logs whose chain or signed head does not verify (rewritten, cut, unsigned), listed
        # first, whatever the filter
        "untrusted": untrusted,
        # readable logs that say they are incomplete (a source that failed, frames lost), whatever
        # the filter, with no level as well
        "incomplete": [d["folder"] for d in digests if "error" not in d and not d.get("complete")],
        # readable logs of a recording not sent to its end (a run stopped early): the record
        # covers part of it; listed whatever the filter, as the incomplete ones
        "stopped_early": [
            {"folder": d["folder"], "unsent": d["stopped_early"]}
            for d in digests
            if "error" not in d and d.get("stopped_early")
        ],
        "not_monitored": not_monitored,
        "leaked": leaked,
        "filter": only.describe(),
        "rows": rows,
        "volume_histograms": histograms,  # per row, sessions per 1 mL of volume (the last: and over)
    }


class DigestCache:
    """Session digests kept against each log's size and modification time."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS digests (folder TEXT PRIMARY KEY, stamp TEXT NOT NULL, "
            "version INTEGER NOT NULL, digest TEXT NOT NULL)"
        )

    @staticmethod
    def stamp(folder: Path) -> str:
        parts = []
        for name in (DB_NAME, DB_NAME + "-wal", signing.HEAD_NAME):  # the head: a log unsigned is not
            try:
                st = (folder / name).stat()
                parts.append(f"{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append("-")
        return "/".join(parts)

    def lookup(self, folders: list[Path]) -> dict[Path, dict]:
        known = {
            row[0]: (row[1], row[2], row[3])
            for row in self._db.execute("SELECT folder, stamp, version, digest FROM digests")
        }
        found = {}
        candidates = [f for f in folders if str(f) in known and known[str(f)][1] == DIGEST_VERSION]
        for f, stamp in zip(candidates, _in_threads(self.stamp, candidates), strict=True):
            if known[str(f)][0] == stamp:
                found[f] = json.loads(known[str(f)][2])
        return found

    def store(self, digests: dict[Path, dict]) -> None:
        folders = list(digests)
        stamps = _in_threads(self.stamp, folders)
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)",
                [
                    (str(f), st, DIGEST_VERSION, json.dumps(digests[f]))
                    for f, st in zip(folders, stamps, strict=True)
                ],
            )

    def close(self) -> None:
        self._db.close()


SUMMARY_COLUMNS = (
    "operator",
    "level",
    "sessions",
    "incomplete",
    "not_monitored",
    "volume_median_ml",
    "volume_p10_ml",
    "volume_p90_ml",
    "volume_max_ml",
    "alarms_per_level",
    "leaks",
    "possible_leaks",
    "median_reaction_s",
)


def _quantile(ordered: list[float], q: float) -> float:
    i = q * (len(ordered) - 1)
    lo = int(i)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (i - lo)


def _round(x: float) -> float:
    return round(float(x), 3)


def volume_phrase(level: dict) -> str:
    """A level's volume for people: "3.20 mL (2.95-3.48)", its 68 % interval in brackets, and
    where it came from when that was the cement's shape or the syringes' scale rather than the
    image's darkness alone."""
    if level["volume_ml"] is None:
        return "n/a"
    low, high = level.get("volume_low_ml"), level.get("volume_high_ml")
    interval = "" if low is None or high is None else f" ({low:.2f}-{high:.2f})"
    source = {
        # low (volume-below-shape) or high (volume-above-shape): the caveats say which
        "shape": " from the cement's shape (the image's darkness did not agree with it)",
        "shape-one-view": " from the cement's shape in one view alone (the other gave no outline; the"
        " image's darkness did not agree with it)",
        "syringe": " on the syringes' scale",
        "darkness-and-shape": " between the image's darkness and the cement's shape (the darkness read"
        " a little under or over it)",
    }.get(level.get("volume_from"), "")
    return f"{level['volume_ml']:.2f} mL{interval}{source}"


def _seconds(caveat: dict) -> str:
    """A caveat row's stream time, "2.67 s" or "2.67-9.13 s" (frame indexes can repeat in a
    session: a looped replay, a source restarted)."""
    first, last = caveat["first_s"], caveat["last_s"]
    return f"{first:.2f} s" if last == first else f"{first:.2f}-{last:.2f} s"


def _stream_time(event: dict) -> str:
    """An event's stream time for the text report's columns ("   1.20 s "), or "" where it had none."""
    return "" if event["acq_time"] is None else f"{event['acq_time']:7.2f} s "


def text_report(report: dict) -> str:
    """The report of :func:`audit_json` for people, as `monitor audit` prints it."""
    lines: list[str] = []
    who = ", ".join(f"{k} {report[k]}" for k in ("patient", "operator", "room") if report.get(k))
    lines.append(f"session {report['session']}" + (f" ({who})" if who else ""))
    lines += [f"SOURCE WARNING: {w}" for w in report.get("source_warnings", [])]
    for level in report["levels"]:
        name = level["level"] or NOT_RECORDED
        volume = volume_phrase(level)
        syringe = "" if level["syringe_ml"] is None else f" (syringe {level['syringe_ml']:.2f} mL)"
        closest = "n/a" if level["min_distance_mm"] is None else f"{level['min_distance_mm']:.1f} mm"
        lines.append(
            f"level {name}: volume {volume}{syringe}, closest to the wall {closest}, "
            f"{len(level['alarms'])} alarm(s)"
        )
        for a in level["alarms"]:
            where = f" ({a['site']})" if a["site"] else ""
            dist = "" if a["distance_mm"] is None else f" at {a['distance_mm']:.1f} mm"
            after = _reaction_phrase(a)
            alarm = f"{a['priority']:6} {a['kind']}{where}{dist}" + (
                f" [{a['reason']}]" if a.get("reason") else ""
            )
            lines.append(f"  ALARM frame {a['frame']:4d} {a['plane']:7} {alarm}{after}")
        for e in level.get("wall", []):
            lines.append(f"  WALL  {_stream_time(e)}{e['source']}: {e['event']}: {e['detail']}")
        for e in level.get("operator_events", []):  # how the level's leaks were judged: said
            if e["event"] == "cleft":
                lines.append(f"  CLEFT {_stream_time(e)}{e['source']}: {e['detail']}")
        for e in level.get("processing", []):
            lines.append(f"  IMAGE {e['detail']}")
        for e in level.get("views", []):
            lines.append(f"  VIEW  {_stream_time(e)}{e['source']}: {e['event']}: {e['detail']}")
        for e in level.get("volume_events", []):
            lines.append(f"  VOLUME {_stream_time(e)}{e['source']}: {e['detail']}")
        for c in level.get("caveats", []):
            span = (
                f"frames {c['first_frame']}-{c['last_frame']} ({_seconds(c)})"
                if c["frames"] > 1
                else f"frame {c['first_frame']} ({_seconds(c)})"
            )
            lines.append(f"  NOTE  {span} {c['plane']} ({c['frames']}): {c['status']}")
    for level in report["levels"]:
        m, name = level["monitoring"], level["level"] or NOT_RECORDED
        if m["monitored"] is False:
            lines.append(f"NOT MONITORED: level {name}: " + "; ".join(m["reasons"]))
        elif m["monitored"] is None:
            lines.append(f"level {name}: this log does not say which frames were checked")
    if not report["levels"]:
        lines.append("NOT MONITORED: no frame was analysed")
    if report.get("stopped_early"):
        lines.append(f"STOPPED EARLY: {stopped_early_phrase(report['stopped_early'])}")
    if not report["complete"]:
        lines.append("INCOMPLETE: " + "; ".join(report["problems"]))
    return "\n".join(lines)


def stopped_early_phrase(unsent: dict[str, int]) -> str:
    """What a record of a recording not sent to its end covers, from ``unsent`` (plane -> frames
    not sent): stopped (Ctrl-C, a service's stop), or the source ended early."""
    return (
        f"the recording was not sent to its end ({unsent_phrase(unsent)}: the run was stopped, or"
        " the source ended early): this record covers only the part sent"
    )


def audit_exit_code(report: dict) -> int:
    """0: complete and monitored; 3: the log is incomplete or fails its integrity check;
    4: complete, but a level was NOT MONITORED (its safety rules unevaluated on too many frames);
    5: complete and monitored, but of a recording not sent to its end (STOPPED EARLY: the SR
    says PARTIAL; a script checking the status saw 0 for a record of half a procedure)."""
    if not report["complete"]:
        return 3
    if report["monitored"] is False:
        return 4
    return 5 if report.get("stopped_early") else 0
