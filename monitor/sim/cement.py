"""Where the cement goes, voxel by voxel, and in what order.

Cement is viscous and fills the marrow spaces outward from the cannula tip,
lobulated by the bone's varying permeability and drawn along paths of least
resistance. We model that as an arrival time for every voxel it can reach:
distance from the tip, modulated by a smooth random permeability field and
shortened towards a preferred direction. Sorting the arrival times gives the
fill order, so each frame's cement is the first N voxels of that order and the
injected volume is exactly N times the voxel volume.

Leaks continue the order outside the body from a breach point: through the
posterior wall into the epidural space, along a vein (basivertebral at the
middle of the posterior wall, or segmental at the side), or through an
endplate into the disc.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from monitor.sim.anatomy import Phantom, tube_fraction
from monitor.sim.config import SCENARIOS

LEAK_SITES = {"posterior": "posterior", "venous": "venous", "disc": "disc"}


@dataclass
class FillOrder:
    """Voxels (flat indices into the phantom) in the order cement reaches them."""

    voxels: np.ndarray  # int64
    outside_body: np.ndarray  # bool, same length: the voxel is a leak
    site: str | None  # leak site when the scenario has one
    breach_mm: np.ndarray | None  # where the leak leaves the body (x, y, z)


CLEFT_SPEED = 5.0  # cement enters an open cleft this many times faster than marrow


def arrival_times(
    phantom: Phantom,
    tip: np.ndarray,
    candidates: np.ndarray,
    direction: np.ndarray,
    pull: float,
    permeability: np.ndarray,
) -> np.ndarray:
    """Arrival time (mm-equivalent) of cement at each candidate voxel; a cleft's voxels
    (no marrow to push aside) fill CLEFT_SPEED times sooner."""
    x, y, z = _centres(phantom, candidates)
    d = np.stack([x - tip[0], y - tip[1], (z - tip[2]) * 1.15], axis=1)
    r = np.linalg.norm(d, axis=1) + 1e-6
    cos = (d @ direction) / r
    times = r * (1.0 + 0.35 * permeability) * (1.0 - pull * cos)
    if phantom.cleft is not None:
        times = np.where(phantom.cleft.ravel()[candidates], times / CLEFT_SPEED, times)
    return times


def _centres(phantom: Phantom, flat: np.ndarray):
    g = phantom.grid
    iz, iy, ix = np.unravel_index(flat, g.shape)
    v = g.voxel_mm
    return g.origin[0] + (ix + 0.5) * v, g.origin[1] + (iy + 0.5) * v, g.origin[2] + (iz + 0.5) * v


def permeability_field(phantom: Phantom, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in about [-1, 1] at the scale of cement lobules (~3 mm)."""
    f = ndimage.gaussian_filter(rng.standard_normal(phantom.grid.shape).astype(np.float32), 6.0)
    return np.clip(f / (3 * f.std() + 1e-9), -1.0, 1.0)


def fill_order(
    phantom: Phantom,
    tip: np.ndarray,
    excluded: np.ndarray,
    scenario: str,
    rng: np.random.Generator,
    target_onset_ml: float,
) -> tuple[FillOrder, float]:
    """Fill order from one cannula tip, and the volume (mL) at which the cement
    reaches the scenario's breach point (0 when there is none).

    ``excluded`` marks voxels cement cannot enter (the cannula's own).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; use one of {', '.join(SCENARIOS)}")
    g = phantom.grid
    inside = np.flatnonzero(phantom.cancellous & ~excluded)
    perm_all = permeability_field(phantom, rng).ravel()
    perm = perm_all[inside]
    breach = _breach_point(phantom, tip, scenario, rng)
    if breach is None:
        direction = _unit(np.array([rng.uniform(-1, 1), rng.uniform(-1, -0.2), rng.uniform(-0.5, 0.5)]))
        times = arrival_times(phantom, tip, inside, direction, rng.uniform(0.1, 0.3), perm)
        order = inside[np.argsort(times, kind="stable")]
        return FillOrder(order, np.zeros(len(order), bool), None, None), 0.0

    direction = _unit(breach - tip)
    xs, ys, zs = _centres(phantom, inside)
    nearest = int(np.argmin((xs - breach[0]) ** 2 + (ys - breach[1]) ** 2 + (zs - breach[2]) ** 2))
    best = None
    for pull in np.arange(0.0, 0.86, 0.05):
        times = arrival_times(phantom, tip, inside, direction, pull, perm)
        onset_ml = float(np.count_nonzero(times < times[nearest])) * g.voxel_ml
        if best is None or abs(onset_ml - target_onset_ml) < abs(best[1] - target_onset_ml):
            best = (times, onset_ml)
    times, onset_ml = best
    sort = np.argsort(times, kind="stable")
    body_order = inside[sort]
    reached = int(np.searchsorted(times[sort], times[nearest], side="right"))

    leak_voxels, leak_distance = _leak_region(phantom, breach, scenario, rng, excluded)
    leak_order = leak_voxels[np.argsort(leak_distance, kind="stable")]
    # Once the path out is open, a share of every further millilitre takes it,
    # until the leak's space is full.
    share = {"posterior": 0.35, "venous": 0.5, "disc": 0.4}.get(scenario, 0.0) * rng.uniform(0.7, 1.3)
    after = body_order[reached:]
    to_leak = rng.random(len(after) + len(leak_order)) < share
    merged, b, k = [], 0, 0
    for goes_out in to_leak:
        if goes_out and k < len(leak_order):
            merged.append(leak_order[k])
            k += 1
        elif b < len(after):
            merged.append(after[b])
            b += 1
    voxels = np.concatenate([body_order[:reached], np.asarray(merged, np.int64)])
    outside = ~phantom.body.ravel()[voxels]
    return FillOrder(voxels, outside, LEAK_SITES.get(scenario), breach), onset_ml


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _breach_point(phantom: Phantom, tip, scenario: str, rng) -> np.ndarray | None:
    """A point on the body surface where cement will meet (and maybe leave) it."""
    s = phantom.shape
    if scenario == "none":
        return None
    if scenario in ("proximity", "posterior"):
        x = rng.uniform(-0.4, 0.4) * s.half_width
        wall = s.posterior_wall_y - 1.2 * np.exp(-(x**2) / (2 * 9.0**2))
        return np.array([x, wall, rng.uniform(-0.22, 0.22) * s.height])
    if scenario == "venous":
        if rng.random() < 0.5:  # basivertebral vein, middle of the posterior wall
            return np.array([0.0, s.posterior_wall_y - 1.2, rng.uniform(-0.1, 0.1) * s.height])
        side = np.sign(tip[0]) or 1.0  # segmental vein on the cannula's side
        y = rng.uniform(-0.2, 0.3) * s.half_depth
        x = side * s.half_width * (1 - abs(y / s.half_depth) ** 2.4) ** (1 / 2.4)
        return np.array([x, y, rng.uniform(-0.15, 0.15) * s.height])
    if scenario == "disc":
        up = rng.random() < 0.5
        x = tip[0] + rng.uniform(-4, 4)
        y = tip[1] + rng.uniform(-3, 5)
        r2 = min((x / s.half_width) ** 2 + (y / s.half_depth) ** 2, 1.0)
        dip = s.endplate_concavity * (1 - r2)
        anterior = np.clip((s.half_depth - y) / (2 * s.half_depth), 0, 1)
        z = (s.height / 2 - dip - s.wedge_mm * anterior) if up else -(s.height / 2 - dip)
        return np.array([x, y, z])
    raise ValueError(scenario)


def _leak_region(phantom: Phantom, breach, scenario: str, rng, excluded) -> tuple[np.ndarray, np.ndarray]:
    """Voxels outside the cancellous bone that a leak fills, and their distance
    from the breach (the order in which the leak fills them)."""
    g = phantom.grid
    x, y, z = g.coords()
    s = phantom.shape
    bone = phantom.mu > 0.012
    outward = {
        "proximity": np.array([0.0, 1.0, 0.0]),
        "posterior": np.array([0.0, 1.0, 0.0]),
        "venous": None,
        "disc": np.array([0.0, 0.0, np.sign(breach[2]) or 1.0]),
    }[scenario]
    if scenario == "proximity":
        return np.zeros(0, np.int64), np.zeros(0)
    if scenario == "venous":
        side = np.sign(breach[0])
        if side == 0:  # basivertebral: into the anterior epidural venous plexus
            path = breach + np.array([[0, 0, 0], [0, 2.5, 0], [1.5, 3.2, 8], [3.5, 3.6, 18], [5, 3.8, 28]])
            path[:, 2] *= rng.choice([-1.0, 1.0])
        else:  # segmental vein running out around the body's side
            path = breach + np.array(
                [[0, 0, 0], [side * 5, 2, 1.5], [side * 12, 8, 3], [side * 20, 16, 2], [side * 26, 26, 0]]
            )
        sl, frac = tube_fraction(g, path, rng.uniform(0.7, 1.0))
        region = np.zeros(g.shape, bool)
        region[sl] = frac >= 0.5
        region &= ~phantom.cancellous & ~excluded
    else:
        channel = np.stack([breach - 2.0 * outward, breach + 2.0 * outward])
        sl, frac = tube_fraction(g, channel, 1.3)
        region = np.zeros(g.shape, bool)
        region[sl] = frac >= 0.5
        if scenario == "posterior":
            c = breach + np.array([0.0, 3.0, 0.0])
            blob = ((x - c[0]) / 6.5) ** 2 + ((y - c[1]) / 2.8) ** 2 + ((z - c[2]) / 10.0) ** 2 <= 1
            region |= blob & ~bone
        else:
            c = breach + outward * (s.disc / 2 + 0.5)
            blob = ((x - c[0]) / 9.0) ** 2 + ((y - c[1]) / 7.0) ** 2 + ((z - c[2]) / (s.disc / 2)) ** 2 <= 1
            region |= blob & ~bone
        region &= ~phantom.cancellous & ~excluded
    voxels = np.flatnonzero(region)
    vx, vy, vz = _centres(phantom, voxels)
    return voxels, np.sqrt((vx - breach[0]) ** 2 + (vy - breach[1]) ** 2 + (vz - breach[2]) ** 2)


def injection_schedule(n_frames: int, total_ml: float, rng: np.random.Generator) -> np.ndarray:
    """Injected volume (mL) at each frame: a baseline with no cement, then
    injection at a steady rate broken by one or two pauses, then a hold."""
    baseline = max(3, int(round(0.12 * n_frames)))
    end = max(baseline + 4, int(round(0.93 * n_frames)))
    active = np.ones(n_frames, bool)
    active[:baseline] = False
    active[end:] = False
    span = end - baseline
    for _ in range(rng.integers(1, 3)):
        length = max(1, int(round(span * rng.uniform(0.05, 0.10))))
        start = baseline + int(rng.uniform(0.25, 0.75) * span)
        active[start : start + length] = False
    steps = np.cumsum(active)
    return total_ml * steps / steps[-1]
