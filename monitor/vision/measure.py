"""Measurements on a frame's cement map: the front's substance, the leaks, the shaft.

Pure functions: arrays and geometry in working pixels of a region of interest, results
in millilitres, millimetres and full-resolution image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from monitor.vision.alarms import Site
from monitor.vision.anatomy import BAND_WIDTHS, STEEL_WIDTH_FACTOR, ApBody, Cannula, LateralBody, Line
from monitor.vision.calibrate import NEEDLE_OUTER_MM
from monitor.vision.cement import CementMap, ShaftReading, around, front_distance_px, pieces_at_tips
from monitor.vision.lobes import Lobe
from monitor.vision.pixels import PixelGrid
from monitor.vision.sampling import sample_points

ENDPLATE_BAND_MM = 1.0  # cement this close to an endplate may be in the disc: it does not define the front


@dataclass(frozen=True)
class BehindWall:
    """Where a piece of cement read behind the posterior wall lies deepest: its signed distance
    from the wall (mm at the vertebra, and image pixels; negative, beyond it) and the point
    ((x, y) image pixels)."""

    distance_mm: float
    distance_px: float
    at: tuple[float, float]


def behind_wall(depth_px: float, at: tuple[float, float], grid: PixelGrid, roi_origin) -> BehindWall:
    """A piece's deepest point ``depth_px`` working pixels beyond the wall, at ``at`` (x, y)
    working pixels of the ROI starting at working pixel ``roi_origin``."""
    return BehindWall(-depth_px * grid.pixel_mm, -depth_px * grid.scale, tuple(grid.to_full(*at, roi_origin)))


@dataclass
class Leak:
    site: Site
    volume_ml: float
    centroid: tuple[float, float]  # image pixels
    box: tuple[int, int, int, int]  # x, y, w, h in image pixels
    apart: bool = False  # read with no outline, as cement apart from the bolus (find_apart_leaks)
    line: bool = False  # a vein's thin cast read along its length (monitor.vision.veins), at any volume
    doubt: str | None = None  # why it is only a possible leak, when its view knows (see vein_leaks)
    # "above" or "below" the bolus: a disc lobe read from the cement's relief (monitor.vision.lobes),
    # a leak only when the other view shows one on the same side, as far from the bolus (lobe_rise_mm)
    lobe: str | None = None
    lobe_rise_mm: float | None = None
    # lateral view, a piece read behind the posterior wall: how far beyond it its edge lies, and
    # where (find_leaks, track_leak); None elsewhere
    behind_wall: BehindWall | None = None


def substantial(cement: CementMap, pixel_mm: float, cement_mu_per_mm: float, min_ml: float) -> CementMap:
    """Only cement regions of at least ``min_ml``: specks left by noise or
    imperfect registration must not define the front (real leaks, however
    small, are caught by the leak detector, which needs them to persist)."""
    if not cement.mask.any():
        return cement
    window = around(cement.mask, 0)
    count, labels = cv2.connectedComponents(cement.mask[window].astype(np.uint8), connectivity=8)
    sums = np.bincount(
        labels.ravel(), weights=np.clip(cement.difference[window], 0, None).ravel(), minlength=count
    )
    volumes = sums * pixel_mm**2 / (cement_mu_per_mm * 1000.0)
    keep = volumes >= min_ml
    keep[0] = False
    mask = np.zeros_like(cement.mask)
    mask[window] = keep[labels]
    return replace(cement, mask=mask)


def _placed(
    grid: PixelGrid, roi_origin: tuple[int, int], origin: tuple[int, int], stats: np.ndarray, centroid
) -> tuple[tuple[int, int, int, int], tuple[float, float]]:
    """A labelled piece's box (x, y, w, h) and centroid (x, y) in image pixels, from its
    ``stats`` row and ``centroid`` (cv2.connectedComponentsWithStats) over a window starting at
    ``origin`` (x, y) of the ROI, which starts at working pixel ``roi_origin``."""
    x, y, w, h = (int(v) for v in stats[:4])
    corner = grid.to_full(x + origin[0], y + origin[1], roi_origin)
    box = (int(corner[0]), int(corner[1]), int(w * grid.scale), int(h * grid.scale))
    return box, tuple(grid.to_full(centroid[0] + origin[0], centroid[1] + origin[1], roi_origin))


def find_leaks(
    cement: CementMap,
    sides: dict,
    origin: tuple[int, int],
    grid: PixelGrid,
    roi_origin: tuple[int, int],
    cement_mu_per_mm: float,
    min_depth_mm: float,
) -> list[Leak]:
    """Cement outside the body, grouped by site; thin long streaks are venous.

    ``sides`` maps a site to (its region, each pixel's distance outside the
    outline, in working pixels); ``origin`` is where these arrays start in the ROI (x, y),
    ``roi_origin`` where the ROI starts in the frame (working pixels); a piece reaching
    less than ``min_depth_mm`` beyond the outline is not a leak.
    """
    pixel_mm = grid.pixel_mm
    leaks = []
    area_mm2 = pixel_mm**2
    for site, (region, beyond) in sides.items():
        outside = cement.mask & region
        if not outside.any():
            continue
        count, labels, stats, centroids = cv2.connectedComponentsWithStats(outside.astype(np.uint8), 8)
        for i in range(1, count):
            comp = labels == i
            # A sliver hugging the outline is the outline's own uncertainty (or the
            # blurred rim of cement inside); a leak reaches clearly beyond it.
            if float(beyond[comp].max()) * pixel_mm < min_depth_mm:
                continue
            volume = float(np.clip(cement.difference[comp], 0, None).sum()) * area_mm2
            volume /= cement_mu_per_mm * 1000.0
            # A vein is a long thin streak; an epidural or paravertebral leak
            # spreads as a sheet or a blob. Not in the disc: it has no veins (the
            # basivertebral vein leaves through the posterior wall, segmental veins at the
            # body's sides), and cement pressed into it first spreads as a thin film along
            # the endplate, a streak too.
            streak = _is_streak(comp, stats[i, cv2.CC_STAT_AREA], pixel_mm)
            kind = "venous" if streak and site != "disc" else site
            box, centroid = _placed(grid, roi_origin, origin, stats[i], centroids[i])
            deepest = None
            if site == "posterior":  # its edge by the front's own rule (half its level inside)
                piece = CementMap(cement.difference, comp, cement.threshold, cement.noise)
                edge = front_distance_px(piece, -beyond, comp, pixel_mm)  # every row of the piece
                if edge is not None and edge[0] < 0:
                    at = (float(edge[1][0] + origin[0]), float(edge[1][1] + origin[1]))
                    deepest = behind_wall(-edge[0], at, grid, roi_origin)
            leaks.append(Leak(kind, volume, centroid, box, behind_wall=deepest))
    return leaks


def _is_streak(piece: np.ndarray, area_px: int, pixel_mm: float) -> bool:
    """Whether a piece of cement (bool mask, ``area_px`` pixels) is a long thin streak, as a vein's
    cast or a film along an endplate: at least 4 times as long as wide and under 2 mm wide (the
    width is its area over the long side of its smallest enclosing box)."""
    (_, _), (side_a, side_b), _ = cv2.minAreaRect(np.column_stack(np.nonzero(piece)[::-1]))
    length = max(side_a, side_b, 1.0) * pixel_mm
    width_mm = area_px * pixel_mm**2 / length
    return length >= 4.0 * width_mm and width_mm < 2.0


FIRST_BOLUS_BLUR_MM = 1.0  # how far blur and threshold widen a small bolus's outline (see grown_from_tip)
FIRST_BOLUS_AREA_SLACK = 1.15  # ... and how much larger than that bound it may still be (see there)


@dataclass(frozen=True)
class ApartReading:
    """What :func:`find_apart_leaks` read on a frame: the cement connected to a tip (its volume
    in mL and its area in mm2) and the pieces apart read as leaks."""

    bolus_ml: float
    bolus_mm2: float
    leaks: list[Leak]


def grown_from_tip(first: ApartReading) -> bool:
    """Whether the first bolus read (``first``: the first frame it holds the leak size) is cement
    seen from its start: one piece, whose outline is no larger than that of a sphere of its
    volume widened by FIRST_BOLUS_BLUR_MM. New cement around a bolus already there when the
    monitoring began is a thin shell over a wide outline: on 76 late starts of the tuning cases
    (the first 8-20 frames dropped, with cement in them) its area was 1.1-2.2 times that bound
    on 61; of the other 15, 8 had the cement found in the baseline, 3 were in pieces already and
    4 were read, with no false leak. A bolus seen from its start was 0.44-0.89 times it (the 12
    tuning cases with no lateral outline). A darkness that reads the volume low makes the
    bound smaller: the rule then errs towards off, and on 8-bit video with brightness control
    a bolus seen from its start read 1.02-1.17 times it (tuning 5010, 5017, 5031: the last a
    venous leak left a possible one for want of it), so it may be FIRST_BOLUS_AREA_SLACK times
    larger. Chosen on the tuning seeds' late starts (the first 8-20 frames dropped): the first
    boluses that gained a leak on time read up to 1.09 times the bound; one at 1.19 (5009, 20
    frames in) read a false venous leak."""
    radius = (3.0 * first.bolus_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    bound = FIRST_BOLUS_AREA_SLACK * np.pi * (radius + FIRST_BOLUS_BLUR_MM) ** 2
    return not first.leaks and first.bolus_mm2 <= bound


def find_apart_leaks(
    cement: CementMap,
    tips: list[tuple[float, float]],
    directions: list[tuple[float, float]],
    grid: PixelGrid,
    roi_origin: tuple[int, int],
    cement_mu_per_mm: float,
    min_ml: float,
    veins: Sequence[tuple[float, float]] = (),
) -> ApartReading:
    """Cement apart from the bolus: the leaks a lateral view can read with no body outline.

    Cement is injected at the tip and spreads through the trabecular bone as one connected
    mass, and the projection of a connected mass is connected. A piece not connected to the
    cement at a tip (:func:`pieces_at_tips`) got where it is through a path too thin to see: a vein,
    or a breach in a cortex. On the 36 tuning cases such a piece showed in the lateral view on
    13 of the 24 leaks, from 1 frame before the truth's onset to 11 after (median +1), and
    never before any cement had left (in the AP view it also showed on cortex edges left by
    breathing, so that view does not read it). Pieces of less than ``min_ml`` are not read,
    nor is anything before the bolus itself holds ``min_ml`` (cement seen first away from every
    tip is not "apart" from a bolus: a cannula not found, or noise). The premise holds only for
    cement whose growth was seen from its start: the new cement around a bolus already there
    when monitoring began shows as a broken shell, so the caller reads the pieces only where
    the first bolus was :func:`grown_from_tip`.

    The site is a guess from where the piece lies seen from its nearest tip (``tips`` x, y in
    the ROI's working pixels with this frame's shift; ``directions`` each tip's unit vector out
    along its shaft, which enters from behind): a streak (:func:`_is_streak`) is venous; a piece
    within 45 degrees of the shaft behind the tip posterior; one ahead of the tip paravertebral;
    one above or below it (the spine's axis, across the shaft) disc. A piece whose box holds one
    of ``veins`` (where this view read a vein before, image pixels) is venous: a vein's cast
    that thickens is still a vein. ``cement`` (h, w) over the ROI whose corner is working pixel
    ``roi_origin``; the leaks' places in image pixels.
    """
    if not cement.mask.any() or not tips:
        return ApartReading(0.0, 0.0, [])
    pixel_mm = grid.pixel_mm
    window = around(cement.mask, 0)
    oy, ox = window[0].start, window[1].start
    mask = cement.mask[window]
    near = [(x - ox, y - oy) for x, y in tips]
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    weights = np.clip(cement.difference[window], 0, None).ravel()
    volumes = np.bincount(labels.ravel(), weights=weights, minlength=count)
    volumes *= pixel_mm**2 / (cement_mu_per_mm * 1000.0)
    bolus = pieces_at_tips(labels, count, near, pixel_mm)
    bolus_ml = float(volumes[bolus].sum())
    bolus_mm2 = float(stats[bolus, cv2.CC_STAT_AREA].sum()) * pixel_mm**2
    if bolus_ml < min_ml:
        return ApartReading(bolus_ml, bolus_mm2, [])
    leaks = []
    for i in np.flatnonzero(~bolus & (volumes >= min_ml)):
        if i == 0:
            continue
        box, centroid = _placed(grid, roi_origin, (ox, oy), stats[i], centroids[i])
        held = any(in_box(vein, box) for vein in veins)
        area = stats[i, cv2.CC_STAT_AREA]
        site = "venous" if held else _apart_site(labels == i, area, centroids[i], near, directions, pixel_mm)
        leaks.append(Leak(site, float(volumes[i]), centroid, box, apart=True))
    return ApartReading(bolus_ml, bolus_mm2, leaks)


def vein_leaks(
    lines: np.ndarray,
    difference: np.ndarray,
    grid: PixelGrid,
    roi_origin: tuple[int, int],
    cement_mu_per_mm: float,
    doubt: str | None = None,
    body: LateralBody | None = None,
    min_depth_mm: float = 0.0,
) -> list[Leak]:
    """Each vein of ``lines`` (bool (h, w) over the ROI, :func:`~monitor.vision.veins.find_vein_lines`)
    as a venous leak, its volume the cement's ``difference`` (log attenuation) summed over it. A vein
    is read as a line, not by its volume: the volume of a vein 1 mm wide is under the leak size
    until it is centimetres long (and the darkness of so thin a cast reads low besides). With
    ``doubt`` (why a line may not be a vein here) each is only a possible leak.

    With a lateral ``body`` (ROI coordinates, this frame's shift included), a line reaching
    ``min_depth_mm`` or more beyond its posterior wall says where it lies deepest
    (``Leak.behind_wall``): a basivertebral vein leaves through the wall into the epidural
    plexus, and once it is a confirmed leak that cement, not the bolus's front, is the nearest
    to the cord (tuning case 5031: a line 3.3 mm beyond the wall while the distance read the
    bolus's +1.7 mm for 11 frames). Its end is the last pixel holding half the line's own level
    (its 90th percentile: the mask is wider than a faint vein, so its median can be the
    background's) over its surroundings, as the front's rule reads an edge: the mask itself
    runs 1-2 mm past a faint vein's end (the segment filter's reach, the coarse grid). An
    independent review's synthetic vein ending 3.3 mm beyond the wall read 4.25-5.5 mm by the
    mask, 3.25-3.75 mm so, on backgrounds from -0.02 to +0.02."""
    if not lines.any():
        return []
    window = around(lines, 0)
    oy, ox = window[0].start, window[1].start
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(lines[window].astype(np.uint8), 8)
    weights = np.clip(difference[window], 0, None).ravel()
    volumes = np.bincount(labels.ravel(), weights=weights, minlength=count)
    volumes *= grid.pixel_mm**2 / (cement_mu_per_mm * 1000.0)
    leaks = []
    for i in range(1, count):
        box, centroid = _placed(grid, roi_origin, (ox, oy), stats[i], centroids[i])
        deepest = None
        if body is not None:
            ys, xs = np.nonzero(labels == i)
            deepest = _line_behind_wall(
                lines, difference, xs + ox, ys + oy, body, grid, roi_origin, min_depth_mm
            )
        leaks.append(
            Leak("venous", float(volumes[i]), centroid, box, line=True, doubt=doubt, behind_wall=deepest)
        )
    return leaks


def _line_behind_wall(
    lines: np.ndarray,
    difference: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    body: LateralBody,
    grid: PixelGrid,
    roi_origin: tuple[int, int],
    min_depth_mm: float,
) -> BehindWall | None:
    """Where a line (its pixels ``xs``, ``ys`` over the ROI) lies deepest beyond the posterior
    wall, if ``min_depth_mm`` or more: its end by the front's rule, where it holds half its own
    level over its surroundings (see :func:`vein_leaks`)."""
    inside = body.posterior_sign * body.posterior.signed_distance(xs, ys)  # positive anterior
    if -float(inside.min()) * grid.pixel_mm < min_depth_mm:
        return None  # not even its mask reaches that far (most lines: no surroundings read)
    values = difference[ys, xs]
    around_it = _line_surroundings(lines, xs, ys, max(2, int(round(1.0 / grid.pixel_mm))))
    background = float(np.median(difference[around_it])) if around_it[0].size else 0.0
    top = float(np.percentile(values, 90))
    if top <= background:
        return None  # no darker than around it: no level to read an end at
    held = values >= background + 0.5 * (top - background)
    k = int(np.argmin(np.where(held, inside, np.inf)))
    if -float(inside[k]) * grid.pixel_mm < min_depth_mm:
        return None
    return behind_wall(-float(inside[k]), (float(xs[k]), float(ys[k])), grid, roi_origin)


def _line_surroundings(lines: np.ndarray, xs: np.ndarray, ys: np.ndarray, reach: int) -> tuple:
    """The pixels within ``reach`` (a square) of a line's pixels ``xs``, ``ys`` (over ``lines``,
    bool (h, w)) that are on no line: (rows, columns), indices into the (h, w) arrays."""
    h, w = lines.shape
    y0, y1 = max(0, int(ys.min()) - reach), min(h, int(ys.max()) + reach + 1)
    x0, x1 = max(0, int(xs.min()) - reach), min(w, int(xs.max()) + reach + 1)
    piece = np.zeros((y1 - y0, x1 - x0), np.uint8)
    piece[ys - y0, xs - x0] = 1
    ring = cv2.dilate(piece, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)).astype(bool)
    rows, cols = np.nonzero(ring & ~lines[y0:y1, x0:x1])
    return rows + y0, cols + x0


def lobe_leaks(
    lobes: Sequence[Lobe],
    difference: np.ndarray,
    grid: PixelGrid,
    roi_origin: tuple[int, int],
    cement_mu_per_mm: float,
    doubt: str | None = None,
) -> list[Leak]:
    """Each of ``lobes`` (:func:`~monitor.vision.lobes.find_disc_lobes`) as a disc leak, its
    volume the cement's ``difference`` (log attenuation) summed over the lobe's part above the
    level it stands apart at (an under-read: the lobe is judged by the other view's, not by its
    volume); with ``doubt`` (why it may be no leak) each is only a possible one."""
    leaks = []
    for lobe in lobes:
        window = around(lobe.mask, 0)
        oy, ox = window[0].start, window[1].start
        piece = lobe.mask[window]
        ys, xs = np.nonzero(piece)
        whole = np.array([0, 0, piece.shape[1], piece.shape[0]])  # the window is the lobe's box
        box, centroid = _placed(grid, roi_origin, (ox, oy), whole, (xs.mean(), ys.mean()))
        volume = float(np.clip(difference[window][piece], 0, None).sum())
        volume *= grid.pixel_mm**2 / (cement_mu_per_mm * 1000.0)
        side = "above" if lobe.above else "below"
        leaks.append(Leak("disc", volume, centroid, box, doubt=doubt, lobe=side, lobe_rise_mm=lobe.rise_mm))
    return leaks


def in_box(point: tuple[float, float], box: tuple[int, int, int, int]) -> bool:
    """Whether ``point`` (x, y) lies in ``box`` (x, y, w, h), image pixels."""
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


def _apart_site(
    piece: np.ndarray,
    area_px: int,
    centroid: tuple[float, float],
    tips: list[tuple[float, float]],
    directions: list[tuple[float, float]],
    pixel_mm: float,
) -> Site:
    """A piece apart's site from its shape and where it lies seen from its nearest tip (see
    :func:`find_apart_leaks`)."""
    if _is_streak(piece, area_px, pixel_mm):
        return "venous"
    cx, cy = centroid
    k = int(np.argmin([np.hypot(cx - tx, cy - ty) for tx, ty in tips]))
    (tx, ty), (ux, uy) = tips[k], directions[k]
    behind = (cx - tx) * ux + (cy - ty) * uy  # along the shaft, out of the body
    across = abs((cx - tx) * uy - (cy - ty) * ux)
    if behind >= across:
        return "posterior"
    return "paravertebral" if -behind >= across else "disc"


@dataclass(frozen=True)
class AxisProfile:
    """The log difference along a lateral shaft's axis (the median over the middle fifth of
    its width), from 2 mm ahead of the tip out to where the shaft leaves the ROI: positions
    ``t`` (working pixels from the tip), points ``xs``/``ys`` (ROI working pixels), ``core``,
    and each point's distance beyond the posterior wall (mm, negative in front of it). Read once
    a frame; :func:`read_shaft` and :func:`read_track` both read it."""

    t: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    core: np.ndarray
    beyond_wall_mm: np.ndarray


def axis_profile(
    difference: np.ndarray, cannula: Cannula, tip: tuple[float, float], body: LateralBody, pixel_mm: float
) -> AxisProfile:
    """``difference`` (h, w): the frame's log difference over the ROI; ``tip``: the cannula's
    tip in that ROI's working pixels, this frame's shift included; ``pixel_mm``: mm per working
    pixel."""
    c = cannula
    tx, ty = tip
    ux, uy = c.direction
    h, w = difference.shape
    t = np.arange(-2.0 / pixel_mm, max(h, w), 1.0, dtype=np.float32)  # from 2 mm ahead of the tip
    xs, ys = tx + ux * t, ty + uy * t
    ahead = int(2.0 / pixel_mm)
    leaves = np.flatnonzero(~((xs >= 1) & (xs < w - 2) & (ys >= 1) & (ys < h - 2))[ahead:])
    if leaves.size:  # up to where the shaft leaves the ROI
        t, xs, ys = (v[: ahead + leaves[0]] for v in (t, xs, ys))
    u = np.linspace(-0.1, 0.1, 5, dtype=np.float32) * c.width_px
    grid_x = (xs[None, :] - uy * u[:, None]).astype(np.float32)
    grid_y = (ys[None, :] + ux * u[:, None]).astype(np.float32)
    core = np.median(sample_points(difference, grid_x, grid_y), axis=0)
    beyond_wall_mm = -body.posterior_sign * body.posterior.signed_distance(xs, ys) * pixel_mm
    return AxisProfile(t, xs, ys, core, beyond_wall_mm)


def _lumen_level(profile: AxisProfile, pixel_mm: float) -> tuple[float, float] | None:
    """The lumen's own level on the axis and its noise (robust sd), read on the shaft 3 mm or
    more behind the wall, where no bolus is (at least 4 mm of it), or None."""
    reference = profile.beyond_wall_mm >= 3.0
    if reference.sum() * pixel_mm < 4.0:
        return None
    lumen = float(np.median(profile.core[reference]))
    return lumen, 1.4826 * float(np.median(np.abs(profile.core[reference] - lumen)))


def _run_end(on: np.ndarray, start: int, pixel_mm: float) -> int:
    """The last index of the run of ``on`` (bool along the axis, one working pixel a step)
    from ``start`` on, bridging gaps shorter than 0.6 mm (two steps at least)."""
    gap = max(2, int(round(0.6 / pixel_mm)))
    last, misses = start, 0
    for i in range(start, len(on)):
        if on[i]:
            last, misses = i, 0
        else:
            misses += 1
            if misses >= gap:
                break
    return last


def read_shaft(profile: AxisProfile, cannula: Cannula, pixel_mm: float) -> ShaftReading | None:
    """Cement around the lateral shaft, under its steel, from the tip back, or None; read on
    the shaft's :func:`axis_profile` (``pixel_mm``: mm per working pixel).

    Cement pushed back along the needle's track surrounds the steel and hides
    in its shadow in both views; the cannula is a tube, whose middle the beam
    crosses through two thin walls and the lumen, so the difference is read
    along its axis (the median over the middle fifth of its width), as what it
    adds over the lumen's own cement: that level is read on the shaft 3 mm or
    more behind the wall (at least 4 mm of it). Cement is where the excess is
    over 0.25 or six times the core's noise, continuously from the tip back."""
    level = _lumen_level(profile, pixel_mm)
    if level is None:
        return None
    lumen, noise = level
    t, core = profile.t, profile.core
    excess = core - lumen > max(0.25, 6.0 * noise)
    start = int(np.argmin(np.abs(t)))  # the tip
    if not excess[start : start + max(2, int(round(1.0 / pixel_mm)))].all():
        return None  # no cement at the tip itself: nothing is being pushed back
    run = slice(start, _run_end(excess, start, pixel_mm) + 1)
    half_width = BAND_WIDTHS / 2 * cannula.width_px
    return ShaftReading(profile.xs[run], profile.ys[run], (core - lumen)[run].astype(np.float32), half_width)


# Cement leaving the body along the needle's track, under the steel where the shaft crosses the
# posterior wall. The lumen's own cement is a sample of the cement's contrast in this room: a
# sleeve around the steel counts where it adds at least this share of that level on the axis
# (about 1 mm of cement around the tube), over the noise.
TRACK_LUMEN_SHARE = 0.5
TRACK_NOISE_SIGMAS = 6.0
TRACK_FROM_WALL_MM = 1.0  # the sleeve starts no further than this beyond the wall (it comes out through it)
TRACK_CLEAR_MM = (-2.0, 6.0)  # no other shaft may cross the axis this near the wall (from, to: mm beyond)
# The cannula is the gauge whose outer diameter (calibrate.NEEDLE_OUTER_MM) is nearest the shaft's
# measured width (measured 2.3-4.2 mm for a 3.05 mm 11 G one on the benchmark's cases), its
# bore that less two steel walls of this (an 11 G thin-wall cannula: bore about 2.4 mm,
# ../shared/DOMAIN.md). The lumen's level over its bore is the cement's effective attenuation in
# this room (scatter, spectrum and opacifier included), by which the sleeve's volume is read,
# kept within these multiples of the configured one: the lumen's level moves with the steel's
# own contrast when brightness control steps the kVp (0.12 -> 0.008 -> 0.39 over six frames on
# one tuning case), and a volume read over a near-zero level would be any size.
CANNULA_WALL_MM = 0.3
TRACK_MU_BOUNDS = (0.1, 1.5)


@dataclass(frozen=True)
class TrackReading:
    """Cement under the lateral shaft beyond the posterior wall: points (ROI working pixels),
    what it adds on the axis over the lumen's own cement (log units), the half-width of the
    band the shaft hides (working pixels), how far beyond the wall it reaches (mm), the
    cement's effective attenuation read from the lumen (1/mm), and the cannula's nominal outer
    diameter (mm)."""

    xs: np.ndarray
    ys: np.ndarray
    values: np.ndarray
    half_width: float
    depth_mm: float
    mu_per_mm: float
    outer_mm: float


def read_track(
    profile: AxisProfile,
    threshold: np.ndarray,
    cannula: Cannula,
    pixel_mm: float,
    cement_mu_per_mm: float,
    other_shafts: np.ndarray | None = None,
) -> TrackReading | None:
    """Cement around the shaft where it leaves the body through the posterior wall, or None.

    A posterior leak often runs back along the needle's track, hidden under the steel, and
    with a faint cement (a high kVp, much scatter) it is not over the fixed level
    :func:`read_shaft` asks for, nor joined to the cement at the tip. It is read on the axis
    as what it adds over the lumen's own level (read 3 mm or more behind the wall, as there),
    in a run that starts within TRACK_FROM_WALL_MM beyond the wall: over TRACK_LUMEN_SHARE of
    the lumen's level, the noise and the cement map's own threshold there (edges,
    misregistration). None when the lumen's level is not over its noise and the cement map's
    threshold (the lumen not filled: nothing says what the cement's contrast is), or when
    another cannula's shaft (``other_shafts``, bool over the ROI) crosses the axis within
    TRACK_CLEAR_MM of the wall: its lumen filling would read as a sleeve.
    Read on the shaft's :func:`axis_profile`, with the cement map's ``threshold`` over the ROI;
    ``cement_mu_per_mm`` the configured attenuation, which bounds the lumen's (TRACK_MU_BOUNDS)."""
    beyond = profile.beyond_wall_mm
    if other_shafts is not None and other_shafts.any():
        h, w = other_shafts.shape
        col = np.clip(np.rint(profile.xs).astype(int), 0, w - 1)
        row = np.clip(np.rint(profile.ys).astype(int), 0, h - 1)
        near = (beyond >= TRACK_CLEAR_MM[0]) & (beyond <= TRACK_CLEAR_MM[1])
        if other_shafts[row[near], col[near]].any():
            return None
    level = _lumen_level(profile, pixel_mm)
    if level is None:
        return None
    lumen, noise = level
    threshold = sample_points(threshold, profile.xs, profile.ys)
    if lumen < max(TRACK_NOISE_SIGMAS * noise, float(np.median(threshold[beyond >= 3.0]))):
        return None
    floor = np.maximum(max(TRACK_LUMEN_SHARE * lumen, TRACK_NOISE_SIGMAS * noise), threshold)
    excess = profile.core - lumen
    over = excess > floor
    first = np.flatnonzero(over & (beyond >= 0.0) & (beyond <= TRACK_FROM_WALL_MM))
    if first.size == 0:
        return None
    last = _run_end(over, int(first[0]), pixel_mm)
    run = slice(int(first[0]), last + 1)
    measured_mm = cannula.width_px * pixel_mm
    outer_mm = min(NEEDLE_OUTER_MM.values(), key=lambda d: abs(d - measured_mm))
    mu = float(
        np.clip(lumen / (outer_mm - 2.0 * CANNULA_WALL_MM), *(np.array(TRACK_MU_BOUNDS) * cement_mu_per_mm))
    )
    return TrackReading(
        profile.xs[run],
        profile.ys[run],
        excess[run].astype(np.float32),
        BAND_WIDTHS / 2 * cannula.width_px,
        float(beyond[last]),
        mu,
        outer_mm,
    )


def track_leak(track: TrackReading, grid: PixelGrid, roi_origin: tuple[int, int]) -> Leak:
    """The posterior leak a track reading is. Its volume (mL): a sleeve whose projected
    thickness is the axis reading over the lumen's attenuation, tapering as a parabola to
    nothing at the band's edges (BAND_WIDTHS of the nominal outer diameter), integrated across
    the part the steel hides (STEEL_WIDTH_FACTOR of it; the strips beside it are the cement
    map's, which find_leaks counts), along the run (one working pixel a point)."""
    pixel_mm = grid.pixel_mm
    hidden = STEEL_WIDTH_FACTOR / 2 * track.outer_mm  # mm each side of the axis
    band = BAND_WIDTHS / 2 * track.outer_mm
    across_mm = 2.0 * hidden - 2.0 * hidden**3 / (3.0 * band**2)  # the parabola's integral over it
    volume = float(np.clip(track.values, 0, None).sum()) * across_mm * pixel_mm
    volume /= track.mu_per_mm * 1000.0
    x0, x1 = float(track.xs.min() - track.half_width), float(track.xs.max() + track.half_width)
    y0, y1 = float(track.ys.min() - track.half_width), float(track.ys.max() + track.half_width)
    corner = grid.to_full(x0, y0, roi_origin)
    box = (int(corner[0]), int(corner[1]), int((x1 - x0) * grid.scale), int((y1 - y0) * grid.scale))
    centre = grid.to_full(float(track.xs.mean()), float(track.ys.mean()), roi_origin)
    deepest = behind_wall(
        track.depth_mm / pixel_mm, (float(track.xs[-1]), float(track.ys[-1])), grid, roi_origin
    )
    return Leak("posterior", volume, tuple(centre), box, behind_wall=deepest)


class DistanceMaps:
    """Signed distances of every pixel of a ROI of ``shape`` (h, w) to a wall. Breathing only
    translates a wall, which adds a constant to its map: a map is computed once per slope."""

    MAX_SLOPES = 16  # more: walls replaced by the operator; start again

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self._maps: dict = {}  # (slope, vertical) -> (offset, map)

    def signed(self, line: Line, window: tuple[slice, slice]) -> np.ndarray:
        """:meth:`Line.signed_distance` of the pixels in ``window`` of the ROI (float32)."""
        if line.bow is not None:  # not one map shifted (its bow moves along with it): read here
            rows, cols = window  # a row and a column of coordinates, broadcast by the arithmetic
            ys = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None]
            xs = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :]
            return line.signed_distance(xs, ys).astype(np.float32)
        key = (line.a, line.vertical)
        if key not in self._maps:
            if len(self._maps) > self.MAX_SLOPES:
                self._maps.clear()
            h, w = self.shape
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            self._maps[key] = (line.b, line.signed_distance(xs, ys).astype(np.float32))
        b0, base = self._maps[key]
        return base[window] + np.float32((line.b - b0) / np.hypot(1.0, line.a))


@dataclass
class CementReading:
    """What a frame's cement says against the body: in working pixels of the ROI."""

    front_px: float | None = None  # the front's distance anterior of the wall (negative: beyond)
    front_at: tuple[float, float] | None = None  # the front's (x, y) in the ROI
    front_under_cannula: bool = False  # the front is the end of the cement read along the shaft
    leaks: list[Leak] = field(default_factory=list)


def read_cement(
    cement: CementMap,
    body: LateralBody | ApBody,
    distances: DistanceMaps,
    shaft: ShaftReading | None,
    grid: PixelGrid,
    roi_origin: tuple[int, int],
    cement_mu_per_mm: float,
    front_min_ml: float,
    leak_margin_mm: float,
    leak_min_depth_mm: float,
    track: TrackReading | None = None,
) -> CementReading:
    """The front's distance to the posterior wall (lateral) and the leaks (both views).

    ``cement`` (h, w) over the ROI whose corner is working pixel ``roi_origin``; ``body``
    in that ROI's coordinates with this frame's shift; ``shaft``: the cement read along the
    lateral shaft, if any. Leaks are cement beyond the outline by ``leak_margin_mm``,
    reaching ``leak_min_depth_mm`` beyond it, by site: lateral posterior (the canal), disc
    and paravertebral; AP paravertebral only (endplates are seen obliquely there); and, in
    the lateral view, the cement under the shaft beyond the wall (``track``,
    :func:`read_track`) when it reaches as far, a posterior leak.
    """
    # Over 60 lines on purpose: the front (lateral) and the leak sites read from the same signed
    # distances to the outline over one window around the cement; split, both parts would take them.
    reading = CementReading()
    if track is not None and isinstance(body, LateralBody) and track.depth_mm >= leak_min_depth_mm:
        reading.leaks.append(track_leak(track, grid, roi_origin))
    if not cement.mask.any():
        return reading
    pixel_mm = grid.pixel_mm
    # Only around the cement: the front and the leaks are made of its pixels.
    window = around(cement.mask, 2)
    origin = (window[1].start, window[0].start)
    cement = CementMap(cement.difference[window], cement.mask[window], cement.threshold[window], cement.noise)

    def distance(line: Line) -> np.ndarray:
        return distances.signed(line, window)

    margin = leak_margin_mm / pixel_mm
    below_top = -distance(body.superior)  # positive below the superior endplate
    above_bottom = distance(body.inferior)  # positive above the inferior endplate
    level = (below_top > 0) & (above_bottom > 0)
    if isinstance(body, LateralBody):
        s = body.posterior_sign
        inside_post = s * distance(body.posterior)  # positive anterior of the wall
        inside_ant = -s * distance(body.anterior)
        # Cement hugging an endplate may be in the disc beyond it (a concave endplate
        # projects as a band, and a disc leak starts as a film under it): not the front.
        band = ENDPLATE_BAND_MM / pixel_mm
        clear = (below_top > band) & (above_bottom > band)
        solid = substantial(cement, pixel_mm, cement_mu_per_mm, front_min_ml)
        found = front_distance_px(solid, inside_post, clear, pixel_mm)
        if shaft is not None:  # the end of the cement read along the shaft's middle
            x, y = float(shaft.xs[-1]), float(shaft.ys[-1])
            along = float(s * body.posterior.signed_distance(x, y))
            if found is None or along < found[0]:
                found = (along, (x - origin[0], y - origin[1]))
                reading.front_under_cannula = True
        if found is not None:
            reading.front_px = found[0]
            reading.front_at = (found[1][0] + origin[0], found[1][1] + origin[1])
        between_walls = (inside_post > 0) & (inside_ant > 0)
        # site -> (region, how far outside the outline each pixel is, pixels)
        beyond_plates = np.maximum(-below_top, -above_bottom)
        sides = {
            # behind the wall at any height: the canal (epidural space, basivertebral veins)
            "posterior": (inside_post < -margin, -inside_post),
            # above or below the body, in front of the wall: the discs
            "disc": ((beyond_plates > margin) & between_walls, beyond_plates),
            "paravertebral": ((inside_ant < -margin) & level, -inside_ant),
        }
    else:
        inside_left = -distance(body.left)
        inside_right = distance(body.right)
        # In AP only the lateral walls: endplates are seen obliquely there and
        # disc leaks show better in the lateral view.
        beyond = np.maximum(-inside_left, -inside_right)
        sides = {"paravertebral": ((beyond > margin) & level, beyond)}
    reading.leaks = (
        find_leaks(cement, sides, origin, grid, roi_origin, cement_mu_per_mm, leak_min_depth_mm)
        + reading.leaks
    )
    return reading
