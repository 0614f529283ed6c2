"""Physics and truth of the fluoroscopy simulator."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from monitor.io.dicom import open_recording
from monitor.sim.anatomy import MU_CEMENT_DEFAULT, MU_MARROW, MU_SOFT_TISSUE, MU_TRABECULA, Grid
from monitor.sim.projector import View, project
from monitor.sim.simulate import SimConfig, simulate


def test_projection_integral_equals_attenuation_times_volume():
    """Beer-Lambert in log space: the line integrals of a cement ball, summed
    over the detector at the ball's scale, equal mu times its volume."""
    grid = Grid(0.5, (-20.0, -20.0, -20.0), (80, 80, 80))
    x, y, z = grid.coords()
    ball = ((x - 3) ** 2 + (y + 2) ** 2 + (z - 1) ** 2 <= 8.0**2).astype(np.float32)
    mu = 0.2
    volume_mm3 = ball.sum() * 0.5**3
    for name in ("lateral", "ap"):
        view = View(name, 256, 0.3, 1000.0, 750.0)
        line = project(ball * mu, grid, view)
        depth = 3.0 if name == "lateral" else -2.0  # the ball's centre along the beam
        pixel_area_at_ball = (view.pixel_mm * (750.0 + depth) / 1000.0) ** 2
        assert line.sum() * pixel_area_at_ball == pytest.approx(mu * volume_mm3, rel=0.01)
        # a chord through the centre is the diameter
        assert line.max() == pytest.approx(mu * 16.0, rel=0.05)


def test_projection_magnifies_by_sid_over_source_distance():
    grid = Grid(0.5, (-30.0, -30.0, -30.0), (120, 120, 120))
    x, y, z = grid.coords()
    bead = ((x - 0) ** 2 + (y - 20) ** 2 + (z + 10) ** 2 <= 1.5**2).astype(np.float32)
    view = View("lateral", 512, 0.2, 1000.0, 750.0)
    line = project(bead, grid, view)
    row, col = np.unravel_index(np.argmax(cv2.GaussianBlur(line, (0, 0), 2)), line.shape)
    expected = view.to_pixels(np.array([[0.0, 20.0, -10.0]]))[0]
    assert col == pytest.approx(expected[0], abs=1.0) and row == pytest.approx(expected[1], abs=1.0)
    assert expected[0] - view.centre == pytest.approx(20.0 * 1000 / 750 / 0.2)


def test_same_seed_same_recording_other_seed_other_recording(tmp_path):
    from monitor.sim import simulate as simulator

    cfg = SimConfig(seed=3, scenario="disc", size=96, frames=8)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate(cfg, a)
    simulator._PHANTOMS.clear()  # built again, not remembered
    simulate(cfg, b)
    simulate(SimConfig(seed=4, scenario="disc", size=96, frames=8), c)
    for plane in ("lateral", "ap"):
        fa = np.stack(list(open_recording(a / f"{plane}.dcm").frames()))
        fb = np.stack(list(open_recording(b / f"{plane}.dcm").frames()))
        fc = np.stack(list(open_recording(c / f"{plane}.dcm").frames()))
        assert np.array_equal(fa, fb) and not np.array_equal(fa, fc)
    ta, tb = json.loads((a / "truth.json").read_text()), json.loads((b / "truth.json").read_text())
    ta.pop("render_seconds"), tb.pop("render_seconds")
    assert ta == tb


def test_truth_volumes_are_whole_voxels_and_grow_monotonically(posterior_case):
    _, truth = posterior_case
    voxel_ml = truth["voxel_mm"] ** 3 / 1000
    injected = np.array([f["injected_ml"] for f in truth["frames"]])
    leaked = np.array([f["leaked_ml"] for f in truth["frames"]])
    assert np.allclose(injected / voxel_ml, np.round(injected / voxel_ml), atol=1e-3)
    assert np.all(np.diff(injected) >= 0) and np.all(np.diff(leaked) >= 0)
    assert np.all(leaked <= injected)
    baseline = truth["baseline_frames"]
    assert baseline >= 3 and np.all(injected[:baseline] == 0)
    assert 1.0 <= truth["total_injected_ml"] <= 7.0


def test_posterior_scenario_crosses_the_line_then_leaks(posterior_case):
    _, truth = posterior_case
    assert truth["leak"]["site"] == "posterior"
    assert truth["proximity_frame"] is not None
    assert truth["proximity_frame"] <= truth["leak"]["onset_frame"]
    onset = truth["frames"][truth["leak"]["onset_frame"]]
    assert onset["leaked_ml"] >= 0.02
    assert truth["frames"][truth["leak"]["onset_frame"] - 1]["leaked_ml"] < 0.02
    assert truth["min_distance_mm"] < 0  # cement went through the wall


def test_no_leak_scenario_has_no_leak(still_case):
    _, truth = still_case
    assert truth["leak"]["onset_frame"] is None and truth["total_leaked_ml"] == 0


def _log_intensity(folder, plane):
    with open_recording(folder / f"{plane}.dcm") as rec:
        assert rec.info.intensity_relationship == "LIN" and rec.info.photometric == "MONOCHROME2"
        return [np.log(np.maximum(f.astype(np.float64), 1.0)) for f in rec.frames()]


def test_cement_contrast_is_physically_plausible(still_case):
    """Cement attenuates about ten times more than osteoporotic bone: in log
    space the cloud's centre darkens by about its thickness times the
    difference of attenuation coefficients (less some to scatter)."""
    folder, truth = still_case
    frames = _log_intensity(folder, "lateral")
    drop = np.mean(frames[:3], axis=0) - np.mean(frames[-3:], axis=0)
    drop = cv2.GaussianBlur(drop, (0, 0), 1.5)
    ratio = (MU_CEMENT_DEFAULT - MU_MARROW) / (
        (MU_TRABECULA - MU_MARROW) * 0.1 + MU_MARROW - MU_SOFT_TISSUE + 0.02
    )
    assert 5 < ratio < 20
    volume_mm3 = truth["total_injected_ml"] * 1000
    typical_thickness = 2 * (3 * volume_mm3 / (4 * np.pi)) ** (1 / 3)  # a ball of that volume
    expected = (MU_CEMENT_DEFAULT - MU_MARROW) * typical_thickness
    assert 0.3 * expected < drop.max() < 1.3 * expected
    # and outside the cloud (the far corner) nothing changed beyond noise
    assert abs(drop[:20, :20].mean()) < 0.02


def test_wall_in_truth_matches_an_edge_in_the_image_at_the_dicom_scale(still_case):
    folder, truth = still_case
    with open_recording(folder / "lateral.dcm") as rec:
        spacing = rec.info.spacing_at_vertebra_mm()[1]
        image = np.log(np.maximum(rec.frame(0).astype(np.float64), 1.0))
    assert spacing == pytest.approx(truth["geometry"]["spacing_at_vertebra_mm"])
    wall = np.array(truth["frames"][0]["wall_px"])
    gradient = cv2.Sobel(cv2.GaussianBlur(image, (0, 0), 1.0), cv2.CV_64F, 1, 0)
    offsets = []
    for col, row in wall[3:-3]:  # away from the rounded corners
        r, c = int(round(row)), int(round(col))
        window = gradient[r, c - 6 : c + 7]
        offsets.append(np.argmax(np.abs(window)) - 6 + c - col)
    # The wall's outer edge is where the image brightens going posteriorly.
    assert abs(np.median(offsets)) <= 1.5, offsets


def test_breathing_moves_the_image_by_the_recorded_shift(posterior_case):
    folder, truth = posterior_case
    spacing = truth["geometry"]["spacing_at_vertebra_mm"]
    frames = _log_intensity(folder, "ap")
    shifts = [f["shift_mm"] for f in truth["frames"]]
    i, j = int(np.argmin([s[1] for s in shifts[:3]])), int(np.argmax([s[1] for s in shifts[:3]]))
    # ECC (intensity-based, sub-pixel) rather than phase correlation, whose peak the
    # steel cannula's sharp edges pull by a few tenths of a pixel.
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    template, moved = frames[i].astype(np.float32), frames[j].astype(np.float32)
    _, warp = cv2.findTransformECC(template, moved, warp, cv2.MOTION_TRANSLATION, criteria, None, 5)
    dx, dy = warp[:, 2]
    expected_rows = -(shifts[j][1] - shifts[i][1]) / spacing
    assert dy == pytest.approx(expected_rows, abs=0.15)
    assert abs(dx) < 0.15  # the AP view does not see anterior-posterior motion


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"bits": 8, "intensity": "LOG", "photometric": "MONOCHROME1"}, (8, "LOG", "MONOCHROME1", 8)),
        ({"bits": 16, "intensity": "LIN", "photometric": "MONOCHROME2"}, (16, "LIN", "MONOCHROME2", 16)),
    ],
)
def test_detector_output_is_written_as_configured(tmp_path, options, expected):
    simulate(SimConfig(seed=1, size=80, frames=6, field="round", **options), tmp_path)
    with open_recording(tmp_path / "ap.dcm") as rec:
        i = rec.info
        assert (i.bits_stored, i.intensity_relationship, i.photometric, i.bits_allocated) == expected
        frame = rec.frame(0).astype(np.int64)
        assert frame.max() < 2**i.bits_stored
        corner, centre = frame[:4, :4].mean(), frame[30:50, 30:50].mean()
        # outside the round field almost no X-rays arrive: dark, i.e. high values in MONOCHROME1
        assert (corner > centre) if i.photometric == "MONOCHROME1" else (corner < centre)


def test_the_truths_wall_is_held_to_the_layers_it_spans():
    """A body tilted in the sagittal plane has end layers that hold only an endplate: their
    posterior-most edge lies 12-20 mm in front of the wall (the CT's thoracic levels). Cement
    reaching them is not near the wall, so they are no part of it; a wall's own concavity
    (4 mm over its height) and its lean are followed."""
    from monitor.sim.simulate import _on_the_wall

    z = np.arange(-12.0, 12.5, 0.5)  # 49 layers, mm
    wall = 10.0 + 0.2 * z - 4.0 * (1 - (z / 12.0) ** 2)  # leaning, 4 mm concave at the middle
    wall[:3] -= np.array([18.0, 15.0, 12.0])  # the cranial end layers: an endplate
    wall[-2:] = -np.inf  # no body there
    kept = _on_the_wall(wall, z)
    assert not kept[:3].any() and not kept[-2:].any() and kept[3:-2].all()
    assert _on_the_wall(10.0 + 0.0 * z, z).all()  # a straight wall, every layer


def test_an_old_truth_is_brought_up_to_date_without_rendering(posterior_case, tmp_path):
    """`monitor bench accuracy` renders its corpus once; a truth written by an older simulator
    (no truth_version) is recomputed from the case's anatomy and plan, the same as rendering
    the case again would write it, and left alone once current."""
    from monitor.sim.simulate import TRUTH_VERSION, refresh_truth

    folder, truth = posterior_case
    assert truth["truth_version"] == TRUTH_VERSION
    old = json.loads(json.dumps(truth))
    del old["truth_version"]
    for f in old["frames"]:
        f["distance_mm"], f["wall_px"] = 99.0, [[0.0, 0.0]]
    old["proximity_frame"] = old["min_distance_mm"] = None
    (tmp_path / "truth.json").write_text(json.dumps(old))
    assert refresh_truth(tmp_path)
    now = json.loads((tmp_path / "truth.json").read_text())
    assert now["frames"] == truth["frames"]
    for key in ("truth_version", "proximity_frame", "min_distance_mm", "leak", "definitions"):
        assert now[key] == truth[key], key
    assert not refresh_truth(tmp_path)


def _blas_threads_said() -> str | None:
    import os

    return os.environ.get("OPENBLAS_NUM_THREADS")


def test_the_benchmarks_renders_share_the_cores_blas_threads(monkeypatch):
    """The corpus is rendered by processes started within ``_blas_threads_shared_by(workers)``:
    each is told to use its share of the cores it may run on (two renders, each with two BLAS
    threads, spent a quarter more CPU waiting); a value the user set (OPENBLAS_NUM_THREADS or
    OMP_NUM_THREADS) is theirs, and nothing is left set after."""
    import multiprocessing
    import os

    from monitor.accuracy import _blas_threads_shared_by

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # may run on 4 cores
    spawn = multiprocessing.get_context("spawn")
    with _blas_threads_shared_by(2), spawn.Pool(1) as pool:
        assert pool.apply(_blas_threads_said) == "2"
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    with _blas_threads_shared_by(1):  # one render: it may use every core
        assert "OPENBLAS_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    with _blas_threads_shared_by(2), spawn.Pool(1) as pool:
        assert pool.apply(_blas_threads_said) == "3"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # OpenBLAS reads it when its own is not set
    with _blas_threads_shared_by(2), spawn.Pool(1) as pool:
        assert pool.apply(_blas_threads_said) is None


def test_a_cleft_laid_on_an_endplate_lies_under_it_and_moves_nothing_else():
    """``cleft_site`` "superior" / "inferior" lays the gas cleft on that endplate: a flat crescent
    whose far side is within a voxel of 0.5 mm inside the cancellous bone's top (bottom) over its
    centre, filled with gas. The same draws as the mid-height cleft, so the rest of the case does
    not move: the generator is left in the same state, the cleft as wide, and "middle" is the
    cleft the simulator always made."""
    from monitor.sim.anatomy import CLEFT_ON_ENDPLATE_MM, add_cleft, build_phantom

    phantom = build_phantom(np.random.default_rng(3), level="L1", fracture="none")
    x, y, z = phantom.grid.coords()
    made = {}
    for site in ("middle", "superior", "inferior"):
        rng = np.random.default_rng(11)
        made[site] = (add_cleft(phantom, rng, site), rng.random())
    assert len({after for _, after in made.values()}) == 1  # the same draws
    middle = made["middle"][0].cleft
    assert np.array_equal(middle, add_cleft(phantom, np.random.default_rng(11)).cleft)
    zs = np.broadcast_to(z, middle.shape)
    for site, sign in (("superior", 1), ("inferior", -1)):
        cleft = made[site][0].cleft
        assert cleft.any() and np.all(made[site][0].mu[cleft] == -MU_SOFT_TISSUE)
        assert np.ptp(zs[cleft]) <= CLEFT_ON_ENDPLATE_MM + phantom.grid.voxel_mm
        # over the cleft's centre column, its far side against the cancellous bone's edge
        column = cleft.any(axis=0)
        cy, cx = (int(round(v)) for v in np.argwhere(column).mean(axis=0))
        bone = zs[:, cy, cx][phantom.cancellous[:, cy, cx]]
        edge = bone.max() if sign > 0 else bone.min()
        far = zs[:, cy, cx][cleft[:, cy, cx]]
        far = far.max() if sign > 0 else far.min()
        assert abs(edge - far) <= 0.5 + phantom.grid.voxel_mm, (site, edge, far)
        # as wide across as the mid-height one (the same draws), which lies 2 mm or less off the middle
        assert abs(int(column.sum()) - int(middle.any(axis=0).sum())) <= 0.35 * int(column.sum())
    assert abs(float(np.mean(zs[middle]))) <= 2.0 + phantom.grid.voxel_mm
    with pytest.raises(ValueError, match="give --cleft too"):  # a site for no cleft is a mistake, said
        SimConfig(cleft_site="superior").validate()
