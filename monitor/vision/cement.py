"""Cement from the difference to a registered pre-injection baseline.

In the attenuation domain (``-ln I``) a frame minus its baseline is the line
integral of whatever was added: mu_cement * thickness. Misregistration leaves
residuals proportional to the local gradient, so the detection threshold
grows with the baseline's gradient; noise sets its floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from monitor.vision.sampling import Border, sample_points, translate
from monitor.vision.stats import median

# Cement minus the marrow it displaces, 1/mm, PMMA with ~30% BaSO4 at ~60 keV effective.
DEFAULT_CEMENT_MU = 0.18
REGISTRATION_UNCERTAINTY_PX = 0.25
INSIDE_MARGIN_PX = 2.0  # a level's pixels a sample must keep from the frame's edge


class _Level:
    """One scale of the reference for Gauss-Newton steps: only its pixels with
    the strongest gradients are sampled (misregistration shows there and
    nowhere else), with their values and gradients computed once."""

    def __init__(self, reference: np.ndarray, factor: int, keep: float):
        self.factor = factor  # reference pixels per working pixel
        gx = cv2.Sobel(reference, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(reference, cv2.CV_32F, 0, 1, ksize=3) / 8
        magnitude = cv2.magnitude(gx, gy)
        strong = magnitude > np.percentile(magnitude, 100 * (1 - keep))
        ys, xs = np.nonzero(strong)
        self.xs, self.ys = xs.astype(np.float32), ys.astype(np.float32)
        self.cols, self.rows = xs, ys  # integer pixels: every one shares the shift's fraction
        self.values = reference[strong]
        self.jacobian = np.column_stack([gx[strong], gy[strong], np.ones(len(xs))]).astype(np.float64)

    def refine(
        self, moving, ignore, dx: float, dy: float, iterations: int, tolerance: float
    ) -> tuple[float, float]:
        """Translation (in working pixels) after up to ``iterations`` steps or one
        smaller than ``tolerance`` (this level's pixels), with an intensity offset
        solved alongside (a change of dose or scatter)."""
        f = self.factor
        x, y = self.xs + dx / f, self.ys + dy / f  # where the samples now are, this level's pixels
        # a reference pixel the shift takes off the frame has nothing to match: the replicated
        # border it would read is no image, and it pulls the shift (0.6 pixel at the top of a
        # breath with the bolus and steel left out, extra tuning seed 5116: a line of cement
        # along each endplate)
        h, w = moving.shape
        m = INSIDE_MARGIN_PX
        use = (x >= m) & (x <= w - 1 - m) & (y >= m) & (y <= h - 1 - m)
        if ignore is not None:  # pixels of new cement or the lumen, where they now are
            full_h, full_w = ignore.shape
            col = np.clip(np.rint(x * f).astype(np.intp), 0, full_w - 1)
            row = np.clip(np.rint(y * f).astype(np.intp), 0, full_h - 1)
            use &= ~ignore[row, col]
        if use.sum() < 50:
            return dx, dy
        cols, rows = self.cols[use], self.rows[use]
        jacobian, values = self.jacobian[use], self.values[use]
        offset = None
        for _ in range(iterations):
            # moving at (cols + dx/f, rows + dy/f): one fraction for all, so a whole-image shift
            at = translate(moving, -dx / f, -dy / f, Border.REPLICATE)[rows, cols]
            r = at.ravel() - values
            offset = median(r[::4]) if offset is None else offset
            r -= offset  # centred by the offset solved for
            size = np.abs(r)
            # new cement or noise spikes do not vote (robust spread from every 4th pixel: as good, 4x cheaper)
            ok = size < 3 * 1.4826 * median(size[::4]) + 1e-6
            # Normal equations by OpenCV, not numpy's BLAS, whose idle threads spin
            # against the other plane's process on a small machine (10x slowdowns seen).
            a = jacobian[ok]
            normal = cv2.mulTransposed(a, True)
            if np.linalg.det(normal[:2, :2]) < 1e-6 * np.trace(normal[:2, :2]) ** 2:
                raise np.linalg.LinAlgError("registration: edges in one direction only, or none")
            rhs = cv2.gemm(a, r[ok].astype(np.float64).reshape(-1, 1), 1.0, None, 0.0, flags=cv2.GEMM_1_T)
            step = np.linalg.solve(normal, rhs.ravel())
            if not np.isfinite(step).all():
                raise np.linalg.LinAlgError("registration: the step is not finite")
            dx, dy, offset = dx - float(step[0]) * f, dy - float(step[1]) * f, offset + float(step[2])
            if np.hypot(step[0], step[1]) < tolerance:
                break
        return dx, dy


class Registration:
    """A fixed reference (the baseline), prepared once, to which frames are
    registered: the per-frame cost is the frame's own share only."""

    def __init__(self, reference: np.ndarray):
        self.reference = reference
        smooth = cv2.GaussianBlur(reference, (0, 0), 1.0)
        half = _halve(smooth)
        self._coarse = [_Level(_halve(half), 4, 0.25), _Level(half, 2, 0.2)]
        self._edges = _Level(smooth - _low_pass(reference), 1, 0.1)

    def shift(
        self, image: np.ndarray, ignore: np.ndarray | None = None, start: tuple[float, float] = (0.0, 0.0)
    ) -> tuple[float, float]:
        """Translation (dx, dy) that maps the reference onto ``image``, to a fraction of a pixel.

        Gauss-Newton steps on the strongest edges of a smoothed pyramid (quarter,
        then half size), then on high-passed edges at full size, starting from
        ``start`` (the previous frame's shift: breathing is smooth), with the
        pixels in ``ignore`` (the growing cement, the cannula's lumen) left out
        so they cannot pull the estimate. Cement scatters: it changes the image
        smoothly far around it, which could pull a whole-image correlation by a
        fraction of a pixel, and a fraction of a pixel on a cortex reads as a
        sliver of cement; edges, with the smooth part removed, are what
        misregistration shows on. Falls back to phase correlation of edges when
        the steps find nothing to hold on to or run away.
        """
        dx, dy = start
        try:
            smooth = cv2.GaussianBlur(image, (0, 0), 1.0)
            half = _halve(smooth)
            dx, dy = self._coarse[0].refine(_halve(half), ignore, dx, dy, 10, 0.05)
            dx, dy = self._coarse[1].refine(half, ignore, dx, dy, 6, 0.05)
            fine = self._edges.refine(smooth - _low_pass(image), ignore, dx, dy, 5, 0.01)
            if np.hypot(fine[0] - dx, fine[1] - dy) > 2.0:  # not a refinement any more
                return dx, dy
            return fine
        except np.linalg.LinAlgError:
            moved = image if ignore is None else np.where(ignore, self.reference, image)
            a, b = _edges(self.reference), _edges(moved)
            window = cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F)
            (dx, dy), _ = cv2.phaseCorrelate(a, b, window)
            return float(dx), float(dy)


def _halve(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def around(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """The bounding box of ``mask``'s pixels grown by ``pad``, clipped to the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (
        slice(max(0, rows[0] - pad), min(h, rows[-1] + pad + 1)),
        slice(max(0, cols[0] - pad), min(w, cols[-1] + pad + 1)),
    )


def _low_pass(image: np.ndarray) -> np.ndarray:
    """About a Gaussian blur of 6 pixels, from a quarter-size copy (ten times cheaper)."""
    h, w = image.shape
    small = cv2.resize(image, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), 1.3), (w, h), interpolation=cv2.INTER_LINEAR)


def _edges(att: np.ndarray) -> np.ndarray:
    smooth = cv2.GaussianBlur(att, (0, 0), 1.2)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def shift_image(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` (up to 4 channels, shifted together for the price of one) moved by (dx, dy)."""
    return translate(image, dx, dy, Border.REPLICATE)


@dataclass(frozen=True)
class CementMap:
    difference: np.ndarray  # smoothed log-attenuation added since the baseline (mu * thickness)
    mask: np.ndarray  # bool, cement
    threshold: np.ndarray  # the per-pixel threshold used
    noise: float  # robust standard deviation of the smoothed difference


def misregistration_floor(baseline_gradient: np.ndarray) -> np.ndarray:
    """The difference a bone edge of ``baseline_gradient`` (log units per pixel, (h, w)) leaves
    when the frame is registered REGISTRATION_UNCERTAINTY_PX off, with a margin: under it, a
    difference on an edge is no cement (:func:`segment`'s edge term)."""
    return 2.5 * REGISTRATION_UNCERTAINTY_PX * baseline_gradient


def segment(
    difference: np.ndarray,
    baseline_gradient: np.ndarray,
    exclude: np.ndarray,
    pixel_mm: float | None,
    min_threshold: float = 0.045,
    bolus: np.ndarray | None = None,
) -> CementMap:
    """Cement pixels: a smoothed difference above a noise- and edge-aware threshold,
    in connected regions that reach at least twice that threshold. The noise is measured
    outside ``exclude`` and, while enough is left, outside the ``bolus`` seen so far (bool,
    or None): where the exposure has clipped most of the region, the cement would otherwise
    be most of the sample and its own spread would raise the threshold over it."""
    sigma = max(0.8, 0.25 / pixel_mm) if pixel_mm else 1.0
    smooth = cv2.GaussianBlur(difference, (0, 0), sigma)
    sample = smooth[::4, ::4][~exclude[::4, ::4]]
    if bolus is not None:
        outside = smooth[::4, ::4][~(exclude | bolus)[::4, ::4]]
        sample = outside if outside.size >= max(50, sample.size // 8) else sample
    sample = sample if sample.size else smooth.ravel()
    noise = 1.4826 * median(np.abs(sample - median(sample)))
    threshold = np.maximum(max(min_threshold, 5.0 * noise), misregistration_floor(baseline_gradient)).astype(
        np.float32
    )
    candidate = (smooth > threshold) & ~exclude
    seeds = (smooth > 2.0 * threshold) & candidate
    count, labels = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
    keep = np.bincount(labels[seeds], minlength=count) > 0
    keep[0] = False
    mask = keep[labels]
    min_area = max(3, int(round(0.4 / (pixel_mm**2)))) if pixel_mm else 4
    small = keep & (np.bincount(labels[mask], minlength=count) < min_area)
    if small.any():  # a few pixels of noise: rare, as seeds are twice the threshold
        keep &= ~small
        mask = keep[labels]
    return CementMap(smooth, mask, threshold, noise)


STEEL_MOVED_REACH_PX = 2  # a dip on one edge of the steel this near along the shaft ...
STEEL_MOVED_TWIN = 1.0  # ... takes a strip pixel on the other edge reading up to this much of its depth


def sleeve_cement(
    cement: CementMap,
    sleeve: np.ndarray,
    band: np.ndarray,
    shafts: list[tuple[tuple[float, float], tuple[float, float], float]],
) -> np.ndarray:
    """The cement in the strips beside the steel, (h, w) bool: ``sleeve`` pixels whose
    difference is over the threshold, except those the steel's own motion lights.

    Cement only adds attenuation. A pixel of a shaft's ``band`` (the steel and its strips,
    bool) reading a difference below minus the threshold may be the steel's edge moved off it
    against the baseline, and that shift lights the opposite edge as its positive twin, as
    high as the dip is deep, which spills into the strip there: a strip pixel is not cement
    when the other side of its shaft dips within STEEL_MOVED_REACH_PX along the shaft by at
    least STEEL_MOVED_TWIN of what the pixel reads. (A dense-cement render with 8-bit video,
    its steel moving a pixel against the anatomy, lit the lower strip as a line out past the
    wall: a front read 1.6 mm from the wall at 9.7 mm, a false 5 mm alarm.) Dips come from
    more than the steel: an edge-enhanced image rings dark around dense cement, and a cortex a
    little misregistered dips where it crosses the band; cement beside the steel reads well
    above such a ring, so it stays (an independent review lost a posterior leak's frame and
    read fronts up to 0.9 mm long when any dip took the strip across from it).

    ``shafts``: per cannula its tip (x, y) and unit direction out along the shaft, in the
    pixels of ``cement``, and the band's half width (pixels)."""
    lit = sleeve & (cement.difference > cement.threshold)
    if not lit.any() or not shafts:
        return lit
    lit_y, lit_x = np.nonzero(lit)
    # the dips that can face a lit pixel across its shaft: within a band's width of one
    pad = int(np.ceil(2 * max(half for _, _, half in shafts))) + STEEL_MOVED_REACH_PX
    y0, x0 = max(0, int(lit_y.min()) - pad), max(0, int(lit_x.min()) - pad)
    y1, x1 = int(lit_y.max()) + pad + 1, int(lit_x.max()) + pad + 1
    near = (slice(y0, y1), slice(x0, x1))
    dip_y, dip_x = np.nonzero(band[near] & (cement.difference[near] < -cement.threshold[near]))
    if not len(dip_y):
        return lit
    dip_y, dip_x = dip_y + y0, dip_x + x0
    dip_depth = -cement.difference[dip_y, dip_x]
    lit_value = cement.difference[lit_y, lit_x]
    moved = np.zeros(len(lit_y), bool)
    for (tx, ty), (ux, uy), half in shafts:
        dip_t = (dip_x - tx) * ux + (dip_y - ty) * uy
        dip_n = (dip_y - ty) * ux - (dip_x - tx) * uy
        lit_t = (lit_x - tx) * ux + (lit_y - ty) * uy
        lit_n = (lit_y - ty) * ux - (lit_x - tx) * uy
        for side in (1, -1):  # dips on this side move the strip on the other
            facing = (side * dip_n > 0) & (np.abs(dip_n) <= half)
            strip = (side * lit_n < 0) & (np.abs(lit_n) <= half)
            if not facing.any() or not strip.any():
                continue
            dips = np.round(dip_t[facing]).astype(int)
            at = np.round(lit_t[strip]).astype(int)
            start = min(dips.min(), at.min()) - STEEL_MOVED_REACH_PX
            stop = max(dips.max(), at.max()) + STEEL_MOVED_REACH_PX + 1
            deepest = np.zeros((1, stop - start), np.float32)  # per pixel along the shaft
            np.maximum.at(deepest[0], dips - start, dip_depth[facing])
            # ... and the deepest within the reach along it
            deepest = cv2.dilate(deepest, np.ones((1, 2 * STEEL_MOVED_REACH_PX + 1), np.uint8))[0]
            moved[strip] |= lit_value[strip] <= STEEL_MOVED_TWIN * deepest[at - start]
    lit[lit_y[moved], lit_x[moved]] = False
    return lit


@dataclass(frozen=True)
class ShaftReading:
    """Cement read along a cannula's axis, under its steel, from the tip back: points
    (x, y, ROI pixels, one pixel apart), the cement's mu * thickness there, and the
    half-width of the band the shaft hides."""

    xs: np.ndarray
    ys: np.ndarray
    values: np.ndarray
    half_width: float


def integrated_volume_ml(
    cement: CementMap,
    pixel_mm: float,
    mu_per_mm: float,
    fill: np.ndarray | None = None,
    shaft: ShaftReading | None = None,
) -> tuple[float, float]:
    """Volume from the summed line integrals over the cement (slightly dilated
    to keep its faint rim): sum(mu * thickness) * pixel area / mu; and the
    share of it that was interpolated rather than seen.

    ``fill`` marks pixels (under a cannula) whose difference is interpolated
    from around them rather than read, since the cannula hides the cement there.
    Where ``shaft`` was read along the middle of the band, the interpolation is
    brought to that reading there, tapering to the band's edges.
    """
    if not cement.mask.any():
        return 0.0, 0.0
    # Only the cement's surroundings matter: the fill's reach, the inpainting's margin and radius.
    window = around(cement.mask, int(round(4.0 / pixel_mm)) + 12)
    cement = CementMap(cement.difference[window], cement.mask[window], cement.threshold[window], cement.noise)
    fill = None if fill is None else fill[window]
    region = cv2.dilate(cement.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    values = cement.difference
    if fill is not None:
        # cement hidden by the shaft lies within ~4 mm of seen cement
        reach = 2 * int(round(4.0 / pixel_mm)) + 1
        seen = cement.mask & ~fill
        near = cv2.dilate(seen.astype(np.uint8), np.ones((reach, reach), np.uint8)).astype(bool)
        hidden = fill & near
        if hidden.any():
            ys, xs = np.nonzero(hidden)
            pad = 6
            y0, y1 = max(0, ys.min() - pad), ys.max() + pad + 1
            x0, x1 = max(0, xs.min() - pad), xs.max() + pad + 1
            values = values.copy()
            # Telea on float32 speckles (see monitor.vision.fill), and the darkness's calibration
            # rests on it: its clipped speckle adds what a smooth fill leaves out of a bolus
            # thickest on the shaft's axis. A smooth fill (Navier-Stokes) read the simple world's
            # darkness 0.57-0.77x the truth under 0.5 mL where this reads 0.93-1.25x (1.00 vs 1.02x
            # at the end); it waits for a fill that models the bolus's profile under the steel.
            values[y0:y1, x0:x1] = cv2.inpaint(
                values[y0:y1, x0:x1].astype(np.float32),
                hidden[y0:y1, x0:x1].astype(np.uint8),
                3,
                cv2.INPAINT_TELEA,
            )
            if shaft is not None and len(shaft.xs) >= 2:
                _to_shaft_reading(values, hidden, shaft, (window[1].start, window[0].start))
            region = (region & ~fill) | (hidden & (values > cement.threshold))
    total = float(np.clip(values[region], 0, None).sum())
    filled = float(np.clip(values[region & fill], 0, None).sum()) if fill is not None else 0.0
    return total * pixel_mm**2 / mu_per_mm / 1000.0, filled / total if total > 0 else 0.0


def _to_shaft_reading(values: np.ndarray, hidden: np.ndarray, shaft: ShaftReading, origin) -> None:
    """Correct the interpolated ``values`` in ``hidden`` to the reading along the shaft's
    middle: by its difference to them on the axis, tapering as a parabola to nothing
    at the band's edges (a sleeve of cement is thickest in projection on its axis)."""
    xs, ys = shaft.xs - origin[0], shaft.ys - origin[1]
    d = np.array([xs[-1] - xs[0], ys[-1] - ys[0]])
    d /= np.hypot(*d)
    on_axis = sample_points(values, xs, ys)
    correction = shaft.values - on_axis
    py, px = np.nonzero(hidden)
    along = (px - xs[0]) * d[0] + (py - ys[0]) * d[1]
    across = (py - ys[0]) * d[0] - (px - xs[0]) * d[1]
    index = np.rint(along).astype(int)
    near = (index >= 0) & (index < len(xs)) & (np.abs(across) < shaft.half_width)
    taper = 1.0 - (across[near] / shaft.half_width) ** 2
    values[py[near], px[near]] += (correction[index[near]] * taper).astype(values.dtype)


def front_distance_px(
    cement: CementMap, wall_distance: np.ndarray, rows_ok: np.ndarray, pixel_mm: float | None = None
) -> tuple[float, tuple] | None:
    """Smallest signed distance (pixels, positive inside the body) from the cement
    edge to the wall.

    In each row the edge is where the difference falls to half of the cement's
    level just inside it (the edge of a blurred object), or to the detection
    threshold for faint cement, whichever is higher; found to sub-pixel.
    ``wall_distance`` is the signed distance of every pixel to the wall line;
    ``rows_ok`` marks pixels level with the wall (between the endplates).
    """
    pts = cement.mask & rows_ok
    rows = np.flatnonzero(pts.any(axis=1))
    if not rows.size:
        return None
    h, w = pts.shape
    inward_px = max(2, int(round(0.6 / pixel_mm))) if pixel_mm else 3
    # outward = direction of decreasing wall distance along x
    outward = -1 if (wall_distance[h // 2, min(w - 1, w // 2 + 1)] - wall_distance[h // 2, w // 2]) > 0 else 1
    found = pts[rows]
    edge = (w - 1 - np.argmax(found[:, ::-1], axis=1)) if outward > 0 else np.argmax(found, axis=1)
    inner = edge[:, None] - outward * np.arange(inward_px + 1)  # from the edge pixel inwards
    inside = (inner >= 0) & (inner < w)
    inner = np.clip(inner, 0, w - 1)
    y = rows[:, None]
    values = np.where(inside, cement.difference[y, inner], -np.inf)
    level = np.maximum(cement.threshold[rows, edge], 0.5 * values.max(axis=1))[:, None]
    outer = inner + outward
    a = values
    b = cement.difference[y, np.clip(outer, 0, w - 1)]
    # the outermost pixel pair where the profile drops below the level, to sub-pixel
    crossing = inside & (outer >= 0) & (outer < w) & (a >= level) & (level > b)
    hit = crossing.any(axis=1)
    if not hit.any():
        return None
    k = np.argmax(crossing, axis=1)[hit]
    ys, xi = rows[hit], inner[hit, k]
    xo = xi + outward
    a, b, lv = a[hit, k], b[hit, k], level[hit, 0]
    frac = (a - lv) / (a - b)
    d = wall_distance[ys, xi] + frac * (wall_distance[ys, xo] - wall_distance[ys, xi])
    best = int(np.argmin(d))
    return float(d[best]), (int(xi[best]), int(ys[best]))


BOLUS_GROWTH_MM = 3.0  # how far the next frame's cement may reach beyond this frame's


def at_tips(mask: np.ndarray, tips: list[tuple[float, float]], pixel_mm: float | None) -> np.ndarray:
    """The cement of ``mask`` (h, w, bool) connected to a cannula tip (:func:`pieces_at_tips`).
    Cement is injected there, so this is the bolus; the rest got somewhere else."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return pieces_at_tips(labels, count, tips, pixel_mm)[labels]


def pieces_at_tips(
    labels: np.ndarray, count: int, tips: list[tuple[float, float]], pixel_mm: float | None
) -> np.ndarray:
    """Which of ``count`` labelled pieces (``labels`` (h, w), 0 the background) have a pixel
    within twice BOLUS_GROWTH_MM of one of ``tips`` (x, y in the same pixels): (count,) bool."""
    grow = int(round(BOLUS_GROWTH_MM / pixel_mm)) if pixel_mm else 4
    near_tip = np.zeros(labels.shape, np.uint8)
    for x, y in tips:
        cv2.circle(near_tip, (int(round(x)), int(round(y))), 2 * grow, 1, -1)
    keep = np.zeros(count, bool)
    keep[np.unique(labels[near_tip.astype(bool)])] = True
    keep[0] = False
    return keep


def growing_bolus(mask: np.ndarray, tips: list[tuple[float, float]], pixel_mm: float | None) -> np.ndarray:
    """Where the next frame's cement may be, to keep out of its registration and background:
    the cement of ``mask`` (h, w) connected to a cannula tip (:func:`at_tips`), grown by about
    3 mm. With no tips, all of it. Cement elsewhere is left in: if a misregistered frame read
    every cortex edge as cement, masking them would leave the next registration nothing to
    hold on to."""
    grow = int(round(BOLUS_GROWTH_MM / pixel_mm)) if pixel_mm else 4
    if tips:
        mask = at_tips(mask, tips, pixel_mm)
    if not mask.any():
        return mask
    # grown by a disc (a distance transform is cheaper than dilating with one), around the cement only
    window = around(mask, grow + 1)
    grown = np.zeros_like(mask)
    inverse = (~mask[window]).astype(np.uint8)
    grown[window] = cv2.distanceTransform(inverse, cv2.DIST_L2, cv2.DIST_MASK_3) <= grow
    return grown
