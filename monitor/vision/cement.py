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

# Cement minus the marrow it displaces, 1/mm, PMMA with ~30% BaSO4 at ~60 keV effective.
DEFAULT_CEMENT_MU = 0.18
REGISTRATION_UNCERTAINTY_PX = 0.25


class Registration:
    """A fixed reference (the baseline), smoothed and halved once, to which
    frames are registered: the per-frame cost is the frame's own share only."""

    def __init__(self, reference: np.ndarray):
        self.reference = reference
        self._ref = cv2.GaussianBlur(reference, (0, 0), 1.5)
        self._half = cv2.resize(self._ref, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        self._edges_ref = _high_pass(reference)
        gx = cv2.Sobel(self._edges_ref, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(self._edges_ref, cv2.CV_32F, 0, 1, ksize=3) / 8
        magnitude = cv2.magnitude(gx, gy)
        self._strong = magnitude > np.percentile(magnitude, 90)
        self._grad = (gx, gy)

    def shift(
        self, image: np.ndarray, ignore: np.ndarray | None = None, start: tuple[float, float] = (0.0, 0.0)
    ) -> tuple[float, float]:
        """Translation (dx, dy) that maps the reference onto ``image``, to a fraction of a pixel.

        Enhanced correlation coefficient maximisation (cv2.findTransformECC) on
        smoothed images at half size, then Gauss-Newton steps on edges at full
        size, starting from ``start`` (the previous frame's shift: breathing is smooth), with the
        pixels in ``ignore`` (the growing cement, the cannula's lumen) left out
        so they cannot pull the estimate. Falls back to phase correlation of
        edges when ECC does not converge.
        """
        img = cv2.GaussianBlur(image, (0, 0), 1.5)
        mask = None if ignore is None else (~ignore).astype(np.uint8)
        warp = np.array([[1, 0, start[0]], [0, 1, start[1]]], np.float32)
        try:
            half_img = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
            half_mask = (
                None
                if mask is None
                else cv2.resize(mask, self._half.shape[::-1], interpolation=cv2.INTER_NEAREST)
            )
            coarse = warp.copy()
            coarse[:, 2] *= 0.5
            warp[:, 2] = _ecc(self._half, half_img, coarse, 20, half_mask)[:, 2] * 2
            warp = _ecc(self._ref, img, warp, 4, mask)
            return self._on_edges(image, ignore, float(warp[0, 2]), float(warp[1, 2]))
        except cv2.error:
            moved = image if ignore is None else np.where(ignore, self.reference, image)
            a, b = _edges(self.reference), _edges(moved)
            window = cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F)
            (dx, dy), _ = cv2.phaseCorrelate(a, b, window)
            return float(dx), float(dy)

    def _on_edges(self, image: np.ndarray, ignore: np.ndarray | None, dx: float, dy: float):
        """Gauss-Newton steps on the baseline's strongest edges, high-passed.

        Cement scatters: it changes the image smoothly far around it, which can
        pull a whole-image correlation by a fraction of a pixel, and a fraction
        of a pixel on a cortex reads as a sliver of cement. Edges, with the
        smooth part removed, are what misregistration shows on.
        """
        # The moving image is sampled back onto the fixed reference, so the
        # reference's edges and gradients are computed once, not per iteration.
        moving = _high_pass(image)
        use = self._strong
        if ignore is not None:  # the steps are sub-pixel: the mask is carried back once
            use = use & (shift_image(ignore.astype(np.float32), -dx, -dy) < 0.5)
        if use.sum() < 50:
            return dx, dy
        gx, gy = self._grad[0][use], self._grad[1][use]
        reference = self._edges_ref[use]
        ys, xs = np.nonzero(use)
        xs, ys = xs.astype(np.float32).reshape(1, -1), ys.astype(np.float32).reshape(1, -1)
        for _ in range(5):
            # the moving image read where the reference's edge pixels land (one warp of those only)
            at = cv2.remap(moving, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            r = at.ravel() - reference
            spread = 1.4826 * float(np.median(np.abs(r - np.median(r)))) + 1e-6
            ok = np.abs(r) < 3 * spread  # pixels of new cement or noise spikes do not vote
            ax, ay, r = gx[ok], gy[ok], r[ok]
            normal = np.array([[ax @ ax, ax @ ay], [ax @ ay, ay @ ay]], np.float64)
            if np.linalg.cond(normal) > 1e6:
                break
            step = -np.linalg.solve(normal, np.array([ax @ r, ay @ r], np.float64))
            if np.hypot(*step) > 2.0:  # not a refinement any more: keep what ECC found
                break
            dx, dy = dx + float(step[0]), dy + float(step[1])
            if np.hypot(*step) < 0.01:
                break
        return dx, dy


def _ecc(reference, image, warp, iterations: int, mask) -> np.ndarray:
    """cv2.findTransformECC for a translation, from ``warp``; raises cv2.error when it does not converge."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-3)
    return cv2.findTransformECC(reference, image, warp, cv2.MOTION_TRANSLATION, criteria, mask, 3)[1]


def _high_pass(att: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(att, (0, 0), 1.0) - cv2.GaussianBlur(att, (0, 0), 6.0)


def _edges(att: np.ndarray) -> np.ndarray:
    smooth = cv2.GaussianBlur(att, (0, 0), 1.2)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def shift_image(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], np.float32)
    return cv2.warpAffine(
        image, m, image.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


@dataclass(frozen=True)
class CementMap:
    difference: np.ndarray  # smoothed log-attenuation added since the baseline (mu * thickness)
    mask: np.ndarray  # bool, cement
    threshold: np.ndarray  # the per-pixel threshold used
    noise: float  # robust standard deviation of the smoothed difference


def segment(
    difference: np.ndarray,
    baseline_gradient: np.ndarray,
    exclude: np.ndarray,
    pixel_mm: float | None,
    min_threshold: float = 0.045,
) -> CementMap:
    """Cement pixels: a smoothed difference above a noise- and edge-aware threshold,
    in connected regions that reach at least twice that threshold."""
    sigma = max(0.8, 0.25 / pixel_mm) if pixel_mm else 1.0
    smooth = cv2.GaussianBlur(difference, (0, 0), sigma)
    sample = smooth[::3, ::3][~exclude[::3, ::3]]
    sample = sample if sample.size else smooth.ravel()
    noise = float(1.4826 * np.median(np.abs(sample - np.median(sample))))
    threshold = np.maximum(
        max(min_threshold, 5.0 * noise), 2.5 * REGISTRATION_UNCERTAINTY_PX * baseline_gradient
    ).astype(np.float32)
    candidate = (smooth > threshold) & ~exclude
    seeds = (smooth > 2.0 * threshold) & candidate
    count, labels = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[np.unique(labels[seeds])] = True
    keep[0] = False
    min_area = max(3, int(round(0.4 / (pixel_mm**2)))) if pixel_mm else 4
    areas = np.bincount(labels.ravel(), minlength=count)
    keep &= areas >= min_area
    return CementMap(smooth, keep[labels], threshold, noise)


def integrated_volume_ml(
    cement: CementMap, pixel_mm: float, mu_per_mm: float, fill: np.ndarray | None = None
) -> float:
    """Volume from the summed line integrals over the cement (slightly dilated
    to keep its faint rim): sum(mu * thickness) * pixel area / mu.

    ``fill`` marks pixels (under a cannula) whose difference is interpolated
    from around them rather than read, since the cannula hides the cement there.
    """
    region = cv2.dilate(cement.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    values = cement.difference
    if fill is not None and cement.mask.any():
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
            values[y0:y1, x0:x1] = cv2.inpaint(
                values[y0:y1, x0:x1].astype(np.float32),
                hidden[y0:y1, x0:x1].astype(np.uint8),
                5,
                cv2.INPAINT_TELEA,
            )
            region = (region & ~fill) | (hidden & (values > cement.threshold))
    total = float(np.clip(values[region], 0, None).sum())
    return total * pixel_mm**2 / mu_per_mm / 1000.0


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
    if not pts.any():
        return None
    h, w = pts.shape
    inward_px = max(2, int(round(0.6 / pixel_mm))) if pixel_mm else 3
    # outward = direction of decreasing wall distance along x
    outward = -1 if (wall_distance[h // 2, min(w - 1, w // 2 + 1)] - wall_distance[h // 2, w // 2]) > 0 else 1
    best = None
    for y in np.flatnonzero(pts.any(axis=1)):
        xs = np.flatnonzero(pts[y])
        x = int(xs.max() if outward > 0 else xs.min())
        inner = x - outward * np.arange(0, inward_px + 1)
        inner = inner[(inner >= 0) & (inner < w)]
        level = max(float(cement.threshold[y, x]), 0.5 * float(cement.difference[y, inner].max()))
        # walk outward from inside until the profile drops below the level
        pos = None
        for k in range(len(inner) - 1, -1, -1):
            xi = int(inner[k])
            xo = xi + outward
            if not 0 <= xo < w:
                break
            a, b = cement.difference[y, xi], cement.difference[y, xo]
            if a >= level > b:
                pos = (xi, xo, (a - level) / (a - b))
        if pos is None:
            continue
        xi, xo, frac = pos
        d = wall_distance[y, xi] + frac * (wall_distance[y, xo] - wall_distance[y, xi])
        if best is None or d < best[0]:
            best = (float(d), (xi, int(y)))
    return best
