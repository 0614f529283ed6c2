"""The vision pipeline (monitor/vision/analysis.py, through analyse_source) on recordings
with known truth. Its parts: test_vision_parts, _body, _intensity, _alarms, _anatomy."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from monitor.analyzer import analyse_source
from monitor.io.dicom import open_recording
from monitor.io.sources import DicomPairSource
from monitor.recordings import bundled_recordings
from monitor.vision.analysis import DEFAULT_CEMENT_MU, AnalysisConfig, Physics, PlaneAnalyzer
from monitor.vision.caveats import CaveatCode
from tests.conftest import assert_5mm_alarm_on_time


def analyse(lateral, ap, limit: int | None = None, start: int = 0, overlay: bool = False) -> dict:
    """A recording through the monitor's own analysis path (``analyse_source``), as the
    analyzer process runs it: per frame, the results the operator would be sent."""
    source = DicomPairSource(lateral, ap)
    out = {"distance": {}, "volume": {}, "plane_volume": {}, "alarms": [], "status": {}, "caveats": {}}
    out["overlay"], out["interval"] = {}, {}
    try:
        for item, result in analyse_source(_Frames(source, start, limit)):
            key = (item.plane, item.index)
            out["status"][key] = result.status
            out["caveats"][key] = result.caveat_codes()
            out["plane_volume"][key] = result.plane_volume_ml
            out["interval"][key] = (result.volume_low_ml, result.volume_high_ml)
            if overlay:
                out["overlay"][key] = result.overlay
            if item.plane == "lateral":
                out["distance"][item.index] = result.distance_mm
            out["volume"][item.index] = result.volume_ml
            out["alarms"] += result.alarms
    finally:
        source.close()
    return out


def _analysed_edited(case, tmp_path, edit, planes=("lateral", "ap")) -> dict:
    """:func:`analyse` of the bundled ``case`` with ``planes`` rewritten by ``edit`` (as
    ``tests.test_dicom_variants.rewrite`` takes it: the dataset and its frames in, frames out)."""
    from tests.test_dicom_variants import rewrite

    paths = {plane: getattr(case, plane) for plane in ("lateral", "ap")}
    for plane in planes:
        paths[plane] = rewrite(paths[plane], tmp_path / f"{plane}.dcm", edit)
    return analyse(paths["lateral"], paths["ap"])


class _Frames:
    """A source's frames from index ``start`` (monitoring begins there) to ``limit``."""

    def __init__(self, source, start: int, limit: int | None):
        self.source, self.start, self.limit = source, start, limit
        self.formats = source.formats

    def frames(self):
        for item in self.source.frames():
            if self.limit is not None and item.index >= self.limit:
                return
            if item.index >= self.start:
                yield item


@pytest.fixture(scope="module")
def recordings():
    return {r.name: (r, json.loads(r.truth.read_text())) for r in bundled_recordings()}


@pytest.fixture(scope="module")
def analysed(recordings):
    return {name: analyse(r.lateral, r.ap) for name, (r, _) in recordings.items()}


def _high(alarms, kind):
    return [a for a in alarms if a["priority"] == "high" and a["kind"] == kind]


def test_posterior_leak_case_alarms_on_time_at_the_right_site(recordings, analysed):
    _, truth = recordings["posterior-leak"]
    got = analysed["posterior-leak"]
    proximity = _high(got["alarms"], "proximity")
    assert proximity, "no proximity alarm"
    assert_5mm_alarm_on_time(proximity[0]["frame"], truth)
    assert proximity[0]["distance_mm"] <= 5.5  # the 5 mm line and the alarm's 0.5 mm allowance
    leaks = _high(got["alarms"], "extravasation")
    assert leaks, "the leak was missed"
    onset = truth["leak"]["onset_frame"]
    assert truth["leak"]["first_cement_frame"] <= leaks[0]["frame"] <= onset + 2
    assert leaks[0]["site"] == "posterior" and leaks[0]["plane"] == "lateral"


@pytest.fixture(scope="module")
def scatter_free(tmp_path_factory, recordings):
    """The bundled case rendered again with no scatter at all (pure Beer-Lambert, as a
    simpler simulator would)."""
    from monitor.sim.simulate import SimConfig, simulate

    folder = tmp_path_factory.mktemp("scatter-free")
    config = SimConfig(**{**recordings["posterior-leak"][1]["config"], "scatter_to_primary": 0.0})
    return folder, simulate(config, folder)


def test_images_without_scatter_are_read_without_its_correction(recordings, analysed, scatter_free):
    """The cement leaves no scatter halo, so once both planes have seen enough cement
    the scatter correction is dropped and said; the volume then reads the truth, where
    with the scatter subtracted it read 1.5-1.9 times it. The bundled case itself,
    which has scatter, keeps its correction."""
    folder, truth = scatter_free
    got = analyse(folder / "lateral.dcm", folder / "ap.dcm")
    flagged = {key for key, codes in got["caveats"].items() if CaveatCode.SCATTER_NOT_SEEN in codes}
    assert flagged, "the missing scatter was not noticed"
    first = min(f for _, f in flagged)
    assert first <= 30 and flagged >= {(p, f) for p in ("lateral", "ap") for f in range(first + 1, 48)}
    injected = [f["injected_ml"] for f in truth["frames"]]
    # from the frame it is noticed on: there one view is read without the correction and the
    # other's last reading with it is brought to it (half on each, it said 2.14 mL for 1.53)
    after = [got["volume"][f] / injected[f] for f in range(first, 48)]
    assert max(abs(r - 1) for r in after) < 0.08, after
    assert_5mm_alarm_on_time(_high(got["alarms"], "proximity")[0]["frame"], truth)
    assert 0 <= _high(got["alarms"], "extravasation")[0]["frame"] - truth["leak"]["onset_frame"] <= 2
    assert not any(CaveatCode.SCATTER_NOT_SEEN in c for c in analysed["posterior-leak"]["caveats"].values())
    # one view alone does not decide: its halo is too uncertain
    lateral_only = analyse(folder / "lateral.dcm", None)
    assert not any(CaveatCode.SCATTER_NOT_SEEN in c for c in lateral_only["caveats"].values())
    # the readout panel drawn on the image names the caveat; the log keeps its wording
    from monitor.overlay import short_status

    last = got["caveats"][("ap", 47)]
    wire = {"status": got["status"][("ap", 47)], "caveats": [{"code": c.value} for c in last]}
    assert short_status(wire) == "scatter-not-seen"


def _restarted_on_its_log(lateral, ap, session):
    """A recording through the real pipeline into a session log at ``session``, then an
    analyzer restarted on that log (level L1), as after a crash at the recording's end."""
    from monitor.analyzer import VisionAnalysis
    from monitor.io.store import SessionStore
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions

    source = DicomPairSource(lateral, ap)
    spec = RunSpec(str(session), "L1", endpoints=Endpoints.private())
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) == 0
    source.close()
    store = SessionStore.open(session)
    restarted = VisionAnalysis(level="L1")
    restarted.restore(store, store.records("frame")[-1].body["stream"])
    return restarted


def test_an_analyzer_restarted_after_finding_no_scatter_goes_on_without_it(scatter_free, tmp_path):
    folder, _ = scatter_free
    restarted = _restarted_on_its_log(folder / "lateral.dcm", folder / "ap.dcm", tmp_path / "s")
    assert restarted.case.scatter_seen is False
    assert [p.without_scatter for p in restarted.case.planes.values()] == [True, True]


def test_syringes_anchored_before_the_scatter_is_dropped_keep_the_volume_growing(scatter_free):
    """The halo shows no scatter once about 1 mL is in, and the darkness is read without the
    correction from then on: a fraction of what it read. Syringes entered before were anchored
    on the darkness read with it, so the growth since read as none: tuning 5035 with 1 mL
    syringes said 1.00 mL from its first syringe to the end, for 1.19-1.51 mL. Once both views
    are read without it, the level's darkness statistics and the anchors are rescaled to the new
    reading, and that is said ("darkness-rescale") for the audit and for a restart, which takes
    up the same anchors. The alarms are the images' alone: the same with syringes as without."""
    from monitor.accuracy import _SyringeEvents
    from monitor.analyzer import VisionAnalysis

    folder, truth = scatter_free
    injected = {f["frame"]: f["injected_ml"] for f in truth["frames"]}
    analysis = VisionAnalysis()
    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    volume, alarms, said, switch = {}, [], [], None
    try:
        for item, result in analyse_source(_SyringeEvents(source, analysis, injected, 1.0), analysis):
            volume[item.index] = result.volume_ml
            alarms += result.alarms
            said += [n for n in analysis.news() if n[0] in ("syringe-entry", "darkness-rescale")]
            if switch is None and analysis.case.scatter_seen is False:
                # read without the correction from the next frame on: the AP's next one
                switch = item.index + (item.plane == "ap")
    finally:
        source.close()
    kinds = [n[0] for n in said]
    assert kinds.count("darkness-rescale") == 1, kinds
    rescale = said[kinds.index("darkness-rescale")]
    assert kinds.index("syringe-entry") < kinds.index("darkness-rescale")  # anchored before it
    assert 0.3 < rescale[3]["ratio"] < 0.9, rescale  # read without the correction: less
    after = [f for f in range(rescale[3]["frame"] + 2, 48) if injected[f] >= 1.0]
    errors = [abs(volume[f] / injected[f] - 1) for f in after]
    assert len(after) > 10 and max(errors) < 0.12, [round(e, 3) for e in errors]
    assert volume[47] > volume[after[0]] + 0.5  # it grows on (it stood at the syringes' total)
    assert alarms == analyse_alarms(folder)  # the syringes move no alarm

    # the AP unplugged from the frame the correction was dropped on: the rescale is not waited
    # for beyond RESCALE_WAIT_S (the lateral's own ratio), and the volume grows on
    alone, analysis_alone, kinds_alone = _with_syringes(folder, injected, drop_ap_from=switch)
    assert "darkness-rescale" in kinds_alone and analysis_alone.case.darkness_mixed is False
    later = [f for f in range(switch + 12, 48)]
    assert max(abs(alone[f] / injected[f] - 1) for f in later) < 0.12, [alone[f] for f in later]

    # a restart takes up the same anchors from what was logged, in order
    restarted = VisionAnalysis()
    restarted._take_up_syringes([{"event": e, "source": "analyzer", "value": v} for e, _, _, v in said])
    flat = [[v for anchor in a._anchors for v in anchor] for a in (restarted, analysis)]
    assert flat[0] == pytest.approx(flat[1], rel=1e-5)
    assert restarted.volume_scale == pytest.approx(analysis.volume_scale)


def test_a_next_level_in_the_same_room_reads_its_scatter_as_the_last_did(scatter_free):
    """Whether the images hold scatter is the room's: a next level reads as the level before
    found, from its first frame, and the syringes' scale carried over (learnt on the darkness
    read without the correction) fits it. Before, the next level read the correction afresh
    until its own halo settled, on that carried scale: the second level of the render without
    scatter said 1.78 mL for 1.05 and 2.67 for 1.43 (an independent review's)."""
    from monitor.accuracy import _SyringeEvents
    from monitor.analyzer import VisionAnalysis
    from monitor.messages import Command

    folder, truth = scatter_free
    injected = {f["frame"]: f["injected_ml"] for f in truth["frames"]}
    analysis = VisionAnalysis()
    levels = []
    for level, syringe in (("L1", 1.0), ("L2", 0.0)):
        if level == "L2":
            analysis.apply(Command("offline", "test", 0.0, "level", level))
        source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
        said = {}
        try:
            for item, result in analyse_source(_SyringeEvents(source, analysis, injected, syringe), analysis):
                said[(item.plane, item.index)] = result
        finally:
            source.close()
        levels.append(said)
    first_read = [r for (plane, f), r in levels[1].items() if f == 3]  # the first after the baseline
    assert first_read and all(CaveatCode.SCATTER_NOT_SEEN in r.caveat_codes() for r in first_read)
    grown = [f for f in range(48) if injected[f] >= 0.5]
    errors = {f: levels[1][("lateral", f)].volume_ml / injected[f] - 1 for f in grown}
    assert max(abs(e) for e in errors.values()) < 0.2, errors


def test_a_level_ended_as_the_scatter_is_dropped_hands_the_next_one_a_scale_it_reads_on(scatter_free):
    """Level 1 (1 mL syringes) ends on the frame its halo shows no scatter, or the frame after,
    before the views are read again without the correction: the rescale is finished with what
    was read (or, with nothing read, the verdict is not carried and the next level settles its
    own, its carried scale rescaled then). A second review of session 74 found level 2 saying
    0.52 mL for 1.05 and 1.49 for 2.96, on a scale learnt on the reading with the correction."""
    from monitor.accuracy import _SyringeEvents
    from monitor.analyzer import VisionAnalysis
    from monitor.messages import Command

    folder, truth = scatter_free
    injected = {f["frame"]: f["injected_ml"] for f in truth["frames"]}
    for extra in (0, 1):  # level 1 ends on the switch frame, or on the frame after it
        analysis = VisionAnalysis()
        logged = []  # the analyzer's events as the log keeps them, in order

        def drain(analysis=analysis, logged=logged):
            logged.extend({"event": e, "source": "analyzer", "value": v} for e, _, _, v in analysis.news())

        source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
        items = iter(analyse_source(_SyringeEvents(source, analysis, injected, 1.0), analysis))
        for _ in items:
            drain()
            if analysis.case.scatter_seen is False:
                break
        for _ in range(extra):
            next(items)
            drain()
        source.close()
        analysis.apply(Command("offline", "test", 0.0, "level", "L2"))
        logged.append({"event": "level", "source": "operator", "value": "L2"})
        drain()
        source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
        volume = {}
        try:
            for item, result in analyse_source(source, analysis):
                volume[item.index] = result.volume_ml
                drain()
        finally:
            source.close()
        later = [f for f in range(30, 48)]  # past level 2's own switch, if it makes one
        assert max(abs(volume[f] / injected[f] - 1) for f in later) < 0.12, (
            extra,
            [volume[f] for f in later],
        )
        # a restart in level 2 takes up the same scale from the log (a third review found the
        # rescale finished at level 1's end unlogged: 0.53 restored for 1.02 live)
        restarted = VisionAnalysis()
        restarted._take_up_syringes(logged)
        assert restarted.volume_scale == pytest.approx(analysis.volume_scale, rel=1e-6), extra


def _with_syringes(folder, injected: dict, drop_ap_from: int | None = None):
    """The recording in ``folder`` analysed with a 1 mL syringe entered as each empties, its AP
    frames from ``drop_ap_from`` on never sent: (frame -> volume said, the analysis, the kinds of
    news it said)."""
    from monitor.accuracy import _SyringeEvents
    from monitor.analyzer import VisionAnalysis

    class Dropped:
        def __init__(self, source):
            self.source, self.formats = source, source.formats

        def frames(self):
            for item in self.source.frames():
                if not (item.plane == "ap" and drop_ap_from is not None and item.index >= drop_ap_from):
                    yield item

    analysis = VisionAnalysis()
    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    volume, kinds = {}, []
    try:
        events = _SyringeEvents(Dropped(source), analysis, injected, 1.0)
        for item, result in analyse_source(events, analysis):
            volume[item.index] = result.volume_ml
            kinds += [n[0] for n in analysis.news()]
    finally:
        source.close()
    return volume, analysis, kinds


def analyse_alarms(folder) -> list[dict]:
    source = DicomPairSource(folder / "lateral.dcm", folder / "ap.dcm")
    try:
        return [a for _, r in analyse_source(source) for a in r.alarms]
    finally:
        source.close()


def test_a_front_measured_beyond_the_wall_confirms_the_posterior_leak_at_once(analysed):
    got = analysed["posterior-leak"]
    beyond = [f for f, d in sorted(got["distance"].items()) if d is not None and d <= -1.5]
    leaks = _high(got["alarms"], "extravasation")
    assert beyond, "the front never read 1.5 mm beyond the wall"
    assert leaks and leaks[0]["frame"] <= beyond[0], (leaks[:1], beyond[0])


def test_distance_follows_the_truth(recordings, analysed):
    for name in ("posterior-leak", "venous-leak"):
        _, truth = recordings[name]
        got = analysed[name]
        errors = [
            abs(got["distance"][f["frame"]] - f["distance_mm"])
            for f in truth["frames"]
            if f["distance_mm"] is not None
            and f["distance_mm"] <= 15
            and got["distance"].get(f["frame"]) is not None
        ]
        assert len(errors) > 20
        assert np.median(errors) < 0.6, (name, np.median(errors))


def test_volume_follows_the_truth(recordings, analysed):
    for name in ("posterior-leak", "venous-leak", "no-leak"):
        _, truth = recordings[name]
        final = truth["frames"][-1]
        estimate = analysed[name]["volume"][final["frame"]]
        # 8-bit LOG recordings measure their log scale from noise: within 25 %
        assert estimate == pytest.approx(final["injected_ml"], rel=0.25), name


def test_a_case_without_leak_raises_no_high_alarm(recordings, analysed):
    _, truth = recordings["no-leak"]
    assert truth["min_distance_mm"] > 6.0
    highs = [a for a in analysed["no-leak"]["alarms"] if a["priority"] == "high"]
    assert highs == []


def test_venous_leak_is_caught_within_two_frames(recordings, analysed):
    _, truth = recordings["venous-leak"]
    leaks = _high(analysed["venous-leak"]["alarms"], "extravasation")
    assert leaks and leaks[0]["frame"] <= truth["leak"]["onset_frame"] + 2


def test_no_cement_means_no_cement_no_volume_no_alarm(recordings):
    r, truth = recordings["posterior-leak"]
    before = truth["baseline_frames"]
    got = analyse(r.lateral, r.ap, limit=before)
    assert got["alarms"] == []
    assert all(v is None or v < 0.03 for v in got["volume"].values())
    assert all(d is None for d in got["distance"].values())


def test_cement_already_in_the_baseline_is_found_and_counted(recordings):
    """Monitoring started late, with 1.2 mL already in: that cement must not
    vanish into the baseline, where the front already is. The wall, found on images
    holding cement, is not armed until the operator confirms it (monitoring begun late on
    a realistic tuning case armed a wall found 18 mm off); confirmed after the first frame
    measured, the front already within 5 mm is alarmed on the next frame."""
    from monitor.analyzer import VisionAnalysis
    from monitor.messages import Command

    r, truth = recordings["posterior-leak"]
    start, first = 18, 20  # the first frame measured: the last of the 3 baseline frames
    analysis = VisionAnalysis()
    source = DicomPairSource(r.lateral, r.ap)

    class Confirmed(_Frames):  # the operator confirms the wall shown on the first frame measured
        def frames(self):
            for item in super().frames():
                if (item.plane, item.index) == ("lateral", first + 1):
                    analysis.apply(Command("", "test", 0.0, "confirm-wall", None))
                yield item

    distance, volume, alarms, status, walls = {}, {}, [], {}, {}
    try:
        for item, result in analyse_source(Confirmed(source, start, None), analysis):
            status[(item.plane, item.index)] = result.status
            if item.plane == "lateral":
                distance[item.index] = result.distance_mm
                walls[item.index] = (result.overlay or {}).get("wall_state")
            volume[item.index] = result.volume_ml
            alarms += result.alarms
    finally:
        source.close()
    measured = {key: s for key, s in status.items() if s != "baseline"}
    assert min(f for (plane, f) in measured if plane == "lateral") == first
    assert measured and all("cement-in-baseline" in s for s in measured.values())
    # both outlines are found clear of it: the AP's with the cement and the steel within it
    # painted out and the bone filled in smoothly, 22.5 mm high (truly 22); the speckled fill
    # before session 69 read it 35 mm high, refused as no body's
    assert all(s.startswith("cement-in-baseline") for s in measured.values())
    ap = analysis.case.planes["ap"]
    corners = ap.body.polygon()
    height_mm = (corners[:, 1].max() - corners[:, 1].min()) * ap.pixel_mm
    assert 20.0 < height_mm < 25.0, height_mm
    assert walls[first] == "not-confirmed" and distance[first] is None  # until confirmed
    assert "wall-not-confirmed" in status[("lateral", first)]
    final = truth["frames"][-1]
    assert volume[final["frame"]] == pytest.approx(final["injected_ml"], rel=0.2)
    errors = [
        abs(distance[f["frame"]] - f["distance_mm"])
        for f in truth["frames"][start:]
        if f["distance_mm"] is not None and distance.get(f["frame"]) is not None
    ]
    assert len(errors) > 20 and np.median(errors) < 1.0
    proximity = _high(alarms, "proximity")
    assert truth["frames"][first]["distance_mm"] < 5.0 and proximity[0]["frame"] == first + 1


def test_a_start_while_cement_is_injected_is_said_and_the_leak_still_alarms(recordings):
    """Monitoring began 4 frames into the injection (0.2-0.4 mL in, still flowing): no bolus is
    found in the baseline (the tip found runs through it), and the results said nothing of it.
    The cement growing over the first frames says it on every result of both views; the vein
    leaving through the posterior wall still raises the high alarm within 2 frames of onset, and
    no other leak is alarmed high (a leak off an outline found on images holding cement is a
    possible one)."""
    r, truth = recordings["venous-leak"]
    got = analyse(r.lateral, r.ap, start=10)
    measured = {key: codes for key, codes in got["caveats"].items() if got["status"][key] != "baseline"}
    assert measured and all(CaveatCode.CEMENT_IN_BASELINE in codes for codes in measured.values())
    statuses = {s for key, s in got["status"].items() if key in measured}
    assert any("cement grew over the first frames" in s for s in statuses), statuses
    leaks = _high(got["alarms"], "extravasation")
    assert leaks and leaks[0]["frame"] - truth["leak"]["onset_frame"] <= 2, leaks
    assert all(a["site"] == "posterior" for a in leaks), leaks


def _past_the_baseline(recording):
    """The lateral and AP PlaneAnalyzers of a bundled ``recording`` analysed to its frame 4 (the
    baseline learnt, a frame measured), as the analyzer process holds them for an operator's edit."""
    from monitor.analyzer import VisionAnalysis

    source = DicomPairSource(recording.lateral, recording.ap)
    analysis = VisionAnalysis()
    try:
        for _ in analyse_source(_Frames(source, 0, 4), analysis):
            pass
    finally:
        source.close()
    return analysis.case.planes["lateral"], analysis.case.planes["ap"]


def test_drawing_a_body_marks_that_views_outline_as_the_operators(recordings):
    """What lifts a late start's doubt from a view's outline leaks (test_vision_alarms): the
    operator's box, set through the analyzer's own edit path; confirming the wall does not."""
    lateral, ap = _past_the_baseline(recordings["no-leak"][0])
    assert not lateral.body_drawn and not ap.body_drawn
    lateral.confirm_wall()
    assert not lateral.body_drawn
    ap.set_body((150, 150, 120, 90))
    assert ap.body_drawn and not lateral.body_drawn


def test_a_wall_or_body_drawn_off_the_image_or_far_from_the_tip_is_refused(recordings):
    """An independent test's --wall at x 900 on the 384-pixel image was armed: the cement was
    measured 202 mm from it, no alarm was raised and the level was said monitored. Edits off
    the image, a wall over 60 mm from the cannula's tip (no vertebral body is that deep; its
    nearest point, not its line) and a box over 100 mm on a side are refused, as the analyzer
    refuses any edit it cannot apply (the command-line's then says unused on every result; the
    viewer's says rejected), and the wall found stays as it was."""
    lateral, ap = _past_the_baseline(recordings["no-leak"][0])
    armed_by, wall = lateral.wall_armed_by, lateral.body.posterior
    tip_x = lateral.grid.to_full(*lateral.learnt.cannulas[0].tip)[0]  # 174.2 (0.3125 mm pixels)
    with pytest.raises(ValueError, match=r"lie off the lateral image \(384 x 384 pixels\)"):
        lateral.set_wall([(900, 100), (900, 300)])
    far = tip_x + 62.0 / 0.3125  # on the image (x 372.6), 62 mm from the tip
    with pytest.raises(ValueError, match="lies 62 mm from the cannula's tip"):
        lateral.set_wall([(far, 100), (far, 300)])
    with pytest.raises(ValueError, match="lie off the ap image"):
        ap.set_body((-10, -10, 200, 200))
    with pytest.raises(ValueError, match="is 125 mm on a side"):
        ap.set_body((0, 0, 400, 100))
    assert lateral.wall_armed_by == armed_by and lateral.body.posterior == wall
    # a short stroke far down the line through the tip (another level's wall in line with this
    # one): 0 mm from that line, its nearest end 80 mm away (was taken)
    tip_y = lateral.grid.to_full(*lateral.learnt.cannulas[0].tip)[1]
    reach = 80.0 / 0.3125 / np.sqrt(2.0)  # along the diagonal through the tip, pixels each way
    stroke = [(tip_x + reach, tip_y + reach), (tip_x + reach + 5, tip_y + reach + 5)]
    if max(stroke[1]) >= 384:  # the other diagonal, where the tip lies low or right
        stroke = [(tip_x - reach, tip_y - reach), (tip_x - reach - 5, tip_y - reach - 5)]
    with pytest.raises(ValueError, match="lies 80 mm from the cannula's tip"):
        lateral.set_wall(stroke)
    near = tip_x + 58.0 / 0.3125  # 58 mm: taken
    assert lateral.set_wall([(near, 100), (near, 300)]).startswith("posterior wall replaced")


def test_a_frame_of_another_size_is_reported_not_fatal():
    analyzer = PlaneAnalyzer("lateral", "MONOCHROME2", "LIN", 12, 0.2)
    frame = np.random.default_rng(0).integers(900, 1100, (64, 64)).astype(np.uint16)
    for i in range(3):
        analyzer.process(frame, i)
    result = analyzer.process(np.resize(frame, (80, 64)), 3)
    assert result.status.startswith("error: frame is (80, 64)")
    assert analyzer.process(frame, 4).status != "baseline"


def test_a_log_scale_that_cannot_be_measured_is_said_on_every_result(recordings):
    """A detector whose processing smoothed the noise leaves no quantum noise to measure
    the LOG scale from: the volume then rests on a guess, and every result says so."""
    r, _ = recordings["posterior-leak"]
    with open_recording(r.lateral) as rec:
        info = rec.info
        frames = [rec.frame(i) for i in range(12)]
    assert info.intensity_relationship == "LOG"
    statuses = {}
    for name, stream in (("raw", frames), ("smoothed", [cv2.GaussianBlur(f, (0, 0), 0.7) for f in frames])):
        plane = PlaneAnalyzer(
            "lateral", info.photometric, "LOG", info.bits_stored, info.spacing_at_vertebra_mm()[0]
        )
        statuses[name] = [plane.process(f, i).status for i, f in enumerate(stream)][3:]
    assert statuses["raw"] == ["ok"] * 9
    assert all(s.startswith("log-scale-guessed: ") for s in statuses["smoothed"])


def test_blank_and_saturated_frames_are_skipped_not_measured(recordings):
    """A dropped-out frame (all black) or a blown-out one (all white) mid-injection neither
    enters the baseline nor produces cement, distance or an alarm; the next real frame is
    measured as before."""
    r, _ = recordings["posterior-leak"]
    with open_recording(r.lateral) as rec:
        info = rec.info
        frames = [rec.frame(i) for i in range(23)]
    plane = PlaneAnalyzer(
        "lateral",
        info.photometric,
        info.intensity_relationship,
        info.bits_stored,
        info.spacing_at_vertebra_mm()[0],
    )
    top = 2**info.bits_stored - 1
    assert plane.process(np.zeros_like(frames[0]), 0).status.startswith(
        "skipped: blank"
    )  # not in the baseline
    for i in range(1, 21):
        before = plane.process(frames[i], i)
    for bad, why in ((np.zeros_like(frames[0]), "blank"), (np.full_like(frames[0], top), "saturated")):
        result = plane.process(bad, 21)
        assert result.status.startswith(f"skipped: {why}")
        assert result.distance_mm is None and result.volume_ml is None and not result.leaks
    after = plane.process(frames[21], 21)
    assert after.status == before.status == "ok"
    assert abs(after.distance_mm - before.distance_mm) < 1.0


def test_syringe_events_calibrate_the_volume(tmp_path):
    """The operator enters the syringe volume at the frame the truth delivered it: from then on
    the reported volume follows the syringe (the cement's attenuation is recalibrated). The
    configured attenuation is 80 % too high, as for a cement far less radiopaque than expected:
    the image's darkness reads about 45 % low, and over the level a median share of the shape's
    truth under 0.70 (the shape reads this world's boluses 0.98x since its outline is cut at a
    share of the bolus's darkness; 1.16x before, when a darkness 20 % low was already under it),
    so until the syringe the volume said is the shape's, with the caveat that the darkness reads
    low."""
    import time

    from monitor.analyzer import VisionAnalysis
    from monitor.io.sources import DicomPairSource
    from monitor.io.transport import Frame
    from monitor.messages import Command, FrameHeader
    from monitor.recordings import default_recording
    from tests.conftest import load_truth

    rec = default_recording()
    truth = load_truth(rec.lateral.parent)
    injected = [f["injected_ml"] for f in truth["frames"]]
    at = next(i for i, v in enumerate(injected) if v >= 1.5)
    source = DicomPairSource(rec.lateral, rec.ap)
    analysis = VisionAnalysis(AnalysisConfig(Physics(cement_mu_per_mm=1.8 * DEFAULT_CEMENT_MU)), level="L1")
    volumes, darkness, codes, said = {}, {}, {}, None
    for item in source.frames():
        fmt = source.formats[item.plane]
        h = FrameHeader(
            "s", item.plane, item.index, item.index, item.acq_time, time.time(), item.pixels.shape,
            str(item.pixels.dtype), fmt.photometric, fmt.bits_stored, fmt.intensity, fmt.scale,
        )  # fmt: skip
        result = analysis.process(Frame(h, item.pixels, time.time(), 0))
        volumes[item.index] = result.volume_ml
        darkness[item.index] = analysis.last_volume.darkness_ml if analysis.last_volume else None
        codes[item.index] = result.caveat_codes()
        if item.plane == "ap" and item.index == at:
            said = analysis.apply(Command("s", "test", time.time(), "syringe", round(injected[at], 2)))
    source.close()
    assert "anchored on the syringes" in said
    assert result.volume_scale == pytest.approx(analysis.volume_scale, abs=1e-3) != 1.0
    assert darkness[at - 1] < 0.6 * injected[at - 1]  # before: the image's darkness reads 45 % low
    assert CaveatCode.VOLUME_BELOW_SHAPE in codes[at - 1]
    assert CaveatCode.VOLUME_BELOW_SHAPE not in codes[at + 1]  # the syringe is the reference now
    assert volumes[at + 1] == pytest.approx(injected[at + 1], rel=0.03)  # at once on the syringe's scale
    assert abs(volumes[47] / injected[47] - 1) < 0.08  # and still within 8 % of the truth at the end


@pytest.mark.parametrize("move_mm", [5.0, -4.0])
def test_a_needle_moved_mid_injection_reads_as_neither_cement_nor_leak(tmp_path, move_mm):
    """The operator pulls the cannula back 5 mm, or pushes it 4 mm further, after
    the baseline: the steel that left or arrived is not cement, so the distance
    and the volume stay on the truth and no alarm is raised."""
    from monitor.sim.simulate import SimConfig, simulate

    truth = simulate(
        SimConfig(
            seed=81,
            level="L2",
            size=384,
            frames=24,
            fps=10.0,
            breathing_mm=1.0,
            needle_move_frame=12,
            needle_move_mm=move_mm,
        ),
        tmp_path,
    )
    got = analyse(tmp_path / "lateral.dcm", tmp_path / "ap.dcm")
    assert [a for a in got["alarms"] if a["priority"] == "high"] == []
    after = [f for f in truth["frames"] if f["frame"] >= 12 and f["distance_mm"] is not None]
    errors = [abs(got["distance"][f["frame"]] - f["distance_mm"]) for f in after]
    assert len(errors) == len(after) and max(errors) < 1.0
    final = truth["frames"][-1]
    assert got["volume"][final["frame"]] == pytest.approx(final["injected_ml"], rel=0.15)


def _replay_with_override(tmp_path, override) -> tuple[dict, list[float]]:
    """The bundled case replayed with an operator's override (``override`` makes the
    flag and its value from the truth, the mm per pixel and the tip's column): the
    logged distances, and each one's error against the truth 2 mm nearer."""
    from monitor.recordings import default_recording
    from tests.conftest import monitor_cli

    rec = default_recording()
    truth = json.loads(rec.truth.read_text())
    with open_recording(rec.lateral) as r:
        pixel_mm = r.info.spacing_at_vertebra_mm()[1]
    flag, value = override(truth, pixel_mm, truth["cannulas"][0]["tip_px"]["lateral"][0])
    done = monitor_cli(
        "replay", "--lateral", rec.lateral, "--ap", rec.ap, flag, value, "--session", tmp_path / "s",
        "--headless", "--speed", "0", "--level", "L1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(monitor_cli("audit", tmp_path / "s", "--json").stdout)
    measured = {f["frame"]: f["distance_mm"] for f in report["levels"][0]["frames"]}
    errors = [
        measured[f["frame"]] - (f["distance_mm"] - 2.0)
        for f in truth["frames"]
        if f["distance_mm"] is not None and f["distance_mm"] <= 15 and measured.get(f["frame"]) is not None
    ]
    return measured, errors


def test_a_wall_given_on_the_command_line_is_the_one_measured_to(tmp_path):
    """The operator's wall, drawn 2 mm anterior of the true one, replaces the wall
    found: every distance reads about 2 mm less than the truth, the session log
    keeps the wall, and a malformed wall is refused before anything starts."""
    from monitor.io.store import SessionStore
    from monitor.recordings import default_recording
    from tests.conftest import monitor_cli

    drawn = []

    def wall(truth, pixel_mm, tip_x):
        # the operator draws along the wall: a line through its points, from end to end
        points = np.asarray(truth["frames"][0]["wall_px"])
        a, b = np.polyfit(points[:, 1], points[:, 0], 1)
        y1, y2 = float(points[:, 1].min()), float(points[:, 1].max())
        inward = 2.0 / pixel_mm * np.sign(tip_x - (a * y1 + b))  # towards the body, where the tip is
        drawn.extend([[a * y1 + b + inward, y1], [a * y2 + b + inward, y2]])
        return "--wall", ",".join(str(v) for point in drawn for v in point)

    measured, errors = _replay_with_override(tmp_path, wall)
    assert len(errors) > 20 and abs(float(np.median(errors))) < 0.5
    assert SessionStore.open(tmp_path / "s").meta()["posterior_wall"] == drawn
    again = monitor_cli(
        "replay", "--session", tmp_path / "s", "--log", tmp_path / "again", "--headless", "--speed", "0"
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    replayed = json.loads(monitor_cli("audit", tmp_path / "again", "--json").stdout)["levels"][0]["frames"]
    assert {f["frame"]: f["distance_mm"] for f in replayed} == measured  # with the same wall
    rec = default_recording()
    bad = monitor_cli("replay", "--lateral", rec.lateral, "--ap", rec.ap, "--wall", "1,2,3", "--headless")
    assert bad.returncode != 0 and "X1,Y1,X2,Y2" in bad.stderr


def test_a_cleft_given_on_the_command_line_is_logged_said_and_kept_on_replay(tmp_path):
    """``--cleft`` (the first level has a cleft the operator knows of from the images before the
    procedure) is said and logged once with its time, as the operator's "cleft" command would be,
    shows in the QA audit's operator events, is on every result the level gives (the viewer's
    Known cleft button shows it), and is kept when the logged session is replayed; without it
    the results say no cleft is known."""
    from monitor.io.store import SessionStore
    from monitor.recordings import default_recording
    from tests.conftest import monitor_cli

    rec = default_recording()

    def replay(folder, *extra):
        done = monitor_cli(
            "replay", *extra, "--session", folder, "--headless", "--speed", "0", "--level", "L1",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        store = SessionStore.open(folder)
        try:
            said = {
                r.body["known_cleft"] for r in store.records("result") if r.body.get("status") != "baseline"
            }
        finally:
            store.close()
        return said, json.loads(monitor_cli("audit", folder, "--json").stdout)["levels"][0]

    said, level = replay(tmp_path / "s", "--lateral", rec.lateral, "--ap", rec.ap, "--cleft")
    assert said == {True}
    events = [e for e in level["operator_events"] if e["event"] == "cleft"]
    assert len(events) == 1 and events[0]["time"] is not None, level["operator_events"]
    assert "command line" in events[0]["detail"] and "possible disc leak" in events[0]["detail"]
    text = monitor_cli("audit", tmp_path / "s").stdout
    assert "CLEFT" in text and "an intravertebral cleft is known" in text, text
    done = monitor_cli(
        "replay", "--session", tmp_path / "s", "--log", tmp_path / "again", "--headless", "--speed", "0"
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    store = SessionStore.open(tmp_path / "again")
    try:
        assert {r.body["known_cleft"] for r in store.records("result")} == {True}
    finally:
        store.close()
    assert replay(tmp_path / "none", "--lateral", rec.lateral, "--ap", rec.ap)[0] == {False}


def test_a_body_box_given_on_the_command_line_is_the_outline_measured_to(tmp_path):
    """The operator's lateral body box, its posterior side 2 mm anterior of the true
    wall, replaces the outline found: the distances read about 2 mm less than the
    truth; the box is kept in the session log; a malformed box is refused."""
    from monitor.io.store import SessionStore
    from monitor.recordings import default_recording
    from tests.conftest import monitor_cli

    drawn = []

    def box(truth, pixel_mm, tip_x):
        wall = np.asarray(truth["frames"][0]["wall_px"])
        inward = np.sign(tip_x - wall[:, 0].mean())
        posterior_x = float(np.median(wall[:, 0])) + inward * 2.0 / pixel_mm
        depth = 30.0 / pixel_mm
        x0 = posterior_x if inward > 0 else posterior_x - depth
        drawn.extend([x0, float(wall[:, 1].min()), depth, float(np.ptp(wall[:, 1]))])
        return "--body", "lateral:" + ",".join(map(str, drawn))

    _, errors = _replay_with_override(tmp_path, box)
    assert len(errors) > 20 and abs(float(np.median(errors))) < 0.6, float(np.median(errors))
    assert SessionStore.open(tmp_path / "s").meta()["body_boxes"] == {"lateral": drawn}
    rec = default_recording()
    bad = monitor_cli(
        "replay", "--lateral", rec.lateral, "--ap", rec.ap, "--body", "side:1,2,3,4", "--headless"
    )
    assert bad.returncode != 0 and "PLANE:X,Y,W,H" in bad.stderr


def test_scatter_is_solved_for_where_the_spine_is_darker_than_around_it():
    """Primary dark in the middle (spine and a bolus) and bright around it, scatter
    f G*P added: the scatter found under the bolus is within 1 % of the truth,
    where the one-step shortcut f/(1+f) G*measured is several per cent over."""
    from monitor.vision.scatter import scatter_in as _scatter

    yy, xx = np.mgrid[0:48, 0:48].astype(np.float32)
    primary = np.where(np.abs(xx - 24) < 8, 0.05, 1.0).astype(np.float32)  # the spine, a column
    primary[(xx - 24) ** 2 + (yy - 24) ** 2 < 9] = 0.002  # a bolus of cement in it
    fraction, sigma = 0.3, 4.0
    true = fraction * cv2.GaussianBlur(primary, (0, 0), sigma)
    measured = primary + true
    found = _scatter(measured, fraction, sigma)
    shortcut = fraction / (1 + fraction) * cv2.GaussianBlur(measured, (0, 0), sigma)
    under = (xx - 24) ** 2 + (yy - 24) ** 2 < 9
    assert np.abs(found[under] / true[under] - 1).max() < 0.01
    assert (shortcut[under] / true[under]).min() > 1.04


def test_cement_pushed_back_along_the_needle_is_read_under_its_steel(tmp_path):
    """Cement running back along the cannula towards the wall hides in the steel's
    shadow in both views. Read along the tube's middle, over the lumen's own
    cement, it raises the proximity alarm within 1 frame of the crossing (2 frames
    late when only cement beside the steel was read), the front marked as read
    under the cannula, and the distances there stay within 1.5 mm of the truth.
    The same reading brings the lateral volume, whose bolus lies mostly under the
    shaft in that view, within 4 % of the truth (median; 8 % at worst), where
    interpolating across the shaft read it 10-14 % low."""
    from monitor.sim.simulate import SimConfig, simulate

    truth = simulate(
        SimConfig(seed=97, scenario="proximity", level="L3", size=512, frames=32, fps=7.5, mirror=True),
        tmp_path,
    )
    got = analyse(tmp_path / "lateral.dcm", tmp_path / "ap.dcm", overlay=True)
    alarms = _high(got["alarms"], "proximity")
    crossing = truth["proximity_frame"]
    assert alarms and abs(alarms[0]["frame"] - crossing) <= 1, (crossing, alarms[:1])
    under = [
        f for (plane, f), o in got["overlay"].items() if plane == "lateral" and o.get("front_under_cannula")
    ]
    assert alarms[0]["frame"] in under
    frames = {f["frame"]: f["distance_mm"] for f in truth["frames"]}
    assert all(abs(got["distance"][f] - frames[f]) < 1.5 for f in under if frames[f] is not None)
    injected = {f["frame"]: f["injected_ml"] for f in truth["frames"]}
    errors = [got["plane_volume"][("lateral", f)] / v - 1 for f, v in injected.items() if v >= 0.45]
    assert len(errors) > 10 and float(np.median(np.abs(errors))) < 0.04 and max(map(abs, errors)) < 0.08, (
        errors
    )


def test_without_a_scale_there_are_no_millimetres():
    analyzer = PlaneAnalyzer("lateral", "MONOCHROME2", "LIN", 12, None)
    rng = np.random.default_rng(0)
    results = [analyzer.process(rng.poisson(1000, (96, 96)).astype(np.uint16), i) for i in range(5)]
    assert all(r.distance_mm is None and r.volume_ml is None for r in results)


def test_command_line_input_that_cannot_be_applied_is_said_on_every_result():
    """The command line's wall and box go through the analyzer's command path once each
    plane's baseline is in, as a viewer's edits do; refused there (a box under 8 mm, a wall
    of two points 1 pixel apart), each is said on every later result of its plane, and the
    plane is measured with the outline found."""
    from monitor.analyzer import VisionAnalysis
    from monitor.messages import PLANES
    from monitor.recordings import default_recording
    from monitor.vision.analysis import OperatorInput

    rec = default_recording()
    operator = OperatorInput(((150.0, 180.0), (151.0, 181.0)), (("ap", (100.0, 120.0, 5.0, 5.0)),))
    analysis = VisionAnalysis(AnalysisConfig(operator=operator))
    results = [r for _, r in analyse_source(DicomPairSource(rec.lateral, rec.ap), analysis)]
    measured = [r for r in results if r.status != "baseline"]
    codes = {plane: [r.caveat_codes() for r in measured if r.plane == plane] for plane in PLANES}
    assert codes["lateral"] and all(c == {CaveatCode.OPERATOR_WALL_UNUSED} for c in codes["lateral"])
    assert codes["ap"] and all(c == {CaveatCode.OPERATOR_BOX_UNUSED} for c in codes["ap"])
    lateral = [r for r in measured if r.plane == "lateral"]
    assert all("at least" in r.status for r in lateral)
    assert any(r.distance_mm is not None for r in lateral)  # measured to the wall found


def test_a_restarted_analyzer_knows_what_each_view_read_of_leaks_and_scatter(recordings, tmp_path):
    """Through the real pipeline into a session log, then an analyzer restarted on it: what the
    views read of leaks that the next frames can use is what the analysis that ran without a
    restart knew: the sites read at leak size on each view's last frame (confirmed by one more
    reading), the time of each view's last such reading within the last 0.3 s (the AP's backs a
    lateral leak), and whether each view checked the leak rules. So is the cement's halo's
    finding that the images hold scatter (at frame 26 of this case): before, the restarted
    analyzer watched the halo again, on a bolus grown since, and could drop the correction
    partway through the level where the live one had kept it."""
    from monitor.analyzer import VisionAnalysis
    from monitor.vision.analysis import LEAK_CORROBORATION_S

    recording, _ = recordings["venous-leak"]
    through = VisionAnalysis()
    last: dict[str, tuple[int, float]] = {}  # plane -> its last frame and stream time
    source = DicomPairSource(recording.lateral, recording.ap)
    for item, result in analyse_source(source, through):
        last[item.plane] = (item.index, result.acq_time)
    source.close()
    restarted = _restarted_on_its_log(recording.lateral, recording.ap, tmp_path / "s")
    knew, knows = through.case, restarted.case

    def on_last_frame(pending):
        return {key: f for key, f in pending.items() if f == last[key.split(":")[0]][0]}

    def recent(read_at):
        return {p: t for p, t in read_at.items() if t >= last[p][1] - LEAK_CORROBORATION_S}

    assert on_last_frame(knew._pending) and recent(knew._leak_read_at)  # the recording's leak is read
    assert on_last_frame(knows._pending) == on_last_frame(knew._pending)
    assert recent(knows._leak_read_at) == pytest.approx(recent(knew._leak_read_at))
    assert knows._checks_leaks == knew._checks_leaks
    assert knew.scatter_seen is True and knows.scatter_seen is True
    assert not any(p.halo_open for p in knows.planes.values())


def _replayed_and_audited(lateral, ap, session):
    """``monitor replay`` of the pair into a session log at ``session`` (level L1), as a user
    runs it; its completed process and ``monitor audit``'s JSON of the log."""
    from monitor.audit import audit_json
    from monitor.io.store import SessionStore
    from tests.conftest import monitor_cli

    done = monitor_cli(
        *("replay", "--lateral", lateral, "--ap", ap, "--headless", "--speed", "0"),
        *("--session", session, "--level", "L1", "--operator", "test"),
    )
    store = SessionStore.open(session)
    try:
        return done, audit_json(store)
    finally:
        store.close()


def test_a_view_whose_frames_stop_leaves_the_level_to_the_other_and_says_so(tmp_path, recordings):
    """The AP's frames stop after its frame 19 of the bundled posterior-leak case (a grabber
    unplugged) and come back 2.3 s later. Its last outline and darkness stayed in the level's
    volume: 2.40 mL (2.26-2.66) at the end for 3.35 mL injected, said as two views' reading,
    and nothing said the AP had stopped. Now, a second on, the lateral's results say it
    (`view-silent`), the volume is the lateral's alone with its wider interval, the session log
    and the audit say when it stopped and came back; and the AP's return ends it."""
    import pydicom

    from monitor.audit import text_report
    from tests.test_dicom_variants import rewrite

    case, truth = recordings["posterior-leak"]
    kept = [*range(20), *range(38, 48)]  # AP frames 20-37 never sent

    def gap(ds, frames):
        step = float(ds.FrameTime)
        ds.FrameTimeVector = [0.0] + [step * (b - a) for a, b in zip(kept[:-1], kept[1:], strict=True)]
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTimeVector")
        ds.NumberOfFrames = len(kept)
        return np.ascontiguousarray(frames[kept])

    ap = rewrite(case.ap, tmp_path / "ap.dcm", gap)
    source = DicomPairSource(case.lateral, ap)
    found = {}
    try:
        for item, result in analyse_source(source):
            found[(item.plane, item.index)] = result
    finally:
        source.close()
    silent = [i for i in range(48) if CaveatCode.VIEW_SILENT in found[("lateral", i)].caveat_codes()]
    # silent from the lateral frame more than 1 s after the AP's last (frame 19, 2.53 s: lateral
    # frame 27, 3.60 s) to the AP's next (its recording's frame 20, acquired with lateral frame
    # 38, which is read first)
    assert silent == list(range(27, 39)), silent
    assert not any(CaveatCode.VIEW_SILENT in r.caveat_codes() for (p, _), r in found.items() if p == "ap")
    while_silent = found[("lateral", 37)]
    assert CaveatCode.VOLUME_ONE_VIEW in while_silent.caveat_codes()  # the lateral's shape alone
    injected = truth["frames"][37]["injected_ml"]
    assert while_silent.volume_low_ml <= injected <= while_silent.volume_high_ml, (
        while_silent.volume_low_ml,
        injected,
        while_silent.volume_high_ml,
    )

    done, report = _replayed_and_audited(case.lateral, ap, tmp_path / "s")
    assert done.returncode == 0, done.stderr
    level = report["levels"][0]
    said = [(e["event"], e["value"]) for e in level["views"]]
    assert said[0] == ("view-silent", {"plane": "ap", "last_s": 2.533, "frame": 19})
    assert said[1][0] == "view-resumed" and said[1][1]["plane"] == "ap" and said[1][1]["frame"] == 20
    assert len(said) == 2
    rows = [c for c in level["caveats"] if "view-silent" in c["status"]]
    assert [(c["plane"], c["first_frame"], c["last_frame"]) for c in rows] == [("lateral", 27, 38)]
    assert "VIEW  " in text_report(report) and "view-silent: no AP frame for" in text_report(report)


@pytest.mark.parametrize("level", [16, 235])
def test_a_black_or_white_screen_with_a_lines_noise_is_a_blank_frame(tmp_path, recordings, level):
    """An analogue grabber sends the C-arm's black (or white) screen with its line's noise (sd
    1.5 stored values) for frames 8-20 of both views: each was read as a frame with no cement
    (0.0 mL against 0.3-1.4, no distance, the level said monitored) and the frames after them
    raised false leaks (an independent test). Each is a blank frame now, skipped and said; the
    first frame after them alarms the 5 mm crossing as it should, and no leak is raised before
    the case's own."""

    case, truth = recordings["posterior-leak"]
    noise = np.random.default_rng(7)

    def screen(ds, frames):
        frames = frames.copy()
        flat = level + noise.normal(0.0, 1.5, frames[8:21].shape)
        frames[8:21] = np.clip(np.round(flat), 0, 255).astype(frames.dtype)
        return frames

    out = _analysed_edited(case, tmp_path, screen)
    blank = {key for key, codes in out["caveats"].items() if CaveatCode.BLANK_FRAME in codes}
    assert blank == {(plane, i) for plane in ("lateral", "ap") for i in range(8, 21)}, sorted(blank)
    assert all(out["status"][(p, i)].startswith("skipped") for p, i in blank)
    onset = truth["leak"]["onset_frame"]
    leaks = [a["frame"] for a in out["alarms"] if a["kind"] == "extravasation"]
    assert leaks and min(leaks) >= onset - 1, leaks
    assert [a["frame"] for a in _high(out["alarms"], "proximity")][:1] == [21]  # the crossing, at frame 10
    assert out["distance"][21] is not None and out["distance"][21] < 5.0


def test_a_view_flipped_on_the_display_mid_run_is_said_changed_not_read_as_cement(tmp_path, recordings):
    """An independent test flipped the bundled posterior-leak case's lateral view left-right from
    frame 20 on (a C-arm's display setting): a false high paravertebral leak at frame 21, the
    distance 21 mm against a truth of 2 mm down to -5 mm, and no caveat. Each flipped frame is
    now said changed and skipped (the level not monitored in that view), and no leak is raised
    off it; the AP view goes on being read."""

    case, _truth = recordings["posterior-leak"]

    def flipped(ds, frames):
        frames = frames.copy()
        frames[20:] = frames[20:, :, ::-1]
        return frames

    out = _analysed_edited(case, tmp_path, flipped, planes=("lateral",))
    changed = sorted(key for key, codes in out["caveats"].items() if CaveatCode.IMAGE_CHANGED in codes)
    assert changed == [("lateral", i) for i in range(20, 48)], changed
    assert all(out["status"][key].startswith("skipped: image changed") for key in changed)
    assert all(out["distance"][i] is None for i in range(20, 48))
    leaks = [a for a in out["alarms"] if a["kind"] == "extravasation"]
    assert not [a for a in leaks if a["plane"] == "lateral" and a["frame"] >= 20], leaks
    assert not any(CaveatCode.IMAGE_CHANGED in out["caveats"][("ap", i)] for i in range(48))


@pytest.mark.parametrize("ink", [255, 128])  # white text (the frame's top value), and grey
def test_a_held_image_under_a_running_clock_is_held(tmp_path, recordings, ink):
    """Frames 20-29 of both views the image of frame 19, as a frame grabber sends the screen,
    but with a clock drawn in a corner that changes every frame: only an exact repeat was held,
    so each was read as a new exposure, the level said monitored while cement went in unseen
    (an independent test). Held from half a second on now, as without the clock; the frames
    before and after are read as before."""
    import cv2

    case, _truth = recordings["posterior-leak"]

    def held_under_a_clock(ds, frames):
        frames = frames.copy()
        for i in range(20, 30):
            frames[i] = frames[19]
        for i in range(len(frames)):
            clock = np.ascontiguousarray(frames[i])
            cv2.putText(clock, f"00:{i:02d}.{i * 7 % 10}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, ink, 1)
            frames[i] = clock
        return frames

    out = _analysed_edited(case, tmp_path, held_under_a_clock)
    said = {key for key, codes in out["caveats"].items() if CaveatCode.IMAGE_HELD in codes}
    assert said == {(plane, i) for plane in ("lateral", "ap") for i in range(23, 30)}, sorted(said)
    assert out["distance"][30] is not None and out["distance"][19] is not None


def test_a_grabber_sending_each_pulse_five_times_is_read_as_the_pulses_are(tmp_path, recordings):
    """Each frame of the bundled posterior-leak case sent 5 times (a grabber at 5 times the
    pulse rate): the check for an image no longer matching its baseline learnt its usual spread
    from copies of the baseline's own exposure, then read 456 of the 480 frames as changed, the
    leak never alarmed (an independent review). It learns from new exposures only: no frame is
    said changed, and both alarms come on the copies of the pulses they came on before."""

    case, _truth = recordings["posterior-leak"]

    def five_times(ds, frames):
        ds.FrameTime = float(ds.FrameTime) / 5
        for tag in ("CineRate", "RecommendedDisplayFrameRate"):
            if tag in ds:
                del ds[tag]
        ds.NumberOfFrames = 5 * len(frames)
        return np.repeat(frames, 5, axis=0)

    out = _analysed_edited(case, tmp_path, five_times)
    assert not any(CaveatCode.IMAGE_CHANGED in codes for codes in out["caveats"].values())
    first = {}
    for a in out["alarms"]:
        if a["priority"] == "high":
            first.setdefault(a["kind"], a["frame"] // 5)  # the pulse it came on
    assert first == {"proximity": 9, "extravasation": 37}, first


@pytest.mark.parametrize(
    ("case_name", "factor"), [("no-leak", 1.1), ("posterior-leak", 1.1), ("no-leak", 1.05)]
)
def test_a_display_contrast_turned_up_mid_run_is_taken_out_not_read_as_cement(
    tmp_path, recordings, analysed, case_name, factor
):
    """The display's contrast turned up 10 % about the mean from frame 20, in both views (a
    frame grabber's feed, an independent adversarial test): the difference from the baseline then
    rose with the bone's density, and the no-leak case alarmed a high posterior leak at frame 20
    and a 5 mm crossing at 21 (the pedicle read as cement beyond the wall). The dependence is
    now read and taken out, and said: the alarms are the unedited recording's, high, and the
    distances within 1 mm of its (a median 0.01 mm off). x1.05 spans less than the curve is
    first read from on the later frames, where the bolus has grown over the dense bone: read
    only where it spanned enough, the pedicle was read as cement at frames 33-34 (a false leak
    and 5 mm alarm); once found, a view's curve is read on every later frame."""
    case, _truth = recordings[case_name]

    def turned_up(ds, frames):
        f = frames.astype(np.float64)
        mean = f[0].mean()
        f[20:] = (f[20:] - mean) * factor + mean
        return np.clip(np.rint(f), 0, 2 ** int(ds.BitsStored) - 1).astype(frames.dtype)

    out = _analysed_edited(case, tmp_path, turned_up)
    original = analysed[case_name]

    def high(alarms):
        return sorted((a["frame"], a["kind"], a.get("site")) for a in alarms if a["priority"] == "high")

    assert high(out["alarms"]) == high(original["alarms"])
    off = [
        abs(out["distance"][i] - original["distance"][i])
        for i in range(20, 48)
        if original["distance"].get(i) is not None
    ]
    assert len(off) >= 24 and max(off) <= 1.0 and float(np.median(off)) <= 0.1, off  # (seen 0.6, 0.39; 0.01)
    said = {
        i
        for (plane, i), codes in out["caveats"].items()
        if plane == "lateral" and CaveatCode.CONTRAST_CHANGED in codes
    }
    assert said == set(range(min(said), 48)) and 20 <= min(said) <= 22  # from the change on (said)


def test_a_blurred_image_is_matched_or_skipped_not_read_as_cement(tmp_path, recordings, analysed):
    """Both views blurred by a sd of 2 pixels from frame 8 (the patient moving during the
    exposures, an intensifier's focus, a grabber's processing; an independent adversarial test),
    and blurred by 8 at frames 40-41. The blurred anatomy's edges were read as cement: the
    posterior-leak case alarmed a false disc leak at 9 and venous at 14 and read the front
    12-14 mm beyond the wall, and the no-leak case alarmed leaks of three sites with nothing
    said. The blur is now read from the difference (it follows the anatomy's second derivative)
    and the baseline blurred alike: the alarms are the unedited recording's, within a frame,
    the distances within 1.5 mm of its, and each blurred frame says so; the frames blurred past
    reading are skipped as such, no rule checked on them. Sharpened by an unsharp mask instead
    (edge enhancement turned up), the no-leak case raises no alarm."""
    case, _truth = recordings["posterior-leak"]

    def blurred(ds, frames):
        out = frames.copy()
        for i in range(8, len(out)):
            out[i] = cv2.GaussianBlur(out[i], (0, 0), 8.0 if i in (40, 41) else 2.0)
        return out

    out = _analysed_edited(case, tmp_path, blurred)
    original = analysed["posterior-leak"]

    def high(alarms):
        return sorted((a["kind"], a.get("site"), a["frame"]) for a in alarms if a["priority"] == "high")

    got, want = high(out["alarms"]), high(original["alarms"])
    assert [g[:2] for g in got] == [w[:2] for w in want], (got, want)
    assert all(abs(g[2] - w[2]) <= 1 for g, w in zip(got, want, strict=True)), (got, want)  # (seen 1 early)
    off = [
        abs(out["distance"][i] - original["distance"][i])
        for i in range(8, 48)
        if original["distance"].get(i) is not None and out["distance"].get(i) is not None
    ]
    assert len(off) >= 34 and max(off) <= 1.5, off  # (seen at most 1.1, a median 0.64)
    for plane in ("lateral", "ap"):
        codes = {i: out["caveats"][(plane, i)] for i in range(8, 48)}
        skipped = {i for i, c in codes.items() if CaveatCode.BLURRED_FRAME in c}
        assert skipped == {40, 41}, (plane, skipped)
        assert out["status"][(plane, 40)].startswith("skipped"), out["status"][(plane, 40)]
        assert all(CaveatCode.BLUR_MATCHED in c for i, c in codes.items() if i not in skipped), plane
    assert not [a for a in out["alarms"] if a["frame"] in (40, 41)]

    def sharpened(ds, frames):
        f = frames.astype(np.float32)
        f[8:] += f[8:] - np.stack([cv2.GaussianBlur(x, (0, 0), 2.0) for x in f[8:]])
        return np.clip(np.rint(f), 0, 2 ** int(ds.BitsStored) - 1).astype(frames.dtype)

    (tmp_path / "sharpened").mkdir()
    quiet = _analysed_edited(recordings["no-leak"][0], tmp_path / "sharpened", sharpened)
    assert not high(quiet["alarms"]) and not high(analysed["no-leak"]["alarms"])
    assert CaveatCode.BLUR_MATCHED in quiet["caveats"][("lateral", 20)]


def test_a_held_image_is_no_new_exposure_and_is_said_not_monitored(tmp_path, recordings):
    """Fluoroscopy off for 10 frames (lateral and AP frames 20-29 the C-arm's last image, frame
    19, held, as a frame grabber sends the screen): each was analysed as a new exposure, the
    cement read as having stopped growing, "no alarm" meant, and the audit counted the frames
    monitored. From half a second after the last exposure (frame 23, 0.53 s) they are skipped as
    no new exposure and said, and the level is said not monitored for that stretch; sooner, a
    held frame is the same exposure shown again (a grabber sends each pulse several times) and
    is read as before. The frames after the hold are read as before."""
    from tests.test_dicom_variants import rewrite

    case, _truth = recordings["posterior-leak"]

    def held(ds, frames):
        frames = frames.copy()
        frames[20:30] = frames[19]
        return frames

    lateral = rewrite(case.lateral, tmp_path / "lateral.dcm", held)
    ap = rewrite(case.ap, tmp_path / "ap.dcm", held)
    out = analyse(lateral, ap)
    said = {key for key, codes in out["caveats"].items() if CaveatCode.IMAGE_HELD in codes}
    assert said == {(plane, i) for plane in ("lateral", "ap") for i in range(23, 30)}, sorted(said)
    assert all(out["distance"][i] is None for i in range(23, 30))
    assert out["distance"][22] == out["distance"][21] == out["distance"][20]  # the same exposure
    assert out["status"][("lateral", 25)].startswith("skipped: image held: no new exposure since frame 19")
    assert out["distance"][30] is not None  # read again from the next exposure
    original = analyse(case.lateral, case.ap)
    assert [d for i, d in original["distance"].items() if i < 20] == [
        d for i, d in out["distance"].items() if i < 20
    ]
    high_leaks = [a for a in out["alarms"] if a["kind"] == "extravasation" and a["priority"] == "high"]
    assert high_leaks and high_leaks[0]["site"] == "posterior"  # the leak after the hold, still seen

    # a C-arm pulsing about once a second through the grabber (each exposure sent 7 times):
    # every copy is of an exposure under 3 of its steps old, read as before, nothing skipped
    # (skipped from 0.5 s, 3 copies in 7 went unchecked, the level NOT MONITORED: a review)
    def pulsed(ds, frames):
        return np.ascontiguousarray(frames[[i - i % 7 for i in range(len(frames))]])

    slow = analyse(
        rewrite(case.lateral, tmp_path / "l-pulsed.dcm", pulsed),
        rewrite(case.ap, tmp_path / "a-pulsed.dcm", pulsed),
    )
    assert not any(CaveatCode.IMAGE_HELD in codes for codes in slow["caveats"].values())

    # the first frame 2 % dimmer (the tube ramping up): nothing held, the alarms as the original's
    # (the first version, judging against the usual change, skipped frames 8-47: an independent
    # review found it, every alarm lost)
    def dimmed(ds, frames):
        frames = frames.copy()
        frames[0] = (frames[0] * 0.98).astype(frames.dtype)
        return frames

    ramped = analyse(
        rewrite(case.lateral, tmp_path / "l-dim.dcm", dimmed),
        rewrite(case.ap, tmp_path / "a-dim.dcm", dimmed),
    )
    assert not any(CaveatCode.IMAGE_HELD in codes for codes in ramped["caveats"].values())
    kinds = {(a["kind"], a["priority"]) for a in ramped["alarms"]}
    assert {("proximity", "high"), ("extravasation", "high")} <= kinds

    # the AP alone held from frame 20 on (its grabber showing the last image): its darkness and
    # outline leave the level's volume, as a silent view's do (an independent review: 2.40 mL for
    # 3.35 at the end, the held AP's reading kept)
    def ap_held(ds, frames):
        frames = frames.copy()
        frames[20:] = frames[19]
        return frames

    one = analyse(case.lateral, rewrite(case.ap, tmp_path / "a-held.dcm", ap_held))
    end = _truth["frames"][47]["injected_ml"]
    low, high = one["interval"][("lateral", 47)]
    assert low <= end <= high and abs(one["volume"][47] - end) < 0.1 * end, (one["volume"][47], end)

    done, report = _replayed_and_audited(lateral, ap, tmp_path / "s")
    assert done.returncode == 4 and "NOT MONITORED: level L1" in done.stderr, done.stderr
    level = report["levels"][0]
    covered = {
        (c["plane"], i)
        for c in level["caveats"]
        if "skipped: image held" in c["status"]
        for i in range(c["first_frame"], c["last_frame"] + 1)
    }
    assert covered == said, level["caveats"]  # the audit's rows: frames 23-29 of each view
    assert level["monitoring"]["monitored"] is False  # 1.07 s with no lateral frame checked


def test_an_analyzer_restarted_mid_level_knows_when_each_view_last_sent(recordings, tmp_path):
    """Restored from the session log, an analyzer is fed each view's baseline frames again: the
    AP's newest frame known was then its baseline's, and the first live lateral frame after the
    restart said the AP silent for the whole level ("no AP frame for 6.1 s", an independent
    review). The views' newest results before the restart are now recalled as heard."""
    import dataclasses

    from monitor.analyzer import _header_from_record
    from monitor.io.store import SessionStore
    from monitor.io.transport import Frame

    case, _ = recordings["posterior-leak"]
    session = tmp_path / "s"
    restarted = _restarted_on_its_log(case.lateral, case.ap, session)
    assert restarted.case.silent == {}
    store = SessionStore.open(session)
    try:
        last = [r for r in store.records("frame") if r.plane == "lateral"][-1]
        header = dataclasses.replace(
            _header_from_record(last),
            acq_time=last.body["acq_time"] + 0.1333,
            frame=last.frame + 1,
            seq=last.seq + 1,
        )
        result = restarted.process(Frame(header, store.image(last.rec), 0.0, 0))
    finally:
        store.close()
    assert CaveatCode.VIEW_SILENT not in result.caveat_codes(), result.status
    assert not [n for n in restarted.news() if n[0].startswith("view")]
