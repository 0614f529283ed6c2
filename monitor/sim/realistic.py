"""One plane of the realistic simulator: polychromatic, scattered, controlled and processed.

Where ``simulate`` renders the simple world (one energy, the analyzer's own cement and
scatter), this renders a ``World`` (monitor.sim.world): per-material line integrals through
the same phantom, a SpekPy spectrum through xraydb attenuation onto an energy-integrating
detector (monitor.sim.xray), scatter of the drawn ratio and kernel, an intensifier's veiling
glare and vignetting, automatic brightness control that changes the tube output and steps
the kVp while the cement grows, recursive filtering, edge enhancement, and either the
detector's LIN/LOG output or 8-bit log video as a frame grabber sees it.

The phantom's attenuation (relative to soft tissue at the simple world's energy) is read as
materials: an excess is cortical bone in place of tissue, a deficit is tissue missing (gas,
lung, fat). Cement replaces what its voxels held; steel comes from the cannulas' analytic
chords. The truth (geometry) is the simple world's, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from monitor.sim.anatomy import Phantom, material_fractions
from monitor.sim.projector import View, project, surrounding_paths, tube_path_integral
from monitor.sim.world import World
from monitor.sim.xray import Beam, Spectrum, cement_material, detected

KVP_CEILING = 110.0  # brightness control never steps past this


@dataclass
class _Exposure:
    """The tube as the brightness control drives it: kVp, output, and their history."""

    spectrum: Spectrum
    output: float  # expected quanta per pixel with nothing in the beam
    first_output: float = 0.0
    target: float = 0.0  # the mean central signal (quanta) brightness control holds
    kvp_history: list | None = None
    output_history: list | None = None


def _wide_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """A Gaussian blur of tens of millimetres, computed at 1/8 resolution (scatter and glare
    have no fine structure): exact enough, and 50x faster than at full size."""
    h, w = image.shape
    factor = max(1, int(sigma_px // 8))
    small = cv2.resize(image, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma_px / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _centre(image: np.ndarray) -> np.ndarray:
    n, m = image.shape
    return image[n // 3 : 2 * n // 3, m // 3 : 2 * m // 3]


def _abc_region(image: np.ndarray) -> np.ndarray:
    """Where brightness control measures: the central fifth of the field, where the operator
    centres the treated vertebra (and so where the cement grows)."""
    n, m = image.shape
    return image[2 * n // 5 : 3 * n // 5, 2 * m // 5 : 3 * m // 5]


def render_view(
    cfg,
    world: World,
    phantom: Phantom,
    view: View,
    tubes: list[dict],
    lumens: list,
    plan,
    counts: np.ndarray,
    second_starts: int | None,
    shifts: np.ndarray,
    field: np.ndarray,
    rng: np.random.Generator,
    say=lambda _m: None,
) -> tuple[np.ndarray, dict, dict]:
    """Every frame of one plane: (frames (F, H, W) uint8/uint16 as the DICOM holds them,
    the detector's history for the truth, the exposure tags to write)."""
    # Over 60 lines on purpose: the image chain in the order a room applies it (spectrum, body,
    # cement, scatter, glare, detector, brightness control, processing, video or digitiser), each
    # step a few lines on the running image and the drawn room; split, each would take and return both.
    from monitor.sim.simulate import NOISE_LEVELS, _bbox, _digitise, _output_scale, _roi, _shift, _sub_grid

    world.validate()
    g = phantom.grid
    cement = cement_material(world.opacifier, world.opacifier_fraction)
    names = ("soft_tissue", "cortical_bone", "steel", "cement")

    def attenuation(spectrum: Spectrum) -> dict[str, np.ndarray]:
        return {n: spectrum.mu(cement if n == "cement" else n) for n in names}

    # Static paths, mm per ray: bone in place of tissue, tissue missing, the trunk, steel.
    bone_fraction, air_fraction = material_fractions(phantom.mu)
    tissue, bone, missing = surrounding_paths(phantom, view)
    bone += project(bone_fraction, g, view)
    missing += project(air_fraction, g, view)
    steel = np.zeros_like(tissue)
    for tube in tubes:
        steel += tube_path_integral(view, **{**tube, "mu": 1.0})
    moved_steel = None
    if cfg.needle_move_frame is not None:
        tube = tubes[0]
        out = (tube["end"] - tube["tip"]) / np.linalg.norm(tube["end"] - tube["tip"])
        moved_steel = steel - tube_path_integral(view, **{**tube, "mu": 1.0})
        moved_steel += tube_path_integral(
            view, **{**tube, "mu": 1.0, "tip": tube["tip"] + out * cfg.needle_move_mm}
        )
    lumen_mm = []
    for sl, lumen in lumens:
        full = np.zeros(g.shape, np.float32)
        full[sl] = lumen
        lumen_mm.append(project(full, g, view))
    bbox = _bbox(phantom, plan.voxels[: counts[-1]])
    roi = _roi(view, phantom, bbox)
    sub_grid, sub_origin = _sub_grid(phantom, bbox)
    bone_under_cement = bone_fraction.ravel()[plan.voxels]

    spectrum = Spectrum(Beam(world.kvp, world.al_mm, world.cu_mm))
    mus = attenuation(spectrum)
    exposure = _Exposure(spectrum, 0.0, kvp_history=[], output_history=[])
    kvp = world.kvp
    pixel = view.pixel_mm
    r = np.hypot(*np.meshgrid(np.arange(view.size) - view.centre, np.arange(view.size) - view.centre))
    vignette = (1.0 - world.vignetting * (r / (view.size / 2.0)) ** 2).astype(np.float32)
    scatter_gain = None
    previous = None  # the recursive filter's last output
    scale = None
    frames = None
    for f in range(cfg.frames):
        n = int(counts[f])
        cement_mm = np.zeros_like(tissue)
        bone_now = bone
        if n:
            iz, iy, ix = np.unravel_index(plan.voxels[:n], g.shape)
            at = (iz - sub_origin[0], iy - sub_origin[1], ix - sub_origin[2])
            sub = np.zeros(sub_grid.shape, np.float32)
            sub[at] = 1.0
            c0, r0, w, h = roi
            cement_mm[r0 : r0 + h, c0 : c0 + w] += project(sub, sub_grid, view, roi)
            sub[at] = bone_under_cement[:n]
            bone_now = bone.copy()
            bone_now[r0 : r0 + h, c0 : c0 + w] -= project(sub, sub_grid, view, roi)
            cement_mm += lumen_mm[0]
        if second_starts is not None and n > second_starts:
            cement_mm += lumen_mm[1]
        steel_now = moved_steel if moved_steel is not None and f >= cfg.needle_move_frame else steel
        soft = np.clip(tissue - missing - bone_now - cement_mm - steel_now, 0.0, None)
        paths = {
            "soft_tissue": _shift(soft, view, shifts[f]),
            "cortical_bone": _shift(np.clip(bone_now, 0.0, None), view, shifts[f]),
            "steel": _shift(steel_now, view, shifts[f]),
            "cement": _shift(cement_mm, view, shifts[f]),
        }
        primary = detected(exposure.spectrum, paths, mus) * field
        wide = _wide_blur(primary, world.scatter_kernel_mm / pixel)
        if scatter_gain is None:  # the drawn scatter-to-primary ratio, behind the spine
            scatter_gain = world.scatter_to_primary * float(_centre(primary).mean() / _centre(wide).mean())
        signal = primary + scatter_gain * wide
        if world.detector == "intensifier":
            signal = (1.0 - world.glare_fraction) * signal + world.glare_fraction * _wide_blur(
                signal, world.glare_kernel_mm / pixel
            )
            signal = signal * vignette
        signal = cv2.GaussianBlur(signal, (0, 0), 0.25 / pixel)
        if f == 0:
            exposure.output = NOISE_LEVELS[cfg.noise] * pixel**2 / float(np.median(_centre(signal)))
            exposure.first_output = exposure.output
            exposure.target = float(_abc_region(signal).mean()) * exposure.output
        exposure.kvp_history.append(kvp)
        exposure.output_history.append(round(exposure.output / exposure.first_output, 4))
        quanta = rng.poisson(np.clip(signal * exposure.output, 0, None)).astype(np.float32)
        quanta += rng.normal(0.0, 2.0, quanta.shape).astype(np.float32)
        if world.abc:  # the next frame's exposure, from this one's brightness
            measured = float(_abc_region(signal).mean()) * exposure.output
            wanted = exposure.output * (exposure.target / max(measured, 1e-6)) ** world.abc_gain
            limit = exposure.first_output * world.abc_max_output
            exposure.output = min(wanted, limit)
            if wanted > limit and measured < 0.97 * exposure.target and kvp + world.kvp_step <= KVP_CEILING:
                kvp += world.kvp_step
                exposure.spectrum = Spectrum(Beam(kvp, world.al_mm, world.cu_mm))
                mus = attenuation(exposure.spectrum)
        if world.recursive_weight > 0 and previous is not None:
            quanta = (1.0 - world.recursive_weight) * quanta + world.recursive_weight * previous
        previous = quanta
        shown = quanta
        if world.edge_gain > 0:
            smooth = cv2.GaussianBlur(shown, (0, 0), world.edge_sigma_mm / pixel)
            shown = shown + world.edge_gain * (shown - smooth)
        if world.video:
            out, scale = _video(shown, cfg, world, scale, field)
        else:
            if scale is None:
                scale = {**_output_scale(cfg, shown), "n0": exposure.output}
            out = _digitise(shown, cfg, scale)
        if frames is None:
            frames = np.empty((cfg.frames, *out.shape), out.dtype)
        frames[f] = out
        if f % 30 == 0:
            say(f"{view.name}: frame {f + 1}/{cfg.frames} (kVp {kvp:g})")
    history = {
        "world": world.as_dict(),
        "effective_kev_first": round(Spectrum(Beam(world.kvp, world.al_mm, world.cu_mm)).effective_kev(), 2),
        "kvp_per_frame": exposure.kvp_history,
        "output_per_frame": exposure.output_history,
        "scatter_gain": scatter_gain,
        "mapping": "video" if world.video else scale.get("mapping"),
    }
    tags = {}
    if world.tags:
        tags = {
            "XRayTubeCurrent": int(round(3.0 * world.abc_max_output)),
            "FilterMaterial": ["ALUMINUM", "COPPER"] if world.cu_mm > 0 else ["ALUMINUM"],
            "FilterThicknessMinimum": f"{world.al_mm:g}",
            "FilterThicknessMaximum": f"{world.al_mm:g}",
            "Grid": "FOCUSED" if world.grid else "NONE",
        }
    return frames, history, tags


def _video(
    quanta: np.ndarray, cfg, world: World, scale: dict | None, field: np.ndarray
) -> tuple[np.ndarray, dict]:
    """8-bit log video with the gain and offset the system set on the first frame, from the
    signal inside the collimated field (what lies behind the lead is not the patient)."""
    top = 2**cfg.bits - 1
    log_signal = np.log(np.maximum(quanta, 0.5))
    if scale is None:
        lo, hi = np.quantile(log_signal[field > 0.5], world.video_window)
        lo, hi = float(lo), float(max(hi, lo + 1e-3))
        lo -= world.video_headroom * (hi - lo)
        scale = {"mapping": "video", "log_lo": lo, "per_unit_log": top / (hi - lo)}
    value = np.clip(np.round((log_signal - scale["log_lo"]) * scale["per_unit_log"]), 0, top)
    if cfg.photometric == "MONOCHROME1":
        value = top - value
    return value.astype(np.uint8 if cfg.bits <= 8 else np.uint16), scale
