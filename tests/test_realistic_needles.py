"""The cannulas' steel in the realistic world: a shaft found to its tip at the field's edge,
two shafts read as one, a leak along the needle track, a tip truly near the wall."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from monitor.sim.simulate import SimConfig, simulate
from monitor.sim.world import World


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
