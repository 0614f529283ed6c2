"""``monitor view``, ``monitor igtl`` and ``monitor analyze``: processes that attach to a running
monitor (found in the run registry, ``monitor.io.runs``); and ``monitor keys``, what they
authenticate with."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.commands.options import (
    add_attach_options,
    attached_endpoints,
    given_endpoints,
    stale_ms,
    vertebral_level,
)
from monitor.errors import MonitorError


def add_view(sub) -> None:
    p = sub.add_parser("view", help="the live overlay for the operator, attached to a running monitor")
    add_attach_options(p, "where operator actions go (the analyzer)")
    p.add_argument(
        "--screenshot", type=Path, metavar="PNG", help="grab the window to PNG after --after s, exit"
    )
    p.add_argument("--after", type=float, default=5.0, metavar="S", help="seconds before --screenshot grabs")
    p.add_argument(
        "--or-mode",
        action="store_true",
        help="full screen, the banner and readouts legible from 2 m (the operating room)",
    )
    p.set_defaults(run=_run_view)


def _run_view(args) -> int:
    from monitor.viewer import run_viewer

    e = attached_endpoints(args)
    return run_viewer(
        e.frames, e.results, e.control, str(args.screenshot) if args.screenshot else None, args.after,
        or_mode=args.or_mode,
    )  # fmt: skip


def add_igtl(sub) -> None:
    p = sub.add_parser(
        "igtl",
        help="serve a running monitor as OpenIGTLink (3D Slicer, PLUS, navigation systems)",
        description="Serve the running monitor's images, cement front, posterior wall and 5 mm line,"
        " measurements and alarms as OpenIGTLink, to any number of clients (3D Slicer: OpenIGTLinkIF,"
        " client to this port). The message names and coordinates are in the README.",
    )
    add_attach_options(p, "where acknowledges from clients go, with --accept-commands (the analyzer)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on; OpenIGTLink has no authentication, so another address lets"
        " anyone who reaches it read the images",
    )
    p.add_argument("--port", type=int, default=18944, help="TCP port (0: any free port, printed)")
    p.add_argument(
        "--accept-commands",
        action="store_true",
        help="pass an 'acknowledge' STRING from a client on to the analyzer"
        " (default: clients command nothing)",
    )
    p.add_argument("--max-clients", type=int, default=16, help="clients served at once; more are refused")
    p.add_argument(
        "--until-end",
        action="store_true",
        help="stop when the monitored session ends (or, exit status 3, when its analyzer, once heard,"
        " has been silent for 10 s: its end was lost or it died)",
    )
    p.set_defaults(run=_run_igtl)


def _run_igtl(args) -> int:
    import ipaddress

    from monitor.igtl import run_bridge

    if not 0 <= args.port <= 65535:
        raise MonitorError(f"--port {args.port}: expected 0-65535")
    if args.max_clients < 1:
        raise MonitorError(f"--max-clients {args.max_clients}: expected at least 1")
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        raise MonitorError(f"--host {args.host!r}: expected an IPv4 address such as 127.0.0.1") from None
    if not loopback:
        print(
            f"monitor igtl: warning: serving on {args.host}: OpenIGTLink is neither authenticated nor"
            " encrypted; anyone who reaches this address reads the patient's images",
            file=sys.stderr,
        )
    e = attached_endpoints(args)
    given = bool(given_endpoints(args))

    def reattach():
        """The monitor running now, when this one was found in the run registry (it follows
        a monitor stopped and started again); None with endpoints given, or none or several."""
        from monitor.io.runs import running as running_monitors

        if given or not running_monitors():
            return None
        try:
            now = attached_endpoints(argparse.Namespace(**{**vars(args), "run_pid": None}))
        except MonitorError:
            return None
        return now.frames, now.results, now.control

    try:
        stats = run_bridge(
            e.frames,
            e.results,
            e.control if args.accept_commands else None,
            args.host,
            args.port,
            args.max_clients,
            args.until_end,
            reattach=reattach,
        )
    except OSError as err:
        raise MonitorError(str(err)) from None
    if stats.interrupted:
        return 130
    return 3 if stats.end_unheard else 0  # 3: the session's end was never heard


def add_analyze(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="run the analyzer on its own, attached to a running source",
        description="Analyse the frames a source publishes (e.g. monitor replay --publish-only) and"
        " publish results; operator edits come in on the control endpoint. Give it the room's"
        " --calibration profile when the source was given one: frames measured with a profile this"
        " analyzer lacks carry a caveat on every result.",
    )
    add_attach_options(p, "ZeroMQ endpoint to take operator commands on")
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="PROFILE",
        help="the room's calibration profile (calibration/*.json): its cement attenuation and scatter"
        " (default: none, the analyzer's defaults)",
    )
    p.add_argument(
        "--level",
        type=vertebral_level,
        help="vertebral level being treated: C1-C7, T1-T12, L1-L6, S1 (default: none)",
    )
    p.add_argument(
        "--stale-ms",
        type=stale_ms,
        default=1000.0,
        help="report the stream stale after this long without a new frame (ms; default %(default)s)",
    )
    p.set_defaults(run=_run_analyze)


def _run_analyze(args) -> int:
    from monitor.analyzer import VisionAnalysis, run_analyzer
    from monitor.vision.analysis import AnalysisConfig

    settings = {}
    if args.calibration:
        from monitor.io.profile import load_profile

        settings = load_profile(args.calibration).analysis_settings()
    e = attached_endpoints(args)
    counts = run_analyzer(
        e.frames,
        e.results,
        e.flow,
        stale_ms=args.stale_ms,
        control_endpoint=e.control,
        level=args.level,
        analysis=VisionAnalysis(AnalysisConfig.from_settings(settings), args.level),
    )
    print(f"analysed {counts['analysed']}; rejected {counts['rejected']}; dropped {counts['dropped']}")
    return 0


def add_keys(sub) -> None:
    p = sub.add_parser(
        "keys",
        help="where this installation's CURVE keys are, and what a viewer on another machine needs",
        description="Every monitor endpoint is CURVE-authenticated and encrypted with keys made on"
        " first use in a user-only directory. This prints them (public halves only).",
    )
    p.set_defaults(run=_run_keys)


def _run_keys(_args) -> int:
    from monitor.io.security import describe

    print("\n".join(describe()))
    return 0
