"""A voxel phantom of the spine around the treated vertebra.

Coordinates are millimetres in the patient, origin at the centre of the treated
vertebral body (the isocentre of both C-arm planes): x left-right, y
anterior (-) to posterior (+), z caudal (-) to cranial (+). Volumes are indexed
``[z, y, x]``. Values are linear attenuation coefficients *relative to soft
tissue* (1/mm at an effective energy of about 60 keV): the soft tissue of the
trunk is added analytically by the projector, so a voxel of soft tissue is 0,
bone is positive and gas negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from monitor.messages import LEVELS
from monitor.sim.config import MU_CEMENT_DEFAULT  # noqa: F401 (re-exported: the cement's, with the tissues')

# Linear attenuation coefficients, 1/mm, ~60 keV effective (NIST XCOM, mass
# coefficients times density, softened for a polychromatic beam).
MU_SOFT_TISSUE = 0.0206
MU_MARROW = 0.0195  # fatty marrow of osteoporotic bone
MU_CORTICAL = 0.058
MU_TRABECULA = 0.058  # mineralised trabecular tissue (the struts themselves)
MU_ARCH = 0.040  # posterior elements: cortical and cancellous mixed at voxel scale
MU_STEEL = 0.90
MU_CALCIFICATION = 0.050


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid; ``origin`` is the outer corner (x, y, z) in mm."""

    voxel_mm: float
    origin: tuple[float, float, float]
    shape: tuple[int, int, int]  # (nz, ny, nx)

    def axis(self, name: str) -> np.ndarray:
        i = {"x": 0, "y": 1, "z": 2}[name]
        n = self.shape[2 - i]
        return self.origin[i] + (np.arange(n) + 0.5) * self.voxel_mm

    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable voxel-centre coordinates (x, y, z)."""
        x = self.axis("x")[None, None, :]
        y = self.axis("y")[None, :, None]
        z = self.axis("z")[:, None, None]
        return x, y, z

    @property
    def voxel_ml(self) -> float:
        return self.voxel_mm**3 / 1000.0


@dataclass(frozen=True)
class VertebraShape:
    half_width: float
    half_depth: float
    height: float
    disc: float
    endplate_concavity: float = 0.8
    wedge_mm: float = 0.0  # anterior height lost in a wedge fracture

    @property
    def posterior_wall_y(self) -> float:
        """y of the flat part of the posterior wall, lateral to its midline concavity."""
        return self.half_depth - 2.0

    def pedicle_x(self, y: np.ndarray | float) -> np.ndarray | float:
        return 0.55 * self.half_width + (np.asarray(y) - self.half_depth) * 0.25


def vertebra_for_level(level: str) -> VertebraShape:
    """Typical adult dimensions, growing from T5 to L5."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}")
    f = LEVELS.index(level) / (len(LEVELS) - 1)
    return VertebraShape(
        half_width=14.0 + 10.0 * f,
        half_depth=12.5 + 4.5 * f,
        height=19.0 + 8.0 * f,
        disc=5.0 + 5.0 * f,
    )


def body_mask(x, y, z, v: VertebraShape, zc: float, inset: float = 0.0) -> np.ndarray:
    """Vertebral body: a rounded axial outline with a flat, midline-concave
    posterior wall, a waist at mid-height in front and at the sides, rounded
    rims, and endplates that dip towards the centre."""
    zn = np.clip((z - zc) / (v.height / 2), -1.0, 1.0)
    waist = 1.0 - 0.06 * (1.0 - zn**2)
    ax, ay = v.half_width * waist - inset, v.half_depth * waist - inset
    axial = (np.abs(x / ax) ** 2.4 + np.abs(y / ay) ** 2.4) <= 1.0
    wall = v.posterior_wall_y - 1.2 * np.exp(-(x**2) / (2 * 9.0**2)) - inset
    axial = axial & (y <= wall)
    r2 = np.clip((x / v.half_width) ** 2 + (y / v.half_depth) ** 2, 0.0, 1.0)
    dip = v.endplate_concavity * (1.0 - r2)
    rim = 1.5 * np.clip((np.sqrt(r2) - 0.8) / 0.2, 0.0, 1.0) ** 2
    anterior = np.clip((v.half_depth - y) / (2 * v.half_depth), 0.0, 1.0)
    top = zc + v.height / 2 - inset - dip - rim - v.wedge_mm * anterior
    bottom = zc - v.height / 2 + inset + dip + rim
    return axial & (z <= top) & (z >= bottom)


def _segment_distance(px, py, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance in the (x, y) plane from points to the segment a-b."""
    ax_, ay_ = a
    dx, dy = b[0] - ax_, b[1] - ay_
    t = np.clip(((px - ax_) * dx + (py - ay_) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(px - (ax_ + t * dx), py - (ay_ + t * dy))


def tube_fraction(grid: Grid, points: np.ndarray, radius: float, inner: float = 0.0):
    """Partial-volume fraction of a tube along a polyline, within its bounding box.

    Returns (slices, fraction) where ``fraction`` covers ``volume[slices]``; edges
    are anti-aliased over one voxel so thin steel walls still project correctly.
    Tubes of radius up to 5 mm along the same polyline share one box.
    """
    margin = max(radius, 5.0) + 2 * grid.voxel_mm  # same box for any radius up to 5 mm
    lo = points.min(axis=0) - margin
    hi = points.max(axis=0) + margin
    sl = []
    for i, name in ((2, "z"), (1, "y"), (0, "x")):
        ax = grid.axis(name)
        a = int(np.clip(np.searchsorted(ax, lo[i]), 0, len(ax)))
        b = int(np.clip(np.searchsorted(ax, hi[i]), 0, len(ax)))
        sl.append(slice(a, b))
    axes = [grid.axis(name)[s] for name, s in zip("zyx", sl, strict=True)]
    d = np.full([len(a) for a in axes], np.inf)
    # Each segment's distances only where they can matter: within ``reach`` of it (past
    # radius + v/2 the fraction is 0 whatever the distance). A long polyline (a rib, 45
    # segments) then costs its length, not 45 times its box.
    v = grid.voxel_mm
    reach = radius + 1.5 * v
    for p, q in zip(points[:-1], points[1:], strict=True):
        near = []
        for a, i in zip(axes, (2, 1, 0), strict=True):
            lo_i, hi_i = min(p[i], q[i]) - reach, max(p[i], q[i]) + reach
            near.append(slice(int(np.searchsorted(a, lo_i)), int(np.searchsorted(a, hi_i))))
        z = axes[0][near[0]][:, None, None]
        y = axes[1][near[1]][None, :, None]
        x = axes[2][near[2]][None, None, :]
        seg = q - p
        t = ((x - p[0]) * seg[0] + (y - p[1]) * seg[1] + (z - p[2]) * seg[2]) / float(seg @ seg)
        t = np.clip(t, 0.0, 1.0)
        dist = np.sqrt(
            (x - p[0] - t * seg[0]) ** 2 + (y - p[1] - t * seg[1]) ** 2 + (z - p[2] - t * seg[2]) ** 2
        )
        d[tuple(near)] = np.minimum(d[tuple(near)], dist)
    frac = np.clip((radius - d) / v + 0.5, 0.0, 1.0)
    if inner > 0:
        frac -= np.clip((inner - d) / v + 0.5, 0.0, 1.0)
    return tuple(sl), frac.astype(np.float32)


@dataclass(frozen=True)
class Surroundings:
    """The patient around the phantom's fine box, on a coarser grid whose voxels are each
    wholly inside or outside that box: what replaces the analytic trunk for a CT phantom.
    Fractions of each voxel, relative to soft tissue filling it: ``bone`` of cortical bone
    in its place, ``missing`` of tissue absent (lung, gas, the air around the patient).
    ``outside``: the voxels the fine box does not cover (the only ones projected)."""

    grid: Grid
    bone: np.ndarray  # float32 [z, y, x]
    missing: np.ndarray  # float32 [z, y, x]
    outside: np.ndarray  # bool [z, y, x]


@dataclass
class Phantom:
    """The static anatomy and the masks the cement model and the truth need."""

    grid: Grid
    shape: VertebraShape
    mu: np.ndarray  # float32 [z, y, x], relative to soft tissue
    body: np.ndarray  # bool, treated vertebral body incl. its cortex
    cancellous: np.ndarray  # bool, its trabecular interior (where cement may go)
    level: str
    cleft: np.ndarray | None = None  # bool, a gas-filled intravertebral cleft (filled first)
    # None: the trunk is an analytic elliptic cylinder of soft tissue around the fine box
    surroundings: Surroundings | None = None


def material_fractions(relative_mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Attenuation relative to soft tissue (1/mm, at the simple world's energy) read as
    materials, per voxel: (fraction of cortical bone in place of tissue, fraction of tissue
    missing: gas, lung, fat, the air around the patient). The realistic world projects each
    with its own attenuation spectrum."""
    bone = np.clip(relative_mu, 0.0, None) / (MU_CORTICAL - MU_SOFT_TISSUE)
    missing = np.clip(-relative_mu, 0.0, None) / MU_SOFT_TISSUE
    return bone.astype(np.float32), missing.astype(np.float32)


CLEFT_ON_ENDPLATE_MM = 3.0  # a cleft laid on an endplate (add_cleft's "superior", "inferior"): its thickness


def add_cleft(phantom: Phantom, rng: np.random.Generator, site: str = "middle") -> Phantom:
    """A gas-filled intravertebral cleft (Kummell's disease: avascular necrosis after a
    fracture, common in the patients who get vertebroplasty): an ellipsoid of 4-10 mm
    semi-axes in the anterior half of the cancellous bone. Cement fills it first.

    ``site``: "middle" puts it at mid-height (within 2 mm); "superior" or "inferior" lays it on
    that endplate as a flat crescent CLEFT_ON_ENDPLATE_MM thick, its far side 0.5 mm inside the
    cancellous bone's top (bottom) over its centre, where a real cleft often lies: cement filling
    it then rises above (below) the bolus at the tip, as cement through the endplate into the disc
    does. The draws are the same for every site, so a site changes nothing else in the case."""
    from dataclasses import replace

    x, y, z = phantom.grid.coords()
    s = phantom.shape
    centre = (rng.uniform(-3, 3), -rng.uniform(0.2, 0.45) * s.half_depth, rng.uniform(-2, 2))
    axes = (rng.uniform(6, 10), rng.uniform(4, 7), rng.uniform(2.5, 4.5))
    if site != "middle":
        inside = ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 <= 0.25
        heights = np.broadcast_to(z, phantom.cancellous.shape)[phantom.cancellous & inside]
        edge = heights.max() if site == "superior" else heights.min()
        axes = (axes[0], axes[1], CLEFT_ON_ENDPLATE_MM / 2)
        reach = axes[2] + 0.5
        centre = (centre[0], centre[1], float(edge - reach if site == "superior" else edge + reach))
    inside = ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2
    cleft = ((inside + ((z - centre[2]) / axes[2]) ** 2) <= 1.0) & phantom.cancellous
    mu = phantom.mu.copy()
    mu[cleft] = -MU_SOFT_TISSUE  # gas
    return replace(phantom, mu=mu, cleft=cleft)


def build_phantom(
    rng: np.random.Generator,
    level: str = "L1",
    fracture: str = "wedge",
    voxel_mm: float = 0.5,
    half_extent: tuple[float, float, float] = (60.0, 70.0, 70.0),
    bowel_gas: bool = True,
    calcifications: bool = True,
) -> Phantom:
    """Treated vertebra with two neighbours each side, discs, posterior
    elements, ribs and lungs at thoracic levels, bowel gas and aortic
    calcifications at lumbar levels."""
    # Over 60 lines on purpose: the phantom laid down in order on one voxel grid (trabecular noise;
    # five vertebrae, the treated one fractured, each its cortex, struts and posterior elements;
    # then ribs, and lungs or bowel gas and calcifications), each a few lines.
    hx, hy, hz = half_extent
    n = (int(round(2 * hz / voxel_mm)), int(round(2 * hy / voxel_mm)), int(round(2 * hx / voxel_mm)))
    grid = Grid(voxel_mm, (-hx, -hy, -hz), n)
    x, y, z = grid.coords()
    base = vertebra_for_level(level)
    mu = np.zeros(n, dtype=np.float32)

    # Trabecular texture: band-pass noise, thresholded into struts, thinner in the
    # osteoporotic treated body than in its neighbours.
    noise = rng.standard_normal(n).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, 0.9) - ndimage.gaussian_filter(noise, 2.5)
    noise /= noise.std() + 1e-6

    body = cancellous = None
    rib_levels: list[float] = []
    level_index = LEVELS.index(level)
    pitch = base.height + base.disc
    for k in range(-2, 3):
        shape = base
        if k == 0:
            shape = _fractured(base, fracture, rng)
        zc = k * pitch + rng.normal(0, 0.3)
        zs = _z_slice(grid, zc - pitch, zc + pitch)
        xs, ys, zz = x, y, z[zs]
        outer = body_mask(xs, ys, zz, shape, zc)
        inner = body_mask(xs, ys, zz, shape, zc, inset=0.9 if k == 0 else 1.3)
        bv_tv = 0.10 if k == 0 else 0.16
        strut = noise[zs] > np.quantile(noise[zs][inner][::7], 1.0 - bv_tv)
        trab = np.where(strut, MU_TRABECULA, MU_MARROW) - MU_SOFT_TISSUE
        region = mu[zs]
        region[outer] = MU_CORTICAL - MU_SOFT_TISSUE
        region[inner] = trab[inner]
        _posterior_elements(region, xs, ys, zz, shape, zc, noise[zs])
        if level_index + k < LEVELS.index("L1"):
            rib_levels.append(zc)
        if k == 0:
            body = np.zeros(n, dtype=bool)
            cancellous = np.zeros(n, dtype=bool)
            body[zs] = outer
            cancellous[zs] = inner

    for zc in rib_levels:
        _ribs(mu, grid, base, zc)
    if level.startswith("T"):
        lungs = (np.abs(x) > base.half_width + 10) & (y < base.half_depth + 30)
        mu[np.broadcast_to(lungs, n) & (mu == 0)] = -0.7 * MU_SOFT_TISSUE
    else:
        if bowel_gas:
            _bowel_gas(mu, grid, rng, base)
        if calcifications:
            _aortic_calcifications(mu, grid, rng, base)
    return Phantom(grid, base, mu, body, cancellous, level)


def _fractured(v: VertebraShape, fracture: str, rng: np.random.Generator) -> VertebraShape:
    from dataclasses import replace

    if fracture == "wedge":
        return replace(v, wedge_mm=v.height * rng.uniform(0.15, 0.35))
    if fracture == "biconcave":
        return replace(v, endplate_concavity=v.height * rng.uniform(0.10, 0.18))
    if fracture == "none":
        return v
    raise ValueError(f"unknown fracture {fracture!r}; use wedge, biconcave or none")


def _z_slice(grid: Grid, z0: float, z1: float) -> slice:
    ax = grid.axis("z")
    return slice(int(np.searchsorted(ax, z0)), int(np.searchsorted(ax, z1)))


def _posterior_elements(region, x, y, z, v: VertebraShape, zc: float, noise) -> None:
    """Pedicles (cortical ring, cancellous core), laminae, spinous and transverse
    processes and articular processes, written into ``region`` in place. ``region`` and
    ``noise`` are (nz, ny, nx); ``x``, ``y``, ``z`` broadcast to them (mm)."""
    h, ay = v.height, v.half_depth
    # Every element lies behind y = posterior wall - 4 mm (the pedicles' front): only those
    # rows are computed.
    behind = slice(int(np.searchsorted(y[0, :, 0], v.posterior_wall_y - 5.0)), None)
    region, noise, y = region[:, behind], noise[:, behind], y[:, behind]
    pz = zc + 0.18 * h
    for s in (-1.0, 1.0):
        px = s * v.pedicle_x(y)
        along = (y >= v.posterior_wall_y - 4.0) & (y <= ay + 12.0)
        ring = ((x - px) / 4.2) ** 2 + ((z - pz) / (0.30 * h)) ** 2
        outer = along & (ring <= 1.0)
        inner = along & (((x - px) / 3.2) ** 2 + ((z - pz) / (0.30 * h - 1.0)) ** 2 <= 1.0)
        region[outer & (region == 0)] = MU_CORTICAL - MU_SOFT_TISSUE
        core = inner & (y > v.posterior_wall_y)
        region[core] = np.where(noise[core] > 1.0, MU_TRABECULA, MU_MARROW) - MU_SOFT_TISSUE
        end = (s * (v.pedicle_x(ay + 12.0) + 1.0), ay + 12.0)
        lamina = (_segment_distance(x, y, end, (0.0, ay + 22.0)) < 2.8) & (
            (z > zc - 0.30 * h) & (z < zc + 0.45 * h)
        )
        transverse = (_segment_distance(x, y, end, (s * (v.half_width + 18.0), ay + 15.0)) < 3.0) & (
            np.abs(z - (zc + 0.1 * h)) < 3.5
        )
        facet_c = (s * (v.pedicle_x(ay + 14.0) + 1.0), ay + 15.0)
        facets = (np.hypot(x - facet_c[0], y - facet_c[1]) < 4.5) & (
            (np.abs(z - (zc + 0.48 * h)) < 4.0) | (np.abs(z - (zc - 0.42 * h)) < 4.0)
        )
        region[(lamina | transverse | facets) & (region == 0)] = MU_ARCH - MU_SOFT_TISSUE
    drop = (y - (ay + 20.0)) * 0.35
    spinous = (np.abs(x) < 2.6) & (y > ay + 20.0) & (y < ay + 48.0)
    spinous = spinous & (z > zc - 0.35 * h - drop) & (z < zc + 0.28 * h - drop)
    region[spinous & (region == 0)] = MU_ARCH - MU_SOFT_TISSUE


def _ribs(mu: np.ndarray, grid: Grid, v: VertebraShape, zc: float) -> None:
    """Rib heads and the first part of each rib, curving back and down."""
    t = np.linspace(0.0, 90.0, 46)
    for s in (-1.0, 1.0):
        pts = np.stack(
            [
                s * (v.half_width * 0.8 + 0.85 * t),
                v.posterior_wall_y - 1.0 + 0.42 * t - 0.0075 * t**2,
                np.full_like(t, zc + 0.25 * v.height) - 0.22 * t,
            ],
            axis=1,
        )
        sl, outer = tube_fraction(grid, pts, 4.5)
        _, shell = tube_fraction(grid, pts, 4.5, inner=3.4)
        inner = outer - shell
        rib = shell * (MU_CORTICAL - MU_SOFT_TISSUE) + inner * (0.030 - MU_SOFT_TISSUE)
        view = mu[sl]
        view[...] = np.where(view == 0, rib, view)


def _bowel_gas(mu: np.ndarray, grid: Grid, rng: np.random.Generator, v: VertebraShape) -> None:
    x, y, z = grid.coords()
    for _ in range(rng.integers(2, 6)):
        c = (rng.uniform(-45, 45), rng.uniform(-68, -v.half_depth - 12), rng.uniform(-55, 55))
        r = rng.uniform(6, 18, size=3)
        box = tuple(  # the blob's bounding box, a voxel wider: outside it nothing is written
            slice(
                int(np.searchsorted(a.ravel(), c[i] - r[i] - 1.0)),
                int(np.searchsorted(a.ravel(), c[i] + r[i] + 1.0)),
            )
            for a, i in ((z, 2), (y, 1), (x, 0))
        )
        bx, by, bz = x[..., box[2]], y[:, box[1]], z[box[0]]
        blob = ((bx - c[0]) / r[0]) ** 2 + ((by - c[1]) / r[1]) ** 2 + ((bz - c[2]) / r[2]) ** 2 <= 1
        inside = mu[box]
        inside[blob & (inside == 0)] = -MU_SOFT_TISSUE


def _aortic_calcifications(mu: np.ndarray, grid: Grid, rng: np.random.Generator, v) -> None:
    x, y, z = grid.coords()
    cx, cy, r = -10.0, -v.half_depth - 13.0, 10.0
    for _ in range(rng.integers(3, 9)):
        angle = rng.uniform(0, 2 * np.pi)
        px, py, pz = cx + r * np.cos(angle), cy + r * np.sin(angle), rng.uniform(-60, 60)
        plaque = (np.hypot(x - px, y - py) < rng.uniform(1.0, 2.0)) & (np.abs(z - pz) < rng.uniform(1.5, 5))
        mu[plaque] = MU_CALCIFICATION


def add_cannula(
    phantom: Phantom, tip: np.ndarray, entry: np.ndarray, gauge: int = 11
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, dict]:
    """Steel cannula from ``tip`` out through ``entry`` to the edge of the volume.

    The steel is not written into the voxels: it is projected analytically
    (``tube`` describes it for :func:`monitor.sim.projector.tube_path_integral`),
    because a voxelised thin steel wall blurs by a voxel and widens the shaft.
    Returns (slices, wall, lumen, tube): the wall and lumen fractions, so the
    caller keeps cement out of the wall and fills the lumen once injection starts.
    """
    outer = {11: 3.05, 13: 2.41}[gauge] / 2
    inner = outer - 0.30
    d = (entry - tip) / np.linalg.norm(entry - tip)
    end = tip + d * 200.0
    sl, wall = tube_fraction(phantom.grid, np.stack([tip, end]), outer, inner)
    _, lumen = tube_fraction(phantom.grid, np.stack([tip, end]), inner)
    view = phantom.mu[sl]
    view[...] = view * (1 - wall - lumen)  # tissue displaced by the tube; steel is added in projection
    tube = {"tip": tip, "end": end, "outer": outer, "inner": inner, "mu": MU_STEEL - MU_SOFT_TISSUE}
    return sl, wall, lumen, tube
