"""Cement through an endplate: a lobe above or below the bolus, apart from it across a valley.

A disc leak leaves the vertebral body through a crack in an endplate and spreads as a film in
the disc. Where no outline of the body is found (most real-CT levels), there is no endplate
line to see it cross. But the cement's own relief tells it: the crack is narrow and the
endplate's cortex lies between, so in projection the disc's cement shows as a second summit of
the log difference since the baseline, above or below the bolus, joined to it (if at all) only
across a valley. On the tuning seeds the film stood 9-11 mm above or below the bolus's centre
in both views, from the first or second frame of the leak, and its valley dipped to 0.3-0.7 of
its own summit (0.86 where dense cement behind scatter flattens the relief: :data:`VALLEY_DEPTH`).

Cement filling the trabecular bone has lobules and summits too, but they lie beside each
other, not stacked past the bolus's top or bottom, and they are never one in each view at the
same time. So a lobe here is the part of the cement joined to the bolus (the part at a
cannula's tip, :data:`TIP_REACH_MM`; with two cannulas, the nearest one's) that stands apart
from it when the relief is cut at some level, where both summits, the lobe's and the bolus's
own cement's, rise at least :data:`VALLEY_DEPTH` over that level and :data:`VALLEY_NOISE_SDS`
noise sds over it (the steel, which joins the bolus at every level, is not a side of a valley:
a bolus denser away from its tip than at it is one mass), with at least :data:`LOBE_MIN_MM2` at
that level, lying above or below the bolus (its centre at least twice as far up or down as
sideways) and wholly beyond the bolus's part at that level. The caller raises it as a disc leak
only when the other view shows one on the same side, as far from its bolus
(:class:`monitor.vision.analysis.CaseAnalyzer`): on the 36 tuning cases and the 30 of the
simple world, a lobe in one view alone showed on five venous leaks and one case with no leak
(the AP view of tuning 5034); in both views at once, on the disc leaks only. Cement filling a
gas cleft just under an endplate (Kuemmell's disease) can show the same way where no outline
places the endplate; the caller says such a lobe is only a possible leak on a level whose cleft
the operator knows of (``PlaneAnalyzer._read_lobes``), and a disc leak on any other.

The views' rows are both cranio-caudal with the spine upright on the screen, as
:mod:`monitor.vision.biplane` also takes them; a view shown upside down would not confirm the
other (a missed lobe, not a false one).

Pure: arrays over a region of interest in working pixels in, lobes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from monitor.vision.cement import around

# A lobe's valley dips under this share of its own summit. The tuning seeds' disc leaks dipped
# to 0.3-0.7, but dense cement behind scatter flattens the relief: 5026's lateral (ZrO2 at 65 kVp,
# scatter-to-primary 0.87) rose to a plateau of 0.8 log units over bolus and film alike, its
# valley at 0.86 of the film's summit, and the leak was missed in both views (0.8 until session 45).
VALLEY_DEPTH = 0.9
VALLEY_NOISE_SDS = 4.0  # ... and by at least this many noise sds
LOBE_MIN_MM2 = 4.0  # a lobe's area where it stands apart
FIRST_LEVEL = 1.5  # the relief is cut from this many times the segmentation's threshold ...
LEVEL_STEP = 1.15  # ... each level this much over the last
TIP_REACH_MM = 2.0  # the bolus at a level: its parts within this of a cannula's tip
MAX_LEVELS = 64  # at most this many levels (15 % apart: a 8000-fold range)
STEEL_JOIN_MM = 1.5  # steel this near the cement joins it (the shaft splits a bolus around it)
NOISE_SDS_IN_THRESHOLD = 5.0  # the segmentation's threshold in noise sds (monitor.vision.cement)


@dataclass(frozen=True)
class Lobe:
    """A lobe of cement above (``above``, towards the image's top) or below the bolus: ``mask``
    (h, w) bool over the ROI, its part above ``level`` (log difference) where it stands apart;
    ``summit`` its highest difference; ``rise_mm`` how far its centre lies from the bolus's at
    that level, up or down."""

    above: bool
    mask: np.ndarray
    level: float
    summit: float
    rise_mm: float


def find_disc_lobes(
    difference: np.ndarray,
    cement: np.ndarray,
    steel: np.ndarray,
    tips: list[tuple[float, float]],
    threshold: float,
    pixel_mm: float,
) -> list[Lobe]:
    """The lobes of cement above and below the bolus (see the module): at most one each way,
    the largest. ``difference`` (h, w) log attenuation since the baseline, ``cement`` (h, w)
    bool the segmented cement, ``steel`` (h, w) bool the pixels not read (cannulas), ``tips``
    (x, y) working pixels of the ROI, ``threshold`` the segmentation's (log units, the least
    over the ROI), ``pixel_mm`` the working pixel's size."""
    if not tips or not cement.any() or threshold <= 0:
        return []
    join = _disk(STEEL_JOIN_MM / pixel_mm)
    window = around(cement, join.shape[0])
    mask = cement[window]
    near_steel = steel[window] & cv2.dilate(mask.astype(np.uint8), join).astype(bool)
    oy, ox = window[0].start, window[1].start
    local_tips = [(x - ox, y - oy) for x, y in tips]
    region = mask | near_steel
    count, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    at_tips = _labels_at(labels, local_tips, TIP_REACH_MM / pixel_mm)
    if not at_tips:
        return []
    bolus = np.isin(labels, list(at_tips))
    inner = around(bolus, 0)  # the levels are cut over the bolus alone, not specks around it
    bolus, near_steel = bolus[inner], near_steel[inner]
    window = (
        slice(window[0].start + inner[0].start, window[0].start + inner[0].stop),
        slice(window[1].start + inner[1].start, window[1].start + inner[1].stop),
    )
    local_tips = [(x - inner[1].start, y - inner[0].start) for x, y in local_tips]
    # a NaN or infinite pixel (none upstream) must neither hide a lobe nor run the levels away
    relief = np.nan_to_num(difference[window].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    cement_only = bolus & ~near_steel
    if not cement_only.any():
        return []
    top = float(relief[cement_only].max())
    relief[near_steel] = np.inf  # the steel within the bolus joins it at every level
    noise = threshold / NOISE_SDS_IN_THRESHOLD
    reach = TIP_REACH_MM / pixel_mm
    slack = 1.0 / pixel_mm
    best: dict[bool, tuple[float, Lobe]] = {}
    level = FIRST_LEVEL * threshold
    for _ in range(MAX_LEVELS):
        if level >= top:
            break
        above_level = (relief > level) & bolus
        n, parts, stats, centres = cv2.connectedComponentsWithStats(above_level.astype(np.uint8), 8)
        # each tip's part at this level (two cannulas: two boluses, each judged on its own)
        at_each = [labels_ for labels_ in (_labels_at(parts, [tip], reach) for tip in local_tips) if labels_]
        if not at_each:  # no tip's cement stands at this level: nothing to be apart from
            level *= LEVEL_STEP
            continue
        mine = set().union(*at_each)
        tip_centres = [_centre(labels_, centres) for labels_ in at_each]
        for i in range(1, n):
            area = stats[i, cv2.CC_STAT_AREA] * pixel_mm**2
            if i in mine or area < LOBE_MIN_MM2:
                continue
            k = int(np.argmin([np.hypot(*(c - centres[i])) for c in tip_centres]))
            nearest = at_each[k]
            dx, dy = (centres[i] - tip_centres[k]) * pixel_mm
            if abs(dy) < 2 * abs(dx):
                continue  # beside the bolus, not above or below it
            top_row, height = stats[i, cv2.CC_STAT_TOP], stats[i, cv2.CC_STAT_HEIGHT]
            if dy < 0:
                beyond = top_row + height - 1 <= min(stats[j, cv2.CC_STAT_TOP] for j in nearest) + slack
            else:
                bottom = max(stats[j, cv2.CC_STAT_TOP] + stats[j, cv2.CC_STAT_HEIGHT] - 1 for j in nearest)
                beyond = top_row >= bottom - slack
            above = bool(dy < 0)
            if not beyond or (above in best and best[above][0] >= area):
                continue
            piece = (parts == i) & ~near_steel
            summit = float(relief[piece].max()) if piece.any() else 0.0
            if not _stands(summit, level, noise):
                continue
            # ... and a valley has two sides: the bolus's own cement rises over the level too
            # (not only the steel, which joins it at every level)
            bolus_cement = np.isin(parts, list(nearest)) & ~near_steel
            if not bolus_cement.any() or not _stands(float(relief[bolus_cement].max()), level, noise):
                continue
            full = np.zeros(cement.shape, bool)
            full[window] = piece
            best[above] = (area, Lobe(above, full, level, summit, float(abs(dy))))
        level *= LEVEL_STEP
    return [lobe for _, lobe in best.values()]


def _stands(summit: float, level: float, noise: float) -> bool:
    """Whether a summit stands over the valley at ``level``: by a fifth of itself
    (:data:`VALLEY_DEPTH`) and by :data:`VALLEY_NOISE_SDS` of ``noise``."""
    return summit * VALLEY_DEPTH >= level and summit - level >= VALLEY_NOISE_SDS * noise


def _centre(labels: set[int], centres: np.ndarray) -> np.ndarray:
    """The mean of the labelled parts' centres (x, y)."""
    return np.mean([centres[i] for i in labels], axis=0)


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, int(round(radius_px)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _labels_at(labels: np.ndarray, points: list[tuple[float, float]], reach_px: float) -> set[int]:
    """The labels (non-zero) found within ``reach_px`` (a square) of any of ``points`` (x, y)."""
    found: set[int] = set()
    r = int(round(reach_px))
    h, w = labels.shape
    for x, y in points:
        x0, x1 = max(0, int(x) - r), min(w, int(x) + r + 1)
        y0, y1 = max(0, int(y) - r), min(h, int(y) + r + 1)
        if x0 < x1 and y0 < y1:
            found |= {int(v) for v in np.unique(labels[y0:y1, x0:x1]) if v}
    return found
