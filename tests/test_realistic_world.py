"""The realistic simulator (issue 17): spectra and attenuation from SpekPy and xraydb, beam
hardening, the room's unknowns drawn from their ranges, and what a case writes."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import cv2
import numpy as np
import pydicom
import pytest

from monitor.sim.simulate import SimConfig, simulate
from monitor.sim.world import World, draw_world
from monitor.sim.xray import (
    Beam,
    Spectrum,
    cement_material,
    detected,
    linear_attenuation,
    log_contrast_curve,
)


def test_attenuation_matches_the_reference_tables():
    """Soft tissue and cortical bone at 60 keV against NIST XCOM's mass attenuation
    (0.2048 and 0.3148 cm^2/g for ICRU-44 muscle-like tissue and cortical bone)."""
    tissue = linear_attenuation("soft_tissue", np.array([60.0]))[0] * 10 / 1.06
    bone = linear_attenuation("cortical_bone", np.array([60.0]))[0] * 10 / 1.92
    assert tissue == pytest.approx(0.2048, rel=0.04)
    assert bone == pytest.approx(0.3148, rel=0.04)


def test_barium_cement_jumps_at_the_barium_k_edge():
    cement = cement_material("BaSO4", 0.3)
    below, above = linear_attenuation(cement, np.array([37.0, 38.0]))
    assert above > 3 * below
    assert cement[1] == pytest.approx(1.53, abs=0.02)  # PMMA 1.19 and BaSO4 4.5 g/cm^3, volumes adding


def test_harder_beams_have_higher_effective_energy():
    soft, hard = Spectrum(Beam(60, 3.0, 0.0)), Spectrum(Beam(110, 3.0, 0.0))
    filtered = Spectrum(Beam(60, 3.0, 0.2))
    assert soft.effective_kev() < filtered.effective_kev() < hard.effective_kev()
    assert len(soft.kev) >= 15 and soft.weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("kvp", "opacifier"), [(60, "BaSO4"), (110, "BaSO4"), (80, "ZrO2")])
def test_beam_hardening_makes_cement_contrast_sublinear_in_thickness(kvp, opacifier):
    """Behind 20 cm of tissue, the contrast per mm of a 20 mm bolus is well below that of
    1 mm: a single-energy model would read the bolus too dense, by this ratio."""
    spectrum = Spectrum(Beam(kvp, 3.0, 0.1))
    thickness = np.array([1.0, 5.0, 10.0, 20.0])
    per_mm = log_contrast_curve(spectrum, cement_material(opacifier, 0.3), thickness) / thickness
    assert np.all(np.diff(per_mm) < 0)
    assert per_mm[0] / per_mm[-1] > 1.2


def test_one_energy_bin_has_no_beam_hardening():
    spectrum = Spectrum(Beam(80, 3.0, 0.0))
    spectrum.weights = np.zeros_like(spectrum.weights)
    spectrum.weights[len(spectrum.weights) // 2] = 1.0
    thickness = np.array([1.0, 20.0])
    per_mm = log_contrast_curve(spectrum, cement_material("BaSO4", 0.3), thickness) / thickness
    assert per_mm[0] == pytest.approx(per_mm[1], rel=1e-4)


def test_the_detector_signal_sums_the_bins():
    spectrum = Spectrum(Beam(80, 3.0, 0.0))
    mus = {"soft_tissue": spectrum.mu("soft_tissue")}
    paths = {"soft_tissue": np.array([[0.0, 100.0]], np.float32)}
    signal = detected(spectrum, paths, mus)
    assert signal[0, 0] == pytest.approx(1.0)
    assert signal[0, 1] == pytest.approx(float(spectrum.weights @ np.exp(-mus["soft_tissue"] * 100.0)))


def test_worlds_are_drawn_from_the_issues_ranges_not_the_analyzers_defaults():
    worlds = [draw_world(np.random.default_rng(seed)) for seed in range(300)]
    for w in worlds:
        w.validate()
        assert 60 <= w.kvp <= 110 and 2.5 <= w.al_mm <= 4.0 and 0 <= w.cu_mm <= 0.2
        assert 0.15 <= w.opacifier_fraction <= 0.35 and 0.3 <= w.scatter_to_primary <= 2.5
        assert 30 <= w.scatter_kernel_mm <= 80
        assert w.recursive_weight == 0 or 0.3 <= w.recursive_weight <= 0.6
    share = {
        "intensifier": np.mean([w.detector == "intensifier" for w in worlds]),
        "abc": np.mean([w.abc for w in worlds]),
        "ZrO2": np.mean([w.opacifier == "ZrO2" for w in worlds]),
        "video": np.mean([w.video for w in worlds]),
        "no tags": np.mean([not w.tags for w in worlds]),
        "SPR > 1.5": np.mean([w.scatter_to_primary > 1.5 for w in worlds]),
    }
    assert all(0.1 < v < 0.9 for v in share.values()), share  # every band is met often


def _small(world: World, **overrides) -> SimConfig:
    base = SimConfig(seed=3, scenario="posterior", size=128, frames=10, fps=10.0, world=world)
    return replace(base, **overrides)


def test_a_realistic_case_writes_the_exposure_tags_a_c_arm_writes(tmp_path):
    world = World(kvp=85, al_mm=3.0, cu_mm=0.1, abc=True, tags=True, grid=True)
    truth = simulate(_small(world), tmp_path / "tags")
    ds = pydicom.dcmread(tmp_path / "tags" / "lateral.dcm", stop_before_pixels=True)
    assert float(ds.KVP) == 85 and ds.Grid == "FOCUSED" and list(ds.FilterMaterial) == ["ALUMINUM", "COPPER"]
    assert truth["detector"]["lateral"]["kvp_per_frame"][0] == 85
    silent = simulate(_small(replace(world, tags=False)), tmp_path / "silent")
    ds = pydicom.dcmread(tmp_path / "silent" / "lateral.dcm", stop_before_pixels=True)
    assert "KVP" not in ds and "FilterMaterial" not in ds and "Grid" not in ds
    assert silent["config"]["world"]["tags"] is False


def test_video_output_is_8_bit_log_and_the_cement_darkens_it(tmp_path):
    from monitor.io.dicom import open_recording

    world = World(video=True, recursive_weight=0.4, edge_gain=0.6, detector="intensifier",
                  glare_fraction=0.1, vignetting=0.25)  # fmt: skip
    simulate(_small(world, bits=8, intensity="LOG", frames=24), tmp_path / "video")
    with open_recording(tmp_path / "video" / "lateral.dcm") as rec:
        first, last = rec.frame(0), rec.frame(23)
        assert rec.info.bits_stored == 8 and rec.info.intensity_relationship == "LOG"
    assert first.dtype == np.uint8 and first.max() > 200  # the window uses the range
    assert (last.astype(int) - first).min() < -60  # a bolus, dark on MONOCHROME2
    with pytest.raises(ValueError, match="8-bit video"):
        _small(world).validate()


def test_the_seed_sets_are_apart_and_each_named_on_the_command_line():
    """Tuning on a reporting seed would report the monitor on a case it was tuned on: the sets
    share no seed, and `monitor bench accuracy --seeds` offers each by its name."""
    from monitor.accuracy import SEED_SETS
    from monitor.cli import build_parser

    seen: set[int] = set()
    for seeds in SEED_SETS.values():
        assert len(set(seeds)) == len(seeds) and not seen & set(seeds)
        seen |= set(seeds)
    for name in SEED_SETS:
        assert build_parser().parse_args(["bench", "accuracy", "--seeds", name]).seeds == name


def test_a_case_is_the_same_for_the_same_seed(tmp_path):
    """... whether its phantom is built (a) or remembered from the last build (b)."""
    from monitor.sim import simulate as simulator

    world = draw_world(np.random.default_rng(11))
    cfg = _small(world, bits=8, intensity="LOG") if world.video else _small(world)
    simulator._PHANTOMS.clear()
    a = simulate(cfg, tmp_path / "a")
    assert len(simulator._PHANTOMS) == 1
    b = simulate(cfg, tmp_path / "b")
    assert json.dumps(a["detector"]) == json.dumps(b["detector"])
    assert (tmp_path / "a" / "ap.dcm").read_bytes() == (tmp_path / "b" / "ap.dcm").read_bytes()


def _ct_or_skip():
    from monitor.sim.ct import CTNotAvailable, load_ct

    try:
        return load_ct()
    except CTNotAvailable as e:
        pytest.skip(f"the CT phantom cannot be had here: {e}")


@pytest.fixture(scope="module")
def tuning_5014(tmp_path_factory):
    """Tuning seed 5014 as the benchmark renders it (CT, T10, 768 pixels, 48 frames): its
    folder and truth, rendered once for the tests that only read it (about 25 s each time)."""
    from monitor.accuracy import world_configs

    _ct_or_skip()
    folder = tmp_path_factory.mktemp("ct5014") / "ct"
    return folder, simulate(world_configs([5014])[0], folder)


def test_the_ct_phantom_is_a_real_vertebra_in_the_simulators_frame():
    """The treated body from the CT's labels: a real size, its posterior wall concave (its
    middle in front of its posterolateral corners), the spinal cord behind it (+y)."""
    from monitor.sim.ct import build_ct_phantom

    _ct_or_skip()
    phantom = build_ct_phantom(np.random.default_rng(0), level="L1")
    s = phantom.shape
    # mm; the height is the body's extent along z, taller than the body by its tilt
    assert 30 < 2 * s.half_width < 60 and 20 < 2 * s.half_depth < 45 and 18 < s.height < 42
    assert phantom.cancellous.sum() > 0.6 * phantom.body.sum()
    g = phantom.grid
    middle = phantom.body[phantom.body.shape[0] // 2]  # an axial slice through the body, [y, x]
    ys, xs = np.nonzero(middle)
    centre_x = int(np.median(xs))
    wall_middle = ys[xs == centre_x].max()
    wall_corners = max(
        ys[xs == centre_x - int(12 / g.voxel_mm)].max(), ys[xs == centre_x + int(12 / g.voxel_mm)].max()
    )
    assert wall_middle < wall_corners  # concave: the middle of the wall lies anterior
    # behind the body (larger y), at its height: the canal, then bone of the posterior arch
    column = phantom.mu[phantom.mu.shape[0] // 2, :, centre_x]
    behind = column[wall_middle + int(25 / g.voxel_mm) : wall_middle + int(45 / g.voxel_mm)]
    assert behind.max() > 0.01  # lamina or spinous process


def test_a_ct_case_grows_cement_in_the_real_body_and_leaks_through_its_wall(tmp_path):
    _ct_or_skip()
    cfg = SimConfig(seed=7, scenario="posterior", level="T12", frames=12, size=128, anatomy="ct")
    truth = simulate(cfg, tmp_path / "ct")
    assert truth["leak"]["site"] == "posterior" and truth["leak"]["onset_frame"] is not None
    assert truth["min_distance_mm"] < 0  # beyond the real wall
    assert 1.0 < truth["total_injected_ml"] < 6.0


def test_a_cleft_fills_before_the_marrow_around_it(tmp_path):
    """Kummell's disease: the gas cleft is the first place cement goes."""
    from monitor.sim.anatomy import add_cleft, build_phantom
    from monitor.sim.cement import fill_order

    rng = np.random.default_rng(4)
    phantom = add_cleft(build_phantom(rng, level="L1"), rng)
    cleft = phantom.cleft.ravel()
    assert cleft.sum() > 500 and (phantom.mu.ravel()[cleft] < 0).all()  # gas
    centre = np.argwhere(phantom.cleft).mean(axis=0)  # (z, y, x) voxel
    g = phantom.grid
    tip = np.array([g.origin[0], g.origin[1], g.origin[2]]) + (centre[::-1] + 0.5) * g.voxel_mm
    tip[0] += 9.0  # beside the cleft, as a cannula tip often is
    order, _ = fill_order(phantom, tip, np.zeros(g.shape, bool), "none", rng, 0.0)
    first = order.voxels[: int(cleft.sum())]
    assert cleft[first].mean() > 0.6


def test_brightness_control_raises_the_output_then_steps_the_kvp_as_the_cement_grows(tmp_path):
    """The ABC holds the central brightness: the dark bolus makes it raise the tube output to
    its limit, then step the kVp (so the cement's contrast changes mid-injection)."""
    world = World(kvp=70, abc=True, abc_gain=0.6, abc_max_output=1.05, kvp_step=3.0)
    truth = simulate(_small(world, scenario="none", frames=24, size=192), tmp_path / "abc")
    history = truth["detector"]["lateral"]
    assert history["kvp_per_frame"][0] == 70 and history["kvp_per_frame"][-1] > 70
    assert max(history["output_per_frame"]) == pytest.approx(1.05, abs=0.01)
    steady = simulate(
        _small(replace(world, abc=False), scenario="none", frames=24, size=192), tmp_path / "off"
    )
    assert set(steady["detector"]["lateral"]["kvp_per_frame"]) == {70}


def test_the_benchmark_scores_a_realistic_case_and_tables_it_by_band(tmp_path):
    """One small realistic case through the benchmark's own path (rendered, evaluated as the
    analyzer would, scored): its bands each get a row of the sensitivity table, and so does its
    leak type by anatomy."""
    from monitor.accuracy import evaluate_case, report, score, sensitivity
    from monitor.volume_plot import estimate_pairs, estimates_table, plot_estimates

    world = World(kvp=95, opacifier="ZrO2", scatter_to_primary=1.8, grid=False, abc=True)
    simulate(_small(world, frames=16, size=256), tmp_path / "case")
    case = evaluate_case(tmp_path / "case")
    assert len(case["distance"]) == 16 and case["config"]["world"]["opacifier"] == "ZrO2"
    table = sensitivity([case])
    for row in ("scatter: SPR >= 1.5", "kVp: 90-110", "opacifier: ZrO2", "brightness control: ABC on",
                "anatomy: geometric", "scenario: posterior (geometric)"):  # fmt: skip
        assert row in table
    assert "realistic" in report(score([case]), "realistic world: 1 case")
    # Each measured frame's registration against the truth's breathing, both views: within a
    # fraction of the breath (an axis or sign taken wrong would read about the breath itself)
    truth = json.loads((tmp_path / "case" / "truth.json").read_text())
    rise = [f["shift_mm"][1] for f in truth["frames"]]
    registered = case["registration_error_mm"]
    assert (
        len(registered["lateral"]) == len(registered["ap"]) == 14
    )  # frames 2-15: 0 and 1 build the baseline
    assert max(rise) - min(rise) > 0.5
    assert float(np.median(registered["lateral"] + registered["ap"])) < 0.2 * (max(rise) - min(rise))
    assert re.search(
        r"registration vs the breathing, median / p95 \(mm\) +\d", report(score([case]), "1 case")
    )
    # --operator-wall always: the operator draws the wall on the first frame after the baseline;
    # the 5 mm rule is armed on it from the next frame on, and the report counts it
    drawn = evaluate_case(tmp_path / "case", operator_wall="always")
    first = drawn["operator_wall_frame"]
    assert first == min(drawn["wall"]) and drawn["operator_wall_refused"] is None
    after = [state for f, state in drawn["wall"].items() if f > first]
    assert after and all(state == "armed" for state in after)
    scored = score([drawn])
    assert scored["walls"]["drawn"] == 1 and "drawn by the operator / refused" in report(scored, "1 case")
    assert "drawn by the operator" not in report(score([case]), "1 case")
    # The volume's two estimates per frame, for the plot against the truth: the darkness on every
    # frame with a volume; where the reported volume is the shape's (the darkness reads low, said
    # by a caveat), the shape estimate is that volume.
    assert case["volume_estimates"] and set(case["volume_estimates"]) <= set(case["volume"])
    for f, (darkness, shape) in case["volume_estimates"].items():
        assert darkness >= 0 and (shape is None or shape > 0)
        if f in case["volume_low_frames"]:
            assert shape == pytest.approx(case["volume"][f], rel=1e-3)
    assert case["volume_low_frames"], "this room's darkness reads low: some frames take the shape"
    pairs = estimate_pairs([case])
    assert (
        len(pairs["darkness"])
        == len(pairs["reported"])
        == sum(v >= 0.5 for v in case["truth"]["injected"].values())
        > 0
    )
    assert "darkness   geometric" in estimates_table([case])
    plot_estimates([case], tmp_path / "volume.png", "one case")
    drawn = cv2.imread(str(tmp_path / "volume.png"))
    blue = (np.abs(drawn.astype(int) - (180, 119, 31)).sum(axis=2) < 90).sum()  # tab:blue points, BGR
    assert drawn.shape[:2] == (572, 1650) and blue > 3 * len(pairs["darkness"])
    # The possible (medium) leak alarms are counted too: the operator sees them. A leak from
    # frame 10 with only a possible alarm at 11, and one raised at 5 before any cement left.
    leaked = {**case, "truth": {**case["truth"], "leak_onset": 10, "leak_first": 10, "leak_site": "venous"}}
    medium = {"kind": "extravasation", "priority": "medium", "plane": "lateral", "site": "venous"}
    leaked["alarms"] = [{**medium, "frame": 5}, {**medium, "frame": 11}]
    scored = score([leaked])
    assert scored["possible_leaks"] == {"on_time": 1, "false": 1}
    assert scored["leak"]["on_time"] == 0 and scored["leak"]["missed"] == 1  # no high alarm
    text = report(scored, "realistic world: 1 case")
    assert re.search(r"only a possible \(medium\) leak within 2 frames +1\n", text), text
    assert re.search(r"possible \(medium\) leaks before any cement left +1\n", text), text
    # A false high leak alarm raised while the truth's front was within the 5 mm line is still
    # false, and is also said as a stop the 5 mm rule owed (off a wall not confirmed, as a rule).
    # Each view and site is judged at its first false alarm (all before the cement left at 10):
    # posterior first at 4 mm (then 12), disc first at 12 mm (then 3), venous first where the truth
    # has no distance (the cement not yet level with the wall; then 2 mm): one of the three.
    distance = {**case["truth"]["distance"], 2: 4.0, 3: 12.0, 4: None, 5: 12.0, 6: 3.0, 7: 2.0}
    near = {**leaked, "truth": {**leaked["truth"], "distance": distance}}
    high = {**medium, "priority": "high"}
    sites = ((2, "posterior"), (3, "disc"), (4, "venous"), (5, "posterior"), (6, "disc"), (7, "venous"))
    near["alarms"] = [{**high, "frame": f, "site": site} for f, site in sites]
    scored = score([near])
    assert scored["leak"]["false"] == 3 and scored["leak"]["false_in_stop_zone"] == 1
    assert re.search(r"\.\.\. the front then within 5 mm of the wall +1\n", report(scored, "1 case"))
    # A case asked about is scored by the wall it showed the operator to confirm, against the
    # truth: right (within 1 mm, the question was not needed), wrong, or none shown.
    assert isinstance(case["asked_wall_error"], dict)
    asked = {
        **case,
        "wall": dict.fromkeys(case["wall"], "not-confirmed"),
        "asked_wall_error": {10: 0.3, 11: -0.4},
    }
    wrong, unshown = (
        {**asked, "asked_wall_error": {10: 0.2, 11: -4.0, 12: 3.0}},
        {**asked, "asked_wall_error": {}},
    )
    scored = score([asked, wrong, unshown, case])
    assert scored["asked"] == {"right": 1, "wrong": 1, "unshown": 1} and scored["walls"]["asked"] == 3
    text = report(scored, "4 cases")
    assert re.search(r"asked: wall shown right \(<= 1 mm\) / wrong / none +1 / +1 / 1 ", text), text


def test_the_registration_is_scored_against_the_breathing_each_view_shows():
    """The truth moves the patient (anterior-posterior, cranio-caudal) mm from the first frame:
    a lateral image shows both, across reversed where it is mirrored, and up for cranial; an AP
    image the second only. A registration that found exactly that scores 0 mm; one off by a
    pixel scores a pixel's mm."""
    from monitor.accuracy import registration_error_mm

    frames = [{"frame": 0, "shift_mm": [0.2, 1.0]}, {"frame": 5, "shift_mm": [0.8, 3.0]}]
    truth = {"geometry": {"spacing_at_vertebra_mm": 0.5}, "config": {"mirror": False}, "frames": frames}
    exact = {("lateral", 5): (1.2, -4.0), ("ap", 5): (0.0, -4.0)}
    assert registration_error_mm(truth, exact) == {"lateral": [pytest.approx(0.0)], "ap": [0.0]}
    mirrored = {**truth, "config": {"mirror": True}}
    assert registration_error_mm(mirrored, {("lateral", 5): (-1.2, -4.0)})["lateral"] == [pytest.approx(0.0)]
    assert registration_error_mm(truth, {("lateral", 5): (-1.2, -4.0)})["lateral"] == [pytest.approx(1.2)]
    assert registration_error_mm(truth, {("ap", 5): (0.0, -3.0), ("ap", 9): (0.0, 0.0)})["ap"] == [0.5]
    # each view from its own first frame: an AP whose first usable frame was 2 (patient 1.5 mm up)
    frames.insert(1, {"frame": 2, "shift_mm": [0.5, 1.5]})
    assert registration_error_mm(truth, {("ap", 5): (0.0, -3.0)}, {"ap": 2, "lateral": 0})["ap"] == [0.0]


def test_a_ct_phantom_is_surrounded_by_the_patients_own_chest():
    """Around the fine box, the CT's own lungs, ribs and organs at 2 mm replace the geometric
    phantom's analytic trunk: a lateral ray through a thoracic level crosses both lungs."""
    from monitor.sim.ct import build_ct_phantom
    from monitor.sim.projector import View, surrounding_paths

    _ct_or_skip()
    phantom = build_ct_phantom(np.random.default_rng(0), level="T10")
    view = View("lateral", 64, 160.0 / 64, 1000.0, 750.0)
    tissue, bone, missing = surrounding_paths(phantom, view)
    centre = tissue[32, 32]
    assert 250 < centre < 450  # mm: the chest's width in the CT's field (and the fine box)
    assert missing.max() > 100  # mm of lung and air along some lateral rays
    assert bone.max() > 5  # ribs and the other vertebrae outside the box


@pytest.fixture(scope="module")
def low_darkness(tmp_path_factory):
    """A room whose darkness reads the cement low: scatter 1.5x the primary with no grid and a
    polychromatic beam at 80 kVp (256 pixels, 24 frames, about 2.1 mL): (folder, truth)."""
    world = World(kvp=80, opacifier="BaSO4", scatter_to_primary=1.5, grid=False, abc=False)
    folder = tmp_path_factory.mktemp("low") / "case"
    return folder, simulate(_small(world, scenario="none", frames=24, size=256), folder)


def _baseline_from(folder, plane: str, frames: tuple[int, ...]):
    """The baseline the analyzer learns of ``plane`` from those ``frames``, with the recording's
    millimetre scale: (PlaneBaseline, PixelGrid)."""
    from monitor.io.dicom import open_recording
    from monitor.vision.pixels import PixelGrid
    from tests.conftest import learn_baseline

    with open_recording(folder / f"{plane}.dcm") as rec:
        info = rec.info
        images = [rec.frame(i) for i in frames]
    grid = PixelGrid.for_spacing(info.spacing_at_vertebra_mm()[0])
    return learn_baseline(images, plane, info, grid), grid


@pytest.mark.parametrize("frames", [(12, 13, 14), (14, 14, 14)], ids=["injecting", "between-syringes"])
def test_a_faint_bolus_there_when_monitoring_began_is_found_and_its_wall_asked_for(low_darkness, frames):
    """Scatter 1.5x the primary with no grid and a hardened beam thin the cement's log contrast:
    the bolus stands well under the 1.2 log units over the bone that a dense one does. Watched
    from frame 12 (about 1.5 mL in), while cement still flows, or with the same frame thrice, as
    between syringes (no growth to see), it is still found in both views as cement already
    there, by how far it stands over the bone's own spread; the lateral body is found with the
    bolus and the steel within it painted out, and its wall is shown for the operator to
    confirm, not armed (it was found on images holding cement). The same case's first frames
    hold none, and their wall is armed. Where the log scale is guessed, a faint bolus is not
    looked for (a guess inflates the bone's contrast as much as the cement's)."""
    from monitor.vision.anatomy import LateralBody
    from monitor.vision.baseline import GROWN_MIN_MM2, find_cement_in_baseline

    folder, truth = low_darkness
    for plane in ("lateral", "ap"):
        clean, _ = _baseline_from(folder, plane, (0, 1, 2))
        assert clean.state.prior is None and clean.caveats == ()
        late, grid = _baseline_from(folder, plane, frames)
        assert late.state.prior is not None, plane
        if frames[0] == frames[-1]:
            assert late.grown_mm2 < GROWN_MIN_MM2  # the bolus alone says cement was there
        mask, values = late.state.prior
        # a bolus, not a speck: about 70-110 mm2; the volume said, read from the log units this
        # room thins, about 0.2 mL of the 1.46 in (the level's volume leans on its shape here),
        # counts the cement behind the steel that each frame's values leave to be filled in
        assert mask.sum() * grid.pixel_mm**2 > 50
        (said,) = [c.detail for c in late.caveats if "already there" in c.detail]
        found_ml = float(re.search(r"about (\d+\.\d) mL", said).group(1))
        seen_ml = float(values.sum()) * grid.pixel_mm**2 / (0.25 * 1000)
        assert 0.1 < found_ml < truth["frames"][14]["injected_ml"], (plane, said)
        assert found_ml >= round(seen_ml, 1), (found_ml, seen_ml)
        if plane == "lateral":
            assert clean.wall_confidence.armed
            assert isinstance(late.body, LateralBody), late.anatomy_error
            assert not late.wall_confidence.armed
            assert any("already holding cement" in why for why in late.wall_confidence.reasons)
        # the same baselines with the scale guessed: the faint bolus is not looked for
        for learnt in (clean, late):
            state = learnt.state
            args = (learnt.cannulas, learnt.roi[:2], grid.pixel_mm, 0.25)
            assert find_cement_in_baseline(state.attenuation, state.exclude, *args, units_known=False) is None


def test_a_volume_the_darkness_reads_low_is_the_shapes_with_its_interval_in_the_audit(tmp_path, low_darkness):
    """Scatter 1.5x the primary with no grid, and a polychromatic beam: the image's darkness
    reads the cement at about a third of what went in, under the cement's shape in the two
    views. The volume is then the shape's, nearer the truth, and the logged session's audit
    gives it with its 68 % interval and where it came from, in JSON (per level and per
    instant), text and HTML."""
    from monitor.io.sources import DicomPairSource
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions
    from tests.conftest import monitor_cli

    folder, truth = low_darkness
    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    spec = RunSpec(str(tmp_path / "s"), "L3", endpoints=Endpoints.private())
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) == 0
    source.close()
    (level,) = json.loads(monitor_cli("audit", tmp_path / "s", "--json").stdout)["levels"]
    injected = truth["frames"][-1]["injected_ml"]
    assert level["volume_from"] == "shape"
    assert any("volume-below-shape" in c["status"] for c in level["caveats"])
    # from 0.5 mL of the shape's truth the level's own median share is said as well (on later
    # results than the audit's first of the kind, which since session 60 comes earlier: a
    # darkness at 0.70 of a smaller shape's truth reads low too)
    from monitor.io.store import SessionStore

    store = SessionStore.open(tmp_path / "s")
    statuses = [r["status"] for r in store.results()]
    store.close()
    assert any(re.search(r"over this level's last results, a median 0\.[0-5]\d of it", s) for s in statuses)
    assert level["volume_low_ml"] <= level["volume_ml"] <= level["volume_high_ml"]
    # the darkness alone read 0.71 mL of 2.13 (0.33x); the shape's volume, its outline read through
    # the shaft's band (a third of it in each view here), 2.20, and its interval holds the truth
    assert abs(level["volume_ml"] - injected) < 0.15 * injected
    assert level["volume_low_ml"] <= injected <= level["volume_high_ml"]
    last = [f for f in level["frames"] if f["volume_ml"] is not None][-1]
    assert (last["volume_low_ml"], last["volume_high_ml"]) == (
        level["volume_low_ml"],
        level["volume_high_ml"],
    )
    said = f"{level['volume_ml']:.2f} mL ({level['volume_low_ml']:.2f}-{level['volume_high_ml']:.2f})"
    assert f"volume {said} from the cement's shape" in monitor_cli("audit", tmp_path / "s").stdout
    assert monitor_cli("audit", tmp_path / "s", "--html", tmp_path / "a.html").returncode == 0
    html = (tmp_path / "a.html").read_text()
    assert f"{said} from the cement&#x27;s shape" in html
    assert "<polygon class='interval'" in html and "shaded: its 68 % interval" in html  # the chart's band
    # how the volume was read, said where QA reads it: the darkness refused against the shape
    assert [e["event"] for e in level["volume_events"]] == ["darkness-reads-low"]
    assert "<h3>Volume: the darkness against the shape" in html and "reads the cement low" in html
    # the level's darkness reading low is logged once, and an analyzer restarted on the log keeps it
    from monitor.analyzer import VisionAnalysis
    from monitor.vision.biplane import LEVEL_DARKNESS_AGREES_WITH_SHAPE

    store = SessionStore.open(tmp_path / "s")
    said = [r.body for r in store.records("event") if r.body["event"] == "darkness-reads-low"]
    assert len(said) == 1 and said[0]["value"]["median_share"] < LEVEL_DARKNESS_AGREES_WITH_SHAPE, said
    restarted = VisionAnalysis(level="L3")
    assert not restarted.case.darkness_low
    restarted.restore(store, store.records("frame")[-1].body["stream"])
    store.close()
    assert restarted.case.darkness_low


def test_once_the_syringe_calibrates_the_volume_is_the_darkness_scaled_not_the_shape(low_darkness):
    """The shape's correction and the syringe's both answer the darkness reading low; applied
    together they would count the under-read twice. Before the operator enters 1 mL the volume
    is the shape's; from then on it is the syringe's 1 mL at that frame plus the growth since
    (here read from the shape: this room's darkness bends), on the syringe's scale, and the
    results no longer say the volume is the shape's."""
    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource
    from monitor.messages import Command
    from monitor.vision.caveats import CaveatCode

    folder, _ = low_darkness
    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    analysis = VisionAnalysis()
    results = []
    for item, result in analyse_source(source, analysis):
        results.append((item.index, result))
        if (item.plane, item.index) == ("ap", 17):
            analysis.apply(Command("offline", "test", 0.0, "syringe", 1.0))
    source.close()
    before = [r for i, r in results if i == 17 and r.plane == "ap"][0]
    assert CaveatCode.VOLUME_BELOW_SHAPE in before.caveat_codes() and before.volume_scale == 1.0
    after = [r for i, r in results if i >= 18]
    assert all(CaveatCode.VOLUME_BELOW_SHAPE not in r.caveat_codes() for r in after)
    assert after[0].volume_scale > 1.0
    # the darkness scaled to the syringe's 1 mL, growing on from there, not the shape scaled again
    assert 0.9 < after[0].volume_ml < 1.3 and after[-1].volume_ml < 2.0
    assert after[-1].volume_low_ml < after[-1].volume_ml < after[-1].volume_high_ml


def test_images_that_lose_the_cement_do_not_take_the_volume_away(low_darkness):
    """Cement does not go away. Two frames in which both views show no cement (the first frame's
    images again: a grabber's stale buffer, an exposure that washed the cement out) read about
    no volume; the volume said holds the level's largest with its interval, and says so
    (volume-held), until the images read the cement again."""
    from dataclasses import replace as replaced

    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource
    from monitor.vision.caveats import CaveatCode

    folder, truth = low_darkness
    injected = [f["injected_ml"] for f in truth["frames"]]

    class Lost:  # the images of frames 18 and 19 are each view's first, without cement
        def __init__(self, source):
            self.source, self.formats, self.first = source, source.formats, {}

        def frames(self):
            for item in self.source.frames():
                self.first.setdefault(item.plane, item.pixels)
                yield replaced(item, pixels=self.first[item.plane]) if item.index in (18, 19) else item

    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    analysis = VisionAnalysis()
    results = {}
    for item, result in analyse_source(Lost(source), analysis):
        volume = analysis.last_volume
        results[item.index, item.plane] = (result, None if volume is None else volume.darkness_ml)
    source.close()
    before, _ = results[17, "ap"]
    for plane in ("lateral", "ap"):
        held, darkness = results[19, plane]
        assert darkness < 0.1 < 1.0 < injected[19]  # the images read about none
        assert CaveatCode.VOLUME_HELD in held.caveat_codes()
        assert (
            held.volume_ml >= before.volume_ml and held.volume_low_ml < held.volume_ml < held.volume_high_ml
        )
    after, _ = results[21, "ap"]
    assert CaveatCode.VOLUME_HELD not in after.caveat_codes() and after.volume_ml > before.volume_ml
    assert abs(after.volume_ml - injected[21]) < 0.15 * injected[21]


def test_syringes_entered_as_they_empty_grow_by_the_shape_where_the_darkness_reads_low(low_darkness):
    """Where the darkness reads low its growth is sublinear (the beam hardens as the bolus
    thickens): after the first syringe, growth read linearly from the darkness under-reads the
    volume, and the curve the level's shapes show (darkness ~ volume ** p, p under 1 here)
    corrects only part of it. The growth since the syringe is read from the shape instead: with
    the first 1 mL entered as it is emptied, the volume is that 1 mL plus what the shape's truth
    grew since, and the end (2.1 mL) reads nearer the truth than either darkness reading, within
    6 % of it, its interval holding it. The syringe's entry logs the shape it was anchored on."""
    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource
    from monitor.messages import Command
    from monitor.vision.biplane import syringe_anchored_volume
    from monitor.vision.caveats import CaveatCode

    folder, truth = low_darkness
    injected = [f["injected_ml"] for f in truth["frames"]]
    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    analysis = VisionAnalysis()
    entered, at_entry, last, said = 0, None, None, set()
    for item, result in analyse_source(source, analysis):
        # the operator enters the first 1 mL syringe as it is emptied
        if item.plane == "ap" and not entered and injected[item.index] >= 1.0:
            entered, at_entry = item.index, analysis.last_volume.shape_ml
            analysis.apply(Command("offline", "test", 0.0, "syringe", 1.0))
        elif entered:
            said |= result.caveat_codes()
        last = result
    source.close()
    # the darkness, on the syringe's scale now, is not compared with the shape's volume said before
    assert CaveatCode.VOLUME_HELD not in said and CaveatCode.VOLUME_BELOW_SHAPE not in said, said
    assert entered and injected[entered] < 1.2 and injected[-1] > 2.0
    (entry,) = [n for n in analysis.news() if n[0] == "syringe-entry"]
    assert at_entry is not None and entry[3]["shape_ml"] == pytest.approx(at_entry, abs=1e-6)
    assert entry[1].endswith(
        "the volume grows from here as the cement's shape does (this level's darkness reads low,"
        " and its shapes show it bending or no curve yet)"
    ), entry[1]
    now = analysis.last_volume
    assert last.volume_ml == pytest.approx(1.0 + now.shape_ml - at_entry, abs=1e-3)
    # the darkness's readings of the same growth: linear, and on the curve the shapes show
    p = analysis.case.shape_darkness_exponent()
    assert p is not None and 0.4 <= p < 0.9, p
    linear = syringe_anchored_volume(now.darkness_ml, analysis._pairs).volume_ml
    curved = syringe_anchored_volume(now.darkness_ml, analysis._pairs, shape_exponent=p).volume_ml
    error = abs(last.volume_ml - injected[-1])
    assert error < abs(curved - injected[-1]) < abs(linear - injected[-1]), (last.volume_ml, curved, linear)
    assert error < 0.06 * injected[-1], (last.volume_ml, injected[-1])
    assert last.volume_low_ml <= injected[-1] <= last.volume_high_ml


def test_each_syringe_anchors_the_shapes_growth_and_two_show_its_scale(low_darkness):
    """Half-millilitre syringes entered as they empty from 1 mL on (1, 1.5, 2 mL): each entry
    chooses the shape's growth here (the darkness reads low and bends) and anchors on the shape
    read then; from the second on, the growth since the last one is scaled by what the syringes
    delivered per mL the shape grew between them, over all of them: the volume said is the last
    total plus that scaled growth, its interval holding it."""
    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource
    from monitor.messages import Command
    from monitor.vision.biplane import shape_growth_rate

    folder, truth = low_darkness
    injected = [f["injected_ml"] for f in truth["frames"]]
    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    analysis = VisionAnalysis()
    total, last = 0.0, None
    for item, result in analyse_source(source, analysis):
        if item.plane == "ap" and injected[item.index] >= max(1.0, total + 0.5):
            analysis.apply(Command("offline", "test", 0.0, "syringe", 1.0 if total == 0 else 0.5))
            total = 1.0 if total == 0 else total + 0.5
        last = result
    source.close()
    entries = [n[3] for n in analysis.news() if n[0] == "syringe-entry"]
    assert [e["syringe_ml"] for e in entries] == [1.0, 1.5, 2.0]
    assert [e["growth"] for e in entries] == ["shape"] * 3
    anchors = analysis._shape_anchors
    assert [a for a, _ in anchors] == pytest.approx([e["shape_ml"] for e in entries], abs=1e-6)
    rate = shape_growth_rate(anchors)
    assert rate != 1.0
    now = analysis.last_volume.shape_ml
    assert last.volume_ml == pytest.approx(2.0 + rate * max(0.0, now - anchors[-1][0]), abs=1e-3)
    assert last.volume_low_ml <= last.volume_ml <= last.volume_high_ml


def _first_syringe_run(low_darkness, ap_pixels):
    """The low-darkness case with each AP frame's pixels passed through ``ap_pixels(index, pixels,
    first)`` (``first`` the first AP frame's), the operator entering 1 mL as the first syringe
    empties: (the analysis, the frame it was entered on, {(index, plane): (result, the shape's
    truth, the largest since the entry, the volume the darkness's growth gives)} after it)."""
    from dataclasses import replace as replaced

    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource
    from monitor.messages import Command
    from monitor.vision.biplane import syringe_anchored_volume

    folder, truth = low_darkness
    injected = [f["injected_ml"] for f in truth["frames"]]

    class Edited:
        def __init__(self, source):
            self.source, self.formats, self.first = source, source.formats, None

        def frames(self):
            for item in self.source.frames():
                if item.plane == "ap":
                    self.first = item.pixels if self.first is None else self.first
                    item = replaced(item, pixels=ap_pixels(item.index, item.pixels, self.first))
                yield item

    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    analysis, entered, seen = VisionAnalysis(), 0, {}
    for item, result in analyse_source(Edited(source), analysis):
        if item.plane == "ap" and not entered and injected[item.index] >= 1.0:
            entered = item.index
            analysis.apply(Command("offline", "test", 0.0, "syringe", 1.0))
        elif entered:
            now = analysis.last_volume
            darkness = syringe_anchored_volume(
                now.darkness_ml,
                analysis._pairs,
                analysis.volume_scale,
                analysis.case.shape_darkness_exponent(),
            ).volume_ml
            seen[item.index, item.plane] = (result, now.shape_ml, analysis._shape_top, darkness)
    source.close()
    return analysis, entered, seen


def test_an_outline_losing_cement_after_a_syringe_reads_the_darkness_growth_on_those_frames(low_darkness):
    """After the first 1 mL syringe, whose growth is read from the shape here, the AP view's
    frames 18 and 19 lose the lower part of the bolus (their rows from 53 % down are the first
    frame's: a grabber's stale buffer, an exposure washing it out). The shape then reads well
    under the largest read since the syringe, though not under its reading at the syringe:
    cement does not go away, so on those frames the growth is the darkness's, and the shape's
    again once the outline is whole."""
    from monitor.vision.biplane import SYRINGE_SHAPE_FALL_SHARE

    def cut(index, pixels, first):  # AP frames 18 and 19: rows from 53 % down are the first's
        if index not in (18, 19):
            return pixels
        pixels, row = pixels.copy(), int(0.53 * pixels.shape[0])
        pixels[row:] = first[row:]
        return pixels

    analysis, _, seen = _first_syringe_run(low_darkness, cut)
    (then, _), keep = analysis._shape_anchors[0], 1.0 - SYRINGE_SHAPE_FALL_SHARE
    assert analysis._growth_from_shape
    result, shape, top, darkness = seen[18, "ap"]
    # the cut outline reads under the largest since the syringe, not under its reading then
    assert keep * then <= shape < keep * top, (shape, then, top)
    assert result.volume_ml == pytest.approx(darkness, abs=1e-3) and result.volume_ml >= 1.0
    result, shape, _, _ = seen[21, "ap"]  # whole again: the shape's growth
    assert result.volume_ml == pytest.approx(1.0 + shape - then, abs=1e-3)


def test_one_views_shape_never_reads_a_syringes_growth(low_darkness):
    """One view's shape reads the truth on its own scale (x0.78-1.30 of it, per case), not the two
    views': a syringe's growth is never read from it. The AP view goes blank (a grabber losing
    its signal) either after the first syringe, from frame 14: once it has been unread for
    ONE_VIEW_AFTER_UNREADABLE frames the growth is the darkness's; or before it, from frame 6:
    the syringe is anchored on no shape, and the growth it chooses is the darkness's."""
    from monitor.vision.analysis import ONE_VIEW_AFTER_UNREADABLE

    def run(start):
        def blank(index, pixels, _first):  # the AP view white from ``start`` on
            return np.full_like(pixels, pixels.max()) if index >= start else pixels

        analysis, entered, seen = _first_syringe_run(low_darkness, blank)
        (entry,) = [n[3] for n in analysis.news() if n[0] == "syringe-entry"]
        return entered, entry, {i: v for (i, plane), v in seen.items() if plane == "ap"}

    entered, entry, seen = run(14)
    assert entered < 14 and entry["growth"] == "shape"
    unread = [i for i in seen if i >= 14 + ONE_VIEW_AFTER_UNREADABLE - 1]
    assert unread and all(seen[i][1] is None for i in unread)  # no shape once one view is left
    assert all(seen[i][0].volume_ml == pytest.approx(seen[i][3], abs=1e-3) for i in unread)
    entered, entry, seen = run(6)
    assert entered > 6 + ONE_VIEW_AFTER_UNREADABLE and (entry["shape_ml"], entry["growth"]) == (
        None,
        "darkness",
    )
    assert all(
        result.volume_ml == pytest.approx(darkness, abs=1e-3) for result, _, _, darkness in seen.values()
    )


def test_brightness_clipping_the_ap_view_white_neither_loses_the_cement_nor_passes_silently(tmp_path):
    """8-bit video windowed on the first frame, and the exposure rising as the cement grows
    (brightness control): the AP view clips white over ever more of the region (5 % at the
    start, 77 % by frame 24, 92 % at the end; a realistic benchmark case went from 7 to 71 %).
    Before clipped pixels were left out, the cement vanished from the AP view at 77 % and the
    level's volume fell from 1.4 to 0.08 mL of 1.8 injected. Now the volume holds, every
    result says how much is clipped, and once too little is left to read (over 80 %) the view
    is skipped, said as such, with no rule counted as checked there, and its volume held."""
    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource
    from monitor.vision.analysis import ONE_VIEW_AFTER_UNREADABLE
    from monitor.vision.biplane import one_view_volume_ml, shape_of_truth

    world = World(kvp=80, scatter_to_primary=0.5, video=True, tags=False)
    case = tmp_path / "case"
    truth = simulate(
        _small(world, scenario="none", size=192, frames=30, bits=8, intensity="LOG", compression="none"), case
    )
    bright = tmp_path / "bright"
    bright.mkdir()
    (bright / "lateral.dcm").write_bytes((case / "lateral.dcm").read_bytes())
    ds = pydicom.dcmread(case / "ap.dcm")
    gain = np.clip(np.arange(ds.NumberOfFrames) - 5, 0, None) * 7  # +7 levels a frame from frame 6
    frames = np.clip(ds.pixel_array.astype(int) + gain[:, None, None], 0, 255).astype(np.uint8)
    ds.PixelData = frames.tobytes()
    ds.save_as(bright / "ap.dcm")
    clipped = [float((f == 255).mean()) for f in frames]
    assert clipped[0] < 0.1 and clipped[24] > 0.7 and clipped[-1] > 0.85

    def ap_results(folder, analysis=None):
        source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
        results = {
            item.index: result for item, result in analyse_source(source, analysis) if item.plane == "ap"
        }
        source.close()
        return results

    analysis = VisionAnalysis()
    unclipped, ap = ap_results(case), ap_results(bright, analysis)
    injected = {f["frame"]: f["injected_ml"] for f in truth["frames"]}
    said = {index: {c["code"] for c in result.caveats or []} for index, result in ap.items()}
    read = [i for i in ap if "image-clipped" in said[i]]  # partly clipped, read
    skipped = [i for i in ap if "saturated-frame" in said[i]]  # too clipped to read
    assert read and skipped and max(read) < min(skipped) and skipped[-1] == max(ap)
    for index, result in ap.items():
        if injected[index] >= 0.5:  # the level's volume never collapses (0.08 mL for 1.82 before)
            assert result.volume_ml >= 0.3 * injected[index], (index, result.volume_ml)
        if clipped[index] < 0.05:
            assert not said[index] & {"image-clipped", "saturated-frame"}
        if index in read:  # the view's own reading as if nothing were clipped (0 from 77 % before)
            assert result.checks == ["leak"]
            assert result.plane_volume_ml >= 0.8 * unclipped[index].plane_volume_ml, index
        if index in skipped:  # nothing counted as checked there, the view's volume not read
            assert result.checks == [] and result.plane_volume_ml is None
        assert not result.alarms  # no leak, no proximity in this case, and none read from the clipping
    # The AP unread for its last frames running: the cement's shape is the lateral view's alone
    # (each slice round), not the AP's last outline, which the cement has outgrown.
    lateral, ap_view = (analysis.case.planes[p] for p in ("lateral", "ap"))
    assert ap_view.unreadable_frames == len(ap) - 1 - max(read) >= ONE_VIEW_AFTER_UNREADABLE
    assert lateral.unreadable_frames == 0
    alone = one_view_volume_ml(lateral.shape_mask, lateral.pixel_mm, "lateral")
    assert lateral.cement_apart_ml == 0.0  # one bolus, nothing apart from it to add
    assert analysis.last_volume.shape_ml == pytest.approx(alone / shape_of_truth(alone)[1])
    assert "volume-one-view" in said[max(ap)] and "volume-one-view" not in said[max(read)]


def test_a_view_clipped_past_registering_takes_the_breathing_the_other_view_registers(tmp_path, monkeypatch):
    """Brightness control clips the AP view white over 59 % of the frame (8-bit video windowed
    on the first frame), until too little of its region is left to register on, while the
    patient goes on breathing 3 mm. Keeping the AP's last shift left it 0.96 mm off the breath
    at worst (tuning 5001 and 5029 up to 1.6 and 1.9 mm). The two views' breathing having moved
    alike before, the AP now adds the lateral's breathing since it last registered, stays
    within 0.4 mm, and says so. Stored upside down, its breathing moved against the lateral's:
    nothing is taken (taking it read up to 2.1 mm off on 5001 so flipped), the last shift is
    kept, and that is said."""
    from monitor.accuracy import registration_error_mm
    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource
    from monitor.vision.analysis import CaseAnalyzer

    world = World(kvp=80, scatter_to_primary=0.5, video=True, tags=False)
    case = tmp_path / "case"
    config = _small(world, scenario="none", size=192, frames=30, bits=8, intensity="LOG", compression="none")
    truth = simulate(replace(config, breathing_mm=3.0), case)
    ds = pydicom.dcmread(case / "ap.dcm")
    gain = np.clip(np.arange(ds.NumberOfFrames) - 5, 0, 12) * 7  # +7 levels a frame from frame 6, to 84
    brightened = np.clip(ds.pixel_array.astype(int) + gain[:, None, None], 0, 255).astype(np.uint8)
    ds.PixelData = brightened.tobytes()
    ds.save_as(case / "ap.dcm")
    flipped = tmp_path / "flipped"  # the AP stored upside down, the lateral as it is
    flipped.mkdir()
    (flipped / "lateral.dcm").write_bytes((case / "lateral.dcm").read_bytes())
    ds.PixelData = np.ascontiguousarray(brightened[:, ::-1, :]).tobytes()
    ds.save_as(flipped / "ap.dcm")

    def ap_run(folder) -> tuple[list[float], int, list[str]]:
        """The AP's registration errors (mm), its frames held since it last registered itself,
        and each AP result's image-clipped words."""
        source, registered, said = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm"), {}, []
        analysis = VisionAnalysis()
        for item, result in analyse_source(source, analysis):
            moved = (result.overlay or {}).get("shift_px")
            if moved is not None and result.status != "baseline":
                registered[(item.plane, item.index)] = tuple(moved)
            if item.plane == "ap":
                said.append(
                    " ".join(c["detail"] for c in result.caveats or [] if c["code"] == "image-clipped")
                )
        source.close()
        last_registered = analysis.case.planes["ap"].breathing_registered[0]  # by the AP view itself
        held = max(i for p, i in registered if p == "ap") - last_registered
        return registration_error_mm(truth, registered)["ap"], held, said

    errors, held, said = ap_run(case)
    assert held >= 10 and max(errors) < 0.4, (held, errors)
    assert sum("the other view's is used" in words for words in said) == held
    _, held_flipped, said = ap_run(flipped)
    assert (
        held_flipped >= 10
        and sum("the last frame's shift is kept" in words for words in said) == held_flipped
    )
    monkeypatch.setattr(CaseAnalyzer, "_breathing_elsewhere", lambda self, plane, frame, time_s: None)
    kept, _, said = ap_run(case)  # the last shift kept, as before
    assert max(kept) > 0.8, kept
    assert sum("the last frame's shift is kept" in words for words in said) == held


def test_a_round_intensifier_field_is_found_by_its_edge_through_glare(tmp_path):
    """Behind an intensifier's round collimator only veiling glare and scatter arrive: not the
    near-black the exposed field was looked for as, so the field's edge passed for bright
    tissue all round and its ring outshone the shaft (no cannula on 2 of 10 tuning intensifier
    cases). The circle is found (centre and radius within 2 % of the image of the render's),
    the shaft inside it, and no circle on a flat panel's open field."""
    from monitor.io.dicom import open_recording
    from monitor.vision.anatomy import exposed_field, find_cannula, round_field
    from monitor.vision.intensity import model_for

    def first_frame(folder):
        with open_recording(folder / "lateral.dcm") as rec:
            info, pixels = rec.info, rec.frame(0)
        model = model_for(info.photometric, info.intensity_relationship, info.bits_stored, [pixels])
        return model.attenuation(pixels).astype(np.float32), info.spacing_at_vertebra_mm()[1]

    glare = World(detector="intensifier", glare_fraction=0.2, glare_kernel_mm=60.0, vignetting=0.3)
    truth = simulate(_small(glare, size=256, frames=6, field="round"), tmp_path / "ii")
    att, pixel_mm = first_frame(tmp_path / "ii")
    n = att.shape[0]
    centre, radius = (n - 1) / 2, 0.48 * n  # monitor.sim.simulate._field_masks
    circle = round_field(att)
    assert circle is not None
    assert max(abs(circle[0] - centre), abs(circle[1] - centre), abs(circle[2] - radius)) < 0.02 * n, circle
    field = exposed_field(att)
    assert not field[0, 0] and not field[-1, -1] and field[n // 2, n // 2]
    tip = np.asarray(truth["cannulas"][0]["tip_px"]["lateral"])
    found = find_cannula(att, pixel_mm)
    assert np.hypot(*(np.asarray(found.tip) - tip)) * pixel_mm < 2.0, (found.tip, tip)

    simulate(_small(World(), size=256, frames=6, field="open"), tmp_path / "fp")
    assert round_field(first_frame(tmp_path / "fp")[0]) is None


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_the_analyzer_reads_the_c_arms_temporal_filter_and_says_it_undoes_it(tmp_path, weight):
    """A realistic render through a recursive filter of ``weight`` (and one without): the
    analyzer reads the weight from the noise before any cement and, for a filter, logs once
    that it undoes it; an unfiltered stream is left alone and nothing is said."""
    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource

    world = World(kvp=80, scatter_to_primary=0.8, recursive_weight=weight)
    folder = tmp_path / "filtered"
    # 48 frames: the injection starts at the seventh, after four frame differences to read w on
    simulate(_small(world, scenario="none", size=192, frames=48, intensity="LIN", bits=14), folder)
    analysis = VisionAnalysis()
    news = []
    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    for _item, _result in analyse_source(source, analysis):
        news += analysis.news()
    for plane in ("lateral", "ap"):
        read = analysis.case.planes[plane].recursive.weight
        assert read is not None and read == pytest.approx(weight, abs=0.12), (plane, read)
    said = [(event, plane, value) for event, _detail, plane, value in news if event == "temporal-filter"]
    if weight:
        assert sorted(plane for _, plane, _ in said) == ["ap", "lateral"]
        for _, _, value in said:
            assert value["undone"] and value["weight"] == pytest.approx(weight, abs=0.12)
    else:
        assert said == []


def test_the_filters_undoing_is_in_the_session_log_the_audit_and_survives_a_restart(tmp_path):
    """Through the real pipeline into a session log: the audit lists the undoing per view, and
    an analyzer restarted on the log (whose frames after the baseline are cement, never still
    again) takes the weight logged, not nothing."""
    from monitor.analyzer import VisionAnalysis
    from monitor.audit import audit_json
    from monitor.io.sources import DicomPairSource
    from monitor.io.store import SessionStore
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions

    world = World(kvp=80, scatter_to_primary=0.8, recursive_weight=0.5)
    folder = tmp_path / "filtered"
    simulate(_small(world, scenario="none", size=192, frames=48, intensity="LIN", bits=14), folder)
    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    spec = RunSpec(str(tmp_path / "s"), "L1", endpoints=Endpoints.private())
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) == 0
    source.close()
    store = SessionStore.open(tmp_path / "s")
    (level,) = audit_json(store)["levels"]
    said = {e["plane"]: e["value"] for e in level["processing"]}
    assert sorted(said) == ["ap", "lateral"] and all(v["undone"] for v in said.values())
    restarted = VisionAnalysis(level="L1")
    restarted.restore(store, store.records("frame")[-1].body["stream"])
    for plane, value in said.items():
        assert restarted.case.planes[plane].recursive.weight == value["weight"]
    assert restarted.news() == []  # said before the restart, not again


def test_the_tip_is_followed_into_bone_where_a_real_ct_dims_the_steel(tmp_path):
    """On DRRs of a real CT with a polychromatic beam and scatter, the steel's log contrast over
    its flanks falls gradually, to a third or less, from soft tissue to the tip in bone; and the
    ridge found near the field's edge gives an axis that walks off a long shaft. Judged against
    the shaft's level over soft tissue, the tip was put 6.7 mm short here (tuning seed 5013's
    room and anatomy at 256 pixels; on the 36 tuning cases, 15 of 72 tips were over 3 mm off,
    up to 49 mm). Followed on its own local level, the axis refitted, it is within 1.5 mm in
    both views."""
    from monitor.io.dicom import open_recording
    from monitor.vision.anatomy import find_cannulas
    from monitor.vision.intensity import model_for

    _ct_or_skip()
    world = World(
        kvp=80.0, al_mm=2.7, cu_mm=0.1, opacifier="BaSO4", opacifier_fraction=0.187,
        scatter_to_primary=1.359, scatter_kernel_mm=68.3, grid=False, abc=True, abc_gain=0.75,
        abc_max_output=1.15, recursive_weight=0.58, edge_gain=0.49, edge_sigma_mm=2.97,
    )  # fmt: skip
    cfg = SimConfig(
        seed=5013, scenario="venous", level="T12", size=256, frames=6, fps=7.5, side="left",
        fracture="none", noise="low", breathing_mm=3.0, intensity="LOG", photometric="MONOCHROME1",
        bits=14, field="shutters", anatomy="ct", world=world,
    )  # fmt: skip
    truth = simulate(cfg, tmp_path / "ct")
    for plane in ("lateral", "ap"):
        with open_recording(tmp_path / "ct" / f"{plane}.dcm") as rec:
            info, frames = rec.info, [rec.frame(i) for i in range(3)]
        model = model_for(info.photometric, info.intensity_relationship, info.bits_stored, frames)
        pixel_mm = info.spacing_at_vertebra_mm()[1]
        found = find_cannulas(model.attenuation(frames[0]), pixel_mm)
        x, y = truth["cannulas"][0]["tip_px"][plane]
        error_mm = min(np.hypot(c.tip[0] - x, c.tip[1] - y) for c in found) * pixel_mm
        assert error_mm < 1.5, f"{plane}: tip {error_mm:.1f} mm from the truth"


def test_a_shaft_standing_out_only_at_the_fields_edge_is_found_to_its_tip(tmp_path, monkeypatch):
    """Extra tuning seed 5128 (72 kVp, scatter-to-primary 2.1 with no grid, brightness control),
    first 6 frames at 512 pixels. The lateral shaft's ridge stands out only over the thin tissue
    at the field's edge, about 11 mm of it, and breaks where it enters thick tissue: taken alone
    its end was the tip, 53 mm short of the real one, and the rest of the shaft, left in the
    image, read as cement (the view then read no lobes and its endplates from the shaft's edges,
    and the case's disc leak went unalarmed). A shaft seen so short is looked for again joined
    along its line, and the same shaft reaching further in is taken: the tip within 1.5 mm."""
    from monitor.accuracy import world_configs
    from monitor.io.dicom import open_recording
    from monitor.vision.anatomy import _find_cannula, find_cannulas
    from monitor.vision.intensity import model_for

    truth = simulate(replace(world_configs([5128])[0], frames=6, size=512), tmp_path / "case")
    with open_recording(tmp_path / "case" / "lateral.dcm") as rec:
        info, pixels = rec.info, rec.frame(0)
    att = model_for(info.photometric, info.intensity_relationship, info.bits_stored, [pixels]).attenuation(
        pixels
    )
    att = att.astype(np.float32)
    pixel_mm = info.spacing_at_vertebra_mm()[1]
    tip = np.asarray(truth["cannulas"][0]["tip_px"]["lateral"], float)

    def off_mm(cannula) -> float:
        return float(np.hypot(*(np.asarray(cannula.tip) - tip))) * pixel_mm

    short = _find_cannula(att, pixel_mm, bridged=False)  # the ridge alone: the case as it was
    assert short.length_px * pixel_mm < 20.0 and off_mm(short) > 40.0, (short.length_px, off_mm(short))
    found = find_cannulas(att, pixel_mm)[0]
    assert off_mm(found) < 1.5 and found.length_px * pixel_mm > 50.0, (off_mm(found), found.length_px)
    # each guard of "the same shaft" is applied: here the joined shaft lies 4 degrees off, its axis
    # 0.3 mm from the first tip, its tip 53 mm further in; a guard tighter than that keeps the first
    import monitor.vision.anatomy as anatomy

    for guard, tighter in (("SHORT_SHAFT_AGREE_DEG", 3.0), ("SHORT_SHAFT_OFF_AXIS_MM", 0.2),
                           ("SHORT_SHAFT_FURTHER_MM", 60.0), ("SHORT_SHAFT_MM", 10.0)):  # fmt: skip
        monkeypatch.setattr(anatomy, guard, tighter)
        assert off_mm(find_cannulas(att, pixel_mm)[0]) > 40.0, guard
        monkeypatch.undo()


def test_a_shaft_faded_over_dense_bone_is_still_found(tuning_5014):
    """Tuning seed 5014 as the benchmark renders it (CT, T10, 768 pixels, 48 frames): where the
    lateral shaft crosses the dense posterior elements its top-hat falls to about a fifth of its
    peak for 25 mm. On the ridge alone the inner part is a short flat line ending inside the
    field, refused as an endplate, and the stretch at the field's edge ends at the image: no
    cannula, and nothing in that view was read. With the ridge joined along the line where no
    cannula is found without it, the tip is found 0.2 mm from the truth."""
    from monitor.io.dicom import open_recording
    from monitor.vision.anatomy import find_cannulas
    from monitor.vision.intensity import model_for

    folder, truth = tuning_5014
    with open_recording(folder / "lateral.dcm") as rec:
        info, frames = rec.info, [rec.frame(i) for i in range(3)]
    model = model_for(info.photometric, info.intensity_relationship, info.bits_stored, frames)
    pixel_mm = info.spacing_at_vertebra_mm()[1]
    found = find_cannulas(model.attenuation(frames[0]), pixel_mm)
    x, y = truth["cannulas"][0]["tip_px"]["lateral"]
    error_mm = float(np.hypot(found[0].tip[0] - x, found[0].tip[1] - y)) * pixel_mm
    assert error_mm < 1.5, f"tip {error_mm:.1f} mm from the truth"


def test_a_faint_posterior_leak_along_the_needle_track_alarms_within_two_frames(tmp_path):
    """Tuning seed 5012's room (a faint BaSO4 cement at 18.5 %, scatter 1.3 times the primary, no
    grid) at 512 pixels: cement leaves the body back along the cannula from frame 32, under the
    steel, where it adds about 0.1 log units on the shaft's axis. Judged against a fixed 0.25
    and joined to the tip's cement, it was first alarmed at frame 38, when enough had spread
    beside the steel; against the lumen's own cement (the room's own sample of its contrast) it
    alarms at frame 34, and as a posterior leak."""
    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource

    world = World(
        kvp=82.0, al_mm=3.2, cu_mm=0.0, opacifier="BaSO4", opacifier_fraction=0.185,
        scatter_to_primary=1.309, scatter_kernel_mm=77.7, grid=False, abc=False, recursive_weight=0.4,
        edge_gain=0.53, edge_sigma_mm=1.6, video=True, video_window=(0.039, 0.905), video_headroom=0.091,
    )  # fmt: skip
    cfg = SimConfig(
        seed=5012, scenario="posterior", level="L2", size=512, frames=48, fps=25.0, side="right",
        fracture="wedge", noise="normal", breathing_mm=0.0, intensity="LOG", photometric="MONOCHROME2",
        bits=8, compression="jpegls", world=world,
    )  # fmt: skip
    truth = simulate(cfg, tmp_path / "case")
    onset = truth["leak"]["onset_frame"]
    source = DicomPairSource(tmp_path / "case" / "lateral.dcm", tmp_path / "case" / "ap.dcm")
    leaks = []
    try:
        for _item, result in analyse_source(source, VisionAnalysis()):
            leaks += [a for a in result.alarms if a["kind"] == "extravasation" and a["priority"] == "high"]
    finally:
        source.close()
    assert truth["leak"]["site"] == "posterior" and onset == 32
    assert leaks, "the leak was never alarmed"
    assert leaks[0]["site"] == "posterior" and leaks[0]["frame"] - onset <= 2, leaks[0]


def test_a_leak_apart_from_the_bolus_alarms_where_no_outline_is_found(tmp_path):
    """Tuning seed 5025 as the benchmark renders it (CT, L1, 512 pixels): no body outline is found in
    either view, so no leak could be read against one, and its venous leak (from frame 39) went
    unalarmed. In the lateral view the vein's cement shows as a streak apart from the bolus, 30
    mm behind the tip: alarmed high as venous within 2 frames of the onset, saying how it was
    read, and nothing is alarmed before any cement has left; the same with the wall drawn.
    Watched from frame 20 on, with 1.3 mL already in its first frames (not found there), new
    cement around that bolus broke into pieces and was read as a posterior leak at frame 36,
    before any cement left: the first bolus read is too wide for its volume, so the rule is off
    for the level, and says so: in the session log, the audit and to an analyzer restarted on
    that log. (Thin lines along that old bolus's edge are then only possible leaks, medium,
    saying why: see monitor.vision.veins.)"""
    from monitor.accuracy import evaluate_case, world_configs
    from monitor.analyzer import VisionAnalysis
    from monitor.audit import audit_json
    from monitor.io.sources import DicomPairSource
    from monitor.io.store import SessionStore
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions

    _ct_or_skip()
    truth = simulate(world_configs([5025])[0], tmp_path / "ct")
    result = evaluate_case(tmp_path / "ct")
    assert set(result["wall"].values()) == {"none"}
    leaks = [a for a in result["alarms"] if a["kind"] == "extravasation" and a["priority"] == "high"]
    assert leaks, "no leak alarmed"
    assert min(a["frame"] for a in leaks) >= truth["leak"]["first_cement_frame"]
    first = leaks[0]
    assert first["frame"] - truth["leak"]["onset_frame"] <= 2, first
    assert (first["plane"], first["site"]) == ("lateral", "venous"), first
    assert "apart from the bolus" in first["reason"], first["reason"]
    # the operator draws the wall the monitor asks for: the outline round it is nominal (no body
    # was found), and the leak read apart from the bolus stays as sure and as early as without it
    # (it was only a possible one, or read later another way, when the outline replaced it)
    drawn = evaluate_case(tmp_path / "ct", operator_wall="always")
    high = [a for a in drawn["alarms"] if a["kind"] == "extravasation" and a["priority"] == "high"]
    assert drawn["operator_wall_frame"] is not None and high, drawn["alarms"]
    assert (high[0]["frame"], high[0]["site"]) == (first["frame"], first["site"]), high[0]
    assert "apart from the bolus" in high[0]["reason"], high[0]["reason"]
    # through the pipeline into a log: an analyzer restarted on it reads on, not deciding again
    # on the bolus grown since (which would look like a late start, and miss the vein)
    spec = RunSpec(str(tmp_path / "n"), "L1", endpoints=Endpoints.private())
    source = DicomPairSource(tmp_path / "ct" / "lateral.dcm", tmp_path / "ct" / "ap.dcm")
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) in (0, 4)
    source.close()
    store = SessionStore.open(tmp_path / "n")
    restarted = VisionAnalysis(level="L1")
    restarted.restore(store, store.records("frame")[-1].body["stream"])
    assert restarted.case.planes["lateral"]._apart is True
    store.close()

    source = DicomPairSource(tmp_path / "ct" / "lateral.dcm", tmp_path / "ct" / "ap.dcm")
    every = source.frames
    source.frames = lambda: (f for f in every() if f.index >= 20)
    spec = RunSpec(str(tmp_path / "s"), "L1", endpoints=Endpoints.private())
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) in (0, 4)
    source.close()
    store = SessionStore.open(tmp_path / "s")
    (level,) = audit_json(store)["levels"]
    early = [a for a in level["alarms"] if a["kind"] == "extravasation" and a["frame"] < 39]
    # no leak before cement left; a line along the old bolus's edge is only a possible one, saying why
    assert all(a["priority"] == "medium" and "grow from its start" in a["reason"] for a in early), early
    assert {e["event"] for e in level["wall"]} == {"apart-off"}, level["wall"]
    off = store.query(
        "SELECT MIN(rec) FROM journal WHERE kind = 'event' AND body LIKE '%apart-off%'"
        " AND json_extract(body, '$.value.plane') = 'lateral'"
    )
    later = store.query(
        "SELECT json_extract(body, '$.checks') FROM journal WHERE kind = 'result' AND plane = 'lateral'"
        " AND rec > ?",
        (off.fetchone()[0],),
    ).fetchall()
    assert later and not any("leak-apart" in (c or "") for (c,) in later)
    restarted = VisionAnalysis(level="L1")
    restarted.restore(store, store.records("frame")[-1].body["stream"])
    assert restarted.case.planes["lateral"]._apart is False
    assert restarted.news() == []  # said before the restart, not again
    store.close()


def test_a_vein_too_faint_to_segment_is_said_as_a_line_within_two_frames(tmp_path):
    """Tuning seed 5031 as the benchmark renders it (geometric L-spine, 1024 pixels, 8-bit video):
    its venous leak (from frame 37) adds so little to each pixel that the vein never entered the
    cement's outline, and it went unalarmed. Read along its length it is a line leaving the
    bolus: alarmed as venous within 2 frames of the onset, saying it was read as a line, and
    nothing is alarmed before cement left. Its first bolus in the lateral view read a little
    wide for its volume (1.08 times the sphere bound: this room's darkness reads the volume
    low), which made the line only a possible leak until the bound allowed 1.15 times (session
    45): now a high alarm (read from the session the pipeline logged). The logged results mark the
    leak as a line, and each view's decision (no "apart-off"), which an analyzer restarted on the
    log takes back."""
    from monitor.accuracy import world_configs
    from monitor.analyzer import VisionAnalysis
    from monitor.audit import audit_json
    from monitor.io.sources import DicomPairSource
    from monitor.io.store import SessionStore
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions

    truth = simulate(world_configs([5031])[0], tmp_path / "case")
    onset = truth["leak"]["onset_frame"]
    spec = RunSpec(str(tmp_path / "session"), "L1", endpoints=Endpoints.private())
    source = DicomPairSource(tmp_path / "case" / "lateral.dcm", tmp_path / "case" / "ap.dcm")
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) in (0, 4)
    source.close()
    store = SessionStore.open(tmp_path / "session")
    (level,) = audit_json(store)["levels"]
    leaks = [a for a in level["alarms"] if a["kind"] == "extravasation"]
    assert leaks, "the faint vein was never alarmed"
    assert min(a["frame"] for a in leaks) >= truth["leak"]["first_cement_frame"], leaks
    first = leaks[0]
    assert (first["plane"], first["site"]) == ("lateral", "venous") and first["frame"] - onset <= 2, first
    assert "a thin line of cement leaving the bolus" in first["reason"], first["reason"]
    assert first["priority"] == "high" and "grow from its start" not in first["reason"], first
    lines = store.query(
        "SELECT COUNT(*) FROM journal, json_each(journal.body, '$.overlay.leaks') AS leak"
        " WHERE journal.kind = 'result' AND json_extract(leak.value, '$.line') = 1"
    ).fetchone()[0]
    off = store.query(
        "SELECT json_extract(body, '$.value.plane') FROM journal WHERE kind = 'event'"
        " AND json_extract(body, '$.event') = 'apart-off'"
    ).fetchall()
    restarted = VisionAnalysis(level="L1")
    restarted.restore(store, store.records("frame")[-1].body["stream"])
    store.close()
    assert lines >= 2, "the logged results do not mark the vein as a line"
    assert off == [], off
    # each view's decision as its results said it, not decided again on the grown bolus
    assert [restarted.case.planes[p]._apart for p in ("lateral", "ap")] == [True, True]


def test_a_disc_leak_with_no_outline_is_read_as_a_lobe_in_both_views_within_two_frames(tuning_5014):
    """Tuning seed 5014 as the benchmark renders it (CT, T10, 768 pixels, wedge fracture): no body
    outline is found in either view, so no endplate line could be seen crossed, and its disc leak
    (from frame 37) went unalarmed. The disc's cement shows in each view as a lobe above the
    bolus, apart from it across a valley (the endplate): alarmed as a disc leak within 2 frames
    of the onset, high, saying it was read in both views, and nothing before cement left. Where
    the operator says the level has a cleft (``--cleft``: cement filling a cleft under the
    endplate shows as such a lobe too, and no outline places the endplate), the same lobes are a
    possible leak (medium), saying why."""
    from monitor.accuracy import evaluate_case

    folder, truth = tuning_5014
    for known_cleft, priority in ((False, "high"), (True, "medium")):
        result = evaluate_case(folder, known_cleft=known_cleft)
        assert set(result["wall"].values()) == {"none"}
        leaks = [a for a in result["alarms"] if a["kind"] == "extravasation"]
        assert leaks, "the disc leak was never alarmed"
        assert min(a["frame"] for a in leaks) >= truth["leak"]["first_cement_frame"], leaks
        first = leaks[0]
        assert (first["site"], first["priority"]) == ("disc", priority), first
        assert first["frame"] - truth["leak"]["onset_frame"] <= 2, first
        assert "above or below the bolus in both views" in first["reason"], first["reason"]
        assert ("known cleft" in first["reason"]) is known_cleft, first["reason"]


def _lower_endplate_cleft(half_x_mm: float, half_y_mm: float, anterior: float, thick_mm: float = 3.0):
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


def _dense_cleft_without_leak(seed: int, folder, monkeypatch, **cleft) -> dict:
    """Render tuning seed ``seed`` at 512 pixels with no leak, dense cement seen behind scatter
    (ZrO2 at 34 %, 65 kVp, scatter-to-primary 0.9) and the gas cleft of
    :func:`_lower_endplate_cleft` (``cleft``: its keyword arguments) into ``folder``; returns
    the truth, checked to have no cement leave the body."""
    import monitor.sim.simulate as sim
    from monitor.accuracy import world_configs

    monkeypatch.setattr(sim, "add_cleft", _lower_endplate_cleft(**cleft))
    cfg = world_configs([seed])[0]
    dense = replace(cfg.world, opacifier="ZrO2", opacifier_fraction=0.34, kvp=65.0, scatter_to_primary=0.9)
    truth = simulate(replace(cfg, scenario="none", cleft=True, world=dense, size=512), folder)
    assert truth["total_leaked_ml"] == 0.0
    return truth


def test_dense_cement_filling_a_cleft_under_an_endplate_is_no_leak_inside_an_armed_outline(
    tmp_path, monkeypatch
):
    """Tuning seed 5022's L2 (geometric, 512 pixels) with its gas cleft moved to lie on the lower
    endplate and dense cement seen behind scatter (ZrO2 at 65 kVp, scatter-to-primary 0.9): no
    cement leaves the body. The cleft fills first, and its cement shows below the bolus across a
    valley (0.73-0.82 of its summit), which the disc-lobe reading finds in both views since its
    valley was allowed to 0.9 (session 45). What keeps it from being a disc leak is the armed
    lateral outline, which puts the lobe inside the body: no leak alarm, high or possible."""
    import monitor.vision.analysis as analysis
    from monitor.accuracy import evaluate_case

    lobes_read = []
    find = analysis.find_disc_lobes

    def recorded(*args):
        lobes = find(*args)
        lobes_read.extend(lobes)
        return lobes

    monkeypatch.setattr(analysis, "find_disc_lobes", recorded)
    _dense_cleft_without_leak(
        5022, tmp_path / "cleft", monkeypatch, half_x_mm=8.0, half_y_mm=6.0, anterior=0.15
    )
    result = evaluate_case(tmp_path / "cleft", known_cleft=False)  # the armed outline alone keeps it
    assert set(result["wall"].values()) == {"armed"}
    assert any(not lobe.above and lobe.level / lobe.summit > 0.8 for lobe in lobes_read), lobes_read
    assert [a for a in result["alarms"] if a["kind"] == "extravasation"] == []


def test_a_cleft_under_a_biconcave_endplate_is_no_high_disc_leak(tmp_path, monkeypatch):
    """Tuning seed 5007's L2 (geometric, biconcave, 512 pixels), faint cement behind scatter
    (BaSO4 at 15 %, 105 kVp, scatter-to-primary 1.5), a 14 x 6 mm gas cleft 3 mm thick on the
    lower endplate; no cement leaves the body. The armed lateral outline's endplate lines sit
    1-2 mm inside a biconcave body (its wall is right), so the cleft's cement shows as a lobe
    reaching about 1 mm beyond the lower line, and the AP view reads its lobe too. A lobe
    crossing an armed outline by 0.6 mm was tried as a high disc leak (c4fb500, for tuning
    5020's leak crossing by 1.2 mm): it raised a false high one here from frame 24, and on two
    renders of 5023 (independent review, session 48). It is a possible leak (medium) at most.
    Since session 51 the lateral endplates are bowed out to a biconcave body's corners, and the
    outline takes the cleft in: no disc alarm at all. With the endplates kept straight, the lobe
    rule is still held to a possible leak, also where the operator has not said the level has a
    cleft (``--cleft``): the armed lateral outline judges the lobes, and the AP view's lobe,
    which cannot place the endplate, does not make the lateral's sure (session 58)."""
    import monitor.sim.simulate as sim
    import monitor.vision.anatomy as anatomy
    from monitor.accuracy import evaluate_case, world_configs

    monkeypatch.setattr(sim, "add_cleft", _lower_endplate_cleft(half_x_mm=14.0, half_y_mm=6.0, anterior=0.3))
    cfg = world_configs([5007])[0]
    faint = replace(cfg.world, opacifier="BaSO4", opacifier_fraction=0.15, kvp=105.0, scatter_to_primary=1.5)
    truth = simulate(replace(cfg, scenario="none", cleft=True, world=faint, size=512), tmp_path / "cleft")
    assert truth["total_leaked_ml"] == 0.0 and cfg.fracture == "biconcave"

    def disc_alarms(result) -> list:
        assert set(result["wall"].values()) == {"armed"}
        return [a for a in result["alarms"] if a["kind"] == "extravasation" and a["site"] == "disc"]

    assert disc_alarms(evaluate_case(tmp_path / "cleft", known_cleft=False)) == []
    monkeypatch.setattr(anatomy, "ENDPLATE_BOW_GAIN", 10.0)  # no curve fits 10x the lines searched
    for known_cleft in (False, True):
        disc = disc_alarms(evaluate_case(tmp_path / "cleft", known_cleft=known_cleft))
        assert disc, "the cleft's lobes were not read in both views: the render no longer tests the rule"
        assert all(a["priority"] == "medium" for a in disc), (known_cleft, disc)


def test_a_disc_leak_the_ap_view_reads_no_lobe_of_is_high_on_time(tmp_path):
    """Tuning seed 5029 (geometric, flat endplates, a gas cleft; 512 pixels) with a disc leak from
    frame 37: the lateral view reads the cement through the endplate beyond its armed outline,
    growing, while the AP view reads no lobe of it at all. Session 49 made a lateral disc leak off
    the outline wait for the AP's lobe (against clefts under biconcave endplates); an independent
    review rendered 17 disc leaks on tuning seeds and found this one, and four more, left at a
    possible (medium) leak to the end, two more late: reverted. The lateral reading must stand on
    its own: a high disc leak within 2 frames of onset."""
    from monitor.accuracy import evaluate_case, world_configs

    truth = simulate(replace(world_configs([5029])[0], scenario="disc", size=512), tmp_path / "disc")
    onset = truth["leak"]["onset_frame"]
    result = evaluate_case(tmp_path / "disc")
    disc = [a for a in result["alarms"] if a["kind"] == "extravasation" and a["site"] == "disc"]
    high = [a["frame"] for a in disc if a["priority"] == "high"]
    assert high and high[0] - onset <= 2, (onset, disc)
    assert not any(a["plane"] == "ap" for a in disc), (
        "the AP read the leak: the render no longer tests the rule"
    )


def test_two_shafts_found_as_one_do_not_put_their_lumens_cement_in_the_front(tmp_path):
    """Tuning seed 5020's cannulas (bipedicular, geometric T10, 1024 pixels), over its first 14
    frames: in the lateral view the two shafts project 4.3 mm apart at their tips and cross 27
    mm behind, and are found as one, its axis between them. Each shaft's outer half then lay in
    the sleeve beside the steel, where the cement filling its lumen was read as cement running
    back along the needle: the front read 2 mm nearer the wall than the truth from the frame
    after the first cement, and a high 5 mm alarm at 7.2 mm. The steel the image shows in the
    band is left out of the sleeve: no distance reads over 1 mm near or 1.5 mm far, no high 5
    mm alarm before the cement is within 6 mm."""
    from monitor.accuracy import evaluate_case, world_configs

    truth = simulate(replace(world_configs([5020])[0], frames=14), tmp_path / "pair")
    result = evaluate_case(tmp_path / "pair")
    true_mm = {f["frame"]: f["distance_mm"] for f in truth["frames"]}
    read = {int(k): v for k, v in result["distance"].items() if v is not None}
    assert len(read) >= 8, read
    near = {f: (round(d, 2), true_mm[f]) for f, d in read.items() if d < true_mm[f] - 1.0}
    assert not near, f"front read over 1 mm nearer the wall than the truth: {near}"
    # the front reads 0.6-1.0 mm far here (the other shaft's bolus partly under the core of the
    # axis between them): no more, it is the unsafe side
    far = {f: (round(d, 2), true_mm[f]) for f, d in read.items() if d > true_mm[f] + 1.5}
    assert not far, f"front read over 1.5 mm farther from the wall than the truth: {far}"
    early = [
        a
        for a in result["alarms"]
        if a["kind"] == "proximity" and a["priority"] == "high" and true_mm[a["frame"]] > 6.0
    ]
    assert not early, early


def test_monitoring_begun_late_does_not_read_the_grown_first_bolus_as_a_high_leak(tmp_path):
    """Tuning seed 5009 (geometric L-spine, 512 pixels; a posterior leak from frame 33) with the
    monitor started 20 frames in, 0.9 mL already injected: the first bolus each view sees was
    grown before monitoring began. The AP view's reads 1.19 times the sphere bound for a bolus
    seen from its start; were the bound's slack 1.2 rather than 1.15 (session 45), lines leaving
    it would be trusted and a high venous leak alarmed at frame 29, before any cement left. No
    high leak alarm comes before the first leaked cement, and the posterior leak is still
    alarmed high."""
    from monitor.accuracy import world_configs
    from monitor.analyzer import VisionAnalysis, analyse_source
    from monitor.io.sources import DicomPairSource

    truth = simulate(world_configs([5009])[0], tmp_path / "case")
    source = DicomPairSource(tmp_path / "case" / "lateral.dcm", tmp_path / "case" / "ap.dcm")
    every = source.frames
    source.frames = lambda: (item for item in every() if item.index >= 20)
    leaks = []
    for _, result in analyse_source(source, VisionAnalysis()):
        leaks += [a for a in result.alarms if a["kind"] == "extravasation"]
    source.close()
    high = [a for a in leaks if a["priority"] == "high"]
    first_cement = truth["leak"]["first_cement_frame"]
    assert [a for a in high if a["frame"] < first_cement] == [], high
    assert any(a["site"] == "posterior" and a["frame"] >= first_cement for a in high), leaks


def test_a_tip_truly_near_the_wall_still_has_its_wall_armed_and_alarms_high(tmp_path, monkeypatch):
    """Tuning seed 5000 (geometric, 768 pixels, 14 frames) with its cannula's tip moved to 4.1 mm
    from the true posterior wall, nearer than on any realistic-world case (9.4-26 mm). The wall is found with
    confidence and armed; the first cement is within 5 mm at once, and the high 5 mm alarm comes
    within a frame of the truth's crossing, the posterior leak high within 2 frames of its onset
    (refusing walls found within 5 mm of the tip, tried in session 46, left this level silent)."""
    import monitor.sim.simulate as sim
    from monitor.accuracy import evaluate_case, world_configs

    place = sim._place_cannulas

    def near_the_wall(cfg, phantom, rng):
        placed = []
        for tip, entry in place(cfg, phantom, rng):
            tip = tip.copy()
            tip[1] = phantom.shape.half_depth - 6.5  # the wall's flat part is 2 mm inside half_depth
            placed.append((tip, entry))
        return placed

    monkeypatch.setattr(sim, "_place_cannulas", near_the_wall)
    truth = simulate(replace(world_configs([5000])[0], frames=14), tmp_path / "near")
    result = evaluate_case(tmp_path / "near")
    assert set(result["wall"].values()) == {"armed"}
    high = [a for a in result["alarms"] if a["priority"] == "high"]
    proximity = [a["frame"] for a in high if a["kind"] == "proximity"]
    crossing = truth["proximity_frame"]
    assert proximity and abs(proximity[0] - crossing) <= 1, (proximity, crossing)
    leaks = [a for a in high if a["kind"] == "extravasation" and a["site"] == "posterior"]
    assert leaks and leaks[0]["frame"] - truth["leak"]["onset_frame"] <= 2, leaks
