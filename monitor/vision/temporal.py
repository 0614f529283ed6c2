"""The C-arm's recursive temporal filter: measured from the images' noise, and undone.

Fluoroscopy systems smooth their noise over time with a recursive filter: each frame shown
is ``(1 - w)`` of the new exposure plus ``w`` of the last frame shown (``w`` 0.3-0.6 is usual;
no standard DICOM tag carries it). Cement moving at v pixels a frame is then shown about
``w / (1 - w)`` frames late: a front 0.5 mm a frame short of where it is at w = 0.5. On the
realistic world's reporting seeds the distance read 0.3-0.8 mm long near the 5 mm line on
filtered cases and leaks alarmed up to 3 frames after their onset.

``w`` is read from the noise while nothing moves but breathing (no cement seen yet). Frame
differences of a still scene filtered so have covariances at lags 1 and 2 of c1 = -g (1-w)^2
and c2 = -g w (1-w)^2 over a variance v = 2 g (1-w) (white noise differenced: -1/2 and 0 of
v); a scene moving smoothly adds about the same to all three, so (c1 - c2) / (v - c1) =
-(1-w)^2 / (3-w) gives w whatever the breathing adds (the lag-1 correlation alone read 0.34
on an unfiltered case of low noise breathing 2 mm at 10 frames/s). They are read on the
region's flattest fifth of pixels (breathing moves edges, not flat bone), high-passed
(exposure changes and scatter are smooth). The first frame of a run is left out: the filter
starts on it (nothing before it to blend), and its difference to the next is a start-up.
A frame out of sequence (one skipped as unreadable, a dropped one, a restart) starts a
new run: its difference to the last frame read would not be one frame's.

Undoing it is exact where the filter blends and the analyzer reads alike: the intensity of a
linear detector, or of a LOG one whose scale was measured (a guessed scale reads a power of
the intensity, where the undo is not the filter's inverse: left alone). ``new = (shown - w *
previous shown) / (1 - w)``, frame by frame, kept within a factor of UNDO_RANGE of the frame
shown. What it costs is the noise the filter took away: the frames come back as noisy as an
unfiltered system's, which the cement's threshold measures on each frame.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from monitor.vision.stats import median

MIN_PAIRS = 2  # lag-2 products of frame differences read before w is used
MAX_PAIRS = 8  # ... and after which it is left as read (a system setting, fixed for the run)
FLAT_PERCENTILE = 20  # the flat pixels: the weakest fifth of the gradients (breathing moves edges)
UNDO_ABOVE = 0.2  # a w read under this is taken as no filter (unfiltered streams read 0.0-0.2)
# Undone as read, to at most UNDO_CAP (beyond it the noise would come back over 5x its variance
# after the filter). How well w is read (the realistic world's tuning seeds 5000-5035, 71 views
# with a weight read before the cement): 0.00 over the truth at the median, 0.04 at the 90th
# percentile, at most 0.12 over and 0.28 under; 0.00-0.04 on the simple world's 30 unfiltered
# cases (there, the lag-1 estimate alone, without the motion cancelled, read 0.34 on one case of
# low noise breathing 2 mm at 10 frames/s). Undoing 0.7 of it, to 0.5, measured the same on
# those seeds to within one case (leak sites right 11 against 10 of 12; volume median 23.3
# against 23.0 %): undone in full, a filter's whole lag goes.
UNDO_CAP = 0.7
HIGH_PASS_PX = 1.0  # sigma of the smooth part taken out of each difference (working pixels)
UNDO_RANGE = 4.0  # an undone pixel is kept within 1/4-4x the pixel shown (noise, a guessed scale)
# A frame that changed from the last by under this share of the usual change between frames (the
# median relative difference, mostly noise, over the last 32) is a held frame, not a new exposure (a
# last-image hold, a frame sent twice): the run breaks there, and the first new exposure after it
# is not blended with the held image, which the C-arm's filter may not have been.
HELD_BELOW = 0.3
HELD_SAMPLE = 4  # the change is read on every 4th pixel each way (cheap; noise is everywhere)
# A frame is checked for being no image (blank, saturated: analysis._unusable) or a repeat of the
# last (HeldImages) on one sample of it: every this many pixels each way.
FRAME_SAMPLE = 4


class RecursiveFilter:
    """The recursive filter's weight, read from the frames' noise, and its inverse.

    Feed it every frame's measured intensity over the region (working pixels, (h, w)
    float32) in order through :meth:`unfilter`, with its frame number and the pixels to leave
    out of the estimate (the steel). ``weight`` is None until MIN_PAIRS lag-2 products have
    been read, or when what was read is no filter's (frames repeated; a run with a non-finite
    value is dropped).
    ``allowed`` False: w is read but never undone (an intensity the undo would not invert).
    ``fixed``: a weight read before a restart (from the session log), used as read."""

    def __init__(self, allowed: bool = True):
        self.allowed = allowed
        self.fixed: float | None = None  # a weight read before a restart, kept as read
        self._changes: deque[float] = deque(maxlen=32)  # the median relative change between frames
        self._after_hold = False  # the last frame was held: the next is not blended with it
        self.first_undone: int | None = None  # the first frame undone
        self._previous: np.ndarray | None = None  # the last frame shown (intensity)
        self._frame: int | None = None  # its number
        self._differences: list[np.ndarray] = []  # the last two high-passed differences, newest last
        self._flat: np.ndarray | None = None
        self._sums = np.zeros(3)  # sum of d_t.d_t, d_t.d_t-1, d_t.d_t-2 over the products read
        self._counts = np.zeros(3, int)

    @property
    def pairs(self) -> int:
        """The lag-2 products read (each needs four frames in a row)."""
        return int(self._counts[2])

    @property
    def weight(self) -> float | None:
        """w (0: no filter), once read; None before, or when the covariances are no filter's.

        With r = (c1 - c2) / (v - c1) = -(1-w)^2 / (3-w), w is the root in [0, 1] of
        w^2 - (2 + r) w + (1 + 3 r) = 0: r runs from -1/3 (no filter) to 0 (w = 1). Outside
        that (r >= 0: frames repeated or held, c1 >= 0: no noise differenced) nothing is read."""
        if self.fixed is not None:
            return self.fixed
        if self.pairs < MIN_PAIRS or self._counts[0] == 0:
            return None
        v, c1, c2 = self._sums / np.maximum(self._counts, 1)
        if not np.isfinite([v, c1, c2]).all() or c1 >= 0 or v - c1 <= 0:
            return None
        r = (c1 - c2) / (v - c1)
        if r >= 0:
            return None
        r = max(r, -1.0 / 3.0)  # more negative than white noise: noise, read as no filter
        w = ((2.0 + r) - np.sqrt(max(r * (r - 8.0), 0.0))) / 2.0
        return float(np.clip(w, 0.0, 1.0))

    @property
    def undoing(self) -> float:
        """The w undone on frames now: 0 while unread, under UNDO_ABOVE, or not ``allowed``."""
        w = self.weight
        if not self.allowed or w is None or w < UNDO_ABOVE:
            return 0.0
        return min(w, UNDO_CAP)

    def wanted(self, still: bool) -> bool:
        """Whether a frame has anything to give or to take: w still being read on a ``still``
        frame, or a filter being undone. Otherwise the caller reads its frames as they are."""
        return self.undoing > 0 or (still and self.fixed is None and self.pairs < MAX_PAIRS)

    def restart(self) -> None:
        """The region changed or the run broke: forget the last frames, keep what was read."""
        self._previous, self._frame, self._flat = None, None, None
        self._differences = []

    def unfilter(
        self, shown: np.ndarray, frame: int, leave_out: np.ndarray | None = None, still: bool = True
    ) -> np.ndarray:
        """Frame number ``frame`` as the detector saw it before the filter (intensity, same shape
        as ``shown``), w read further from its noise first while the scene is ``still`` (no
        cement seen yet: growing cement's differences run on from frame to frame as a filter's
        do); ``leave_out`` (bool, same shape): pixels whose change is not noise (steel). A frame
        that does not follow the last one (a gap, a new region) starts a new run, returned as
        shown."""
        if self._previous is None or self._previous.shape != shown.shape or frame != self._frame + 1:
            self.restart()
        previous = self._previous
        after_hold, self._after_hold = self._after_hold, False
        if previous is not None:
            change = self._change(shown, previous)
            if self._changes and change < HELD_BELOW * median(np.fromiter(self._changes, float)):
                self.restart()  # held: no difference to read; the next frame is not undone across it
                self._previous, self._frame, self._after_hold = shown, frame, True
                return shown
            self._changes.append(change)
            if still and self.pairs < MAX_PAIRS and not after_hold:
                self._read(shown, previous, leave_out)
        self._previous, self._frame = shown, frame
        w = self.undoing
        if previous is None or after_hold or w == 0.0:
            return shown
        if self.first_undone is None:
            self.first_undone = frame
        undone = cv2.addWeighted(shown, 1.0 / (1.0 - w), previous, -w / (1.0 - w), 0.0)
        return np.clip(undone, shown / np.float32(UNDO_RANGE), shown * np.float32(UNDO_RANGE), out=undone)

    @staticmethod
    def _change(shown: np.ndarray, previous: np.ndarray) -> float:
        """The median relative change between two frames, on every HELD_SAMPLE-th pixel."""
        a, b = shown[::HELD_SAMPLE, ::HELD_SAMPLE], previous[::HELD_SAMPLE, ::HELD_SAMPLE]
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = np.abs(a - b) / np.maximum(np.abs(a + b), 1e-12)
        finite = relative[np.isfinite(relative)]
        return median(finite) if finite.size else 0.0

    def _read(self, shown: np.ndarray, previous: np.ndarray, leave_out: np.ndarray | None) -> None:
        mean = np.maximum(0.5 * (shown + previous), 1e-6)
        if self._flat is None:
            smooth = cv2.GaussianBlur(mean, (0, 0), 1.0)
            magnitude = cv2.magnitude(
                cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
            )
            flat = magnitude < np.percentile(magnitude, FLAT_PERCENTILE)
            self._flat = flat if leave_out is None else flat & ~leave_out
            return  # the first difference of the run is the filter's start-up: read from the next one on
        if self._flat.sum() < 200:
            return
        with np.errstate(invalid="ignore", over="ignore"):  # a non-finite pixel is caught below
            relative = (shown - previous) / mean
            difference = (relative - cv2.GaussianBlur(relative, (0, 0), HIGH_PASS_PX))[self._flat]
        products = [
            float(np.dot(difference, before)) for before in [difference, *reversed(self._differences)]
        ]
        if not np.isfinite(products).all():  # a non-finite pixel: this run says nothing
            self.restart()
            return
        for lag, product in enumerate(products):
            self._sums[lag] += product
            self._counts[lag] += 1
        self._differences = [*self._differences, difference][-2:]


# (CaseAnalyzer._heard, and the viewer's ViewState.view_silent_for: kept here, beside the frames'
# other timing rules, so that the viewer need not import the analysis.)
# A view is silent when the other view's frames go on and its own newest is older than this many of
# its usual steps between frames, and at least VIEW_SILENT_S: its outline and darkness are then an
# older moment's, which the cement has outgrown (an AP grabber unplugged at frame 19 of the bundled
# posterior-leak case left the level's volume at 2.40 mL (2.26-2.66) for 3.35 mL, said as two views'
# reading). 3 steps, so that a frame or two dropped is not a view lost; 1 s, as the stream's own
# stale limit.
VIEW_SILENT_STEPS = 3.0
VIEW_SILENT_S = 1.0


HELD_EQUAL_SHARE = 0.98  # of a frame's sample equal to the last's: a held image under text drawn
HELD_MIN_VALUES = 1000  # ... of at least this many values that are not the frame's extremes


class HeldImages:
    """Which frames of a stream repeat the last one exactly: the C-arm's last image held and sent
    again (a digital frame grabber while fluoroscopy is off), or a frame sent twice.

    Feed it every usable frame's sample (every FRAME_SAMPLE-th stored value each way, as
    PlaneAnalyzer.process takes it once for this and the blank check) in order through
    :meth:`held`: True when it equals the last frame's (0.05 ms at 1024 x 1024 on one core).
    No X-ray exposure repeats another's quantum noise on 65,000 pixels, so a new exposure is
    never held, whatever the noise, filtering or brightness control; and nothing is learnt
    from earlier frames, so nothing can lock on. A first version (session 73) judged a frame held
    when it changed by under 0.3 of the usual change between frames: one brightness step among
    the first frames made every later exposure read as held, and the monitor stopped checking
    (an independent review).

    A held image under a running clock or other text drawn on the screen repeats all but the
    text: held too where HELD_EQUAL_SHARE of the sample's values, those at its lowest or
    highest value left out (shutters, white or black text), equal the last frame's (an
    independent test's burned-in clock: 1.000 of them, every copy; consecutive exposures of the
    159 corpus and bundled recordings: at most 0.74, CT 5002's AP). What this
    misses: a hold sent through an analogue grabber, whose own noise changes every copy (on the
    bundled cases, a line noise of sd 1 changes frames about as much as their quantum noise).
    """

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None

    def held(self, sample: np.ndarray) -> bool:
        """Whether ``sample`` repeats the last one given; it is kept (the caller's own copy)."""
        previous, self._previous = self._previous, sample
        if previous is None or previous.shape != sample.shape:
            return False
        if np.array_equal(previous, sample):
            return True
        inner = (sample != sample.min()) & (sample != sample.max())
        count = np.count_nonzero(inner)
        return (
            count >= HELD_MIN_VALUES
            and np.count_nonzero((sample == previous) & inner) >= HELD_EQUAL_SHARE * count
        )
