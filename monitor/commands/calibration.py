"""``monitor calibrate``: a room's scale (and distortion) measured into a calibration profile."""

from __future__ import annotations

from pathlib import Path

from monitor.errors import MonitorError


def add_calibrate(sub) -> None:
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
        model = model_for(i.analysis_photometric, i.intensity_relationship, i.value_bits, [frame])
    att = model.attenuation(frame.astype(np.float32))
    return att, -att


def _run_calibrate(args) -> int:
    import json

    from monitor.vision.calibrate import CalibrationError

    att, dark = _calibration_image(args.image, args.light_is_dense)
    profile_id = args.id or args.image.stem
    try:
        if args.method == "grid":
            profile = _grid_profile(args, att, dark, profile_id)
        else:
            profile = _needle_profile(args, att, profile_id)
    except CalibrationError as e:
        raise MonitorError(f"{args.image}: {e}") from None
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(profile, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _grid_profile(args, att, dark, profile_id: str) -> dict:
    """The profile from a bead grid: scale and radial distortion, with the residuals said."""
    from monitor.io.profile import profile_json
    from monitor.vision.calibrate import fit_grid

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
    return profile_json(
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


def _needle_profile(args, att, profile_id: str) -> dict:
    """The profile from the cannula's known diameter: the scale at the cannula, and how sure."""
    from monitor.io.profile import profile_json
    from monitor.vision.anatomy import NotFound, find_cannula
    from monitor.vision.calibrate import CalibrationError, fit_needle

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
    return profile_json(
        profile_id,
        att.shape,
        (fit.spacing_mm, fit.spacing_mm),
        "needle",
        pct,
        notes={"gauge": args.gauge, "diameter_px": round(fit.diameter_px, 3)},
    )
