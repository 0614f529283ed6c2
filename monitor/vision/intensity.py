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
    def units_known(self) -> bool:
        """Whether its log units are the detector's: LIN, or LOG with the scale measured from the
        noise, not the guess (three decades over the range), which scales every unit alike."""
        return self.relationship == "LIN" or self.log_scale_measured

    @property
    def top(self) -> float:
        return float(2**self.bits_stored - 1)

    def attenuation(self, frame: np.ndarray) -> np.ndarray:
        """-ln(relative intensity), float32, same shape."""
        v = frame.astype(np.float32)
        if self.relationship == "LIN":
            return -np.log(self._signal(v))
        k = np.float32(self.log_scale or default_log_scale(self.bits_stored))
        return (v / k) if self.photometric == "MONOCHROME1" else (-v / k)

    def intensity(self, frame: np.ndarray) -> np.ndarray:
        """Relative intensity, exp(-attenuation), float32, computed directly."""
        v = frame.astype(np.float32)
        if self.relationship == "LIN":
            return self._signal(v)
        return np.exp(-self.attenuation(v))

    def _signal(self, v: np.ndarray) -> np.ndarray:
        return np.maximum((self.top - v) if self.photometric == "MONOCHROME1" else v, 0.5)


def default_log_scale(bits_stored: int) -> float:
    """A guess when noise cannot be measured: the full range spans three decades."""
    return float((2**bits_stored - 1) / np.log(1000.0))


UNUSED_HIGH_BITS = 4  # BitsStored is not believed when the values never reach 1/16 of its range


def bits_in_use(frames: list[np.ndarray], bits_stored: int) -> int:
    """The bits the stored values use: ``bits_stored``, unless no value of ``frames`` reaches a
    sixteenth of its range, then the fewest that hold them (8 at least).

    A writer may declare BitsStored 16 for 10-bit data (a legal value, common in converters).
    Taken at its word, the LOG scale's noise is looked for between 2 and 98 % of 65,535, where no
    pixel lies, and the guess (three decades over the range) puts every log unit 64 times too
    low: the cement vanishes and no alarm comes (an independent test, session 72: a posterior
    leak read "0 alarms, 0.00 mL", monitored). A detector's own data reaches well into its range
    (its air, skin and soft tissue), so four high bits never set are not its."""
    peak = max(int(f.max()) for f in frames) if frames else 0
    if peak >= 2 ** (bits_stored - UNUSED_HIGH_BITS):
        return bits_stored
    return max(8, min(bits_stored, peak.bit_length()))


def model_for(
    photometric: str, relationship: str | None, bits_stored: int, frames: list[np.ndarray]
) -> IntensityModel:
    """The intensity model for a stream, measuring the LOG scale from its first frames; the
    range is the bits the values use (:func:`bits_in_use`), which the model's ``bits_stored``
    then says."""
    bits_stored = bits_in_use(frames, bits_stored)
    rel = "LIN" if relationship == "LIN" else "LOG"
    if rel == "LIN":
        return IntensityModel(photometric, rel, bits_stored)
    k = measure_log_scale(frames, photometric, bits_stored)
    if k is None:
        return IntensityModel(photometric, rel, bits_stored, default_log_scale(bits_stored), False)
    return IntensityModel(photometric, rel, bits_stored, k, True)


def measure_log_scale(frames: list[np.ndarray], photometric: str, bits_stored: int) -> float | None:
    """k from the temporal noise of consecutive frames, or None if it cannot be measured.

    Pixels are binned by value over the whole range, and in each bin only the
    flatter half is used, so that bone is sampled as well as soft tissue and the
    slope is taken over several log units. The frame difference is high-passed:
    breathing between frames leaves a smooth residue, quantum noise is white.
    Bins with fewer than ~100 quanta per pixel (collimator shadows, steel) are
    dropped once k is known: there electronic noise and the Poisson floor bend
    the curve away from k^2 / q.
    """
    # Over 60 lines on purpose: the estimate and the checks that refuse it (too few frames or usable
    # pixels, filtered noise, too few bins or too narrow a range, a slope that does not fall, an
    # implausible k), each beside the step it guards.
    if len(frames) < 2:
        return None
    top = 2**bits_stored - 1
    levels, power, slope_map, raw = [], [], [], []
    for first, second in zip(frames[:-1], frames[1:], strict=True):  # every consecutive pair
        a, b = first.astype(np.float32), second.astype(np.float32)
        if photometric == "MONOCHROME1":
            a, b = top - a, top - b  # so that larger means more intensity
        mean = cv2.GaussianBlur((a + b) / 2, (0, 0), 1.5)
        difference = a - b
        high = difference - cv2.blur(difference, (3, 3))  # keeps 8/9 of white noise's variance
        levels.append(mean.ravel())
        power.append((high * high).ravel() * (9 / 8) / 2)  # per-frame variance
        raw.append((difference * difference).ravel() / 2)
        slope_map.append(
            cv2.magnitude(cv2.Sobel(mean, cv2.CV_32F, 1, 0), cv2.Sobel(mean, cv2.CV_32F, 0, 1)).ravel()
        )
    m, s, g, r = (np.concatenate(a) for a in (levels, power, slope_map, raw))
    keep = (m > 0.02 * top) & (m < 0.98 * top)
    m, s, g, r = m[keep], s[keep], g[keep], r[keep]
    if m.size < 5000:
        return None
    # Quantum noise is white: a high-pass keeps (after the 9/8) all of its variance.
    # Noise that a spatial filter, a resampling or a video chain has smoothed loses
    # most of it there, and its level no longer follows the quanta: no k from it.
    quiet = g <= np.median(g)
    if s[quiet].mean() < 0.9 * r[quiet].mean():
        return None
    edges = np.linspace(*np.quantile(m, [0.01, 0.99]), 25)
    centres, log_var, weights = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (m >= lo) & (m < hi)
        if sel.sum() < 400:
            continue
        flat = g[sel] <= np.median(g[sel])
        # Rounding to integer levels adds 1/12 (Sheppard), for any noise over ~0.3 level.
        noise = float(s[sel][flat].mean()) - 1.0 / 12.0
        if noise < 0.1:
            continue
        # at the mean level of the pixels used, not the bin's centre: anatomy's plateaus
        # crowd a bin's pixels to one side of it (up to 7 % on k)
        centres.append(float(m[sel][flat].mean()))
        log_var.append(np.log(noise))
        weights.append(np.sqrt(flat.sum()))
    centres, log_var, weights = map(np.asarray, (centres, log_var, weights))
    use = np.ones(len(centres), bool)
    for _ in range(4):
        if use.sum() < 4 or np.ptp(centres[use]) < 0.05 * top:
            return None
        slope = np.polyfit(centres[use], log_var[use], 1, w=weights[use])[0]
        if slope >= 0:
            return None
        k = -1.0 / slope
        quanta = k * k / np.exp(log_var)  # var(v) = k^2 / q
        if np.array_equal(quanta >= 100, use):
            break
        use = quanta >= 100
    return (
        float(k) if 0.05 * default_log_scale(bits_stored) < k < 20 * default_log_scale(bits_stored) else None
    )
