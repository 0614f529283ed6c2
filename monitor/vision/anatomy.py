"""The cannula and the treated vertebral body, found in a pre-injection frame.

All functions take an attenuation image (``-ln I``, dense is high) and return
small records in image pixel coordinates (x = column, y = row).

The cannula is the one object we can count on: steel is far denser than
anything else, straight, and its tip sits inside the treated body. The body
is then found around the tip: in the lateral view the posterior wall is the
last strong fall of attenuation on the side the cannula comes from (the
pedicle side), the endplates are the falls above and below the tip (into the
discs), and the anterior wall the fall on the other side. Each wall is a
robust line fit to edge points, so a rib, a pedicle or bowel gas crossing a
few rows does not move it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import cv2
import numpy as np

from monitor.vision.sampling import Border, sample_points


@dataclass(frozen=True)
class AnatomyPriors:
    """What a treated vertebral body is taken to look like, in millimetres at the vertebra:
    where its walls and endplates are looked for around the cannula tip, and the outlines
    refused as no vertebra's. From adult T5-L5 anatomy (see :func:`_check_plausible`), not
    tuned per case: an outline outside these is refused, and the operator draws the wall."""

    depth_mm: tuple[float, float] = (18.0, 55.0)  # anterior to posterior wall at the tip (lateral)
    height_mm: tuple[float, float] = (10.0, 38.0)  # endplate to endplate at the tip (fractured: low)
    max_wall_tilt_deg: float = 25.0  # the posterior wall off perpendicular to the endplates
    min_tip_inside_mm: float = 2.0  # the tip this far inside (lateral: the posterior wall; AP: each side)
    # ... and this far from each endplate, in both views: the tip is put in the middle of the body's
    # height (the middle third of a 14-35 mm body is >= 4.7 mm from either endplate); an "endplate"
    # nearer is another edge (a fracture line, a rib, the other cortex), and an outline on it would
    # call the first cement at the tip a disc leak. A collapsed body under 12 mm high is refused
    # unless its tip is near the middle (its middle third is 3.3 mm from an endplate at 10 mm):
    # the operator then draws it.
    min_tip_from_endplate_mm: float = 4.0
    min_endplate_gap_mm: float = 8.0  # endplates closer than this are not one body's
    # AP view: a vertebral body is wider than tall. Adult T5-L5 bodies are about 0.55-0.72 as high
    # (endplate to endplate) as wide (wall to wall), T5 the most (about 18 by 26 mm), fractured ones
    # less. An AP outline taller than 0.75 of its width has taken a next body's endplate, a rib or
    # the other side's cortex for its own: on the realistic world's tuning seeds 5000-5035, 12 of
    # the 27 AP outlines found, each 8-20 mm taller than the true wall (9 of them on a real CT);
    # none of the 12 within 2 mm of it was over 0.65.
    max_ap_height_to_width: float = 0.75
    endplate_search_mm: tuple[float, float] = (2.0, 22.0)  # from the tip, up and down
    wall_search_mm: tuple[float, float] = (1.0, 30.0)  # lateral view: from the tip, each way
    ap_wall_search_mm: tuple[float, float] = (10.0, 30.0)  # AP view: out from the midline (past the pedicles)
    midline_search_mm: float = 25.0  # AP view: the midline within this of the tip
    midline_reach_mm: float = 22.0  # AP view: mirror symmetry compared this far each side
    edge_tolerance_mm: float = 1.2  # an edge point this close to a wall's line supports it
    posterior_tolerance_mm: float = 0.8  # tighter for the posterior wall: the distance is to it
    endplate_agreement_mm: float = 1.5  # an endplate refitted across the body kept when this close


DEFAULT_PRIORS = AnatomyPriors()


# Cannula: how a second one must resemble the first (see find_cannulas)
SECOND_CANNULA_MAX_GAP_MM = 30.0  # between the tips
SECOND_CANNULA_MIN_LENGTH = 0.6  # of the first's visible length
SECOND_CANNULA_WIDTH = (0.75, 1.33)  # ratio to the first's width
SECOND_CANNULA_CONTRAST = (0.7, 1.4)  # ratio to the first's contrast
PIXEL_MM_UNKNOWN = 0.15  # assumed when there is no scale, only for the tips' gap and follow-through
# Cannula: the ridge and the lines through it (see find_cannula)
CANNULA_BLUR_MM = 1.0  # a hollow tube's two walls blur into one band over about a millimetre
CANNULA_TOPHAT_MM = 6.0  # the top-hat's disc: wider than any shaft, narrower than a body
RIDGE_FRACTION = 0.3  # of the top-hat's 99.9th percentile in the field: ridge pixels
RIDGE_BRIDGE_FRACTION = 0.1  # along a line, a stretch between ridge pixels still this strong is no gap
LINES_TRIED = 60  # the strongest Hough lines looked at
MIN_FROM_VERTICAL_DEG = 12.0  # steeper: spinous processes and walls, never a transpedicular cannula
MIN_FROM_HORIZONTAL_DEG = 10.0  # flatter, ending inside the field: an endplate
MIN_LENGTH_FRACTION = 0.06  # of the image's larger side: shorter lines are not a shaft
TIP_FROM_BORDER = 0.04  # of the image's larger side: a tip nearer the border is a field's edge, not steel
TIP_REACH_MM = 70.0  # the steel followed this far past the ridge's end (dense bone hides it)
# A shaft seen for less than this is looked for again joined along its line (find_cannula), and the
# joined one taken when it is the same shaft (within this angle and this far off its axis) reaching
# at least this much further in
SHORT_SHAFT_MM = 20.0
SHORT_SHAFT_AGREE_DEG = 10.0
SHORT_SHAFT_OFF_AXIS_MM = 2.0
SHORT_SHAFT_FURTHER_MM = 10.0
TIP_LOCAL_MM = 4.0  # the steel's contrast is judged against its median over this much behind ...
TIP_LOCAL_SHARE = 0.5  # ... and is on while over this share of it ...
TIP_NOISE_SIGMAS = 4.0  # ... and over this many spreads of the contrast beside the shaft
TIP_DIP_MM = 25.0  # a dip (a pedicle crossed) is bridged when the steel stands again within this ...
TIP_DIP_FLOOR = 0.1  # ... the dip staying over this share of the steel's level before it ...
TIP_RESUMES_MM = 3.0  # ... and the steel standing again (over TIP_LOCAL_SHARE) this long
TIP_AXIS_ROUNDS = 6  # walks, each on the axis refitted through the steel the last one found ...
TIP_AXIS_FIT_MM = 30.0  # ... over this much of it behind its end
# Body: the profiles an edge is looked for along
EDGE_BLUR_MM = 0.35  # the image smoothed over this before its gradients are taken
PROFILES = 40  # lines across the body an edge point is looked for on
PROFILES_ACROSS = 60  # across the whole body, for the endplates' refit
ENDPLATE_BEHIND_TIP_MM = 14.0  # lateral: the endplates looked for from this far behind the tip
ENDPLATE_AHEAD_OF_TIP_MM = 4.0  # to this far ahead of it (towards the posterior wall)
WALL_ROWS_MARGIN = 0.15  # lateral: the rows for the walls leave this share of the height at each end
AP_WALL_ROWS_MARGIN = 0.2  # AP: likewise (the pedicles crowd the corners)
AP_MIDLINE_BAND_MM = 5.0  # AP: the rows each side of the tip the midline profile is taken over
AP_ENDPLATE_COLUMNS_MM = 10.0  # AP: the endplates looked for this far each side of the midline
# Lateral: an endplate refitted across the body may bow towards the body's middle. Endplates are
# concave towards the disc, the more so in an osteoporotic body ("biconcave" or "codfish"
# vertebrae, the middle 20-40 % lower than the walls): a line through such an endplate's middle
# lies 2-5 mm inside its corners, and cement filling a corner (a cleft, a normal fill) was read as
# a disc leak beyond it. A curve concave towards the disc is fitted when it agrees with more of the
# edge points than the line does.
ENDPLATE_BOW_REACH_MM = 5.0  # edge points this close to the line are fitted with a curve ...
ENDPLATE_BOW_GAIN = 0.1  # ... kept when it agrees with this share more of the lines searched ...
ENDPLATE_MAX_SAG_MM = 6.0  # ... and sags at most this much from its ends to its middle
OUTLINE_POINTS_PER_PLATE = 16  # a bowed endplate drawn and filled through this many points


@dataclass(frozen=True)
class Cannula:
    tip: tuple[float, float]  # (x, y) pixels
    direction: tuple[float, float]  # unit vector from the tip out along the shaft
    width_px: float
    mask: np.ndarray  # bool, the shaft (dilated), to exclude from cement
    contrast: float  # attenuation of the shaft above its flanks
    length_px: float  # of the visible shaft
    leaves_field: bool  # runs out of the field (lateral view) rather than ending inside (AP)


@dataclass(frozen=True)
class Bow:
    """A curve along = a*t + b + c*(t - t0)**2 (t: x for a horizontal line, pixels) over the
    span of the edge points it was fitted on, ``lo`` to ``hi``: an endplate concave towards its
    disc, and the side of it that is outside the body."""

    a: float
    b: float
    c: float  # 1/pixel: the curve lies c*s**2 pixels off its tangent at t0, s pixels from t0
    t0: float  # where the bow is centred (the middle of the points fitted)
    outward: int  # +1: larger ``along`` is outside the body (an inferior endplate), -1 smaller
    lo: float = -np.inf  # the span of the points it agrees with: not drawn on past them
    hi: float = np.inf

    def at(self, t: np.ndarray) -> np.ndarray:
        return self.a * t + self.b + self.c * (t - self.t0) ** 2

    def beyond(self, line: Line, t: np.ndarray) -> np.ndarray:
        """How far the curve lies outside ``line`` (pixels along its axis, 0 where inside it),
        held beyond its span at the value at its end: a parabola drawn on past the points it
        was fitted on put a body's rounded corners 1-2 mm out in the disc."""
        held = np.clip(t, self.lo, self.hi)
        return np.maximum(self.outward * (self.at(held) - (line.a * held + line.b)), 0.0)


@dataclass(frozen=True)
class Line:
    """x = a*y + b for near-vertical walls, or y = a*x + b for near-horizontal ones. An endplate
    may also have a ``bow`` (:func:`_bowed`): it then runs along the line or the curve, whichever
    lies further out of the body, so a body grows into the corners of a biconcave endplate but
    is never cut into by a curve fitted to something inside it (a cleft's rim)."""

    a: float
    b: float
    vertical: bool
    support: int  # edge points that agree (with the straight line, for a bowed endplate too)
    searched: int = 0  # lines across the edge it was looked for on (0: drawn, not found)
    rms_px: float = 0.0  # the agreeing points' root-mean-square distance from the line
    bow: Bow | None = None

    def at(self, t: np.ndarray | float) -> np.ndarray | float:
        line = self.a * np.asarray(t) + self.b
        if self.bow is None:
            return line
        return line + self.bow.outward * self.bow.beyond(self, np.asarray(t))

    def slope(self, t: np.ndarray | float) -> np.ndarray | float:
        """d(along)/dt at ``t``."""
        if self.bow is None:
            return self.a
        t = np.asarray(t)
        bow = self.bow
        on_curve = (bow.beyond(self, t) > 0) & (t >= bow.lo) & (t <= bow.hi)
        return np.where(on_curve, bow.a + 2.0 * bow.c * (t - bow.t0), self.a)

    def straight(self) -> Line:
        """The line without its bow."""
        return self if self.bow is None else replace(self, bow=None)

    def signed_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Perpendicular distance, positive on the side of smaller x (vertical) or y (horizontal);
        along a bow, the offset along its axis over its local slope (the curve is gentle: within
        a few percent of the true distance near it)."""
        if self.vertical:
            return (self.at(y) - x) / np.hypot(1.0, self.slope(y))
        return (self.at(x) - y) / np.hypot(1.0, self.slope(x))


@dataclass(frozen=True)
class LateralBody:
    posterior: Line  # vertical
    anterior: Line  # vertical
    superior: Line  # horizontal (smaller y = up)
    inferior: Line
    posterior_sign: int  # +1 when posterior is towards larger x

    def wall_segment(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """End points of the posterior wall between the endplates."""
        return _corner(self.posterior, self.superior), _corner(self.posterior, self.inferior)

    def polygon(self) -> np.ndarray:
        """Corners (4, 2): posterior-superior, anterior-superior, anterior-inferior, posterior-inferior."""
        return _quad(self.posterior, self.anterior, self.superior, self.inferior)

    def outline(self) -> np.ndarray:
        """The outline as a closed polygon (n, 2), in the corners' order: the corners, and a
        bowed endplate through points along it (the corners alone for straight ones)."""
        return _outline(self.polygon(), self.superior, self.inferior)


@dataclass(frozen=True)
class ApBody:
    left: Line  # vertical, smaller x
    right: Line
    superior: Line
    inferior: Line

    def polygon(self) -> np.ndarray:
        """Corners (4, 2): left-superior, right-superior, right-inferior, left-inferior."""
        return _quad(self.left, self.right, self.superior, self.inferior)

    def outline(self) -> np.ndarray:
        """As :meth:`LateralBody.outline`."""
        return _outline(self.polygon(), self.superior, self.inferior)


def _corner(wall: Line, plate: Line) -> tuple[float, float]:
    """Where a near-vertical wall (x = a1 y + b1) meets an endplate (y = a2 x + b2); a bowed one
    from there by fixed-point steps (both within ~20 degrees of the image axes: each step
    shrinks the error over tenfold)."""
    y = (plate.a * wall.b + plate.b) / (1 - plate.a * wall.a)
    if plate.bow is not None or wall.bow is not None:
        for _ in range(6):
            y = float(plate.at(wall.at(y)))
    return float(wall.at(y)), float(y)


def _outline(corners: np.ndarray, superior: Line, inferior: Line) -> np.ndarray:
    """``corners`` (4, 2; the two superior ones first, the inferior ones in reverse), with the
    points of a bowed endplate between its two corners (OUTLINE_POINTS_PER_PLATE)."""
    if superior.bow is None and inferior.bow is None:
        return corners
    points = []
    for (start, end), plate in (((corners[0], corners[1]), superior), ((corners[2], corners[3]), inferior)):
        xs = np.linspace(start[0], end[0], 2 if plate.bow is None else OUTLINE_POINTS_PER_PLATE)
        points.append(np.column_stack([xs, plate.at(xs)]))
    return np.vstack(points).astype(np.float32)


def _quad(first: Line, second: Line, top: Line, bottom: Line) -> np.ndarray:
    corners = [_corner(first, top), _corner(second, top), _corner(second, bottom), _corner(first, bottom)]
    return np.array(corners, dtype=np.float32)


BAND_WIDTHS = 1.8  # the band along a shaft left out of the cement, in shaft widths
STEEL_WIDTH_FACTOR = 1.15  # the steel itself within that band (left out of the sleeve), in shaft widths
STEEL_SEEN_BLUR_MM = 0.3  # the steel seen in the band: read this sharp (a tube's walls stay apart) ...
STEEL_SEEN_SHARE = 0.3  # ... over this share of the steel's own level on the axis near the tip ...
STEEL_SEEN_NEAR_MM = 30.0  # ... that level read within this distance of each tip ...
STEEL_SEEN_KERNEL_BANDS = 1.2  # ... over the level a disc this many bands wide finds around it
STEEL_SEEN_THICK_MM = 0.6  # steel seen beside the core counts when this thick ...
STEEL_SEEN_LONG_MM = 5.0  # ... and this long along the band (a shaft, not a fringe or a cortex)


def steel_seen(att: np.ndarray, cannulas: list[Cannula], pixel_mm: float | None) -> np.ndarray:
    """The steel within the cannulas' bands, (H, W) bool over ``att`` (the first frame's
    attenuation, working pixels): each band's core around the axis found
    (STEEL_WIDTH_FACTOR widths), and the band's pixels the image itself shows dense like the
    steel, so that an axis found off the steel cannot leave steel in the sleeve beside it.

    Two cannulas that project a few millimetres apart in the lateral view are found as one,
    its axis between them (a tuning case, two shafts 4.3 mm apart at their tips):
    each shaft's outer half lay in the sleeve, where the cement filling its lumen was read as
    cement running back along the needle, a front 9 mm from the tips at the first frame of
    cement. Read at STEEL_SEEN_BLUR_MM, where the two shafts stay apart, and against the
    steel's own top-hat level near the tips, which falls over dense bone.
    """
    h, w = att.shape
    seen = np.zeros((h, w), bool)
    if not cannulas:
        return seen
    px = pixel_mm or PIXEL_MM_UNKNOWN
    sharp = cv2.GaussianBlur(att, (0, 0), max(0.5, STEEL_SEEN_BLUR_MM / px))
    ys, xs = np.mgrid[0:h, 0:w]
    for c in cannulas:
        # over the level beside the whole band: two shafts side by side fill a disc narrower
        kernel = (
            int(round(max(CANNULA_TOPHAT_MM / px, STEEL_SEEN_KERNEL_BANDS * BAND_WIDTHS * c.width_px))) | 1
        )
        tophat = cv2.morphologyEx(
            sharp, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
        )
        core = shaft_band((h, w), c.tip, c.direction, c.width_px, STEEL_WIDTH_FACTOR)
        seen |= core
        near = np.hypot(xs - c.tip[0], ys - c.tip[1]) * px < STEEL_SEEN_NEAR_MM
        if not (core & near).any():
            continue
        level = float(np.percentile(tophat[core & near], 90))
        if level <= 0:
            continue
        dense = (c.mask & ~core & (tophat > STEEL_SEEN_SHARE * level)).astype(np.uint8)
        # a shaft, not the fringe of the one found nor a cortex across the band: at least
        # STEEL_SEEN_THICK_MM thick and STEEL_SEEN_LONG_MM long along the band
        r = max(1, int(round(STEEL_SEEN_THICK_MM / (2 * px))))
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        thick = cv2.morphologyEx(dense, cv2.MORPH_OPEN, disc)
        count, labels = cv2.connectedComponents(thick, connectivity=8)
        _, whole = cv2.connectedComponents(dense, connectivity=8)
        for i in range(1, count):
            part = labels == i
            along = (xs[part] - c.tip[0]) * c.direction[0] + (ys[part] - c.tip[1]) * c.direction[1]
            if np.ptp(along) * px >= STEEL_SEEN_LONG_MM:  # with the thin ends of the same steel
                seen |= whole == whole[part][0]
    return seen


class NotFound(ValueError):
    """A structure could not be found; the message says which and why."""


def find_cannulas(att: np.ndarray, pixel_mm: float | None = None) -> list[Cannula]:
    """One or two cannulas (bipedicular).

    The second must look like the first: steel of about the same width and
    contrast over its flanks, running the same way (out of the field, or
    ending inside it), at least 60 % as long, its tip within 30 mm. A cortex
    seen edge-on (a wedge-fractured endplate) is a dense straight line too,
    but thinner or fainter, and it ends at the body's corners.
    """
    first = find_cannula(att, pixel_mm)
    masked = att.copy()
    masked[first.mask] = float(np.median(att))
    try:
        second = find_cannula(masked, pixel_mm, bridged=False)  # a second as plain as the first, or none
    except NotFound:
        return [first]
    gap_px = np.hypot(second.tip[0] - first.tip[0], second.tip[1] - first.tip[1])
    gap_mm = gap_px * (pixel_mm or PIXEL_MM_UNKNOWN)
    (narrow, wide), (faint, bright) = SECOND_CANNULA_WIDTH, SECOND_CANNULA_CONTRAST
    alike = (
        second.leaves_field == first.leaves_field
        and second.length_px >= SECOND_CANNULA_MIN_LENGTH * first.length_px
        and narrow <= second.width_px / first.width_px <= wide
        and faint <= second.contrast / max(first.contrast, 1e-6) <= bright
    )
    return [first, second] if gap_mm < SECOND_CANNULA_MAX_GAP_MM and alike else [first]


def find_cannula(att: np.ndarray, pixel_mm: float | None = None, bridged: bool = True) -> Cannula:
    """The steel cannula (see :func:`_find_cannula`); when none is found on its ridge alone and
    ``bridged``, found again with the ridge joined along each line where it fades over dense
    bone (a tuning CT case: to a fifth of its peak for 25 mm, so that the shaft's inner part
    looked like a short flat line inside the field, refused as an endplate, and no cannula was
    found). Only then: joining moves a shaft found without it by a fraction of a degree, and on
    a simple-world case that put the steel's edge into the cement beside the band left out (a
    front read 15 mm beyond the wall on four frames)."""
    try:
        found = _find_cannula(att, pixel_mm, bridged=False)
    except NotFound:
        if not bridged:
            raise
        return _find_cannula(att, pixel_mm, bridged=True)
    mm = 1.0 / (pixel_mm or PIXEL_MM_UNKNOWN)
    if not bridged or found.length_px >= SHORT_SHAFT_MM * mm:
        return found
    # A shaft seen for under SHORT_SHAFT_MM: its ridge may stand out only over the thin tissue at
    # the field's edge and break where the shaft enters thick tissue under heavy scatter (extra
    # tuning seed 5128: 11 mm of it, the tip put there, 53 mm short of the real one, the rest of
    # the shaft read as cement). Joined along its line, the same shaft reaching further in is it.
    try:
        joined = _find_cannula(att, pixel_mm, bridged=True)
    except NotFound:
        return found
    out = np.asarray(joined.direction)
    rel = np.asarray(found.tip) - np.asarray(joined.tip)
    further_in = float(rel @ out)  # how far the joined tip lies beyond the one found, along the shaft
    off_axis = abs(float(rel @ np.array([-out[1], out[0]])))
    aligned = float(np.asarray(found.direction) @ out) >= np.cos(np.radians(SHORT_SHAFT_AGREE_DEG))
    if aligned and off_axis <= SHORT_SHAFT_OFF_AXIS_MM * mm and further_in >= SHORT_SHAFT_FURTHER_MM * mm:
        return joined
    return found


def _find_cannula(att: np.ndarray, pixel_mm: float | None, bridged: bool) -> Cannula:
    """The steel cannula: a dense straight ridge running unbroken from its tip,
    inside the image, out of the field; ``bridged``: unbroken but for stretches over
    RIDGE_BRIDGE_FRACTION of the top-hat's peak.

    Cortical lines can be as dense in projection, but they end at the corners
    of a vertebral body (and line up only across disc gaps); the shaft is the
    only ridge that reaches the edge of the field.
    """
    # Over 60 lines on purpose: the ridge image, its straight lines and the choice among them in one
    # pass, the reason a line is refused (near vertical, horizontal, too short) beside each test.
    h, w = att.shape
    # A hollow tube projects as two thin walls; blurred over about a millimetre
    # (0.6% of a typical 120-160 mm field when the scale is unknown) it is one band.
    side = max(h, w)
    blur = CANNULA_BLUR_MM / pixel_mm if pixel_mm else 0.006 * side
    smooth = cv2.GaussianBlur(att, (0, 0), max(1.0, blur))
    kernel = int(round(CANNULA_TOPHAT_MM / pixel_mm if pixel_mm else 0.045 * side)) | 1
    tophat = cv2.morphologyEx(
        smooth, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    )
    # Collimator shutters and round intensifier fields are steps a top-hat answers
    # strongly; only ridges well inside the exposed field count.
    field = cv2.erode(exposed_field(att).astype(np.uint8), np.ones((kernel, kernel), np.uint8)).astype(bool)
    peak = float(np.percentile(tophat[field], 99.9))
    ridge = (tophat > RIDGE_FRACTION * peak) & field
    bridge = (tophat > RIDGE_BRIDGE_FRACTION * peak) & field if bridged else ridge
    lines = cv2.HoughLines(ridge.astype(np.uint8), 1, np.pi / 360, threshold=max(15, h // 20))
    if lines is None:
        raise NotFound("no cannula: no straight dense line in the image")
    gap = max(4, h // 60)
    centre = np.array([w / 2, h / 2])
    best, best_score = None, 0.0
    candidates = (
        run
        for line in lines.reshape(-1, 2)[:LINES_TRIED]
        for run in _runs(ridge, bridge, field, *line, gap, bridged)
    )
    for a, b, length, a_edge, b_edge, theta in candidates:
        from_vertical = min(theta, np.pi - theta)  # 0 for a vertical line
        if from_vertical < np.radians(MIN_FROM_VERTICAL_DEG):
            continue  # spinous processes and vertebral walls, never a transpedicular cannula
        if a_edge or b_edge:
            # Leaves the field (the lateral view): the tip is the inner end.
            tip, tail, score, leaves = (b, a, 2 * length, True) if a_edge else (a, b, 2 * length, True)
        else:
            # Foreshortened inside the field (the AP view): oblique, tip nearer the midline.
            if abs(np.pi / 2 - from_vertical) < np.radians(MIN_FROM_HORIZONTAL_DEG):
                continue  # horizontal: an endplate
            near_a = abs(a[0] - centre[0]) < abs(b[0] - centre[0])
            tip, tail, score, leaves = (a, b, length, False) if near_a else (b, a, length, False)
        if _at_border(tip, (h, w)):
            continue  # the tip is in the body the field is centred on, not at the image's border
        if score > best_score:
            best, best_score = (tip, tail, length, leaves), score
    if best is None or best[2] < MIN_LENGTH_FRACTION * max(h, w):
        raise NotFound("no cannula: no dense straight oblique line in the image")
    tip, tail, _, leaves = best
    tip, out = _refine_axis(tophat, ridge, tip, tail, bridged)
    width = _ridge_width(tophat, tip, out)
    reach = TIP_REACH_MM / pixel_mm if pixel_mm else 0.25 * side
    tip, out, contrast = _follow_steel(
        smooth, tip, out, width, reach, pixel_mm, float(np.linalg.norm(tail - tip))
    )
    if _at_border(tip, (h, w)):  # followed out to the border: a field's edge, not steel ending
        raise NotFound("no cannula: the straight dense line found ends at the image's border")
    return Cannula(
        (float(tip[0]), float(tip[1])),
        (float(out[0]), float(out[1])),
        width,
        shaft_band((h, w), tip, out, width, BAND_WIDTHS),
        contrast,
        float(np.linalg.norm(tail - tip)),
        leaves,
    )


def _at_border(tip, shape: tuple[int, int]) -> bool:
    """Whether ``tip`` (x, y) lies within TIP_FROM_BORDER of the larger side of an image of
    ``shape`` (h, w) from its border."""
    h, w = shape
    return min(tip[0], tip[1], w - 1 - tip[0], h - 1 - tip[1]) < TIP_FROM_BORDER * max(h, w)


def shaft_band(shape, tip, out, width_px: float, widths: float) -> np.ndarray:
    """The shaft from ``tip`` out of the image along ``out``, ``widths`` times its width wide (bool)."""
    band = np.zeros(shape, np.uint8)
    far = np.asarray(tip, float) + np.asarray(out, float) * 4 * max(shape)
    ends = [tuple(int(round(v)) for v in p) for p in (tip, far)]
    cv2.line(band, *ends, 1, thickness=max(3, int(round(width_px * widths))))
    return band.astype(bool)


def _refine_axis(tophat: np.ndarray, ridge: np.ndarray, tip: np.ndarray, tail: np.ndarray, on_run: bool):
    """Least-squares axis through the ridge pixels near the rough line, and the
    tip where the ridge falls to half its height along that axis; ``on_run``: that height and
    fall read only on the run from ``tip`` to ``tail`` inside the image."""
    out = (tail - tip) / np.linalg.norm(tail - tip)
    normal = np.array([-out[1], out[0]])
    ys, xs = np.nonzero(ridge)
    rel = np.stack([xs - tip[0], ys - tip[1]], axis=1)
    along, across = rel @ out, rel @ normal
    near = (np.abs(across) < 8) & (along > -20) & (along < np.linalg.norm(tail - tip) + 5)
    if near.sum() > 20:
        weights = tophat[ys[near], xs[near]]
        pts = np.stack([xs[near], ys[near]], axis=1).astype(float)
        centre = np.average(pts, axis=0, weights=weights)
        cov = np.cov((pts - centre).T, aweights=weights)
        axis = np.linalg.eigh(cov)[1][:, -1]
        out = axis if axis @ out > 0 else -axis
        tip = centre + ((tip - centre) @ out) * out
    t = np.arange(-30.0, 60.0, 0.25)
    samples = np.array([_bilinear(tophat, tip + out * s) for s in t])
    # the shaft's level from the ridge itself: a short run at the field's edge has little of
    # its 60 pixels inside the image (outside reads 0: its median put the tip off the image)
    h, w = tophat.shape
    pts = tip[None, :] + t[:, None] * out[None, :]
    in_image = (pts[:, 0] >= 0) & (pts[:, 0] < w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] < h - 1)
    beyond = (t > max(float(np.linalg.norm(tail - tip)), 12.0)) | ~in_image  # not the ridge's
    beyond &= on_run
    along_run = (t > 10) & (t < 60) & ~beyond
    shaft = np.median(samples[along_run]) if along_run.any() else np.median(samples[(t > 10) & (t < 60)])
    inside = (samples > 0.5 * shaft) | beyond  # the tip is where the ridge itself falls
    k = int(np.argmax(inside[::-1] == 0)) if not inside.all() else 0  # last False from the shaft side
    last_false = len(t) - 1 - k
    first_true = min(last_false + 1, len(t) - 1)
    a, b = samples[last_false], samples[first_true]
    frac = (0.5 * shaft - a) / (b - a) if b != a else 0.0
    tip = tip + out * (t[last_false] + frac * (t[first_true] - t[last_false]))
    return tip, out


def _follow_steel(
    att: np.ndarray,
    tip: np.ndarray,
    out: np.ndarray,
    width: float,
    reach: float,
    pixel_mm: float | None,
    shaft_px: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Where the steel really ends, and the shaft's axis: followed from the ridge's end ``tip``
    (``shaft_px`` from the ridge's other end, along ``out``) up to ``reach`` pixels on; returns
    (tip, out, the steel's contrast on the shaft), pixels of ``att``.

    The ridge is found where the shaft crosses soft tissue, near the field's edge; the tip lies
    in bone. There the steel's log contrast over its flanks falls, gradually, to a third or less
    of that over soft tissue: with a polychromatic beam and scatter the same steel darkens a
    dense, hardened, scatter-veiled stretch less (DRRs of real CTs; a single-energy phantom
    hides it). So the steel is followed on its own local level, not the shaft's: on while its
    contrast stays over TIP_LOCAL_SHARE of its median over the TIP_LOCAL_MM behind and over
    TIP_NOISE_SIGMAS times the contrast's spread on parallel lines beside it (the texture's own
    contrast, in the same units); gaps of up to a shaft's width are bridged. The tip is where the
    contrast falls to half its level over the millimetres behind its blurred end. A dip (the tube
    displacing a pedicle's bone, a fifth of the contrast for a centimetre or more) is bridged
    when the contrast stays over TIP_DIP_FLOOR of the level before it and stands again within
    TIP_DIP_MM for TIP_RESUMES_MM.

    A short ridge gives a slightly wrong axis, which walks off a long shaft (it lost the steel
    49 mm short of the tip on one tuning case); so after each walk the axis is refitted through
    the peaks of the steel's cross-profiles over the TIP_AXIS_FIT_MM behind its end (unweighted:
    the faint steel in bone counts as much), and the walk repeated until the tip moves less than
    a pixel (TIP_AXIS_ROUNDS at most).
    """
    mm = pixel_mm or PIXEL_MM_UNKNOWN
    flank = max(width, 2.0) + 2.0
    half = max(0.5, 0.3 * width)
    step = 0.5
    t = np.arange(-reach, 25.0 * width / 2 + 20, step)
    shaft_level = None  # the steel's contrast on the shaft, from the first walk (soft tissue mostly)
    advanced = 0.0  # how far the tip has moved on from the ridge's end: ``reach`` is the whole way
    for _ in range(TIP_AXIS_ROUNDS):
        normal = np.array([-out[1], out[0]])

        def sample(offset: float, tip=tip, out=out, normal=normal, t=t) -> np.ndarray:
            pts = tip[None, :] + t[:, None] * out[None, :] + offset * normal[None, :]
            return sample_points(att, pts[:, 0], pts[:, 1], Border.REFLECT)

        def contrast_at(offset: float) -> np.ndarray:
            centre = np.mean([sample(offset + u) for u in (-half, 0.0, half)], axis=0)
            return centre - 0.5 * (sample(offset - flank) + sample(offset + flank))

        contrast = contrast_at(0.0)
        shaft = t >= 6.0
        level = float(np.median(contrast[shaft])) if shaft.sum() >= 10 else 0.0
        if level <= 0:
            break
        shaft_level = level if shaft_level is None else shaft_level
        beside = np.concatenate([contrast_at(s * (2 * flank + width)) for s in (-1.0, 1.0)])
        spread = 1.4826 * float(np.median(np.abs(beside - np.median(beside))))
        floor = TIP_NOISE_SIGMAS * spread
        local_n = max(4, int(round(TIP_LOCAL_MM / mm / step)))
        last, bridged_to = _walk_steel(
            contrast,
            int(np.searchsorted(t, 6.0)),
            floor,
            local_n,
            gap=max(2, int(round(max(width, 4.0) / step))),
            run=max(3, int(round(TIP_RESUMES_MM / mm / step))),
            dip_n=int(round(TIP_DIP_MM / mm / step)),
        )
        # the steel's level just behind its end, the blurred end itself (1 mm) left out
        # (not back into a dip bridged just before it)
        behind = min(last + int(round(1.0 / mm / step)), bridged_to - 1)
        here = float(np.median(contrast[behind : min(behind + local_n, bridged_to)]))
        i = last
        while i > 0 and contrast[i - 1] > 0.5 * here:
            i -= 1
        if i > 0:
            a, b = contrast[i - 1], contrast[i]
            frac = (0.5 * here - a) / (b - a) if b != a else 0.0
            end = t[i - 1] + frac * step
        else:
            end = t[0]
        # the axis refitted through the steel found, from its end back along the shaft
        fitted = _axis_through(att, tip + out * end, out, width, floor, 2.0, TIP_AXIS_FIT_MM / mm, False)
        new_tip, new_out = (tip + out * end, out) if fitted is None else fitted
        moved = float(np.linalg.norm(new_tip - tip))
        shaft_px -= end
        advanced -= end
        tip, out = new_tip, new_out
        ahead = max(reach - advanced, 2.0 * width)  # what is left of the reach, from the new tip
        t = np.arange(-ahead, 25.0 * width / 2 + 20 - end, step)
        if moved < 1.0 or fitted is None:
            break
    # The axis returned spans the whole shaft seen, weighted by the steel's contrast squared (the
    # shaft over soft tissue counts most): the shaft's band, and the needle calibration's cross-sections
    # averaged along it, need it straight over their length, not only near the tip.
    fitted = _axis_through(att, tip, out, width, 0.0, 2.0, max(shaft_px, 10.0 * width), True)
    level = shaft_level or 0.0
    return (tip, out, level) if fitted is None else (*fitted, level)


def _walk_steel(
    contrast: np.ndarray, start: int, floor: float, local_n: int, gap: int, run: int, dip_n: int
) -> tuple[int, int]:
    """The steel followed along ``contrast`` (its contrast over its flanks, samples along the
    axis, the tip towards index 0) from ``start`` down: (the last sample on the steel, where the
    last dip bridged stood again plus ``run``, or len(contrast) without one). See
    :func:`_follow_steel` for the rules; ``local_n``, ``gap``, ``run`` and ``dip_n`` are
    TIP_LOCAL_MM, a shaft's width, TIP_RESUMES_MM and TIP_DIP_MM in samples."""
    last, i, bridged_to = start, start, len(contrast)
    recent = list(contrast[start : start + local_n][::-1])  # in the walk's order, newest last
    while i > 0:
        i -= 1
        local = float(np.median(recent[-local_n:]))
        on = max(floor, TIP_LOCAL_SHARE * local)
        if contrast[i] > on:
            last = i
            recent.append(contrast[i])
            continue
        # A drop. A dip (the tube displacing a pedicle's bone) stays over TIP_DIP_FLOOR of the
        # steel's level here throughout, and the steel stands again past it for TIP_RESUMES_MM;
        # texture beside a true tip swings below, or nothing stands again.
        # (a gap under a shaft's width, a cortex crossed, is bridged whatever its contrast)
        k, resumed, below = i, None, 0
        while k > max(0, i - dip_n) and below <= gap:
            below = 0 if contrast[k] > TIP_DIP_FLOOR * local else below + 1
            if k >= run - 1 and (contrast[k - run + 1 : k + 1] > on).all():
                resumed = k - run + 1
                break
            k -= 1
        if resumed is None:
            break
        # the steel standing again, newest last: the level the walk goes on judging against
        recent.extend(contrast[resumed : resumed + run][::-1])
        last = i = resumed
        bridged_to = resumed + run
    return last, bridged_to


def _axis_through(
    att: np.ndarray,
    tip: np.ndarray,
    out: np.ndarray,
    width: float,
    floor: float,
    start: float,
    stop: float,
    weighted: bool,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The steel's axis refitted through the peaks of its cross-profiles from ``start`` to
    ``stop`` pixels behind ``tip`` along ``out``: (the tip moved onto it, its direction), or None
    with under six profiles over ``floor``. ``weighted``: each peak counts by its contrast squared."""
    normal = np.array([-out[1], out[0]])
    along = np.arange(start, stop, max(1.0, width / 2))
    if len(along) < 6:
        return None
    across = np.arange(-1.5 * width, 1.5 * width + 0.01, 0.5)
    pts = tip[None, None, :] + along[:, None, None] * out[None, None, :] + across[None, :, None] * normal
    cross = sample_points(att, pts[..., 0], pts[..., 1], Border.REFLECT)
    cross = cross - np.linspace(cross[:, :1], cross[:, -1:], len(across), axis=1)[..., 0]
    peak = np.argmax(cross, axis=1)
    strength = cross[np.arange(len(along)), peak]
    keep = (strength > floor) & (peak > 0) & (peak < len(across) - 1)
    if keep.sum() < 6:
        return None
    # polyfit squares its weights: each peak counts by its contrast squared, the shaft over soft
    # tissue most (by contrast alone, the needle calibration's scale read 5.3 % low again)
    weights = strength[keep] if weighted else None
    slope, intercept = np.polyfit(along[keep], across[peak[keep]], 1, w=weights)
    direction = out + slope * normal
    return tip + intercept * normal, direction / np.linalg.norm(direction)


def _bilinear(img: np.ndarray, p: np.ndarray) -> float:
    x, y = p
    h, w = img.shape
    if not (0 <= x < w - 1 and 0 <= y < h - 1):
        return 0.0
    x0, y0 = int(x), int(y)
    fx, fy = x - x0, y - y0
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return float(top * (1 - fy) + bottom * fy)


def exposed_field(att: np.ndarray) -> np.ndarray:
    """Pixels inside the collimated field: shutters are near-black (very dense), and so is
    what lies outside a round intensifier field, unless veiling glare and scatter spill into
    it, when the field's circle itself is found (:func:`round_field`)."""
    h, w = att.shape
    centre = att[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
    limit = np.percentile(centre, 99.5) + 1.5
    field = (att < limit).astype(np.uint8)
    circle = round_field(att)
    if circle is not None:
        cx, cy, r = circle
        inside = np.zeros_like(field)
        cv2.circle(inside, (int(round(cx)), int(round(cy))), int(r - ROUND_FIELD_MARGIN * max(h, w)), 1, -1)
        field &= inside
    return cv2.erode(field, np.ones((5, 5), np.uint8)).astype(bool)


ROUND_FIELD_SIDE = 256  # the circle is looked for on the image shrunk to this many pixels
ROUND_FIELD_RADIUS = (0.3, 0.8)  # of the image's larger side
ROUND_FIELD_STEP = 0.15  # attenuation (log) across the circle, outside over inside, at its median ...
ROUND_FIELD_ARC = 0.6  # ... and over this share of its arc in the image, at least 0.1
ROUND_FIELD_MARGIN = 0.015  # of the larger side: the field kept this far inside the circle (its blurred edge)


def round_field(att: np.ndarray) -> tuple[float, float, float] | None:
    """The circle of a round (image-intensifier) field, (x, y, radius) in pixels of ``att``,
    or None when there is none.

    Behind the collimator only veiling glare and scatter reach the detector: on the realistic
    world's intensifier cases 0.3-1.6 log units more attenuating than just inside the circle,
    not the near-black :func:`exposed_field` looks for, so the circle is found by its edge (a
    Hough circle on the image shrunk to ROUND_FIELD_SIDE) and kept only when the outside is
    denser all round it (ROUND_FIELD_STEP, ROUND_FIELD_ARC). On the 36 tuning cases it found the
    field on all 10 intensifier cases and on none of the 26 flat-panel ones (one circle found
    on a flat panel was refused by the step: median -0.09)."""
    side = max(att.shape)
    scale = ROUND_FIELD_SIDE / side
    small = cv2.resize(att, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.5)
    lo, hi = np.percentile(small, [1, 99])
    if hi <= lo:
        return None
    u8 = np.clip((small - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    r_lo, r_hi = (int(f * ROUND_FIELD_SIDE) for f in ROUND_FIELD_RADIUS)
    found = cv2.HoughCircles(  # one circle at most: a field's edge is the strongest ring there is
        u8, cv2.HOUGH_GRADIENT, dp=1, minDist=ROUND_FIELD_SIDE, param1=60, param2=30, minRadius=r_lo,
        maxRadius=r_hi,
    )  # fmt: skip
    if found is None:
        return None
    cx, cy, r = (float(v) for v in found[0][0])
    angles = np.linspace(0.0, 2 * np.pi, 180, endpoint=False)
    h, w = small.shape

    def ring(radius: float) -> np.ndarray:
        x, y = cx + radius * np.cos(angles), cy + radius * np.sin(angles)
        seen = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        v = np.full(angles.shape, np.nan, np.float32)
        v[seen] = small[y[seen].astype(int), x[seen].astype(int)]
        return v

    step = ring(r + 4) - ring(r - 4)
    step = step[~np.isnan(step)]
    if step.size < 0.25 * angles.size or np.median(step) < ROUND_FIELD_STEP:
        return None
    if (step > 0.1).mean() < ROUND_FIELD_ARC:
        return None
    return cx / scale, cy / scale, r / scale


def _runs(ridge, bridge, field, rho, theta, gap, edge_runs=True):
    """Stretches of ``ridge`` along a Hough line (gaps up to ``gap`` pixels; pixels of
    ``bridge``, a weaker ridge, are no gap, though a stretch starts and ends on ``ridge``): the
    longest, and the longest that reaches the field's edge when that is another (bridged, a
    cortex inside the body can outrun the shaft's outer stretch on the same line).

    Each is (one end, other end, length, first end at the field's edge, second end at the
    field's edge, ``theta``); none when the line misses the field.
    """
    h, w = ridge.shape
    c, s = np.cos(theta), np.sin(theta)
    x0, y0 = c * rho, s * rho
    t = np.arange(-2 * max(h, w), 2 * max(h, w))
    xs, ys = x0 - s * t, y0 + c * t
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    xs, ys = xs[inside].round().astype(int), ys[inside].round().astype(int)
    if xs.size < 10:
        return []

    def along(image):
        return image[ys, xs] | image[np.clip(ys + 1, 0, h - 1), xs] | image[ys, np.clip(xs + 1, 0, w - 1)]

    on, weak = along(ridge), along(bridge)
    in_field = np.flatnonzero(field[ys, xs])
    if in_field.size == 0:
        return []
    lo, hi = in_field[0], in_field[-1]
    stretches, start, last, misses = [], None, None, 0
    for idx in range(lo, hi + 1):
        if on[idx]:
            if start is None:
                start = idx
            last, misses = idx, 0
        elif start is not None:
            misses = 0 if weak[idx] else misses + 1
            if misses > gap:
                stretches.append((start, last))
                start, misses = None, 0
    if start is not None:
        stretches.append((start, last))
    if not stretches:
        return []
    chosen = [max(stretches, key=lambda run: run[1] - run[0])]
    at_edge = [run for run in stretches if run[0] - lo <= gap or hi - run[1] <= gap]
    if edge_runs and at_edge and (edge := max(at_edge, key=lambda run: run[1] - run[0])) != chosen[0]:
        chosen.append(edge)
    found = []
    for i, j in chosen:
        a, b = np.array([xs[i], ys[i]], float), np.array([xs[j], ys[j]], float)
        found.append((a, b, float(np.linalg.norm(b - a)), i - lo <= gap, hi - j <= gap, theta))
    return found


def _ridge_width(tophat: np.ndarray, tip: np.ndarray, out: np.ndarray) -> float:
    """Full width at half maximum of the shaft, a little behind the tip."""
    normal = np.array([-out[1], out[0]])
    widths = []
    for along in np.linspace(8, 30, 6):
        centre = tip + out * along
        samples = np.array([_sample(tophat, centre + normal * t) for t in np.arange(-15, 15.5, 0.5)])
        if samples.max() <= 0:
            continue
        widths.append(0.5 * np.count_nonzero(samples > samples.max() / 2))
    return float(np.median(widths)) if widths else 4.0


def _sample(img: np.ndarray, p: np.ndarray) -> float:
    x, y = int(round(p[0])), int(round(p[1]))
    if 0 <= y < img.shape[0] and 0 <= x < img.shape[1]:
        return float(img[y, x])
    return 0.0


def _edge_points(
    grad: np.ndarray,
    origin: tuple[float, float],
    axis: int,
    sign: int,
    span: tuple[int, int],
    across: np.ndarray,
    exclude: np.ndarray,
    first: bool = True,
    cortex: tuple[np.ndarray, int] | None = None,
    step: tuple[np.ndarray, int] | None = None,
) -> list[tuple[float, float, float]]:
    """For each line across the search band, the strongest fall of attenuation
    going in direction ``sign`` along ``axis`` (0 = x, 1 = y), with sub-pixel position.

    With ``first``, the first fall of at least half the strongest is taken
    instead of the strongest. With ``cortex`` (a ridge image and a reach in
    pixels), instead, the first fall that ends a cortical ridge as strong as
    any on the line is taken: a wall is a cortex, and what lies beyond it (a pedicle,
    denser than the body in the thoracic spine) can fall more steeply. With
    ``step`` (the attenuation and a reach in pixels), only falls to a level lower
    than the one as far before them count: an endplate steps down into its disc,
    while the far flank of the next body's endplate, a dense line, falls back to bone.
    Returns (position_along, position_across, strength) for each usable line.
    """
    # Over 60 lines on purpose: one profile per line across the band (read along x or y), with the
    # guards that pick its edge (the masked ``exclude`` pixels, interior maxima only, the step down, the
    # cortical ridge and its outer half-level) beside the step they guard.
    h, w = grad.shape
    ox, oy = origin
    out = []
    for c in across:
        c = int(c)
        if axis == 0:
            if not 0 <= c < h:
                continue
            start = int(round(ox)) + sign * span[0]
            stop = int(round(ox)) + sign * span[1]
            idx = np.arange(start, stop, sign)
            idx = idx[(idx >= 1) & (idx < w - 1)]
            if idx.size < 3:
                continue
            profile = -sign * grad[c, idx]
            blocked = exclude[c, idx]
            ridge = cortex[0][c, idx] if cortex is not None else None
            level = cortex[2][c, idx] if cortex is not None else None
            steps = step[0][c, idx] if step is not None else None
        else:
            if not 0 <= c < w:
                continue
            start = int(round(oy)) + sign * span[0]
            stop = int(round(oy)) + sign * span[1]
            idx = np.arange(start, stop, sign)
            idx = idx[(idx >= 1) & (idx < h - 1)]
            if idx.size < 3:
                continue
            profile = -sign * grad[idx, c]
            blocked = exclude[idx, c]
            ridge = cortex[0][idx, c] if cortex is not None else None
            level = cortex[2][idx, c] if cortex is not None else None
            steps = step[0][idx, c] if step is not None else None
        profile = np.where(blocked, 0.0, profile)
        # Interior local maxima only: a fall cut by the window's edge is not an edge.
        local = np.flatnonzero((profile[1:-1] >= profile[:-2]) & (profile[1:-1] > profile[2:])) + 1
        local = local[profile[local] > 0]
        if steps is not None and local.size:
            r = step[1]
            before, after = steps[np.maximum(local - r, 0)], steps[np.minimum(local + r, len(steps) - 1)]
            local = local[after < before]
        if local.size == 0:
            continue
        strongest = float(profile[local].max())
        if ridge is not None:
            ridge = np.where(blocked, 0.0, ridge)
            reach = cortex[1]
            local = local[profile[local] >= 0.2 * strongest]
            evidence = np.array([ridge[max(0, k - reach) : k + 1].max() for k in local])
            peaks = local[evidence >= 0.5 * evidence.max()] if evidence.max() > 0 else local
            k = int(peaks[0])
            edge = _outer_half(level, k, reach, blocked)
            if edge is not None:
                out.append((idx[0] + sign * edge, c, float(profile[k])))
                continue
        else:
            # The first strong fall from the tip outward, not the strongest: ribs and
            # pedicles beyond a wall can outshine it.
            peaks = local[profile[local] >= 0.5 * strongest]
            k = int(peaks[0]) if first else int(local[np.argmax(profile[local])])
        # parabolic sub-pixel peak
        y0, y1, y2 = profile[k - 1], profile[k], profile[k + 1]
        denom = y0 - 2 * y1 + y2
        offset = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
        out.append((idx[k] + sign * offset, c, float(profile[k])))
    return out


def _cortex(smooth: np.ndarray, mm: float) -> tuple[np.ndarray, int, np.ndarray]:
    """Ridge strength across x: how much a thin near-vertical line stands above
    both sides 1.5 mm away; how far before a fall to look for it (2 mm); and
    the attenuation itself, for the fall's outer half-level."""
    d = max(2, int(round(1.5 * mm)))
    kernel = np.zeros((1, 2 * d + 1), np.float32)
    kernel[0, [0, -1]], kernel[0, d] = -0.5, 1.0
    ridge = cv2.filter2D(smooth, cv2.CV_32F, kernel, borderType=cv2.BORDER_REPLICATE)
    return ridge, int(round(2 * mm)), smooth


def _outer_half(level: np.ndarray, k: int, reach: int, blocked: np.ndarray) -> float | None:
    """Where ``level`` (attenuation along a search line) falls to halfway between the
    cortex's crest (within ``reach`` before the steepest fall at ``k``) and the
    floor as far beyond it, to sub-pixel; None if that cannot be read.

    A cortex seen edge-on is a shell: its projected thickness rises like a square
    root from its outer surface, so the steepest fall of its blurred image lies
    inside the surface (about 0.4 mm here). The half level lies nearer the surface,
    and it is the criterion the cement's front is measured by: the two biases cancel.
    """
    lo, hi = max(0, k - reach), min(len(level) - 1, k + reach)
    if blocked[lo : hi + 1].any() or hi - k < 2:
        return None
    crest = lo + int(np.argmax(level[lo : k + 1]))
    floor = float(level[k : hi + 1].min())
    half = 0.5 * (float(level[crest]) + floor)
    for i in range(crest, hi):
        a, b = float(level[i]), float(level[i + 1])
        if a >= half > b:
            return i + (a - half) / (a - b)
    return None


def _fit_line(
    points: list[tuple[float, float, float]], vertical: bool, tolerance: float, searched: int
) -> Line:
    """RANSAC then least squares: along = a * across + b, weighted by edge strength.
    ``searched``: how many lines across the edge the points were looked for on (the
    share that agree is how much of the edge was seen)."""
    if len(points) < 4:
        raise NotFound("too few edge points")
    pts = np.array(points)
    along, across, strength = pts[:, 0], pts[:, 1], pts[:, 2]
    rng = np.random.default_rng(0)
    best, best_score = None, -1.0
    strong = np.argsort(strength)[::-1][: max(8, len(pts) // 2)]
    for _ in range(150):
        i, j = rng.choice(strong, 2, replace=False)
        if across[i] == across[j]:
            continue
        a = (along[j] - along[i]) / (across[j] - across[i])
        if abs(a) > 0.35:  # walls and endplates are within ~20 degrees of the image axes
            continue
        b = along[i] - a * across[i]
        inliers = np.abs(along - (a * across + b)) < tolerance
        score = inliers.sum() + strength[inliers].sum() / (strength.sum() + 1e-9)  # support first
        if score > best_score:
            best, best_score = inliers, score
    if best is None or best.sum() < 4:
        raise NotFound("no consistent line")
    a, b = np.polyfit(across[best], along[best], 1, w=np.sqrt(strength[best]))
    rms = float(np.sqrt(np.mean((along[best] - (a * across[best] + b)) ** 2)))
    return Line(float(a), float(b), vertical, int(best.sum()), searched, rms)


def _span(search_mm: tuple[float, float], mm: float) -> tuple[int, int]:
    """A search span in millimetres as whole pixels (``mm``: pixels per millimetre)."""
    return int(search_mm[0] * mm), int(search_mm[1] * mm)


def _plate(
    gy, tip, direction: int, across, exclude, mm: float, step, priors: AnatomyPriors, bow: bool = False
) -> Line:
    """An endplate: on each column of ``across``, the first step down of attenuation
    going ``direction`` (-1 up, 1 down) from the tip, within the priors' endplate search
    span; fitted as a line, and with ``bow`` as a curve concave towards the disc where that
    agrees with more of the points (:func:`_bowed`)."""
    points = _edge_points(
        gy, tip, 1, direction, _span(priors.endplate_search_mm, mm), across, exclude, step=step
    )
    line = _fit_line(points, False, priors.edge_tolerance_mm * mm, len(across))
    return _bowed(line, points, direction, priors.edge_tolerance_mm * mm, mm) if bow else line


def _bowed(line: Line, points: list, direction: int, tolerance: float, mm: float) -> Line:
    """``line`` (an endplate, y = a x + b) with a bow: a parabola through its edge ``points``
    (along, across, strength) within ENDPLATE_BOW_REACH_MM of it, refitted on those within
    ``tolerance`` of the curve, when the curve is concave towards the disc (its middle nearer
    the body's: ``direction`` -1 for the superior endplate, whose middle is then lower, 1 for the
    inferior), sags at most ENDPLATE_MAX_SAG_MM and moves the outline at most that far out of the
    line, and agrees with ENDPLATE_BOW_GAIN of the lines searched more than the line; else
    ``line``. The curve is held to the span of the points it agrees with (:meth:`Bow.beyond`).
    Its support stays the line's, which the wall's confidence counts
    (:func:`monitor.vision.confidence.outline_support`)."""
    if len(points) < 8:
        return line
    along, across, strength = np.array(points).T
    t0 = 0.5 * (float(across.min()) + float(across.max()))
    agree = np.abs(along - line.at(across)) < ENDPLATE_BOW_REACH_MM * mm
    for _ in range(3):
        if agree.sum() < 6 or np.ptp(across[agree]) <= 0:
            return line
        c, a, v = np.polyfit(across[agree] - t0, along[agree], 2, w=np.sqrt(strength[agree]))
        agree = np.abs(along - np.polyval((c, a, v), across - t0)) < tolerance
    half = 0.5 * float(np.ptp(across[agree])) if agree.any() else 0.0
    sag_mm = float(c) * half**2 / mm  # the ends' offset from the middle's tangent, + downwards
    concave = direction * sag_mm > 0  # superior: the ends above the middle; inferior: below
    gain = int(agree.sum()) - line.support
    if not concave or abs(sag_mm) > ENDPLATE_MAX_SAG_MM or gain < ENDPLATE_BOW_GAIN * line.searched:
        return line
    lo, hi = float(across[agree].min()), float(across[agree].max())
    bow = Bow(float(a), float(v - a * t0), float(c), t0, direction, lo, hi)
    if float(bow.beyond(line, np.array([lo, hi])).max()) > ENDPLATE_MAX_SAG_MM * mm:
        return line  # the outline would move further than any endplate sags
    return replace(line, bow=bow)


def find_lateral_body(
    att: np.ndarray,
    cannula: Cannula,
    pixel_mm: float,
    exclude: np.ndarray | None = None,
    priors: AnatomyPriors = DEFAULT_PRIORS,
) -> LateralBody:
    """Posterior and anterior walls and endplates of the body the cannula tip is in.

    ``exclude`` masks pixels to ignore (all cannulas); by default this cannula's shaft.
    """
    mm = 1.0 / pixel_mm
    p = priors
    smooth = cv2.GaussianBlur(att, (0, 0), max(1.0, EDGE_BLUR_MM * mm))
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / 8
    tx, ty = cannula.tip
    sign = 1 if cannula.direction[0] >= 0 else -1  # the cannula comes in from posterior
    exclude = cannula.mask if exclude is None else exclude
    step = (smooth, int(round(3 * mm)))
    # Endplates first (they bound the rows searched for the walls): falls going up and down.
    cols = np.linspace(
        tx - sign * ENDPLATE_BEHIND_TIP_MM * mm, tx + sign * ENDPLATE_AHEAD_OF_TIP_MM * mm, PROFILES
    )
    sup, inf = (_plate(gy, (tx, ty), direction, cols, exclude, mm, step, p) for direction in (-1, 1))
    top, bottom = float(sup.at(tx)), float(inf.at(tx))
    if bottom - top < p.min_endplate_gap_mm * mm:
        raise NotFound(f"endplates closer than {p.min_endplate_gap_mm:g} mm")
    margin = WALL_ROWS_MARGIN * (bottom - top)
    rows = np.linspace(top + margin, bottom - margin, PROFILES)
    walls = _span(p.wall_search_mm, mm)
    posterior = _fit_line(
        _edge_points(gx, (tx, ty), 0, sign, walls, rows, exclude, cortex=_cortex(smooth, mm)),
        True,
        p.posterior_tolerance_mm * mm,
        len(rows),
    )
    anterior = _fit_line(
        _edge_points(gx, (tx, ty), 0, -sign, walls, rows, exclude), True, p.edge_tolerance_mm * mm, len(rows)
    )
    # The endplates again, now across the whole body between its walls: fitted only
    # around the tip, a concave or wedged endplate's line can miss the posterior
    # corner by millimetres, and that corner is where a disc leak or the front is.
    # Kept where they agree with the first fit at the tip (within 1.5 mm).
    ends = sorted((float(anterior.at(ty)), float(posterior.at(ty))))
    across = np.linspace(ends[0] + 2 * mm, ends[1] - 2 * mm, PROFILES_ACROSS)
    refits = []
    for plate, direction in ((sup, -1), (inf, 1)):
        try:
            wider = _plate(gy, (tx, ty), direction, across, exclude, mm, step, p, bow=True)
        except NotFound:
            wider = plate
        agrees = abs(float(wider.at(tx)) - float(plate.at(tx))) <= p.endplate_agreement_mm * mm
        refits.append(wider if agrees else plate)
    sup, inf = refits
    body = LateralBody(posterior, anterior, sup, inf, sign)
    _check_plausible(body, cannula, pixel_mm, p)
    return body


def _check_plausible(body: LateralBody, cannula: Cannula, pixel_mm: float, priors: AnatomyPriors) -> None:
    """Refuse an outline no vertebral body has: a wrong wall would give false millimetres.

    Adult T5-L5 bodies are 20-50 mm deep and 14-35 mm high (fractured ones lower),
    their walls within ~25 degrees of perpendicular to the endplates, and the
    cannula tip lies inside, in front of the posterior wall.
    """
    tx, ty = cannula.tip
    depth = abs(float(body.posterior.at(ty)) - float(body.anterior.at(ty))) * pixel_mm
    height = (float(body.inferior.at(tx)) - float(body.superior.at(tx))) * pixel_mm
    tilt = np.degrees(abs(np.arctan(body.posterior.a) + np.arctan(body.superior.a)))
    tip_inside = (
        body.posterior_sign * body.posterior.signed_distance(np.float32(tx), np.float32(ty)) * pixel_mm
    )
    problems = []
    p = priors
    if not p.depth_mm[0] <= depth <= p.depth_mm[1]:
        problems.append(f"depth {depth:.0f} mm")
    if not p.height_mm[0] <= height <= p.height_mm[1]:
        problems.append(f"height {height:.0f} mm")
    if tilt > p.max_wall_tilt_deg:
        problems.append(f"wall {tilt:.0f} degrees off perpendicular to the endplates")
    if tip_inside < p.min_tip_inside_mm:
        problems.append(f"cannula tip {tip_inside:.1f} mm from the wall")
    from_plate = _tip_from_endplates(body.superior, body.inferior, (tx, ty), pixel_mm)
    if from_plate < p.min_tip_from_endplate_mm:
        problems.append(f"cannula tip {from_plate:.1f} mm from an endplate")
    if problems:
        raise NotFound("implausible vertebral body (" + ", ".join(problems) + ")")


def _tip_from_endplates(superior: Line, inferior: Line, tip: tuple[float, float], pixel_mm: float) -> float:
    """How far inside the nearer endplate the tip ``(x, y)`` lies, in mm (negative: outside);
    endplates are lines y(x) in the same pixels."""
    tx, ty = tip
    return min(ty - float(superior.at(tx)), float(inferior.at(tx)) - ty) * pixel_mm


def find_ap_body(
    att: np.ndarray,
    cannula: Cannula,
    pixel_mm: float,
    exclude: np.ndarray | None = None,
    priors: AnatomyPriors = DEFAULT_PRIORS,
) -> ApBody:
    """Lateral walls and endplates of the body the cannula tip is in, in the AP view.

    The body is symmetric about the midline (spinous process, pedicles), so the
    midline is found first as the column of best mirror symmetry near the tip;
    the lateral walls are then the strongest falls 10-30 mm out from it, which
    keeps pedicle rings and the spinous process from being taken for walls.
    """
    # Over 60 lines on purpose: the midline, then the endplates and the walls about it, each
    # found from the last, sharing the smoothed image, its gradients and the excluded pixels.
    mm = 1.0 / pixel_mm
    p = priors
    smooth = cv2.GaussianBlur(att, (0, 0), max(1.0, EDGE_BLUR_MM * mm))
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / 8
    tx, ty = cannula.tip
    exclude = cannula.mask if exclude is None else exclude
    h, w = att.shape
    rows = slice(int(max(0, ty - AP_MIDLINE_BAND_MM * mm)), int(min(h, ty + AP_MIDLINE_BAND_MM * mm)))
    band = smooth[rows]
    masked = np.where(exclude[rows], np.nan, band)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns hidden by a cannula are NaN
        profile = np.nanmedian(masked, axis=0)
    reach = int(p.midline_reach_mm * mm)
    best_m, best_score = None, np.inf
    for m in range(int(tx - p.midline_search_mm * mm), int(tx + p.midline_search_mm * mm) + 1):
        if m - reach < 0 or m + reach >= w:
            continue
        left, right = profile[m - reach : m][::-1], profile[m + 1 : m + 1 + reach]
        ok = ~(np.isnan(left) | np.isnan(right))
        if ok.sum() < reach // 2:
            continue
        score = float(np.mean(np.abs(left[ok] - right[ok])))
        if score < best_score:
            best_m, best_score = m, score
    if best_m is None:
        raise NotFound("no midline: the body is too close to the image edge")
    cols = np.linspace(best_m - AP_ENDPLATE_COLUMNS_MM * mm, best_m + AP_ENDPLATE_COLUMNS_MM * mm, PROFILES)
    tolerance = p.edge_tolerance_mm * mm
    plates = _span(p.endplate_search_mm, mm)
    sup = _fit_line(
        _edge_points(gy, (best_m, ty), 1, -1, plates, cols, exclude, first=False), False, tolerance, len(cols)
    )
    inf = _fit_line(
        _edge_points(gy, (best_m, ty), 1, 1, plates, cols, exclude, first=False), False, tolerance, len(cols)
    )
    top, bottom = float(sup.at(best_m)), float(inf.at(best_m))
    if bottom - top < p.min_endplate_gap_mm * mm:
        raise NotFound(f"endplates closer than {p.min_endplate_gap_mm:g} mm")
    margin = AP_WALL_ROWS_MARGIN * (bottom - top)
    rows = np.linspace(top + margin, bottom - margin, PROFILES)
    span = _span(p.ap_wall_search_mm, mm)
    left = _fit_line(
        _edge_points(gx, (best_m, ty), 0, -1, span, rows, exclude, first=False), True, tolerance, len(rows)
    )
    right = _fit_line(
        _edge_points(gx, (best_m, ty), 0, 1, span, rows, exclude, first=False), True, tolerance, len(rows)
    )
    # The tip was put inside the body through a pedicle: an outline that leaves it on
    # or outside a lateral wall is a wrong midline, and would call all cement a leak.
    margin = min(tx - float(left.at(ty)), float(right.at(ty)) - tx)
    if margin < p.min_tip_inside_mm * mm:
        raise NotFound(f"the cannula tip is not inside the body found ({margin / mm:.1f} mm from a wall)")
    from_plate = _tip_from_endplates(sup, inf, (tx, ty), pixel_mm)
    if from_plate < p.min_tip_from_endplate_mm:
        raise NotFound(f"the cannula tip is {from_plate:.1f} mm from an endplate found: not the body's")
    height = (float(inf.at(tx)) - float(sup.at(tx))) * pixel_mm
    width = (float(right.at(ty)) - float(left.at(ty))) * pixel_mm
    if height > p.max_ap_height_to_width * width:
        raise NotFound(
            f"implausible AP outline: {height:.0f} mm high for {width:.0f} mm wide"
            " (a vertebral body is wider than tall: an endplate found is not the body's)"
        )
    return ApBody(left, right, sup, inf)
