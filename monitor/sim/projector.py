"""Cone-beam line integrals through the voxel phantom.

Each slab of voxels perpendicular to the central ray is magnified onto the
detector by SID / (distance from the source to the slab) and resampled there
(bilinear, ``monitor.vision.sampling``); the slabs' contributions, times the voxel size along the
beam and the obliquity of each ray, add up to the line integral of the
attenuation. This is the standard slice-magnify form of a divergent-beam
projector: exact for the geometry, with bilinear interpolation inside slabs.

Line integrals are linear in the attenuation, so the static anatomy is
projected once and each frame only adds the projection of its cement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.sim.anatomy import MU_SOFT_TISSUE, Grid
from monitor.vision.sampling import Border, sample_grid


@dataclass(frozen=True)
class View:
    """One C-arm plane: the source on the -beam side at SOD from the isocentre.

    Lateral: the beam runs along +x, the image's columns along +y (posterior
    to the right unless mirrored), rows down along -z. AP: the beam runs along
    +y (the patient lies prone, the tube under the table), columns along +x.
    """

    name: str  # "lateral" or "ap"
    size: int  # detector pixels, square
    pixel_mm: float  # at the detector
    sid_mm: float
    sod_mm: float

    @property
    def beam_axis(self) -> int:
        return 0 if self.name == "lateral" else 1  # index into (x, y, z)

    @property
    def column_axis(self) -> int:
        return 1 if self.name == "lateral" else 0

    @property
    def centre(self) -> float:
        return (self.size - 1) / 2.0

    @property
    def magnification(self) -> float:
        return self.sid_mm / self.sod_mm

    @property
    def spacing_at_isocentre_mm(self) -> float:
        return self.pixel_mm / self.magnification

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Project patient points (N, 3) in mm to (column, row) pixel coordinates."""
        depth = self.sod_mm + points[:, self.beam_axis]
        scale = self.sid_mm / depth / self.pixel_mm
        col = self.centre + points[:, self.column_axis] * scale
        row = self.centre - points[:, 2] * scale
        return np.stack([col, row], axis=1)

    def ray_lengths_factor(self) -> np.ndarray:
        """1 / cos(angle of each pixel's ray to the central ray)."""
        r = (np.arange(self.size) - self.centre) * self.pixel_mm
        return np.sqrt(self.sid_mm**2 + r[None, :] ** 2 + r[:, None] ** 2) / self.sid_mm


def project(
    volume: np.ndarray,
    grid: Grid,
    view: View,
    roi: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Line integrals (dimensionless) of ``volume`` [z, y, x] in 1/mm on the detector.

    ``roi`` = (column0, row0, width, height) restricts the output to that
    detector window, which makes projecting a small cement cloud cheap.

    Each slab across the beam is sampled only over the detector pixels whose bilinear taps
    reach its non-zero voxels (elsewhere the sample is exactly 0): the same sums, pixel by
    pixel and in the same order, at a fraction of the cost for a sparse volume (a lumen, the
    bone of a body in a large field).
    """
    c0, r0, w, h = roi if roi is not None else (0, 0, view.size, view.size)
    out = np.zeros((h, w), dtype=np.float32)
    v = grid.voxel_mm
    col_origin = grid.origin[view.column_axis]
    z_origin = grid.origin[2]
    depths = grid.axis("xyz"[view.beam_axis])
    # the slabs along the beam, each (z, column) and contiguous: slab i is volume[:, :, i] for a
    # beam along x, volume[:, i, :] along y
    slabs = np.ascontiguousarray(np.moveaxis(volume, 2 if view.beam_axis == 0 else 1, 0), dtype=np.float32)
    rows_used = slabs.any(axis=2)  # (slab, z)
    cols_used = slabs.any(axis=1)  # (slab, column)
    for i, depth in enumerate(depths):
        if not rows_used[i].any():
            continue
        s = (view.sod_mm + depth) / view.sid_mm  # detector mm -> slab mm
        a = view.pixel_mm * s / v
        # output pixel (col, row) -> slab voxel (a col + b, -a row + c): separable, bilinear
        xs = a * np.arange(w) + ((c0 - view.centre) * view.pixel_mm * s - col_origin) / v - 0.5
        ys = -a * np.arange(h) + ((view.centre - r0) * view.pixel_mm * s - z_origin) / v - 0.5
        # the output window whose taps (floor(u), floor(u) + 1) reach a non-zero voxel
        used_x, used_y = np.flatnonzero(cols_used[i]), np.flatnonzero(rows_used[i])
        x_in = np.flatnonzero((xs > used_x[0] - 1) & (xs < used_x[-1] + 1))
        y_in = np.flatnonzero((ys > used_y[0] - 1) & (ys < used_y[-1] + 1))
        if not x_in.size or not y_in.size:
            continue
        cols = slice(x_in[0], x_in[-1] + 1)
        rows = slice(y_in[0], y_in[-1] + 1)
        out[rows, cols] += sample_grid(slabs[i], xs[cols], ys[rows], Border.CONSTANT, 0.0)
    out *= v
    out *= view.ray_lengths_factor()[r0 : r0 + h, c0 : c0 + w]
    return out


TRUNK_HALF_WIDTH_MM = 165.0
TRUNK_HALF_DEPTH_MM = 115.0


def surrounding_paths(phantom, view: View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mm of (soft tissue, cortical bone in place of tissue, tissue missing) along each ray
    through the patient around and under the phantom's own attenuation: the analytic trunk
    (tissue only) for the geometric phantom; for a CT phantom, the fine box filled with
    tissue plus the CT's coarse surroundings outside it."""
    s = phantom.surroundings
    if s is None:
        trunk = trunk_path_integral(
            view, TRUNK_HALF_WIDTH_MM, TRUNK_HALF_DEPTH_MM, centre_y=-phantom.shape.half_depth - 10.0
        )
        zero = np.zeros_like(trunk)
        return trunk / MU_SOFT_TISSUE, zero, zero
    tissue = project(np.ones(phantom.grid.shape, np.float32), phantom.grid, view)
    tissue += project(s.outside.astype(np.float32), s.grid, view)
    bone = project(np.where(s.outside, s.bone, 0.0).astype(np.float32), s.grid, view)
    missing = project(np.where(s.outside, s.missing, 0.0).astype(np.float32), s.grid, view)
    return tissue, bone, missing


def trunk_path_integral(view: View, half_width: float, half_depth: float, centre_y: float):
    """Soft tissue of the trunk: an elliptic cylinder along z, integrated analytically.

    Returns mu_tissue times the chord of each pixel's ray through the ellipse
    (x / half_width)^2 + ((y - centre_y) / half_depth)^2 <= 1.
    """
    n = view.size
    det = (np.arange(n) - view.centre) * view.pixel_mm
    a = det[None, :]  # along the column axis at the detector
    b = -det[:, None]  # along z
    source = np.zeros(3)
    source[view.beam_axis] = -view.sod_mm
    # Ray: source + t * d, t in [0, 1] to the detector point.
    d_beam = view.sid_mm
    d_col = a
    if view.beam_axis == 0:
        sx, sy, dx, dy = source[0], source[1], d_beam, d_col
    else:
        sx, sy, dx, dy = source[0], source[1], d_col, d_beam
    sy = sy - centre_y
    qa = (dx / half_width) ** 2 + (dy / half_depth) ** 2
    qb = 2 * (sx * dx / half_width**2 + sy * dy / half_depth**2)
    qc = (sx / half_width) ** 2 + (sy / half_depth) ** 2 - 1.0
    disc = np.maximum(qb * qb - 4 * qa * qc, 0.0)
    dt = np.sqrt(disc) / qa  # t2 - t1
    length = dt * np.sqrt(view.sid_mm**2 + a**2 + b**2)  # 3D length of the chord
    return (MU_SOFT_TISSUE * np.broadcast_to(length, (n, n))).astype(np.float32)


def tube_path_integral(
    view: View, tip: np.ndarray, end: np.ndarray, outer: float, inner: float, mu: float, samples: int = 2
) -> np.ndarray:
    """A straight steel tube (a cannula) from ``tip`` to ``end``, integrated analytically.

    Each ray's chord through the outer cylinder less its chord through the lumen,
    both limited to the tube's length, times ``mu``; ``samples`` x ``samples`` rays
    per pixel, averaged (steel edges are sharp: a voxelised tube would blur them
    by a voxel and make the cannula look wider than it is).
    """
    n = view.size
    u = (end - tip) / np.linalg.norm(end - tip)
    length = float(np.linalg.norm(end - tip))
    source = np.zeros(3)
    source[view.beam_axis] = -view.sod_mm
    total = np.zeros((n, n), np.float64)
    offsets = (np.arange(samples) + 0.5) / samples - 0.5
    base = np.arange(n) - view.centre
    w0 = source - tip
    w0_perp = w0 - (w0 @ u) * u
    for dr in offsets:
        for dc in offsets:
            col = (base[None, :] + dc) * view.pixel_mm
            row = (base[:, None] + dr) * view.pixel_mm
            d = np.zeros((n, n, 3))
            d[..., view.beam_axis] = view.sid_mm
            d[..., view.column_axis] = col
            d[..., 2] = -row
            du = d @ u
            d_perp = d - du[..., None] * u
            qa = (d_perp**2).sum(axis=-1)
            qb = 2 * (d_perp @ w0_perp)
            s0 = w0 @ u  # axial position of the source; s(t) = s0 + t * du
            with np.errstate(divide="ignore", invalid="ignore"):
                ta = np.where(du != 0, (0.0 - s0) / du, -np.inf)
                tb = np.where(du != 0, (length - s0) / du, np.inf)
            t_lo, t_hi = np.minimum(ta, tb), np.maximum(ta, tb)
            chord = np.zeros((n, n))
            for radius, sign in ((outer, 1.0), (inner, -1.0)):
                qc = w0_perp @ w0_perp - radius**2
                disc = qb * qb - 4 * qa * qc
                hit = disc > 0
                root = np.sqrt(np.where(hit, disc, 0.0))
                t1 = (-qb - root) / (2 * qa)
                t2 = (-qb + root) / (2 * qa)
                inside = np.clip(np.minimum(t2, t_hi) - np.maximum(t1, t_lo), 0.0, None)
                chord += sign * np.where(hit, inside, 0.0)
            total += chord * np.linalg.norm(d, axis=-1)
    # Beyond ~12 (a transmission of 6e-6) no quantum gets through at fluoroscopic doses either
    # way; capping keeps the later sub-pixel breathing shift (cubic) from ringing off the steel.
    return np.minimum(mu * total / samples**2, 12.0).astype(np.float32)
