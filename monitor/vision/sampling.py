"""Bilinear sampling with exact sub-pixel weights: the same answer under every OpenCV.

Why this module exists: OpenCV 4's bilinear ``remap`` and ``warpAffine`` round each
source position to 1/32 pixel (their fixed-point interpolation tables,
``INTER_BITS = 5``) for every pixel type, float images included; OpenCV 5
interpolates at the exact float position. The two differ by up to 1/64 pixel in
position, about 1 % of a strong edge's value, and fits that are ill-conditioned
amplify that (the needle calibration's scale moved 12 % on one bundled view).
A measurement must not depend on which build the package index served that day,
so every sub-pixel read in the monitor goes through here:

- :func:`sample_points`: arbitrary positions (profiles along a line, registration).
  The four neighbours are fetched by OpenCV's nearest-neighbour remap at integer
  positions, which every version does exactly (and with OpenCV's border modes),
  and blended here with the exact weights.
- :func:`translate_cubic`: a whole-image shift with OpenCV's bicubic kernel (the simulator's
  breathing), by four taps per axis in numpy.
- :func:`sample_grid`: a separable grid, ``out[i, j] = image(ys[i], xs[j])``
  (translations, axis-aligned scalings), by gathering rows then columns in numpy.

Coordinates are in pixels of ``image``, pixel centres at integers (OpenCV's convention).
Results are float32 (float64 in, float64 out for :func:`sample_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import cv2
import numpy as np

__all__ = [
    "BilinearImage",
    "Border",
    "Positions",
    "sample_grid",
    "sample_points",
    "translate",
    "translate_cubic",
]

# cv2.remap's destination must be under SHRT_MAX in each dimension: long point lists are folded.
_FOLD = 4096


class Border(IntEnum):
    """What lies outside the image (OpenCV's names and values)."""

    CONSTANT = cv2.BORDER_CONSTANT  # a fixed value
    REPLICATE = cv2.BORDER_REPLICATE  # the edge pixel repeated: aaa|abc|ccc
    REFLECT = cv2.BORDER_REFLECT  # mirrored, edge included: cba|abc|cba


@dataclass(frozen=True)
class Positions:
    """Sample positions split once into integer corners and fractions, for reuse.

    ``x0``, ``y0`` (float32, integer-valued) and ``fx``, ``fy`` (float32 in [0, 1)) are
    folded to (rows, <= 4096) for OpenCV's remap; ``shape`` is the callers' shape.
    """

    x0: np.ndarray
    y0: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> Positions:
        """``x`` (columns) and ``y`` (rows) in pixels, arrays of one shape."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        n = x.size
        rows = max(1, -(-n // _FOLD))
        width = _FOLD if rows > 1 else max(n, 1)
        parts = np.zeros((4, rows * width), np.float32)
        x0, y0 = np.floor(x.ravel()), np.floor(y.ravel())
        parts[0, :n], parts[1, :n] = x0, y0
        parts[2, :n], parts[3, :n] = x.ravel() - x0, y.ravel() - y0
        x0, y0, fx, fy = parts.reshape(4, rows, width)
        return cls(x0, y0, fx, fy, x.shape)

    def unfold(self, values: np.ndarray) -> np.ndarray:
        """Folded per-position values back to the callers' shape (channels kept last)."""
        n = int(np.prod(self.shape))
        return values.reshape(-1, *values.shape[2:])[:n].reshape(self.shape + values.shape[2:])


def _blend(corners: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """Bilinear blend of the four corners (..., 4): (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1)."""
    top = corners[..., 0] + fx * (corners[..., 1] - corners[..., 0])
    bottom = corners[..., 2] + fx * (corners[..., 3] - corners[..., 2])
    return top + fy * (bottom - top)


class BilinearImage:
    """One image (H, W) prepared for repeated exact bilinear reads (registration reads one
    moving image a dozen times): each pixel's 2x2 neighbourhood, border included, stacked
    as four channels, so one nearest-neighbour remap fetches all four corners."""

    def __init__(self, image: np.ndarray, border: Border = Border.CONSTANT, value: float = 0.0):
        if border not in (Border.CONSTANT, Border.REPLICATE):
            raise ValueError(f"BilinearImage: border {border!r} is not supported")
        src = np.asarray(image, np.float32)
        if src.ndim != 2:
            raise ValueError(f"BilinearImage: one channel expected, got shape {src.shape}")
        # One pixel of border all round; the stack is indexed at (x0 + 1, y0 + 1). Beyond that
        # pixel the remap's own border gives the same as the image's (all four corners outside).
        padded = cv2.copyMakeBorder(src, 1, 1, 1, 1, int(border), value=value)
        self._corners = cv2.merge([padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]])
        self._border = int(border)
        self._value = (value,) * 4

    def at(self, where: Positions) -> np.ndarray:
        """The image at ``where``, float32, in the positions' shape."""
        corners = cv2.remap(
            self._corners,
            where.x0 + 1,
            where.y0 + 1,
            cv2.INTER_NEAREST,
            borderMode=self._border,
            borderValue=self._value,
        )
        return where.unfold(_blend(corners, where.fx, where.fy))


def sample_points(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, border: Border = Border.CONSTANT, value: float = 0.0
) -> np.ndarray:
    """``image`` (H, W) or (H, W, C) read bilinearly at the positions ``(x, y)``.

    ``x`` and ``y`` are arrays of one shape S (column and row, pixels); returns S, or
    S + (C,) for a multi-channel image, in float32. For a few thousand points; many
    points on one image, or one set of points on many images, are cheaper through
    :class:`BilinearImage` and :class:`Positions`.
    """
    where = Positions.of(x, y)
    src = np.ascontiguousarray(image, np.float32)
    if src.ndim == 3 and src.shape[2] == 1:  # OpenCV drops a single channel's axis
        return sample_points(src[..., 0], x, y, border, value)[..., None]

    def at(dx: int, dy: int) -> np.ndarray:
        return cv2.remap(
            src, where.x0 + dx, where.y0 + dy, cv2.INTER_NEAREST, borderMode=int(border), borderValue=value
        )

    fx, fy = (where.fx[..., None], where.fy[..., None]) if src.ndim == 3 else (where.fx, where.fy)
    corners = np.stack([at(0, 0), at(1, 0), at(0, 1), at(1, 1)], axis=-1)
    return where.unfold(_blend(corners, fx, fy))


def _axis_taps(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices into an axis padded by one pixel each side, and the weight of the upper tap."""
    c0 = np.floor(coords)
    frac = coords - c0
    low = np.clip(c0, -1, size) + 1
    high = np.clip(c0 + 1, -1, size) + 1
    return low.astype(np.intp), high.astype(np.intp), frac


def sample_grid(
    image: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    border: Border = Border.CONSTANT,
    value: float = 0.0,
) -> np.ndarray:
    """``out[i, j] = image(ys[i], xs[j])``, bilinear: shape (len(ys), len(xs)) + channels.

    For translations and axis-aligned scalings, where the position along each axis
    depends on that axis alone. ``border`` is CONSTANT or REPLICATE.
    """
    if border not in (Border.CONSTANT, Border.REPLICATE):
        raise ValueError(f"sample_grid: border {border!r} is not supported")
    dtype = np.float64 if image.dtype == np.float64 else np.float32
    src = np.asarray(image, dtype)
    spread = [(1, 1), (1, 1)] + [(0, 0)] * (src.ndim - 2)
    if border == Border.CONSTANT:
        padded = np.pad(src, spread, mode="constant", constant_values=value)
    else:
        padded = np.pad(src, spread, mode="edge")
    r0, r1, fy = _axis_taps(np.asarray(ys, np.float64), src.shape[0])
    c0, c1, fx = _axis_taps(np.asarray(xs, np.float64), src.shape[1])
    extra = (None,) * (src.ndim - 2)
    fy = fy.astype(dtype)[(slice(None), None, *extra)]
    fx = fx.astype(dtype)[(None, slice(None), *extra)]
    low, high = padded[r0], padded[r1]
    rows = low + fy * (high - low)
    left, right = rows[:, c0], rows[:, c1]
    return left + fx * (right - left)


def translate(image: np.ndarray, dx: float, dy: float, border: Border = Border.REPLICATE) -> np.ndarray:
    """``image`` (H, W) or (H, W, C) moved by (dx, dy) pixels: ``out(x, y) = image(x - dx, y - dy)``.

    The weights are the same for every pixel: four integer-shifted views of the
    border-extended image, blended by OpenCV's addWeighted (as fast as its warpAffine).
    """
    if border not in (Border.CONSTANT, Border.REPLICATE):
        raise ValueError(f"translate: border {border!r} is not supported")
    if not (np.isfinite(dx) and np.isfinite(dy)):
        raise ValueError(f"translate: shift ({dx}, {dy}) is not finite")
    h, w = image.shape[:2]
    src = np.asarray(image, np.float32)
    # source column of output column c is c - dx = c + ix + fx, with ix an integer; a shift of
    # more than the image reads border only, so it is clamped (the same result, bounded padding)
    ix, iy = int(np.floor(-dx)), int(np.floor(-dy))
    fx, fy = float(-dx - ix), float(-dy - iy)
    ix, iy = min(max(ix, -w - 1), w), min(max(iy, -h - 1), h)
    left, right = max(0, -ix), max(0, ix + 1)
    top, bottom = max(0, -iy), max(0, iy + 1)
    padded = cv2.copyMakeBorder(src, top, bottom, left, right, int(border), value=0.0)
    r0, c0 = iy + top, ix + left

    def view(dr: int, dc: int) -> np.ndarray:
        return padded[r0 + dr : r0 + dr + h, c0 + dc : c0 + dc + w]

    upper = cv2.addWeighted(view(0, 0), 1.0 - fx, view(0, 1), fx, 0.0)
    lower = cv2.addWeighted(view(1, 0), 1.0 - fx, view(1, 1), fx, 0.0)
    return cv2.addWeighted(upper, 1.0 - fy, lower, fy, 0.0).reshape(src.shape)


def _cubic_weights(t: float) -> np.ndarray:
    """The four taps at offsets -1, 0, 1, 2 of the bicubic kernel for fraction ``t`` (a = -0.75,
    OpenCV's INTER_CUBIC)."""
    a = -0.75
    d = np.array([1 + t, t, 1 - t, 2 - t])
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, far)


def translate_cubic(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` (H, W) moved by (dx, dy) pixels with bicubic interpolation, edges repeated:
    ``out(x, y) = image(x - dx, y - dy)``. Float32."""
    h, w = image.shape
    out = np.asarray(image, np.float32)
    for axis, d, n in ((0, dy, h), (1, dx, w)):
        start = np.floor(-d)
        taps = _cubic_weights(float(-d - start)).astype(np.float32)
        base = np.arange(n) + int(start)
        shifted = np.zeros_like(out)
        for k, weight in zip(range(-1, 3), taps, strict=True):
            shifted += weight * np.take(out, np.clip(base + k, 0, n - 1), axis=axis)
        out = shifted
    return out
