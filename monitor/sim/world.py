"""What a real room does that the monitor is never told, drawn per case from published ranges.

A benchmark whose simulator shares the analyzer's numbers is a mirror. Every quantity here
is drawn from a range set by the physics and the equipment (references beside each), never
from the analyzer's defaults, and the analyzer never reads it: it sees only the images and
the DICOM tags a C-arm writes (and in some cases not even those, as real exports omit them).

``World`` is per case; ``draw_world(rng)`` draws one. ``SimConfig.world`` None keeps the
simple simulator (one energy, the analyzer's own cement and scatter) for fast unit tests;
no benchmark reports on it any more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class World:
    # The beam: fluoroscopy runs 60-110 kVp; 2.5-4 mm Al inherent plus added Cu filtration
    # (0.1-0.2 mm on modern units for dose).
    kvp: float = 80.0
    al_mm: float = 3.0
    cu_mm: float = 0.0
    # Cement: PMMA with 15-35 % by weight of opacifier (barium sulphate in most kits,
    # zirconium dioxide in some).
    opacifier: str = "BaSO4"
    opacifier_fraction: float = 0.30
    # Scatter-to-primary behind a lateral lumbar spine: ~0.3 with an anti-scatter grid, 2+
    # without (Boone & Seibert; Fetterly & Schueler); a broad kernel, 30-80 mm.
    scatter_to_primary: float = 0.5
    scatter_kernel_mm: float = 50.0
    grid: bool = True
    # Detector: a flat panel, or an image intensifier with veiling glare (5-20 % of the
    # signal spread over centimetres) and vignetting (edge 15-35 % darker), round field.
    detector: str = "flat-panel"  # or "intensifier"
    glare_fraction: float = 0.0
    glare_kernel_mm: float = 30.0
    vignetting: float = 0.0
    # Automatic brightness control: the tube output follows the mean signal (loop gain per
    # frame), and kVp steps up when the output is at its limit, as the dark cement grows.
    abc: bool = False
    abc_gain: float = 0.5
    abc_max_output: float = 1.15  # x the first frame's output (a dose-rate limit), then kVp steps
    kvp_step: float = 3.0
    # The system's processing: recursive temporal filtering (weight of the previous output),
    # edge enhancement (unsharp mask), and 8-bit video as a frame grabber sees it.
    recursive_weight: float = 0.0
    edge_gain: float = 0.0
    edge_sigma_mm: float = 1.5
    video: bool = False  # 8-bit, log-mapped, windowed with its own gain and offset
    # quantiles of the first frame's log signal mapped to 0..255, the low end lowered by
    # ``video_headroom`` of the range (room for the cement; too little and it clips to black)
    video_window: tuple[float, float] = (0.05, 0.95)
    video_headroom: float = 0.2
    # Exposure tags in the DICOM (KVP, XRayTubeCurrent, filter, grid): real exports often omit them.
    tags: bool = True

    def validate(self) -> None:
        checks = [
            (60.0 <= self.kvp <= 125.0, "kvp must be 60-125"),
            (1.0 <= self.al_mm <= 6.0 and 0.0 <= self.cu_mm <= 0.5, "filtration out of range"),
            (self.opacifier in ("BaSO4", "ZrO2"), "opacifier must be BaSO4 or ZrO2"),
            (0.05 <= self.opacifier_fraction <= 0.5, "opacifier fraction must be 5-50 %"),
            (0.0 <= self.scatter_to_primary <= 5.0, "scatter-to-primary must be 0-5"),
            (5.0 <= self.scatter_kernel_mm <= 200.0, "scatter kernel must be 5-200 mm"),
            (self.detector in ("flat-panel", "intensifier"), "detector must be flat-panel or intensifier"),
            (0.0 <= self.glare_fraction <= 0.5 and 0.0 <= self.vignetting <= 0.6, "glare or vignetting"),
            (0.0 <= self.recursive_weight < 0.95, "recursive weight must be 0-0.95"),
            (0.0 <= self.edge_gain <= 3.0, "edge gain must be 0-3"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def as_dict(self) -> dict:
        return asdict(self)

    def bands(self) -> dict[str, str]:
        """The sensitivity table's bands this world falls in."""
        spr = self.scatter_to_primary
        return {
            "scatter": "SPR < 0.8" if spr < 0.8 else ("SPR 0.8-1.5" if spr < 1.5 else "SPR >= 1.5"),
            "kVp": "60-75" if self.kvp < 75 else ("75-90" if self.kvp < 90 else "90-110"),
            "opacifier": self.opacifier,
            "brightness control": "ABC on" if self.abc else "ABC off",
            "filtering": "filtered" if (self.recursive_weight > 0 or self.edge_gain > 0) else "unfiltered",
            "detector": self.detector,
            "output": "8-bit video" if self.video else "raw DICOM",
        }


def draw_world(rng: np.random.Generator) -> World:
    """One room, every unknown drawn independently from its range (see World's comments)."""
    intensifier = rng.random() < 0.35
    grid = rng.random() < 0.6
    spr = rng.uniform(0.3, 0.9) if grid else rng.uniform(0.9, 2.5)
    filtered = rng.random() < 0.6
    return World(
        kvp=float(np.round(rng.uniform(60.0, 110.0))),
        al_mm=float(np.round(rng.uniform(2.5, 4.0), 1)),
        cu_mm=float(np.round(rng.choice([0.0, 0.0, 0.1, 0.2]), 1)),
        opacifier=str(rng.choice(["BaSO4", "BaSO4", "ZrO2"])),
        opacifier_fraction=float(np.round(rng.uniform(0.15, 0.35), 3)),
        scatter_to_primary=float(np.round(spr, 3)),
        scatter_kernel_mm=float(np.round(rng.uniform(30.0, 80.0), 1)),
        grid=bool(grid),
        detector="intensifier" if intensifier else "flat-panel",
        glare_fraction=float(np.round(rng.uniform(0.05, 0.2), 3)) if intensifier else 0.0,
        glare_kernel_mm=float(np.round(rng.uniform(15.0, 60.0), 1)),
        vignetting=float(np.round(rng.uniform(0.15, 0.35), 3)) if intensifier else 0.0,
        abc=bool(rng.random() < 0.6),
        abc_gain=float(np.round(rng.uniform(0.3, 0.8), 2)),
        abc_max_output=float(np.round(rng.uniform(1.05, 1.3), 2)),
        kvp_step=float(rng.choice([2.0, 3.0, 5.0])),
        recursive_weight=float(np.round(rng.uniform(0.3, 0.6), 2)) if filtered else 0.0,
        edge_gain=float(np.round(rng.uniform(0.3, 1.0), 2)) if filtered and rng.random() < 0.7 else 0.0,
        edge_sigma_mm=float(np.round(rng.uniform(1.0, 3.0), 2)),
        video=bool(rng.random() < 0.4),
        video_window=(float(np.round(rng.uniform(0.0, 0.1), 3)), float(np.round(rng.uniform(0.9, 1.0), 3))),
        video_headroom=float(np.round(rng.uniform(0.05, 0.4), 3)),
        tags=bool(rng.random() < 0.7),
    )
