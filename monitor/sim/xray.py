"""Polychromatic X-ray physics for the realistic simulator: spectra, materials, a detector.

The simple simulator attenuates one energy with the analyzer's own numbers (cement 0.20/mm,
scatter 0.15), so the accuracy benchmark never met anything the monitor cannot know. Here
the numbers come from maintained references instead:

- tube spectra from SpekPy (tungsten anode, 12 degrees, kVp and filtration drawn per case);
- elemental attenuation from xraydb (Elam et al.), mixed by mass fraction into tissues of
  ICRU Report 44 composition, PMMA cement with BaSO4 or ZrO2, stainless steel;
- an energy-integrating CsI detector: each photon counts in proportion to the energy it
  deposits, so the low energies that cement stops count less, and a thick bolus's log
  contrast grows sublinearly with its thickness (beam hardening).

Line integrals are kept per material (mm of each along every ray); a frame's primary signal
is sum_k w_k exp(-sum_m mu_m(E_k) L_m) over about 20 energy bins, with w_k the detector's
energy-weighted spectrum. Needs the ``sim`` extra (spekpy, xraydb).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# Mass fractions and densities (g/cm^3): ICRU Report 44 (soft tissue, cortical bone), and the
# usual formulas for the rest. Cancellous bone and marrow are mixtures of these in anatomy.
MATERIALS: dict[str, tuple[dict[str, float], float]] = {
    "soft_tissue": (
        {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003, "S": 0.003,
         "Cl": 0.002, "K": 0.003},
        1.06,
    ),
    "cortical_bone": (
        {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103,
         "S": 0.003, "Ca": 0.225},
        1.92,
    ),
    "pmma": ({"H": 0.0805, "C": 0.5998, "O": 0.3197}, 1.19),
    "BaSO4": ({"Ba": 0.5884, "S": 0.1374, "O": 0.2742}, 4.50),
    "ZrO2": ({"Zr": 0.7403, "O": 0.2597}, 5.68),
    "steel": ({"Fe": 0.695, "Cr": 0.19, "Ni": 0.095, "Mn": 0.02}, 8.0),
    "CsI": ({"Cs": 0.5115, "I": 0.4885}, 4.51 * 0.75),  # needle-crystal scintillator, 75 % fill
}  # fmt: skip

LOWEST_KEV = 15.0  # below this nothing gets through 20 cm of tissue
CSI_MM = 0.6  # scintillator thickness of a flat panel or an intensifier's input phosphor


@functools.lru_cache(maxsize=4096)
def _mass_attenuation(element: str, kev: float) -> float:
    import xraydb

    return float(xraydb.mu_elam(element, kev * 1000.0, kind="total"))  # cm^2/g


def linear_attenuation(material: str | tuple[dict[str, float], float], kev: np.ndarray) -> np.ndarray:
    """mu (1/mm) of ``material`` (a name of MATERIALS, or (mass fractions, density)) at ``kev``."""
    fractions, density = MATERIALS[material] if isinstance(material, str) else material
    kev = np.atleast_1d(np.asarray(kev, dtype=float))
    mass = np.array([sum(w * _mass_attenuation(el, float(e)) for el, w in fractions.items()) for e in kev])
    return mass * density / 10.0


def cement_material(opacifier: str, fraction: float) -> tuple[dict[str, float], float]:
    """PMMA with ``fraction`` (by weight) of ``opacifier`` (BaSO4 or ZrO2): mass fractions
    and density (volumes add)."""
    if opacifier not in ("BaSO4", "ZrO2") or not 0.0 <= fraction <= 0.6:
        raise ValueError(f"opacifier {opacifier!r} at {fraction}: expected BaSO4 or ZrO2, 0-60 %")
    pmma, rho_p = MATERIALS["pmma"]
    opaque, rho_o = MATERIALS[opacifier]
    mix: dict[str, float] = {}
    for part, weight in ((pmma, 1.0 - fraction), (opaque, fraction)):
        for element, w in part.items():
            mix[element] = mix.get(element, 0.0) + weight * w
    density = 1.0 / ((1.0 - fraction) / rho_p + fraction / rho_o)
    return mix, density


@dataclass(frozen=True)
class Beam:
    """What the tube emits: peak voltage and added filtration."""

    kvp: float
    al_mm: float = 3.0
    cu_mm: float = 0.0


@functools.lru_cache(maxsize=64)
def _spectrum(kvp: float, al_mm: float, cu_mm: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    import spekpy

    spek = spekpy.Spek(kvp=kvp, th=12.0)
    spek.filter("Al", al_mm)
    if cu_mm > 0:
        spek.filter("Cu", cu_mm)
    kev, fluence = spek.get_spectrum()
    edges = np.linspace(LOWEST_KEV, kvp, bins + 1)
    idx = np.clip(np.digitize(kev, edges) - 1, 0, bins - 1)
    keep = kev >= LOWEST_KEV
    photons = np.bincount(idx[keep], fluence[keep], bins)
    mean_kev = np.bincount(idx[keep], fluence[keep] * kev[keep], bins) / np.maximum(photons, 1e-30)
    used = photons > photons.sum() * 1e-5
    return mean_kev[used], photons[used] / photons[used].sum()


class Spectrum:
    """A beam's photons in ``bins`` energy bins, and what a CsI detector makes of them.

    ``kev``: (K,) mean energy per bin; ``photons``: (K,) fraction of the photons;
    ``weights``: (K,) each bin's share of the unattenuated detector signal (photons times
    energy deposited), summing to 1.
    """

    def __init__(self, beam: Beam, bins: int = 20):
        self.beam = beam
        self.kev, self.photons = _spectrum(float(beam.kvp), float(beam.al_mm), float(beam.cu_mm), bins)
        absorbed = 1.0 - np.exp(-linear_attenuation("CsI", self.kev) * CSI_MM)
        deposit = self.photons * self.kev * absorbed
        self.weights = deposit / deposit.sum()
        self.quanta_per_signal = float(self.photons @ absorbed / deposit.sum())  # for the noise

    def mu(self, material) -> np.ndarray:
        """(K,) linear attenuation (1/mm) of ``material`` at this spectrum's bins."""
        return linear_attenuation(material, self.kev)

    def effective_kev(self) -> float:
        return float(self.weights @ self.kev)


def detected(spectrum: Spectrum, paths: dict[str, np.ndarray], mus: dict[str, np.ndarray]) -> np.ndarray:
    """The primary signal (1 with nothing in the beam) behind ``paths``: material -> (H, W)
    mm along each ray, attenuating with ``mus``: material -> (K,) 1/mm at the spectrum's bins.
    Energy-integrating: sum_k w_k exp(-sum_m mu_m[k] L_m), as one (K, M) x (M, H*W) product."""
    names = list(paths)
    shape = paths[names[0]].shape
    lengths = np.stack([np.asarray(paths[n], np.float32).ravel() for n in names])  # (M, H*W)
    mu = np.stack([np.asarray(mus[n], np.float32) for n in names], axis=1)  # (K, M)
    lines = mu @ lengths  # (K, H*W)
    np.negative(lines, out=lines)
    np.exp(lines, out=lines)
    return (spectrum.weights.astype(np.float32) @ lines).reshape(shape)


def log_contrast_curve(
    spectrum: Spectrum, cement, thickness_mm: np.ndarray, tissue_mm: float = 200.0
) -> np.ndarray:
    """-ln(signal with cement / signal without) behind ``tissue_mm`` of soft tissue, for each
    cement thickness (the cement replacing tissue): the beam-hardening curve. A single
    energy would make it a straight line through zero."""
    mu_t, mu_c = spectrum.mu("soft_tissue"), spectrum.mu(cement)
    base = spectrum.weights @ np.exp(-mu_t * tissue_mm)
    out = []
    for t in np.atleast_1d(thickness_mm):
        signal = spectrum.weights @ np.exp(-mu_t * (tissue_mm - t) - mu_c * t)
        out.append(-np.log(signal / base))
    return np.array(out)
