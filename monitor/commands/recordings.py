"""``monitor simulate``, ``monitor simulate-grid`` and ``monitor info``: recordings made and described."""

from __future__ import annotations

import sys
from pathlib import Path

from monitor.commands.options import frame_rate, positive_float, positive_int
from monitor.errors import MonitorError


def add_simulate(sub) -> None:
    """The ``simulate`` subcommand's options, defaults from ``SimConfig``."""
    # Over 60 lines on purpose: a declarative list, one option per statement; split, one command's
    # options would be scattered.
    from monitor.messages import LEVELS
    from monitor.sim.config import CLEFT_SITES, FIELDS, NOISE_LEVELS, SCENARIOS, SimConfig

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
    p.add_argument("--size", type=positive_int, default=d.size, help="detector pixels (square)")
    p.add_argument("--frames", type=positive_int, default=d.frames, help="frames per plane")
    p.add_argument(
        "--fps", type=frame_rate, default=d.fps, help="frames per second, 0.2-200 (FrameTime written)"
    )
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
        type=positive_float,
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
        "--cleft", action="store_true", help="a gas-filled intravertebral cleft (Kuemmell's disease)"
    )
    p.add_argument(
        "--cleft-site",
        choices=CLEFT_SITES,
        default=d.cleft_site,
        help="with --cleft, where the cleft lies: at mid-height, or on the superior or inferior endplate"
        " (cement filling it then rises above or below the bolus as a disc leak would)",
    )
    p.add_argument(
        "--contact-sheet",
        action="store_true",
        help="also write contact_sheet.png (first, middle, last frame of both planes)",
    )
    p.set_defaults(run=_run_simulate)


def _sim_config(args):
    """The ``SimConfig`` the command line describes; in the realistic world, with a room
    drawn from the seed (and the video format and round field a room's detector implies)."""
    from monitor.sim.simulate import SimConfig

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
        cleft_site=args.cleft_site,
    )
    if args.world != "realistic":
        return cfg
    from dataclasses import replace

    import numpy as np

    from monitor.sim.world import draw_world

    world = draw_world(np.random.default_rng(args.seed))
    video = {"bits": 8, "intensity": "LOG", "photometric": "MONOCHROME2"} if world.video else {}
    if world.detector == "intensifier" and cfg.field == "open":
        video["field"] = "round"  # an intensifier's field is its round input screen
    return replace(cfg, world=world, **video)


def _run_simulate(args) -> int:
    from monitor.sim.simulate import simulate

    cfg = _sim_config(args)
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
        + f" (rendered in {truth['render_seconds']} s)"
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


def add_simulate_grid(sub) -> None:
    p = sub.add_parser("simulate-grid", help="render a bead-grid calibration phantom (DICOM) with its truth")
    p.add_argument("out", type=Path, help="DICOM file to write; the truth goes next to it (.json)")
    p.add_argument("--pitch", type=float, default=5.0, metavar="MM", help="distance between beads")
    p.add_argument(
        "--distortion", type=float, default=0.0, metavar="K1", help="pincushion strength, e.g. 0.06"
    )
    p.add_argument("--size", type=positive_int, default=1024, help="image side in pixels")
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


def add_info(sub) -> None:
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
