"""The volume in a realistic room whose darkness reads the cement low: the bolus already
there when monitoring began, the shape's estimate and its interval, the syringes entered."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from monitor.sim.simulate import simulate
from monitor.sim.world import World
from tests.realistic_cases import small_case


@pytest.fixture(scope="module")
def low_darkness(tmp_path_factory):
    """A room whose darkness reads the cement low: scatter 1.5x the primary with no grid and a
    polychromatic beam at 80 kVp (256 pixels, 24 frames, about 2.1 mL): (folder, truth)."""
    world = World(kvp=80, opacifier="BaSO4", scatter_to_primary=1.5, grid=False, abc=False)
    folder = tmp_path_factory.mktemp("low") / "case"
    return folder, simulate(small_case(world, scenario="none", frames=24, size=256), folder)


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
