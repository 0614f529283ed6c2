"""Training replay: practise the stop decision on recorded cases (``monitor train``).

The case is replayed through the whole monitor, logged like any session, but
the trainee's view hides the measurements and the alarms and shows one STOP
button. At the end each press is compared with the monitor's own alarms on
the same case: how many seconds early or late, and how much cement went in
past the 5 mm line or after the leak began; the lateral frame where the
monitor alarmed is shown beside the one where the trainee stopped. Results are
appended to a training log (JSON lines) so progress can be followed
(``monitor train --report TRAINEE``).

Times are seconds from the first frame of the run that began first (a source's ``acq_time``, the
audit's ``time_s``); volumes are the monitor's estimate of the cement injected
at that moment (mL). Frame indices stay in the log for programs; people are told
seconds and mL.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from monitor.audit import NOT_RECORDED, audit_json
from monitor.errors import MonitorError
from monitor.io.store import DB_NAME, SessionStore
from monitor.messages import LEVELS

LEVEL_NOT_RECORDED = "level not recorded"
# The DICOM attributes where a site writes the treated level ("VERTEBROPLASTY L1"), in the
# order they are believed: the series is the run itself, the study and the procedure may
# cover several levels.
LEVEL_TAGS = (
    "SeriesDescription",
    "ImageComments",
    "PerformedProcedureStepDescription",
    "RequestedProcedureDescription",
    "StudyDescription",
    "ProtocolName",
)
# a level as a word of its own ("VP_L1" too), not one end of a span ("L4/5", "L5-S1", "T12-L1")
_LEVEL_WORD = re.compile(
    r"(?<![A-Za-z0-9/-])("
    + "|".join(sorted(LEVELS, key=len, reverse=True))
    + r")(?![A-Za-z0-9]|[/-][A-Za-z0-9])",
    re.IGNORECASE,
)
TREND_SESSIONS = 3  # the report's trend: the first N sessions with an alarm against the last N


# ---------------------------------------------------------------------- the case's level


@dataclass(frozen=True)
class CaseLevel:
    """The vertebral level of a training case and where it was read (for the log and the
    screen); ``level`` None when the case does not say, ``source`` then says what was read."""

    level: str | None
    source: str

    @property
    def label(self) -> str:
        """ "level L1", or "level not recorded": never "level ?"."""
        return f"level {self.level}" if self.level else LEVEL_NOT_RECORDED


def case_level(case: Path, given: str | None = None) -> CaseLevel:
    """The level of ``case`` (a recording folder or a logged session), from the first that
    says it: the command line (``given``), the session log's meta, the ``level`` of the case's
    entry in the manifest.json beside it (an instructor's training set), the DICOM headers'
    descriptions (LEVEL_TAGS). A header naming two levels is not guessed from."""
    if given:
        if given.strip().upper() not in LEVELS:
            raise MonitorError(f"--level {given!r} is not a vertebral level ({LEVELS[0]}-{LEVELS[-1]})")
        return CaseLevel(given.strip().upper(), "the command line")
    if (case / DB_NAME).exists():
        store = SessionStore.open(case)
        try:
            logged = store.meta().get("level")
        finally:
            store.close()
        if logged:
            return CaseLevel(str(logged), "the session log")
        return CaseLevel(None, "the session log does not say")
    manifest = case.parent / "manifest.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text()).get("recordings", [])
        except (OSError, ValueError, AttributeError):
            entries = []
        named = next((e for e in entries if isinstance(e, dict) and e.get("name") == case.name), {})
        if str(named.get("level", "")).upper() in LEVELS:
            return CaseLevel(str(named["level"]).upper(), f"{manifest}")
    return _dicom_level(case)


def _dicom_level(case: Path) -> CaseLevel:
    import pydicom

    headers = []
    for plane in ("lateral", "ap"):
        path = case / f"{plane}.dcm"
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(LEVEL_TAGS))
        except Exception:  # an unreadable header says no level; the replay names the problem
            continue
        headers.append((path, ds))
    for tag in LEVEL_TAGS:  # in the order they are believed: the first that names a level decides
        found: dict[str, str] = {}  # level -> where
        for path, ds in headers:
            text = str(ds.get(tag, "") or "")
            for word in _LEVEL_WORD.findall(text):
                found.setdefault(word.upper(), f"DICOM {tag} of {path.name}: {text!r}")
        if len(found) == 1:
            ((level, where),) = found.items()
            return CaseLevel(level, where)
        if found:  # two levels where the level is written: not guessed from
            return CaseLevel(None, f"the DICOM {tag} names {', '.join(sorted(found))}")
    return CaseLevel(None, "no level in the DICOM descriptions, the manifest or the command line")


# ---------------------------------------------------------------------- scoring


def _about(name: str, alarm: dict) -> str:
    """What the monitor's alarm ``name`` ("proximity" or "leak") is about: "5 mm line",
    "posterior leak"."""
    if name == "proximity":
        return "5 mm line"
    return f"{alarm['site']} leak" if alarm.get("site") else "leak"


def score_training(stops: list[int], level: dict) -> dict:
    """Compare stop presses (lateral frame indices) with the monitor's alarms for one level.

    ``level`` is a level of the audit report (alarms, and frames with times and volumes). The
    reference is the first high-priority alarm of each kind: the 5 mm line ("proximity") and a
    leak. Per stop: frames and seconds after each (negative: before), and mL injected past the
    line or after the leak began (0 when stopped in time). ``verdict``: one line per alarm
    about the first stop, in seconds and mL. ``end``: the case's last moment, for the trainee
    who never stopped.
    """
    rows = level["frames"]
    times = {f["frame"]: f["time_s"] for f in rows}
    measured = [(f["time_s"], f["volume_ml"]) for f in rows if f["volume_ml"] is not None]

    def volume_at(t: float | None) -> float | None:
        known = [v for at, v in measured if t is not None and at <= t + 1e-6]
        return known[-1] if known else None

    def first(kind: str, priority: str = "high") -> dict | None:
        found = [a for a in level["alarms"] if a["kind"] == kind and a["priority"] == priority]
        return min(found, key=lambda a: a["frame"]) if found else None

    references = {"proximity": first("proximity"), "leak": first("extravasation")}
    alarms = {
        name: None
        if a is None
        else {
            "frame": a["frame"],
            "site": a["site"],
            "time_s": round(a["time_s"], 3),
            "volume_ml": volume_at(a["time_s"]),
        }
        for name, a in references.items()
    }
    scored = []
    for stop in stops:
        t = times.get(stop)
        row = {"frame": stop, "time_s": None if t is None else round(t, 3), "volume_ml": volume_at(t)}
        for name, alarm in alarms.items():
            if alarm is None:
                row[f"frames_after_{name}"] = None
                row[f"seconds_after_{name}"] = None
                continue
            late = stop - alarm["frame"]
            row[f"frames_after_{name}"] = late
            row[f"seconds_after_{name}"] = None if t is None else round(t - alarm["time_s"], 3)
            v_stop, v_alarm = row["volume_ml"], alarm["volume_ml"]
            past = round(max(0.0, v_stop - v_alarm), 3) if late > 0 and None not in (v_stop, v_alarm) else 0.0
            row["ml_past_5mm_line" if name == "proximity" else "ml_after_leak"] = past
        scored.append(row)
    last = rows[-1] if rows else None
    result = {
        "level": level["level"],
        "monitor_alarms": alarms,
        "stops": scored,
        "end": None
        if last is None
        else {
            "frame": last["frame"],
            "time_s": round(last["time_s"], 3),
            "volume_ml": volume_at(last["time_s"]),
        },
        "min_distance_mm": level.get("min_distance_mm"),
    }
    return result | {"verdict": _verdict(result)}


def _moment(at: dict | None) -> str:
    """A moment of the case as people are told it: seconds from the start, mL injected ("2.00 s,
    1.80 mL")."""
    if at is None or at.get("time_s") is None:
        return "time not known"
    volume = "volume not measured" if at.get("volume_ml") is None else f"{at['volume_ml']:.2f} mL"
    return f"{at['time_s']:.2f} s, {volume}"


def _verdict(result: dict) -> list[str]:
    """One line per monitor alarm about the trainee's first stop, in seconds and mL."""
    stop = result["stops"][0] if result["stops"] else None
    lines = []
    for name, alarm in result["monitor_alarms"].items():
        if alarm is None:
            continue
        what = f"the {_about(name, alarm)}"
        if stop is None:
            lines.append(f"never stopped: the monitor alarmed for {what} at {_moment(alarm)}")
            continue
        seconds, frames = stop[f"seconds_after_{name}"], stop[f"frames_after_{name}"]
        after = f"{seconds:.2f} s" if seconds is not None else f"{frames} frame(s)"
        before = f"{-seconds:.2f} s" if seconds is not None else f"{-frames} frame(s)"
        if frames < 0:
            lines.append(f"stopped {before} before the monitor's alarm for {what}")
        elif frames == 0:
            lines.append(f"stopped with the monitor's alarm for {what} (the same frame)")
        else:
            ml = stop["ml_past_5mm_line" if name == "proximity" else "ml_after_leak"]
            past = "past the line" if name == "proximity" else "after the leak began"
            lines.append(f"stopped {after} after the monitor's alarm for {what}: {ml:.2f} mL {past}")
    if not lines:
        lines.append("the monitor raised no high-priority alarm on this case")
        if stop is not None:
            lines.append(f"you stopped at {_moment(stop)}")
    return lines


# ---------------------------------------------------------------------- what the trainee sees


@dataclass(frozen=True)
class KeyFrame:
    """One picture of the verdict: a lateral frame of the case and what it shows.

    ``role``: "monitor" (where the monitor alarmed: where to stop) or "trainee" (where the
    trainee stopped, or the case's end when they never did). ``frame``: the lateral frame index,
    None when there is nothing to show. ``tone``: the caption's colour, "alarm", "good", "bad"
    or "neutral". ``image``: RGB uint8 with the monitor's overlay, once read (with_pictures)."""

    role: str
    frame: int | None
    caption: str
    tone: str
    image: np.ndarray | None = None


def _first_alarm(result: dict) -> tuple[str, dict] | tuple[None, None]:
    said = [(name, a) for name, a in result["monitor_alarms"].items() if a is not None]
    if not said:
        return None, None
    return min(said, key=lambda na: (na[1].get("time_s", 0.0), na[1]["frame"]))


def key_frames(result: dict) -> list[KeyFrame]:
    """The monitor's frame and the trainee's, captioned in seconds and mL (``result`` from
    :func:`score_training`): "Monitor alarmed (5 mm line): 1.33 s, 1.05 mL" beside "You
    stopped: 2.00 s, 1.80 mL: 0.67 s and 0.75 mL late". The monitor's is its first
    high-priority alarm; without one, the case's end. The trainee's is their first press; without
    one, the case's end, with how far the injection ran on."""
    name, alarm = _first_alarm(result)
    stop = result["stops"][0] if result["stops"] else None
    end = result.get("end")
    end_frame = end["frame"] if end else None
    if alarm is None:
        closest = result.get("min_distance_mm")
        stayed = f" (closest {closest:.1f} mm from the wall)" if closest is not None else ""
        said = f"Monitor: no high-priority alarm{stayed}. End: {_moment(end)}"
        monitor = KeyFrame("monitor", end_frame, said, "neutral")
    else:
        said = f"Monitor alarmed ({_about(name, alarm)}): {_moment(alarm)}"
        monitor = KeyFrame("monitor", alarm["frame"], said, "alarm")
    if stop is None and alarm is None:
        trainee = KeyFrame(
            "trainee", None, "You did not press STOP: nothing on this case called for it", "good"
        )
    elif stop is None:
        ran_on = ""
        if end and None not in (end.get("volume_ml"), alarm.get("volume_ml")):
            ran_on = f" ({max(0.0, end['volume_ml'] - alarm['volume_ml']):.2f} mL after the alarm)"
        said = f"You never pressed STOP: the injection ran on to {_moment(end)}{ran_on}"
        trainee = KeyFrame("trainee", end_frame, said, "bad")
    elif alarm is None:
        trainee = KeyFrame("trainee", stop["frame"], f"You stopped: {_moment(stop)}", "neutral")
    else:
        frames, seconds = stop[f"frames_after_{name}"], stop[f"seconds_after_{name}"]
        apart = f"{abs(seconds):.2f} s" if seconds is not None else f"{abs(frames)} frame(s)"
        if frames > 0:
            ml = stop["ml_past_5mm_line" if name == "proximity" else "ml_after_leak"]
            said, tone = f"{apart} and {ml:.2f} mL late", "bad"
        else:
            said, tone = ("with the alarm" if frames == 0 else f"{apart} before the alarm"), "good"
        trainee = KeyFrame("trainee", stop["frame"], f"You stopped: {_moment(stop)}: {said}", tone)
    return [monitor, trainee]


def with_pictures(store: SessionStore, frames: list[KeyFrame], side: int = 512) -> list[KeyFrame]:
    """``frames`` with their lateral images read back from the session log, windowed alike (on the
    case's first frame, before any cement) and with the monitor's overlay and distance drawn,
    ``side`` pixels on their longer side. A frame the log does not hold keeps no image."""
    from monitor.display import auto_window, to_display
    from monitor.overlay import draw

    recorded: dict[int, object] = {}
    for r in store.records("frame", plane="lateral"):  # a resent frame is logged only if not held
        recorded.setdefault(r.frame, r)
    if not recorded:
        return frames
    window = auto_window(store.image(next(iter(recorded.values())).rec).astype(np.float32))
    results = {r.frame: r.body for r in store.records("result", plane="lateral")}
    shown = []
    for k in frames:
        record = recorded.get(k.frame) if k.frame is not None else None
        if record is None:
            shown.append(k)
            continue
        display = to_display(store.image(record.rec), record.body["photometric"], window)
        # the distance drawn, not the volume: the caption says the volume, as the verdict counts it
        result = {**results.get(k.frame, {}), "status": "ok", "volume_ml": None}
        bgr = draw(display, result, scale=side / max(display.shape))
        shown.append(replace(k, image=np.ascontiguousarray(bgr[:, :, ::-1])))
    return shown


def score_session(store: SessionStore, stops: list[int]) -> tuple[list[dict], list[KeyFrame]]:
    """The presses (lateral frame indices) scored per level of the logged case (score_training),
    and the key frames of the first level the monitor alarmed on (else the first), with their
    pictures."""
    report = audit_json(store, verify_images=False)
    results = [score_training(stops, lv) for lv in report["levels"]]
    shown = next((r for r in results if any(r["monitor_alarms"].values())), results[0] if results else None)
    return results, with_pictures(store, key_frames(shown)) if shown else []


def stop_confirmation(count: int, at_s: float | None) -> tuple[str, str]:
    """What the STOP button says for a moment after a press, and the count beside it."""
    at = f" at {at_s:.1f} s" if at_s is not None else ""
    return f"STOP recorded{at}", f"{count} STOP press{'es' if count != 1 else ''} recorded"


def training_status(ended: str | None, stale_s: float | None, lateral) -> str:
    """The training view's status line: where the case is (seconds from its start), a stream
    gone quiet, or its end; never the analysis (``lateral``: the view's PlaneState)."""
    if ended:
        return f"{ended}: your STOP presses are being scored against the monitor's alarms ..."
    if stale_s is not None:
        return f"NO SIGNAL: no frame for {stale_s:.1f} s"
    if lateral.pixels is None:
        return "waiting for the case's first frames ..."
    return f"case at {lateral.acq_time:.1f} s: press STOP where you would stop injecting"


def verdict_lines(entry: dict) -> list[str]:
    """The verdict of a training log entry for the screen: per level a heading, then its lines."""
    lines = []
    for result in entry.get("results", []):
        label = f"level {result['level']}" if result.get("level") else LEVEL_NOT_RECORDED
        lines.append(f"Case over, {label}:")
        lines += [f"\u2022 {line[:1].upper()}{line[1:]}" for line in result["verdict"]]
    return lines


# ---------------------------------------------------------------------- the training log


def append_training_log(log: Path, entry: dict) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def read_training_log(log: Path) -> tuple[list[dict], int]:
    """The log's entries, and how many lines could not be read (a line cut short by a crash)."""
    if not log.is_file():
        raise MonitorError(f"{log}: no training log (no case has been trained with this --out)")
    entries, unreadable = [], 0
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            unreadable += bool(line.strip())
            continue
        if isinstance(entry, dict) and isinstance(entry.get("results"), list):
            entries.append(entry)
        else:
            unreadable += 1
    return entries, unreadable


def trainee_report(entries: list[dict], trainee: str, trend_n: int = TREND_SESSIONS) -> dict:
    """A trainee's sessions from the training log: per case and date the first stop against the
    monitor's first high-priority alarm (seconds, mL past the 5 mm line and after the leak),
    counts of stops early (at or before the alarm), late and never, and the trend: the median
    lateness of the first ``trend_n`` sessions with an alarm against the last ``trend_n`` (fewer
    when there are not 2 x ``trend_n``). Sessions logged without a trainee are "not recorded"'s.
    Raises MonitorError when the trainee has no session."""
    mine = [e for e in entries if (e.get("trainee") or NOT_RECORDED) == trainee]
    mine.sort(key=lambda e: e.get("time", 0.0))
    if not mine:
        known = sorted({e.get("trainee") or NOT_RECORDED for e in entries})
        raise MonitorError(
            f"no training session of {trainee!r} in the log"
            + (f" (trainees: {', '.join(known)})" if known else " (it holds none)")
        )
    rows = [_report_row(entry, result) for entry in mine for result in entry["results"]]
    counts = {
        kind: sum(r["outcome"] == kind for r in rows) for kind in ("early", "late", "never", "no alarm")
    }
    return {"trainee": trainee, "sessions": rows, "counts": counts, "trend": _trend(rows, trend_n)}


def _case_name(case: Path) -> str:
    """The case as people name it: the recording's folder, or a logged session's (whose own
    folder is always "session")."""
    return case.parent.name if case.name == "session" and case.parent.name else case.name


def _report_row(entry: dict, result: dict) -> dict:
    """One case of the report. A case never stopped counts its cement to the case's end, and is
    at least as late as the case's end (``lateness_s``: the trend's measure)."""
    name, alarm = _first_alarm(result)
    stop = result["stops"][0] if result["stops"] else None
    end = result.get("end")  # absent from logs written before 2026-12, as the seconds are
    row = {
        "date": datetime.datetime.fromtimestamp(entry.get("time", 0.0)).strftime("%Y-%m-%d %H:%M"),
        "case": _case_name(Path(str(entry.get("case")))),
        "session": entry.get("session"),
        "level": result.get("level") or entry.get("level"),
        "alarm": None if alarm is None else _about(name, alarm),
        "alarm_s": None if alarm is None else alarm.get("time_s"),
        "stop_s": None if stop is None else stop.get("time_s"),
        "presses": len(result["stops"]),
        "frames_after_alarm": None if stop is None or alarm is None else stop[f"frames_after_{name}"],
        "seconds_after_alarm": None if stop is None or alarm is None else stop.get(f"seconds_after_{name}"),
        "ml_past_5mm_line": None if stop is None else stop.get("ml_past_5mm_line"),
        "ml_after_leak": None if stop is None else stop.get("ml_after_leak"),
    }
    row["lateness_s"] = row["seconds_after_alarm"]
    if alarm is None:
        row["outcome"] = "no alarm"
    elif stop is None:
        row["outcome"] = "never"
        if end and end.get("time_s") is not None and alarm.get("time_s") is not None:
            row["lateness_s"] = round(end["time_s"] - alarm["time_s"], 3)
        for key, which in (("ml_past_5mm_line", "proximity"), ("ml_after_leak", "leak")):
            start = result["monitor_alarms"].get(which)
            if end and start and None not in (end.get("volume_ml"), start.get("volume_ml")):
                row[key] = round(max(0.0, end["volume_ml"] - start["volume_ml"]), 3)
    else:
        row["outcome"] = "late" if row["frames_after_alarm"] > 0 else "early"
    return row


def _trend(rows: list[dict], n: int) -> dict | None:
    alarmed = [r for r in rows if r["outcome"] != "no alarm"]
    n = min(n, len(alarmed) // 2)
    if n < 1:
        return None

    def window(part: list[dict]) -> dict:
        late = [r["lateness_s"] for r in part if r["lateness_s"] is not None]
        return {
            "sessions": len(part),
            "median_lateness_s": round(statistics.median(late), 3) if late else None,
            "never": sum(r["outcome"] == "never" for r in part),
        }

    return {"first": window(alarmed[:n]), "last": window(alarmed[-n:])}


def report_text(report: dict, log: Path) -> str:
    """:func:`trainee_report` for people, as ``monitor train --report`` prints it."""
    rows = report["sessions"]
    lines = [f"{report['trainee']}: {len(rows)} training case(s) in {log}"]
    lines.append(
        f"{'date':16}  {'case':16}  {'level':12}  {'first stop vs the monitor':44}  past line  after leak"
    )
    for r in rows:
        lines.append(
            f"{r['date']:16}  {r['case'][:16]:16}  {r['level'] or 'not recorded':12}  {_stop_words(r):44}  "
            f"{_ml(r['ml_past_5mm_line']):>9}  {_ml(r['ml_after_leak']):>10}"
        )
    c = report["counts"]
    lines.append(
        f"stopped early {c['early']}, late {c['late']}, never {c['never']} (against the monitor's first"
        f" alarm; early: at or before it; never: the cement to the case's end); {c['no alarm']} case(s)"
        " where the monitor raised none"
    )
    trend = report["trend"]
    if trend is None:
        lines.append("trend: needs at least 2 cases where the monitor alarmed")
    else:
        first, last = trend["first"], trend["last"]
        a, b = first["median_lateness_s"], last["median_lateness_s"]
        change = ""
        if a is not None and b is not None:
            change = f": {abs(a - b):.2f} s {'sooner' if b < a else 'later' if b > a else 'the same'}"
        lines.append(
            f"trend: median stop {_signed(a)} after the alarm over the first {first['sessions']} case(s),"
            f" {_signed(b)} over the last {last['sessions']}{change} (a case never stopped counts to"
            f" its end); never stopped in {first['never']} of the first, {last['never']} of the last"
        )
    return "\n".join(lines)


def _stop_words(r: dict) -> str:
    if r["outcome"] == "no alarm":
        return "no alarm" + (f"; stopped at {r['stop_s']:.2f} s" if r["stop_s"] is not None else "; no stop")
    alarm = f"{r['alarm']} at {r['alarm_s']:.2f} s" if r["alarm_s"] is not None else r["alarm"]
    if r["outcome"] == "never":
        return f"never stopped ({alarm})"
    s, f = r["seconds_after_alarm"], r["frames_after_alarm"]
    amount = f"{abs(s):.2f} s" if s is not None else f"{abs(f)} frame(s)"
    return f"{amount} {'late' if r['outcome'] == 'late' else 'early'} ({alarm})"


def _ml(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} mL"


def _signed(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:+.2f} s"


# ---------------------------------------------------------------------- the replay


def run_training(
    source,
    case: str,
    out: Path,
    trainee: str | None,
    speed: float = 1.0,
    close_when_done: bool = False,
    level: CaseLevel | None = None,
    say=lambda message: None,
) -> dict:
    """Replay ``source`` to a trainee in the training view; score, show and log the stops.

    The window stays open with the result until the trainee closes it (or, with
    ``close_when_done``, closes itself). ``level``: the case's, given to the analyzer and the log.
    ``say``: told, before the replay starts, which of a logged session's live edits are
    re-applied and which are not (whoever runs the case should know what it is measured with).
    """
    from monitor.commands.streaming import replayed_edits
    from monitor.io.sources import SessionSource
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions
    from monitor.viewer import MonitorWindow, pg

    level = level or CaseLevel(None, "not looked for")
    out.mkdir(parents=True, exist_ok=True)
    # its own folder, made new: two trainees starting in the same second never share a session
    session = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=out)) / "session"
    endpoints = Endpoints.private()
    abandoned = threading.Event()  # the window closed before the end: the replay stops, nothing scored
    app = pg.mkQApp("Vertebroplasty monitor - training")
    window = MonitorWindow(
        endpoints.frames, endpoints.results, endpoints.control, training=True, flow_endpoint=endpoints.flow
    )
    window.resize(1400, 1000)
    window.show()
    outcome: dict = {}
    said: list[str] = []

    def replay_and_score():
        # a logged session is measured as it was: its calibration, the command line's wall, boxes
        # and cleft, and the operator's edits made live, each where it came (the monitor's alarms
        # the trainee is scored against are the logged session's); the training session's log
        # keeps them, so that it replays as it ran
        meta: dict = {"trainee": trainee, "case": case}
        analysis, replayed = {}, ()
        if isinstance(source, SessionSource):

            def told(message: str) -> None:
                said.append(message)
                say(message)

            analysis, replayed = source.analysis_settings(), replayed_edits(source, told)
            logged = source.store.meta()
            meta |= {
                k: logged[k]
                for k in ("calibration_settings", "posterior_wall", "body_boxes", "known_cleft")
                if k in logged
            }
        spec = RunSpec(
            str(session), level.level, meta=meta, endpoints=endpoints, analysis=analysis, replayed=replayed
        )
        # the first frame waits for this window to have subscribed: the trainee sees the case whole
        pace = PaceOptions(speed=speed, ready_timeout_s=60, ready_for=("viewer",))
        try:
            outcome["code"] = run(_Abandonable(source, abandoned), spec, pace, say=said.append)
            if abandoned.is_set():
                return
            if outcome["code"] not in (0, 4):  # 4: a level not monitored is the case's, still scored
                last = "; ".join(said[-3:])
                raise MonitorError(f"the case's replay failed (exit {outcome['code']}): {last}")
            time.sleep(0.3)  # presses in flight; the button is disabled once the recording ends
            stops = [frame for _, frame in list(window.stops) if frame is not None]
            store = SessionStore.open(session)
            try:
                results, outcome["key_frames"] = score_session(store, stops)
            finally:
                store.close()
        except Exception as e:  # said on the window and by the command, never a silent "logged"
            outcome["error"] = f"{type(e).__name__}: {e}" if not isinstance(e, MonitorError) else str(e)
            return
        entry = {"time": time.time(), "trainee": trainee, "case": case, "session": str(session)}
        entry |= {"level": level.level, "level_source": level.source}
        outcome["entry"] = entry | {"results": results}
        append_training_log(out / "training-log.jsonl", outcome["entry"])

    worker = threading.Thread(target=replay_and_score, daemon=True)
    pg.QtCore.QTimer.singleShot(0, worker.start)  # once the event loop runs (the window polls)

    def finished():
        if worker.ident is None or worker.is_alive():
            return
        poll.stop()
        lines = verdict_lines(outcome.get("entry", {}))
        why = outcome.get("error", "see the terminal")
        lines = lines or [f"The case could not be scored: {why}"]
        window.show_training_result(lines, outcome.get("key_frames", []))
        if close_when_done:
            window.close()
            app.quit()

    poll = pg.QtCore.QTimer()
    poll.timeout.connect(finished)
    poll.start(200)
    for stop in (signal.SIGINT, signal.SIGTERM):  # closed as the trainee would: not a traceback
        signal.signal(stop, lambda *_: pg.QtCore.QTimer.singleShot(0, window.close))
    app.exec()
    if worker.is_alive():  # closed before the end: the case is abandoned, not scored "never stopped"
        abandoned.set()
    worker.join()
    if abandoned.is_set():
        raise TrainingAbandoned("the window was closed before the end of the case: not scored, not logged")
    if "error" in outcome:
        raise MonitorError(f"the case could not be scored: {outcome['error']}")
    return outcome.get("entry", {})


class TrainingAbandoned(MonitorError):
    """The trainee closed the window before the case ended."""


class _Abandonable:
    """``source`` whose frames stop once ``abandoned`` is set (the training window closed)."""

    def __init__(self, source, abandoned: threading.Event):
        self._source, self._abandoned = source, abandoned

    def __getattr__(self, name):
        return getattr(self._source, name)

    def frames(self):
        for item in self._source.frames():
            if self._abandoned.is_set():
                return
            yield item
