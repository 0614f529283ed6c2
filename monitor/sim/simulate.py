"""Biplane fluoroscopy of a vertebroplasty, with exact ground truth.

``simulate(config, outdir)`` builds the voxel phantom, places the cannula(s),
plans where the cement goes, and renders every frame of a lateral and an AP
plane: Beer-Lambert attenuation of the cone-beam line integrals, scatter,
focal-spot and detector blur, quantum and electronic noise, collimation, and
the detector's LIN or LOG response at the chosen bit depth and photometric
interpretation. It writes ``lateral.dcm`` and ``ap.dcm`` (XA multi-frame with
the geometry tags) and ``truth.json``. The monitor never reads the truth; tests
and benchmarks compare against it.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from monitor.io.dicom import Geometry, WriteOptions, write_recording
from monitor.sim.anatomy import (
    MU_CORTICAL,
    MU_SOFT_TISSUE,
    Phantom,
    add_cannula,
    add_cleft,
    build_phantom,
)
from monitor.sim.cement import FillOrder, fill_order, injection_schedule
from monitor.sim.config import FIELDS, NOISE_LEVELS, SCENARIOS, SimConfig  # noqa: F401 (re-exported)
from monitor.sim.projector import (
    View,
    project,
    surrounding_paths,
    trunk_path_integral,
    tube_path_integral,
)
from monitor.vision.sampling import translate_cubic

PROXIMITY_MM = 5.0
SMALLEST_LEAK_ML = 0.02
# When every simulated run begins (its DICOM acquisition date and time): one fixed moment, so a
# case's files are the same on every render, and both planes at once.
SIMULATED_RUN_START = datetime.datetime(2026, 1, 5, 9, 0, 0)


# Phantoms built in this process, by what decides them: (anatomy, level, fracture, seed) ->
# (the phantom, the random stream's state after building it). Building one takes seconds and
# is most of a small case's time; the test suite and parameter sweeps render one anatomy many
# times. A phantom is handed out as a copy (the cannula is cut into it) and the stream is put
# where the build left it, so a case is the same, to the bit, whether built or remembered.
_PHANTOMS: OrderedDict[tuple, tuple[Phantom, dict]] = OrderedDict()
PHANTOMS_REMEMBERED = 3  # about 0.11 GB each (geometric anatomy)


def _phantom(cfg: SimConfig, rng: np.random.Generator) -> Phantom:
    """The case's phantom from a fresh ``rng`` of its seed, leaving ``rng`` after the build."""
    key = (cfg.anatomy, cfg.level, cfg.fracture, cfg.seed)
    if key in _PHANTOMS:
        rng.bit_generator.state = _PHANTOMS[key][1]
    else:
        if cfg.anatomy == "ct":
            from monitor.sim.ct import build_ct_phantom

            built = build_ct_phantom(rng, level=cfg.level)
        else:
            built = build_phantom(rng, level=cfg.level, fracture=cfg.fracture)
        _PHANTOMS[key] = (built, rng.bit_generator.state)
    _PHANTOMS.move_to_end(key)
    while len(_PHANTOMS) > PHANTOMS_REMEMBERED:
        _PHANTOMS.popitem(last=False)
    return copy.deepcopy(_PHANTOMS[key][0])


def simulate(cfg: SimConfig, outdir: str | Path, progress: Callable[[str], None] | None = None) -> dict:
    """Render one case into ``outdir``; returns the truth dictionary."""
    # Over 60 lines on purpose: one case from phantom to files in the order it is made (anatomy,
    # needle, cement over time, both projections, truth); the steps share the case's geometry and
    # its random stream, whose order the bundled recordings depend on.
    cfg.validate()
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    case = _prepare(cfg, rng, say)
    phantom, cannulas, tubes, lumens, plan = case.phantom, case.cannulas, case.tubes, case.lumens, case.plan
    counts, second_starts, views, times, shifts = (
        case.counts, case.second_starts, case.views, case.times, case.shifts
    )  # fmt: skip
    shape = phantom.shape
    cement_delta = (cfg.cement_mu - MU_SOFT_TISSUE) - phantom.mu.ravel()[plan.voxels]
    lumen_delta = [(sl, lumen * (cfg.cement_mu - MU_SOFT_TISSUE)) for sl, lumen in lumens]

    truth_frames = _truth_frames(cfg, phantom, plan, counts, views["lateral"], shifts, times)
    field = _field_masks(cfg, rng, views)
    detector_scale = {}
    for name, view in views.items():
        exposure_tags = {}
        if cfg.world is not None:
            from monitor.sim.realistic import render_view

            say(f"rendering the {name} plane (realistic world)")
            frames, detector_scale[name], exposure_tags = render_view(
                cfg, cfg.world, phantom, view, tubes, lumens, plan, counts, second_starts, shifts,
                field[name], rng, say,
            )  # fmt: skip
            _write_plane(cfg, outdir, name, view, frames, exposure_tags)
            continue
        say(f"projecting the {name} anatomy")
        static = project(phantom.mu, phantom.grid, view)
        if phantom.surroundings is None:
            static += trunk_path_integral(view, 165.0, 115.0, centre_y=-shape.half_depth - 10.0)
        else:  # a CT phantom: the patient's own surroundings, at one energy
            tissue, bone, missing = surrounding_paths(phantom, view)
            static += MU_SOFT_TISSUE * (tissue - missing) + (MU_CORTICAL - MU_SOFT_TISSUE) * bone
        for tube in tubes:
            static += tube_path_integral(view, **tube)
        moved = None
        if cfg.needle_move_frame is not None:
            tube = tubes[0]
            out = (tube["end"] - tube["tip"]) / np.linalg.norm(tube["end"] - tube["tip"])
            moved = static - tube_path_integral(view, **tube)
            moved += tube_path_integral(view, **{**tube, "tip": tube["tip"] + out * cfg.needle_move_mm})
        lumen_lines = []
        for sl, delta in lumen_delta:
            full = np.zeros(phantom.grid.shape, np.float32)
            full[sl] = delta
            lumen_lines.append(project(full, phantom.grid, view))
        bbox = _bbox(phantom, plan.voxels[: counts[-1]])
        roi = _roi(view, phantom, bbox)
        sub_grid, sub_origin = _sub_grid(phantom, bbox)
        frames = None
        scale = None
        for f in range(cfg.frames):
            n = counts[f]
            line = (moved if moved is not None and f >= cfg.needle_move_frame else static).copy()
            if n:
                sub = np.zeros(sub_grid.shape, np.float32)
                iz, iy, ix = np.unravel_index(plan.voxels[:n], phantom.grid.shape)
                sub[iz - sub_origin[0], iy - sub_origin[1], ix - sub_origin[2]] = cement_delta[:n]
                c0, r0, w, h = roi
                line[r0 : r0 + h, c0 : c0 + w] += project(sub, sub_grid, view, roi)
                line += lumen_lines[0]
            if second_starts is not None and n > second_starts:
                line += lumen_lines[1]
            line = _shift(line, view, shifts[f])
            counts_img, n0 = _expose(line, view, cfg, rng, field[name], scale)
            if scale is None:
                scale = {**_output_scale(cfg, counts_img), "n0": n0}
                detector_scale[name] = scale
            out = _digitise(counts_img, cfg, scale)
            if frames is None:
                frames = np.empty((cfg.frames, *out.shape), out.dtype)
            frames[f] = out
            if f % 30 == 0:
                say(f"{name}: frame {f + 1}/{cfg.frames}")
        _write_plane(cfg, outdir, name, view, frames, exposure_tags)

    truth = _truth(cfg, phantom, plan, truth_frames, views, cannulas, detector_scale)
    truth["render_seconds"] = round(time.perf_counter() - started, 2)
    (outdir / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


@dataclass
class _Case:
    """A case's anatomy, cannulas, cement plan and motion: everything drawn from its random
    stream before the images are rendered (the truth's distances and walls come from these)."""

    phantom: Phantom
    cannulas: list[tuple[np.ndarray, np.ndarray]]
    tubes: list[dict]
    lumens: list[tuple[tuple[slice, ...], np.ndarray]]
    plan: FillOrder
    counts: np.ndarray  # cement voxels filled at each frame
    second_starts: int | None  # the voxel count from which the second cannula's lumen fills
    views: dict[str, View]
    times: np.ndarray  # s
    shifts: np.ndarray  # breathing (anterior-posterior, cranio-caudal) mm, per frame


def _prepare(cfg: SimConfig, rng: np.random.Generator, say=lambda _msg: None) -> _Case:
    """The case's steps before rendering, drawing from ``rng`` in the order the bundled
    recordings depend on."""
    say("building the phantom")
    phantom = _phantom(cfg, rng)
    if cfg.cleft:
        phantom = add_cleft(phantom, rng, cfg.cleft_site)
    cannulas = _place_cannulas(cfg, phantom, rng)
    excluded = np.zeros(phantom.grid.shape, bool)
    lumens = []
    tubes = []
    for tip, entry in cannulas:
        sl, wall, lumen, tube = add_cannula(phantom, tip, entry)
        excluded[sl] |= (wall + lumen) > 0.05
        lumens.append((sl, lumen))
        tubes.append(tube)

    say("planning the cement")
    plan, per_needle_ml = _plan(cfg, phantom, cannulas, excluded, rng)
    volumes = injection_schedule(cfg.frames, sum(per_needle_ml), rng)
    counts = np.minimum(np.round(volumes / phantom.grid.voxel_ml).astype(np.int64), len(plan.voxels))
    second_starts = int(round(per_needle_ml[0] / phantom.grid.voxel_ml)) if len(cannulas) > 1 else None

    views = {
        name: View(name, cfg.size, cfg.detector_mm / cfg.size, cfg.sid_mm, cfg.sod_mm)
        for name in ("lateral", "ap")
    }
    times = np.arange(cfg.frames) / cfg.fps
    shifts = _breathing(cfg, times, rng)
    return _Case(phantom, cannulas, tubes, lumens, plan, counts, second_starts, views, times, shifts)


def refresh_truth(folder: str | Path) -> bool:
    """Bring a rendered case's ``truth.json`` to this TRUTH_VERSION without rendering it again:
    its distances, walls and 5 mm crossing recomputed from the case's anatomy and plan (the
    images do not change). Returns whether it was out of date."""
    path = Path(folder) / "truth.json"
    truth = json.loads(path.read_text())
    if truth.get("truth_version", 1) >= TRUTH_VERSION:
        return False
    config = dict(truth["config"])
    if config.get("world") is not None:
        from monitor.sim.world import World

        config["world"] = World(**config["world"])
    cfg = SimConfig(**config)
    case = _prepare(cfg, np.random.default_rng(cfg.seed))
    frames = _truth_frames(
        cfg, case.phantom, case.plan, case.counts, case.views["lateral"], case.shifts, case.times
    )
    for kept, now in zip(truth["frames"], frames, strict=True):
        kept["distance_mm"], kept["wall_px"] = now["distance_mm"], now["wall_px"]
    redone = _truth(
        cfg, case.phantom, case.plan, truth["frames"], case.views, case.cannulas, truth["detector"]
    )
    for key in ("min_distance_mm", "proximity_frame", "truth_version", "definitions"):
        truth[key] = redone[key]
    scratch = path.with_name(f".truth.json.{os.getpid()}")
    scratch.write_text(json.dumps(truth, indent=1))
    os.replace(scratch, path)
    return True


def _write_plane(cfg: SimConfig, outdir: Path, name: str, view: View, frames: np.ndarray, tags: dict) -> None:
    """One plane's DICOM: the geometry tags, and the exposure tags the world writes (the
    simple world writes KVP 75; a realistic one its kVp and filter, or nothing)."""
    geometry = Geometry((view.pixel_mm, view.pixel_mm), cfg.sid_mm, cfg.sod_mm, round(view.magnification, 6))
    if cfg.mirror and name == "lateral":
        frames = frames[:, :, ::-1]
    kvp = 75 if cfg.world is None else (cfg.world.kvp if cfg.world.tags else None)
    write_recording(
        outdir / f"{name}.dcm",
        np.ascontiguousarray(frames),
        WriteOptions(
            plane=name,
            geometry=geometry,
            frame_time_ms=1000.0 / cfg.fps,
            bits_stored=cfg.bits,
            photometric=cfg.photometric,
            intensity_relationship=cfg.intensity,
            compression=cfg.compression,
            patient_name="SIMULATED^PHANTOM",
            patient_id=f"SIM-{cfg.seed}",
            series_description=f"simulated {name} {cfg.level} {cfg.scenario}",
            manufacturer="vertebroplasty-monitor simulator",
            uid_seed=_uid_seed(cfg),
            kvp=kvp,
            started=SIMULATED_RUN_START,  # both planes at once, as a biplane room acquires them
            extra=tags,
        ),
    )


def _uid_seed(cfg: SimConfig) -> str:
    """The seed of a case's UIDs: its configuration (a simple-world case's as before worlds
    existed, so that its UIDs did not move)."""
    config = asdict(cfg)
    added_since = (("world", None), ("anatomy", "geometric"), ("cleft", False), ("cleft_site", "middle"))
    for added, default in added_since:
        if config[added] == default:
            del config[added]
    return json.dumps(config, sort_keys=True)


# ------------------------------------------------------------------ placement and plan


def _place_cannulas(cfg: SimConfig, phantom: Phantom, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Transpedicular cannulas: entry through the middle of the pedicle, tip in
    the anterior half of the body (less deep when the scenario drives cement
    backwards, as a short needle does)."""
    s = phantom.shape
    sides = {"left": [1.0], "right": [-1.0], "bipedicular": [1.0, -1.0]}[cfg.side]
    result = []
    for side in sides:
        y_entry = s.half_depth + 6.0
        entry = np.array([side * float(s.pedicle_x(y_entry)), y_entry, 0.18 * s.height])
        if cfg.scenario in ("proximity", "posterior"):
            depth = rng.uniform(-0.15, 0.15) * s.half_depth
        else:
            depth = -s.half_depth + rng.uniform(8.0, 12.0)
        lateral = rng.uniform(1.0, 6.0) if len(sides) == 1 else rng.uniform(4.0, 8.0)
        tip = np.array([side * lateral, depth, rng.uniform(-0.12, 0.12) * s.height])
        result.append((tip, entry))
    return result


def _plan(cfg: SimConfig, phantom: Phantom, cannulas, excluded, rng) -> tuple[FillOrder, list[float]]:
    """Fill order over all needles (one at a time) and the volume each delivers."""
    voxel_ml = phantom.grid.voxel_ml
    target_onset = rng.uniform(1.5, 3.2)
    first, onset_ml = fill_order(phantom, cannulas[0][0], excluded, cfg.scenario, rng, target_onset)
    if cfg.scenario == "none":
        v1 = rng.uniform(2.0, 4.5) if len(cannulas) == 1 else rng.uniform(1.5, 2.8)
    elif cfg.scenario == "proximity":
        v1 = _volume_at_distance(cfg, phantom, first, rng.uniform(1.5, 3.5))
    else:
        leaked = np.cumsum(first.outside_body) * voxel_ml
        onset_index = int(np.searchsorted(leaked, SMALLEST_LEAK_ML))
        extra = rng.uniform(0.35, 0.9)
        v1 = (onset_index + 1) * voxel_ml + extra
    v1 = float(np.clip(v1, 1.0, 6.0))
    volumes = [v1]
    order = first.voxels[: int(round(v1 / voxel_ml))]
    outside = first.outside_body[: len(order)]
    if len(cannulas) > 1:
        second, _ = fill_order(phantom, cannulas[1][0], excluded, "none", rng, 0.0)
        keep = ~np.isin(second.voxels, order)
        v2 = float(np.clip(rng.uniform(1.0, 2.5), 0.5, 7.0 - v1))
        n2 = int(round(v2 / voxel_ml))
        extra_voxels = second.voxels[keep][:n2]
        order = np.concatenate([order, extra_voxels])
        outside = np.concatenate([outside, np.zeros(len(extra_voxels), bool)])
        volumes.append(len(extra_voxels) * voxel_ml)
    volumes[0] = int(round(v1 / voxel_ml)) * voxel_ml
    return FillOrder(order, outside, first.site, first.breach_mm), volumes


def _volume_at_distance(cfg, phantom: Phantom, order: FillOrder, distance_mm: float) -> float:
    """Smallest volume at which the lateral-view distance to the wall drops to ``distance_mm``."""
    dist = _distance_curve(cfg, phantom, order.voxels, _wall_geometry(cfg, phantom))
    idx = int(np.searchsorted(-dist, -distance_mm))
    return (idx + 1) * phantom.grid.voxel_ml


# ----------------------------------------------------------------------------- truth


@dataclass
class _WallGeometry:
    layer_wall: np.ndarray  # posterior-most projected extent of the body, per z layer (mm at iso)
    layer_z: np.ndarray


def _projected_posterior(cfg: SimConfig, phantom: Phantom, flat: np.ndarray):
    """Posterior edge (y + half a voxel) of voxels, projected in the lateral view
    to the isocentre plane (mm), and each voxel's z layer."""
    g = phantom.grid
    iz, iy, ix = np.unravel_index(flat, g.shape)
    v = g.voxel_mm
    x = g.origin[0] + (ix + 0.5) * v
    y = g.origin[1] + (iy + 1.0) * v
    return y * cfg.sod_mm / (cfg.sod_mm + x), iz


# 2: the wall held to the layers it spans (WALL_LAYER_TOLERANCE_MM); 1 (no key): every layer
TRUTH_VERSION = 2
# A layer's posterior-most body edge this far (mm) from the wall's curve through the layers is
# not on the posterior wall: beyond the wall's corner, a tilted body's endplate.
WALL_LAYER_TOLERANCE_MM = 2.0


def _wall_geometry(cfg: SimConfig, phantom: Phantom) -> _WallGeometry:
    """The posterior wall's projected extent per z layer (-inf where the layer holds no wall)."""
    y, iz = _projected_posterior(cfg, phantom, np.flatnonzero(phantom.body))
    wall = np.full(phantom.grid.shape[0], -np.inf)
    np.maximum.at(wall, iz, y)
    z = phantom.grid.axis("z")
    wall[~_on_the_wall(wall, z)] = -np.inf
    return _WallGeometry(wall, z)


def _on_the_wall(wall: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Which layers' posterior-most body edge ``wall`` (mm, -inf where the layer holds no body)
    lies on the posterior wall: the contiguous run of layers, around the body's middle, within
    WALL_LAYER_TOLERANCE_MM of a quadratic fitted to them (refitted until they no longer change).

    A body tilted in the sagittal plane (the CT's thoracic levels, kyphosis) has end layers that
    hold only an endplate: their posterior-most edge lies 12-20 mm in front of the wall, and
    cement reaching them read as a few millimetres from "the wall" (a 5 mm crossing 12 mm away
    from it). A real wall's own concavity (up to 4 mm over its height on the CT) is followed."""
    layers = np.flatnonzero(np.isfinite(wall))
    keep = np.zeros(len(wall), bool)
    if len(layers) < 4:
        keep[layers] = True
        return keep
    keep[layers[len(layers) // 4 : len(layers) - len(layers) // 4]] = True  # the middle half
    centre = layers[len(layers) // 2]
    for _ in range(10):
        coef = np.polyfit(z[keep], wall[keep], 2)
        near = np.isfinite(wall) & (np.abs(wall - np.polyval(coef, z)) <= WALL_LAYER_TOLERANCE_MM)
        runs, _count = ndimage.label(near)
        run = (runs == runs[centre]) & near  # the run of near layers through the middle one
        if run.sum() < 4 or (run == keep).all():
            break
        keep = run
    return keep


def _distance_curve(cfg: SimConfig, phantom: Phantom, voxels: np.ndarray, geo: _WallGeometry):
    """Lateral-view distance (mm) from cement to wall after each successive voxel
    of ``voxels`` is filled; +inf while no cement lies level with the wall."""
    y, iz = _projected_posterior(cfg, phantom, voxels)
    gap = geo.layer_wall[iz] - y
    gap[~np.isfinite(gap)] = np.inf
    return np.minimum.accumulate(gap)


def _truth_frames(cfg, phantom: Phantom, plan: FillOrder, counts, lateral: View, shifts, times):
    geo = _wall_geometry(cfg, phantom)
    curve = _distance_curve(cfg, phantom, plan.voxels, geo)
    leaked = np.concatenate([[0], np.cumsum(plan.outside_body)]) * phantom.grid.voxel_ml
    layers = np.flatnonzero(np.isfinite(geo.layer_wall))
    picks = layers[np.linspace(0, len(layers) - 1, 12).round().astype(int)]
    spacing = lateral.spacing_at_isocentre_mm
    frames = []
    for f, n in enumerate(counts):
        dy, dz = shifts[f]
        col = lateral.centre + (geo.layer_wall[picks] + dy) / spacing
        row = lateral.centre - (geo.layer_z[picks] + dz) / spacing
        col = _image_col(cfg, "lateral", col)
        distance = float(curve[n - 1]) if n else None
        frames.append(
            {
                "frame": f,
                "time_s": round(float(times[f]), 4),
                "injected_ml": round(float(n * phantom.grid.voxel_ml), 5),
                "leaked_ml": round(float(leaked[n]), 5),
                "distance_mm": None if distance is None or not np.isfinite(distance) else round(distance, 3),
                "shift_mm": [round(float(dy), 3), round(float(dz), 3)],
                "wall_px": [[round(float(c), 2), round(float(r), 2)] for c, r in zip(col, row, strict=True)],
            }
        )
    return frames


def _image_col(cfg, view: str, col):
    """A projected column as written in the image: the lateral view may be mirrored."""
    return cfg.size - 1 - col if cfg.mirror and view == "lateral" else col


def _tip_px(cfg, view: str, px) -> list[float]:
    return [round(float(_image_col(cfg, view, px[0])), 2), round(float(px[1]), 2)]


def _truth(cfg, phantom: Phantom, plan: FillOrder, frames, views, cannulas, detector_scale) -> dict:
    crossing = next(
        (f["frame"] for f in frames if f["distance_mm"] is not None and f["distance_mm"] < PROXIMITY_MM),
        None,
    )
    onset = next((f["frame"] for f in frames if f["leaked_ml"] >= SMALLEST_LEAK_ML), None)
    first_leak = next((f["frame"] for f in frames if f["leaked_ml"] > 0), None)
    injection_start = next((f["frame"] for f in frames if f["injected_ml"] > 0), None)
    lat = views["lateral"]
    return {
        "truth_version": TRUTH_VERSION,
        "config": asdict(cfg),
        "voxel_mm": phantom.grid.voxel_mm,
        "cement_mu_per_mm": cfg.cement_mu,
        "geometry": {
            "imager_pixel_spacing_mm": lat.pixel_mm,
            "sid_mm": cfg.sid_mm,
            "sod_mm": cfg.sod_mm,
            "spacing_at_vertebra_mm": lat.spacing_at_isocentre_mm,
        },
        "detector": detector_scale,
        "cannulas": [
            {
                "tip_mm": np.round(t, 2).tolist(),
                "entry_mm": np.round(e, 2).tolist(),
                "tip_px": {name: _tip_px(cfg, name, v.to_pixels(t[None])[0]) for name, v in views.items()},
            }
            for t, e in cannulas
        ],
        "baseline_frames": injection_start,
        "total_injected_ml": frames[-1]["injected_ml"],
        "total_leaked_ml": frames[-1]["leaked_ml"],
        "min_distance_mm": min(
            (f["distance_mm"] for f in frames if f["distance_mm"] is not None), default=None
        ),
        "proximity_frame": crossing,
        "leak": {
            "site": plan.site if onset is not None else None,
            "onset_frame": onset,
            "first_cement_frame": first_leak,
            "breach_mm": None
            if plan.breach_mm is None or onset is None
            else np.round(plan.breach_mm, 2).tolist(),
        },
        "definitions": {
            "distance_mm": "lateral view, at the isocentre (vertebra) scale: min over the z layers the "
            "posterior wall spans of the posterior-most projected body edge minus the posterior-most "
            "projected cement edge; negative beyond the wall; null before cement lies level with the wall",
            "onset_frame": f"first frame with leaked volume >= {SMALLEST_LEAK_ML} mL",
            "wall_px": "posterior wall in the lateral image, (column, row) pixels, 12 points along the"
            " layers it spans",
            "shift_mm": "patient translation (anterior-posterior, cranio-caudal) from breathing",
        },
        "frames": frames,
    }


# --------------------------------------------------------------------------- imaging


def _breathing(cfg: SimConfig, times: np.ndarray, rng) -> np.ndarray:
    if cfg.breathing_mm <= 0:
        return np.zeros((len(times), 2))
    period = rng.uniform(3.0, 5.0)
    phase = rng.uniform(0, 2 * np.pi)
    dz = cfg.breathing_mm * np.sin(np.pi * times / period + phase) ** 2
    return np.stack([0.3 * dz, dz], axis=1)


def _shift(line: np.ndarray, view: View, shift_mm) -> np.ndarray:
    dy, dz = shift_mm
    if dy == 0 and dz == 0:
        return line
    scale = 1.0 / view.spacing_at_isocentre_mm
    dc = dy * scale if view.name == "lateral" else 0.0
    dr = -dz * scale
    return translate_cubic(line, dc, dr)


def _field_masks(cfg: SimConfig, rng, views) -> dict[str, np.ndarray]:
    """Transmission of the collimation: 1 inside the field, ~1% behind lead."""
    masks = {}
    for name, view in views.items():
        n = view.size
        if cfg.field == "open":
            masks[name] = np.ones((n, n), np.float32)
            continue
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        if cfg.field == "round":
            r = np.hypot(xx - view.centre, yy - view.centre)
            inside = np.clip((0.48 * n - r) / 1.5, 0, 1)
        else:
            lo = rng.uniform(0.04, 0.12, size=4) * n
            inside = np.clip(
                np.minimum.reduce([xx - lo[0], (n - 1 - lo[1]) - xx, yy - lo[2], (n - 1 - lo[3]) - yy]) / 1.5,
                0,
                1,
            )
        masks[name] = (0.01 + 0.99 * inside).astype(np.float32)
    return masks


def _expose(line: np.ndarray, view: View, cfg: SimConfig, rng, field: np.ndarray, scale):
    """Detected quanta per pixel: primary plus scatter, blurred, with noise."""
    primary = np.exp(-line)
    sigma_scatter = 25.0 / view.pixel_mm
    scatter = cv2.GaussianBlur(primary, (0, 0), sigma_scatter) * cfg.scatter_to_primary
    intensity = (primary + scatter) * field
    blur = 0.25 / view.pixel_mm
    intensity = cv2.GaussianBlur(intensity, (0, 0), blur)
    if scale is None:
        n = view.size
        centre = intensity[n // 3 : 2 * n // 3, n // 3 : 2 * n // 3]
        n0 = NOISE_LEVELS[cfg.noise] * view.pixel_mm**2 / float(np.median(centre))
    else:
        n0 = scale["n0"]
    quanta = rng.poisson(np.clip(intensity * n0, 0, None)).astype(np.float32)
    quanta += rng.normal(0.0, 2.0, quanta.shape).astype(np.float32)
    return quanta, n0


def _output_scale(cfg: SimConfig, quanta: np.ndarray) -> dict:
    """Fix the detector's output mapping from the first frame, like a locked AEC."""
    top = 2**cfg.bits - 1
    hi = float(np.percentile(quanta, 99.5))
    lo = float(max(np.percentile(quanta, 0.5), 1.0))
    if cfg.intensity == "LIN":
        return {"mapping": "LIN", "gain": 0.8 * top / hi}
    # A log detector keeps headroom below the darkest anatomy: cement is far denser.
    log_lo, log_hi = np.log(lo / 30), np.log(hi * 2)
    return {"mapping": "LOG", "log_lo": float(log_lo), "per_unit_log": top / float(log_hi - log_lo)}


def _digitise(quanta: np.ndarray, cfg: SimConfig, scale: dict) -> np.ndarray:
    top = 2**cfg.bits - 1
    if scale["mapping"] == "LIN":
        value = quanta * scale["gain"]
    else:
        value = (np.log(np.maximum(quanta, 0.5)) - scale["log_lo"]) * scale["per_unit_log"]
    value = np.clip(np.round(value), 0, top)
    if cfg.photometric == "MONOCHROME1":
        value = top - value
    return value.astype(np.uint8 if cfg.bits <= 8 else np.uint16)


# ------------------------------------------------------------------------ small helpers


def _bbox(phantom: Phantom, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.stack(np.unravel_index(flat, phantom.grid.shape), axis=1)
    if len(idx) == 0:
        return np.zeros(3, int), np.ones(3, int)
    return idx.min(axis=0), idx.max(axis=0) + 1


def _sub_grid(phantom: Phantom, bbox):
    from monitor.sim.anatomy import Grid

    lo, hi = bbox
    g = phantom.grid
    v = g.voxel_mm
    origin = (g.origin[0] + lo[2] * v, g.origin[1] + lo[1] * v, g.origin[2] + lo[0] * v)
    return Grid(v, origin, tuple(int(h - lo_) for h, lo_ in zip(hi, lo, strict=True))), lo


def _roi(view: View, phantom: Phantom, bbox) -> tuple[int, int, int, int]:
    lo, hi = bbox
    g = phantom.grid
    v = g.voxel_mm
    corners = []
    for iz in (lo[0], hi[0]):
        for iy in (lo[1], hi[1]):
            for ix in (lo[2], hi[2]):
                corners.append([g.origin[0] + ix * v, g.origin[1] + iy * v, g.origin[2] + iz * v])
    px = view.to_pixels(np.array(corners))
    c0 = int(np.clip(np.floor(px[:, 0].min()) - 3, 0, view.size - 1))
    r0 = int(np.clip(np.floor(px[:, 1].min()) - 3, 0, view.size - 1))
    c1 = int(np.clip(np.ceil(px[:, 0].max()) + 3, c0 + 1, view.size))
    r1 = int(np.clip(np.ceil(px[:, 1].max()) + 3, r0 + 1, view.size))
    return c0, r0, c1 - c0, r1 - r0
