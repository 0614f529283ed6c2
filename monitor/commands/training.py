"""``monitor train``: a training replay with the alarms hidden (``monitor.training``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from monitor.commands.options import speed
from monitor.errors import MonitorError


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="training replay: alarms hidden, press STOP; compared with the monitor's alarms at the end",
    )
    p.add_argument("case", type=Path, help="a recording folder (lateral.dcm, ap.dcm) or a logged session")
    p.add_argument("--trainee", default=None, help="name kept in the training log")
    p.add_argument(
        "--out", type=Path, default=Path("training"), help="training sessions and training-log.jsonl"
    )
    p.add_argument("--speed", type=speed, default=1.0, help="replay speed (default %(default)s)")
    p.add_argument("--close-when-done", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from monitor.io.sources import DicomPairSource, SessionSource
    from monitor.io.store import DB_NAME
    from monitor.training import run_training

    if (args.case / DB_NAME).exists():
        source = SessionSource(args.case)
    elif (args.case / "lateral.dcm").exists():
        ap = args.case / "ap.dcm"
        source = DicomPairSource(args.case / "lateral.dcm", ap if ap.exists() else None)
    else:
        raise MonitorError(f"{args.case}: neither a session nor a folder with lateral.dcm (and ap.dcm)")
    try:
        entry = run_training(source, str(args.case), args.out, args.trainee, args.speed, args.close_when_done)
    finally:
        source.close()
    for result in entry.get("results", []):
        print(f"level {result['level'] or '?'}:")
        for line in result["verdict"]:
            print(f"  {line}")
        for stop in result["stops"]:
            past = stop.get("ml_past_5mm_line")
            leak = stop.get("ml_after_leak")
            print(
                f"  STOP at frame {stop['frame']}: "
                + (f"{past:.2f} mL past the 5 mm line" if past else "no cement past the 5 mm line")
                + (f", {leak:.2f} mL after the leak began" if leak else "")
            )
    print(f"logged in {args.out / 'training-log.jsonl'}")
    return 0
