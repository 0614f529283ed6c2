"""Measurements on a frame's cement map: the front's substance, the leaks, the shaft.

Pure functions: arrays and geometry in working pixels of a region of interest, results
in millilitres, millimetres and full-resolution image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from monitor.vision.anatomy import BAND_WIDTHS, Cannula, LateralBody
from monitor.vision.cement import CementMap, ShaftReading, around
from monitor.vision.pixels import PixelGrid
from monitor.vision.sampling import sample_points


@dataclass
class Leak:
    site: str
    volume_ml: float
    centroid: tuple[float, float]  # image pixels
    box: tuple[int, int, int, int]  # x, y, w, h in image pixels


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

    def full(x: float, y: float) -> list[float]:
        return grid.to_full(x, y, roi_origin)

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
            x, y, w, h, area = stats[i]
            # A vein is a long thin streak; an epidural or paravertebral leak
            # spreads as a sheet or a blob.
            (_, _), (side_a, side_b), _ = cv2.minAreaRect(np.column_stack(np.nonzero(comp)[::-1]))
            length = max(side_a, side_b, 1.0) * pixel_mm
            width_mm = area * area_mm2 / length
            kind = "venous" if length >= 4.0 * width_mm and width_mm < 2.0 else site
            corner = full(x + origin[0], y + origin[1])
            box = (int(corner[0]), int(corner[1]), int(w * grid.scale), int(h * grid.scale))
            cx, cy = centroids[i]
            leaks.append(Leak(kind, volume, tuple(full(cx + origin[0], cy + origin[1])), box))
    return leaks


def read_shaft(
    difference: np.ndarray, cannula: Cannula, tip: tuple[float, float], body: LateralBody, pixel_mm: float
) -> ShaftReading | None:
    """Cement around the lateral shaft, under its steel, from the tip back, or None.

    ``difference`` (h, w): the frame's log difference over the ROI; ``tip``: the
    cannula's tip in that ROI's working pixels, this frame's shift included;
    ``pixel_mm``: mm per working pixel.

    Cement pushed back along the needle's track surrounds the steel and hides
    in its shadow in both views; the cannula is a tube, whose middle the beam
    crosses through two thin walls and the lumen, so the difference is read
    along its axis (the median over the middle fifth of its width), as what it
    adds over the lumen's own cement: that level is read on the shaft 3 mm or
    more behind the wall (at least 4 mm of it). Cement is where the excess is
    over 0.25 or six times the core's noise, continuously from the tip back."""
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
    reference = beyond_wall_mm >= 3.0
    if reference.sum() * pixel_mm < 4.0:
        return None
    lumen = float(np.median(core[reference]))
    noise = 1.4826 * float(np.median(np.abs(core[reference] - lumen)))
    excess = core - lumen > max(0.25, 6.0 * noise)
    start = int(np.argmin(np.abs(t)))  # the tip
    if not excess[start : start + max(2, int(round(1.0 / pixel_mm)))].all():
        return None  # no cement at the tip itself: nothing is being pushed back
    gap = max(2, int(round(0.6 / pixel_mm)))
    last, misses = start, 0
    for i in range(start, len(t)):
        if excess[i]:
            last, misses = i, 0
        else:
            misses += 1
            if misses >= gap:
                break
    run = slice(start, last + 1)
    half_width = BAND_WIDTHS / 2 * c.width_px
    return ShaftReading(xs[run], ys[run], (core - lumen)[run].astype(np.float32), half_width)
