"""The realistic world on real-CT anatomy: the CT phantom, and the bench's CT cases whose
steel, bolus and leaks the monitor once misread (tuning seeds 5013, 5014, 5025)."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.sim.simulate import SimConfig, simulate
from monitor.sim.world import World
from tests.realistic_cases import ct_or_skip


@pytest.fixture(scope="module")
def tuning_5014(tmp_path_factory):
    """Tuning seed 5014 as the benchmark renders it (CT, T10, 768 pixels, 48 frames): its
    folder and truth, rendered once for the tests that only read it (about 25 s each time)."""
    from monitor.accuracy import world_configs

    ct_or_skip()
    folder = tmp_path_factory.mktemp("ct5014") / "ct"
    return folder, simulate(world_configs([5014])[0], folder)


def test_the_ct_phantom_is_a_real_vertebra_in_the_simulators_frame():
    """The treated body from the CT's labels: a real size, its posterior wall concave (its
    middle in front of its posterolateral corners), the spinal cord behind it (+y)."""
    from monitor.sim.ct import build_ct_phantom

    ct_or_skip()
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
    ct_or_skip()
    cfg = SimConfig(seed=7, scenario="posterior", level="T12", frames=12, size=128, anatomy="ct")
    truth = simulate(cfg, tmp_path / "ct")
    assert truth["leak"]["site"] == "posterior" and truth["leak"]["onset_frame"] is not None
    assert truth["min_distance_mm"] < 0  # beyond the real wall
    assert 1.0 < truth["total_injected_ml"] < 6.0


def test_a_ct_phantom_is_surrounded_by_the_patients_own_chest():
    """Around the fine box, the CT's own lungs, ribs and organs at 2 mm replace the geometric
    phantom's analytic trunk: a lateral ray through a thoracic level crosses both lungs."""
    from monitor.sim.ct import build_ct_phantom
    from monitor.sim.projector import View, surrounding_paths

    ct_or_skip()
    phantom = build_ct_phantom(np.random.default_rng(0), level="T10")
    view = View("lateral", 64, 160.0 / 64, 1000.0, 750.0)
    tissue, bone, missing = surrounding_paths(phantom, view)
    centre = tissue[32, 32]
    assert 250 < centre < 450  # mm: the chest's width in the CT's field (and the fine box)
    assert missing.max() > 100  # mm of lung and air along some lateral rays
    assert bone.max() > 5  # ribs and the other vertebrae outside the box


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

    ct_or_skip()
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

    ct_or_skip()
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
