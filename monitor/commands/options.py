"""What several commands share: argument types, the help formatter that shows defaults,
the options of a streaming run and of a process attached to one, and their endpoints."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _finite_within(text: str, low: float, high: float, said: str) -> float:
    """``text`` as a finite number from ``low`` to ``high``, else the argparse error "must be
    ``said``, got ``text``" (a float() that fails is argparse's own "invalid value")."""
    value = float(text)
    if not (math.isfinite(value) and low <= value <= high):
        raise argparse.ArgumentTypeError(f"must be {said}, got {text}")
    return value


def vertebral_level(text: str) -> str:
    """A vertebral level as the session log and the QA summary group by it: C1-C7, T1-T12, L1-L6
    (a sixth lumbar where the spine has one) or S1, in capitals ("l1" is L1). Any text had been
    logged as a level ("XYZ": an independent test), which the summary then counted apart."""
    from monitor.messages import VERTEBRAL_LEVEL  # the wire's rule (imported when used: --help stays quick)

    level = text.strip().upper()
    if not VERTEBRAL_LEVEL.fullmatch(level):
        raise argparse.ArgumentTypeError(f"{text!r} is no vertebral level: give C1-C7, T1-T12, L1-L6 or S1")
    return level


def positive_float(text: str) -> float:
    """A finite number over 0."""
    return _finite_within(text, math.ulp(0.0), math.inf, "a number over 0")


def syringe_ml(text: str) -> float:
    """A syringe's volume in mL: 0 (none) or a finite positive volume up to 20 mL."""
    return _finite_within(text, 0, 20, "0 or a volume up to 20 mL")


def speed(text: str) -> float:
    """A replay speed: 0 (as fast as the consumers take it) or a finite positive factor."""
    return _finite_within(text, 0, 1000, "0 or a factor up to 1000")


def frame_rate(text: str) -> float:
    """A frame rate (frames/s) a C-arm or grabber can run at: those a recording's own timing is
    held to (monitor.io.sources.PLAUSIBLE_FRAME_RATE). A negative one ran the clock backwards
    (alarms 27 frames late, times negative in the audit), 0 was ignored without a word, and 1e9
    logged a session the audit could not read (an independent test)."""
    from monitor.io.sources import PLAUSIBLE_FRAME_RATE

    low, high = PLAUSIBLE_FRAME_RATE
    return _finite_within(text, low, high, f"{low:g} to {high:g} frames/s")


def stale_ms(text: str) -> float:
    """The watchdog's delay: a finite number of milliseconds, 10 ms to 10 minutes."""
    return _finite_within(text, 10, 600_000, "10 to 600000 ms")


def kill_count(text: str) -> int:
    """How many times ``monitor bench restart`` kills the analyzer: 1 to 100."""
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be 1 to 100, got {text}")
    return value


def kill_interval_s(text: str) -> float:
    """Seconds between ``monitor bench restart``'s kills: a finite 1 to 600."""
    return _finite_within(text, 1, 600, "1 to 600 seconds")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says what it is
    (an option without a value, or one whose default is explained in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default is None
            or action.default is False
            or action.default is argparse.SUPPRESS
            or isinstance(action, argparse._StoreConstAction)
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Parsers and subparsers alike show their options' defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_stream_options(p, session_help: str) -> None:
    p.add_argument("--session", type=Path, metavar="DIR", help=session_help)
    p.add_argument(
        "--level",
        type=vertebral_level,
        default=None,
        help="vertebral level being treated: C1-C7, T1-T12, L1-L6, S1",
    )
    p.add_argument(
        "--headless", action="store_true", help="no viewer window: source, analyzer and logger only"
    )
    p.add_argument(
        "--or-mode",
        action="store_true",
        help="the viewer full screen, its banner and readouts legible from 2 m (the operating room)",
    )
    p.add_argument(
        "--publish-only",
        action="store_true",
        help="only publish frames; analyzers and viewers attach on their own",
    )
    own = (
        "(default: an IPC endpoint of this run's own in the user's private runtime directory,"
        " where monitor view and analyze find it; every endpoint is CURVE-authenticated, see"
        " monitor keys)"
    )
    p.add_argument("--frames-endpoint", help=f"ZeroMQ endpoint the frames are published on {own}")
    p.add_argument("--results-endpoint", help="ZeroMQ endpoint of the analyzer's results (as above)")
    p.add_argument("--flow-endpoint", help="ZeroMQ endpoint for consumer readiness and acks (as above)")
    p.add_argument("--control-endpoint", help="ZeroMQ endpoint the analyzer takes commands on (as above)")
    p.add_argument(
        "--stale-ms",
        type=stale_ms,
        default=1000.0,
        help="report the stream stale after this long without a new frame (ms; default %(default)s)",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="PROFILE",
        help="calibration profile (calibration/*.json): scale, distortion, video layout, cement attenuation",
    )
    p.add_argument(
        "--unmeasured",
        action="store_true",
        help="stream and log even when a plane has no millimetre scale (no DICOM geometry, no"
        " --calibration): nothing is measured and every level is NOT MONITORED; without it such a"
        " run is refused",
    )
    p.add_argument(
        "--wall",
        type=_wall_points,
        metavar="X1,Y1,X2,Y2",
        help="the posterior wall on the lateral image, two points (cranial, caudal) in image pixels:"
        " replaces the wall found (or stands in for a body not found) and is tracked with breathing",
    )
    p.add_argument(
        "--body",
        type=_body_box,
        action="append",
        metavar="PLANE:X,Y,W,H",
        help="the vertebral body as a box in that plane's image pixels (lateral or ap; repeat for"
        " both): replaces the outline found (or stands in for one not found), tracked with breathing",
    )
    p.add_argument(
        "--cleft",
        action="store_true",
        help="the first level has an intravertebral (gas) cleft seen on the images before the procedure"
        " (Kuemmell's disease): cement above or below the bolus where no body outline is armed is then"
        " only a possible disc leak, as it may be filling the cleft; without it, such cement seen in"
        " both views is a disc leak (high). Later levels: the viewer's Known cleft (the analyzer's"
        " 'cleft' command). A replay of a logged session keeps this, not a cleft set live",
    )
    p.add_argument("--patient", help="pseudonymous patient reference, for the session log")
    p.add_argument("--operator", help="who injects, for the session log and the QA summary")
    p.add_argument("--room", help="room or C-arm, for the session log")


def _wall_points(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the wall as X1,Y1,X2,Y2 (pixels)") from None
    return (x1, y1), (x2, y2)


def _body_box(text: str) -> tuple[str, tuple[float, float, float, float]]:
    plane, _, box = text.partition(":")
    try:
        x, y, w, h = (float(v) for v in box.split(","))
    except ValueError:
        x = y = w = h = None
    if plane not in ("lateral", "ap") or w is None or w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the body as PLANE:X,Y,W,H, e.g. lateral:120,140,200,150 (pixels)"
        )
    return plane, (x, y, w, h)


def given_endpoints(args) -> dict[str, str]:
    """The endpoints given on the command line, by role."""
    roles = ("frames", "results", "flow", "control")
    return {role: value for role in roles if (value := getattr(args, f"{role}_endpoint", None))}


def own_endpoints(args):
    """A streaming run's endpoints: those given, and IPC endpoints of its own in the user's
    private runtime directory for the others (never the shared TCP defaults, where two
    monitors would meet). Registered for ``view`` and ``analyze`` to find (True)."""
    from monitor.io.runs import private_endpoints
    from monitor.pipeline import Endpoints

    return Endpoints(**{**private_endpoints(), **given_endpoints(args)}), True


def attached_endpoints(args):
    """What ``view`` and ``analyze`` attach to: the endpoints given, and for the others those
    of the monitor running on this machine (``--run PID`` when there are several; an error
    naming them rather than a guess), or the TCP defaults when no monitor runs here."""
    from monitor.io.runs import attach
    from monitor.io.runs import running as running_monitors
    from monitor.pipeline import Endpoints

    given = given_endpoints(args)
    roles = ("frames", "results", "flow", "control")
    if len(given) == len(roles) or (given and args.run_pid is None and not running_monitors()):
        running = {}  # all given; or no monitor here: the TCP defaults for the others
    else:  # a --run PID that is not running, or several and no --run: said, never guessed
        running = attach(args.run_pid)
    default = Endpoints()
    return Endpoints(*(given.get(r) or running.get(r) or getattr(default, r) for r in roles))


def add_attach_options(p, control_help: str) -> None:
    p.add_argument(
        "--run",
        dest="run_pid",
        type=int,
        metavar="PID",
        help="the monitor to attach to when several run on this machine (default: the only one)",
    )
    running = "(default: the running monitor's)"
    p.add_argument("--frames-endpoint", help=f"ZeroMQ endpoint the frames come from {running}")
    p.add_argument("--results-endpoint", help=f"ZeroMQ endpoint of the analyzer's results {running}")
    p.add_argument("--flow-endpoint", help=f"the source's endpoint for readiness and acks {running}")
    p.add_argument("--control-endpoint", help=f"{control_help} {running}")
