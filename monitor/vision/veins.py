"""Cement in a vein too faint to segment: a thin line of added attenuation leaving the bolus.

Cement that enters a vein fills a tube about a millimetre wide. Behind 20 cm of tissue, with
scatter and a hard beam, its image adds 0.02-0.03 to the log attenuation: under the
segmentation's threshold (five times the pixel noise, 0.05-0.07 on those recordings), so the
vein never enters the cement's mask, or enters it in pieces too small to count as a leak.
Averaged along its length, though, a line stands well out of the noise, which is what the eye
does when it sees a vein on a noisy frame. So the difference since the baseline is matched
against short segments in every direction, each less the brighter of two parallel segments
either side (a line stands above both its sides; an edge, above one only). Lines
:data:`VEIN_MIN_LENGTH_MM` long whose near end lies within :data:`VEIN_REACH_MM` of the cement
are veins: a vein fills from the bolus.

What must not read as a vein:
- the bolus's own rim and the steel, kept :data:`VEIN_CLEAR_MM` away;
- the edges the breathing's residual misregistration leaves at the baseline's strong edges. A
  line must stand :data:`VEIN_OVER_EDGE` times above what
  :data:`~monitor.vision.cement.REGISTRATION_UNCERTAINTY_PX` of the baseline's gradient makes.
  On two venous cases the vein stood 15-65 times above it, such edges 0.7-3 times;
- an edge that moved by more than that: its light side rises as a line while its dense side
  dips under the baseline (cement only adds attenuation), by :data:`VEIN_SIDE_DIP` of the
  line's rise and :data:`VEIN_SIDE_ASYMMETRY` below the other side (a vein on a background
  below zero dips on both), on :data:`VEIN_MOVED_SHARE` of its pixels. An endplate in the AP
  view of dense-cement renders rose 0.06 on its light side and fell 0.10 on its dense side,
  read as a vein leaving the bolus: 17-100 % of such lines' pixels were so, 0-20 % of veins'
  on 27 venous renders (tuning seeds) of an independent review;
- a line already there, whose contrast changed (an endplate or a cortex when brightness control
  or the beam's kVp moves, the lumen of a cannula not found filling with cement). On
  :data:`VEIN_NEW_SHARE` of its pixels a vein must stand :data:`VEIN_OVER_BASELINE` times above
  the baseline's own line response there (a vein may cross an old line, but does not run along
  one), nor lie within :data:`VEIN_BESIDE_CHANGE_MM` of an old line that changed (an endplate
  seen as two lines changes on both; the simple world's box-shaped bodies showed such a line
  beside an endplate). On the tuning seeds' veins 80-99 % of the pixels did; on the lines seen
  before any cement left (endplates, a cannula's lumen, the bolus's faint rim) 0-67 %.

Pure: arrays over a region of interest in working pixels in, a bool mask of the same shape out.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from monitor.vision.cement import REGISTRATION_UNCERTAINTY_PX

VEIN_SEGMENT_MM = 4.0  # the matched segment's length
VEIN_SIDE_MM = 1.5  # how far either side of it the background is read
VEIN_DIRECTIONS = 12  # 15 degrees apart
VEIN_SIGMAS = 5.0  # a line's response over the response's own robust spread
VEIN_OVER_EDGE = 5.0  # and over what the registration's uncertainty makes of the baseline's edges
VEIN_OVER_BASELINE = 5.0  # a pixel over the baseline's own line there (an endplate, a cannula not found)
VEIN_SIDE_DIP = 0.5  # nor a side reading under minus this share of the line's rise ...
VEIN_SIDE_ASYMMETRY = 1.0  # ... and under the other by this share of it (an edge moved)
VEIN_MOVED_SHARE = 0.3  # a line this share of whose pixels are so is an edge moved
VEIN_NEW_SHARE = 0.75  # the share of a vein's pixels that must be so (a vein may cross a line)
VEIN_BESIDE_CHANGE_MM = 3.0  # nor this near a line of the baseline that changed
VEIN_MIN_LENGTH_MM = 5.0  # a vein's cast this long (the long side of its smallest enclosing box)
VEIN_REACH_MM = 5.0  # its near end this close to the cement
VEIN_AWAY_SHARE = 0.5  # and it leads away from the cement: its far end further by half its length
VEIN_CLEAR_MM = 1.5  # away from the cement's rim and the steel
VEIN_SEARCH_MM = 12.0  # looked for this far around the cement (reach and length, with room)
VEIN_FROM_MM2 = 3.0  # around pieces of cement at least this large (a vein leaves a bolus, not a speck)
VEIN_WORK_PIXEL_MM = 0.45  # read on a grid about this coarse (a vein is 2 such pixels wide)


@functools.lru_cache(maxsize=8)
def _segments(pixel_mm: float) -> tuple[tuple[np.ndarray, tuple[int, int]], ...]:
    """Per direction: the segment's kernel (sums to 1) and the offset (dx, dy), whole pixels, of a
    parallel segment VEIN_SIDE_MM to one side."""
    length = max(5.0, VEIN_SEGMENT_MM / pixel_mm)
    size = int(np.ceil(length)) | 1  # 9 pixels at 0.45 mm: under 11, filter2D convolves directly
    c = size // 2
    out = []
    for k in range(VEIN_DIRECTIONS):
        theta = np.pi * k / VEIN_DIRECTIONS
        along = np.array([np.cos(theta), np.sin(theta)])
        normal = np.array([-np.sin(theta), np.cos(theta)])
        kernel = np.zeros((size, size), np.float32)
        ends = [np.round((c + sign * along * length / 2) * 16).astype(int) for sign in (-1, 1)]
        cv2.line(kernel, tuple(ends[0]), tuple(ends[1]), 1.0, 1, cv2.LINE_AA, 4)
        offset = np.round(normal * VEIN_SIDE_MM / pixel_mm).astype(int)
        out.append((kernel / kernel.sum(), (int(offset[0]), int(offset[1]))))
    return tuple(out)


def _beside(difference: np.ndarray, pixel_mm: float):
    """Per direction of :func:`_segments`: the mean along the segment centred at each pixel of
    ``difference`` and the means along the parallel segments either side, (h, w) float32 each."""
    h, w = difference.shape
    for kernel, (dx, dy) in _segments(round(pixel_mm, 3)):
        pad = max(abs(dx), abs(dy))
        mean = cv2.filter2D(difference, cv2.CV_32F, kernel, borderType=cv2.BORDER_REPLICATE)
        padded = cv2.copyMakeBorder(mean, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        one = padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]  # the mean dx, dy away
        other = padded[pad - dy : pad - dy + h, pad - dx : pad - dx + w]
        yield mean, one, other


def line_response(difference: np.ndarray, pixel_mm: float) -> np.ndarray:
    """How far each pixel of ``difference`` (h, w, log attenuation) lies on a line brighter than
    both its sides: the best over directions of the mean along a VEIN_SEGMENT_MM segment
    centred there, less the larger of the means along the parallel segments VEIN_SIDE_MM either
    side. Log attenuation, (h, w) float32; negative off lines."""
    best = np.full(difference.shape, -np.inf, np.float32)
    for mean, one, other in _beside(difference, pixel_mm):
        np.maximum(best, mean - np.maximum(one, other), out=best)
    return best


def line_sides(
    difference: np.ndarray, pixel_mm: float, box: tuple[slice, slice]
) -> tuple[np.ndarray, np.ndarray]:
    """Over ``box`` of ``difference``: the means of the lower and of the higher of the two
    parallel segments of :func:`line_response`, in the direction it is best in, float32 each of
    the box's shape (read on the box and a border wide enough for every segment, so as
    over the whole image)."""
    reach = max(k.shape[0] // 2 + max(abs(dx), abs(dy)) for k, (dx, dy) in _segments(round(pixel_mm, 3))) + 1
    rows, cols = difference.shape
    y0, y1 = max(0, box[0].start - reach), min(rows, box[0].stop + reach)
    x0, x1 = max(0, box[1].start - reach), min(cols, box[1].stop + reach)
    inner = (slice(box[0].start - y0, box[0].stop - y0), slice(box[1].start - x0, box[1].stop - x0))
    window = difference[y0:y1, x0:x1]
    best = np.full(window.shape, -np.inf, np.float32)
    lower = np.zeros(window.shape, np.float32)
    higher = np.zeros(window.shape, np.float32)
    for mean, one, other in _beside(window, pixel_mm):
        high = np.maximum(one, other)
        here = mean - high
        better = here > best
        np.copyto(best, here, where=better)
        np.copyto(lower, np.minimum(one, other), where=better)
        np.copyto(higher, high, where=better)
    return lower[inner], higher[inner]


def find_vein_lines(
    difference: np.ndarray,
    baseline: np.ndarray,
    gradient: np.ndarray,
    cement: np.ndarray,
    exclude: np.ndarray,
    pixel_mm: float,
) -> np.ndarray:
    """The pixels of faint veins leaving the cement (see the module's docstring).

    ``difference``: the smoothed log attenuation added since the baseline; ``baseline``: the
    baseline's log attenuation; ``gradient``: its gradient magnitude per pixel; ``cement``
    (bool): the cement segmented;
    ``exclude`` (bool): what is not read (steel, the region's edge); all (h, w) over the same
    region, ``pixel_mm`` its working pixel. Returns a bool (h, w) mask, empty with no cement.
    """
    found = np.zeros(cement.shape, bool)
    if not cement.any():
        return found
    # around the cement a vein can leave, not every speck (two specks in opposite corners made
    # the search cover the whole region: 8-18 ms)
    count, _, stats, _ = cv2.connectedComponentsWithStats(cement.view(np.uint8), connectivity=8)
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] * pixel_mm**2 >= VEIN_FROM_MM2)
    big = big[big > 0]
    if big.size == 0:
        return found
    pad = int(round(VEIN_SEARCH_MM / pixel_mm))
    x, y, w, h = (stats[big, k] for k in range(4))
    rows, cols = cement.shape
    window = (
        slice(max(0, int(y.min()) - pad), min(rows, int((y + h).max()) + pad)),
        slice(max(0, int(x.min()) - pad), min(cols, int((x + w).max()) + pad)),
    )
    h, w = cement[window].shape
    factor = max(1.0, VEIN_WORK_PIXEL_MM / pixel_mm)
    small = (max(1, int(round(w / factor))), max(1, int(round(h / factor))))

    def coarse(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image[window].astype(np.float32), small, interpolation=cv2.INTER_AREA)

    def touched(mask: np.ndarray) -> np.ndarray:  # coarse pixels holding any of ``mask``
        scaled = mask[window].view(np.uint8) * np.uint8(255)
        return cv2.resize(scaled, small, interpolation=cv2.INTER_AREA) > 0

    px = round(pixel_mm * w / small[0], 3)
    small_difference = coarse(difference)  # read for the lines, and again for their sides
    response = line_response(small_difference, px)
    clear = max(1, int(round(VEIN_CLEAR_MM / px)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * clear + 1, 2 * clear + 1))
    # The bolus without its thin parts (a vein the mask holds in part is still read as a line),
    # and its rim, kept out.
    bolus = cv2.morphologyEx(touched(cement).view(np.uint8), cv2.MORPH_OPEN, disc).astype(bool)
    keepout = cv2.dilate((bolus | touched(exclude)).view(np.uint8), disc).astype(bool)
    sample = response[~keepout]
    if sample.size < 50:
        return found
    spread = 1.4826 * float(np.median(np.abs(sample - np.median(sample))))
    edge = VEIN_OVER_EDGE * REGISTRATION_UNCERTAINTY_PX * coarse(gradient)
    line = (response > VEIN_SIGMAS * spread) & (response > edge) & ~keepout
    if not line.any():  # most frames: no distance map to make
        return found
    from_cement = cv2.distanceTransform((~bolus).astype(np.uint8), cv2.DIST_L2, 3) * px
    lines = _leaving(line, from_cement, px)
    if lines.any():  # only then (rarely): the baseline's own lines, where a new one may be their change
        new = response > VEIN_OVER_BASELINE * np.maximum(line_response(coarse(baseline), px), 0.0)
        # and beside an old line that changed: its other surface, or its neighbour, changed with it
        beside = max(1, int(round(VEIN_BESIDE_CHANGE_MM / px)))
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * beside + 1, 2 * beside + 1))
        changed = _leaving((response > VEIN_SIGMAS * spread) & ~new & ~keepout, None, px)
        new &= ~cv2.dilate(changed.astype(np.uint8), disc).astype(bool)
        # nor an edge of the baseline that moved: one side dipping under the line, the other not,
        # its light half risen (a vein on a background below zero, as behind a wall, dips on both)
        rows, cols = np.nonzero(lines)
        box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
        lower, higher = line_sides(small_difference, px, box)
        there = response[box]
        moved = np.zeros_like(line)
        moved[box] = (lower < -VEIN_SIDE_DIP * there) & (higher - lower > VEIN_SIDE_ASYMMETRY * there)
        lines = _leaving(line, from_cement, px, new, moved)
    if lines.any():
        full = cv2.resize(lines.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        found[window] = full.astype(bool)
    return found


def _leaving(
    line: np.ndarray,
    from_cement: np.ndarray | None,
    pixel_mm: float,
    new: np.ndarray | None = None,
    moved: np.ndarray | None = None,
) -> np.ndarray:
    """The pieces of ``line`` (bool) VEIN_MIN_LENGTH_MM long whose nearest pixel lies within
    VEIN_REACH_MM of the cement (``from_cement``: each pixel's distance from it, mm; None: any
    piece that long); with ``new`` (bool: no line in the baseline there), only those
    VEIN_NEW_SHARE of whose pixels are; with ``moved`` (bool: an edge of the baseline moved
    there), only those under VEIN_MOVED_SHARE of whose pixels are."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(line.view(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    x, y, w, h = (stats[:, k] for k in range(4))
    # no piece is longer than its box's diagonal: most (the noise's specks) end here, cheaply
    for i in np.flatnonzero(np.hypot(w, h) * pixel_mm >= VEIN_MIN_LENGTH_MM):
        if i == 0:
            continue
        box = (slice(y[i], y[i] + h[i]), slice(x[i], x[i] + w[i]))
        piece = labels[box] == i
        rows, cols = np.nonzero(piece)
        (_, _), sides, _ = cv2.minAreaRect(np.column_stack((cols, rows)).astype(np.float32))
        if max(sides) * pixel_mm < VEIN_MIN_LENGTH_MM:
            continue
        if from_cement is not None:
            away = from_cement[box][piece]
            near, far = float(away.min()), float(away.max())
            if near > VEIN_REACH_MM or far - near < VEIN_AWAY_SHARE * max(sides) * pixel_mm:
                continue
        keep[i] = new is None or float(new[box][piece].mean()) >= VEIN_NEW_SHARE
        if moved is not None and keep[i]:
            keep[i] = float(moved[box][piece].mean()) < VEIN_MOVED_SHARE
    return keep[labels]
