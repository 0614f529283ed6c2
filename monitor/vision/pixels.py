"""Full-resolution image pixels and the working pixels frames are measured in.

Detectors finer than :data:`WORK_PIXEL_MM` are binned by a whole factor (a 1024-pixel
detector at 0.19 mm, 2x2) before anything is measured: enough for 0.3 mm, four times
faster. Working pixel (i, j) averages full pixels ``s*i .. s*i + s - 1``, so its centre is
full-resolution ``s*i + (s - 1)/2``; every conversion between the two goes through here.
"""

from __future__ import annotations

from dataclasses import dataclass

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
