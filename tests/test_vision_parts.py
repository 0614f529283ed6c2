"""The vision core's small parts on small synthetic arrays: pixel grids, the baseline's
windows, the scatter model."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.vision.baseline import BaselineState
from monitor.vision.intensity import IntensityModel
from monitor.vision.pixels import PixelGrid
from monitor.vision.scatter import HaloEvidence, ScatterPhysics, primary_attenuation


@pytest.mark.parametrize(("pixel_mm", "scale"), [(0.19, 1), (0.125, 2), (0.08, 3), (None, 1)])
def test_a_detector_is_binned_towards_a_quarter_millimetre(pixel_mm, scale):
    grid = PixelGrid.for_spacing(pixel_mm)
    assert grid.scale == scale
    assert grid.pixel_mm == (pixel_mm * scale if pixel_mm else None)


def test_working_and_full_pixels_convert_both_ways_about_the_bins_centre():
    grid = PixelGrid.for_spacing(0.125)  # 2x2 bins: working pixel 0 is full pixels 0 and 1
    assert grid.to_full(0, 0) == [0.5, 0.5]
    assert grid.to_full(3, 1, origin=(10, 20)) == [26.5, 42.5]
    assert grid.to_working(26.5, 42.5) == (13.0, 21.0)
    points = np.array([[3.0, 1.0], [0.0, 0.0]])
    assert grid.points_to_full(points, (10, 20)).tolist() == [[26.5, 42.5], [20.5, 40.5]]


def test_a_window_of_the_baseline_is_a_view_of_every_layer():
    h, w = 6, 8
    state = BaselineState(
        np.arange(h * w, dtype=np.float32).reshape(h, w),
        np.zeros((h, w, 4), np.float32),
        np.zeros((h, w), bool),
        (np.ones((h, w), bool), np.full((h, w), 0.5, np.float32)),
        None,
    )
    part = state.window(slice(1, 4), slice(2, 7))
    assert part.attenuation.shape == part.exclude.shape == part.prior[0].shape == (3, 5)
    assert part.layers.shape == (3, 5, 4) and part.scatter_layers is None
    assert part.attenuation[0, 0] == state.attenuation[1, 2]
    assert np.shares_memory(part.layers, state.layers)


def test_without_scatter_the_primary_is_the_measured_attenuation():
    """No scale (or a scatter fraction of 0): nothing is subtracted; with scatter, the
    primary under a uniform field is the measured intensity over 1 + fraction."""
    model = IntensityModel("MONOCHROME2", "LIN", 12)
    pixels = np.full((64, 64), 2000, np.uint16)
    plain = primary_attenuation(pixels, PixelGrid.for_spacing(None), model, ScatterPhysics(0.15, 20.0))
    assert np.allclose(plain, -np.log(2000.0), atol=1e-5)
    grid = PixelGrid.for_spacing(0.25)
    assert np.allclose(primary_attenuation(pixels, grid, model, ScatterPhysics(0.0, 20.0)), plain)
    with_scatter = primary_attenuation(pixels, grid, model, ScatterPhysics(0.15, 20.0))
    assert np.allclose(with_scatter, -np.log(2000.0 / 1.15), atol=2e-3)


def _halo_frame(true_scale: float):
    """A bolus 3.5 mm across at 0.25 mm per pixel, and around it the modelled scatter
    weakening towards the cement (its primary is gone). Where the true scatter is
    ``true_scale`` times the model's, the difference around the bolus moves by the model's
    slope times the scale it has too much."""
    n = 320
    y, x = np.mgrid[:n, :n]
    d = np.hypot(x - n / 2, y - n / 2) * 0.25  # mm from the centre
    mask = d < 3.5
    measured = np.ones((n, n), np.float32)
    scatter = (0.1 - 0.05 * np.exp(-d / 10)).astype(np.float32)
    before = np.dstack([np.ones((n, n), np.float32), np.full((n, n), 0.1, np.float32)])
    slope = scatter / (measured - scatter) - 0.1 / 0.9
    difference = (slope * (1.0 - true_scale)).astype(np.float32)
    return difference, mask, np.zeros((n, n), bool), (measured, scatter), before


@pytest.mark.parametrize("true_scale", [0.0, 1.0])
def test_the_halo_around_the_cement_says_how_much_of_the_modelled_scatter_is_there(true_scale):
    halo = HaloEvidence()
    assert halo.weight == 0 and halo.scale == 1.0  # nothing seen: the configured scatter stands
    halo.add(*_halo_frame(true_scale), px=0.25)
    assert halo.weight > 0 and halo.scale == pytest.approx(true_scale, abs=0.05)
    weight = halo.weight
    halo.add(*_halo_frame(true_scale), px=0.25)  # a second, equally strong frame: same answer
    assert halo.weight == pytest.approx(2 * weight) and halo.scale == pytest.approx(true_scale, abs=0.05)


def _cement(mask: np.ndarray, log_units: float = 0.5):
    from monitor.vision.cement import CementMap

    difference = np.where(mask, log_units, 0.0).astype(np.float32)
    return CementMap(difference, mask, np.full(mask.shape, 0.1, np.float32), 0.01)


def test_specks_do_not_make_the_front_but_a_bolus_does():
    from monitor.vision.measure import substantial

    mask = np.zeros((60, 60), bool)
    mask[10:30, 10:30] = True  # 5 x 5 mm at 0.25 mm per pixel, 0.5 log units: ~0.07 mL
    mask[50, 50] = True  # one pixel
    kept = substantial(_cement(mask), 0.25, 0.18, 0.004).mask
    assert kept[10:30, 10:30].all() and not kept[50, 50]


@pytest.mark.parametrize(
    ("rows", "cols", "site"),
    [
        ((10, 30), (32, 50), "posterior"),  # a sheet 4.5 mm beyond the wall
        ((10, 50), (35, 37), "venous"),  # a streak 10 mm long and 0.5 mm wide, 1.75 mm out
        ((10, 30), (30, 33), None),  # a sliver 0.75 mm deep: the outline's own uncertainty
    ],
)
def test_cement_beyond_the_outline_is_a_leak_by_its_depth_and_shape(rows, cols, site):
    from monitor.vision.measure import find_leaks

    mask = np.zeros((60, 60), bool)
    mask[slice(*rows), slice(*cols)] = True
    beyond = np.tile(np.arange(60, dtype=np.float32) - 29, (60, 1))  # pixels behind a wall at x = 29
    grid = PixelGrid.for_spacing(0.25)
    leaks = find_leaks(
        _cement(mask), {"posterior": (beyond > 0, beyond)}, (0, 0), grid, (100, 200), 0.18, 1.5
    )
    assert [lk.site for lk in leaks] == ([site] if site else [])
    if site:
        x, y, w, h = leaks[0].box
        assert (x, y) == (100 + cols[0], 200 + rows[0]) and (w, h) == (cols[1] - cols[0], rows[1] - rows[0])


def test_a_faint_sheet_behind_the_wall_says_how_far_beyond_it_the_cement_lies():
    """A posterior leak often leaves as a faint sheet apart from the bolus, too small to be the
    front (under ``front_min_ml``), so the front stays at the bolus (tuning seed 5033 read
    +1.1 mm with the cement 2.9 mm beyond the wall). The piece read behind the wall carries how
    far beyond it its own edge lies (at half the sheet's level, the front's rule), in mm and
    image pixels, and where in the image."""
    from monitor.vision.cement import CementMap, front_distance_px
    from monitor.vision.measure import find_leaks, substantial

    wall_x = 29  # the wall at x = 29, the body at smaller x; 0.25 mm working pixels, binned 2x
    difference = np.zeros((60, 60), np.float32)
    difference[10:50, 8:27] = 0.8  # the bolus, ending 0.5 mm in front of the wall
    difference[24:32, 28:45] = 0.06  # a sheet apart from it, reaching 16 px (4 mm) beyond the wall
    mask = difference > 0.04
    cement = CementMap(difference, mask, np.full(mask.shape, 0.04, np.float32), 0.01)
    beyond = np.tile(np.arange(60, dtype=np.float32) - wall_x, (60, 1))
    solid = substantial(cement, 0.25, 0.18, 0.004)
    bolus = front_distance_px(solid, -beyond, np.ones_like(mask), 0.25)
    assert bolus is not None and bolus[0] > 0  # the front: the bolus's edge, in front of the wall
    grid = PixelGrid.for_spacing(0.125)
    assert (grid.pixel_mm, grid.scale) == (0.25, 2)
    # the arrays are a window starting at (3, 4) of a ROI starting at working pixel (100, 200)
    leaks = find_leaks(cement, {"posterior": (beyond > 0, beyond)}, (3, 4), grid, (100, 200), 0.18, 1.5)
    assert [lk.site for lk in leaks] == ["posterior"]
    deepest = leaks[0].behind_wall
    assert deepest.distance_mm == pytest.approx(-15.5 * 0.25, abs=0.15)
    assert deepest.distance_px == pytest.approx(deepest.distance_mm / 0.25 * 2)
    x, y = deepest.at
    assert x == pytest.approx(grid.to_full(44 + 3, 0, (100, 200))[0], abs=2.5)
    assert grid.to_full(0, 24 + 4, (100, 200))[1] <= y <= grid.to_full(0, 31 + 4, (100, 200))[1]
    # a piece found at another site carries none: only the posterior wall has a "beyond"
    disc = find_leaks(cement, {"disc": (beyond > 0, beyond)}, (3, 4), grid, (100, 200), 0.18, 1.5)
    assert disc and all(lk.behind_wall is None for lk in disc)


def test_the_distance_goes_behind_the_wall_only_with_a_confirmed_leak_there():
    """Through the case analyzer: a leak behind the wall that the leak rules confirm (here at
    once, 2.5 times the leak size), while the bolus's front reads in front of the wall, makes
    its deepest piece of a leak's size the distance, the
    front's marker moved there and labelled, the 5 mm alarm raised on it on that frame (no
    "jump": the rules confirmed it), while the leak alarm records the bolus's front. A piece
    the rules do not yet confirm (one frame at the leak size), a speck beside a confirmed one,
    and a wall not armed leave the distance at the bolus."""
    from dataclasses import replace

    from monitor.overlay import front_label
    from monitor.vision.analysis import CaseAnalyzer, PlaneResult
    from monitor.vision.measure import BehindWall, Leak

    def lateral(frame, pieces, wall_state="armed", front_mm=8.0):
        leaks = [
            Leak(
                site,
                ml,
                (50.0, 20.0),
                (45, 15, 10, 10),
                behind_wall=BehindWall(mm, mm * 4, (50.0, 20.0 + mm)),
            )
            for site, ml, mm in pieces
        ]
        r = PlaneResult(
            "lateral", frame, distance_mm=front_mm, distance_px=None if front_mm is None else front_mm * 4,
            bolus_front_mm=front_mm,
            leaks=leaks, checked=("leak", "proximity"),
        )  # fmt: skip
        r.overlay = {"front": (10.0, 10.0), "wall_state": wall_state, "front_under_cannula": True}
        return r

    class Reads:  # a plane analyzer that reads ``result``
        def __init__(self, result):
            self.result, self.plane = result, result.plane

        def process(self, pixels, frame):
            return self.result

    def run(*reads):
        case, out = CaseAnalyzer(), []
        for r in reads:
            got, summary = case.process(Reads(r), None, r.frame, r.frame / 10)
            out.append((got, summary.raised))
        return out

    (warm, _), (r, raised) = run(
        lateral(4, []), lateral(5, [("posterior", 0.03, -2.8), ("posterior", 0.0001, -6.5)])
    )
    assert (r.distance_mm, r.distance_px, r.bolus_front_mm) == (-2.8, -11.2, 8.0)  # not the speck's -6.5
    assert r.overlay["front"] == (50.0, 17.2) and front_label(r.overlay) == "behind wall"
    assert "proximity" in r.checked and not any(c.code.value == "distance-jump" for c in r.caveats)
    kinds = {(a["kind"], a["priority"]): a for a in raised}
    assert kinds[("proximity", "high")]["distance_mm"] == -2.8
    assert kinds[("extravasation", "high")]["distance_mm"] == 8.0  # the leak alarm: the bolus's front
    # a vein through the wall, confirmed as a venous leak, likewise
    (_, _), (vein, _) = run(lateral(4, []), lateral(5, [("venous", 0.03, -3.1)]))
    assert vein.distance_mm == -3.1

    # a vein read as a line through the wall: far under the leak size, it is confirmed on the
    # second frame running of lines, and then it is the distance (tuning case 5031)
    def line(frame):
        r = lateral(frame, [("venous", 0.003, -3.5)])
        r.leaks = [replace(lk, line=True) for lk in r.leaks]
        return r

    (_, _), (first, _), (second, raised) = run(lateral(4, []), line(5), line(6))
    assert first.distance_mm == 8.0 and second.distance_mm == -3.5
    assert {(a["kind"], a["priority"]) for a in raised} >= {("extravasation", "high"), ("proximity", "high")}
    # a line read behind the wall on one frame only (the line before lay in front of it) is no
    # cement beyond it yet, though lines on two frames confirm the venous leak (an independent
    # review): no 5 mm alarm off it
    in_front = lateral(5, [("venous", 0.003, -3.5)])
    in_front.leaks = [replace(lk, line=True, behind_wall=None) for lk in in_front.leaks]
    (_, _), (_, _), (once, raised) = run(lateral(4, []), in_front, line(6))
    assert once.distance_mm == 8.0 and ("proximity", "high") not in {
        (a["kind"], a["priority"]) for a in raised
    }
    # ... nor another line, read behind the wall 100 mm (400 px) from the one the frame before
    # read there (a second review): not the same vein grown
    elsewhere = line(6)
    elsewhere.leaks = [
        replace(lk, box=(45, 415, 10, 10), behind_wall=BehindWall(-5.0, -20.0, (50.0, 420.0)))
        for lk in elsewhere.leaks
    ]
    (_, _), (_, _), (far, _) = run(lateral(4, []), line(5), elsewhere)
    assert far.distance_mm == 8.0
    # ... while the same vein's deepest point may move along it (one running along the wall is
    # about as deep all along: tuning 5031's moved 11 mm between frames)
    along = line(6)
    along.leaks = [replace(lk, behind_wall=BehindWall(-3.6, -14.4, (50.0, 60.0))) for lk in along.leaks]
    (_, _), (_, _), (moved, _) = run(lateral(4, []), line(5), along)
    assert moved.distance_mm == -3.6
    # ... nor the frame after a gap (frames 6-8 lost), nor a line of a leak's size on its first frame
    after_gap = lateral(9, [("venous", 0.003, -3.5), ("venous", 0.03, 2.0)])  # a streak confirms the site
    after_gap.leaks = [replace(after_gap.leaks[0], line=True), replace(after_gap.leaks[1], behind_wall=None)]
    (_, _), (_, _), (gap, _) = run(lateral(4, []), line(5), after_gap)
    assert gap.distance_mm == 8.0
    after_gap.frame = 6  # the same, on the frame after: it moves
    (_, _), (_, _), (no_gap, _) = run(lateral(4, []), line(5), after_gap)
    assert no_gap.distance_mm == -3.5

    def with_streak(frame, line_ml, doubt=None):  # a line behind the wall, a streak confirming the site
        r = lateral(frame, [("venous", line_ml, -3.5), ("venous", 0.03, 2.0)])
        r.leaks = [replace(r.leaks[0], line=True, doubt=doubt), replace(r.leaks[1], behind_wall=None)]
        return r

    (_, _), (first_big, _) = run(lateral(4, []), with_streak(5, 0.03))  # a line's size is no measure
    assert first_big.distance_mm == 8.0
    # ... nor after a frame whose line there was doubtful (the bolus not yet seen from its start)
    (_, _), (_, _), (after_doubt, _) = run(
        lateral(4, []), with_streak(5, 0.003, "doubt"), with_streak(6, 0.003)
    )
    assert after_doubt.distance_mm == 8.0

    # a doubtful line (it may be the edge of cement already there) never moves it, though the
    # site is confirmed by a streak of a leak's size read outside the body
    def doubtful(frame):
        r = lateral(frame, [("venous", 0.003, -3.0), ("venous", 0.03, 2.0)])
        r.leaks = [replace(r.leaks[0], line=True, doubt="the edge of cement already there"), r.leaks[1]]
        r.leaks[1].behind_wall = None  # a streak in front of the body
        return r

    (_, _), (_, _), (doubted, _) = run(lateral(4, []), doubtful(5), doubtful(6))
    assert doubted.distance_mm == 8.0
    # not yet confirmed (one frame at the leak size): the bolus's front stays, and so does its label
    (_, _), (once, raised) = run(lateral(4, []), lateral(5, [("posterior", 0.009, -2.8)]))
    assert once.distance_mm == 8.0 and front_label(once.overlay) == "under cannula" and not raised
    # a wall not armed: no distance at all, whatever the leak
    (_, _), (unarmed, _) = run(lateral(4, []), lateral(5, [("posterior", 0.03, -2.8)], "not-confirmed", None))
    assert unarmed.distance_mm is None
    # an armed wall with no bolus front read: the confirmed leak's cement is the distance
    (_, _), (alone, _) = run(lateral(4, []), lateral(5, [("posterior", 0.03, -2.8)], front_mm=None))
    assert alone.distance_mm == -2.8
    # the bolus's own front already beyond the wall stays: its edge is the front rule's own, where
    # a vein's tapering end reads 0.3-0.8 mm deeper than the truth (review seeds 9807, 9819)
    (_, _), (beyond, _) = run(lateral(4, []), lateral(5, [("venous", 0.03, -3.9)], front_mm=-3.4))
    assert beyond.distance_mm == -3.4 and beyond.overlay["front"] == (10.0, 10.0)  # the bolus's own
    assert front_label(beyond.overlay, beyond.distance_mm) == "behind wall"  # but behind the wall too
    assert front_label(once.overlay, once.distance_mm) == "under cannula"


def test_the_front_behind_the_wall_is_labelled_legibly_on_the_overlay():
    """The front's marker says where the nearest cement was read: "behind wall" in red on a dark
    backdrop beside it (over a bright wall or a dark bolus alike), nothing on the bolus's own edge."""
    from monitor.overlay import RED, draw

    grey = np.full((200, 300), 128, np.uint8)
    plain = {"overlay": {"front": [100.0, 80.0]}, "status": "ok"}
    labelled = {"overlay": {"front": [100.0, 80.0], "front_behind_wall": True}, "status": "ok"}
    bare, said = draw(grey, plain), draw(grey, labelled)
    # the bolus's own front beyond the wall is labelled the same (the distance is negative)
    beyond = draw(grey, {"overlay": {"front": [100.0, 80.0]}, "status": "ok", "distance_mm": -1.0})
    in_front = draw(grey, {"overlay": {"front": [100.0, 80.0]}, "status": "ok", "distance_mm": 1.0})
    assert not np.array_equal(said[88:, 108:], bare[88:, 108:])  # where the label lies
    assert np.array_equal(beyond[88:, 108:], said[88:, 108:])  # the same label
    assert np.array_equal(in_front[88:, 108:], bare[88:, 108:])  # none in front of the wall
    changed = np.any(bare != said, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any() and xs.min() >= 100 and ys.min() >= 80  # below and right of the marker
    box = said[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    assert (box == (24, 24, 24)).all(axis=2).mean() > 0.5  # the backdrop
    assert (np.abs(box.astype(int) - RED).sum(axis=2) < 60).sum() > 30  # the red text on it


def test_a_lateral_picture_with_no_wall_found_says_the_5mm_rule_was_off():
    """The pictures of the QA audit, the demo's video and training say what the live view's
    readout says: a lateral frame measured with no wall at all (none found, none drawn) had
    the 5 mm rule off, not passed: "NO WALL FOUND" in violet on a dark backdrop under the
    readouts. Not on a wall found but not confirmed (drawn dashed and labelled so), nor on
    the AP view, a baseline frame, or a frame with its wall."""
    from monitor.overlay import VIOLET, draw

    grey = np.full((200, 300), 128, np.uint8)
    none_found = {
        "plane": "lateral",
        "status": "no-anatomy: no vertebral body found",
        "caveats": [{"code": "no-anatomy", "detail": "no vertebral body found"}],
        "overlay": {},
    }
    said = draw(grey, none_found)
    violet = np.abs(said.astype(int) - VIOLET).sum(axis=2) < 60
    ys, xs = np.nonzero(violet)
    assert violet.sum() > 30 and ys.min() > 30  # under the readout panel (its status line)
    box = said[ys.min() - 2 : ys.max() + 3, xs.min() - 2 : xs.max() + 3]
    assert (box == (24, 24, 24)).all(axis=2).mean() > 0.4  # on its backdrop
    for other in (
        {**none_found, "plane": "ap"},
        {**none_found, "status": "baseline"},
        {**none_found, "overlay": {"wall": [[150.0, 40.0], [150.0, 160.0]], "wall_state": "armed"}},
        {**none_found, "caveats": [{"code": "scatter-not-seen", "detail": "..."}]},
    ):
        drawn = draw(grey, other)
        assert not (np.abs(drawn.astype(int) - VIOLET).sum(axis=2) < 60).any(), other


def test_a_thin_film_beyond_an_endplate_is_a_disc_leak_not_a_vein():
    """The disc has no veins: cement pressed through an endplate first spreads as a thin film
    along it, a streak like a vein's (tuning seed 5020's disc leak was first alarmed as venous).
    Beyond an endplate it is a disc leak; the same streak behind the posterior wall is a vein."""
    from monitor.vision.measure import find_leaks

    mask = np.zeros((60, 60), bool)
    mask[35:37, 10:50] = True  # 10 mm along the endplate, 0.5 mm thick, 1.5-2 mm beyond it
    beyond = np.tile((np.arange(60, dtype=np.float32) - 29)[:, None], (1, 60))  # below an endplate at y = 29
    grid = PixelGrid.for_spacing(0.25)
    for side, site in (("disc", "disc"), ("posterior", "venous")):
        leaks = find_leaks(_cement(mask), {side: (beyond > 0, beyond)}, (0, 0), grid, (0, 0), 0.18, 1.5)
        assert [lk.site for lk in leaks] == [site], side


def test_cement_apart_from_the_bolus_is_a_leak_sited_by_its_direction_from_the_tip():
    """With no outline, a lateral view reads as leaks the pieces of cement not connected to the
    cement at the tip (the projection of one connected mass is connected): behind the tip along
    the shaft posterior, ahead of it paravertebral, above or below it disc, a thin streak
    anywhere venous. Specks under the leak size are not read, nor is anything before the bolus
    itself is seen; cement joined to the bolus is the bolus. A piece overlapping an earlier leak
    where a vein was read stays venous (a vein's cast that thickens is still a vein); the others
    keep their own sites."""
    from monitor.vision.measure import find_apart_leaks

    grid = PixelGrid.for_spacing(0.25)  # 0.5 log units a pixel: 0.00017 mL, a leak from 46 pixels
    yy, xx = np.mgrid[:200, :200]
    bolus = (xx - 96) ** 2 + (yy - 100) ** 2 <= 16**2  # 0.14 mL around the tip at (100, 100)
    pieces = {
        "posterior": (slice(95, 105), slice(150, 160)),  # 13 mm behind the tip, along the shaft
        "disc": (slice(140, 150), slice(95, 105)),  # 11 mm below it
        "paravertebral": (slice(95, 105), slice(30, 40)),  # 16 mm ahead of it
        "venous": (slice(40, 42), slice(130, 190)),  # 15 mm long, 0.5 mm wide, above and behind
        "speck": (slice(170, 174), slice(170, 174)),  # 0.003 mL
    }
    mask = bolus.copy()
    for window in pieces.values():
        mask[window] = True

    def sites(m, veins=()):
        found = find_apart_leaks(_cement(m), [(100.0, 100.0)], [(1.0, 0.0)], grid, (0, 0), 0.18, 0.008, veins)
        return sorted(lk.site for lk in found.leaks), found.leaks

    found, leaks = sites(mask)
    assert found == ["disc", "paravertebral", "posterior", "venous"]
    assert all(lk.apart for lk in leaks)
    posterior = next(lk for lk in leaks if lk.site == "posterior")
    assert posterior.box == (150, 95, 10, 10) and posterior.centroid == pytest.approx((154.5, 99.5))
    assert sites(mask & ~bolus)[0] == []  # nothing at the tip: not apart from any bolus
    joined = mask.copy()
    joined[98:102, 110:152] = True  # the posterior piece joined to the bolus: the bolus's own
    assert sites(joined)[0] == ["disc", "paravertebral", "venous"]
    vein = next(lk for lk in leaks if lk.site == "venous")
    thick = mask.copy()
    thick[36:46, 130:190] = True  # the vein's cast now 2.5 mm wide: no streak, but the same piece
    assert sites(thick)[0] == ["disc", "paravertebral", "posterior", "posterior"]
    assert sites(thick, [vein.centroid])[0] == ["disc", "paravertebral", "posterior", "venous"]


def test_only_a_bolus_seen_from_its_start_arms_the_reading_of_cement_apart():
    """The first bolus read must be one compact piece: a disc of 0.033 mL, 5 mm across, is (and
    so it is where the darkness reads a third of that); the same volume as a faint ring 12 mm
    across (a thin shell of new cement around a bolus already there when monitoring began, which
    later breaks into pieces) covers too much for its volume, and a first bolus with a piece
    apart already is not cement seen from its start either."""
    from monitor.vision.measure import find_apart_leaks, grown_from_tip

    grid = PixelGrid.for_spacing(0.25)
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(xx - 100, yy - 100)

    def first(mask, log_units):
        return find_apart_leaks(
            _cement(mask, log_units), [(100.0, 100.0)], [(1.0, 0.0)], grid, (0, 0), 0.18, 0.008
        )

    disc = first(r <= 10, 0.3)  # 19.6 mm2
    ring = first((r >= 14) & (r <= 24), 0.079)  # 74.6 mm2
    assert disc.bolus_ml == pytest.approx(ring.bolus_ml, rel=0.05)
    assert grown_from_tip(disc) and not grown_from_tip(ring)
    # the same disc where the room's darkness reads a third of it (8-bit video with brightness
    # control): 0.011 mL, whose sphere widened by the blur covers 17.8 mm2, 1.1 times under it
    faint = first(r <= 10, 0.1)
    assert faint.bolus_mm2 > 1.05 * np.pi * ((3 * faint.bolus_ml * 1000 / (4 * np.pi)) ** (1 / 3) + 1) ** 2
    assert grown_from_tip(faint)
    with_piece = (r <= 10) | ((xx >= 150) & (xx < 160) & (yy >= 95) & (yy < 105))
    assert not grown_from_tip(first(with_piece, 0.3))


def test_the_biplane_volume_of_an_ellipsoid_is_its_volume():
    """Simpson's rule over elliptical slices: an ellipsoid of semi-axes 6 mm (depth, lateral
    view), 4 mm (width, AP view) and 9 mm (cranio-caudal) drawn in each view at a different
    magnification and height reads 4/3 pi abc = 0.905 mL within 3 %; no cement is no volume."""
    from monitor.vision.biplane import biplane_volume_ml

    def ellipse(semi_x_mm, semi_y_mm, pixel_mm, centre=(120, 90), shape=(240, 200)):
        y, x = np.mgrid[: shape[0], : shape[1]]
        return ((x - centre[1]) * pixel_mm / semi_x_mm) ** 2 + (
            (y - centre[0]) * pixel_mm / semi_y_mm
        ) ** 2 <= 1

    truth = 4 / 3 * np.pi * 6 * 4 * 9 / 1000
    lateral = ellipse(6, 9, 0.15)
    ap = ellipse(4, 9, 0.2, centre=(100, 60))
    assert biplane_volume_ml(lateral, 0.15, ap, 0.2) == pytest.approx(truth, rel=0.03)
    assert biplane_volume_ml(np.zeros((10, 10), bool), 0.15, ap, 0.2) is None


def test_one_view_reads_a_spheroid_as_round_slices_on_the_two_views_scale():
    """One view alone (the other clipped past reading): each slice taken as round, the view's
    width its diameter. A spheroid round in its section (semi-axes 5, 5 and 9 mm: 0.942 mL) reads
    its volume within 3 % once the view's reading of the two views' shape is taken back; the
    lateral view is divided by what it reads of that shape on the tuning seeds."""
    from monitor.vision.biplane import ONE_VIEW_OF_BIPLANE, one_view_volume_ml

    y, x = np.mgrid[:240, :200]
    lateral = ((x - 90) * 0.15 / 5) ** 2 + ((y - 120) * 0.15 / 9) ** 2 <= 1
    truth = 4 / 3 * np.pi * 5 * 5 * 9 / 1000
    read = one_view_volume_ml(lateral, 0.15, "lateral")
    assert read * ONE_VIEW_OF_BIPLANE["lateral"] == pytest.approx(truth, rel=0.03)
    assert one_view_volume_ml(lateral, 0.15, "ap") == pytest.approx(read * ONE_VIEW_OF_BIPLANE["lateral"])
    assert one_view_volume_ml(np.zeros((10, 10), bool), 0.15, "ap") is None


def _outlined_view(plane: str, mask: np.ndarray, unread: int = 0, apart_ml: float = 0.0):
    """A PlaneAnalyzer as CaseAnalyzer._read_volume reads it: a view with a cannula, its bolus's
    outline ``mask`` (0.15 mm pixels), unread for ``unread`` frames running, ``apart_ml`` of
    cement read apart from the bolus."""
    from types import SimpleNamespace

    learnt = SimpleNamespace(cannulas=[object()], roi=(0, 0, 200, 240))
    return SimpleNamespace(
        plane=plane, cement_mask=mask, shape_mask=mask, pixel_mm=0.15, learnt=learnt, roi=learnt.roi,
        unreadable_frames=unread, cement_apart_ml=apart_ml, holding=False,
    )  # fmt: skip


def test_a_view_clipped_past_reading_leaves_the_shape_to_the_other_view():
    """The level's volume where the AP view has been clipped white past reading for some frames
    running: its outline is an older frame's, which the cement has outgrown (tuning 5031: the
    shape from it read 0.27 of the truth, the interval 0.66-0.92 mL for 3.77). The shape is then
    the lateral view's alone, with its wider spread, the volume's caveat says so, and it does not
    enter the level's statistics of the darkness (another scale). One unread frame keeps the two
    views (a flickering view would make the volume jump); both unread keep their last outlines;
    the AP alone where the lateral has no region."""
    from monitor.vision.analysis import ONE_VIEW_AFTER_UNREADABLE, CaseAnalyzer
    from monitor.vision.biplane import (
        ONE_VIEW_SPREAD,
        SHAPE_SPREAD,
        biplane_volume_ml,
        fused_volume,
        one_view_volume_ml,
    )

    y, x = np.mgrid[:240, :200]
    bolus = ((x - 90) * 0.15 / 7) ** 2 + ((y - 120) * 0.15 / 9) ** 2 <= 1  # about 1.8 mL as round slices
    small = ((x - 90) * 0.15 / 3) ** 2 + ((y - 120) * 0.15 / 4) ** 2 <= 1  # the AP's outline of long ago

    case = CaseAnalyzer()
    case.volumes = {"lateral": (0.3, 0.0), "ap": (0.3, 0.0)}  # a darkness that reads low
    case.planes = {
        "lateral": _outlined_view("lateral", bolus, 0),
        "ap": _outlined_view("ap", small, ONE_VIEW_AFTER_UNREADABLE),
    }
    estimate, caveat = case._read_volume()
    alone = one_view_volume_ml(bolus, 0.15, "lateral")
    expected = fused_volume(0.3, alone, False, ONE_VIEW_SPREAD["lateral"])
    assert (estimate.volume_ml, estimate.low_ml, estimate.high_ml) == pytest.approx(
        (expected.volume_ml, expected.low_ml, expected.high_ml)
    )
    assert estimate.volume_ml > 1.5 and estimate.reads_low and not case._darkness_shares
    assert "the cement's shape in the lateral view alone gives" in caveat.detail
    assert estimate.one_view == "lateral"  # said on the result: volume-one-view
    said = case._one_view_caveat("lateral")
    assert said.code.value == "volume-one-view" and "the AP view gives no outline now" in said.detail
    two_views = biplane_volume_ml(bolus, 0.15, small, 0.15)
    for unread in (ONE_VIEW_AFTER_UNREADABLE - 1, 0):  # one frame unread, then read again: both views
        case.planes["ap"].unreadable_frames = unread
        both, caveat = case._read_volume()
        assert both.shape_ml == pytest.approx(fused_volume(0.3, two_views).shape_ml)
        assert both.high_ml / both.volume_ml == pytest.approx(1 / SHAPE_SPREAD[0])
        assert "in the two views" in caveat.detail and both.one_view is None
    assert len(case._darkness_shares) == 2
    case.planes["lateral"].unreadable_frames = case.planes["ap"].unreadable_frames = 5  # both unread
    assert case._read_volume()[0].shape_ml == pytest.approx(fused_volume(0.3, two_views).shape_ml)
    case.planes["lateral"] = _outlined_view("lateral", bolus, 0)
    case.planes["lateral"].learnt.cannulas = []  # no region: measured over its whole frame
    case.planes["ap"] = _outlined_view("ap", bolus, 0)
    ap_alone, caveat = case._read_volume()
    assert "shape in the AP view alone" in caveat.detail and ap_alone.one_view == "ap"
    case.planes = {"lateral": _outlined_view("lateral", bolus, 0)}  # a lateral view streamed alone
    case.volumes = {"lateral": (0.3, 0.0)}
    alone_now, caveat = case._read_volume()
    assert alone_now.volume_ml == pytest.approx(estimate.volume_ml) and "lateral view alone" in caveat.detail
    assert alone_now.one_view == "lateral"
    # an outline too small to read a shape from (under SHAPE_MIN_ML) checks nothing: not said
    speck = ((x - 90) * 0.15 / 1.2) ** 2 + ((y - 120) * 0.15 / 1.2) ** 2 <= 1
    case.planes = {"lateral": _outlined_view("lateral", speck, 0)}
    case.volumes = {"lateral": (0.05, 0.0)}
    unchecked, _ = case._read_volume()
    assert not unchecked.checked and unchecked.one_view is None


def test_a_level_s_darkness_is_judged_on_its_last_results_as_the_beam_hardens():
    """A hardening beam's darkness falls behind the cement as the bolus grows: tuning 5007 read
    0.75-0.9 of the shape's truth up to 1.5 mL and 0.55 from 2.5 mL, and the median over the
    whole level stayed over LEVEL_DARKNESS_AGREES_WITH_SHAPE for 17 frames more, the volume 40 %
    under the truth meanwhile. Judged on the level's last LEVEL_SHARE_RESULTS results, it reads
    low once half of them do, said once with how many results it rests on; and it stays low (a
    room's darkness is the room's)."""
    from monitor.vision.analysis import LEVEL_SHARE_RESULTS, CaseAnalyzer
    from monitor.vision.biplane import LEVEL_DARKNESS_AGREES_WITH_SHAPE, biplane_volume_ml, shape_of_truth

    y, x = np.mgrid[:240, :200]
    bolus = ((x - 90) * 0.15 / 7) ** 2 + ((y - 120) * 0.15 / 9) ** 2 <= 1

    shape = biplane_volume_ml(bolus, 0.15, bolus, 0.15)
    truth = shape / shape_of_truth(shape)[1]
    assert truth >= 0.5  # its shares count
    case = CaseAnalyzer()
    case.planes = {"lateral": _outlined_view("lateral", bolus), "ap": _outlined_view("ap", bolus)}
    for _ in range(60):  # a small bolus's darkness, near the truth
        case.volumes = {"lateral": (0.85 * truth, 0.0), "ap": (0.85 * truth, 0.0)}
        case._read_volume()
    assert not case.darkness_low and len(case._darkness_shares) == LEVEL_SHARE_RESULTS
    hardened = 0.55
    assert hardened < LEVEL_DARKNESS_AGREES_WITH_SHAPE
    for k in range(1, LEVEL_SHARE_RESULTS + 1):
        case.volumes = {"lateral": (hardened * truth, 0.0), "ap": (hardened * truth, 0.0)}
        estimate, _ = case._read_volume()
        # low once more than half of the last results read so (the median over all 60 + k would
        # stay over the threshold until k = 61)
        assert case.darkness_low == (k > LEVEL_SHARE_RESULTS // 2), k
    assert estimate.reads_low and estimate.volume_ml == pytest.approx(truth)
    said = [detail for code, detail, _ in case.news if code == "darkness-reads-low"]
    assert (
        len(said) == 1
        and f"its last {LEVEL_SHARE_RESULTS} results of {60 + LEVEL_SHARE_RESULTS // 2 + 1}" in said[0]
    )
    case.volumes = {"lateral": (truth, 0.0), "ap": (truth, 0.0)}
    for _ in range(LEVEL_SHARE_RESULTS):
        case._read_volume()
    assert case.darkness_low


def test_the_level_s_shape_adds_the_views_mean_reading_of_the_cement_apart():
    """The shape is the bolus's biplane volume plus the cement apart from it in the two views'
    mean reading (each view reads the same pieces: their sum would count them twice); one view's
    shape adds that view's own."""
    from monitor.vision.analysis import ONE_VIEW_AFTER_UNREADABLE, CaseAnalyzer
    from monitor.vision.biplane import ONE_VIEW_SPREAD, biplane_volume_ml, fused_volume, one_view_volume_ml

    y, x = np.mgrid[:240, :200]
    bolus = ((x - 90) * 0.15 / 7) ** 2 + ((y - 120) * 0.15 / 9) ** 2 <= 1

    case = CaseAnalyzer()
    case.volumes = {"lateral": (0.3, 0.0), "ap": (0.3, 0.0)}  # a darkness that reads low: the shape's
    case.planes = {
        "lateral": _outlined_view("lateral", bolus, 0, 0.2),
        "ap": _outlined_view("ap", bolus, 0, 0.4),
    }
    estimate, _ = case._read_volume()
    two_views = biplane_volume_ml(bolus, 0.15, bolus, 0.15)
    assert estimate.shape_ml == pytest.approx(fused_volume(0.3, two_views + 0.3).shape_ml)
    case.planes["ap"] = _outlined_view(
        "ap", bolus, ONE_VIEW_AFTER_UNREADABLE, 0.4
    )  # the AP unread: the lateral's alone
    alone, _ = case._read_volume()
    one = one_view_volume_ml(bolus, 0.15, "lateral")
    assert alone.shape_ml == pytest.approx(
        fused_volume(0.3, one + 0.2, False, ONE_VIEW_SPREAD["lateral"]).shape_ml
    )


def test_the_bolus_sets_the_shape_s_slices_and_cement_apart_is_read_piece_by_piece():
    """The biplane's slices run over the outline's whole cranio-caudal extent: a piece far under
    the bolus (tuning 5033's AP view outlined a wedge of the field's corner 44 mm under it, and
    the shape read 0.57 of the truth) stretches that extent and squeezes the bolus into a few
    slices. The slices are the bolus's: the pieces at the tips and, in turn, every piece within
    BOLUS_GAP_MM of those taken (a chain), or as large as all of them (the cement at the tip a
    rim cut from its mass). The rest is read apart, each piece alone as round slices in its view
    (a vein, a second bolus whose tip was not found: cement, not dropped); with no tip, or none
    at a piece, the outline is the bolus."""
    from monitor.vision.biplane import (
        BOLUS_GAP_MM,
        ONE_VIEW_OF_BIPLANE,
        biplane_volume_ml,
        bolus_outline,
        one_view_volume_ml,
        pieces_volume_ml,
    )

    pixel_mm = 0.25
    y, x = np.mgrid[:400, :200]
    bolus = ((x - 100) * pixel_mm / 6) ** 2 + ((y - 100) * pixel_mm / 8) ** 2 <= 1  # rows 68-132
    tip = [(100.0, 100.0)]
    near = (np.abs(x - 100) <= 4) & (y >= 135) & (y < 140)  # 2 empty rows (0.5 mm) under it
    chain = (np.abs(x - 100) <= 4) & (y >= 150) & (y < 155)  # 2.75 mm under that, 4.5 under the bolus
    wedge = (y > 370) & (x > 170) & (y - 370 > 200 - x)  # the field's corner 60 mm under, 25 mm2
    speck = (np.abs(x - 40) <= 2) & (np.abs(y - 300) <= 2)  # 1.6 mm2, 40 mm under
    side = (x >= 142) & (x < 147) & (np.abs(y - 100) <= 2)  # 1.6 mm2 beside it: the bolus ends at x 124
    assert BOLUS_GAP_MM < (142 - 124) * pixel_mm < 2 * BOLUS_GAP_MM  # side's gap: past one gap, under two
    mask = bolus | near | chain | wedge | speck | side
    kept = bolus_outline(mask, tip, pixel_mm)
    assert kept[bolus].all() and kept[near].all() and kept[chain].all()
    assert not kept[wedge].any() and not kept[speck].any() and not kept[side].any()
    # a chain of twelve specks each 2.5 mm from the last, out to 30 mm under the bolus: one mass
    links = np.zeros_like(mask)
    for k in range(1, 13):
        row = 132 + round(k * 2.5 / pixel_mm)
        links[row - 1 : row + 1, 99:101] = True
    assert bolus_outline(bolus | links, tip, pixel_mm)[links].all()
    assert bolus_outline(mask, [], pixel_mm) is mask  # no tip: no bolus to read from
    assert bolus_outline(mask, [(10.0, 390.0)], pixel_mm) is mask  # no piece at the tip
    # the tip's piece a speck, the mass 10 mm off: the mass is the bolus, not the speck's company
    rim = (np.abs(x - 100) <= 1) & (np.abs(y - 160) <= 1)
    assert bolus_outline(bolus | rim, [(100.0, 160.0)], pixel_mm)[bolus].all()
    # ... as large as all those taken, not as the tip's piece alone: a 9-pixel tip piece with a
    # 100-pixel one beside it is a bolus of 109 pixels, and a 50-pixel piece 20 mm off is not it
    tip_piece = (np.abs(x - 100) <= 1) & (np.abs(y - 300) <= 1)
    beside = (x >= 104) & (x < 114) & (y >= 295) & (y < 305)
    far = (x >= 20) & (x < 30) & (y >= 298) & (y < 303)
    taken = bolus_outline(tip_piece | beside | far, [(100.0, 300.0)], pixel_mm)
    assert taken[beside].all() and not taken[far].any()
    # the AP view's shape against the lateral's: the wedge and the speck took it to half the
    # bolus's; the bolus's slices read it again, and what is apart adds its own reading
    lateral = ((x - 100) * pixel_mm / 7) ** 2 + ((y - 100) * pixel_mm / 8) ** 2 <= 1
    own = biplane_volume_ml(lateral, pixel_mm, bolus | near | chain, pixel_mm)
    assert biplane_volume_ml(lateral, pixel_mm, mask, pixel_mm) < 0.6 * own
    assert biplane_volume_ml(lateral, pixel_mm, kept, pixel_mm) == pytest.approx(own)
    apart = pieces_volume_ml(mask & ~kept, pixel_mm, "ap")
    assert 0 < apart < 0.1 * own  # the wedge as round slices, 0.1 mL (halved: the other view has none)
    # each piece alone, as round slices: a round bolus apart reads its volume; two pieces on the
    # same rows are two sections, not one of their summed width
    second = ((x - 50) * pixel_mm / 4) ** 2 + ((y - 300) * pixel_mm / 4) ** 2 <= 1  # a 4 mm ball's outline
    ball = 4 / 3 * np.pi * 4**3 / 1000
    assert pieces_volume_ml(second, pixel_mm, "ap") == pytest.approx(ball, rel=0.05)
    twin = second | np.roll(second, 80, axis=1)
    assert pieces_volume_ml(twin, pixel_mm, "ap") == pytest.approx(2 * ball, rel=0.05)
    assert one_view_volume_ml(twin, pixel_mm, "ap") > 3.5 * ball  # one section of twice the width
    assert pieces_volume_ml(second, pixel_mm, "lateral") == pytest.approx(
        pieces_volume_ml(second, pixel_mm, "ap") / ONE_VIEW_OF_BIPLANE["lateral"]
    )
    assert pieces_volume_ml(np.zeros((5, 5), bool), pixel_mm, "ap") == 0.0
    # a long thin piece is a tube across its shorter axis, whichever way it lies: a band 40 mm by
    # 2 mm reads 0.126 mL, not its rows as round sections (2.5 mL: an artifact's band under the
    # bolus more than doubled its shape so)
    tube = np.pi / 4 * 2**2 * 40 / 1000
    band = (x >= 20) & (x < 180) & (y >= 300) & (y < 308)
    assert pieces_volume_ml(band, pixel_mm, "ap") == pytest.approx(tube, rel=0.05)
    assert pieces_volume_ml(band.T, pixel_mm, "ap") == pytest.approx(tube, rel=0.05)


def test_the_steel_band_across_a_bolus_is_part_of_its_outline_but_not_beyond_it():
    """A shaft runs into the bolus it feeds, its band left out of the cement: the outline is a
    U round the band's end (tuning 5000's lateral view: the biplane read 0.28x the truth so, and
    0.96x with the band filled). Filled, the ellipsoid's outline is whole again and its biplane
    volume its own; the band's stretch outside the bolus stays out (no cement beyond it), a
    notch of the cement's own, no steel, stays a notch, and of the pixels never compared only the
    shafts' bands are steel: not the strip a breathing shift uncovers at the region's edge (an
    independent review's case filled one, 16 % of its outline)."""
    from monitor.vision.biplane import biplane_volume_ml, outline_through_steel, steel_bands

    y, x = np.mgrid[:200, :240]
    bolus = ((x - 100) / 40.0) ** 2 + ((y - 100) / 30.0) ** 2 <= 1  # 0.1 mm pixels
    band = (np.abs(y - 100) <= 9) & (x >= 90)  # the shaft from the right, its tip inside
    notch = (np.abs(y - 75) <= 3) & (x <= 75)  # cement missing on the left, not under steel
    mask = bolus & ~band & ~notch
    filled = outline_through_steel(mask, band, band_px=19)
    # the band across the bolus (cement on both sides and beyond its end), bar a bite at its mouth
    # (the closing's round end, 7 pixels deep: 11 % of the band's pixels in the bolus)
    assert filled[bolus & band & (x < 132)].all() and filled[bolus & band].mean() > 0.85
    assert not filled[band & (x > 150)].any()  # past the bolus's edge (x 140) and a band's width on
    assert not filled[bolus & notch].any()  # not steel: left as the cement showed it
    assert outline_through_steel(mask, band, band_px=0) is mask  # no cannula: no band to fill
    # The region's edge is unread too (a breathing shift uncovers a strip there): cement touching
    # it is not steel-filled along it; the shaft's own band still is.
    # A bolus cut by the region's edge (x 0), whose first 4 columns a breathing shift uncovered
    # (unread): the closing, pinned at the image's border, would fill a strip along it.
    cut = (((x - 20) / 40.0) ** 2 + ((y - 100) / 30.0) ** 2 <= 1) & ~band & (x >= 4)
    unread = band | (x < 4)
    assert outline_through_steel(cut, unread, band_px=19)[x < 4].sum() > 30  # the strip, as steel
    only_band = unread & steel_bands(mask.shape, [((90.0, 100.0), (1.0, 0.0), 19 / 1.8)])
    assert only_band[band].all() and not only_band[x < 4].any()
    assert not outline_through_steel(cut, only_band, band_px=19)[x < 4].any()
    ap = ((x - 100) / 25.0) ** 2 + ((y - 100) / 30.0) ** 2 <= 1
    whole = biplane_volume_ml(bolus & ~notch, 0.1, ap, 0.1)
    assert biplane_volume_ml(mask, 0.1, ap, 0.1) < 0.8 * whole
    assert biplane_volume_ml(filled, 0.1, ap, 0.1) == pytest.approx(whole, rel=0.05)  # the bite


def test_the_shape_s_outline_is_cut_at_a_share_of_the_bolus_s_own_darkness():
    """The segmentation's threshold follows the noise, so where scatter or a faint cement lowers
    the bolus's contrast its faint rim falls under it and its shape shrinks. Re-cut at a share of
    the bolus's own darkness, an ellipsoid's blurred darkness gives the same outline at full
    contrast and at a quarter of it, out from a tight segmentation and in from a generous one.
    The steel band across it stays as filled, and the steel's own difference beyond it is not
    taken; nor is cement apart from it (beyond a gap, or read apart), a misregistered edge's
    residue, or darkness further out than SHAPE_OUTLINE_REACH_MM."""
    import cv2

    from monitor.vision.biplane import SHAPE_OUTLINE_REACH_MM, SHAPE_OUTLINE_SHARE, relative_outline

    pixel_mm = 0.2
    y, x = np.mgrid[:200, :240]
    inside = 1 - ((x - 110) / 40.0) ** 2 - ((y - 100) / 30.0) ** 2  # semi-axes 8 and 6 mm
    thickness = 2 * 30 * pixel_mm * np.sqrt(np.clip(inside, 0, None))  # mm through it
    darkness = cv2.GaussianBlur((0.2 * thickness).astype(np.float32), (0, 0), 1.5 / pixel_mm)
    band = (np.abs(y - 100) <= 6) & (x >= 100)  # the shaft's band, never compared
    steel = np.where(y < 100, -1.0, 3.0)  # the steel's difference there: a dip, a bright edge
    gap = (y > 131) & (y < 135)  # no cement, then a piece 2.2-3 mm out of the bolus's edge
    near_piece = ((x - 110) / 6.0) ** 2 + ((y - 137) / 2.0) ** 2 <= 1
    far_piece = ((x - 200) / 8.0) ** 2 + ((y - 40) / 8.0) ** 2 <= 1  # 13 mm away
    outlines = []
    for contrast in (1.0, 0.25):
        seen = contrast * np.where(gap, 0.0, darkness)
        top = seen.max()
        seen[near_piece | far_piece] = top
        seen[band] = (steel * top)[band]
        peak = np.percentile(seen[(darkness >= 0.5 * darkness.max()) & ~band], 95)
        bolus_band = band & (inside > 0)
        tight = (darkness >= 0.5 * darkness.max()) | bolus_band  # cut at half its darkness
        out = relative_outline(tight, seen, band, pixel_mm)
        outlines.append(out)
        assert out.sum() > 1.4 * tight.sum()  # the faint rim the threshold left out
        assert out[bolus_band].all() and not out[band & ~tight].any()  # the steel is not cement
        assert not out[near_piece | far_piece].any()  # apart: read as such, not in its slices
        assert seen[out & ~band].min() >= SHAPE_OUTLINE_SHARE * peak
        generous = ((darkness >= 0.02 * darkness.max()) & ~gap) | bolus_band
        cut = relative_outline(generous, seen, band, pixel_mm)
        assert cut.sum() < 0.95 * generous.sum()  # cut in where the share is not reached
        share = SHAPE_OUTLINE_SHARE * np.percentile(seen[generous & ~band], 95)
        assert not cut[~band & (seen < share)].any()
        assert cut[generous & ~band & ~gap & (y < 131) & (seen >= share)].all()
    assert (outlines[0] == outlines[1]).all()  # where it is cut does not depend on the contrast
    # a darkness reaching far out (a halo) is taken only SHAPE_OUTLINE_REACH_MM beyond the bolus
    tight = darkness >= 0.5 * darkness.max()
    halo = darkness + 0.5 * darkness.max() * (inside > -3)
    none = np.zeros_like(band)
    wide = relative_outline(tight, halo, none, pixel_mm)
    reach = cv2.distanceTransform((~tight).astype(np.uint8), cv2.DIST_L2, 5)
    assert wide.sum() > tight.sum() and reach[wide].max() * pixel_mm <= SHAPE_OUTLINE_REACH_MM + pixel_mm
    # a bone edge running out of the bolus: the residue a misregistration leaves on it is no cement
    edge = (np.abs(y - 80) <= 1) & (x >= 130) & (x <= 170)
    residue = np.where(edge, np.maximum(darkness, 0.3 * darkness.max()), darkness).astype(np.float32)
    gradient = np.where(edge, darkness.max(), 0.0).astype(np.float32)
    assert relative_outline(tight, residue, none, pixel_mm)[edge & ~tight].sum() > 10
    assert not relative_outline(tight, residue, none, pixel_mm, edge_gradient=gradient)[edge & ~tight].any()
    # cement read apart from the bolus is counted on its own, not taken into its shape too
    apart = (np.abs(x - 110) <= 3) & (y >= 126) & (y < 132)
    assert relative_outline(tight, darkness, none, pixel_mm)[apart].any()
    assert not relative_outline(tight, darkness, none, pixel_mm, apart=apart)[apart].any()
    # too few pixels compared to read the bolus's darkness: the outline as segmented
    tiny = np.zeros_like(band)
    tiny[100, 100:103] = True
    assert relative_outline(tiny, darkness, none, pixel_mm) is tiny


def test_the_volume_is_the_darkness_unless_it_reads_well_under_the_shape():
    """Darkness and shape agreeing (the shape under-reads, the more so the smaller it is, so a
    darkness above it is what the physics model says): the darkness, its interval reaching up
    to the most the shape allows. Darkness well under what the shape gives: the shape scaled by
    what it reads of the truth at its size, its interval that factor's spread, never below the
    darkness. No shape, or a shape too small to outline: the darkness, unchecked, its interval
    reaching up to what an unchecked darkness has read of the truth."""
    from monitor.vision.biplane import (
        DARKNESS_AGREES_WITH_SHAPE,
        DARKNESS_OF_TRUTH,
        SHAPE_MIN_ML,
        UNCHECKED_DARKNESS_OF_TRUTH,
        fused_volume,
        shape_of_truth,
    )

    small, large = shape_of_truth(0.2), shape_of_truth(1.5)
    assert small[1] < large[1] and all(a < b < c for a, b, c in (small, large))  # grows with the size
    lo, mid, hi = large
    d = 1.5 / mid  # a darkness at the shape's truth
    agree = fused_volume(d, 1.5)
    assert (agree.volume_ml, agree.reads_low) == (pytest.approx(d), False)
    assert agree.low_ml == pytest.approx(d / DARKNESS_OF_TRUTH[1])
    assert agree.high_ml == pytest.approx(max(d / DARKNESS_OF_TRUTH[0], 1.5 / lo))
    assert agree.low_ml < d < agree.high_ml
    low = fused_volume(0.7, 1.5)
    assert low.reads_low and low.volume_ml == pytest.approx(1.5 / mid)
    assert (low.low_ml, low.high_ml) == (pytest.approx(1.5 / hi), pytest.approx(1.5 / lo))
    assert low.low_ml <= low.volume_ml <= low.high_ml
    edge = DARKNESS_AGREES_WITH_SHAPE * 1.5 / mid
    # a darkness at half the two views' truth weighs nothing against it (darkness_weight): it
    # reads low, as under half; against one view's shape (not weighed) this check is the whole
    assert fused_volume(1.01 * edge, 1.5).reads_low and fused_volume(0.99 * edge, 1.5).reads_low
    for size in (0.2, 1.5):
        one_edge = DARKNESS_AGREES_WITH_SHAPE * size / shape_of_truth(size)[1]
        kept = fused_volume(1.01 * one_edge, size, weigh=False)
        assert not kept.reads_low and kept.volume_ml == pytest.approx(1.01 * one_edge)
        assert fused_volume(0.99 * one_edge, size, weigh=False).reads_low
    bigger = fused_volume(0.5, 3.0)  # a larger outline reads more of the truth: a smaller factor
    assert bigger.reads_low and bigger.volume_ml == pytest.approx(3.0 / shape_of_truth(3.0)[1])
    assert bigger.volume_ml / 3.0 < low.volume_ml / 1.5 and bigger.low_ml > 0.5
    for shape in (None, 0.5 * SHAPE_MIN_ML):  # no shape to check it by: the darkness, reaching up
        unchecked = fused_volume(0.8, shape)
        assert (unchecked.volume_ml, unchecked.reads_low, unchecked.checked) == (0.8, False, False)
        assert unchecked.low_ml == pytest.approx(0.8 / DARKNESS_OF_TRUTH[1])
        assert unchecked.high_ml == pytest.approx(0.8 / UNCHECKED_DARKNESS_OF_TRUTH)
        assert unchecked.high_ml > 2 * unchecked.volume_ml
    assert agree.checked and low.checked
    # the geometric estimate is kept beside the one reported, whichever that is
    assert agree.shape_ml == low.shape_ml == pytest.approx(1.5 / mid) and unchecked.shape_ml is None


def test_a_darkness_kept_under_the_shapes_truth_is_weighed_with_it():
    """A darkness the checks keep is right (the analyzer's physics) or low (another room's),
    and its share of the shape's truth cannot tell which: from the shape's truth up it is the
    volume; under it the two are weighed by ratio (darkness_weight), the interval holding both
    values; at LEVEL_DARKNESS_AGREES_WITH_SHAPE and under it weighs nothing and reads low. At
    every size the shape is read from (a gate at a size would step the volume), and not against
    one view's shape, whose scale is its own. With the shape fixed the volume dips between the
    ends, to 0.92 of the shape's truth at most (it fell to half at DARKNESS_AGREES_WITH_SHAPE
    before the weighing)."""
    from monitor.vision.biplane import (
        DARKNESS_OF_TRUTH,
        LEVEL_DARKNESS_AGREES_WITH_SHAPE,
        ONE_VIEW_SPREAD,
        darkness_weight,
        fused_volume,
        shape_of_truth,
    )

    lo = LEVEL_DARKNESS_AGREES_WITH_SHAPE
    assert darkness_weight(1.0) == 1.0
    assert darkness_weight(lo) == darkness_weight(0.9 * lo) == 0.0
    assert darkness_weight((1.0 + lo) / 2) == pytest.approx(0.5)
    low, mid, high = shape_of_truth(1.5)
    truth = 1.5 / mid
    at = fused_volume(truth, 1.5)  # at the shape's truth: the darkness
    assert at.volume_ml == pytest.approx(truth) and at.darkness_weight == 1.0
    darkness = (1.0 + lo) / 2 * truth  # halfway: the geometric mean
    half = fused_volume(darkness, 1.5)
    assert not half.reads_low and half.darkness_ml == darkness and half.shape_ml == pytest.approx(truth)
    assert half.volume_ml == pytest.approx(np.sqrt(darkness * truth))
    assert half.darkness_weight == pytest.approx(0.5)
    assert half.low_ml == pytest.approx(darkness / DARKNESS_OF_TRUTH[1])
    assert half.high_ml == pytest.approx(max(darkness / DARKNESS_OF_TRUTH[0], 1.5 / low))
    assert half.low_ml < darkness < half.volume_ml < truth < half.high_ml
    near_lo = fused_volume(1.01 * lo * truth, 1.5)  # just over the level's check: nearly the shape's
    assert near_lo.volume_ml == pytest.approx(truth, rel=0.01) and not near_lo.reads_low
    at_lo = fused_volume(lo * truth, 1.5)  # at it: weighs nothing, the shape's, said to read low
    assert at_lo.reads_low and at_lo.volume_ml == pytest.approx(truth) and at_lo.darkness_weight == 0.0

    # a small shape is weighed as a large one
    small = shape_of_truth(0.2)[1]
    weighed = fused_volume(0.85 * 0.2 / small, 0.2)
    assert weighed.darkness_weight == pytest.approx(darkness_weight(0.85)) and not weighed.reads_low
    assert weighed.volume_ml == pytest.approx(0.85 ** darkness_weight(0.85) * 0.2 / small)
    assert fused_volume(0.69 * 0.2 / small, 0.2).reads_low
    # the dip: never under 0.92 of the shape's truth, and no step anywhere from the level's check up
    shares = np.linspace(lo + 1e-6, 1.0, 301)
    volumes = np.array([fused_volume(x * truth, 1.5).volume_ml for x in shares]) / truth
    assert volumes.min() > 0.92 and np.abs(np.diff(volumes)).max() < 0.01
    # one view's shape: not weighed (its own scale of the truth per case)
    one = fused_volume(darkness, 1.5, spread=ONE_VIEW_SPREAD["lateral"], weigh=False)
    assert one.volume_ml == darkness and one.darkness_weight == 1.0 and not one.reads_low


def test_a_darkness_over_the_shapes_truth_is_weighed_with_it_up_to_where_it_reads_high():
    """Every unknown of a real room makes the darkness read low (scatter, a hardening beam, a
    fainter cement); over the shape's truth it has misread (8-bit video's log scale: tuning
    seeds 5035 and 5118 read 1.3-1.4x the shape's truth, 1.4x the truth, where the shape read
    0.97-1.07x). So over it the darkness is weighed with the shape's truth as under it, by ratio:
    all of it at the shape's truth, none at DARKNESS_ABOVE_SHAPE, where it reads high, with no
    step on the way, in the volume or its interval (the two intervals weighed alike). Faded in
    as the shape's reading becomes known, from half SHAPE_SPREAD_FROM_ML of truth to all of it
    (the simple world's darkness, right, read over small shapes' truth), again with no step."""
    from monitor.vision.biplane import (
        DARKNESS_ABOVE_SHAPE,
        SHAPE_SPREAD_FROM_ML,
        darkness_volume,
        darkness_weight,
        fused_volume,
        shape_of_truth,
    )

    assert darkness_weight(DARKNESS_ABOVE_SHAPE) == 0.0 and darkness_weight(1.0) == 1.0
    assert 0.0 < darkness_weight(1.3) < darkness_weight(1.1) < 1.0
    low, mid, high = shape_of_truth(1.5)
    truth = 1.5 / mid
    over = fused_volume(1.3 * truth, 1.5)
    w = darkness_weight(1.3)
    assert not over.reads_high and not over.reads_low and over.darkness_weight == pytest.approx(w)
    assert over.volume_ml == pytest.approx(1.3**w * truth)
    assert over.low_ml < over.volume_ml < over.high_ml and truth < over.volume_ml < 1.3 * truth
    # the volume and both ends of its interval, from the shape's truth to where it reads high
    shares = np.linspace(1.0, DARKNESS_ABOVE_SHAPE * (1 - 1e-9), 301)
    read = [fused_volume(x * truth, 1.5) for x in shares]
    for field in ("volume_ml", "low_ml", "high_ml"):
        values = np.array([getattr(r, field) for r in read]) / truth
        assert np.abs(np.diff(values)).max() < 0.01, field
    at_one, darkness = read[0], darkness_volume(truth)
    assert (at_one.low_ml, at_one.volume_ml) == (pytest.approx(darkness.low_ml), pytest.approx(truth))
    reads_high = fused_volume(DARKNESS_ABOVE_SHAPE * truth, 1.5)  # at it, exactly: high, not low
    assert reads_high.reads_high and not reads_high.reads_low and reads_high.volume_ml == pytest.approx(truth)
    for field in ("volume_ml", "low_ml", "high_ml"):
        assert getattr(read[-1], field) == pytest.approx(getattr(reads_high, field), rel=1e-6), field
    # with the shape fixed, the volume rises to 1.10 of its truth (at a share of about 1.2) and
    # comes back: a darkness further over it is likelier misread
    assert max(r.volume_ml for r in read) / truth < 1.11
    # faded in with the shape's truth: the darkness whole under half SHAPE_SPREAD_FROM_ML of it,
    # no step where it reaches SHAPE_SPREAD_FROM_ML (where reading high begins)
    size = 0.12
    small_truth = size / shape_of_truth(size)[1]
    assert small_truth < SHAPE_SPREAD_FROM_ML / 2
    small = fused_volume(1.3 * small_truth, size)
    assert small.volume_ml == pytest.approx(1.3 * small_truth) and small.darkness_weight == 1.0
    sizes = np.linspace(0.12, 0.6, 481)
    for share in (1.3, 2.0):
        ratio = []
        for size in sizes:
            t = size / shape_of_truth(size)[1]
            ratio.append(fused_volume(share * t, size).volume_ml / t)
        assert np.abs(np.diff(ratio)).max() < 0.01, share
        assert ratio[-1] == pytest.approx(1.3**w if share == 1.3 else 1.0)


def test_a_level_whose_darkness_reads_low_over_its_frames_gives_the_shape_and_one_reading_high_too():
    """A room's scatter, beam and cement are the level's: a darkness that one frame's outline
    lets pass (over half the shape's truth) is refused where the level's darkness has read low
    (its median share under LEVEL_DARKNESS_AGREES_WITH_SHAPE); its interval then reaches the
    darkness, which in such a room the truth is not under, even where this frame's is over the
    shape's truth. A darkness far over the shape's truth (a denser cement, less scatter than
    modelled) reads high: the shape, whatever the level read, where the shape's truth is large
    enough for its reading to be known (SHAPE_SPREAD_FROM_ML)."""
    from monitor.vision.biplane import (
        DARKNESS_ABOVE_SHAPE,
        DARKNESS_AGREES_WITH_SHAPE,
        LEVEL_DARKNESS_AGREES_WITH_SHAPE,
        SHAPE_SPREAD_FROM_ML,
        darkness_share,
        fused_volume,
        shape_of_truth,
    )

    assert DARKNESS_AGREES_WITH_SHAPE < LEVEL_DARKNESS_AGREES_WITH_SHAPE < 1 < DARKNESS_ABOVE_SHAPE
    lo, mid, hi = shape_of_truth(1.5)
    truth = 1.5 / mid  # what the shape gives
    assert darkness_share(0.6 * truth, 1.5) == pytest.approx(0.6)
    assert darkness_share(0.6, None) is None and darkness_share(0.6, 0.05) is None
    assert darkness_share(0.6, 0.3) is None  # a truth under SHAPE_SPREAD_FROM_ML: says little
    passes = 0.6 * truth  # over the frame's check, but under the level's: it weighs nothing
    assert fused_volume(passes, 1.5).reads_low and fused_volume(passes, 1.5).volume_ml == pytest.approx(truth)
    refused = fused_volume(passes, 1.5, level_reads_low=True)
    assert refused.reads_low and refused.volume_ml == pytest.approx(truth)
    assert (refused.low_ml, refused.high_ml) == (pytest.approx(1.5 / hi), pytest.approx(1.5 / lo))
    near = fused_volume(0.95 * truth, 1.5, level_reads_low=True)  # this frame's darkness is a floor
    assert (
        near.reads_low
        and near.low_ml == pytest.approx(0.95 * truth)
        and near.volume_ml == pytest.approx(truth)
    )
    over = fused_volume(1.3 * truth, 1.5, level_reads_low=True)  # over the shape on this frame
    assert over.reads_low and over.volume_ml == pytest.approx(truth)
    assert over.low_ml == pytest.approx(truth) and over.high_ml == pytest.approx(1.3 * truth)
    for level_reads_low in (False, True):
        high = fused_volume(1.01 * DARKNESS_ABOVE_SHAPE * truth, 1.5, level_reads_low)
        assert high.reads_high and not high.reads_low and high.volume_ml == pytest.approx(truth)
        assert high.low_ml < truth < high.high_ml < high.darkness_ml
    small = 0.2 / shape_of_truth(0.2)[1]  # under SHAPE_SPREAD_FROM_ML: the shape's reading too unsure
    assert small < SHAPE_SPREAD_FROM_ML and not fused_volume(2 * DARKNESS_ABOVE_SHAPE * small, 0.2).reads_high
    # just under it: not read high, but weighed with the shape's truth, nearly all of it that
    # (darkness_weight; a step there would move the volume by a half)
    kept = fused_volume(0.99 * DARKNESS_ABOVE_SHAPE * truth, 1.5)
    assert not kept.reads_high and kept.volume_ml == pytest.approx(truth, rel=0.02)


def test_the_curve_the_shapes_show_of_the_darkness_is_fitted_from_running_sums():
    """darkness = 0.4 * truth ** 0.6 on shapes of 0.5-3 mL: the running sums' slope is 0.6; under
    DARKNESS_CURVE_MIN_SHAPES shapes, or shapes spanning under 1.5x, no curve; a slope beyond
    SHAPE_EXPONENT_BOUNDS is held to them (never over 1: a hardening beam bends the darkness
    under linear). With that curve after one syringe (1 mL at a darkness of 0.4), 3 mL reads
    3 mL where the linear reading gives 1.93; once two syringes 1.5x apart show their own curve,
    theirs is used, not the shapes'."""
    from monitor.vision.biplane import (
        DARKNESS_CURVE_MIN_SHAPES,
        SHAPE_EXPONENT_BOUNDS,
        darkness_curve_exponent,
        syringe_anchored_volume,
    )

    def sums(points):
        x, y = np.log([t for t, _ in points]), np.log([d for _, d in points])
        return (len(x), x.sum(), y.sum(), (x * x).sum(), (x * y).sum(), x.min(), x.max())

    def darkness(truth_ml, p=0.6):
        return 0.4 * truth_ml**p

    sizes = np.linspace(0.5, 3.0, 12)
    assert darkness_curve_exponent(sums([(t, darkness(t)) for t in sizes])) == pytest.approx(0.6)
    few = sizes[: DARKNESS_CURVE_MIN_SHAPES - 1]
    assert darkness_curve_exponent(sums([(t, darkness(t)) for t in few])) is None
    narrow = np.linspace(0.5, 0.7, 12)  # 1.4x: no curve shown
    assert darkness_curve_exponent(sums([(t, darkness(t)) for t in narrow])) is None
    assert darkness_curve_exponent(sums([(t, darkness(t, 0.1)) for t in sizes])) == SHAPE_EXPONENT_BOUNDS[0]
    assert (
        darkness_curve_exponent(sums([(t, darkness(t, 1.3)) for t in sizes]))
        == SHAPE_EXPONENT_BOUNDS[1]
        == 1.0
    )
    curved = syringe_anchored_volume(darkness(3.0), [(0.4, 1.0)], shape_exponent=0.6)
    assert curved.volume_ml == pytest.approx(3.0) and curved.low_ml < 3.0 < curved.high_ml
    assert syringe_anchored_volume(darkness(3.0), [(0.4, 1.0)]).volume_ml == pytest.approx(3.0**0.6)
    # two syringes whose darkness grew as volume ** 0.8: their curve, not the shapes' 0.6
    two = [(darkness(1.0, 0.8), 1.0), (darkness(2.0, 0.8), 2.0)]
    assert syringe_anchored_volume(darkness(3.0, 0.8), two, shape_exponent=0.6).volume_ml == pytest.approx(
        3.0
    )


def test_syringes_anchor_the_volume_and_a_second_one_shows_the_darkness_curve():
    """A darkness that grows as volume ** 0.6 (a hardening beam): after one 1 mL syringe the
    volume is the syringe scaled on linearly (reads low as the curve bends); after a second, the
    exponent fitted on the two anchors follows the curve to within a percent at 3 mL. Between
    syringes the volume never falls under what was delivered, and the interval holds it."""
    from monitor.vision.biplane import darkness_exponent, syringe_anchored_volume

    def darkness(volume_ml: float) -> float:
        return 0.6 * volume_ml**0.6

    one = [(darkness(1.0), 1.0)]
    linear = syringe_anchored_volume(darkness(3.0), one)
    assert linear.volume_ml == pytest.approx(darkness(3.0) / darkness(1.0))  # 1.93 mL: linear
    two = one + [(darkness(2.0), 2.0)]
    assert darkness_exponent(two) == pytest.approx(0.6)
    curved = syringe_anchored_volume(darkness(3.0), two)
    assert curved.volume_ml == pytest.approx(3.0, rel=0.01)
    assert curved.low_ml < curved.volume_ml < curved.high_ml
    dimmer = syringe_anchored_volume(0.9 * darkness(2.0), two)  # brightness control: a dip
    assert dimmer.volume_ml == 2.0 and dimmer.low_ml < 2.0 < dimmer.high_ml


def test_a_syringes_growth_read_from_the_shape_carries_the_shapes_own_factor_on_the_growth_alone():
    """A case whose shape reads 1.1x its truth throughout: read from the shape, the volume after
    a 1 mL syringe is that 1 mL plus the shape's growth since, so at 2.5 mL of truth it reads
    2.65 (6 % over; the shape alone 2.75, 10 %). Once a second syringe (2 mL) shows what the
    syringes deliver per mL of the shape's growth, the growth is scaled by it: 2.5 mL exactly.
    Never under the last syringe; a shape fallen well under its reading at the syringe or the
    largest since (an outline losing cement), no shape now or at the syringe: None, and the
    darkness's growth is read instead; the fitted scale within its bounds."""
    from monitor.vision.biplane import (
        SYRINGE_SHAPE_GROWTH_SPREAD,
        SYRINGE_SHAPE_RATE_BOUNDS,
        shape_growth_rate,
        syringe_shape_volume,
    )

    def shape(truth_ml: float) -> float:
        return 1.1 * truth_ml

    one = [(shape(1.0), 1.0)]
    got = syringe_shape_volume(0.4, shape(2.5), one)
    assert got.volume_ml == pytest.approx(2.65) and got.darkness_ml == 0.4 and got.shape_ml == shape(2.5)
    growth = 1.65
    assert got.low_ml == pytest.approx(1.0 + growth * (1 - SYRINGE_SHAPE_GROWTH_SPREAD) - 0.05)
    assert got.high_ml == pytest.approx(1.0 + growth * (1 + SYRINGE_SHAPE_GROWTH_SPREAD) + 0.05)
    assert got.low_ml <= 2.5 <= got.high_ml and got.darkness_weight == 0.0
    two = one + [(shape(2.0), 2.0)]
    assert shape_growth_rate(two) == pytest.approx(1 / 1.1)
    assert syringe_shape_volume(0.4, shape(2.5), two).volume_ml == pytest.approx(2.5)
    # an outline losing cement: a shape a quarter under its reading at the syringe, or 15 % under
    # the largest read since, is not read (the darkness's growth is); a few per cent is its noise
    assert syringe_shape_volume(0.4, shape(1.5), two) is None
    assert syringe_shape_volume(0.4, 0.85 * shape(2.6), two, largest_ml=shape(2.6)) is None
    noisy = syringe_shape_volume(0.4, 0.97 * shape(2.0), two, largest_ml=shape(2.0))
    assert noisy.volume_ml == 2.0 and noisy.high_ml == pytest.approx(2.05)
    assert syringe_shape_volume(0.4, 0.95 * shape(2.6), two, largest_ml=shape(2.6)).volume_ml > 2.0
    assert syringe_shape_volume(0.4, None, two) is None
    assert syringe_shape_volume(0.4, shape(2.5), [(shape(1.0), 1.0), (None, 2.0)]) is None
    # the scale is fitted on the anchors with shapes only, and held within its bounds
    assert shape_growth_rate([(shape(1.0), 1.0), (None, 2.0)]) == 1.0
    assert shape_growth_rate([(1.0, 1.0), (1.1, 2.0)]) == SYRINGE_SHAPE_RATE_BOUNDS[1]
    assert shape_growth_rate([(1.0, 1.0), (1.0, 2.0)]) == 1.0  # the shape did not grow: no scale


def test_a_syringes_growth_is_the_shapes_only_where_the_darkness_reads_low_and_bends():
    """The shape's growth is chosen where the level's darkness reads low against the shape and
    bends (the curve its shapes show under DARKNESS_BENDS_UNDER), or reads low before its shapes
    show a curve; not where it reads as the analyzer's physics has it, nor where it reads low
    but linearly (a misstated attenuation: one syringe calibrates it exactly)."""
    from monitor.vision.analysis import CaseAnalyzer
    from monitor.vision.biplane import DARKNESS_BENDS_UNDER

    def level(darkness_low: bool, p: float | None) -> CaseAnalyzer:
        case = CaseAnalyzer()
        case.darkness_low = darkness_low
        if p is not None:  # twelve shapes 0.5-3 mL whose darkness grows as truth ** p
            x = np.log(np.linspace(0.5, 3.0, 12))
            y = np.log(0.4) + p * x
            case._darkness_curve = (len(x), x.sum(), y.sum(), (x * x).sum(), (x * y).sum(), x.min(), x.max())
        return case

    assert not level(False, 0.6).growth_from_shape()
    assert level(True, 0.6).growth_from_shape() and level(True, None).growth_from_shape()
    assert not level(True, 1.0).growth_from_shape()
    assert level(True, DARKNESS_BENDS_UNDER - 0.01).growth_from_shape()
    assert not level(True, DARKNESS_BENDS_UNDER + 0.01).growth_from_shape()


def test_a_restart_takes_up_the_current_levels_syringes_with_the_growth_each_chose():
    """An analyzer restarted from a log reads its syringe entries: the anchors (darkness, shape,
    total) of the current level only, a "level" forgetting those before it, and the growth the
    last entry chose (the shape's or the darkness's), as logged, not decided again on a curve a
    restart has not seen; an entry from a log before 2026-12-06 (no shape) reads the darkness's."""
    from monitor.analyzer import VisionAnalysis

    def entry(total, darkness, shape=None, growth=None, curve=None):
        value = {"syringe_ml": total, "darkness_ml": darkness}
        if growth is not None:
            value |= {"shape_ml": shape, "growth": growth, "darkness_curve": curve}
        return {"event": "syringe-entry", "source": "analyzer", "value": value}

    level = {"event": "level", "source": "viewer", "value": "L2"}
    first = [entry(1.0, 0.4, 1.1, "shape"), entry(2.0, 0.7, 2.2, "shape")]
    analysis = VisionAnalysis(level="L1")
    analysis._take_up_syringes(first)
    assert analysis._pairs == [(0.4, 1.0), (0.7, 2.0)]
    assert analysis._shape_anchors == [(1.1, 1.0), (2.2, 2.0)] and analysis._growth_from_shape
    assert analysis._shape_top == 2.2 and analysis.case.darkness_calibrated
    analysis._take_up_syringes([*first, level, entry(1.0, 0.3, 0.9, "darkness")])
    assert analysis._pairs == [(0.3, 1.0)] and analysis._shape_anchors == [(0.9, 1.0)]
    assert not analysis._growth_from_shape
    analysis._take_up_syringes([*first, level, entry(1.0, 0.3)])  # an older log's entry
    assert analysis._shape_anchors == [(None, 1.0)] and not analysis._growth_from_shape
    # the darkness's curve as the level's last entry logged it: a later entry chooses on it (a
    # darkness low but linear, p = 1: its own growth), not on none, as a restart would have it
    x = np.log(np.linspace(0.5, 3.0, 12))
    y = np.log(0.4) + x
    curve = [12.0, x.sum(), y.sum(), (x * x).sum(), (x * y).sum(), x.min(), x.max()]
    linear = entry(2.0, 0.8, 2.2, "darkness", curve)
    analysis = VisionAnalysis(level="L1")
    analysis._take_up_syringes([entry(1.0, 0.4, 1.1, "darkness"), linear])
    analysis.case.restore_darkness_low()  # as restore does from the log's darkness-reads-low
    assert analysis.case.shape_darkness_exponent() == pytest.approx(1.0)
    assert not analysis.case.growth_from_shape()
    analysis = VisionAnalysis(level="L2")
    analysis._take_up_syringes([entry(1.0, 0.4, 1.1, "darkness"), linear, level])  # L1's curve
    assert analysis.case.darkness_curve_record() is None


def test_a_syringe_entered_while_the_image_shows_no_cement_gives_the_syringes_volume():
    """The images read 0.05 mL when 2 mL have gone in (cement too faint to see): the volume is
    the syringes' 2 mL, its interval reaching one more syringe, not the images' 0.05 mL."""
    from monitor.vision.biplane import syringe_anchored_volume

    got = syringe_anchored_volume(0.05, [(0.02, 1.0), (0.04, 2.0)])
    assert got.volume_ml == 2.0 and got.low_ml < 2.0 and got.high_ml == pytest.approx(3.0)


def test_a_double_press_does_not_bend_the_curve_nor_does_a_dimmer_frame_narrow_the_interval():
    """Two entries on one darkness (a double press) said p = 0 (clipped to 0.4): 1.2x the
    darkness read 3.15 mL for 2 mL entered; such anchors now keep the curve linear. A darkness
    fallen under the last syringe's contradicts the reading: the interval reaches a syringe on."""
    from monitor.vision.biplane import darkness_exponent, syringe_anchored_volume

    assert darkness_exponent([(1.0, 1.0), (1.0, 2.0)]) == 1.0
    assert syringe_anchored_volume(1.2, [(1.0, 1.0), (1.0, 2.0)]).volume_ml == pytest.approx(2.4)
    dip = syringe_anchored_volume(0.8, [(0.5, 1.0), (1.0, 2.0)])
    assert dip.volume_ml == 2.0 and dip.high_ml >= 3.0


def test_a_syringe_at_a_new_level_is_not_anchored_on_the_last_levels_darkness():
    """Level L1 ended reading 4 mL; at L2 the operator enters 1 mL before the new level has read
    any cement: that 4 mL set the scale to 0.25 and anchored L2 at it. Now the syringe is the
    volume, no scale is learnt from it and the darkness is not said to be calibrated; nor is L1's
    last shape, or its syringe's anchors, carried to L2."""
    from monitor.analyzer import VisionAnalysis
    from monitor.messages import Command

    def level_one() -> VisionAnalysis:
        analysis = VisionAnalysis(level="L1")
        # what L1's last frame read, its darkness and its shape's truth (frames would set them)
        analysis._raw_volume_ml, analysis._raw_shape_ml = 4.0, 4.4
        analysis._frames_seen = True  # ... as they would this (a level before any frame names L1)
        return analysis

    analysis = level_one()
    analysis.apply(Command("s", "test", 0.0, "level", "L2"))
    said = analysis.apply(Command("s", "test", 0.0, "syringe", 1.0))
    assert "too little cement to read" in said
    assert analysis.volume_scale == 1.0 and not analysis.case.darkness_calibrated
    # nor on its shape: L1's syringes' anchors are not L2's, whose growth is read from its own
    analysis = level_one()
    analysis.apply(Command("s", "test", 0.0, "syringe", 3.0))
    assert analysis._shape_anchors == [(4.4, 3.0)]
    analysis.apply(Command("s", "test", 0.0, "level", "L2"))
    assert analysis._pairs == [] and analysis._shape_anchors == []
    analysis.apply(Command("s", "test", 0.0, "syringe", 1.0))
    assert analysis._pairs == [(0.0, 1.0)] and analysis._shape_anchors == [(None, 1.0)]


def test_the_fast_median_is_numpys_median_on_odd_even_and_2d_input():
    """The registration and the noise estimate read their medians through it: any difference
    from np.median would move the cement's threshold and the breathing shift."""
    from monitor.vision.stats import median

    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 2998, 2999):
        for dtype in (np.float32, np.float64):
            values = rng.normal(size=n).astype(dtype)
            assert median(values) == float(np.median(values))
    image = rng.normal(size=(31, 40)).astype(np.float32)
    assert median(image) == float(np.median(image))
    with pytest.raises(ValueError):
        median(np.zeros(0))


def _track_case(
    sleeve_mm: float, lumen: float = 0.13, sleeve: float = 0.12, noise: float = 0.004, start_mm: float = 0.0
):
    """A lateral ROI (0.25 mm pixels) with a horizontal 3.2 mm shaft from a tip at x = 40 out
    through a posterior wall at x = 100 (posterior towards larger x): its lumen's cement reads
    ``lumen`` on the axis from the tip out, and a sleeve of cement around it adds ``sleeve``
    from ``start_mm`` beyond the wall to ``sleeve_mm`` beyond it."""
    from monitor.vision.anatomy import Cannula, LateralBody, Line
    from monitor.vision.cement import CementMap

    rng = np.random.default_rng(3)
    diff = rng.normal(0.0, noise, (120, 200)).astype(np.float32)
    diff[56:65, 40:] += lumen
    diff[56:65, 100 + int(start_mm / 0.25) : 100 + int(sleeve_mm / 0.25)] += sleeve
    cement = CementMap(diff, np.zeros_like(diff, bool), np.full_like(diff, 0.045), noise)
    wall, front = Line(0.0, 100.0, True, 0), Line(0.0, 0.0, True, 0)
    body = LateralBody(wall, front, Line(0.0, 20.0, False, 0), Line(0.0, 100.0, False, 0), 1)
    cannula = Cannula((40.0, 60.0), (1.0, 0.0), 12.8, np.zeros((4, 4), bool), 1.0, 160.0, True)
    return cement, cannula, body


def _read_track(cement, cannula, tip, body, others=None):
    """The track read as the analysis reads it: the shaft's axis profile, then the track on it
    (0.25 mm working pixels, the configured 0.18 per mm)."""
    from monitor.vision.measure import axis_profile, read_track

    profile = axis_profile(cement.difference, cannula, tip, body, 0.25)
    return read_track(profile, cement.threshold, cannula, 0.25, 0.18, others)


def _mirrored(cement, cannula, body):
    """The same case seen from the other side: posterior towards smaller x."""
    from dataclasses import replace as _replace

    from monitor.vision.anatomy import Line

    flipped = _replace(
        cement, difference=cement.difference[:, ::-1].copy(), threshold=cement.threshold[:, ::-1].copy()
    )
    w = cement.difference.shape[1] - 1
    wall = Line(0.0, w - 100.0, True, 0)
    body = _replace(body, posterior=wall, anterior=Line(0.0, float(w), True, 0), posterior_sign=-1)
    cannula = _replace(cannula, tip=(w - 40.0, 60.0), direction=(-1.0, 0.0))
    return flipped, cannula, body


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize(("sleeve_mm", "found"), [(3.0, True), (0.0, False)])
def test_cement_leaving_along_the_needle_track_is_read_against_the_lumens_own(sleeve_mm, found, mirrored):
    """A faint posterior leak back along the track hides under the steel. The lumen's own cement
    (here 0.13 log units over the 2.45 mm bore of the 11 G cannula the 3.2 mm shaft measured is:
    0.053 per mm, a faint cement in a room with much scatter) is the reference: a sleeve adding
    0.12 from the wall 3 mm out is a posterior leak 3 mm deep whose volume is read at the
    lumen's attenuation, not the configured 0.18 per mm; the lumen alone is no leak. Seen from
    either side (the posterior wall towards larger or smaller x)."""
    from monitor.vision.measure import track_leak

    cement, cannula, body = _track_case(sleeve_mm)
    if mirrored:
        cement, cannula, body = _mirrored(cement, cannula, body)
    track = _read_track(cement, cannula, cannula.tip, body)
    if not found:
        assert track is None
        return
    assert track is not None and track.depth_mm == pytest.approx(sleeve_mm, abs=0.5)
    assert track.outer_mm == 3.05 and track.mu_per_mm == pytest.approx(0.13 / 2.45, rel=0.1)
    grid = PixelGrid.for_spacing(0.125)  # working pixels of 0.25 mm are 2 x 2 image pixels
    leak = track_leak(track, grid, (0, 0))
    # 12 points of 0.25 mm, 0.12 on the axis; across the steel (0.575 x 3.05 mm each side) a
    # parabola reaching nothing at 0.9 x 3.05 mm: 2.97 mm wide in effect; at 0.053 per mm
    hidden, band = 0.575 * 3.05, 0.9 * 3.05
    expected = 12 * 0.12 * (2 * hidden - 2 * hidden**3 / (3 * band**2)) * 0.25 / ((0.13 / 2.45) * 1000.0)
    assert leak.site == "posterior" and leak.volume_ml == pytest.approx(expected, rel=0.15)
    x_wall = 100 if not mirrored else cement.difference.shape[1] - 1 - 100
    inside = sorted((2 * x_wall, 2 * (x_wall + (12 if not mirrored else -12))))
    assert inside[0] - 2 <= leak.centroid[0] <= inside[1] + 2  # in image pixels, twice the working ones
    assert leak.box[2] > 2 * 12  # the run and the band about it, in image pixels
    # its deepest point, for the distance once the leak is confirmed: the run's end beyond the wall
    assert leak.behind_wall.distance_mm == pytest.approx(-track.depth_mm)
    assert leak.behind_wall.distance_px == pytest.approx(-track.depth_mm / 0.25 * 2)
    assert leak.behind_wall.at[0] == pytest.approx(2 * float(track.xs[-1]), abs=2)


@pytest.mark.parametrize(
    ("why", "case"),
    [
        ("the lumen empty", {"lumen": 0.0}),
        ("the lumen under the cement threshold", {"lumen": 0.03, "noise": 0.001}),
        (
            "a sleeve starting 2 mm beyond the wall, not coming out through it",
            {"start_mm": 2.0, "sleeve_mm": 5.0},
        ),
    ],
)
def test_no_track_leak_without_a_filled_lumen_or_a_sleeve_through_the_wall(why, case):
    """Nothing to judge a sleeve against (the lumen not filled, or too faint to read over the
    cement threshold, where its level over the bore would make any size of leak), or cement on
    the shaft that does not come out through the wall: no track reading."""
    cement, cannula, body = _track_case(**{"sleeve_mm": 3.0, **case})
    assert _read_track(cement, cannula, (40.0, 60.0), body) is None, why


def test_a_second_shaft_crossing_the_first_at_the_wall_is_not_a_track_leak():
    """Two cannulas through one pedicle can cross in the lateral view just behind the wall;
    the second's lumen filling then adds to the first's axis there, as a sleeve would. No track
    reading is made while another shaft crosses the axis within 2 mm in front of the wall to 6 mm
    beyond it; one crossing farther out does not stop it."""
    cement, cannula, body = _track_case(3.0)
    near = np.zeros(cement.difference.shape, bool)
    near[:, 103:108] = True  # a shaft crossing 1-2 mm beyond the wall
    assert _read_track(cement, cannula, (40.0, 60.0), body, near) is None
    far = np.zeros(cement.difference.shape, bool)
    far[:, 150:155] = True  # 12.5 mm beyond
    assert _read_track(cement, cannula, (40.0, 60.0), body, far) is not None


def _faint_vein_scene(seed: int = 0):
    """A region at 0.25 mm a pixel: a bolus 12 mm across (0.3 log units) and noise as the
    segmentation smooths it (0.006 spread); returns (difference, flat baseline, its gradient,
    bolus, yy, xx)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 0.03, (240, 240)).astype(np.float32), (0, 0), 1.0)
    yy, xx = np.mgrid[:240, :240]
    bolus = (xx - 120) ** 2 + (yy - 100) ** 2 <= 24**2
    difference = noise + 0.3 * bolus.astype(np.float32)
    flat = np.zeros_like(difference)
    return difference, flat, flat.copy(), bolus, yy, xx


@pytest.mark.parametrize(
    ("why", "strip", "facing_dip", "kept"),
    [
        ("the steel moved: its lower edge's spill as high as the upper edge's dip", 0.10, -0.20, False),
        ("cement along the needle, the upper edge ringing dark (edge enhancement)", 0.40, -0.10, True),
        ("cement along the needle, nothing dipping", 0.40, 0.0, True),
    ],
)
def test_the_strips_beside_the_steel_are_cement_unless_the_steel_moved(why, strip, facing_dip, kept):
    """A shaft 8 pixels wide along +x from (10, 30): its band reaches 7.2 pixels from the axis, the
    steel 4.6. The lower strip reads ``strip`` along the whole shaft; the upper edge of the steel
    reads ``facing_dip`` from 40 to 60 pixels along it only. Cement only adds attenuation, so such
    a dip is the steel moved, or a dark ring around dense cement: the strip across from it is the
    steel's motion where it reads no more than the dip is deep, cement where it reads well above."""
    from monitor.vision.cement import CementMap, sleeve_cement

    rows, cols = np.mgrid[0:60, 0:90].astype(np.float32)
    along, normal = cols - 10.0, rows - 30.0  # +normal is down (larger y)
    band = (np.abs(normal) <= 7.2) & (along >= 0)
    sleeve = band & (np.abs(normal) > 4.6)
    difference = np.zeros(rows.shape, np.float32)
    difference[sleeve & (normal > 0)] = strip
    difference[(np.abs(normal + 4.0) < 0.5) & (along >= 40) & (along <= 60)] = facing_dip
    cement = CementMap(difference, np.zeros(rows.shape, bool), np.full(rows.shape, 0.05, np.float32), 0.01)
    lit = sleeve_cement(cement, sleeve, band, [((10.0, 30.0), (1.0, 0.0), 7.2)])
    lower = sleeve & (normal > 0)
    facing = lower & (along >= 40) & (along <= 60)
    far = lower & ((along < 38) | (along > 62))  # beyond STEEL_MOVED_REACH_PX of the dip
    assert lit[far].all(), why
    assert lit[facing].all() == kept and (lit[facing].any() == kept), why
    assert not lit[sleeve & (normal < 0)].any()  # the upper strip read nothing


def test_a_vein_too_faint_to_segment_is_read_as_a_line_leaving_the_bolus():
    """A vein's cast 1 mm wide adds 0.025 log units: under the segmentation's threshold (its
    floor, 0.045, here) at every pixel, but read along its length it is a line, from near the
    bolus's edge to near its end 15 mm on (a segment's half-length short at each end). Not
    veins: the bolus's own rim, the steel, a line as faint 15 mm away from any cement, a line
    along the bolus rather than away from it (new cement around cement already there), the edge
    the breathing's misregistration leaves at a strong edge of the baseline, and a line the
    baseline already has (an endplate whose contrast the exposure changed, a cannula not found
    whose lumen fills); with no cement there is nothing to look for."""
    from monitor.vision.cement import segment
    from monitor.vision.veins import find_vein_lines

    difference, baseline, gradient, bolus, yy, xx = _faint_vein_scene()
    vein = (np.abs(xx - 120) <= 2) & (yy > 124) & (yy <= 184)  # down from the bolus, 15 mm
    exclude = (np.abs(yy - 100) <= 4) & (xx > 120)  # the steel
    faint = difference + 0.025 * vein
    cement = segment(faint, gradient, exclude, 0.25)
    assert not (cement.mask & vein & (yy > 130)).any(), "the vein must be too faint to segment"

    def veins(diff, base=baseline, grad=gradient, mask=cement.mask):
        return find_vein_lines(diff, base, grad, mask, exclude, 0.25)

    found = veins(faint)
    rows = np.flatnonzero(found[:, 110:131].any(axis=1))  # within 3 mm of the bolus and of its end
    assert rows.size and rows.min() <= 136 and rows.max() >= 172, (rows.min(), rows.max())
    assert not (found & ~(np.abs(xx - 120) <= 6)).any(), "found away from the vein"
    assert not veins(difference).any()
    assert not veins(faint, mask=np.zeros_like(bolus)).any()
    far = difference + 0.025 * ((np.abs(xx - 60) <= 2) & (yy > 160) & (yy <= 220))  # 15 mm from it
    assert not veins(far).any()
    along = difference + 0.05 * (np.abs(yy - 138) <= 1)  # 3.5 mm below the bolus, along it
    assert not veins(along).any(), "a line along the bolus (a shell's edge) does not leave it"
    # a ridge leaving the bolus where the vein does, twice as bright
    ridge = ((np.abs(xx - 120) <= 1) & (yy > 124) & (yy <= 184)).astype(np.float32)
    brighter = difference + 0.05 * ridge
    assert veins(brighter).any()  # new: a line
    # ... on a strong edge of the baseline (0.5 log units over a pixel), left a tenth of a pixel off
    assert not veins(brighter, grad=gradient + 0.5 * ridge).any()
    # ... where the baseline has a line 0.2 log units strong (an endplate brightened by a quarter)
    assert not veins(brighter, base=baseline + 0.2 * ridge).any()
    # ... 2 mm beside such a line that brightened with it (an endplate seen as two lines)
    old_line = ((np.abs(xx - 128) <= 1) & (yy > 124) & (yy <= 184)).astype(np.float32)
    twin = brighter + 0.05 * old_line
    assert veins(twin).any() and not veins(twin, base=baseline + 0.2 * old_line).any()
    # a step, not a line: the difference raised right of the vein's path (above one side only)
    step = difference + 0.05 * ((xx >= 120) & (yy > 124) & (yy <= 184))
    assert not veins(step).any()


def test_a_line_with_one_side_dipping_under_the_baseline_is_an_edge_moved_not_a_vein():
    """Cement only adds attenuation. A ridge 0.05 log units high leaving the bolus is a vein; the
    same ridge with the difference 0.10 under zero along one side (1-2.5 mm off it) is the light
    half of an edge that moved against the registration, its dense half dipping; but a vein on
    a background below zero on both sides (-0.03, as behind the posterior wall on edge-enhanced
    video) is still a vein."""
    from monitor.vision.cement import segment
    from monitor.vision.veins import find_vein_lines

    difference, baseline, gradient, _, yy, xx = _faint_vein_scene()
    exclude = np.zeros(difference.shape, bool)
    cement = segment(difference, gradient, exclude, 0.25)
    along = (yy > 124) & (yy <= 184)
    ridge = 0.05 * ((np.abs(xx - 120) <= 1) & along)

    def veins(diff):
        return find_vein_lines(diff.astype(np.float32), baseline, gradient, cement.mask, exclude, 0.25)

    assert veins(difference + ridge).any()
    one_side = -0.10 * ((xx >= 124) & (xx <= 130) & along)
    assert not veins(difference + ridge + one_side).any(), "one side dipping: an edge moved"
    both_sides = -0.03 * ((np.abs(xx - 120) >= 2) & (np.abs(xx - 120) <= 14) & along)
    assert veins(difference + ridge + both_sides).any(), "a vein on a background below zero"


def test_a_vein_read_as_a_line_is_a_venous_leak_where_it_lies_in_the_image():
    """Each vein of the line mask is one venous leak, read as a line: its box and centroid in the
    image's own pixels (the working grid at half resolution, the region 40 and 30 working pixels
    into the frame), its volume the difference summed over it."""
    from monitor.vision.measure import vein_leaks

    grid = PixelGrid(0.125, scale=2)  # 0.25 mm working pixels
    lines = np.zeros((100, 100), bool)
    lines[20:60, 10:12] = True  # 40 x 2 working pixels
    difference = np.full((100, 100), 0.02, np.float32)
    (leak,) = vein_leaks(lines, difference, grid, (40, 30), 0.2)
    assert leak.site == "venous" and leak.line and leak.doubt is None
    # working (50, 50) is full (100.5, 100.5): the corner, truncated; the middle (50.5, 69.5) of 2 x 40
    assert leak.box == (100, 100, 4, 80)
    assert leak.centroid == pytest.approx((101.5, 139.5), abs=0.1)
    assert leak.volume_ml == pytest.approx(80 * 0.02 * 0.25**2 / 200.0)
    assert vein_leaks(np.zeros((10, 10), bool), difference, grid, (0, 0), 0.2) == []
    assert leak.behind_wall is None  # no body given: nothing said of the wall


def test_a_vein_through_the_posterior_wall_says_how_far_beyond_it_it_reaches():
    """A basivertebral vein leaves through the posterior wall into the epidural plexus: with the
    lateral body, a line reaching the leak depth (1.5 mm) or more beyond the wall carries its
    deepest point, in mm and image pixels (tuning case 5031 read +1.7 mm, the bolus's front,
    for 11 frames while such a vein lay 3.3 mm beyond the wall). A line in front of the wall,
    or only 1 mm beyond it, carries none."""
    from monitor.vision.anatomy import LateralBody, Line
    from monitor.vision.measure import vein_leaks

    grid = PixelGrid(0.125, scale=2)  # 0.25 mm working pixels
    wall = Line(0.0, 50.0, True, 20)  # x = 50, posterior towards larger x
    body = LateralBody(
        wall, Line(0.0, 5.0, True, 20), Line(0.0, 5.0, False, 20), Line(0.0, 95.0, False, 20), 1
    )

    def read(columns, smeared_from=None, on=body):
        """A line over ``columns`` (4 px high) holding 0.04 on a background of 0.01; from
        ``smeared_from`` on, the mask runs on over pixels holding only 0.022."""
        difference = np.full((100, 100), 0.01, np.float32)
        lines = np.zeros((100, 100), bool)
        lines[30:34, columns[0] : columns[1]] = True
        difference[lines] = 0.04
        if smeared_from is not None:
            difference[30:34, smeared_from : columns[1]] = 0.022
        (leak,) = vein_leaks(lines, difference, grid, (40, 30), 0.2, body=on, min_depth_mm=1.5)
        return leak.behind_wall

    deepest = read((40, 62))  # from 10 px in front of the wall to 11 px (2.75 mm) beyond it
    assert deepest.distance_mm == pytest.approx(-11 * 0.25)
    assert deepest.distance_px == pytest.approx(-11 * 2)
    assert deepest.at[0] == pytest.approx(grid.to_full(61, 0, (40, 30))[0])
    assert read((30, 54)) is None  # 3 px (0.75 mm) beyond the wall at most: the wall's own uncertainty
    assert read((52, 70)).distance_mm == pytest.approx(-19 * 0.25)
    # a faint vein's line mask runs past its end: the end is where the difference holds half the
    # line's own level over its surroundings (as the front's rule reads an edge), not the mask's
    # last pixel (0.022 is over half the line's 0.04, not over halfway from the background's 0.01)
    assert read((52, 70), smeared_from=62).distance_mm == pytest.approx(-11 * 0.25)
    mirrored = LateralBody(wall, Line(0.0, 95.0, True, 20), body.superior, body.inferior, -1)
    inside = read((52, 70), on=mirrored)
    assert inside is None  # the body towards larger x: the same line lies inside it


def _lobe_scene(lobe_at=(120, 58), lobe_axes=(15, 6), neck=0.12, lobe=0.3, bolus=0.4, seed=0):
    """A region at 0.3 mm a pixel: a bolus 15 mm across (``bolus`` log units) at a cannula's tip, the
    steel's shaft entering from the left through it, and a lobe (``lobe`` log units, half-axes
    ``lobe_axes`` x, y pixels) joined to it by a neck 2 mm wide at ``neck`` log units (from the
    lobe's centre to the bolus's), smoothed and with noise (about 0.01) as the segmentation sees
    it; returns (difference, cement, steel, tip)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:200, :240]
    (lx, ly), (ax, ay) = lobe_at, lobe_axes
    relief = bolus * (((xx - 120) ** 2 + (yy - 110) ** 2) <= 25**2)
    relief = np.maximum(relief, lobe * ((((xx - lx) / ax) ** 2 + ((yy - ly) / ay) ** 2) <= 1))
    if neck:  # from the lobe's centre to the bolus's
        span = np.zeros(relief.shape, np.uint8)
        cv2.line(span, (int(lx), int(ly)), (120, 110), 1, 7)
        relief = np.maximum(relief, neck * span)
    difference = cv2.GaussianBlur(relief.astype(np.float32), (0, 0), 1.5)
    difference += cv2.GaussianBlur(rng.normal(0, 0.02, difference.shape).astype(np.float32), (0, 0), 1.0)
    steel = (np.abs(yy - 110) <= 3) & (xx <= 120)
    cement = (difference > 0.05) & ~steel
    return difference, cement, steel, (120.0, 110.0)


def test_a_lobe_above_or_below_the_bolus_across_a_valley_is_read_as_through_an_endplate():
    """Cement in the disc shows as a lobe above (or below) the bolus, joined to it across a
    valley (the endplate's crack): found on its side, about 15 mm above the bolus's centre here.
    Not lobes: the same lobe beside the bolus (a lobule of the trabecular fill, or a leak the
    other rules site), a lobe whose valley hardly dips (one mass), a piece not joined to the
    bolus at all (cement apart, read by find_apart_leaks), the bolus's halves above and below
    the steel that splits it; nothing without a tip or cement."""
    from monitor.vision.lobes import find_disc_lobes

    def lobes(scene):
        difference, cement, steel, tip = scene
        return find_disc_lobes(difference, cement, steel, [tip], 0.05, 0.3)

    (above,) = lobes(_lobe_scene())
    assert above.above and 12 < above.rise_mm < 18 and above.summit > 0.25
    assert above.mask[58, 120] and not above.mask[110, 120]
    (below,) = lobes(_lobe_scene(lobe_at=(120, 162)))
    assert not below.above and below.mask[162, 120]
    assert lobes(_lobe_scene(lobe_at=(172, 110), lobe_axes=(6, 15))) == []  # beside it
    assert lobes(_lobe_scene(lobe_at=(160, 62))) == []  # above the bolus's top, but as far aside
    assert lobes(_lobe_scene(neck=0.28)) == []  # the valley dips by 0.02, twice the noise
    (deep,) = lobes(_lobe_scene(lobe=0.6, neck=0.44, bolus=0.8))  # by 0.16, to 0.73 of the lobe's summit
    # by 0.08 (8 sds), to 0.87 of it: cement so dense that scatter flattens its relief (tuning
    # 5026's lateral disc leak dipped to 0.86); by 0.04, to 0.93 of it, one mass
    (flat,) = lobes(_lobe_scene(lobe=0.6, neck=0.52, bolus=0.8))
    assert lobes(_lobe_scene(lobe=0.6, neck=0.56, bolus=0.8)) == []
    # a valley has two sides: the bolus's own cement must rise over it too, not only the steel
    assert lobes(_lobe_scene(lobe=0.6, neck=0.44, bolus=0.4)) == []
    # a faint lobe: its valley must dip by 4 noise sds (a fifth of the threshold, 0.01) too
    (faint,) = lobes(_lobe_scene(lobe=0.15, neck=0.07))  # by 0.08, to 0.47 of its summit
    assert lobes(_lobe_scene(lobe=0.1, neck=0.07)) == []  # by 0.03, to 0.7 of it
    assert lobes(_lobe_scene(neck=0.0)) == []  # apart, not joined
    assert lobes(_lobe_scene(lobe=0.0, neck=0.0)) == []  # the bolus split by the shaft
    # denser away from the tip than at it (0.15 at the tip, 0.4 from 5 mm above): one mass
    difference, cement, steel, tip = _lobe_scene(lobe=0.0, neck=0.0, bolus=0.15)
    yy, xx = np.mgrid[:200, :240]
    dense = (((xx - 120) ** 2 + (yy - 80) ** 2) <= 20**2) & ~(((xx - 120) ** 2 + (yy - 110) ** 2) <= 25**2)
    difference = difference + 0.4 * dense
    assert find_disc_lobes(difference, difference > 0.05, steel, [tip], 0.05, 0.3) == []
    # two cannulas: a lobe over one bolus is judged from that bolus, not from between the two
    difference, cement, steel, tip = _lobe_scene()
    twin = np.roll(difference, 90, axis=1) * (np.mgrid[:200, :240][1] >= 165)
    pair = np.maximum(difference * (np.mgrid[:200, :240][1] < 165), twin)
    (over_one,) = find_disc_lobes(pair, pair > 0.05, steel, [tip, (210.0, 110.0)], 0.05, 0.3)
    assert over_one.above and over_one.mask[58, 120]
    difference, cement, steel, tip = _lobe_scene()
    assert find_disc_lobes(difference, cement, steel, [], 0.05, 0.3) == []
    assert find_disc_lobes(difference, np.zeros_like(cement), steel, [tip], 0.05, 0.3) == []


def test_a_disc_lobe_is_a_disc_leak_where_it_lies_in_the_image():
    """Each lobe is one disc leak marked with its side: its box and centroid in the image's own
    pixels (working grid at half resolution, the region 40 and 30 working pixels in), its volume
    the difference summed over its part above the level it stood apart at."""
    from monitor.vision.lobes import Lobe
    from monitor.vision.measure import lobe_leaks

    grid = PixelGrid(0.125, scale=2)
    mask = np.zeros((100, 100), bool)
    mask[20:30, 10:50] = True  # 10 x 40 working pixels
    difference = np.full((100, 100), 0.2, np.float32)
    (leak,) = lobe_leaks([Lobe(False, mask, 0.1, 0.3, 9.0)], difference, grid, (40, 30), 0.2)
    assert leak.site == "disc" and leak.lobe == "below" and not leak.line and not leak.apart
    assert leak.box == (100, 100, 80, 20)
    assert leak.centroid == pytest.approx(grid.to_full(29.5, 24.5, (40, 30)), abs=0.01)
    assert leak.volume_ml == pytest.approx(400 * 0.2 * 0.25**2 / 200.0)


def test_a_lobe_reaches_past_an_outline_by_its_far_edge():
    """Against an armed lateral outline a disc lobe is judged by how far its far edge reaches past
    it (the top row of a lobe above the bolus, the bottom row of one below), as outline cement is
    by its deepest pixel: 10 working pixels past the superior endplate; 11 inside the inferior."""
    from monitor.vision.analysis import _reach_px
    from monitor.vision.lobes import Lobe

    class Outline:
        def outline(self):
            return np.array([[20, 40], [80, 40], [80, 160], [20, 160]], float)

    above = np.zeros((200, 100), bool)
    above[30:45, 45:55] = True  # from 10 past the top edge to 5 inside it
    assert _reach_px(Outline(), Lobe(True, above, 0.1, 0.3, 10.0)) == pytest.approx(10.0)
    below = np.zeros((200, 100), bool)
    below[140:150, 45:55] = True
    assert _reach_px(Outline(), Lobe(False, below, 0.1, 0.3, 10.0)) == pytest.approx(-11.0)


@pytest.mark.parametrize("hole_shape", ["bolus", "band"])
def test_a_hole_is_filled_from_around_it_smoothly_and_never_from_inside_it(hole_shape):
    """The bone under a bolus (an ellipse 70 x 50 pixels) or the cement under a cannula's shaft
    (a band 12 pixels wide) filled from around it: a ramp of log units with a gentle texture
    comes back within a few hundredths pixel by pixel, whatever the hole held. OpenCV's Telea
    fill of a float image speckles here, a mean error of about 1 log unit (see fill.py)."""
    import cv2

    from monitor.vision.fill import fill_from_around

    ys, xs = np.mgrid[0:200, 0:200]
    texture = cv2.GaussianBlur(
        np.random.default_rng(1).normal(0, 1, (200, 200)).astype(np.float32), (0, 0), 3
    )
    truth = ((xs + ys) / 100.0 + 0.5 * texture).astype(np.float32)
    hole = np.zeros((200, 200), np.uint8)
    if hole_shape == "bolus":
        cv2.ellipse(hole, (100, 100), (35, 25), 20, 0, 360, 1, -1)
    else:
        hole[94:106, 30:170] = 1
    hole = hole.astype(bool)
    for inside in (0.0, 50.0):  # a bolus or steel in the hole must not leak into the fill
        values = np.where(hole, inside, truth).astype(np.float32)
        filled = fill_from_around(values, hole, 5)
        assert np.array_equal(filled[~hole], truth[~hole])
        error = np.abs(filled - truth)[hole]
        assert error.mean() < 0.1 and abs(float((filled - truth)[hole].mean())) < 0.03, error.mean()
        # no speckle: neighbouring filled pixels differ as little as the truth's do
        step = np.abs(np.diff(filled, axis=1))[hole[:, 1:] & hole[:, :-1]]
        assert np.percentile(step, 99) < 0.05
    assert np.array_equal(fill_from_around(truth, np.zeros_like(hole), 5), truth)


def test_the_float_telea_fill_the_darkness_calibration_rests_on_still_speckles():
    """The cement under the cannula's shaft is filled every frame with OpenCV's Telea inpainting
    (monitor.vision.cement.integrated_volume_ml), which speckles on float images, and the
    darkness's calibration rests on that speckle (a smooth fill read the simple world's darkness
    0.57-0.77x the truth under 0.5 mL, Telea 0.93-1.25x). An OpenCV that fixes it moves every
    small bolus's volume: this fails then, to say the calibration must be redone with it."""
    import cv2

    ys, xs = np.mgrid[0:200, 0:200]
    ramp = ((xs + ys) / 100.0).astype(np.float32)
    hole = np.zeros((200, 200), np.uint8)
    cv2.circle(hole, (100, 100), 40, 1, -1)
    filled = cv2.inpaint(ramp, hole, 3, cv2.INPAINT_TELEA)
    error = float(np.abs(filled - ramp)[hole > 0].mean())
    assert error > 0.5, f"OpenCV {cv2.__version__}: Telea now fills floats {error:.3f} off: recalibrate"


def test_a_long_status_names_each_caveat_code_once_on_the_readout_panel():
    """Monitoring begun during an injection with cement already in: the view's results carry
    two cement-in-baseline caveats (grown over the first frames, and found there). The panel
    drawn on the image, too narrow for the status, names each code once."""
    from monitor.overlay import short_status

    result = {
        "status": "x" * 200,
        "caveats": [
            {"code": "cement-in-baseline"},
            {"code": "cement-in-baseline"},
            {"code": "image-clipped"},
        ],
    }
    assert short_status(result, width=60) == "cement-in-baseline; image-clipped"
    assert short_status({"status": "measured"}) == "measured"
