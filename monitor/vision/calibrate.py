"""Scale and distortion from images of known objects: arrays in, numbers out.

``fit_grid``: a bead (or hole) grid of known pitch, imaged at the isocentre.
Image intensifiers bend straight lines into pincushions; the model is radial,

    x_distorted = c + (x - c) * (1 + k1 * r^2 + k2 * r^4),  r = |x - c| / R

with ``R`` half the image diagonal, fitted together with the ideal lattice
(origin and two lattice vectors) by least squares over every bead found.

``fit_needle``: the scale at the vertebra from the cannula's known outer
diameter: the shaft's cross-profile, averaged along its length, is fitted
with the projection of a steel tube blurred by the imaging system.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from monitor.vision.sampling import sample_points

NEEDLE_OUTER_MM = {11: 3.05, 13: 2.41}


class CalibrationError(ValueError):
    """The image does not show what the calibration needs."""


@dataclass(frozen=True)
class RadialDistortion:
    centre: tuple[float, float]  # pixels
    k1: float
    k2: float
    radius: float  # the normalising radius R, pixels

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """Ideal (undistorted) pixel positions to where the image shows them."""
        c = np.asarray(self.centre)
        d = np.asarray(xy, float) - c
        r2 = (d**2).sum(axis=-1, keepdims=True) / self.radius**2
        return c + d * (1 + self.k1 * r2 + self.k2 * r2**2)

    def undistort(self, xy: np.ndarray, iterations: int = 8) -> np.ndarray:
        """Image positions to ideal ones (fixed-point inversion; converges for any real lens)."""
        c = np.asarray(self.centre)
        target = np.asarray(xy, float) - c
        u = target.copy()
        for _ in range(iterations):
            r2 = (u**2).sum(axis=-1, keepdims=True) / self.radius**2
            u = target / (1 + self.k1 * r2 + self.k2 * r2**2)
        return c + u

    def maps(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Maps producing the undistorted image (output pixel -> source pixel), each (H, W)."""
        h, w = shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        src = self.distort(np.stack([xs, ys], axis=-1))
        return src[..., 0].astype(np.float32), src[..., 1].astype(np.float32)


@dataclass(frozen=True)
class GridFit:
    spacing_mm: tuple[float, float]  # (row, column) at the grid's plane, after undistortion
    distortion: RadialDistortion
    beads: int
    residual_mm_before: float  # RMS distance to the best distortion-free lattice
    residual_mm_after: float  # RMS distance to the fitted lattice with distortion
    max_residual_mm_after: float


def find_beads(image: np.ndarray, dense_dark: bool = True) -> np.ndarray:
    """Centroids (N, 2) of small round dense marks, sub-pixel (intensity-weighted)."""
    img = image.astype(np.float32)
    if not dense_dark:
        img = img.max() - img
    lo, hi = np.percentile(img, [0.5, 99.5])
    norm = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    dark = 1.0 - norm
    background = cv2.GaussianBlur(dark, (0, 0), max(3.0, img.shape[0] / 64))
    spots = np.clip(dark - background, 0, None)
    smooth = cv2.GaussianBlur(spots, (0, 0), 1.0)
    threshold = max(
        0.5 * float(np.percentile(smooth, 99.9)), 4 * float(np.std(smooth[smooth < np.median(smooth) * 3]))
    )
    mask = (smooth > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, 8)
    if count < 2:
        return np.zeros((0, 2))
    areas = stats[1:, cv2.CC_STAT_AREA]
    typical = float(np.median(areas))
    centres = []
    for i in range(1, count):
        area = stats[i, cv2.CC_STAT_AREA]
        w, h = stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT]
        if not (0.3 * typical <= area <= 3.0 * typical) or max(w, h) > 2.5 * min(w, h):
            continue  # merged beads, edges, the odd cable
        ys, xs = np.nonzero(labels == i)
        weights = smooth[ys, xs]
        centres.append(
            [float((xs * weights).sum() / weights.sum()), float((ys * weights).sum() / weights.sum())]
        )
    return np.asarray(centres)


def _lattice(points: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin and two lattice vectors from the beads nearest the centre (least distorted)."""
    d = np.linalg.norm(points - centre, axis=1)
    origin = points[np.argmin(d)]
    offsets = points - origin
    dist = np.linalg.norm(offsets, axis=1)
    near = offsets[(dist > 0)][np.argsort(dist[dist > 0])[:12]]
    if len(near) < 4:
        raise CalibrationError("too few beads near the centre to find the grid")
    a = near[0]
    # b: the nearest neighbour at roughly a right angle to a
    cos = np.abs(near @ a) / (np.linalg.norm(near, axis=1) * np.linalg.norm(a))
    candidates = near[cos < 0.5]
    if len(candidates) == 0:
        raise CalibrationError("the beads do not form a square grid")
    b = candidates[0]
    return origin, a, b


GRID_MAX_RESIDUAL = 0.05  # RMS misfit of the beads to the fitted lattice, as a share of the pitch
GRID_MAX_ANISOTROPY = 0.02  # row and column spacing may differ by this fraction


def fit_grid(image: np.ndarray, pitch_mm: float, dense_dark: bool = True) -> GridFit:
    """Scale and radial distortion from an image of a square bead grid of ``pitch_mm``."""
    # Over 60 lines on purpose: beads found, indexed on a lattice and refitted outwards, then the
    # spacing read and the lattice checked, in one pass whose intermediate arrays each later step reads.
    points = find_beads(image, dense_dark)
    if len(points) < 25:
        raise CalibrationError(f"grid not found: {len(points)} bead(s) detected, at least 25 needed")
    h, w = image.shape
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    radius = float(np.hypot(w, h) / 2)
    origin, a, b = _lattice(points, centre)
    # Index the beads, growing outwards: near the centre a plain lattice predicts
    # well; each refit (with distortion) predicts further out.
    params = np.concatenate([origin, a, b, centre, [0.0, 0.0]])
    indices = np.zeros((len(points), 2))
    use = np.zeros(len(points), bool)
    for reach in (0.25, 0.45, 0.65, 0.85, 1.1, 1.1):
        model = _model(params, radius)
        grid = _index(points, model, params, radius)
        dist_centre = np.linalg.norm(points - centre, axis=1) / radius
        use = grid["ok"] & (dist_centre <= reach)
        indices = grid["ij"]
        if use.sum() < 9:
            raise CalibrationError("grid not found: the beads do not line up on a lattice")
        # The centre of distortion is only defined where there is distortion to centre.
        free_centre = abs(params[8]) > 0.005
        params = _refit(params, points[use], indices[use], radius, reach > 0.3, free_centre)
    residual = _residuals(params, points[use], indices[use], radius).reshape(-1, 2)
    plain = _refit(params, points[use], indices[use], radius, distortion=False, free_centre=False)
    residual_plain = _residuals(plain, points[use], indices[use], radius).reshape(-1, 2)
    a, b = params[2:4], params[4:6]
    # Spacing along the image rows and columns: project the lattice vectors on the axes.
    lattice = np.stack([a, b])
    per_mm = np.linalg.norm(lattice, axis=1).mean() / pitch_mm  # pixels per mm, isotropic estimate
    col = pitch_mm / np.hypot(*a) if abs(a[0]) >= abs(a[1]) else pitch_mm / np.hypot(*b)
    row = pitch_mm / np.hypot(*b) if abs(a[0]) >= abs(a[1]) else pitch_mm / np.hypot(*a)
    mm = 1.0 / per_mm

    def rms(r):
        return float(np.sqrt((r**2).sum(axis=1).mean()) * mm)

    # A lattice found in anything is no calibration: beads "found" in pure noise fit one
    # with residuals of 17-24 % of the pitch and axes 5-180 % apart; real grid images (the
    # tests' renders, with and without pincushion) fit within 0.8 % and 0.1 %.
    misfit = rms(residual) / pitch_mm
    cosine = abs(float(np.dot(a, b))) / (np.hypot(*a) * np.hypot(*b))
    square = abs(row / col - 1) <= GRID_MAX_ANISOTROPY and cosine <= 0.05
    if not (misfit <= GRID_MAX_RESIDUAL and square):  # (NaN fails both, as it should)
        raise CalibrationError(
            f"grid not found: the {int(use.sum())} spots do not form a square lattice (residual "
            f"{misfit:.0%} of the pitch, axes {row:.3f} x {col:.3f} mm, {np.degrees(np.arccos(cosine)):.0f} "
            "degrees apart)"
        )
    return GridFit(
        spacing_mm=(float(row), float(col)),
        distortion=RadialDistortion(
            (float(params[6]), float(params[7])), float(params[8]), float(params[9]), radius
        ),
        beads=int(use.sum()),
        residual_mm_before=rms(residual_plain),
        residual_mm_after=rms(residual),
        max_residual_mm_after=float(np.sqrt((residual**2).sum(axis=1)).max() * mm),
    )


def _model(params, radius):
    return RadialDistortion((params[6], params[7]), params[8], params[9], radius)


def _index(points, model: RadialDistortion, params, radius) -> dict:
    """Integer lattice coordinates of each bead under the current model."""
    ideal = model.undistort(points)
    basis = np.stack([params[2:4], params[4:6]], axis=1)  # columns a, b
    ij = np.linalg.solve(basis, (ideal - params[0:2]).T).T
    rounded = np.round(ij)
    ok = np.linalg.norm(ij - rounded, axis=1) < 0.3
    return {"ij": rounded, "ok": ok}


def _predict(params, ij, radius):
    ideal = params[0:2] + ij[:, :1] * params[2:4] + ij[:, 1:] * params[4:6]
    return _model(params, radius).distort(ideal)


def _residuals(params, points, ij, radius):
    return (_predict(params, ij, radius) - points).ravel()


def _refit(params, points, ij, radius, distortion=True, free_centre=True):
    fixed = params.copy()
    free = list(range(6))
    if distortion:
        free += [8, 9] + ([6, 7] if free_centre else [])
    else:
        fixed[8:10] = 0.0

    def f(x):
        p = fixed.copy()
        p[free] = x
        return _residuals(p, points, ij, radius)

    from scipy import optimize  # here: its import costs every analyzer process 0.7 s

    fit = optimize.least_squares(f, fixed[free], method="lm")
    out = fixed.copy()
    out[free] = fit.x
    return out


# ---------------------------------------------------------------------------- needle


@dataclass(frozen=True)
class NeedleFit:
    spacing_mm: float  # at the cannula, isotropic
    uncertainty_mm: float  # 95 % interval half-width of the spacing
    diameter_px: float
    profiles: int  # cross-sections averaged
    groups: int  # groups of cross-sections fitted
    groups_used: int  # of those, the ones that agree on one diameter


# Groups of cross-sections whose diameters lie within this fraction of one group's are taken
# to see the same shaft (so within twice that of each other; clean groups spread 2-5 %, a bone
# edge alongside reads 30-200 % wide).
NEEDLE_GROUP_AGREEMENT = 0.10


def fit_needle(att: np.ndarray, tip, direction, gauge: int, length_px: float | None = None) -> NeedleFit:
    """Scale from the cannula's outer diameter in an attenuation image (``att``, larger = denser).

    ``tip`` and ``direction`` locate the shaft (as found by
    :func:`monitor.vision.anatomy.find_cannula`). Cross-sections are sampled every
    pixel along the shaft, aligned on their centre, averaged in groups, and each
    group's profile fitted with a blurred tube (:func:`_fit_tube`). The groups that
    agree on one diameter are fitted again as one tube, which gives the diameter; their
    spread one by one gives the uncertainty (the precision, not the bias).
    """
    # Over 60 lines on purpose: cross-sections sampled, grouped, fitted and agreed in one pass whose
    # intermediate arrays each later step reads.
    if gauge not in NEEDLE_OUTER_MM:
        raise CalibrationError(f"gauge {gauge}: known gauges are {', '.join(map(str, NEEDLE_OUTER_MM))}")
    outer_mm = NEEDLE_OUTER_MM[gauge]
    t = np.asarray(tip, float)
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    n = np.array([-d[1], d[0]])
    h, w = att.shape
    reach = length_px or 0.35 * max(h, w)
    image = att.astype(np.float32)

    def sample(offsets: np.ndarray) -> np.ndarray:
        rows = []
        for s in np.arange(0.06 * reach, reach, 1.0):  # from just behind the tip outwards
            xy = t + d * s + offsets[:, None] * n
            if not (
                xy[:, 0].min() >= 0
                and xy[:, 0].max() < w - 1
                and xy[:, 1].min() >= 0
                and xy[:, 1].max() < h - 1
            ):
                break
            rows.append(sample_points(image, xy[:, 0], xy[:, 1]))
        return np.asarray(rows)

    # A wide first look for the shaft's width, then profiles 2.5 widths either side at 0.25 px.
    wide = sample(np.arange(-0.05 * max(h, w), 0.05 * max(h, w), 0.5))
    if len(wide) < 20:
        raise CalibrationError("the cannula's shaft is too short in the image to measure")
    mean = np.median(wide, axis=0)
    base = float(np.median(mean))
    above = np.nonzero(mean - base > 0.5 * (mean.max() - base))[0]
    width = max(2.0, (above[-1] - above[0]) * 0.5) if len(above) else 8.0
    offsets = np.arange(-2.5 * width, 2.5 * width + 0.25, 0.25)
    profiles = list(sample(offsets))
    if len(profiles) < 20:
        raise CalibrationError("the cannula's shaft is too short in the image to measure")
    profiles = np.asarray(profiles)
    groups = np.array_split(profiles, max(4, min(12, len(profiles) // 15)))
    means, diameters = [], []
    for g in groups:
        profile = g.mean(axis=0)
        fit = _fit_tube(offsets, profile)
        if fit is not None:
            means.append(profile)
            diameters.append(fit)
    if len(diameters) < 3:
        raise CalibrationError("the cannula's cross-section could not be fitted")
    fitted = np.asarray(diameters)
    agreeing = consistent_mask(fitted)
    diameters = fitted[agreeing]
    # Groups a little wider or narrower than the agreeing ones (not three times as wide, which is
    # another structure fitted instead of the shaft) say bone runs along the shaft's edges; when
    # they are over half as many as the agreeing ones, those are likely widened too.
    consensus = float(np.median(diameters))
    near_miss = ~agreeing & (fitted > 0.5 * consensus) & (fitted < 2.0 * consensus)
    if len(diameters) < max(3, len(fitted) // 3) or 2 * near_miss.sum() > len(diameters):
        raise CalibrationError(
            f"the cannula's cross-sections disagree on its diameter ({np.round(np.sort(fitted), 1)} px): "
            "bone or other steel alongside the shaft; use an image with one clean shaft"
        )
    # The diameter from the agreeing groups fitted as one tube; their spread one by one (MAD as
    # a standard deviation) gives the precision.
    joint = _fit_tube(offsets, np.asarray(means)[agreeing])
    diameter = float(joint if joint is not None else consensus)
    spread = float(1.4826 * np.median(np.abs(diameters - consensus)) / np.sqrt(len(diameters)))
    spacing = outer_mm / diameter
    return NeedleFit(
        spacing, 1.96 * spread / diameter * spacing, diameter, len(profiles), len(fitted), len(diameters)
    )


def consistent_mask(diameters: np.ndarray, agreement: float = NEEDLE_GROUP_AGREEMENT) -> np.ndarray:
    """Which of ``diameters`` (pixels) form the largest set within ``agreement`` (a fraction)
    of one of them (a boolean array).

    A shaft has one diameter. Near the tip it runs inside the pedicle, whose cortex
    alongside it makes a group's profile fit as a tube up to three times as wide; with
    a third of the groups there, the plain median of all groups was decided by a single
    group, and moved by 5 % with a 1/32-pixel change of interpolation. Ties go to the
    tighter set.
    """
    d = np.asarray(diameters, float)
    near = np.abs(d[None, :] - d[:, None]) <= agreement * d[:, None]
    counts = near.sum(axis=1)
    spreads = np.array([np.ptp(d[row]) for row in near])
    best = np.lexsort((spreads, -counts))[0]
    return near[best]


# Gauss-Legendre nodes on [-1, 1]. The projected profile is an integral across the tube of a
# function with square-root corners at the inner and outer edges; split there and substituted
# u = r sin(phi) (lumen) and u = R sin(theta) (each wall), every piece is smooth, so fixed nodes
# make the model a smooth function of every parameter: the fit's Jacobian is then real, and the
# result the same on any CPU (a blur on a parameter-dependent grid made it neither).
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(24)


def _tube(x, radius, wall_fraction, sigma, mu, veil=0.0, with_slope: bool = False):
    """Attenuation across a steel tube centred on 0, seen through a blur (all lengths pixels).

    ``x``: (N,) offsets across the shaft. The tube has outer ``radius`` and a wall of
    ``wall_fraction`` of it, of attenuation ``mu`` per pixel of steel path.
    The detector blurs (Gaussian ``sigma``) the *transmitted intensity*, not its
    logarithm, and scatter adds ``veil`` times the light that crossed no steel: the
    attenuation read is ``log(1 + veil) - log(blur(exp(-mu * path)) + veil)``. Blurring
    the path instead, without scatter, makes dense steel's edges look softer than they
    are and the shaft 4-16 % narrower than it is. With ``with_slope``, also the
    derivative along ``x`` (what moving the tube's centre does, for the fit's Jacobian).
    """
    inner = radius * (1.0 - wall_fraction)
    # lumen: phi in (-pi/2, pi/2); walls: theta in (asin(inner / radius), pi/2), either side
    phi = _NODES * np.pi / 2
    theta0 = np.arcsin(np.clip(1.0 - wall_fraction, 0.0, 1.0))
    theta = theta0 + (_NODES + 1) * (np.pi / 2 - theta0) / 2
    u_wall = radius * np.sin(theta)
    u = np.concatenate([inner * np.sin(phi), u_wall, -u_wall])
    du = np.concatenate(
        [
            _WEIGHTS * np.pi / 2 * inner * np.cos(phi),
            np.tile(_WEIGHTS * (np.pi / 2 - theta0) / 2 * radius * np.cos(theta), 2),
        ]
    )
    path = 2 * np.sqrt(np.clip(radius**2 - u**2, 0, None)) - 2 * np.sqrt(np.clip(inner**2 - u**2, 0, None))
    offset = x[:, None] - u[None, :]
    kernel = np.exp(-0.5 * (offset / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    weights = du * (1.0 - np.exp(-mu * path))
    passed = np.clip(1.0 - kernel @ weights + veil, 1e-9, None)
    if not with_slope:
        return np.log(1.0 + veil) - np.log(passed)
    # d/dx of -log(1 - K w + s) = (dK/dx w) / (1 - K w + s), dK/dx = -offset / sigma^2 K
    return np.log(1.0 + veil) - np.log(passed), ((-offset / sigma**2 * kernel) @ weights) / passed


# The tube's parameters shared by every cross-section: radius, wall fraction, blur, steel's
# attenuation, scatter veil.
_TUBE_SHARED = 5


def _profile_start(x, profile):
    """(centre, background level, width at half height) of a cross-section, or None if flat."""
    edge = max(4, len(profile) // 8)
    base = float(np.median(np.concatenate([profile[:edge], profile[-edge:]])))
    peak = float(profile.max() - base)
    above = x[profile - base > 0.5 * peak]
    if peak <= 0 or len(above) < 2:
        return None
    return float((above[0] + above[-1]) / 2), base, float(above[-1] - above[0])


def _fit_tube(x, profiles) -> float | None:
    """Outer diameter (pixels) of the one tube that best explains every row of ``profiles``.

    ``profiles``: (G, N) cross-sections sampled at ``x`` (pixels). The steel's radius,
    wall fraction, attenuation, the scatter veil and the blur are shared; each profile
    has its own centre and linear background (tissue). The wall fraction is fitted:
    what fills the lumen (air, blood, a steel stylet, cement) changes the apparent
    wall, never the outer edge. One group alone leaves the wall, radius and blur free
    to trade (its diameter moved 5-10 % at no cost in fit); fitting the groups together
    ties the blur, the steel's attenuation and the veil to all of them.
    """
    profiles = np.atleast_2d(np.asarray(profiles, float))
    starts = [_profile_start(x, p) for p in profiles]
    if any(s is None for s in starts):
        return None
    width = float(np.median([s[2] for s in starts]))
    groups = len(profiles)

    def residuals(p):
        radius, wall_fraction, sigma, mu, veil = p[:_TUBE_SHARED]
        centre, base, slope = p[_TUBE_SHARED:].reshape(groups, 3).T[:, :, None]  # each (G, 1)
        steel = _tube((x - centre).ravel(), radius, wall_fraction, sigma, mu, veil).reshape(groups, -1)
        return (base + slope * x + steel - profiles).ravel()

    def jacobian(p):
        # The tube's shared parameters by forward differences; each profile's centre, level
        # and slope exactly (they move only that profile's rows): 8 model evaluations a step
        # instead of 7 + 3 per profile.
        jac = np.zeros((groups * len(x), len(p)))
        here = residuals(p)
        for k in range(_TUBE_SHARED):
            step = 1e-6 * max(1.0, abs(p[k]))
            moved = p.copy()
            moved[k] = p[k] + step if p[k] + step <= upper[k] else p[k] - step
            jac[:, k] = (residuals(moved) - here) / (moved[k] - p[k])
        radius, wall_fraction, sigma, mu, veil = p[:_TUBE_SHARED]
        centre = p[_TUBE_SHARED::3]
        _, along = _tube(
            (x - centre[:, None]).ravel(), radius, wall_fraction, sigma, mu, veil, with_slope=True
        )
        along = along.reshape(groups, -1)
        for g in range(groups):
            rows = slice(g * len(x), (g + 1) * len(x))
            jac[rows, _TUBE_SHARED + 3 * g] = -along[g]
            jac[rows, _TUBE_SHARED + 1 + 3 * g] = 1.0
            jac[rows, _TUBE_SHARED + 2 + 3 * g] = x
        return jac

    lower = [0.5, 0.05, 0.3, 0.0, 0.0] + [x[0], -np.inf, -np.inf] * groups
    upper = [x[-1] - x[0], 1.0, 0.25 * width + 1.0, 5.0, 20.0] + [x[-1], np.inf, np.inf] * groups
    from scipy import optimize

    best = None
    for r0 in (0.4 * width, 0.5 * width, 0.6 * width):  # a hollow profile has more than one local fit
        start = [r0, 0.25, 1.0, 0.4, 0.5] + [v for c, b, _ in starts for v in (c, b, 0.0)]
        start = np.clip(start, np.array(lower) + 1e-6, np.array(upper) - 1e-6)
        try:
            fit = optimize.least_squares(residuals, start, jac=jacobian, bounds=(lower, upper), max_nfev=400)
        except (ValueError, RuntimeError):
            continue
        if best is None or fit.cost < best.cost:
            best = fit
    if best is None:
        return None
    radius = float(best.x[0])
    return 2 * radius if 1.0 < radius < len(x) * 0.25 else None
