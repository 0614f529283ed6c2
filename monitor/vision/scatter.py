"""The scatter behind the spine, and what the cement's halo says of it.

Scatter is modelled as a fraction of the primary beam blurred by a Gaussian (the room's
calibration profile sets both; the analyzer's defaults are 0.15 and 20 mm). It is removed
in the linear domain before the log, since behind dense cement most of the signal is
scatter. Cement takes primary away, so it also takes away the scatter it would have made:
the halo around it tells whether the modelled scatter is there at all (:class:`HaloEvidence`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from monitor.vision.intensity import IntensityModel
from monitor.vision.pixels import PixelGrid
from monitor.vision.sampling import Border, sample_grid
from monitor.vision.stats import median

HALO_RINGS_MM = ((3, 5), (5, 8), (8, 13), (13, 20), (20, 30))
HALO_MIN_MM2 = 20.0  # cement's area before its halo says anything of the scatter
HALO_NOISE = 0.0005  # log units: a frame's halo, measured, varies this much (anatomy, breathing)
HALO_DECIDE_WEIGHT = 50.0  # halo evidence each plane needs before the question is settled
NO_SCATTER_BELOW = 0.3  # the planes' mean halo scale that says there is none (and neither over
SCATTER_SEEN_ABOVE = 0.45  # this one, which settles that there is scatter)


@dataclass(frozen=True)
class ScatterPhysics:
    """The scatter model's two parameters (a room's calibration profile sets them)."""

    scatter_fraction: float  # scatter-to-primary ratio behind the spine
    scatter_sigma_mm: float  # the Gaussian spread of the scatter at the vertebra


def scatter_in(measured: np.ndarray, fraction: float, sigma: float, steps: int = 3) -> np.ndarray:
    """Scatter in ``measured`` (primary plus scatter, on a coarse grid), modelled as
    ``fraction`` times the primary blurred by a Gaussian of ``sigma`` cells.

    measured = P + f G*P is solved for P by fixed-point steps, P <- measured - f G*P
    (each shrinks the error by f), from P = measured / (1 + f). Stopping there
    is the usual shortcut, f/(1+f) G*measured: where the spine is far denser
    than what surrounds it its blur reaches the brighter surroundings twice, and
    it overestimates the scatter by 10-15 %, which behind dense cement, where
    scatter is most of the signal, read as up to a quarter more cement.
    """
    primary = measured / (1 + fraction)
    for _ in range(steps):
        scatter = fraction * cv2.GaussianBlur(primary, (0, 0), sigma)
        primary = np.maximum(measured - scatter, 0)
    return fraction * cv2.GaussianBlur(primary, (0, 0), sigma)


def primary_attenuation(
    pixels: np.ndarray,
    grid: PixelGrid,
    model: IntensityModel,
    physics: ScatterPhysics,
    roi: tuple[int, int, int, int] | None = None,
    scatter: bool = True,
    parts: bool = False,
    unfilter=None,
):
    """Working-resolution attenuation of the primary beam over ``roi`` (working
    pixels; the whole frame by default), scatter removed in the linear domain
    (the volume needs it; finding anatomy does not, and steel, darker than
    the scatter floor, is better seen without it). With ``parts``: also the
    measured intensity and the scatter modelled in it, over the ROI. ``unfilter``
    (intensity over the ROI -> intensity): the system's temporal filter undone on the
    measured intensity (:class:`monitor.vision.temporal.RecursiveFilter`), before all else."""
    s = grid.scale
    h, w = pixels.shape
    x0, y0, x1, y1 = roi if roi is not None else (0, 0, w // s, h // s)
    crop = _binned(pixels, grid, (x0, y0, x1, y1))
    c = physics
    if unfilter is not None:
        measured = unfilter(model.intensity(crop))
    if not scatter or not grid.full_pixel_mm or c.scatter_fraction <= 0:
        return model.attenuation(crop) if unfilter is None else -np.log(np.maximum(measured, 1e-12))
    # Scatter is smooth: estimate it from the whole frame on cells of a quarter of
    # its spread (every 4th pixel of a cell is enough to average it).
    k = max(1, int(round(c.scatter_sigma_mm / 4 / grid.full_pixel_mm)))
    cw, ch = max(1, w // k), max(1, h // k)
    resizable = pixels if pixels.dtype in (np.uint8, np.uint16, np.int16) else pixels.astype(np.float32)
    resizable = resizable[: ch * k, : cw * k]
    if k >= 8:
        resizable = cv2.resize(resizable, (cw * k // 4, ch * k // 4), interpolation=cv2.INTER_NEAREST)
    coarse = cv2.resize(resizable, (cw, ch), interpolation=cv2.INTER_AREA).astype(np.float32)
    scatter = scatter_in(
        model.intensity(coarse), c.scatter_fraction, c.scatter_sigma_mm / (grid.full_pixel_mm * k)
    )
    # Onto the ROI's grid, at a quarter of its resolution (scatter is that smooth), then up:
    # working pixel (x, y) of the ROI -> coarse pixel coordinates
    a = s / k
    shift = ((s - 1) / 2 + 0.5) / k - 0.5
    q = 4
    cols, rows = np.arange(max(1, (x1 - x0) // q)), np.arange(max(1, (y1 - y0) // q))
    scatter = sample_grid(
        scatter,
        a * q * cols + x0 * a + shift + a * (q - 1) / 2,
        a * q * rows + y0 * a + shift + a * (q - 1) / 2,
        Border.REPLICATE,
    )
    scatter = cv2.resize(scatter, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    if unfilter is None:
        measured = model.intensity(crop)
    att = -np.log(np.maximum(measured - scatter, 0.05 * scatter))
    return (att, measured, scatter) if parts else att


def _binned(pixels: np.ndarray, grid: PixelGrid, roi: tuple[int, int, int, int]) -> np.ndarray:
    """Stored values over ``roi`` (working pixels), binned to the working grid (float32)."""
    s = grid.scale
    x0, y0, x1, y1 = roi
    crop = pixels[y0 * s : y1 * s, x0 * s : x1 * s].astype(np.float32)
    if s > 1:
        crop = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return crop


def roi_intensity(pixels: np.ndarray, grid: PixelGrid, model: IntensityModel, roi) -> np.ndarray:
    """The measured intensity over ``roi`` (working pixels), as :func:`primary_attenuation`
    reads it before any correction."""
    return model.intensity(_binned(pixels, grid, roi))


class HaloEvidence:
    """The scale of the modelled scatter the cement's halo supports, pooled over frames:
    ``weight`` (how strongly the halo has answered so far) and ``scale`` (1: the modelled
    scatter is there; near 0: there is none)."""

    def __init__(self):
        self.weight = 0.0  # sum of the frames' weights
        self._weighted = 0.0  # sum of weight * estimate

    @property
    def scale(self) -> float:
        return self._weighted / self.weight if self.weight else 1.0

    def add(self, difference, mask, exclude, now, before, px: float) -> None:
        """One frame's evidence of the scale of the modelled scatter, from the cement's halo.

        ``difference`` (h, w): the frame's log difference to the baseline over the ROI;
        ``mask`` (h, w) bool: the cement found; ``exclude`` (h, w) bool: pixels not to compare;
        ``now`` and ``before``: the measured intensity and the scatter modelled in it, in this
        frame ((h, w) each) and in the baseline ((h, w, 2)); ``px``: mm per pixel.

        Cement takes primary away, so the scatter it would have made around it
        goes too: in the difference around the cement, a real scatter that the
        model misses leaves a positive halo fading with distance, a modelled
        scatter that is not there a negative one. How the difference should
        move with the scale is known pixel by pixel; the difference's profile
        against it, over rings 3-30 mm from the cement (up to a constant: the
        frame's offset is taken out over the ROI, all of it within the halo),
        gives one estimate of the scale per frame, weighted by how strongly the
        halo answers it. The case decides from both planes' (CaseAnalyzer).
        """
        if mask.sum() * px * px < HALO_MIN_MM2:
            return
        # every other pixel each way is plenty for rings millimetres wide
        outside = cv2.distanceTransform((~mask[::2, ::2]).astype(np.uint8), cv2.DIST_L2, 3) * (2 * px)
        (m, s), (m0, s0) = (a[::2, ::2] for a in now), (before[::2, ::2, 0], before[::2, ::2, 1])
        difference, exclude = difference[::2, ::2], exclude[::2, ::2]
        levels, slopes, counts = [], [], []
        for near, far in HALO_RINGS_MM:
            ring = (outside >= near) & (outside < far) & ~exclude
            n = int(ring.sum())
            if n < 25:
                continue
            # how the difference here moves with the scale (log units per unit scale)
            slope = s[ring] / np.maximum(m[ring] - s[ring], 0.05 * s[ring]) - s0[ring] / np.maximum(
                m0[ring] - s0[ring], 0.05 * s0[ring]
            )
            levels.append(median(difference[ring]))
            slopes.append(median(slope))
            counts.append(n)
        if len(levels) < 3:
            return
        w = np.sqrt(counts)
        g = np.asarray(slopes)
        spread = float(np.sqrt(np.average((g - np.average(g, weights=w)) ** 2, weights=w)))
        if spread < 1e-4:
            return
        excess = np.polyfit(g, levels, 1, w=w)[0]  # the scale modelled (1) minus the true one
        estimate = float(np.clip(1.0 - excess, 0.0, 4.0))
        weight = (spread / HALO_NOISE) ** 2
        self.weight += weight
        self._weighted += weight * estimate
