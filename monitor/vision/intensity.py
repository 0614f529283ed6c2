"""Stored pixel values to attenuation (log domain), whatever the detector wrote.

Beer-Lambert makes ``-ln(I)`` additive in the attenuating material, so in this
domain a baseline subtracted from a frame leaves the cement's own line
integral, mu * thickness. Stored values relate to the intensity I as:

- LIN, MONOCHROME2: v = g I              ->  a = -ln(v)
- LIN, MONOCHROME1: v = top - g I        ->  a = -ln(top - v)
- LOG, MONOCHROME2: v = k ln(I) + c      ->  a = -v / k
- LOG, MONOCHROME1: v = top - k ln(I) - c ->  a = v / k

(plus a constant we never need). The log scale ``k`` is not in any standard
tag, so it is measured from the quantum noise: in a LOG image the variance of
Poisson noise falls exponentially with the value, var(v) = k^2 exp(-(v - c)/k),
so the slope of ln var(v) against v is -1/k.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class IntensityModel:
    photometric: str  # MONOCHROME1 or MONOCHROME2
    relationship: str  # LIN or LOG (unknown and DISP data are treated as LOG)
    bits_stored: int
    log_scale: float | None = None  # k, stored value units per natural-log unit (LOG only)
    log_scale_measured: bool = False

    @property
    def top(self) -> float:
        return float(2**self.bits_stored - 1)

    def attenuation(self, frame: np.ndarray) -> np.ndarray:
        """-ln(relative intensity), float32, same shape."""
        v = frame.astype(np.float32)
        if self.relationship == "LIN":
            signal = (self.top - v) if self.photometric == "MONOCHROME1" else v
            return -np.log(np.maximum(signal, 0.5))
        k = self.log_scale or default_log_scale(self.bits_stored)
        return (v / k) if self.photometric == "MONOCHROME1" else (-v / k)

    def primary_attenuation(self, frame: np.ndarray, scatter: ScatterModel | None) -> np.ndarray:
        """Attenuation of the primary beam: the scatter estimate removed in the
        linear domain first, so that dense cement is not underestimated."""
        att = self.attenuation(frame)
        if scatter is None or scatter.fraction <= 0:
            return att
        intensity = np.exp(-(att - float(np.median(att))))  # relative, well scaled
        estimate = scatter.estimate(intensity)
        primary = np.maximum(intensity - estimate, 0.05 * estimate)
        return -np.log(primary) + float(np.median(att))


@dataclass(frozen=True)
class ScatterModel:
    """Scatter as a broad blur of the detected intensity: S = f / (1 + f) * G_sigma(I).

    ``fraction`` is the scatter-to-primary ratio behind the spine (0.1-0.3 with
    an anti-scatter grid; a calibration profile sets it per room).
    """

    fraction: float
    sigma_px: float

    def estimate(self, intensity: np.ndarray) -> np.ndarray:
        h, w = intensity.shape
        factor = max(1, int(self.sigma_px // 8))
        small = cv2.resize(
            intensity, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA
        )
        blurred = cv2.GaussianBlur(small, (0, 0), self.sigma_px / factor)
        return cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR) * (
            self.fraction / (1 + self.fraction)
        )


def default_log_scale(bits_stored: int) -> float:
    """A guess when noise cannot be measured: the full range spans three decades."""
    return (2**bits_stored - 1) / np.log(1000.0)


def model_for(
    photometric: str, relationship: str | None, bits_stored: int, frames: list[np.ndarray]
) -> IntensityModel:
    """The intensity model for a stream, measuring the LOG scale from its first frames."""
    rel = "LIN" if relationship == "LIN" else "LOG"
    if rel == "LIN":
        return IntensityModel(photometric, rel, bits_stored)
    k = measure_log_scale(frames, photometric, bits_stored)
    if k is None:
        return IntensityModel(photometric, rel, bits_stored, default_log_scale(bits_stored), False)
    return IntensityModel(photometric, rel, bits_stored, k, True)


def measure_log_scale(frames: list[np.ndarray], photometric: str, bits_stored: int) -> float | None:
    """k from the temporal noise of consecutive frames, or None if it cannot be measured."""
    if len(frames) < 2:
        return None
    top = 2**bits_stored - 1
    a, b = (f.astype(np.float64) for f in frames[:2])
    if photometric == "MONOCHROME1":
        a, b = top - a, top - b  # so that larger means more intensity
    mean = (a + b) / 2
    var = (a - b) ** 2 / 2
    valid = (mean > 0.02 * top) & (mean < 0.98 * top)
    if valid.sum() < 1000:
        return None
    m, s = mean[valid], var[valid]
    edges = np.quantile(m, np.linspace(0.05, 0.95, 13))
    centres, log_var = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (m >= lo) & (m < hi)
        if sel.sum() < 200 or hi - lo < 1e-6:
            continue
        # mean of the lower 98%: edges that moved between the frames are outliers
        values = np.sort(s[sel])
        noise = values[: int(0.98 * len(values))].mean() / 0.9 - 1.0 / 12.0  # 0.9: trimmed chi-square
        noise_floor = 1.0 / 12.0  # quantisation
        if noise <= noise_floor:
            continue
        centres.append((lo + hi) / 2)
        log_var.append(np.log(noise))
    if len(centres) < 4 or np.ptp(centres) < 0.05 * top:
        return None
    slope = np.polyfit(centres, log_var, 1)[0]
    if slope >= 0:
        return None
    k = -1.0 / slope
    return (
        float(k) if 0.05 * default_log_scale(bits_stored) < k < 20 * default_log_scale(bits_stored) else None
    )
