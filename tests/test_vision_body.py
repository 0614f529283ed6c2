"""The body over time, the front and leaks read against it, and what is drawn: the pure
functions of monitor/vision/body.py, measure.py (read_cement, DistanceMaps), cement.py
(growing_bolus) and drawing.py, on small synthetic arrays."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.vision.anatomy import ApBody, Bow, Cannula, LateralBody, Line
from monitor.vision.body import body_from_box, body_from_wall, body_roi, lies_inside, shift_line, shifted_body
from monitor.vision.cement import CementMap, growing_bolus
from monitor.vision.drawing import overlay_geometry
from monitor.vision.measure import DistanceMaps, read_cement
from monitor.vision.pixels import PixelGrid

PX = 0.5  # mm per working pixel


def _lateral(x_wall=60.0, x_front=20.0, top=20.0, bottom=80.0) -> LateralBody:
    """A box-shaped lateral body: posterior wall at x = x_wall (posterior towards larger x)."""
    return LateralBody(
        Line(0.0, x_wall, True, 0),
        Line(0.0, x_front, True, 0),
        Line(0.0, top, False, 0),
        Line(0.0, bottom, False, 0),
        1,
    )


def _cannula(tip=(40.0, 50.0), direction=(1.0, 0.0)) -> Cannula:
    return Cannula(tip, direction, 3.0, np.zeros((4, 4), bool), 1.0, 40.0, True)


def test_shifting_a_body_moves_every_wall_and_back():
    body = _lateral()
    moved = shifted_body(body, 3.0, -2.0)
    np.testing.assert_allclose(moved.polygon(), body.polygon() + [3.0, -2.0], atol=1e-5)
    np.testing.assert_allclose(shifted_body(moved, -3.0, 2.0).polygon(), body.polygon(), atol=1e-5)
    slanted = Line(0.2, 10.0, True, 0)  # x = 0.2 y + 10
    assert shift_line(slanted, 1.0, 5.0).at(5.0 + 5.0) == pytest.approx(slanted.at(5.0) + 1.0)


def test_the_measured_region_is_the_body_with_a_wider_margin_towards_the_canal():
    roi = body_roi(_lateral(), (0, 0, 200, 200), PX)
    # 10 mm = 20 px around the body; 15 mm = 30 px behind the posterior wall (larger x)
    assert roi == (0, 0, 90, 100)
    assert body_roi(_lateral(), (5, 10, 80, 95), PX) == (5, 10, 80, 95)  # within the ROI around the tip


def test_cement_counts_as_inside_only_when_nearly_all_of_it_is():
    body = _lateral()
    mask = np.zeros((100, 100), bool)
    mask[40:60, 30:50] = True
    assert lies_inside(mask, body, (0, 0), PX)
    mask[40:60, 62:70] = True  # 29 % of it behind the wall
    assert not lies_inside(mask, body, (0, 0), PX)


def test_the_operators_wall_replaces_the_wall_found_or_stands_in_for_a_body():
    found, done = body_from_wall(((62.0, 80.0), (61.0, 20.0)), _lateral(), _cannula(), PX)
    assert done == "posterior wall replaced by the operator's"
    assert found.posterior.at(20.0) == pytest.approx(61.0) and found.anterior == _lateral().anterior
    nominal, done = body_from_wall(((62.0, 20.0), (62.0, 80.0)), None, _cannula(tip=(40.0, 50.0)), PX)
    assert done.startswith("no body had been found")
    assert nominal.posterior_sign == 1  # the tip lies anterior (smaller x) of the wall
    assert nominal.anterior.at(50.0) == pytest.approx(62.0 - 30.0 / PX)  # a nominal 30 mm body
    # a tip deeper than 20 mm (a deep body, or the tip in its front third): the front 10 mm past
    # it, not across the bolus around it (CT cases read the bolus as a paravertebral leak)
    deep = 62.0 - 28.0 / PX
    nominal, _ = body_from_wall(((62.0, 20.0), (62.0, 80.0)), None, _cannula(tip=(deep, 50.0)), PX)
    assert nominal.anterior.at(50.0) == pytest.approx(deep - 10.0 / PX)
    with pytest.raises(ValueError, match="5 mm apart"):
        body_from_wall(((62.0, 20.0), (62.0, 25.0)), None, _cannula(), PX)
    with pytest.raises(ValueError, match="no cannula"):
        body_from_wall(((62.0, 20.0), (62.0, 80.0)), None, None, PX)


def test_the_operators_box_puts_the_posterior_side_where_the_cannula_comes_from():
    lateral = body_from_box("lateral", (10.0, 20.0), (50.0, 60.0), _cannula(direction=(1.0, 0.0)))
    assert lateral.posterior.b == 60.0 and lateral.anterior.b == 10.0 and lateral.posterior_sign == 1
    mirrored = body_from_box("lateral", (10.0, 20.0), (50.0, 60.0), _cannula(direction=(-1.0, 0.0)))
    assert mirrored.posterior.b == 10.0 and mirrored.posterior_sign == -1
    ap = body_from_box("ap", (10.0, 20.0), (50.0, 60.0), None)
    assert isinstance(ap, ApBody) and (ap.left.b, ap.right.b, ap.inferior.b) == (10.0, 60.0, 80.0)


def test_a_distance_map_moves_with_the_wall_without_being_recomputed():
    maps = DistanceMaps((10, 12))
    everything = (slice(0, 10), slice(0, 12))
    first = maps.signed(Line(0.0, 6.0, True, 0), everything)
    moved = maps.signed(Line(0.0, 8.0, True, 0), everything)
    np.testing.assert_allclose(moved, first + 2.0)
    assert first[0, 6] == 0.0 and first[0, 2] == 4.0  # positive on the side of smaller x


def _biconcave(sag_px: float = 6.0) -> LateralBody:
    """The box of :func:`_lateral` (x 20-60, y 20-80) with endplates concave towards the discs:
    each a line through its middle (x = 40), ``sag_px`` nearer the body's middle than its ends,
    bowed out to them."""
    c = sag_px / 20.0**2
    top, bottom = 20.0 + sag_px, 80.0 - sag_px
    return LateralBody(
        Line(0.0, 60.0, True, 0),
        Line(0.0, 20.0, True, 0),
        Line(0.0, top, False, 0, bow=Bow(0.0, top, -c, 40.0, -1)),
        Line(0.0, bottom, False, 0, bow=Bow(0.0, bottom, c, 40.0, 1)),
        1,
    )


def test_a_bowed_endplate_meets_the_walls_at_its_ends_and_moves_with_the_body():
    """A biconcave body's outline: corners where the curves meet the walls, points along the
    curves between them; distances to a bowed endplate; a shift moves the bow with it."""
    body = _biconcave()
    np.testing.assert_allclose(body.polygon(), [[60, 20], [20, 20], [20, 80], [60, 80]], atol=1e-4)
    outline = body.outline()
    assert len(outline) == 32 and outline[:, 1].max() == pytest.approx(80.0, abs=1e-4)
    middle = outline[np.argmin(np.abs(outline[:16, 0] - 40.0))]
    assert middle[1] == pytest.approx(26.0, abs=0.1)  # the superior endplate's middle, 6 px down
    assert len(_lateral().outline()) == 4  # straight endplates: the corners alone
    # a corner pixel inside the curve's end, outside the line through its middle
    assert float(body.superior.signed_distance(np.float32(22.0), np.float32(23.0))) < 0  # below: inside
    assert float(body.superior.straight().signed_distance(np.float32(22.0), np.float32(23.0))) > 0
    # the bow only grows the body: where the curve would cut into it, the line holds
    inward = Line(0.0, 26.0, False, 0, bow=Bow(0.0, 26.0, 6.0 / 400.0, 40.0, -1))  # convex: dips at the ends
    assert float(inward.at(22.0)) == pytest.approx(26.0)
    # held to the span of the edge it was fitted on: past it, as far out as at its end
    held = Line(0.0, 26.0, False, 0, bow=Bow(0.0, 26.0, -6.0 / 400.0, 40.0, -1, lo=25.0, hi=55.0))
    end = 26.0 - 6.0 * 15.0**2 / 400.0
    assert float(held.at(20.0)) == pytest.approx(end) and float(held.at(25.0)) == pytest.approx(end)
    assert float(held.slope(20.0)) == 0.0 and float(held.slope(30.0)) == pytest.approx(2 * 6.0 / 400 * 10)
    moved = shifted_body(body, 3.0, -2.0)
    np.testing.assert_allclose(moved.outline(), outline + [3.0, -2.0], atol=1e-4)
    maps = DistanceMaps((100, 100))
    window = (slice(10, 30), slice(15, 65))
    ys, xs = np.mgrid[window].astype(np.float32)
    np.testing.assert_allclose(maps.signed(body.inferior, window), body.inferior.signed_distance(xs, ys))


def test_cement_in_a_biconcave_bodys_corner_is_no_disc_leak_but_cement_past_its_middle_is():
    """Cement filling the corner under a sagging endplate is inside the body (beyond a line
    through the endplate's middle, it read as a disc leak); cement through the middle of the
    endplate, into the disc the sag lets in, is a disc leak, still inside the straight box."""
    corner = np.zeros((100, 100), bool)
    corner[71:78, 22:30] = True  # 2-9 px above the bottom corner, below the inferior endplate's middle
    corner[48:52, 30:45] = True  # and a bolus
    args = (DistanceMaps(corner.shape), None, PixelGrid(PX), (0, 0), 0.2, 0.004, 0.6, 1.5)
    assert read_cement(_cement(corner), _biconcave(), *args).leaks == []
    straight = _lateral(bottom=74.0)  # a line through the inferior endplate's middle
    assert [lk.site for lk in read_cement(_cement(corner), straight, *args).leaks] == ["disc"]
    through = np.zeros((100, 100), bool)
    through[48:52, 30:45] = True
    through[66:79, 37:43] = True  # through the endplate's middle (at y 74), 4.5 px beyond it
    assert [lk.site for lk in read_cement(_cement(through), _biconcave(), *args).leaks] == ["disc"]


def _cement(mask: np.ndarray, value: float = 1.0) -> CementMap:
    return CementMap(
        np.where(mask, value, 0.0).astype(np.float32), mask, np.full(mask.shape, 0.1, np.float32), 0.02
    )


def test_the_front_is_the_cement_nearest_the_wall_and_cement_behind_it_is_a_posterior_leak():
    mask = np.zeros((100, 100), bool)
    mask[45:55, 40:52] = True  # a bolus, its front 8 px (4 mm) anterior of the wall at x = 60
    inside = read_cement(
        _cement(mask), _lateral(), DistanceMaps(mask.shape), None, PixelGrid(PX), (0, 0), 0.2, 0.004, 0.6, 1.5
    )
    assert inside.front_px == pytest.approx(8.5, abs=0.6) and inside.leaks == []
    assert inside.front_at[0] == pytest.approx(51.0, abs=0.6)
    mask[48:52, 52:70] = True  # on through the wall, 10 px (5 mm) beyond it
    leaked = read_cement(
        _cement(mask), _lateral(), DistanceMaps(mask.shape), None, PixelGrid(PX), (0, 0), 0.2, 0.004, 0.6, 1.5
    )
    assert leaked.front_px < 0
    assert [lk.site for lk in leaked.leaks] == ["posterior"]
    empty = read_cement(
        _cement(np.zeros_like(mask)),
        _lateral(),
        DistanceMaps(mask.shape),
        None,
        PixelGrid(PX),
        (0, 0),
        0.2,
        0.004,
        0.6,
        1.5,
    )
    assert empty.front_px is None and empty.leaks == []


def test_the_next_frames_cement_is_looked_for_around_the_bolus_at_the_tip_only():
    mask = np.zeros((60, 60), bool)
    mask[20:26, 20:26] = True  # at the tip
    mask[50:54, 50:54] = True  # elsewhere: left in the registration
    grown = growing_bolus(mask, [(22.0, 22.0)], PX)
    assert grown[20:26, 20:26].all() and not grown[50:54, 50:54].any()
    assert grown[23, 31] and not grown[23, 33]  # 3 mm = 6 px beyond its edge at x = 25
    assert growing_bolus(mask, [], PX)[52, 52]  # no tip known: all of it


def test_the_overlay_is_in_full_resolution_pixels():
    grid = PixelGrid(0.25, 2)  # working pixel i is full pixels 2i, 2i + 1
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    out = overlay_geometry(
        {"front": [1.0, 2.0]},
        grid,
        (5, 6, 45, 46),
        (1.0, 0.5),
        [_cannula(tip=(20.0, 20.0))],
        _lateral(30.0, 5.0, 5.0, 35.0),
        _cement(mask),
        [],
        5.0,
    )
    assert out["front"] == [1.0, 2.0] and out["roi"] == [10, 12, 90, 92] and out["shift_px"] == [2.0, 1.0]
    assert out["cannula_tips"] == [[2 * (20 - 5 + 1.0 + 5) + 0.5, 2 * (20 - 6 + 0.5 + 6) + 0.5]]
    wall_x = out["wall"][0][0]
    assert wall_x == 2 * (30 + 5) + 0.5
    assert out["safety_line"][0][0] == pytest.approx(wall_x - 2 * 5.0 / 0.5)  # 5 mm anterior, in full pixels
    assert len(out["cement"]) == 1 and out["leaks"] == []
