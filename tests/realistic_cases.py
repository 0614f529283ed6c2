"""Helpers the realistic-world test files share (tests/test_realistic_*.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from monitor.sim.simulate import SimConfig, simulate
from monitor.sim.world import World


def small_case(world: World, **overrides) -> SimConfig:
    """A short posterior-leak case (seed 3, 128 pixels, 10 frames at 10 frames/s) in ``world``,
    with ``overrides`` to the SimConfig."""
    base = SimConfig(seed=3, scenario="posterior", size=128, frames=10, fps=10.0, world=world)
    return replace(base, **overrides)


def ct_or_skip():
    """The CT phantom's volume, or the test skipped saying why it cannot be had here."""
    from monitor.sim.ct import CTNotAvailable, load_ct

    try:
        return load_ct()
    except CTNotAvailable as e:
        pytest.skip(f"the CT phantom cannot be had here: {e}")


def lower_endplate_cleft(half_x_mm: float, half_y_mm: float, anterior: float, thick_mm: float = 3.0):
    """A replacement for the simulator's add_cleft: a gas cleft ``thick_mm`` thick lying on the
    lower endplate of the treated body's cancellous bone, an ellipse of half-axes ``half_x_mm``
    (left-right, x) and ``half_y_mm`` (antero-posterior, y), its centre that share ``anterior`` of
    the body's half-depth anterior of its middle (-y; +y is posterior)."""
    from monitor.sim.anatomy import MU_SOFT_TISSUE

    def cleft_on_the_lower_endplate(phantom, rng, site="middle"):
        x, y, z = phantom.grid.coords()
        bone = phantom.cancellous
        has = bone.any(axis=0)
        lowest = z.ravel()[np.argmax(bone, axis=0)]  # the cancellous bone's lowest z per column
        ellipse = (x / half_x_mm) ** 2 + ((y + anterior * phantom.shape.half_depth) / half_y_mm) ** 2 <= 1.0
        above = z - lowest[None]
        cleft = bone & ellipse & (above >= 0) & (above <= thick_mm) & has[None]
        mu = phantom.mu.copy()
        mu[cleft] = -MU_SOFT_TISSUE  # gas
        return replace(phantom, mu=mu, cleft=cleft)

    return cleft_on_the_lower_endplate


def dense_cleft_without_leak(seed: int, folder, monkeypatch, **cleft) -> dict:
    """Render tuning seed ``seed`` at 512 pixels with no leak, dense cement seen behind scatter
    (ZrO2 at 34 %, 65 kVp, scatter-to-primary 0.9) and the gas cleft of
    :func:`lower_endplate_cleft` (``cleft``: its keyword arguments) into ``folder``; returns
    the truth, checked to have no cement leave the body."""
    import monitor.sim.simulate as sim
    from monitor.accuracy import world_configs

    monkeypatch.setattr(sim, "add_cleft", lower_endplate_cleft(**cleft))
    cfg = world_configs([seed])[0]
    dense = replace(cfg.world, opacifier="ZrO2", opacifier_fraction=0.34, kvp=65.0, scatter_to_primary=0.9)
    truth = simulate(replace(cfg, scenario="none", cleft=True, world=dense, size=512), folder)
    assert truth["total_leaked_ml"] == 0.0
    return truth
