"""The ``monitor`` command line: one entry point, one subcommand per job.

User errors (bad files, bad flags) print one line naming the problem and exit
with status 1 (2 for malformed command lines); bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor import __version__
from monitor.errors import MonitorError


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _speed(text: str) -> float:
    """A replay speed: 0 (as fast as the consumers take it) or a finite positive factor."""
    value = float(text)
    if not (math.isfinite(value) and 0 <= value <= 1000):
        raise argparse.ArgumentTypeError(f"must be 0 or a factor up to 1000, got {text}")
    return value


def _stale_ms(text: str) -> float:
    """The watchdog's delay: a finite number of milliseconds, 10 ms to 10 minutes."""
    value = float(text)
    if not (math.isfinite(value) and 10 <= value <= 600_000):
        raise argparse.ArgumentTypeError(f"must be 10 to 600000 ms, got {text}")
    return value


def _add_simulate(sub) -> None:
    from monitor.messages import LEVELS
    from monitor.sim.cement import SCENARIOS
    from monitor.sim.simulate import FIELDS, NOISE_LEVELS, SimConfig

    d = SimConfig()
    p = sub.add_parser(
        "simulate",
        help="render a simulated biplane vertebroplasty recording with ground truth",
        description="Render lateral.dcm, ap.dcm (XA multi-frame) and truth.json into OUTDIR.",
    )
    p.add_argument("outdir", type=Path, help="folder to write lateral.dcm, ap.dcm and truth.json into")
    p.add_argument("--seed", type=int, default=d.seed, help="the case: anatomy, needle, cement and noise")
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default=d.scenario,
        help="none; proximity (cement within 5 mm of the wall, no leak); posterior, venous or disc leak",
    )
    p.add_argument("--size", type=_positive_int, default=d.size, help="detector pixels (square)")
    p.add_argument("--frames", type=_positive_int, default=d.frames, help="frames per plane")
    p.add_argument("--fps", type=float, default=d.fps, help="frames per second (FrameTime written)")
    p.add_argument("--level", choices=LEVELS, default=d.level, help="T8-T12 and L1 with --anatomy ct")
    p.add_argument(
        "--side", choices=("left", "right", "bipedicular"), default=d.side, help="the cannula's pedicle(s)"
    )
    p.add_argument(
        "--fracture",
        choices=("wedge", "biconcave", "none"),
        default=d.fracture,
        help="shape of the treated body (geometric anatomy)",
    )
    p.add_argument(
        "--noise",
        choices=tuple(NOISE_LEVELS),
        default=d.noise,
        help="quantum noise: photons per mm^2 behind the spine",
    )
    p.add_argument(
        "--breathing",
        type=float,
        default=d.breathing_mm,
        metavar="MM",
        help="peak cranio-caudal breathing excursion, 0 for none",
    )
    p.add_argument(
        "--intensity", choices=("LIN", "LOG"), default=d.intensity, help="the detector's response, as written"
    )
    p.add_argument(
        "--photometric",
        choices=("MONOCHROME1", "MONOCHROME2"),
        default=d.photometric,
        help="MONOCHROME1: high values dark",
    )
    p.add_argument("--bits", type=int, default=d.bits, help="bits stored, 8..16")
    p.add_argument(
        "--field",
        choices=FIELDS,
        default=d.field,
        help="collimation: open, rectangular shutters, round intensifier field",
    )
    p.add_argument("--mirror", action="store_true", help="lateral view with anterior on the right")
    p.add_argument(
        "--compression",
        choices=("none", "rle", "jpegls", "j2k"),
        default=d.compression,
        help="transfer syntax of the written DICOM (all lossless)",
    )
    p.add_argument(
        "--cement-mu",
        type=float,
        default=d.cement_mu,
        metavar="PER_MM",
        help="linear attenuation of the cement, 1/mm",
    )
    p.add_argument(
        "--world",
        choices=("simple", "realistic"),
        default="simple",
        help="simple: one energy, the cement and scatter above (fast, for tests); realistic: a room"
        " drawn from the seed (spectrum, opacifier, scatter, glare, brightness control, filtering,"
        " 8-bit video; the sim extra) as the accuracy benchmark draws them",
    )
    p.add_argument(
        "--anatomy",
        choices=("geometric", "ct"),
        default=d.anatomy,
        help="geometric phantom, or a real patient's CT (levels T8-T12, L1; fetched once with pip)",
    )
    p.add_argument(
        "--cleft", action="store_true", help="a gas-filled intravertebral cleft (Kummell's disease)"
    )
    p.add_argument(
        "--contact-sheet",
        action="store_true",
        help="also write contact_sheet.png (first, middle, last frame of both planes)",
    )
    p.set_defaults(run=_run_simulate)


def _run_simulate(args) -> int:
    from monitor.sim.simulate import SimConfig, simulate

    cfg = SimConfig(
        seed=args.seed,
        scenario=args.scenario,
        level=args.level,
        size=args.size,
        frames=args.frames,
        fps=args.fps,
        side=args.side,
        fracture=args.fracture,
        noise=args.noise,
        breathing_mm=args.breathing,
        intensity=args.intensity,
        photometric=args.photometric,
        bits=args.bits,
        field=args.field,
        mirror=args.mirror,
        compression=args.compression,
        cement_mu=args.cement_mu,
        anatomy=args.anatomy,
        cleft=args.cleft,
    )
    if args.world == "realistic":
        from dataclasses import replace

        import numpy as np

        from monitor.sim.world import draw_world

        world = draw_world(np.random.default_rng(args.seed))
        video = {"bits": 8, "intensity": "LOG", "photometric": "MONOCHROME2"} if world.video else {}
        if world.detector == "intensifier" and cfg.field == "open":
            video["field"] = "round"  # an intensifier's field is its round input screen
        cfg = replace(cfg, world=world, **video)
    try:
        cfg.validate()
    except ValueError as e:
        raise MonitorError(str(e)) from None
    truth = simulate(cfg, args.outdir, progress=lambda m: print(f"  {m}", file=sys.stderr))
    leak = truth["leak"]
    print(
        f"wrote {args.outdir}/lateral.dcm, ap.dcm, truth.json: {cfg.frames} frames at "
        f"{cfg.fps:g}/s, {truth['total_injected_ml']:.2f} mL injected, "
        f"min distance {truth['min_distance_mm']} mm"
        + (f", {leak['site']} leak from frame {leak['onset_frame']}" if leak["site"] else ", no leak")
        + f" ({truth['render_seconds']} s)"
    )
    if cfg.world is not None:
        w = cfg.world
        print(
            f"room: {w.kvp:g} kVp, {w.al_mm:g} mm Al + {w.cu_mm:g} mm Cu, {w.opacifier}"
            f" {100 * w.opacifier_fraction:.0f} %, scatter-to-primary {w.scatter_to_primary:g}"
            f" ({'grid' if w.grid else 'no grid'}), {w.detector}, brightness control"
            f" {'on' if w.abc else 'off'}, recursive filter {w.recursive_weight:g}, edge gain"
            f" {w.edge_gain:g}, {'8-bit video' if w.video else 'raw'}, exposure tags"
            f" {'written' if w.tags else 'left out'} (truth.json holds it all)"
        )
    if args.contact_sheet:
        from monitor.render import write_contact_sheet

        sheet = write_contact_sheet(
            [args.outdir / "lateral.dcm", args.outdir / "ap.dcm"], args.outdir / "contact_sheet.png"
        )
        print(f"wrote {sheet}")
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe recordings: plane, frames, timing, geometry, scale")
    p.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders of single frames")
    p.add_argument("--plane", choices=("lateral", "ap"), help="override the plane from the header")
    p.add_argument(
        "--contact-sheet",
        type=Path,
        metavar="PNG",
        help="write the first, middle and last frame of each recording to PNG",
    )
    p.set_defaults(run=_run_info)


def _run_info(args) -> int:
    from monitor.io.dicom import describe_recording

    for path in args.paths:
        print(describe_recording(path, args.plane))
    if args.contact_sheet:
        from monitor.render import write_contact_sheet  # cv2 and the session log: only for this

        print(f"wrote {write_contact_sheet(args.paths, args.contact_sheet)}")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the monitor on the bundled default recording")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="where to write results")
    p.add_argument("--headless", action="store_true", help="no viewer window even with a display")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    import shutil

    from monitor.audit import audit_json, text_report
    from monitor.io.sources import DicomPairSource
    from monitor.io.store import SessionStore
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.recordings import default_recording
    from monitor.render import render_session, write_video
    from monitor.replay import PaceOptions
    from monitor.viewer import has_display

    case = default_recording()
    print(f"bundled recording '{case.name}': {case.description}")
    session = args.out / "session"
    if session.exists():
        shutil.rmtree(session)
    viewer = has_display() and not args.headless
    if viewer:
        print("  showing it in the live viewer at the recorded rate; close the window to finish")
    else:
        print("  no display (or --headless): running headless, pictures and a video follow")
    source = DicomPairSource(case.lateral, case.ap)
    spec = RunSpec(
        str(session),
        "L1",
        endpoints=Endpoints.private(),
        viewer=viewer,
        meta={"source": str(case.lateral.parent), "planes": ["lateral", "ap"]},
    )
    try:
        code = run(source, spec, PaceOptions(speed=1 if viewer else 0), say=lambda m: print(f"  {m}"))
    finally:
        source.close()
    store = SessionStore.open(session)
    try:
        print(text_report(audit_json(store)))
        video = write_video(store, args.out / "annotated.avi")
    finally:
        store.close()
    pictures = render_session(session, args.out / "frames")
    print(f"wrote the annotated replay to {video} and {len(pictures)} key frames to {args.out / 'frames'}")
    print(
        f"session log in {session}; audit it with: monitor audit {session} --html {args.out / 'audit.html'}"
    )
    return code


def _add_stream_options(p, session_help: str) -> None:
    p.add_argument("--session", type=Path, metavar="DIR", help=session_help)
    p.add_argument("--level", default=None, help="vertebral level being treated, e.g. L1")
    p.add_argument(
        "--headless", action="store_true", help="no viewer window: source, analyzer and logger only"
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
        type=_stale_ms,
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


def _add_replay(sub) -> None:
    p = sub.add_parser("replay", help="replay recorded fluoroscopy (DICOM or video) through the monitor")
    p.add_argument("--lateral", type=Path, help="lateral DICOM recording (file or series folder)")
    p.add_argument("--ap", type=Path, help="AP DICOM recording (file or series folder)")
    p.add_argument("--video", type=Path, help="a video file captured from a frame grabber")
    p.add_argument(
        "--plane", choices=("lateral", "ap"), default="lateral", help="the plane a single-plane video shows"
    )
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="the video carries both planes side by side (lateral on the left)",
    )
    p.add_argument(
        "--layout",
        type=Path,
        metavar="JSON",
        help="where each plane sits in the video frame (a profile's video_layout section)",
    )
    p.add_argument("--fps", type=float, default=None, help="frame rate when the recording has no timing")
    p.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        help="1 = recorded rate, 2 = twice as fast, 0 = as fast as the consumers take it"
        " (default %(default)s)",
    )
    p.add_argument("--loop", action="store_true", help="start again at the end, until interrupted")
    _add_stream_options(
        p,
        "log the session into this directory; with no --lateral, --ap or --video: "
        "the logged session to replay",
    )
    p.add_argument("--log", type=Path, metavar="DIR", help="replaying a logged session: log the replay here")
    p.set_defaults(run=_run_replay)


def _add_grab(sub) -> None:
    p = sub.add_parser("grab", help="monitor a live frame grabber on the C-arm's video output")
    p.add_argument("--device", type=int, required=True, help="OpenCV video device index")
    p.add_argument(
        "--plane", choices=("lateral", "ap"), default="lateral", help="the plane a single-plane grabber shows"
    )
    p.add_argument(
        "--side-by-side", action="store_true", help="both planes side by side, lateral on the left"
    )
    p.add_argument(
        "--layout",
        type=Path,
        metavar="JSON",
        help="where each plane sits in the video frame (a profile's video_layout section)",
    )
    p.add_argument(
        "--fps", type=float, default=None, help="frame rate to assume (default: what the device reports)"
    )
    _add_stream_options(p, "log the session into this directory")
    p.set_defaults(run=_run_grab)


def _given_endpoints(args) -> dict[str, str]:
    """The endpoints given on the command line, by role."""
    roles = ("frames", "results", "flow", "control")
    return {role: value for role in roles if (value := getattr(args, f"{role}_endpoint", None))}


def _own_endpoints(args):
    """A streaming run's endpoints: those given, and IPC endpoints of its own in the user's
    private runtime directory for the others (never the shared TCP defaults, where two
    monitors would meet). Registered for ``view`` and ``analyze`` to find (True)."""
    from monitor.io.runs import private_endpoints
    from monitor.pipeline import Endpoints

    return Endpoints(**{**private_endpoints(), **_given_endpoints(args)}), True


def _attached_endpoints(args):
    """What ``view`` and ``analyze`` attach to: the endpoints given, and for the others those
    of the monitor running on this machine (``--run PID`` when there are several; an error
    naming them rather than a guess), or the TCP defaults when no monitor runs here."""
    from monitor.io.runs import attach
    from monitor.io.runs import running as running_monitors
    from monitor.pipeline import Endpoints

    given = _given_endpoints(args)
    roles = ("frames", "results", "flow", "control")
    if len(given) == len(roles) or (given and args.run_pid is None and not running_monitors()):
        running = {}  # all given; or no monitor here: the TCP defaults for the others
    else:  # a --run PID that is not running, or several and no --run: said, never guessed
        running = attach(args.run_pid)
    default = Endpoints()
    return Endpoints(*(given.get(r) or running.get(r) or getattr(default, r) for r in roles))


def _add_attach_options(p, control_help: str) -> None:
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


def _stream(args, source, speed: float, loop: bool) -> int:
    from monitor.pipeline import RunSpec, run
    from monitor.replay import PaceOptions

    viewer = not (args.headless or args.publish_only)
    endpoints, private = _own_endpoints(args)
    if viewer:
        from monitor.viewer import has_display

        if not has_display():
            print(
                "no display: running headless (monitor view attaches to it from this machine's"
                " display; from another, with this installation's keys: monitor keys)",
                file=sys.stderr,
            )
            viewer = False
    if args.publish_only and args.session:
        raise MonitorError("--session needs the logger; drop --publish-only")
    from monitor.io.sources import SessionSource

    analysis = {}
    if isinstance(source, SessionSource):  # measured as it was (--calibration is refused above)
        analysis.update(source.calibration_settings())
    elif args.calibration:
        from monitor.io.profile import load_profile
        from monitor.io.sources import apply_profile

        profile = load_profile(args.calibration)
        apply_profile(source, profile)
        analysis.update(profile.analysis_settings())
    calibration_settings = dict(analysis)
    unscaled = {plane: fmt for plane, fmt in source.formats.items() if fmt.scale is None}
    if unscaled and not args.unmeasured and not args.publish_only:
        why = getattr(source, "scale_problems", {})
        raise MonitorError(
            "; ".join(
                why.get(plane, f"{plane}: no millimetre scale (video carries none)") for plane in unscaled
            )
            + ": the 5 mm rule cannot be evaluated; give --calibration PROFILE (or --unmeasured to"
            " record without monitoring)"
        )
    if unscaled and args.unmeasured and not args.session:
        print(
            f"NOT MONITORED: {', '.join(unscaled)} without a millimetre scale (--unmeasured)", file=sys.stderr
        )
    if args.wall:
        analysis["posterior_wall"] = args.wall
    if args.body:
        analysis["body_boxes"] = tuple(dict(args.body).items())  # the last box given for a plane
    spec = RunSpec(
        session_dir=str(args.session) if args.session else None,
        level=args.level,
        endpoints=endpoints,
        analyzer=not args.publish_only,
        viewer=viewer,
        analysis=analysis,
        stale_ms=args.stale_ms,
        meta={
            "source": getattr(source, "name", "dicom"),
            "planes": sorted(source.formats),
            "patient": args.patient,
            "operator": args.operator,
            "room": args.room,
            "calibration": {plane: fmt.scale for plane, fmt in source.formats.items()},
            "calibration_settings": calibration_settings,  # what the analyzer was given
            "posterior_wall": args.wall,
            "body_boxes": dict(args.body) if args.body else None,
        },
    )
    # A service manager's stop (SIGTERM) ends the run as Ctrl-C does: the consumers finish,
    # the log is closed and signed, the run's record and sockets are removed.
    import signal

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGTERM, interrupt)
    record = None
    if private:  # `monitor view` and `monitor analyze` find it here
        from dataclasses import asdict

        from monitor.io.runs import register

        record = register(
            asdict(endpoints), f"{getattr(source, 'name', 'dicom')} -> {args.session or 'no log'}"
        )
    try:
        code = run(source, spec, PaceOptions(speed=speed, loop=loop))
    finally:
        source.close()
        signal.signal(signal.SIGTERM, previous_handler)
        if record is not None:
            from monitor.io.runs import unregister

            unregister(record)
    # without a log the run cannot say it per level; an unmeasured plane is never monitored
    return 4 if code in (0, 130) and unscaled and args.unmeasured else code


def _run_replay(args) -> int:
    from monitor.io.sources import DicomPairSource, Layout, SessionSource, VideoSource

    if args.video and (args.lateral or args.ap):
        raise MonitorError("give either --video or --lateral/--ap, not both")
    if args.log and (args.video or args.lateral or args.ap):
        raise MonitorError("--log is for replaying a logged session; with a recording, use --session")
    if not (args.video or args.lateral or args.ap):
        if not args.session:
            raise MonitorError(
                "nothing to replay: give --lateral/--ap, --video, or --session of a logged one"
            )
        if args.calibration:
            raise MonitorError(
                "--calibration: a logged session replays with the calibration it was recorded with"
            )
        source = SessionSource(args.session)
        meta = source.store.meta()
        if args.wall is None and meta.get("posterior_wall"):  # the wall the session was measured to
            args.wall = tuple(tuple(point) for point in meta["posterior_wall"])
        if args.body is None and meta.get("body_boxes"):  # and its bodies
            args.body = [(plane, tuple(box)) for plane, box in meta["body_boxes"].items()]
        print(
            f"replaying the logged {source.name}"
            + ("" if args.log else " (add --log DIR to log the replay)"),
            file=sys.stderr,
        )
        args.session = args.log
        return _stream(args, source, args.speed, args.loop)
    if args.video:
        layout = Layout.single(args.plane)
        if args.layout or _profile_has_layout(args):
            layout = Layout.from_file(args.layout or args.calibration)
        elif args.side_by_side:
            import cv2

            cap = cv2.VideoCapture(str(args.video))
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            cap.release()
            layout = Layout.side_by_side(w, h)
        source = VideoSource.open_file(args.video, layout, args.fps)
    else:
        source = DicomPairSource(args.lateral, args.ap, fps=args.fps)
    return _stream(args, source, args.speed, args.loop)


def _profile_has_layout(args) -> bool:
    """A calibration profile for a frame grabber says where each plane sits in the video."""
    if not args.calibration:
        return False
    from monitor.io.profile import load_profile

    return load_profile(args.calibration).video_layout is not None


def _run_grab(args) -> int:
    from monitor.io.sources import Layout, VideoSource

    if args.layout or _profile_has_layout(args):
        layout = Layout.from_file(args.layout or args.calibration)
    else:
        layout = Layout.single(args.plane)
    source = VideoSource.open_device(args.device, layout, args.fps)
    if args.side_by_side and not args.layout:
        import cv2

        w = int(source._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(source._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        source.layout = Layout.side_by_side(w, h)
    return _stream(args, source, 1.0, False)


def _add_view(sub) -> None:
    p = sub.add_parser("view", help="the live overlay for the operator, attached to a running monitor")
    _add_attach_options(p, "where operator actions go (the analyzer)")
    p.add_argument(
        "--screenshot", type=Path, metavar="PNG", help="grab the window to PNG after --after s, exit"
    )
    p.add_argument("--after", type=float, default=5.0, metavar="S", help="seconds before --screenshot grabs")
    p.set_defaults(run=_run_view)


def _run_view(args) -> int:
    from monitor.viewer import run_viewer

    e = _attached_endpoints(args)
    return run_viewer(
        e.frames, e.results, e.control, str(args.screenshot) if args.screenshot else None, args.after
    )


def _add_igtl(sub) -> None:
    p = sub.add_parser(
        "igtl",
        help="serve a running monitor as OpenIGTLink (3D Slicer, PLUS, navigation systems)",
        description="Serve the running monitor's images, cement front, posterior wall and 5 mm line,"
        " measurements and alarms as OpenIGTLink, to any number of clients (3D Slicer: OpenIGTLinkIF,"
        " client to this port). The message names and coordinates are in the README.",
    )
    _add_attach_options(p, "where acknowledges from clients go, with --accept-commands (the analyzer)")
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
    p.add_argument("--until-end", action="store_true", help="stop when the monitored session ends")
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
    e = _attached_endpoints(args)
    given = bool(_given_endpoints(args))

    def reattach():
        """The monitor running now, when this one was found in the run registry (it follows
        a monitor stopped and started again); None with endpoints given, or none or several."""
        from monitor.io.runs import running as running_monitors

        if given or not running_monitors():
            return None
        try:
            now = _attached_endpoints(argparse.Namespace(**{**vars(args), "run_pid": None}))
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
    return 130 if stats.interrupted else 0


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="training replay: alarms hidden, press STOP; compared with the monitor's alarms at the end",
    )
    p.add_argument("case", type=Path, help="a recording folder (lateral.dcm, ap.dcm) or a logged session")
    p.add_argument("--trainee", default=None, help="name kept in the training log")
    p.add_argument(
        "--out", type=Path, default=Path("training"), help="training sessions and training-log.jsonl"
    )
    p.add_argument("--speed", type=_speed, default=1.0, help="replay speed (default %(default)s)")
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


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="measure scale (and distortion) and write a calibration profile")
    which = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    g = which.add_parser("grid", help="scale and pincushion distortion from an image of a bead grid")
    g.add_argument("image", type=Path, help="DICOM (first frame used) or PNG/TIFF of the grid phantom")
    g.add_argument("--pitch", type=float, required=True, metavar="MM", help="distance between beads")
    n = which.add_parser("needle", help="scale at the vertebra from the cannula's known diameter")
    n.add_argument(
        "image", type=Path, help="lateral DICOM (first frame used) or PNG/TIFF, one cannula in view"
    )
    n.add_argument(
        "--gauge", type=int, choices=(11, 13), required=True, help="the cannula's gauge (its known diameter)"
    )
    for q in (g, n):
        q.add_argument("--out", type=Path, help="write the profile here (JSON)")
        q.add_argument("--id", default=None, help="profile id, e.g. room3-artis-2026-11")
        q.add_argument(
            "--light-is-dense", action="store_true", help="PNG input where dense objects are bright"
        )
    p.set_defaults(run=_run_calibrate)


def _calibration_image(path: Path, light_is_dense: bool):
    """(attenuation-like image, dense objects dark image) from DICOM or a picture file."""
    import cv2
    import numpy as np

    from monitor.io.dicom import open_recording
    from monitor.vision.intensity import model_for

    if path.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise MonitorError(f"{path}: not a readable image")
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        pixels = image.astype(np.float32)
        dark = pixels.max() - pixels if light_is_dense else pixels
        return -np.log(np.maximum(dark, 1.0) / max(float(dark.max()), 1.0)), dark
    with open_recording(path) as rec:
        frame = rec.frame(0)
        i = rec.info
        model = model_for(i.photometric, i.intensity_relationship, i.bits_stored, [frame])
    att = model.attenuation(frame.astype(np.float32))
    return att, -att


def _run_calibrate(args) -> int:
    import json

    from monitor.io.profile import profile_json
    from monitor.vision.anatomy import NotFound, find_cannula
    from monitor.vision.calibrate import CalibrationError, fit_grid, fit_needle

    att, dark = _calibration_image(args.image, args.light_is_dense)
    profile_id = args.id or args.image.stem
    try:
        if args.method == "grid":
            fit = fit_grid(dark, args.pitch)
            print(
                f"grid: {fit.beads} beads; scale {fit.spacing_mm[0]:.4f} x {fit.spacing_mm[1]:.4f} mm/pixel "
                f"at the grid; distortion k1 {fit.distortion.k1:+.4f}, k2 {fit.distortion.k2:+.4f} "
                f"about ({fit.distortion.centre[0]:.0f}, {fit.distortion.centre[1]:.0f})"
            )
            print(
                f"residual: {fit.residual_mm_before:.3f} mm RMS before correction, "
                f"{fit.residual_mm_after:.3f} mm RMS after (max {fit.max_residual_mm_after:.3f} mm)"
            )
            profile = profile_json(
                profile_id,
                att.shape,
                fit.spacing_mm,
                "grid",
                None,
                fit.distortion,
                {
                    "pitch_mm": args.pitch,
                    "beads": fit.beads,
                    "residual_mm_before": round(fit.residual_mm_before, 4),
                    "residual_mm_after": round(fit.residual_mm_after, 4),
                },
            )
        else:
            try:
                cannula = find_cannula(att)
            except NotFound as e:
                raise CalibrationError(f"no cannula found: {e}") from None
            fit = fit_needle(att, cannula.tip, cannula.direction, args.gauge)
            pct = 100 * fit.uncertainty_mm / fit.spacing_mm
            print(
                f"needle ({args.gauge} G, {fit.profiles} cross-sections in {fit.groups} groups, "
                f"{fit.groups_used} agreeing): outer diameter "
                f"{fit.diameter_px:.2f} px; scale {fit.spacing_mm:.4f} mm/pixel "
                f"+/- {fit.uncertainty_mm:.4f} ({pct:.1f} %, 95 %) at the cannula"
            )
            if pct > 5:
                print("warning: uncertain beyond 5 %: use an image with one clean shaft, not crossed by ribs")
            profile = profile_json(
                profile_id,
                att.shape,
                (fit.spacing_mm, fit.spacing_mm),
                "needle",
                pct,
                notes={"gauge": args.gauge, "diameter_px": round(fit.diameter_px, 3)},
            )
    except CalibrationError as e:
        raise MonitorError(f"{args.image}: {e}") from None
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(profile, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _add_simulate_grid(sub) -> None:
    p = sub.add_parser("simulate-grid", help="render a bead-grid calibration phantom (DICOM) with its truth")
    p.add_argument("out", type=Path, help="DICOM file to write; the truth goes next to it (.json)")
    p.add_argument("--pitch", type=float, default=5.0, metavar="MM", help="distance between beads")
    p.add_argument(
        "--distortion", type=float, default=0.0, metavar="K1", help="pincushion strength, e.g. 0.06"
    )
    p.add_argument("--size", type=_positive_int, default=1024, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="noise and bead jitter")
    p.set_defaults(run=_run_simulate_grid)


def _run_simulate_grid(args) -> int:
    import json

    from monitor.sim.grid import render_grid

    truth = render_grid(args.out, args.size, args.pitch, args.distortion, seed=args.seed)
    args.out.with_suffix(".json").write_text(json.dumps(truth, indent=1))
    print(
        f"wrote {args.out}: {args.size}x{args.size}, pitch {args.pitch:g} mm, k1 {args.distortion:g}, "
        f"{truth['spacing_mm_at_isocentre']:.4f} mm/pixel at the isocentre"
    )
    return 0


def _add_analyze(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="run the analyzer on its own, attached to a running source",
        description="Analyse the frames a source publishes (e.g. monitor replay --publish-only) and"
        " publish results; operator edits come in on the control endpoint. Give it the room's"
        " --calibration profile when the source was given one: frames measured with a profile this"
        " analyzer lacks carry a caveat on every result.",
    )
    _add_attach_options(p, "ZeroMQ endpoint to take operator commands on")
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="PROFILE",
        help="the room's calibration profile (calibration/*.json): its cement attenuation and scatter"
        " (default: none, the analyzer's defaults)",
    )
    p.add_argument("--level", help="vertebral level being treated, e.g. L1 (default: none)")
    p.add_argument(
        "--stale-ms",
        type=_stale_ms,
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
    e = _attached_endpoints(args)
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


def _add_audit(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="QA report of a logged session, or a summary over many",
        description="Audit one session (text, --json, --html), or with --summary every session "
        "found under a directory.",
    )
    p.add_argument("session", type=Path, help="a session directory, or with --summary a directory of them")
    p.add_argument("--json", action="store_true", help="print the QA contract (or the summary) as JSON")
    p.add_argument("--html", type=Path, metavar="OUT", help="write a self-contained HTML report")
    p.add_argument("--summary", action="store_true", help="a table over every session under SESSION")
    p.add_argument("--csv", type=Path, metavar="OUT", help="with --summary: also write the table as CSV")
    p.add_argument(
        "--workers", type=_positive_int, default=2, help="with --summary: processes reading sessions"
    )
    p.set_defaults(run=_run_audit)


def _run_audit(args) -> int:
    import json

    from monitor.audit import audit_exit_code, audit_json, text_report
    from monitor.io.store import SessionStore

    if args.summary:
        return _run_summary(args)
    if args.csv:
        raise MonitorError("--csv goes with --summary")
    store = SessionStore.open(args.session)
    try:
        report = audit_json(store)
        if args.html:
            from monitor.report import html_report

            try:
                args.html.parent.mkdir(parents=True, exist_ok=True)
                args.html.write_text(html_report(store, report), encoding="utf-8")
            except OSError as e:
                raise MonitorError(f"{args.html}: cannot write the report ({e.strerror})") from None
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(text_report(report))
    if args.html:
        print(f"wrote {args.html}", file=sys.stderr)
    return audit_exit_code(report)


def _run_summary(args) -> int:
    import csv
    import json
    import time

    from monitor.audit import SUMMARY_COLUMNS, find_sessions, summarize

    started = time.monotonic()
    folders = find_sessions(args.session)
    if not folders:
        raise MonitorError(f"{args.session}: no session found under it")
    print(f"reading {len(folders)} session(s)", file=sys.stderr)
    table = summarize(
        folders,
        args.workers,
        progress=lambda n: print(f"  {n} read", file=sys.stderr),
        cache=_summary_cache(args.session),
    )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, SUMMARY_COLUMNS)
            writer.writeheader()
            writer.writerows(table["rows"])
    if args.json:
        print(json.dumps(table, indent=1))
    else:
        for bad in table["untrusted"]:  # first: what QA must look at
            print(f"UNTRUSTED: {bad['folder']}: " + "; ".join(bad["problems"]))
        for miss in table["not_monitored"]:
            reasons = "; ".join(miss["reasons"])
            print(f"NOT MONITORED: {miss['folder']} level {miss['level'] or '?'}: {reasons}")
        widths = {c: max(len(c), *(len(_cell(r[c])) for r in table["rows"])) for c in SUMMARY_COLUMNS}
        print("  ".join(c.rjust(widths[c]) for c in SUMMARY_COLUMNS))
        for row in table["rows"]:
            print("  ".join(_cell(row[c]).rjust(widths[c]) for c in SUMMARY_COLUMNS))
        for bad in table["unreadable"]:
            print(f"unreadable: {bad['error']}")
    print(
        f"{table['sessions']} session(s) ({table['read']} read, the rest from the cache) "
        f"in {time.monotonic() - started:.1f} s"
        + (f", {len(table['unreadable'])} unreadable" if table["unreadable"] else ""),
        file=sys.stderr,
    )
    return 0


def _summary_cache(root: Path) -> Path | None:
    """Where the summary keeps session digests: in the sessions directory, if writable."""
    import os

    return root / ".monitor-summary-cache.sqlite" if os.access(root, os.W_OK) else None


def _cell(value) -> str:
    return "-" if value is None else str(value)


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="write a logged session as DICOM multi-frame files, one per plane, for other viewers"
    )
    p.add_argument("session", type=Path, help="a session directory")
    p.add_argument("out", type=Path, help="directory for lateral.dcm and ap.dcm")
    p.add_argument(
        "--deidentify",
        action="store_true",
        help="remove patient-identifying attributes (DICOM PS3.15 Basic Profile), e.g. for training",
    )
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from monitor.io.export import export_session

    export_session(args.session, args.out, args.deidentify)
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks that print measured numbers")
    which = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    t = which.add_parser("transport", help="frame throughput vs imagezmq, and end-to-end latency")
    t.add_argument("--frames", type=_positive_int, default=300, help="frames per throughput run")
    t.add_argument("--seconds", type=float, default=10.0, help="seconds per latency run")
    t.set_defaults(run=lambda a: _run_bench_transport(a))
    a = which.add_parser(
        "accuracy",
        help="the vision pipeline against simulated truth: the realistic world's reporting seeds",
    )
    a.add_argument(
        "--corpus",
        type=Path,
        default=Path("bench-corpus"),
        help="where the rendered cases are cached (rendered on first use; both worlds fit in one)",
    )
    a.add_argument(
        "--world",
        choices=("realistic", "simple"),
        default="realistic",
        help="realistic: every unknown of a room drawn per case (needs the sim extra); simple: the"
        " world the monitor was built in, to check a refactor moved nothing",
    )
    a.add_argument(
        "--seeds",
        choices=("reporting", "tuning"),
        default="reporting",
        help="realistic world: the 36 reporting seeds, or the 12 tuning ones (tune on these only)",
    )
    a.add_argument(
        "--cases",
        type=_positive_int,
        default=None,
        help="the first N cases (default: all of the seed set; 30 in the simple world)",
    )
    a.add_argument("--json", type=Path, default=None, help="also write per-case results here")
    a.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="cases evaluated in parallel (faster; per-frame times then include the contention)",
    )
    a.set_defaults(run=_run_bench_accuracy)
    v = which.add_parser("viewer", help="frames per second the live view renders at 30 frames/s biplane")
    v.add_argument("--seconds", type=float, default=10.0, help="how long to render")
    v.set_defaults(run=_run_bench_viewer)
    st = which.add_parser("storage", help="disk and time per frame recorded in the session log")
    st.add_argument(
        "--recording",
        type=Path,
        default=None,
        help="a folder with lateral.dcm and ap.dcm (default: simulate)",
    )
    st.set_defaults(run=_run_bench_storage)
    su = which.add_parser("summary", help="monitor audit --summary over many generated session logs")
    su.add_argument(
        "--sessions", type=_positive_int, default=10000, help="session logs to generate and summarise"
    )
    su.add_argument(
        "--dir", type=Path, default=None, help="keep the generated logs here (reused by the next run)"
    )
    su.add_argument("--workers", type=_positive_int, default=2, help="processes generating the logs")
    su.set_defaults(run=_run_bench_summary)
    ig = which.add_parser(
        "igtl", help="the OpenIGTLink bridge: the monitor's frame rate with and without it, its latency"
    )
    ig.add_argument(
        "--recording",
        type=Path,
        default=None,
        help="a folder with lateral.dcm and ap.dcm (default: the bundled default recording)",
    )
    ig.add_argument("--repeats", type=_positive_int, default=3, help="throughput runs with and without")
    ig.set_defaults(run=_run_bench_igtl)


def _add_keys(sub) -> None:
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


def _run_bench_transport(args) -> int:
    from monitor.bench import run_transport

    run_transport(args.frames, args.seconds)
    return 0


def _run_bench_accuracy(args) -> int:
    from monitor.accuracy import run

    run(
        args.corpus,
        args.cases,
        args.json,
        args.workers,
        say=lambda m: print(m, file=sys.stderr),
        world=args.world,
        seeds=args.seeds,
    )
    return 0


def _run_bench_viewer(args) -> int:
    from monitor.bench import run_viewer

    run_viewer(args.seconds)
    return 0


def _run_bench_igtl(args) -> int:
    from monitor import bench_igtl
    from monitor.recordings import default_recording

    if args.recording is None:
        rec = default_recording()
        lateral, ap = rec.lateral, rec.ap
    else:
        lateral, ap = args.recording / "lateral.dcm", args.recording / "ap.dcm"
        for path in (lateral, ap):
            if not path.exists():
                raise MonitorError(f"{path}: no such recording (--recording needs lateral.dcm and ap.dcm)")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    print(bench_igtl.report(bench_igtl.run(lateral, ap, args.repeats, say), lateral))
    return 0


def _run_bench_storage(args) -> int:
    from monitor.bench_log import run_storage

    run_storage(args.recording)
    return 0


def _run_bench_summary(args) -> int:
    from monitor.bench_log import run_summary

    run_summary(args.sessions, args.dir, args.workers)
    return 0


class _HelpFormatter(argparse.HelpFormatter):
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


class _Parser(argparse.ArgumentParser):
    """Parsers and subparsers alike show their options' defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="monitor",
        description="Vertebroplasty cement monitor: watches lateral and AP fluoroscopy for cement "
        "approaching the posterior wall and for leaks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_simulate(sub)
    _add_info(sub)
    _add_replay(sub)
    _add_grab(sub)
    _add_analyze(sub)
    _add_calibrate(sub)
    _add_simulate_grid(sub)
    _add_view(sub)
    _add_igtl(sub)
    _add_train(sub)
    _add_audit(sub)
    _add_export(sub)
    _add_keys(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MonitorError as e:
        print(f"monitor {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"monitor {args.command}: interrupted", file=sys.stderr)
        return 130
