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
        k = np.float32(self.log_scale or default_log_scale(self.bits_stored))
        return (v / k) if self.photometric == "MONOCHROME1" else (-v / k)


def default_log_scale(bits_stored: int) -> float:
    """A guess when noise cannot be measured: the full range spans three decades."""
    return float((2**bits_stored - 1) / np.log(1000.0))


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
    means, variances = [], []
    for first, second in zip(frames[:-1], frames[1:], strict=True):  # every consecutive pair
        a, b = first.astype(np.float64), second.astype(np.float64)
        if photometric == "MONOCHROME1":
            a, b = top - a, top - b  # so that larger means more intensity
        mean = (a + b) / 2
        # Only smooth regions: where the image has structure, breathing between the
        # two frames adds variance that is not noise.
        gy, gx = np.gradient(cv2.GaussianBlur(mean, (0, 0), 2.0))
        flat = np.hypot(gx, gy)
        keep = (mean > 0.02 * top) & (mean < 0.98 * top) & (flat < np.percentile(flat, 30))
        means.append(mean[keep])
        variances.append(((a - b) ** 2 / 2)[keep])
    m, s = np.concatenate(means), np.concatenate(variances)
    if m.size < 1000:
        return None
    edges = np.quantile(m, np.linspace(0.05, 0.95, 13))
    centres, log_var = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (m >= lo) & (m < hi)
        if sel.sum() < 200 or hi - lo < 1e-6:
            continue
        # mean of the lower 98%: edges that moved between the frames are outliers
        values = np.sort(s[sel])
        noise = values[: int(0.98 * len(values))].mean() / 0.9 - 1.0 / 12.0  # 0.9: trimmed chi-square
        noise_floor = 0.25  # sigma under half a level: quantisation dominates, the estimate is meaningless
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
