"""The baseline a plane learns from its first frames, and each frame compared with it:
small synthetic arrays for the pure parts, the bundled recordings for learning."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.io.dicom import open_recording
from monitor.recordings import bundled_recordings
from monitor.vision.anatomy import LateralBody
from monitor.vision.baseline import (
    LAYER_ATTENUATION,
    LAYER_EXCLUDED,
    BaselineState,
    compare_with_baseline,
    frame_blur,
    matched_baseline,
    shifted_layers,
    with_prior,
)
from monitor.vision.caveats import CaveatCode
from monitor.vision.cement import CementMap, Registration
from monitor.vision.pixels import PixelGrid
from monitor.vision.plane_baseline import learn_plane_baseline, roi_around_tip
from monitor.vision.scatter import ScatterPhysics
from tests.conftest import learn_baseline


def _textured(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    """A smooth random texture (log units), with edges a registration can hold on to."""
    import cv2

    noise = np.random.default_rng(seed).normal(0, 1, (h, w)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 2.0) * 4


def _state(attenuation: np.ndarray, exclude: np.ndarray | None = None) -> BaselineState:
    h, w = attenuation.shape
    exclude = np.zeros((h, w), bool) if exclude is None else exclude
    layers = np.zeros((h, w, 4), np.float32)
    layers[..., LAYER_ATTENUATION] = attenuation
    layers[..., LAYER_EXCLUDED] = exclude
    return BaselineState(attenuation, layers, exclude, None, None)


def test_shifted_layers_leave_the_border_the_shift_uncovers_out():
    layers = np.zeros((20, 30, 4), np.float32)
    layers[5:8, 10:12, LAYER_EXCLUDED] = 1.0
    shifted, uncovered, exclude = shifted_layers(layers, 3.0, 0.0)
    assert uncovered[:, :5].all() and uncovered[:, -5:].all()  # ceil(3) + 2 each side
    assert uncovered[:2].all() and not uncovered[10, 10]
    assert exclude[5:8, 13:15].all() and not exclude[5:8, 10:12].any()  # the steel moved 3 right
    assert np.array_equal(exclude, uncovered | (shifted[..., LAYER_EXCLUDED] > 0.25))


def test_a_frame_is_registered_to_the_baseline_and_its_cement_stands_out():
    """A frame moved 1.5 pixels by breathing, with a blob of cement and a uniform offset
    (exposure): the shift is found, the background's median is 0, the blob positive."""
    from monitor.vision.cement import shift_image

    base = _textured()
    frame = shift_image(base, 1.5, -1.0) + 0.3
    frame[30:36, 40:46] += 0.8
    c = compare_with_baseline(frame, _state(base), Registration(base), (0.0, 0.0), None)
    assert c.shift == pytest.approx((1.5, -1.0), abs=0.1)
    inside = ~c.exclude
    assert abs(float(np.median(c.difference[inside]))) < 0.02
    assert c.difference[31:35, 41:45].min() > 0.6
    assert c.intensity_before is None


@pytest.mark.parametrize(
    ("covariance", "sharpen"),
    [([[4.0, 0.0], [0.0, 4.0]], False), ([[6.0, 2.0], [2.0, 1.5]], False), ([[2.5, 0.0], [0.0, 2.5]], True)],
)
def test_a_frame_blurred_or_sharpened_against_the_baseline_is_matched_and_its_cement_kept(
    covariance, sharpen
):
    """A frame blurred (isotropic, or along a slant as motion blurs) or sharpened by an unsharp
    mask against the baseline, with a blob of cement and noise: the kernel is read to within a
    quarter of its second moment, and with the baseline filtered alike the anatomy's edges no
    longer stand out as cement (under a tenth of what they read unmatched, as high as the blob);
    the blob stays.
    The unfiltered frame's own noise finds no blur."""
    import cv2

    from monitor.vision.baseline import _gaussian

    rng = np.random.default_rng(4)
    base = _textured(96, 112, seed=3)
    blob = np.zeros_like(base)
    cv2.circle(blob, (70, 40), 6, 0.6, -1)
    truth = np.array(covariance)
    scene = base + blob
    frame = 2.0 * scene - _gaussian(scene, truth) if sharpen else _gaussian(scene, truth)
    frame = frame + rng.normal(0, 0.01, base.shape).astype(np.float32)
    background = np.ones(base.shape, bool)
    background[28:53, 58:83] = False  # the blob, as the last frame's cement is left out
    state = _state(base)
    edges = (np.abs(base - cv2.GaussianBlur(base, (0, 0), 2.0)) > 0.15) & background
    unmatched = compare_with_baseline(frame, state, Registration(base), (0.0, 0.0), ~background)
    assert unmatched.blur is not None and unmatched.blur.sharpened == sharpen
    wanted = -truth if sharpen else truth
    assert np.abs(unmatched.blur.covariance - wanted).max() <= 0.25 * np.abs(wanted).max(), unmatched.blur
    d = unmatched.difference
    left = np.percentile(np.abs(d[edges]), 99)  # (seen 0.032-0.049)
    alone = base - matched_baseline(base, unmatched.blur.covariance)  # what the edges read as, unmatched
    assert left < 0.06 and left < 0.15 * np.percentile(np.abs(alone[edges]), 99)  # (0.49-0.62)
    assert d[40, 70] > 0.4  # the blob kept (0.6)
    plain = base + blob + rng.normal(0, 0.01, base.shape).astype(np.float32)
    assert frame_blur(base, plain - base, background) is None


def test_cement_already_in_the_baseline_is_added_where_the_frame_moved_it():
    mask = np.zeros((20, 20), bool)
    mask[5:9, 5:9] = True
    values = np.where(mask, 1.0, 0.0).astype(np.float32)
    cement = CementMap(np.zeros((20, 20), np.float32), np.zeros((20, 20), bool), np.full((20, 20), 0.1), 0.02)
    assert with_prior(cement, None, (2.0, 0.0)) is cement
    moved = with_prior(cement, (mask, values), (2.0, 0.0))
    assert moved.mask[5:9, 7:11].all() and not moved.mask[5:9, 5:7].any()
    assert moved.difference[6, 8] == pytest.approx(1.0)


def test_the_roi_is_around_the_first_tip_and_clipped_to_the_frame():
    class Tip:
        tip = (10.0, 50.0)

    assert roi_around_tip((100, 120), [], 0.25, 42.0) == (0, 0, 120, 100)
    assert roi_around_tip((100, 120), [Tip()], 0.5, 20.0) == (0, 10, 50, 90)
    assert roi_around_tip((100, 120), [Tip()], None, 20.0) == (0, 14, 46, 86)  # 30 % of 120


def test_a_plane_learns_its_cannula_body_and_baseline_from_the_first_frames():
    r = next(r for r in bundled_recordings() if r.name == "posterior-leak")
    with open_recording(r.lateral) as rec:
        info = rec.info
        frames = [rec.frame(i) for i in range(3)]
    learnt = learn_baseline(frames, "lateral", info)
    x0, y0, x1, y1 = learnt.roi
    assert learnt.cannulas and x0 <= learnt.cannulas[0].tip[0] <= x1 and y0 <= learnt.cannulas[0].tip[1] <= y1
    assert isinstance(learnt.body, LateralBody) and learnt.anatomy_error is None
    assert learnt.state.attenuation.shape == learnt.state.exclude.shape == (y1 - y0, x1 - x0)
    assert learnt.state.scatter_layers.shape == (y1 - y0, x1 - x0, 2)  # a scale and scatter: modelled
    assert learnt.state.prior is None and learnt.caveats == ()
    assert learnt.state.exclude.any()  # the steel is never compared

    blank_scale = learn_baseline(frames, "lateral", info, PixelGrid.for_spacing(None))
    assert blank_scale.body is None and blank_scale.anatomy_error.code == CaveatCode.UNCALIBRATED
    assert blank_scale.state.scatter_layers is None


def test_the_anatomy_priors_decide_which_outlines_are_refused():
    """An outline outside the priors is refused with what was wrong, and a plane configured
    with them (AnalysisConfig.anatomy) says so on every result and checks no rule (with no
    outline only cement apart from a bolus could be read, and there is no cement yet)."""
    from monitor.vision.analysis import AnalysisConfig, PlaneAnalyzer
    from monitor.vision.anatomy import AnatomyPriors

    r = next(r for r in bundled_recordings() if r.name == "posterior-leak")
    with open_recording(r.lateral) as rec:
        info = rec.info
        frames = [rec.frame(i) for i in range(5)]
    pixel_mm = info.spacing_at_vertebra_mm()[0]
    deep = AnatomyPriors(depth_mm=(60.0, 80.0))  # no lumbar body is this deep
    learnt = learn_plane_baseline(
        frames[:3], "lateral", info.photometric, info.intensity_relationship, info.bits_stored,
        PixelGrid.for_spacing(pixel_mm), ScatterPhysics(0.15, 20.0), 0.25, 42.0, deep,
    )  # fmt: skip
    assert learnt.body is None and learnt.anatomy_error.code == CaveatCode.NO_ANATOMY
    assert "implausible vertebral body (depth" in learnt.anatomy_error.detail
    plane = PlaneAnalyzer(
        "lateral", info.photometric, info.intensity_relationship, info.bits_stored, pixel_mm,
        AnalysisConfig(anatomy=deep),
    )  # fmt: skip
    last = [plane.process(f, i) for i, f in enumerate(frames)][-1]
    assert CaveatCode.NO_ANATOMY in {c.code for c in last.caveats}
    assert last.checked == () and last.distance_mm is None


def _tubes(shape, pixel_mm: float, tubes) -> tuple[np.ndarray, np.ndarray]:
    """Steel path (mm) through hollow tubes (11 G: 1.5 mm outer, 1.05 mm inner radius), each
    (tip (x, y) pixels, unit direction out of the field): (h, w) float32, and their lumens
    (h, w) bool."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    path, lumen = np.zeros(shape, np.float32), np.zeros(shape, bool)
    for (tx, ty), (ux, uy) in tubes:
        along = (xs - tx) * ux + (ys - ty) * uy
        d = np.abs(-(xs - tx) * uy + (ys - ty) * ux) * pixel_mm
        wall = 2 * np.sqrt(np.clip(1.5**2 - d**2, 0, None)) - 2 * np.sqrt(np.clip(1.05**2 - d**2, 0, None))
        path += np.where(along >= 0, wall, 0).astype(np.float32)
        lumen |= (along >= 0) & (d < 1.05)
    return path, lumen


def test_the_sleeve_beside_an_axis_found_between_two_shafts_holds_no_steel():
    """Two cannulas a few millimetres apart in the lateral view are found as one, its axis
    between them (a tuning case: shafts 4.3 mm apart at their tips, crossing 27 mm behind).
    The sleeve beside the steel, where cement running back along the needle is read, must not
    hold either shaft: their lumens fill with cement, which was read there as a front 9 mm
    from the tips at the first frame of cement. With one shaft found on its axis, the sleeve
    beside it stays, where the posterior wall's cortex crosses it too (as dense as the steel,
    but short along the band): that is where a track leak leaves the body."""
    import cv2

    from monitor.vision.anatomy import BAND_WIDTHS, STEEL_WIDTH_FACTOR, Cannula, shaft_band
    from monitor.vision.baseline import LAYER_SLEEVE
    from monitor.vision.plane_baseline import baseline_layers

    pixel_mm, shape = 0.25, (240, 400)
    rng = np.random.default_rng(3)
    bone = 1.0 + cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 3.0) * 0.05

    def direction(tip, towards):
        v = np.subtract(towards, tip).astype(float)
        return tuple(v / np.linalg.norm(v))

    cross = (100 + 27 / pixel_mm, 120.0)  # the two shafts cross here, 27 mm behind the tips
    tips = [(100.0, 120 - 2.15 / pixel_mm), (100.0, 120 + 2.15 / pixel_mm)]
    pair = [(tip, direction(tip, cross)) for tip in tips]
    steel, lumen = _tubes(shape, pixel_mm, pair)
    att = (bone + 0.15 * steel).astype(np.float32)
    roi = (40, 40, 360, 200)
    x0, y0, x1, y1 = roi

    def sleeve_of(cannula: Cannula) -> np.ndarray:
        _, layers = baseline_layers(att[y0:y1, x0:x1], att, [cannula], roi, "lateral", pixel_mm)
        return layers[..., LAYER_SLEEVE] > 0.5

    def found(width_mm: float) -> Cannula:  # along +x from (100, 120), leaving the field
        width = width_mm / pixel_mm
        band = shaft_band(shape, (100.0, 120.0), (1.0, 0.0), width, BAND_WIDTHS)
        return Cannula((100.0, 120.0), (1.0, 0.0), width, band, 0.3, 300.0, True)

    # One cannula found between the two: its band (1.8 widths of a 3.7 mm ridge) takes in both.
    between = found(3.7)
    sleeve, lumens = sleeve_of(between), lumen[y0:y1, x0:x1]
    assert sleeve.any()
    # the axis alone left 672 lumen pixels in the sleeve
    assert (sleeve & lumens).sum() <= 0.01 * lumens.sum(), f"{int((sleeve & lumens).sum())} lumen pixels"

    # One shaft, found on its axis, and a wall's cortex 1 mm thick across it 15 mm behind the
    # tip: the sleeve beside its steel is still read, the cortex's crossing included.
    single = [((100.0, 120.0), (1.0, 0.0))]
    steel, lumen = _tubes(shape, pixel_mm, single)
    cortex = np.zeros(shape, np.float32)
    cortex[:, 160:164] = 0.3  # log units: as dense as the steel's walls
    att = (bone + 0.15 * steel + cortex).astype(np.float32)
    on_axis = found(3.0)
    sleeve = sleeve_of(on_axis)
    core = shaft_band(shape, (100.0, 120.0), (1.0, 0.0), on_axis.width_px, STEEL_WIDTH_FACTOR)
    strips = (on_axis.mask & ~core)[y0:y1, x0:x1]  # the sleeve the axis alone leaves
    assert not (sleeve & lumen[y0:y1, x0:x1]).any()
    assert (sleeve & strips).sum() >= 0.9 * strips.sum(), "the strips beside the steel are no longer read"
    crossing = strips & (cortex[y0:y1, x0:x1] > 0)
    assert (sleeve & crossing).sum() == crossing.sum(), "the wall's crossing left the sleeve"


@pytest.mark.parametrize("name", ["posterior-leak", "venous-leak"])
def test_cement_in_a_baseline_is_found_at_any_guessed_log_scale_and_clean_bone_at_none(name):
    """The AP view of a bundled recording, its baseline learnt from its first frames (clean)
    and from frames 24-26 (about 1 mL in). 8-bit video's log scale may be guessed, and a guess
    too small multiplies every log unit: clean bone read 4 and 8 times too dense stood 1.2-2.4
    log units over its ring (a bolus, before the check) but no denser against the ring's own
    spread, which scales alike. Where the scale is guessed, the cement is found at every scale,
    about as large, and clean bone at none; where it is known, the log units decide alone."""
    from monitor.vision.baseline import find_cement_in_baseline

    r = next(r for r in bundled_recordings() if r.name == name)
    with open_recording(r.ap) as rec:
        info = rec.info
        grid = PixelGrid.for_spacing(info.spacing_at_vertebra_mm()[0])
        learnt = {
            start: learn_baseline([rec.frame(i) for i in range(start, start + 3)], "ap", info)
            for start in (0, 24)
        }

    def found(start: int, scale: float, units_known: bool = False):
        state = learnt[start].state
        args = (learnt[start].cannulas, learnt[start].roi[:2], grid.pixel_mm, 0.18, units_known)
        return find_cement_in_baseline(state.attenuation * scale, state.exclude, *args)

    assert learnt[0].state.prior is None and learnt[24].state.prior is not None
    assert all(found(0, scale) is None for scale in (1.0, 4.0, 8.0))
    volumes = [found(24, scale).volume_ml / scale for scale in (1.0, 4.0, 8.0)]
    assert 0.5 < volumes[0] < 1.5 and max(volumes) / min(volumes) < 1.25, volumes
    assert found(0, 1.0, units_known=True) is None and found(24, 1.0, units_known=True) is not None


def test_cement_growing_over_the_baseline_frames_is_measured_near_the_tip():
    """An injection under way when monitoring began: the baseline's last frames are denser than
    its first where the cement grows. Noise alone, a whole-frame change (brightness control),
    growth far from the tip, as much there as at the tip, a thin line, or no tip is not it; a 3
    mm disc growing at the tip is (its area, in mm2)."""
    from monitor.vision.baseline import GROWN_MIN_MM2, cement_grown_mm2

    pixel_mm, shape, tip = 0.25, (200, 200), (100.0, 100.0)
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.01, shape).astype(np.float32)
    exclude = np.zeros(shape, bool)
    ys, xs = np.mgrid[0:200, 0:200]

    def disc(cx, cy, radius_mm):
        return (np.hypot(xs - cx, ys - cy) * pixel_mm < radius_mm).astype(np.float32)

    assert cement_grown_mm2(noise, exclude, [tip], pixel_mm) < GROWN_MIN_MM2
    assert cement_grown_mm2(noise + 0.05, exclude, [tip], pixel_mm) < GROWN_MIN_MM2
    at_tip = cement_grown_mm2(noise + 0.05 * disc(104, 100, 3.0), exclude, [tip], pixel_mm)
    assert at_tip == pytest.approx(np.pi * 3.0**2, rel=0.35)
    far = noise + 0.05 * disc(100, 100 + 24 / pixel_mm, 3.0)  # 24 mm from the tip
    assert cement_grown_mm2(far, exclude, [tip], pixel_mm) < GROWN_MIN_MM2
    # as much grew far from the tip as at it (a gain or kVp step, a turn, a filter settling
    # grow edges everywhere): not cement; nor anything without a tip to grow from
    both = noise + 0.05 * disc(104, 100, 3.0) + 0.05 * disc(100, 100 + 24 / pixel_mm, 3.0)
    assert cement_grown_mm2(both, exclude, [tip], pixel_mm) == 0.0
    assert cement_grown_mm2(noise + 0.05 * disc(104, 100, 3.0), exclude, [], pixel_mm) == 0.0
    # a thin line (an edge breathing left) is not a bolus
    line = noise + 0.05 * (np.abs(xs - 106) < 1).astype(np.float32) * (np.abs(ys - 100) < 40)
    assert cement_grown_mm2(line, exclude, [tip], pixel_mm) < GROWN_MIN_MM2


@pytest.mark.parametrize(("top", "dy"), [(110, -6), (130, 6), (130, 4)])
def test_reference_pixels_a_shift_takes_off_the_frame_do_not_pull_the_registration(top, dy):
    """Breathing moves a bundled recording's lateral view ``dy`` pixels (and 2 across) within
    a 130 x 160 window, the middle (cement and steel, a disc of 50 pixels) left out. The
    reference's edges that leave the window have nothing to match: the replicated border
    they would read is no image. Reading it pulled these shifts 0.6-2.3 pixels off, and a
    fraction of a pixel on an endplate reads as a line of cement."""
    r = next(r for r in bundled_recordings() if r.name == "posterior-leak")
    with open_recording(r.lateral) as rec:
        pixels = rec.frame(0).astype(np.float32)
    attenuation = -np.log(np.maximum(pixels, 1.0) / pixels.max())
    left = attenuation.shape[1] // 3
    reference = attenuation[top : top + 130, left : left + 160].copy()
    frame = attenuation[top - dy : top - dy + 130, left + 2 : left + 162]
    rows, cols = np.mgrid[:130, :160]
    ignore = np.hypot(rows - 65, cols - 80) < 50
    dx_found, dy_found = Registration(reference).shift(frame, ignore, (-1.5, 0.8 * dy))
    assert dx_found == pytest.approx(-2.0, abs=0.15) and dy_found == pytest.approx(dy, abs=0.15)
