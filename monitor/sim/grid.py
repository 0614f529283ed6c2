"""A calibration phantom: a square grid of steel beads in a plastic plate at the isocentre,
imaged through a detector that may bend lines into a pincushion (an image intensifier).

Bead shadows are evaluated analytically at each detector pixel (4x4 supersampled)
through the inverse distortion, so the distorted image needs no resampling; then
exposed with quantum noise like the patient images. ``truth`` gives the scale at
the isocentre and the distortion, for the calibration tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.io.dicom import Geometry, WriteOptions, write_recording
from monitor.sim.anatomy import MU_STEEL
from monitor.vision.calibrate import RadialDistortion


def render_grid(
    out: str | Path,
    size: int = 1024,
    pitch_mm: float = 5.0,
    k1: float = 0.0,
    bead_mm: float = 1.0,
    angle_deg: float = 1.5,
    seed: int = 0,
    bits: int = 12,
    detector_mm: float = 160.0,
    sid_mm: float = 1000.0,
    sod_mm: float = 750.0,
) -> dict:
    """Write a single-frame DICOM of the grid phantom to ``out``; returns the truth."""
    # Over 60 lines on purpose: the geometry set, the beads drawn through the distortion, the plate,
    # noise and quantisation added and the DICOM written in one sequence; its truth is that geometry.
    rng = np.random.default_rng(seed)
    det_px = detector_mm / size
    magnification = sid_mm / sod_mm
    iso_px = det_px / magnification  # mm per pixel at the isocentre
    radius = float(np.hypot(size, size) / 2)
    centre = ((size - 1) / 2 + rng.uniform(-6, 6), (size - 1) / 2 + rng.uniform(-6, 6))
    distortion = RadialDistortion(centre, k1, 0.0, radius)
    offset = rng.uniform(0, pitch_mm, 2)
    theta = np.radians(angle_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    line = np.zeros((size, size), np.float32)
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    r_bead = bead_mm / 2
    for dy in sub:
        for dx in sub:
            pix = np.stack([xs + dx, ys + dy], axis=-1)
            ideal = distortion.undistort(pix) if k1 else pix
            mm = (ideal - np.asarray(centre)) * iso_px  # at the isocentre, from the image centre
            local = mm @ rot  # into the grid's own axes
            nearest = np.round((local - offset) / pitch_mm) * pitch_mm + offset
            rho2 = ((local - nearest) ** 2).sum(axis=-1)
            line += (2 * MU_STEEL * np.sqrt(np.clip(r_bead**2 - rho2, 0, None))).astype(np.float32) / 16
    line += 0.02 * 20.0  # a 20 mm plastic plate
    n0 = 20000.0 * det_px**2
    quanta = rng.poisson(np.exp(-line) * n0).astype(np.float32) + rng.normal(0, 2.0, line.shape)
    top = 2**bits - 1
    pixels = np.clip(np.round(quanta * 0.8 * top / float(np.percentile(quanta, 99.5))), 0, top)
    pixels = pixels.astype(np.uint16 if bits > 8 else np.uint8)
    out = Path(out)
    write_recording(
        out,
        pixels[None],
        WriteOptions(
            plane="ap",
            geometry=Geometry((det_px, det_px), sid_mm, sod_mm),
            frame_time_ms=100.0,
            bits_stored=bits,
            series_description=f"bead grid phantom, pitch {pitch_mm:g} mm",
            manufacturer="vertebroplasty-monitor simulator",
            uid_seed=f"grid-{seed}-{size}-{pitch_mm}-{k1}",
        ),
    )
    return {
        "spacing_mm_at_isocentre": iso_px,
        "pitch_mm": pitch_mm,
        "distortion": {"centre": list(centre), "k1": k1, "k2": 0.0, "radius": radius},
        "size": size,
    }
