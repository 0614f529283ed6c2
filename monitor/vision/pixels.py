"""Full-resolution image pixels and the working pixels frames are measured in.

Detectors finer than :data:`WORK_PIXEL_MM` are binned by a whole factor (a 1024-pixel
detector at 0.19 mm, 2x2) before anything is measured: enough for 0.3 mm, four times
faster. Working pixel (i, j) averages full pixels ``s*i .. s*i + s - 1``, so its centre is
full-resolution ``s*i + (s - 1)/2``; every conversion between the two goes through here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORK_PIXEL_MM = 0.25  # finer detectors are binned towards this: enough for 0.3 mm, 4x faster at 1024


@dataclass(frozen=True)
class PixelGrid:
    """The binning of one plane: ``scale`` full pixels per working pixel, each way."""

    full_pixel_mm: float | None  # full-resolution pixel at the vertebra (None: no mm scale)
    scale: int = 1

    @staticmethod
    def for_spacing(pixel_mm: float | None) -> PixelGrid:
        """The grid for a detector of ``pixel_mm`` at the vertebra (1:1 without a scale)."""
        scale = max(1, int(round(WORK_PIXEL_MM / pixel_mm))) if pixel_mm else 1
        return PixelGrid(pixel_mm, scale)

    @property
    def pixel_mm(self) -> float | None:
        """Millimetres per working pixel (None without a scale)."""
        return self.full_pixel_mm * self.scale if self.full_pixel_mm else None

    def to_full(self, x: float, y: float, origin: tuple[int, int] = (0, 0)) -> list[float]:
        """Working pixel (x, y) of a window starting at working pixel ``origin``, as a
        full-resolution image pixel, rounded to 0.1 pixel (as reported)."""
        s = self.scale
        return [round((x + origin[0]) * s + (s - 1) / 2, 1), round((y + origin[1]) * s + (s - 1) / 2, 1)]

    def points_to_full(self, points: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """:meth:`to_full` for an (n, 2) array of (x, y)."""
        s = self.scale
        return np.round((points.reshape(-1, 2) + origin) * s + (s - 1) / 2, 1)

    def to_working(self, x: float, y: float) -> tuple[float, float]:
        """A full-resolution image pixel (x, y), in working pixels of the whole frame."""
        s = self.scale
        return (x - (s - 1) / 2) / s, (y - (s - 1) / 2) / s


def saturated_bright(
    pixels: np.ndarray, grid: PixelGrid, roi: tuple[int, int, int, int], photometric: str, bits_stored: int
) -> np.ndarray:
    """(h, w) bool over ``roi`` (working pixels x0, y0, x1, y1): working pixels holding any
    full pixel stored at the bright end of the range (the maximum on MONOCHROME2, 0 on
    MONOCHROME1), grown by two pixels (the cement's smoothing reaches that far).

    Why: brightness control raises the exposure as the dark cement grows, and 8-bit video
    windowed on the first frame clips ever more of the bright tissue to white (7 to 71 % of
    an AP view on one realistic case). A clipped pixel brightens less than the rest, so
    against the baseline it reads as attenuation gained: cement where there is none, and,
    once most of the region is clipped, a background offset that hides the real cement.
    Cement only darkens, so a pixel clipped bright holds none: it is left out of the
    comparison rather than read."""
    s = grid.scale
    x0, y0, x1, y1 = roi
    crop = pixels[y0 * s : y1 * s, x0 * s : x1 * s]
    clip = (crop >= 2**bits_stored - 1) if photometric != "MONOCHROME1" else (crop <= 0)
    if not clip.any():
        return np.zeros((y1 - y0, x1 - x0), bool)
    clip = clip.view(np.uint8)
    if s > 1:  # any full pixel of a working pixel
        clip = cv2.resize(clip * np.uint8(255), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return cv2.dilate(clip, np.ones((5, 5), np.uint8)) > 0
