"""The realistic simulator (issue 17): spectra and attenuation from SpekPy and xraydb, beam
hardening, the room's unknowns drawn from their ranges, what a case writes, and the image chain
a room puts between the patient and the monitor (brightness control, clipping, an intensifier's
glare, the temporal filter).

The realistic-world tests are in five files, each on one test worker: this one; the CT phantom
and the cases on real-CT anatomy (test_realistic_ct.py); the volume where the darkness reads
low (test_realistic_volume.py); leaks and clefts (test_realistic_leaks.py); the needles'
steel (test_realistic_needles.py)."""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import replace

import cv2
import numpy as np
import pydicom
import pytest

from monitor.sim.simulate import simulate
from monitor.sim.world import World, draw_world
from monitor.sim.xray import (
    Beam,
    Spectrum,
    cement_material,
    detected,
    linear_attenuation,
    log_contrast_curve,
)
from tests.realistic_cases import small_case


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


def test_a_realistic_case_writes_the_exposure_tags_a_c_arm_writes(tmp_path):
    world = World(kvp=85, al_mm=3.0, cu_mm=0.1, abc=True, tags=True, grid=True)
    truth = simulate(small_case(world), tmp_path / "tags")
    ds = pydicom.dcmread(tmp_path / "tags" / "lateral.dcm", stop_before_pixels=True)
    assert float(ds.KVP) == 85 and ds.Grid == "FOCUSED" and list(ds.FilterMaterial) == ["ALUMINUM", "COPPER"]
    assert truth["detector"]["lateral"]["kvp_per_frame"][0] == 85
    silent = simulate(small_case(replace(world, tags=False)), tmp_path / "silent")
    ds = pydicom.dcmread(tmp_path / "silent" / "lateral.dcm", stop_before_pixels=True)
    assert "KVP" not in ds and "FilterMaterial" not in ds and "Grid" not in ds
    assert silent["config"]["world"]["tags"] is False


def test_video_output_is_8_bit_log_and_the_cement_darkens_it(tmp_path):
    from monitor.io.dicom import open_recording

    world = World(video=True, recursive_weight=0.4, edge_gain=0.6, detector="intensifier",
                  glare_fraction=0.1, vignetting=0.25)  # fmt: skip
    simulate(small_case(world, bits=8, intensity="LOG", frames=24), tmp_path / "video")
    with open_recording(tmp_path / "video" / "lateral.dcm") as rec:
        first, last = rec.frame(0), rec.frame(23)
        assert rec.info.bits_stored == 8 and rec.info.intensity_relationship == "LOG"
    assert first.dtype == np.uint8 and first.max() > 200  # the window uses the range
    assert (last.astype(int) - first).min() < -60  # a bolus, dark on MONOCHROME2
    with pytest.raises(ValueError, match="8-bit video"):
        small_case(world).validate()


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
    cfg = small_case(world, bits=8, intensity="LOG") if world.video else small_case(world)
    simulator._PHANTOMS.clear()
    a = simulate(cfg, tmp_path / "a")
    assert len(simulator._PHANTOMS) == 1
    b = simulate(cfg, tmp_path / "b")
    assert json.dumps(a["detector"]) == json.dumps(b["detector"])
    assert (tmp_path / "a" / "ap.dcm").read_bytes() == (tmp_path / "b" / "ap.dcm").read_bytes()


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
    truth = simulate(small_case(world, scenario="none", frames=24, size=192), tmp_path / "abc")
    history = truth["detector"]["lateral"]
    assert history["kvp_per_frame"][0] == 70 and history["kvp_per_frame"][-1] > 70
    assert max(history["output_per_frame"]) == pytest.approx(1.05, abs=0.01)
    steady = simulate(
        small_case(replace(world, abc=False), scenario="none", frames=24, size=192), tmp_path / "off"
    )
    assert set(steady["detector"]["lateral"]["kvp_per_frame"]) == {70}


def test_the_benchmark_scores_a_realistic_case_and_tables_it_by_band(tmp_path):
    """One small realistic case through the benchmark's own path (rendered, evaluated as the
    analyzer would, scored): its bands each get a row of the sensitivity table, and so does its
    leak type by anatomy."""
    from monitor.accuracy import evaluate_case, report, score, sensitivity
    from monitor.volume_plot import estimate_pairs, estimates_table, plot_estimates

    world = World(kvp=95, opacifier="ZrO2", scatter_to_primary=1.8, grid=False, abc=True)
    simulate(small_case(world, frames=16, size=256), tmp_path / "case")
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
    # ... and of those shown, the ones the operator could confirm (the rest were to be drawn: not
    # seen in the images, or refuted); a case from before the key counts as not offered
    assert "wall_offered" in case
    offered = [
        {**asked, "wall_offered": True},
        {**wrong, "wall_offered": True},
        {**wrong, "wall_offered": False},
    ]
    scored = score([*offered, {**unshown, "wall_offered": True}, asked])
    assert scored["offered"] == {"right": 1, "wrong": 1}, scored["offered"]
    assert re.search(r"offered to confirm: right / wrong +1 / +1 ", report(scored, "5 cases"))


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
        small_case(world, scenario="none", size=192, frames=30, bits=8, intensity="LOG", compression="none"),
        case,
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
    config = small_case(
        world, scenario="none", size=192, frames=30, bits=8, intensity="LOG", compression="none"
    )
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
    # the AP run begun 2 frames after the lateral's (its headers say so): the views' frame numbers
    # no longer name one instant, and until session 73 nothing was taken (the last shift kept)
    late = tmp_path / "late"
    late.mkdir()
    (late / "lateral.dcm").write_bytes((case / "lateral.dcm").read_bytes())
    step = float(ds.FrameTime) / 1000
    started = datetime.datetime.strptime(ds.AcquisitionDateTime, "%Y%m%d%H%M%S.%f")
    ds.AcquisitionDateTime = (started + datetime.timedelta(seconds=2 * step)).strftime("%Y%m%d%H%M%S.%f")
    ds.NumberOfFrames = len(brightened) - 2
    ds.PixelData = np.ascontiguousarray(brightened[2:]).tobytes()
    ds.save_as(late / "ap.dcm")
    _, held_late, said = ap_run(late)
    assert held_late == held  # the same frames held, each numbered 2 less
    assert sum("the other view's is used" in words for words in said) == held_late
    monkeypatch.setattr(CaseAnalyzer, "_breathing_elsewhere", lambda self, plane, time_s: None)
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
    truth = simulate(small_case(glare, size=256, frames=6, field="round"), tmp_path / "ii")
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

    simulate(small_case(World(), size=256, frames=6, field="open"), tmp_path / "fp")
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
    simulate(small_case(world, scenario="none", size=192, frames=48, intensity="LIN", bits=14), folder)
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
    simulate(small_case(world, scenario="none", size=192, frames=48, intensity="LIN", bits=14), folder)
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
