"""Training replay: practise the stop decision on recorded cases (``monitor train``).

The case is replayed through the whole monitor, logged like any session, but
the trainee's view hides the measurements and the alarms and shows one STOP
button. At the end each press is compared with the monitor's own alarms on
the same case: how many frames early or late, and how much cement went in
past the 5 mm line or after the leak began. Results are appended to a
training log (JSON lines) so progress can be followed.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from monitor.audit import audit_json
from monitor.io.store import SessionStore


def score_training(stops: list[int], level: dict) -> dict:
    """Compare stop presses (lateral frame indices) with the monitor's alarms for one level.

    ``level`` is a level of the audit report (alarms, and frames with volumes).
    """
    volumes = {f["frame"]: f["volume_ml"] for f in level["frames"] if f["volume_ml"] is not None}
    times = {f["frame"]: f["time_s"] for f in level["frames"]}

    def volume_at(frame: int) -> float | None:
        known = [f for f in volumes if f <= frame]
        return volumes[max(known)] if known else None

    def first(kind: str, priority: str = "high") -> dict | None:
        found = [a for a in level["alarms"] if a["kind"] == kind and a["priority"] == priority]
        return min(found, key=lambda a: a["frame"]) if found else None

    references = {"proximity": first("proximity"), "leak": first("extravasation")}
    scored = []
    for stop in stops:
        row = {"frame": stop, "time_s": times.get(stop)}
        for name, alarm in references.items():
            if alarm is None:
                row[f"frames_after_{name}"] = None
                continue
            late = stop - alarm["frame"]
            row[f"frames_after_{name}"] = late
            v_stop, v_alarm = volume_at(stop), volume_at(alarm["frame"])
            past = round(max(0.0, v_stop - v_alarm), 3) if late > 0 and None not in (v_stop, v_alarm) else 0.0
            row["ml_past_5mm_line" if name == "proximity" else "ml_after_leak"] = past
        scored.append(row)
    first_stop = stops[0] if stops else None
    verdict = []
    for name, alarm in references.items():
        what = "the 5 mm line" if name == "proximity" else f"the {alarm['site']} leak" if alarm else "a leak"
        if alarm is None:
            continue
        if first_stop is None:
            verdict.append(f"never stopped: the monitor alarmed for {what} at frame {alarm['frame']}")
        elif first_stop <= alarm["frame"]:
            verdict.append(
                f"stopped {alarm['frame'] - first_stop} frame(s) before the monitor's alarm for {what}"
            )
        else:
            verdict.append(
                f"stopped {first_stop - alarm['frame']} frame(s) after the monitor's alarm for {what}"
            )
    return {
        "level": level["level"],
        "monitor_alarms": {
            name: (None if a is None else {"frame": a["frame"], "site": a["site"]})
            for name, a in references.items()
        },
        "stops": scored,
        "verdict": verdict or ["the monitor raised no high-priority alarm on this case"],
    }


def append_training_log(log: Path, entry: dict) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def run_training(
    source, case: str, out: Path, trainee: str | None, speed: float = 1.0, close_when_done: bool = False
) -> dict:
    """Replay ``source`` to a trainee in the training view; score, show and log the stops.

    The window stays open with the result until the trainee closes it (or, with
    ``close_when_done``, closes itself).
    """
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions
    from monitor.viewer import MonitorWindow, pg

    session = out / time.strftime("%Y%m%d-%H%M%S") / "session"
    endpoints = Endpoints.private()
    app = pg.mkQApp("Vertebroplasty monitor - training")
    window = MonitorWindow(endpoints.frames, endpoints.results, endpoints.control, training=True)
    window.resize(1400, 1000)
    window.show()
    outcome: dict = {}

    def replay_and_score():
        spec = RunSpec(str(session), None, meta={"trainee": trainee, "case": case}, endpoints=endpoints)
        outcome["code"] = run(source, spec, PaceOptions(speed=speed, ready_timeout_s=60), say=lambda m: None)
        time.sleep(0.3)  # the last presses
        stops = [frame for _, frame in list(window.stops) if frame is not None]
        store = SessionStore.open(session)
        try:
            report = audit_json(store, verify_images=False)
        finally:
            store.close()
        results = [score_training(stops, level) for level in report["levels"]]
        entry = {"time": time.time(), "trainee": trainee, "case": case, "session": str(session)}
        outcome["entry"] = entry | {"results": results}
        append_training_log(out / "training-log.jsonl", outcome["entry"])

    worker = threading.Thread(target=replay_and_score, daemon=True)
    pg.QtCore.QTimer.singleShot(500, worker.start)  # once the window's subscriptions are up

    def finished():
        if worker.ident is None or worker.is_alive():
            return
        poll.stop()
        lines = [v for r in outcome.get("entry", {}).get("results", []) for v in r["verdict"]]
        window.show_training_result(lines or ["the case could not be scored (see the terminal)"])
        if close_when_done:
            window.close()
            app.quit()

    poll = pg.QtCore.QTimer()
    poll.timeout.connect(finished)
    poll.start(200)
    app.exec()
    worker.join()
    return outcome.get("entry", {})
