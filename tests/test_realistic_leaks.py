"""Leaks and clefts in the realistic world, on the bench's cases as it renders them: a vein
too faint to segment, cement filling a cleft under an endplate (no leak), a disc leak the AP
view reads no lobe of, and monitoring begun late."""

from __future__ import annotations

from dataclasses import replace

from monitor.sim.simulate import simulate
from tests.realistic_cases import dense_cleft_without_leak, lower_endplate_cleft


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
    dense_cleft_without_leak(
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

    monkeypatch.setattr(sim, "add_cleft", lower_endplate_cleft(half_x_mm=14.0, half_y_mm=6.0, anterior=0.3))
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
