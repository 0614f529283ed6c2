"""What one plane learns from its first frames, before anything is measured.

From the first ``Detection.baseline_frames`` frames of a plane: how its stored values map
to attenuation, the cannulas, a region of interest around the first cannula's tip, the
registered mean baseline over it with the layers shifted with it (see
``monitor.vision.baseline``), the cement already in it if monitoring began late, and the
vertebral body. :func:`learn_plane_baseline` is pure: frames and settings in, a frozen
:class:`PlaneBaseline` out; :class:`~monitor.vision.analysis.PlaneAnalyzer` measures every
later frame against it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from monitor.vision.anatomy import (
    DEFAULT_PRIORS,
    PIXEL_MM_UNKNOWN,
    AnatomyPriors,
    ApBody,
    Cannula,
    LateralBody,
    NotFound,
    exposed_field,
    find_ap_body,
    find_cannulas,
    find_lateral_body,
    steel_seen,
)
from monitor.vision.baseline import GROWN_MIN_MM2, BaselineState, cement_grown_mm2, find_cement_in_baseline
from monitor.vision.body import lies_inside
from monitor.vision.caveats import Caveat, CaveatCode
from monitor.vision.cement import Registration, shift_image
from monitor.vision.confidence import MAX_WALL_SPREAD_MM, MIN_OUTLINE_SUPPORT, WallConfidence, assess_wall
from monitor.vision.fill import fill_from_around
from monitor.vision.intensity import IntensityModel, model_for
from monitor.vision.pixels import PixelGrid
from monitor.vision.scatter import ScatterPhysics, primary_attenuation

ROI_FRACTION_WITHOUT_SCALE = 0.3  # half the ROI around the tip, as a share of the frame's larger side
COLLIMATION_MARGIN_PX = 9  # working pixels the exposed field is shrunk by: its edge is never compared
WALL_NOT_FOUND_MOVE_MM = 10.0  # a baseline frame where the wall is not found again: as if it moved this
# the pixels never compared (the steel, and outside the field) within this many mm of a bolus
# found in the baseline (a square's half side) are painted out with it: half an 11 G shaft and a margin
STEEL_IN_BOLUS_MM = 2.0


@dataclass(frozen=True)
class PlaneBaseline:
    """What a plane's first frames say. Pixel positions are working pixels of the whole
    frame (``roi``: x0, y0, x1, y1); the arrays of ``state`` cover ``roi``."""

    model: IntensityModel  # stored values to attenuation
    cannulas: list[Cannula]  # found on the first frame, the first one's tip leading
    roi: tuple[int, int, int, int]  # around the first cannula's tip (the whole frame without one)
    state: BaselineState  # the registered mean baseline and its layers over ``roi``
    body: LateralBody | ApBody | None  # the vertebral body (None: not found)
    anatomy_error: Caveat | None  # why the safety rules cannot be checked (None: they can)
    caveats: tuple[Caveat, ...]  # what every result of the plane must say from now on
    wall_confidence: WallConfidence | None = None  # lateral, for the wall found automatically
    grown_mm2: float = 0.0  # cement that grew while the baseline was taken (see cement_grown_mm2)

    @property
    def cement_grew(self) -> bool:
        """An injection was under way while the baseline was taken (GROWN_MIN_MM2 or more grew)."""
        return self.grown_mm2 >= GROWN_MIN_MM2


def learn_plane_baseline(
    frames: list[np.ndarray],
    plane: str,
    photometric: str,
    relationship: str | None,
    bits_stored: int,
    grid: PixelGrid,
    physics: ScatterPhysics,
    cement_mu_per_mm: float,
    roi_half_mm: float,
    priors: AnatomyPriors = DEFAULT_PRIORS,
    wall_limits: tuple[float, float] = (MIN_OUTLINE_SUPPORT, MAX_WALL_SPREAD_MM),
) -> PlaneBaseline:
    """The baseline of one plane from its first ``frames`` (each (H, W), stored values);
    the body is looked for as ``priors`` say a vertebral body looks, and a lateral wall
    found is judged by ``wall_limits`` (see :func:`assess_wall`)."""
    caveats: list[Caveat] = []
    model = model_for(photometric, relationship, bits_stored, frames)
    if model.relationship == "LOG" and not model.log_scale_measured:
        caveats.append(
            Caveat(
                CaveatCode.LOG_SCALE_GUESSED,
                "the LOG detector's scale could not be measured from its noise"
                " (filtered or too few frames); volumes assume three decades over the full range"
                " until syringe volumes are entered",
            )
        )

    def primary(pixels, scatter=True, parts=False):
        return primary_attenuation(pixels, grid, model, physics, None, scatter, parts)

    fits = bool(grid.full_pixel_mm) and physics.scatter_fraction > 0
    parts = [primary(f, parts=True) if fits else (primary(f), None, None) for f in frames]
    plain = primary(frames[0], scatter=False)  # finding steel and bone needs no scatter correction
    anatomy_error = None
    try:
        cannulas = find_cannulas(plain, grid.pixel_mm)
    except NotFound as e:
        cannulas = []
        anatomy_error = Caveat(CaveatCode.NO_CANNULA, str(e))
    roi = roi_around_tip(parts[0][0].shape, cannulas, grid.pixel_mm, roi_half_mm)
    attenuation, scatter_layers, shifts, growth = register_frames(parts, roi, fits)
    exclude, layers = baseline_layers(attenuation, plain, cannulas, roi, plane, grid.pixel_mm)
    x0, y0, x1, y1 = roi
    state = BaselineState(attenuation, layers, exclude[y0:y1, x0:x1], None, scatter_layers)
    tips = [(c.tip[0] - x0, c.tip[1] - y0) for c in cannulas]
    grown_mm2 = cement_grown_mm2(growth, state.exclude, tips, grid.pixel_mm or PIXEL_MM_UNKNOWN)
    if grown_mm2 >= GROWN_MIN_MM2:
        caveats.append(
            Caveat(
                CaveatCode.CEMENT_IN_BASELINE,
                f"cement grew over the first frames (about {grown_mm2:.0f} mm2 around the tip in the"
                f" {plane} view, nothing elsewhere), as when monitoring begins while cement is being"
                " injected: the volume may leave out what went in before; the cannula tip and the body"
                " outline were found on images holding cement, so a leak read off the outline, other"
                " than behind the wall, is a possible leak, as are lines leaving the bolus, and cement"
                " apart from it is not read as a leak",
            )
        )
    body, confidence = None, None
    if cannulas and grid.pixel_mm:
        state, body, error, prior_caveat = _find_body(
            plain, exclude, state, cannulas, roi, plane, grid, cement_mu_per_mm, priors, model.units_known
        )
        anatomy_error = error or anatomy_error
        caveats += [prior_caveat] if prior_caveat else []
        if isinstance(body, LateralBody):
            # the wall again on each later baseline frame (no cement-in-baseline to paint out)
            later = [] if state.prior is not None else list(zip(frames[1:], shifts[1:], strict=True))
            moves = [
                _wall_move(primary(f, scatter=False), s, body, cannulas, exclude, grid, priors)
                for f, s in later
            ]
            confidence = assess_wall(body, grid.pixel_mm, moves, *wall_limits)
            if state.prior is not None or grown_mm2 >= GROWN_MIN_MM2:
                # found on images holding cement, as the leaks read off its outline are (possible
                # leaks, above). Watched from frame 16 (0.3-1.5 mL in on the tuning seeds), tuning
                # 5006's wall was found 18 mm behind the true one and armed: the front read 21.7
                # mm from it with the cement 3.7 mm from the true wall, and no 5 mm alarm
                confidence = confidence.withheld(
                    "found on images already holding cement (monitoring began after it went in)"
                )
    elif cannulas:
        anatomy_error = Caveat(CaveatCode.UNCALIBRATED, "no millimetre scale, so no wall distance")
    return PlaneBaseline(
        model, cannulas, roi, state, body, anatomy_error, tuple(caveats), confidence, grown_mm2
    )


def _wall_move(
    plain: np.ndarray,
    shift: tuple[float, float],
    body: LateralBody,
    cannulas: list[Cannula],
    exclude: np.ndarray,
    grid: PixelGrid,
    priors: AnatomyPriors,
) -> float:
    """How far (mm) the posterior wall found on a later baseline frame (``plain``, its
    attenuation; ``shift`` its breathing shift from the first, working pixels) lies from
    ``body``'s, at the first cannula's tip; WALL_NOT_FOUND_MOVE_MM when none is found there.

    The wall's steadiness is measured, not the outline's plausibility, which the first frame's
    body has passed: an endplate taken on a later frame from a cleft's rim by the tip (nearer
    than ``priors.min_tip_from_endplate_mm``) only narrows the rows the wall is looked for in."""
    dx, dy = shift
    tx, ty = cannulas[0].tip
    moved = replace(cannulas[0], tip=(tx + dx, ty + dy))
    any_endplate = replace(priors, min_tip_from_endplate_mm=0.0)
    try:
        again = find_lateral_body(plain, moved, grid.pixel_mm, exclude, any_endplate)
    except NotFound:
        return WALL_NOT_FOUND_MOVE_MM
    return (float(again.posterior.at(ty + dy)) - dx - float(body.posterior.at(ty))) * grid.pixel_mm


def roi_around_tip(
    shape: tuple[int, int], cannulas: list[Cannula], pixel_mm: float | None, half_mm: float
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) working pixels: ``half_mm`` around the first cannula's tip (without a
    scale, ROI_FRACTION_WITHOUT_SCALE of the frame's larger side), the whole frame without one."""
    h, w = shape
    if not cannulas:
        return 0, 0, w, h
    tx, ty = cannulas[0].tip
    half = half_mm / pixel_mm if pixel_mm else ROI_FRACTION_WITHOUT_SCALE * max(h, w)
    return int(max(0, tx - half)), int(max(0, ty - half)), int(min(w, tx + half)), int(min(h, ty + half))


def register_frames(parts: list, roi: tuple[int, int, int, int], fits: bool):
    """The baseline: the frames' attenuation over ``roi`` registered to the first and
    averaged, (h, w) float32; with ``fits``, their measured intensity and modelled scatter
    likewise, (h, w, 2) float32 (else None). ``parts``: per frame, (attenuation, intensity,
    scatter) over the whole frame. Also returns each frame's shift (dx, dy) from the first,
    working pixels, and how the frames changed over the baseline: the mean of the last third
    minus that of the first, (h, w) float32 (cement growing, :func:`cement_grown_mm2`)."""
    x0, y0, x1, y1 = roi
    first = Registration(parts[0][0][y0:y1, x0:x1])
    registered, measured, shifts = [first.reference], [], []
    for i, (att, intensity, scatter) in enumerate(parts):
        dx, dy = (0.0, 0.0) if i == 0 else first.shift(att[y0:y1, x0:x1])
        shifts.append((dx, dy))
        if i:
            registered.append(shift_image(att[y0:y1, x0:x1], -dx, -dy))
        if fits:  # the intensity and the scatter modelled in it, for refitting the scatter
            measured.append(shift_image(cv2.merge([intensity, scatter])[y0:y1, x0:x1], -dx, -dy))
    attenuation = np.mean(registered, axis=0).astype(np.float32)
    third = max(1, len(registered) // 3)
    growth = (np.mean(registered[-third:], axis=0) - np.mean(registered[:third], axis=0)).astype(np.float32)
    measured_mean = np.mean(measured, axis=0).astype(np.float32) if fits else None
    return attenuation, measured_mean, shifts, growth


def baseline_layers(
    attenuation: np.ndarray,
    plain: np.ndarray,
    cannulas: list[Cannula],
    roi: tuple,
    plane: str,
    pixel_mm: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The pixels never to compare over the whole frame, (H, W) bool, and the layers shifted
    with the baseline over ``roi`` (see LAYER_*), (h, w, 4) float32. ``plain``: the first
    frame's attenuation without scatter correction, (H, W); ``pixel_mm``: its working pixel
    (None when the scale is unknown)."""
    x0, y0, x1, y1 = roi
    smooth = cv2.GaussianBlur(attenuation, (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / 8
    gradient = cv2.magnitude(gx, gy)
    # Pixels never to compare: the cannulas (their lumen fills with cement) and
    # anything outside the collimated field (its edge does not move with the patient).
    kernel = np.ones((COLLIMATION_MARGIN_PX, COLLIMATION_MARGIN_PX), np.uint8)
    outside = ~cv2.erode(exposed_field(plain).astype(np.uint8), kernel).astype(bool)
    exclude = outside.copy()
    for c in cannulas:
        exclude |= c.mask
    window = exclude[y0:y1, x0:x1]
    sleeve = np.zeros_like(window)
    if plane == "lateral" and cannulas:
        # Cement running back along the shaft, in a sleeve narrower than the band
        # excluded above, may be the front: for it only the steel itself is left out.
        # The steel: the core of each band found, and any steel the image shows in the band
        # (a second shaft beside an axis found between two).
        steel = steel_seen(plain, cannulas, pixel_mm)
        sleeve = (exclude & ~outside & ~steel)[y0:y1, x0:x1]
    layers = cv2.merge(  # in the order of LAYER_*
        [attenuation, gradient, window.astype(np.float32), sleeve.astype(np.float32)]
    )
    return exclude, layers


def _find_body(
    plain: np.ndarray,
    exclude: np.ndarray,
    state: BaselineState,
    cannulas: list[Cannula],
    roi: tuple,
    plane: str,
    grid: PixelGrid,
    cement_mu_per_mm: float,
    priors: AnatomyPriors,
    units_known: bool = True,
):
    """The body on the first frame, after the cement already in the baseline, if any, is
    found and painted out (``units_known``: whether the view's log units are the detector's,
    see :func:`find_cement_in_baseline`). Returns the state with that cement as its ``prior``, the body (or
    None), why it is missing (or None), and the caveat the cement in the baseline brings."""
    x0, y0, x1, y1 = roi
    prior_caveat = None
    found = find_cement_in_baseline(
        state.attenuation, state.exclude, cannulas, roi[:2], grid.pixel_mm, cement_mu_per_mm, units_known
    )
    if found is not None:
        state = BaselineState(
            state.attenuation, state.layers, state.exclude, (found.mask, found.values), state.scatter_layers
        )
        prior_caveat = Caveat(
            CaveatCode.CEMENT_IN_BASELINE,
            f"about {found.volume_ml:.1f} mL was already there when monitoring began,"
            " estimated from the first frames and counted in distance, leaks and volume; the outline"
            " was found on images holding it, so a leak read off it, other than behind the wall,"
            " is a possible leak",
        )
        # its edges are not the body's: look for the body without it, and without the steel
        # within it, whose cement-covered stretch would end in a bright box at the bolus's edge
        # (extra seed 5116 from frame 16: "the cannula tip 3.3 mm from an endplate")
        plain = plain.copy()
        hole = found.values > 0
        reach = 2 * int(round(STEEL_IN_BOLUS_MM / grid.pixel_mm)) + 1
        near = cv2.dilate(hole.astype(np.uint8), np.ones((reach, reach), np.uint8)).astype(bool)
        hole |= near & state.exclude
        window = plain[y0:y1, x0:x1]
        filled = fill_from_around(window, hole | state.exclude, 5)
        window[hole] = filled[hole]
    body, error = None, None
    try:
        find = find_lateral_body if plane == "lateral" else find_ap_body
        body = find(plain, cannulas[0], grid.pixel_mm, exclude, priors)
    except NotFound as e:
        error = Caveat(CaveatCode.NO_ANATOMY, str(e))
    if state.prior is not None and (
        body is None or not lies_inside(state.prior[0], body, roi[:2], grid.pixel_mm)
    ):
        body = None
        error = Caveat(
            CaveatCode.NO_ANATOMY,
            "cement already in the baseline hides the body's outline (draw the posterior wall to measure)",
        )
    return state, body, error, prior_caveat
