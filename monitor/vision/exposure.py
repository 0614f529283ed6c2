"""The exposure's change since the baseline, read over the whole frame.

Each frame's difference to the baseline is levelled by the median over the background of the
region measured (the pixels that are neither cement nor steel nor clipped): brightness control
raises the exposure as the dark cement grows, and the whole image brightens with it. On 8-bit
video windowed on the first frames the same control clips the bright tissue white: on realistic
cases an AP region around the tips was 90 % clipped from its first frame, and by the end of the
injection no pixel of it was left that was neither cement nor clipped. Its level is then read
here, from the rest of the frame: a change of exposure (gain g) moves every pixel's attenuation
by the same -ln g, wherever it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.vision.intensity import IntensityModel
from monitor.vision.pixels import PixelGrid
from monitor.vision.stats import median

LEVEL_STEP = 4  # working pixels between the pixels sampled (the level is one number)
MIN_LEVEL_SAMPLES = 200  # sampled pixels the level needs; fewer: not read


@dataclass(frozen=True)
class FrameLevel:
    """The baseline's attenuation over the whole frame, sampled every LEVEL_STEP working pixels,
    and the samples that may be compared (exposed, no steel, outside the region measured, never
    clipped on a baseline frame)."""

    attenuation: np.ndarray  # (h, w) float32: the baseline frames' mean, log units (no scatter removed)
    usable: np.ndarray  # (h, w) bool

    def change(
        self, pixels: np.ndarray, grid: PixelGrid, model: IntensityModel, photometric: str, bits_stored: int
    ) -> float | None:
        """How much the frame's attenuation rose since the baseline over the whole frame (log
        units; negative when the exposure was raised), the median over the usable samples not
        clipped now; None when fewer than MIN_LEVEL_SAMPLES are left."""
        now = _sampled(pixels, grid, model)
        if now.shape != self.usable.shape:  # a frame of another size: not this stream
            return None
        use = self.usable & ~_clipped(pixels, grid, photometric, bits_stored)
        if int(np.count_nonzero(use)) < MIN_LEVEL_SAMPLES:
            return None
        return float(median(now[use] - self.attenuation[use]))


def frame_level(
    frames: list[np.ndarray],
    grid: PixelGrid,
    model: IntensityModel,
    photometric: str,
    bits_stored: int,
    exclude: np.ndarray,
    roi: tuple[int, int, int, int],
) -> FrameLevel:
    """The :class:`FrameLevel` of the baseline ``frames`` (each (H, W) stored values);
    ``exclude``: (h, w) bool over the whole frame in working pixels, the pixels never compared
    (steel, outside the exposed field); ``roi``: the region measured (x0, y0, x1, y1, working
    pixels), left out (the cement grows there)."""
    attenuation = np.mean([_sampled(f, grid, model) for f in frames], axis=0).astype(np.float32)
    h, w = attenuation.shape
    usable = ~np.any([_clipped(f, grid, photometric, bits_stored) for f in frames], axis=0)
    never = exclude[::LEVEL_STEP, ::LEVEL_STEP]  # working pixels: the same samples, bar the last
    usable[: never.shape[0], : never.shape[1]] &= ~never[:h, :w]
    x0, y0, x1, y1 = roi
    s = LEVEL_STEP
    usable[-(-y0 // s) : -(-y1 // s), -(-x0 // s) : -(-x1 // s)] = False
    return FrameLevel(attenuation, usable)


def _sampled(pixels: np.ndarray, grid: PixelGrid, model: IntensityModel) -> np.ndarray:
    """The attenuation at every LEVEL_STEP-th working pixel, (h, w) float32."""
    step = grid.scale * LEVEL_STEP
    offset = grid.scale // 2  # the middle of a working pixel's full pixels
    return model.attenuation(pixels[offset::step, offset::step])


def _clipped(pixels: np.ndarray, grid: PixelGrid, photometric: str, bits_stored: int) -> np.ndarray:
    """Whether each sample (as :func:`_sampled` takes them) is stored at the bright end of the
    range, (h, w) bool: the maximum on MONOCHROME2, 0 on MONOCHROME1."""
    step = grid.scale * LEVEL_STEP
    offset = grid.scale // 2
    samples = pixels[offset::step, offset::step]
    return samples <= 0 if photometric == "MONOCHROME1" else samples >= 2**bits_stored - 1
