"""Calibration profiles: what a room's C-arm (or frame grabber) needs to measure in mm.

One JSON file per room or C-arm, format ``vertebroplasty-monitor-calibration``,
version 1 (schema and procedure: ``calibration/README.md``,
``calibration/profile.schema.json``). Loading checks every field and names
what is wrong; a profile is never half-used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import MonitorError
from monitor.vision.calibrate import GRID_MAX_ANISOTROPY, RadialDistortion

FORMAT = "vertebroplasty-monitor-calibration"
VERSION = 1
METHODS = ("grid", "needle", "dicom", "manual")
# Millimetres per image pixel at the vertebra: detector pixels of 0.05-1 mm over a
# magnification of 1.05-2.5 (DICOM's bounds), or a grabbed video's coarser pixels (a
# 30 cm field on 480 lines is 0.6 mm). Outside it a profile is a typo, not a room.
PLAUSIBLE_SPACING_MM = (0.02, 2.0)
MAX_ANISOTROPY = GRID_MAX_ANISOTROPY  # rows against columns: the analyzer takes one size for both


class ProfileError(MonitorError):
    pass


@dataclass(frozen=True)
class Profile:
    id: str
    image_size: tuple[int, int]  # (rows, columns) of the images it applies to
    spacing_mm: tuple[float, float] | None  # (row, column) at the isocentre / vertebra
    method: str | None
    uncertainty_pct: float | None
    distortion: RadialDistortion | None
    video_layout: dict | None  # plane -> [x, y, width, height] in the grabbed video frame
    cement_mu_per_mm: float | None
    scatter_fraction: float | None
    scatter_sigma_mm: float | None = None
    path: Path | None = None

    def scale(self) -> dict | None:
        """The wire format's ``scale`` for frames measured with this profile."""
        if self.spacing_mm is None:
            return None
        scale = {
            "spacing_mm": [round(v, 6) for v in self.spacing_mm],
            "source": "calibration",
            "calibration": self.id,
        }
        if self.distortion is not None:
            d = self.distortion
            scale["distortion"] = {"centre": list(d.centre), "k1": d.k1, "k2": d.k2, "radius": d.radius}
        return scale

    def analysis_settings(self) -> dict:
        """The settings of the analyzer's ``AnalysisConfig.physics`` this profile sets: the room's
        physics where it was measured, and always the profile's id (so that an analyzer can
        tell frames measured with another profile). The one mapping from profile to
        analysis, used by ``replay``, ``grab`` and the standalone ``analyze``."""
        settings: dict = {"calibration": self.id}
        for name in ("cement_mu_per_mm", "scatter_fraction", "scatter_sigma_mm"):
            if (value := getattr(self, name)) is not None:
                settings[name] = value
        return settings

    def check_size(self, plane: str, shape: tuple[int, int]) -> None:
        if tuple(shape) != self.image_size:
            raise ProfileError(
                f"calibration profile {self.id!r} is for {self.image_size[1]}x{self.image_size[0]} images; "
                f"the {plane} frames are {shape[1]}x{shape[0]}"
            )


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such calibration profile") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"{path}: not a readable JSON calibration profile ({e})") from None
    return parse_profile(raw, path)


def parse_profile(raw, path: Path | None = None) -> Profile:
    """A calibration profile from its parsed JSON (``raw``), every field it reads checked; ProfileError
    names the first that is wrong (and the file, given ``path``)."""
    # Over 60 lines on purpose: each field's checks in turn, in the order the format documents them
    # (calibration/README.md), then that the profile calibrates something.
    where = f"{path}: " if path else ""

    def fail(message: str):
        raise ProfileError(f"{where}{message}")

    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        fail(f'not a calibration profile ("format" must be {FORMAT!r})')
    if raw.get("version") != VERSION:
        fail(f"profile version {raw.get('version')!r}; this monitor reads version {VERSION}")
    missing = [k for k in ("id", "image_size") if k not in raw]
    if missing:
        fail(f"missing field(s): {', '.join(missing)}")
    if not isinstance(raw["id"], str) or not raw["id"]:
        fail('"id" must be a non-empty string')
    size = raw["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_int(v) and v > 0 for v in size)):
        fail(f'"image_size" must be [rows, columns], got {size!r}')
    spacing = method = uncertainty = None
    scale = raw.get("scale")
    if scale is not None:
        if not isinstance(scale, dict) or "spacing_mm" not in scale:
            fail('"scale" must be an object with "spacing_mm": [row, column]')
        s = scale["spacing_mm"]
        low, high = PLAUSIBLE_SPACING_MM
        if not (isinstance(s, list) and len(s) == 2 and all(_number(v) and low <= v <= high for v in s)):
            fail(f'"scale.spacing_mm" must be two numbers from {low} to {high} mm at the vertebra, got {s!r}')
        if abs(s[0] / s[1] - 1) > MAX_ANISOTROPY:  # as the grid calibration accepts
            fail(
                f'"scale.spacing_mm" {s!r} is not square within {MAX_ANISOTROPY:.0%}: the monitor measures'
                " in square pixels; resample the video to square pixels and calibrate that"
            )
        spacing = (float(s[0]), float(s[1]))
        method = scale.get("method")
        if method not in METHODS:
            fail(f'"scale.method" must be one of {", ".join(METHODS)}, got {method!r}')
        uncertainty = scale.get("uncertainty_pct")
        if uncertainty is not None and not _number(uncertainty):
            fail('"scale.uncertainty_pct" must be a number')
    distortion = None
    d = raw.get("distortion")
    if d is not None:
        fields = ("centre_px", "k1", "k2", "radius_px")
        if not isinstance(d, dict) or any(k not in d for k in fields):
            fail(f'"distortion" needs {", ".join(fields)}')
        c = d["centre_px"]
        if not (isinstance(c, list) and len(c) == 2 and all(_number(v) for v in c)):
            fail('"distortion.centre_px" must be [x, y]')
        if not all(_number(d[k]) for k in ("k1", "k2", "radius_px")) or d["radius_px"] <= 0:
            fail('"distortion" k1, k2 must be numbers and radius_px positive')
        if abs(d["k1"]) > 0.5 or abs(d["k2"]) > 0.5:
            fail(f'"distortion" k1 {d["k1"]}, k2 {d["k2"]}: implausibly strong (|k| <= 0.5)')
        distortion = RadialDistortion(
            (float(c[0]), float(c[1])), float(d["k1"]), float(d["k2"]), float(d["radius_px"])
        )
    layout = raw.get("video_layout")
    if layout is not None:
        ok = (
            isinstance(layout, dict)
            and layout
            and all(
                p in ("lateral", "ap")
                and isinstance(v, list)
                and len(v) == 4
                and all(_int(x) and x >= 0 for x in v)
                for p, v in layout.items()
            )
        )
        if not ok:
            fail('"video_layout" must map "lateral"/"ap" to [x, y, width, height] in pixels')
    mu = raw.get("cement_mu_per_mm")
    if mu is not None and not (_number(mu) and 0.01 < mu < 2):
        fail(f'"cement_mu_per_mm" must be between 0.01 and 2 per mm, got {mu!r}')
    scatter = raw.get("scatter_fraction")
    if scatter is not None and not (_number(scatter) and 0 <= scatter < 2):
        fail(f'"scatter_fraction" must be between 0 and 2, got {scatter!r}')
    spread = raw.get("scatter_sigma_mm")
    if spread is not None and not (_number(spread) and 5 <= spread <= 100):
        fail(f'"scatter_sigma_mm" must be between 5 and 100 mm, got {spread!r}')
    if spacing is None and distortion is None and layout is None and mu is None:
        fail("the profile calibrates nothing: give scale, distortion, video_layout or cement_mu_per_mm")
    return Profile(
        raw["id"],
        (int(size[0]), int(size[1])),
        spacing,
        method,
        uncertainty,
        distortion,
        layout,
        mu,
        scatter,
        spread,
        path,
    )


def profile_json(
    id: str,
    image_size: tuple[int, int],
    spacing_mm: tuple[float, float] | None = None,
    method: str | None = None,
    uncertainty_pct: float | None = None,
    distortion: RadialDistortion | None = None,
    notes: dict | None = None,
) -> dict:
    """A version-1 profile as written by ``monitor calibrate``."""
    raw = {"format": FORMAT, "version": VERSION, "id": id, "image_size": list(image_size)}
    if spacing_mm is not None:
        raw["scale"] = {"spacing_mm": [round(v, 6) for v in spacing_mm], "method": method}
        if uncertainty_pct is not None:
            raw["scale"]["uncertainty_pct"] = round(uncertainty_pct, 2)
    if distortion is not None:
        raw["distortion"] = {
            "model": "radial",
            "centre_px": [round(v, 3) for v in distortion.centre],
            "k1": round(distortion.k1, 7),
            "k2": round(distortion.k2, 7),
            "radius_px": round(distortion.radius, 3),
        }
    if notes:
        raw["notes"] = notes
    parse_profile(raw)  # what we write, we can read
    return raw


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
