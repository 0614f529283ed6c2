"""``monitor demo``, ``monitor replay`` and ``monitor grab``: a source streamed through the monitor,
with its analyzer, logger and viewer (``monitor.pipeline``)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from monitor.commands.options import add_stream_options, frame_rate, own_endpoints, speed
from monitor.errors import MonitorError


def add_demo(sub) -> None:
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
    from monitor.viewer import has_display, viewer_problem

    case = default_recording()
    print(f"bundled recording '{case.name}': {case.description}")
    session = args.out / "session"
    if session.exists():
        shutil.rmtree(session)
    viewer = not args.headless and has_display()
    if viewer and (problem := viewer_problem()):
        raise MonitorError(problem)
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


def add_replay(sub) -> None:
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
    p.add_argument(
        "--fps",
        type=frame_rate,
        default=None,
        help="frame rate (frames/s, 0.2-200) of a recording with no timing, or one whose timing is"
        " wrong: it replaces the file's own timing, and the run says so",
    )
    p.add_argument(
        "--planes-start-together",
        action="store_true",
        help="pair the lateral and AP runs from their first frames, whatever their headers say of"
        " when each began (a C-arm whose clock was set wrong); by default they are paired on the"
        " acquisition clock their headers give",
    )
    p.add_argument(
        "--speed",
        type=speed,
        default=1.0,
        help="1 = recorded rate, 2 = twice as fast, 0 = as fast as the consumers take it"
        " (default %(default)s)",
    )
    p.add_argument("--loop", action="store_true", help="start again at the end, until interrupted")
    add_stream_options(
        p,
        "log the session into this directory; with no --lateral, --ap or --video: "
        "the logged session to replay, measured as it was: its calibration, level, command-line wall,"
        " boxes and cleft, and the operator's edits made live (wall, body, confirm-wall, cleft,"
        " syringe, level) each where it came in the analysis; acknowledging is left to you",
    )
    p.add_argument("--log", type=Path, metavar="DIR", help="replaying a logged session: log the replay here")
    p.set_defaults(run=_run_replay)


def add_grab(sub) -> None:
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
        "--fps",
        type=frame_rate,
        default=None,
        help="frame rate to assume (frames/s, 0.2-200; default: what the device reports)",
    )
    add_stream_options(p, "log the session into this directory")
    p.set_defaults(run=_run_grab)


def _stream(args, source, speed: float, loop: bool) -> int:
    """Stream ``source`` through the monitor as the command line asks: the analysis set up
    from the calibration, the wall and the boxes; a plane without a millimetre scale refused
    (or, with --unmeasured, recorded as NOT MONITORED: exit status 4)."""
    from monitor.pipeline import run
    from monitor.replay import PaceOptions

    if args.or_mode and (args.headless or args.publish_only):
        raise MonitorError("--or-mode sets up the viewer: not with --headless or --publish-only")
    viewer = not (args.headless or args.publish_only) and _display_or_say()
    endpoints, private = own_endpoints(args)
    if args.publish_only and args.session:
        raise MonitorError("--session needs the logger; drop --publish-only")
    analysis, calibration_settings = _analysis_settings(args, source)
    unscaled = _unscaled_planes(args, source)
    if args.wall:
        analysis["posterior_wall"] = args.wall
    if args.body:
        analysis["body_boxes"] = tuple(dict(args.body).items())  # the last box given for a plane
    if args.cleft:
        analysis["known_cleft"] = True
    spec = _run_spec(args, source, endpoints, viewer, analysis, calibration_settings)
    missing = [f"--{name}" for name in ("level", "operator") if not getattr(args, name)]
    warnings = tuple(getattr(source, "warnings", ()))  # what the source assumed: also logged
    if args.session and missing:  # the QA record would say "not recorded" where these belong
        warnings += (
            f"no {' or '.join(missing)} given: the session log and the QA summary will say"
            " 'not recorded' for it",
        )
    spec = replace(spec, warnings=warnings)
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


def _display_or_say() -> bool:
    """Whether the viewer can open here; without a display, says how to watch instead. A
    display the viewer cannot open on (Qt's libraries missing) is an error, not a silent
    run without a window: give --headless to run without one."""
    from monitor.viewer import has_display, viewer_problem

    if has_display():
        problem = viewer_problem()
        if problem:
            raise MonitorError(problem)
        return True
    print(
        "no display: running headless (monitor view attaches to it from this machine's"
        " display; from another, with this installation's keys: monitor keys)",
        file=sys.stderr,
    )
    return False


def _analysis_settings(args, source) -> tuple[dict, dict]:
    """The analysis settings for the run, and the calibration's share of them (kept in the
    log): a logged session's own, or the --calibration profile's (applied to the source)."""
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
    return analysis, dict(analysis)


def _unscaled_planes(args, source) -> dict:
    """The planes without a millimetre scale: refused unless --unmeasured (or --publish-only),
    and said as NOT MONITORED when no log will say it."""
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
    return unscaled


def _run_spec(args, source, endpoints, viewer: bool, analysis: dict, calibration_settings: dict):
    """The run as ``monitor.pipeline.run`` takes it, with what the session log keeps."""
    from monitor.pipeline import RunSpec

    return RunSpec(
        session_dir=str(args.session) if args.session else None,
        level=args.level,
        endpoints=endpoints,
        analyzer=not args.publish_only,
        viewer=viewer,
        or_mode=args.or_mode,
        analysis=analysis,
        stale_ms=args.stale_ms,
        replayed=getattr(args, "replayed", ()),
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
            "known_cleft": bool(args.cleft),
            # what the source assumed where its files do not say (the plane, the intensity
            # relationship, a frame rate given for theirs): the audit lists them
            "source_warnings": list(getattr(source, "warnings", ())),
        },
    )


def replayed_edits(source, say) -> tuple:
    """The operator's edits a logged session (``source``, a SessionSource) logged, to carry out
    again where they came as it is replayed (``RunSpec.replayed``), having said which (``say``)
    with their stream times, and apart those that are not: logged after its last frame (they
    changed no result), or with a value the control socket would refuse (an edited log)."""
    edits = source.logged_commands()
    kept = tuple(c for c in edits if c.refused is None and not c.after_last_frame)
    if kept:
        say(
            "re-applying the operator's edits the session logged, each where it came in the"
            f" analysis: {_said(kept)} (its alarms are yours to acknowledge)"
        )
    if late := [c for c in edits if c.refused is None and c.after_last_frame]:
        say(f"not re-applied, logged after the session's last frame: {_said(late)}")
    for c in edits:
        if c.refused is not None:
            say(f"not re-applied, its logged value refused: {_said([c])}: {c.refused}")
    return kept


def _said(commands) -> str:
    """A logged session's operator commands as people read them ("cleft at 0.44 s, wall at
    1.20 s")."""
    return ", ".join(
        c.action if c.acq_time is None else f"{c.action} at {c.acq_time:.2f} s" for c in commands
    )


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
        args.cleft = args.cleft or bool(meta.get("known_cleft"))  # and its first level's cleft
        args.level = args.level or meta.get("level")  # and its first level's name
        # and the operator's edits made live, each where it came in the analysis (AnalyzerNode)
        args.replayed = (
            () if args.publish_only else replayed_edits(source, lambda m: print(m, file=sys.stderr))
        )
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
        source = DicomPairSource(
            args.lateral, args.ap, fps=args.fps, planes_start_together=args.planes_start_together
        )
        try:
            _check_edits_on_images(args, {p: r.info.shape for p, r in source.recordings.items()})
        except MonitorError:
            source.close()
            raise
    return _stream(args, source, args.speed, args.loop)


def _check_edits_on_images(args, shapes: dict[str, tuple[int, int]]) -> None:
    """Refuse at the start a --wall or --body that lies off its view's image (``shapes``: plane
    -> (rows, columns)), which the analyzer would refuse only once its baseline was learnt,
    leaving the run to go on without the operator's edit (an independent test's --wall at x 900 on
    a 384-pixel image)."""
    edits = [("lateral", "--wall", args.wall)] if args.wall else []
    edits += [(plane, "--body", ((x, y), (x + w, y + h))) for plane, (x, y, w, h) in args.body or ()]
    for plane, option, points in edits:
        if plane not in shapes:
            continue
        rows, columns = shapes[plane]
        off = [(x, y) for x, y in points if not (-1.0 <= x <= columns and -1.0 <= y <= rows)]
        if off:
            raise MonitorError(
                f"{option}: ({off[0][0]:g}, {off[0][1]:g}) lies off the {plane} image ({columns} x {rows}"
                " pixels): give image pixels, x across and y down from its top left corner"
            )


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
