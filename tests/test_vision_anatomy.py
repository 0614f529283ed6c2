"""The anatomy found on rendered fluoroscopy (wedge, thoracic, bipedicular, mirrored,
8-bit round-field cases): cannula tips, the posterior wall, the endplates, and the LOG scale
of those recordings. One file, so that the cases are rendered once per test worker."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.io.dicom import open_recording
from monitor.vision.intensity import measure_log_scale
from tests.test_vision import analyse


@pytest.fixture(scope="module")
def anatomy_cases(tmp_path_factory):
    """Short renders at the sizes and levels the anatomy must hold at: a wedge
    fracture (its sloped endplate is a dense straight line too), a thoracic
    level, a bipedicular approach, a mirrored lateral."""
    from monitor.sim.simulate import SimConfig, simulate

    root = tmp_path_factory.mktemp("anatomy")
    configs = {
        "wedge-L1": SimConfig(seed=71, level="L1", fracture="wedge", size=512, frames=6, breathing_mm=0.0),
        "thoracic-T8": SimConfig(
            seed=72, level="T8", fracture="biconcave", size=512, frames=6, breathing_mm=0.0, mirror=True
        ),
        "bipedicular-L3": SimConfig(
            seed=73, level="L3", side="bipedicular", size=512, frames=6, breathing_mm=0.0, intensity="LOG"
        ),
        "log8-round": SimConfig(
            seed=74,
            level="L2",
            size=512,
            frames=6,
            bits=8,
            intensity="LOG",
            photometric="MONOCHROME1",
            field="round",
            breathing_mm=3.0,
        ),
    }
    return {name: (root / name, simulate(cfg, root / name)) for name, cfg in configs.items()}


@pytest.mark.parametrize("name", ["bipedicular-L3", "log8-round"])
def test_log_scale_of_a_recording_is_measured_to_ten_percent(anatomy_cases, name):
    """On rendered fluoroscopy: bone and soft tissue, breathing between frames,
    a round field's dark surround and, at 8 bits, noise near one level."""
    folder, truth = anatomy_cases[name]
    for plane in ("lateral", "ap"):
        with open_recording(folder / f"{plane}.dcm") as rec:
            info, frames = rec.info, [rec.frame(i) for i in range(3)]
        measured = measure_log_scale(frames, info.photometric, info.bits_stored)
        assert measured == pytest.approx(truth["detector"][plane]["per_unit_log"], rel=0.10), plane


@pytest.fixture(scope="module")
def walls_found(anatomy_cases):
    """Each anatomy case through the monitor's analysis once: name -> (mm per pixel, the last
    lateral frame, the posterior wall's ends found on it in image pixels)."""
    found = {}
    for name, (folder, _) in anatomy_cases.items():
        with open_recording(folder / "lateral.dcm") as r:
            pixel_mm = r.info.spacing_at_vertebra_mm()[1]
        got = analyse(folder / "lateral.dcm", folder / "ap.dcm", overlay=True)
        last = max(f for (plane, f) in got["overlay"] if plane == "lateral")
        found[name] = (pixel_mm, last, got["overlay"][("lateral", last)]["wall"])
    return found


@pytest.mark.parametrize("name", ["wedge-L1", "thoracic-T8", "bipedicular-L3"])
def test_cannula_tips_are_found_where_the_steel_ends(anatomy_cases, name):
    from monitor.vision.anatomy import find_cannulas
    from monitor.vision.intensity import model_for

    folder, truth = anatomy_cases[name]
    for plane in ("lateral", "ap"):
        with open_recording(folder / f"{plane}.dcm") as rec:
            info, pixels = rec.info, rec.frame(0)
        model = model_for(info.photometric, info.intensity_relationship, info.bits_stored, [pixels])
        pixel_mm = info.spacing_at_vertebra_mm()[1]
        found = find_cannulas(model.attenuation(pixels), pixel_mm)
        true = [c["tip_px"][plane] for c in truth["cannulas"]]
        # Bipedicular shafts overlap in the lateral view: one may hide the other there.
        expected = {len(true)} if plane == "ap" else {1, len(true)}
        assert len(found) in expected, f"{plane}: {len(found)} cannulas found, {len(true)} placed"
        for c in found:
            error_mm = min(np.hypot(c.tip[0] - x, c.tip[1] - y) for x, y in true) * pixel_mm
            assert error_mm < 1.5, f"{plane}: tip {error_mm:.1f} mm from the truth"


def test_posterior_wall_is_found_on_the_outer_surface_of_its_cortex(anatomy_cases, walls_found):
    """The wall is where the cortex's image falls to half its crest, like the cement's
    front: midway up the wall, within 0.45 mm of the truth's outer surface on each
    case and 0.33 mm on average (the steepest fall, used before, lies 0.32-0.44 mm
    inside it on these cases, 0.36 on average). The shaft crosses the wall in the lateral
    view and its band is left out of the wall's edge points: following the steel on its
    local level moved the wedge case's shaft by 0.7 degrees (its tip 0.32 -> 0.04 mm from the
    truth) and its wall 0.36 -> 0.41 mm, the other three 0.35/0.19/0.31 -> 0.18/0.15/0.31."""
    offsets = {}
    for name, (_, truth) in anatomy_cases.items():
        pixel_mm, last, ((x1, y1), (x2, y2)) = walls_found[name]
        wall = np.asarray(truth["frames"][last]["wall_px"])[3:-3]  # clear of the endplates' corners
        line_x = x1 + (wall[:, 1] - y1) * (x2 - x1) / (y2 - y1)
        offsets[name] = abs(float(np.mean(line_x - wall[:, 0]))) * pixel_mm
    assert max(offsets.values()) < 0.45 and np.mean(list(offsets.values())) < 0.33, offsets


def test_the_body_found_stops_at_its_own_endplates_not_the_next_bodys(anatomy_cases, walls_found):
    """Going down from the tip, the next body's endplate is a dense line whose far
    flank falls as steeply as the treated body's own endplate (blurred when the
    fracture is biconcave): only a fall into a lower level, the disc, counts. The
    posterior wall's ends (the body's corners) lie within 4 mm of the truth's on
    every anatomy render; the thoracic one took in the disc below, 9.8 mm off."""
    errors = {}
    for name, (_, truth) in anatomy_cases.items():
        pixel_mm, last, wall = walls_found[name]
        rows = sorted(y for _, y in wall)
        true_rows = np.asarray(truth["frames"][last]["wall_px"])[:, 1]
        errors[name] = max(abs(rows[0] - true_rows.min()), abs(rows[1] - true_rows.max())) * pixel_mm
    assert max(errors.values()) < 4.0, errors


def test_a_biconcave_bodys_endplates_are_found_bowed_out_to_its_corners(anatomy_cases, walls_found):
    """A biconcave body's endplates sag towards its middle. Fitted as lines, the thoracic
    render's (T8) lay inside its posterior corners: the wall's ends 3.2 and 2.9 mm inside the
    truth's, and cement filling a corner read as a disc leak beyond them. Refitted across the body
    as curves concave towards the discs, where those fit more of their edge than a line does,
    and held to the span of the edge they fit (drawn on to the walls, such a curve put the
    corners 1-2 mm out in the disc), the wall's ends are within 0.5 mm of the truth's; the
    wedge's flat endplates stay lines."""
    from monitor.vision.anatomy import find_lateral_body

    att, pixel_mm, shaft, _ = _lateral_steel(anatomy_cases, "thoracic-T8")
    body = find_lateral_body(att, shaft, pixel_mm)
    top, bottom = body.superior.bow, body.inferior.bow
    assert top is not None and bottom is not None and top.c < 0 < bottom.c  # ends out above, below
    _, truth = anatomy_cases["thoracic-T8"]
    pixel_mm, last, wall = walls_found["thoracic-T8"]
    rows = sorted(y for _, y in wall)
    true_rows = np.asarray(truth["frames"][last]["wall_px"])[:, 1]
    ends_mm = [abs(rows[0] - true_rows.min()) * pixel_mm, abs(rows[1] - true_rows.max()) * pixel_mm]
    assert max(ends_mm) < 0.5, ends_mm
    att, pixel_mm, shaft, _ = _lateral_steel(anatomy_cases, "wedge-L1")
    flat = find_lateral_body(att, shaft, pixel_mm)
    assert flat.superior.bow is None and flat.inferior.bow is None


def _lateral_steel(anatomy_cases, name: str, plane: str = "lateral"):
    """The first frame of a rendered case's ``plane`` as attenuation, its mm per pixel, the
    cannula found on it and the true tip (x, y) in image pixels."""
    from monitor.vision.anatomy import find_cannulas
    from monitor.vision.intensity import model_for

    folder, truth = anatomy_cases[name]
    with open_recording(folder / f"{plane}.dcm") as rec:
        info, pixels = rec.info, rec.frame(0)
    model = model_for(info.photometric, info.intensity_relationship, info.bits_stored, [pixels])
    pixel_mm = info.spacing_at_vertebra_mm()[1]
    att = model.attenuation(pixels).astype(np.float32)
    tip = np.asarray(truth["cannulas"][0]["tip_px"][plane], float)
    return att, pixel_mm, find_cannulas(att, pixel_mm)[0], tip


def _faint_steel(att, pixel_mm: float, shaft, tip, behind_mm: tuple[float, float], share: float):
    """``att`` with the steel of ``shaft`` between ``behind_mm`` (from, to) behind the true
    ``tip`` (x, y image pixels) kept at ``share`` of its contrast over the bone inpainted under it."""
    from monitor.vision.fill import fill_from_around

    ux, uy = shaft.direction
    ys, xs = np.mgrid[0 : att.shape[0], 0 : att.shape[1]]
    along = ((xs - tip[0]) * ux + (ys - tip[1]) * uy) * pixel_mm
    across = np.abs(-(xs - tip[0]) * uy + (ys - tip[1]) * ux)
    stretch = (across <= 0.75 * shaft.width_px + 1) & (along > behind_mm[0]) & (along < behind_mm[1])
    background = fill_from_around(att, stretch, 5)
    return np.where(stretch, background + share * (att - background), att).astype(np.float32)


def test_the_tip_is_followed_through_a_pedicle_where_the_steel_is_faint(anatomy_cases):
    """A cannula displaces the bone it was driven through: where it crosses a pedicle its
    contrast over its flanks falls to about a fifth for a centimetre (DRRs of real CT). Here
    the steel 3-15 mm behind the true tip keeps a fifth of its contrast: the tip is still found
    where the steel ends, not where the faint stretch begins."""
    from monitor.vision.anatomy import find_cannulas

    att, pixel_mm, shaft, tip = _lateral_steel(anatomy_cases, "wedge-L1")
    faint = _faint_steel(att, pixel_mm, shaft, tip, (3.0, 15.0), 0.2)

    found = find_cannulas(faint, pixel_mm)[0]
    error_mm = float(np.hypot(found.tip[0] - tip[0], found.tip[1] - tip[1])) * pixel_mm
    assert error_mm < 1.5, f"tip {error_mm:.1f} mm from the truth"


def test_a_dense_line_along_the_images_border_is_not_taken_for_the_cannula(anatomy_cases):
    """A round field's rim or a shutter's edge, greyed by glare, can run along the image's
    border as a dense straight line longer than the shaft. A cannula's tip is in the body the
    field is centred on, never at the border: the shaft is still the one found."""
    from monitor.vision.anatomy import find_cannulas

    att, pixel_mm, shaft, tip = _lateral_steel(anatomy_cases, "wedge-L1")
    rim = att.copy()
    rows = slice(2, 2 + max(3, int(round(shaft.width_px))))
    rim[rows, :] += 2.0 * shaft.contrast  # twice the steel's contrast, along the whole top

    found = find_cannulas(rim, pixel_mm)[0]
    error_mm = float(np.hypot(found.tip[0] - tip[0], found.tip[1] - tip[1])) * pixel_mm
    assert error_mm < 1.5, f"tip {error_mm:.1f} mm from the truth, at {found.tip}"


def test_an_endplate_found_beside_the_tip_is_refused(anatomy_cases):
    """A gas cleft's edge (or a rib, a fracture line) just above the tip falls like an
    endplate. Taken for one, the outline passes through the tip and the first cement reads as
    a disc leak (DRRs of real CT: three false leak alarms on one case). The tip is put in the
    middle of the body's height, so an outline with an endplate within 4 mm of it is refused,
    in both views; the same image is outlined when the priors allow it."""
    from monitor.vision.anatomy import AnatomyPriors, NotFound, find_lateral_body

    att, pixel_mm, shaft, tip = _lateral_steel(anatomy_cases, "wedge-L1")
    ys, xs = np.mgrid[0 : att.shape[0], 0 : att.shape[1]]
    above_mm = (shaft.tip[1] - ys) * pixel_mm
    cleft = (above_mm > 2.5) & (above_mm < 6.0) & (np.abs(xs - shaft.tip[0]) * pixel_mm < 18.0)
    with_cleft = np.where(cleft, att - 0.3, att).astype(np.float32)  # gas: far less attenuating

    lax = find_lateral_body(with_cleft, shaft, pixel_mm, priors=AnatomyPriors(min_tip_from_endplate_mm=0.0))
    from_top_mm = (shaft.tip[1] - float(lax.superior.at(shaft.tip[0]))) * pixel_mm
    assert 2.0 < from_top_mm < 3.5, f"the cleft's edge was not taken for the endplate ({from_top_mm:.1f} mm)"
    with pytest.raises(NotFound, match="mm from an endplate"):
        find_lateral_body(with_cleft, shaft, pixel_mm)
    body = find_lateral_body(att, shaft, pixel_mm)  # without the cleft: its own endplates, well clear
    assert (shaft.tip[1] - float(body.superior.at(shaft.tip[0]))) * pixel_mm > 4.0


@pytest.mark.parametrize("name", ["wedge-L1", "thoracic-T8"])
def test_an_ap_outline_taller_than_a_vertebral_body_is_refused(anatomy_cases, name):
    """A vertebral body is wider than tall (T5-L5: about 0.55-0.72 as high as wide). On the
    realistic world's CT cases the AP outline took a next body's endplate and read 25-39 mm high
    for a 17-28 mm wall, and two of them raised false leak alarms. The true outline here passes;
    the same image is refused, with the reason, once the outline is held to a body flatter than it."""
    from monitor.vision.anatomy import AnatomyPriors, NotFound, find_ap_body

    att, pixel_mm, shaft, _ = _lateral_steel(anatomy_cases, name, "ap")
    body = find_ap_body(att, shaft, pixel_mm)
    tx, ty = shaft.tip
    height = (float(body.inferior.at(tx)) - float(body.superior.at(tx))) * pixel_mm
    width = (float(body.right.at(ty)) - float(body.left.at(ty))) * pixel_mm
    assert 0.4 < height / width < 0.75
    flatter = AnatomyPriors(max_ap_height_to_width=0.9 * height / width)
    with pytest.raises(NotFound, match="wider than tall"):
        find_ap_body(att, shaft, pixel_mm, priors=flatter)
