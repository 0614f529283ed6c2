"""``monitor train``: a training replay with the alarms hidden, and a trainee's progress
(``--report``) over the training log (``monitor.training``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.commands.options import positive_int, speed
from monitor.errors import MonitorError

REPORT_ONLY = ("json",)  # options of --report alone
CASE_ONLY = ("trainee", "level")  # options of a replay alone


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="training replay: alarms hidden, press STOP; compared with the monitor's alarms at the end",
        description="Replay CASE to a trainee with the measurements and alarms hidden and one STOP "
        "button; at the end the presses are compared with the monitor's own alarms, shown and "
        "appended to OUT/training-log.jsonl. With --report TRAINEE instead of CASE: that trainee's "
        "progress over the training log.",
    )
    p.add_argument(
        "case", type=Path, nargs="?", help="a recording folder (lateral.dcm, ap.dcm) or a logged session"
    )
    p.add_argument("--trainee", default=None, help="name kept in the training log")
    p.add_argument(
        "--level",
        default=None,
        help="the case's vertebral level, e.g. L1 (default: from the session log, the manifest's "
        "entry for the case, or the DICOM descriptions; else 'level not recorded')",
    )
    p.add_argument(
        "--out", type=Path, default=Path("training"), help="training sessions and training-log.jsonl"
    )
    p.add_argument("--speed", type=speed, default=1.0, help="replay speed (default %(default)s)")
    p.add_argument(
        "--planes-start-together",
        action="store_true",
        help="pair a case's lateral and AP runs from their first frames, whatever their headers"
        " say of when each began (as monitor replay's option)",
    )
    p.add_argument(
        "--report",
        metavar="TRAINEE",
        help="no replay: TRAINEE's sessions in OUT/training-log.jsonl, first stop against the monitor's "
        "alarm per case, counts of early, late and never, and the trend",
    )
    p.add_argument("--json", action="store_true", help="with --report: print the report as JSON")
    p.add_argument(
        "--trend",
        type=positive_int,
        default=3,
        metavar="N",
        help="with --report: the trend compares the first N cases with an alarm against the last N",
    )
    p.add_argument("--close-when-done", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=_run_train)


def _run_train(args) -> int:
    if args.report is not None:
        return _run_report(args)
    if args.case is None:
        raise MonitorError("give a CASE to replay, or --report TRAINEE")
    given = [name for name in REPORT_ONLY if getattr(args, name)]
    if given:
        raise MonitorError(f"{', '.join('--' + n for n in given)}: only with --report")
    from monitor.io.sources import DicomPairSource, SessionSource
    from monitor.io.store import DB_NAME
    from monitor.training import case_level, run_training

    if (args.case / DB_NAME).exists():
        source = SessionSource(args.case)
    elif (args.case / "lateral.dcm").exists():
        ap = args.case / "ap.dcm"
        source = DicomPairSource(
            args.case / "lateral.dcm",
            ap if ap.exists() else None,
            planes_start_together=args.planes_start_together,
        )
    else:
        raise MonitorError(f"{args.case}: neither a session nor a folder with lateral.dcm (and ap.dcm)")
    if args.speed == 0:
        raise MonitorError("--speed 0 replays as fast as the machine can: give a speed a trainee can follow")
    for warning in getattr(source, "warnings", ()):  # what the case's files do not say
        print(f"warning: {warning}", file=sys.stderr)
    level = case_level(args.case, args.level)
    try:
        entry = run_training(
            source,
            str(args.case),
            args.out,
            args.trainee,
            args.speed,
            args.close_when_done,
            level=level,
            say=lambda message: print(message, file=sys.stderr),
        )
    finally:
        source.close()
    for result in entry.get("results", []):
        said = f"level {result['level']}" if result["level"] else level.label
        if result["level"] == level.level:  # where it was read, or why it is not known
            said += f" ({'from ' if level.level else ''}{level.source})"
        print(f"{said}:")
        for line in result["verdict"]:
            print(f"  {line}")
        for stop in result["stops"]:
            past = stop.get("ml_past_5mm_line")
            leak = stop.get("ml_after_leak")
            at = "time not known" if stop["time_s"] is None else f"{stop['time_s']:.2f} s"
            volume = "" if stop.get("volume_ml") is None else f", {stop['volume_ml']:.2f} mL in"
            print(
                f"  STOP at {at}{volume}: "
                + (f"{past:.2f} mL past the 5 mm line" if past else "no cement past the 5 mm line")
                + (f", {leak:.2f} mL after the leak began" if leak else "")
            )
    print(f"logged in {args.out / 'training-log.jsonl'}")
    return 0


def _run_report(args) -> int:
    import json

    from monitor.training import read_training_log, report_text, trainee_report

    if args.case is not None:
        raise MonitorError("--report reads the training log: give no CASE with it")
    given = [name for name in CASE_ONLY if getattr(args, name)]
    if given:
        raise MonitorError(f"{', '.join('--' + n for n in given)}: only with a CASE to replay")
    log = args.out / "training-log.jsonl"
    entries, unreadable = read_training_log(log)
    report = trainee_report(entries, args.report, args.trend)
    if args.json:
        print(json.dumps(report | {"log": str(log), "unreadable_lines": unreadable}, indent=1))
    else:
        print(report_text(report, log))
    if unreadable:
        print(f"{log}: {unreadable} line(s) could not be read and were left out", file=sys.stderr)
    return 0
