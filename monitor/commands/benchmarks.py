"""``monitor bench``: benchmarks that print measured numbers."""

from __future__ import annotations

import sys
from pathlib import Path

from monitor.commands.options import kill_count, kill_interval_s, non_negative_int, positive_int, syringe_ml
from monitor.errors import MonitorError


def add_bench(sub) -> None:
    """The ``bench`` subcommands and their options."""
    # Over 60 lines on purpose: a declarative list, one subcommand and its options after another.
    p = sub.add_parser("bench", help="benchmarks that print measured numbers")
    which = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    t = which.add_parser("transport", help="frame throughput vs imagezmq, and end-to-end latency")
    t.add_argument("--frames", type=positive_int, default=300, help="frames per throughput run")
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
        choices=("reporting", "tuning", "tuning-extra"),
        default="reporting",
        help="realistic world: the 36 reporting seeds, the 36 tuning ones (tune on these only), or"
        " 48 more tuning ones (5100-5147: check a change tuned on the first 36 on cases it was not"
        " tuned on, before the reporting seeds)",
    )
    a.add_argument(
        "--cases",
        type=positive_int,
        default=None,
        help="the first N cases (default: all of the seed set; 30 in the simple world)",
    )
    a.add_argument("--json", type=Path, default=None, help="also write per-case results here")
    a.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="cases evaluated in parallel (faster; per-frame times then include the contention)",
    )
    a.add_argument(
        "--syringe",
        type=syringe_ml,
        default=0.0,
        metavar="ML",
        help="the operator enters a syringe of ML mL each time that much more cement has gone in"
        " (as pressing '1 mL delivered'); 0: no syringe input, the images alone (default)",
    )
    a.add_argument(
        "--operator-wall",
        choices=("never", "asked", "always"),
        default="never",
        help="the operator draws the posterior wall (a line along the truth's, each end up to 0.5 mm"
        " off): 'asked', on the first frame after the baseline whose wall the monitor did not arm, as"
        " the viewer asks; 'always', on every case, as --wall does; 'never', the monitor alone (default)",
    )
    a.add_argument(
        "--start-frame",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="begin monitoring at frame N of each case (0: its first, default), as when the monitor"
        " is started after cement went in: scored from there, a 5 mm crossing or leak before its"
        " first measured frame owed on that frame, the volume all the cement injected",
    )
    a.add_argument(
        "--volume-plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also plot the volume's two estimates (the image's darkness, the two views' shape) and"
        " the reported one against the truth, every frame of 0.5 mL or more, into this PNG",
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
        "--sessions", type=positive_int, default=10000, help="session logs to generate and summarise"
    )
    su.add_argument(
        "--dir", type=Path, default=None, help="keep the generated logs here (reused by the next run)"
    )
    su.add_argument("--workers", type=positive_int, default=2, help="processes generating the logs")
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
    ig.add_argument("--repeats", type=positive_int, default=3, help="throughput runs with and without")
    ig.set_defaults(run=_run_bench_igtl)
    rs = which.add_parser(
        "restart",
        help="how long results stop when the analyzer crashes: killed mid-run, to its next result",
    )
    rs.add_argument("--kills", type=kill_count, default=4, help="times the analyzer is killed (1-100)")
    rs.add_argument(
        "--every",
        type=kill_interval_s,
        default=6.0,
        help="seconds from results beginning, and from their return after each kill, to the next kill",
    )
    rs.set_defaults(run=_run_bench_restart)


def _run_bench_restart(args) -> int:
    from monitor.bench import INTERRUPTED_EXIT, restart_gaps

    print(
        f"restart benchmark: the bundled default recording replayed at its rate, the analyzer killed"
        f" (SIGKILL) {args.kills} time(s), every {args.every:g} s"
    )
    out = restart_gaps(args.kills, args.every)
    gaps = out["gaps_s"]
    if out["median_s"] is not None:
        print(
            f"results stopped for {out['median_s']:.2f} s (median), {out['max_s']:.2f} s (max) after"
            f" each kill: {', '.join('none in 60 s' if g is None else f'{g:.2f}' for g in gaps)} s"
        )
    if out["run_exit"] != INTERRUPTED_EXIT:  # the benchmark ends its run with an interrupt
        print(f"the run ended otherwise than interrupted (exit {out['run_exit']}); it said:", file=sys.stderr)
        print("\n".join(f"  {line}" for line in out["said"]), file=sys.stderr)
        return 1
    if len(gaps) < args.kills or None in gaps:
        print(
            f"measured {sum(g is not None for g in gaps)} of {args.kills} kill(s): after the others no"
            " result came within 60 s, or the run ended first",
            file=sys.stderr,
        )
        return 1
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
        syringe_ml=args.syringe,
        volume_plot=args.volume_plot,
        operator_wall=args.operator_wall,
        start_frame=args.start_frame,
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
