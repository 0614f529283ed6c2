"""From a stream of frames to measurements and alarms, plane by plane.

:class:`PlaneAnalyzer` holds one plane's state: the pre-injection baseline
(the first frames, averaged after registration), the cannula and vertebral
body found on it, and a region of interest around the cannula tip. Each new
frame is registered to the baseline, differenced in the log domain, and
measured: cement, its front's distance to the posterior wall (lateral),
cement outside the body (both planes), and the volume it represents.
:class:`CaseAnalyzer` combines the planes, reconciles the two volume
estimates and drives the alarms.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from monitor.vision.alarms import PLANE_CHECKS, AlarmConfig, AlarmEngine
from monitor.vision.anatomy import BAND_WIDTHS, AnatomyPriors, ApBody, LateralBody
from monitor.vision.baseline import (
    EXCLUDED_ABOVE,
    LAYER_ATTENUATION,
    LAYER_EXCLUDED,
    LAYER_GRADIENT,
    LAYER_SLEEVE,
    SLEEVE_ABOVE,
    BaselineState,
    Comparison,
    compare_with_baseline,
    with_prior,
)
from monitor.vision.biplane import (
    DARKNESS_BENDS_UNDER,
    LEVEL_DARKNESS_AGREES_WITH_SHAPE,
    ONE_VIEW_SPREAD,
    SHAPE_MIN_ML,
    SHAPE_SPREAD,
    VolumeEstimate,
    biplane_volume_ml,
    bolus_outline,
    darkness_curve_exponent,
    darkness_share,
    darkness_volume,
    fused_volume,
    one_view_volume_ml,
    outline_through_steel,
    pieces_volume_ml,
    relative_outline,
    shape_of_truth,
    steel_bands,
)
from monitor.vision.body import MIN_BOX_SIDE_MM, body_from_box, body_from_wall, body_roi, shifted_body
from monitor.vision.caveats import Caveat, CaveatCode, render_status
from monitor.vision.cement import (
    DEFAULT_CEMENT_MU,
    CementMap,
    Registration,
    ShaftReading,
    growing_bolus,
    integrated_volume_ml,
    segment,
    sleeve_cement,
)
from monitor.vision.confidence import (
    FIRST_CEMENT_BEYOND_MM,
    FIRST_CEMENT_ML,
    MAX_WALL_SPREAD_MM,
    MIN_OUTLINE_SUPPORT,
)
from monitor.vision.drawing import overlay_geometry
from monitor.vision.lobes import find_disc_lobes
from monitor.vision.measure import (
    ApartReading,
    AxisProfile,
    BehindWall,
    DistanceMaps,
    Leak,
    TrackReading,
    axis_profile,
    find_apart_leaks,
    grown_from_tip,
    in_box,
    lobe_leaks,
    read_cement,
    read_shaft,
    read_track,
    vein_leaks,
)
from monitor.vision.pixels import PixelGrid, saturated_bright
from monitor.vision.plane_baseline import PlaneBaseline, learn_plane_baseline
from monitor.vision.scatter import (
    HALO_DECIDE_WEIGHT,
    HALO_RINGS_MM,
    NO_SCATTER_BELOW,
    SCATTER_SEEN_ABOVE,
    HaloEvidence,
    ScatterPhysics,
    primary_attenuation,
    roi_intensity,
)
from monitor.vision.stats import median, small_median, usual_step
from monitor.vision.temporal import (
    FRAME_SAMPLE,
    MAX_PAIRS,
    UNDO_ABOVE,
    VIEW_SILENT_S,
    VIEW_SILENT_STEPS,
    HeldImages,
    RecursiveFilter,
)
from monitor.vision.veins import find_vein_lines

# the other view's breathing is taken from its frame of the same instant or its frame before: at
# most this many of its usual steps before (not two) ...
BREATHING_ELSEWHERE_STEPS = 1.5
BREATHING_ELSEWHERE_S = 0.15  # ... and at most this long before (one frame at 7.5 frames/s)
# The other view's breathing is taken only once the two have moved alike (_breaths_agree): over
# BREATHING_PAIRS_MIN of the last BREATHING_PAIRS_KEPT frames both registered, this view moving
# BREATHING_MIN_RANGE_MM or more, with a slope on the other's within BREATHING_SLOPE
BREATHING_PAIRS_KEPT = 20
BREATHING_PAIRS_MIN = 5
BREATHING_MIN_RANGE_MM = 0.5
BREATHING_SLOPE = (0.75, 1.33)
MAX_VEINS_KEPT = 16  # places of veins read apart from the bolus kept, newest first
# A frame blurred by a sd over this (mm), or over BLUR_UNREADABLE_PX working pixels where there is
# no scale, is not read (blurred-frame): a cement edge blurred so much moves by as much where it
# is thresholded, and faint small leaks vanish into the blur
BLUR_UNREADABLE_MM = 1.0
BLUR_UNREADABLE_PX = 4.0
CLIPPED_SAID_ABOVE = 0.10  # share of a plane's region clipped white from which each result says so
CLIPPED_UNREADABLE_ABOVE = 0.80  # ... and over which the view is not read at all (see _unreadable)


# The level's volume said is held where the volume read falls under this share of the largest said
# on the level, from a largest of this (mL): cement does not go away (CaseAnalyzer._volume). Under
# half is no estimate's noise: replayed on the benchmark's volumes (frames of 0.5 mL or more), 0.5
# holds 10 frames of one reporting case (7010: 0.02x the truth, its exposure clipped), 8 of two
# tuning cases and 1 of the simple world's, and moves no median or p95 beyond 0.4 %; 0.7 holds 33
# tuning frames of 7 cases (noise, as often an over-read held as an under-read put right).
VOLUME_HOLD_SHARE = 0.5
VOLUME_HOLD_FROM_ML = 0.5

# Why a thin line is only a possible leak in a view that has not seen the level's cement grow from
# its start (PlaneAnalyzer's _decide_from_start: decided against, not yet decided, or no cannula
# found to decide by): new cement around cement already there shows lines along the old bolus's
# edge (late starts of the tuning cases raised false veins so), and a first bolus read a little
# wide can take a real start for a late one (5 of the 72 views of the tuning cases, one of them a
# vein's).
LINE_DOUBT = (
    "this view has not seen the level's cement grow from its start (one piece from the cannula's tip):"
    " the line may be the edge of cement already there"
)
# lateral: the outline_guess of a body drawn round the operator's wall where none was found
NOMINAL_OUTLINE = "no body was found: its endplates and anterior side are nominal"
LOBE_DOUBT = (
    "the level has a known cleft and no armed body outline in this view tells the disc from the"
    " cleft under the endplate, which the cement also fills as a lobe beyond the bolus"
)
# ... and an AP lobe while the lateral view's armed outline places the endplates: the lateral's lobe
# decides (PlaneAnalyzer._read_lobes)
LOBE_JUDGED_IN_LATERAL = (
    "the AP view cannot place the endplate; the lateral view's outline does, and its lobe does not"
    " reach past it as a leak must"
)
# ... and cement apart from the bolus, above or below it, read with no outline (PlaneAnalyzer.
# _read_apart) on such a level: a cleft on the endplate fills through channels too fine to see and
# shows as a film apart from the bolus, as cement in the disc does (two of six CT renders with a
# cleft laid on an endplate and no leak, session 58, one read so and one as a lobe)
CLEFT_APART_DOUBT = (
    "the level has a known cleft and no body outline places the endplate: cement apart from the"
    " bolus above or below it may be filling the cleft"
)
# ... and with an armed lateral outline, a lobe reaching less than leak_min_depth_mm beyond it: the
# outline's endplate lines lie 1-3 mm inside a biconcave body (measured on the tuning seeds,
# session 48), where "armed" vouches for the posterior wall only
LOBE_SHALLOW_DOUBT = (
    "the lateral lobe reaches only {reach_mm:.1f} mm past the endplate line found (a leak needs"
    " {depth_mm:g} mm): that line can lie 1-3 mm inside a biconcave body, so it may be cement filling"
    " a cleft just under the endplate"
)
LOBE_RISE_AGREES_MM = 3.0  # the two views' lobes lie as far from the bolus within this (or 30 %)
LINE_KEY = ":line"  # a view's lines at a site are confirmed by its lines, not by its other cement there
# ... and its cement apart from the bolus at the smaller size of a level whose darkness reads low
# (CaseAnalyzer.apart_leak_size_ml) by its cement apart only: outline cement is confirmed by
# readings of the configured size alone
APART_KEY = ":apart"


@dataclass(frozen=True)
class Physics:
    """What the room's X-ray physics is taken to be. A calibration profile sets it (see
    ``monitor.io.profile``); without one, these defaults."""

    cement_mu_per_mm: float = DEFAULT_CEMENT_MU  # the cement's effective attenuation, 1/mm
    scatter_fraction: float = 0.15  # scatter-to-primary ratio behind the spine
    scatter_sigma_mm: float = 20.0  # the scatter's Gaussian spread at the vertebra
    calibration: str | None = None  # the id of the profile these came from (None: the defaults)


@dataclass(frozen=True)
class Detection:
    """How cement, its front and leaks are told from noise: tuned on the tuning seeds only."""

    baseline_frames: int = 3  # averaged, registered, into the pre-injection baseline
    roi_half_mm: float = 42.0  # the region measured, around the cannula tip, before the body is found
    front_min_ml: float = 0.004  # smallest cement region that can be the front
    leak_min_ml: float = 0.008  # outside-the-body cement that counts as a leak candidate
    leak_margin_mm: float = 0.6  # cement must be this far outside the body outline
    leak_min_depth_mm: float = 1.5  # how far beyond the body outline cement must reach to be a leak
    # the wall found arms the 5 mm rule only with this much of the body's outline seen ...
    wall_min_support: float = MIN_OUTLINE_SUPPORT
    wall_max_spread_mm: float = MAX_WALL_SPREAD_MM  # ... and moving no more between still frames


@dataclass(frozen=True)
class OperatorInput:
    """What the operator said before monitoring began (the command line), applied once the
    baseline is in; live edits come as commands."""

    # the posterior wall, ((x, y) cranial, (x, y) caudal) in lateral image pixels
    posterior_wall: tuple | None = None
    # the body boxes, ((plane, (x, y, width, height)), ...) in image pixels of each plane
    body_boxes: tuple = ()
    # the level has an intravertebral cleft, seen on the images before the procedure
    # (CaseAnalyzer.known_cleft)
    known_cleft: bool = False


@dataclass(frozen=True)
class AnalysisConfig:
    """Everything the analysis is configured with, in one object built once (from a profile,
    a session log's settings and the command line: :meth:`from_settings`) and handed to
    every process that analyses."""

    physics: Physics = field(default_factory=Physics)
    detection: Detection = field(default_factory=Detection)
    anatomy: AnatomyPriors = field(default_factory=AnatomyPriors)
    alarms: AlarmConfig = field(default_factory=AlarmConfig)
    operator: OperatorInput = field(default_factory=OperatorInput)

    @staticmethod
    def from_settings(settings: dict | None) -> AnalysisConfig:
        """From flat settings, as a calibration profile (``Profile.analysis_settings``), a
        session log's ``calibration_settings`` and the command line give them: keys named as
        the fields of :class:`Physics`, :class:`Detection` and :class:`OperatorInput`.
        A key none of them has is a bug, and raises TypeError."""
        groups: dict[type, dict] = {Physics: {}, Detection: {}, OperatorInput: {}}
        for key, value in (settings or {}).items():
            group = next((g for g in groups if key in g.__dataclass_fields__), None)
            if group is None:
                raise TypeError(f"unknown analysis setting {key!r}")
            groups[group][key] = value
        return AnalysisConfig(
            physics=Physics(**groups[Physics]),
            detection=Detection(**groups[Detection]),
            operator=OperatorInput(**groups[OperatorInput]),
        )


@dataclass
class PlaneResult:
    plane: str
    frame: int
    caveats: tuple[Caveat, ...] = ()  # why it is not a plain measurement (skipped frames included)
    baseline: bool = False  # a frame the baseline is built from: nothing measured yet
    # lateral: the cement's distance anterior of the posterior wall (negative: beyond it), the
    # nearer of the bolus's front and the deepest cement read as a leak behind the wall
    distance_mm: float | None = None
    distance_px: float | None = None
    # lateral: the bolus's front alone (the leak rules, the leak alarms' record and the wall's check
    # read it: the cement behind the wall is another reading, not the same one read twice)
    bolus_front_mm: float | None = None
    volume_ml: float | None = None
    volume_filled: float = 0.0  # the share of volume_ml interpolated under the cannula, not seen
    leaks: list[Leak] = field(default_factory=list)
    overlay: dict = field(default_factory=dict)
    shift_px: tuple[float, float] = (0.0, 0.0)
    # The safety rules this frame was evaluated against (see CHECKS). Empty while the
    # baseline builds, on a skipped frame, or with no body outline or no millimetre scale:
    # then "no alarm" means "not looked", and the audit counts it against the level.
    checked: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """The caveats rendered for people (the wire's version-1 ``status``)."""
        return render_status(self.caveats, self.baseline)


# How long (s of the stream) a view switched off the scatter correction may go unread before the
# level's darkness is brought to the new reading without it: a view silent, held or unreadable
# would otherwise leave the darkness half on each reading (a review's AP dropped at the switch held
# a syringe-anchored volume at 1.49 mL for 3.35 to the end).
RESCALE_WAIT_S = 1.0
# A view's own ratio (its first reading without the correction over its last with it) holds the
# cement's growth between the two: taken alone where it spans this long or less (a review's
# lateral read again 0.8 s late gave 0.62 where the AP's prompt one was 0.52: +49 % after).
RESCALE_PROMPT_S = 0.4
# The least a rescale may be: no scatter correction takes more than this much off the darkness
# (0.53-0.55 on our renders); a smaller ratio is a view misread, not the correction.
RESCALE_LEAST = 0.2


@dataclass
class _DarknessSwitch:
    """The views' darkness read without scatter correction from ``time_s`` on (the cement's
    halo showed none), on a level whose darkness was read with it until then."""

    time_s: float
    old: dict[str, float]  # each switched view's volume on its last reading with it, mL
    old_s: dict[str, float]  # ... and when that was (stream s)
    old_filled: dict[str, float]  # ... and its share filled in under the cannula (its weight)
    waiting: set[str]  # the switched views not yet read without it
    read: bool = False  # the switch frame's own volume is read (the last with the correction)
    ratios: dict[str, float] = field(default_factory=dict)  # each view's own: new over old
    prompt: set[str] = field(default_factory=set)  # views whose ratio spans RESCALE_PROMPT_S or less

    def ratio(self) -> float | None:
        """What the views' own ratios make of the level's darkness, as :func:`_reconciled`
        weighs their volumes (each view's last volume with the correction times its ratio, over
        that volume), from the prompt ratios where there are any (RESCALE_PROMPT_S: a late one
        holds the cement's growth meanwhile). None where no view gives one."""
        views = [
            v for v in (self.prompt or self.ratios) if math.isfinite(self.ratios[v]) and self.ratios[v] > 0
        ]
        weights = {v: self.old[v] / (self.old_filled[v] + 0.05) for v in views}  # _reconciled's weights
        total = sum(weights.values())
        return float(sum(weights[v] * self.ratios[v] for v in views) / total) if total > 0 else None


@dataclass(frozen=True)
class CaseSummary:
    """What one frame means for the case (both planes): :meth:`CaseAnalyzer.process`."""

    # the level's volume (mL) with its 68 % interval, from both planes' darkness and the cement's
    # shape in the two views (None: none yet)
    volume: VolumeEstimate | None
    seconds_to_line: float | None  # predicted time until the front reaches the 5 mm line
    raised: list  # alarms raised on this frame, as Alarm.as_dict()
    # on the frame from which both views' darkness is read without scatter correction: what the
    # darkness read before is to be multiplied by to be on the new scale (CaseAnalyzer
    # .assume_no_scatter), for what is anchored on it (syringes); None on every other frame
    darkness_rescaled: float | None = None


# A frame whose difference from the baseline spreads this many times as widely as the view's first
# IMAGE_SPREAD_FRAMES compared frames' is no longer the same image (PlaneAnalyzer._image_changed).
IMAGE_CHANGED_SPREAD = 6.0
IMAGE_SPREAD_FRAMES = 5
# ... that usual spread at least this (log units): the noise of two exposures apart is more (0.018-0.026
# on the bundled cases; under it, a grabber's analogue copies of one exposure, whose own noise is
# all they differ by)
IMAGE_USUAL_SPREAD_FLOOR = 0.01

# A frame that repeats the last (temporal.HeldImages) this long (s) after the last new exposure is
# skipped and said (image-held): the X-ray is off, and cement injected now is not seen. Sooner, it
# is the same exposure shown again (a grabber at 30 frames/s sends a C-arm's 7.5 pulses/s four
# times each) and is read as before: the judgement is then of an exposure under half a second old.
HELD_SAID_S = 0.5
HELD_SAID_PULSES = 3.0  # ... or this many of the usual steps between new exposures, if longer


def _unusable(sample: np.ndarray, bits_stored: int, first_contrast: float | None = None) -> Caveat | None:
    """Why a frame cannot be measured (blank, or saturated over most of it), or None, from
    ``sample``: every FRAME_SAMPLE-th pixel of it each way. ``first_contrast``: the view's first
    usable frame's contrast (:func:`sample_contrast`), once known: a frame with its contrast still,
    only noisier, is no blank one."""
    top = 2**bits_stored - 1
    saturated = np.count_nonzero(sample >= top) / sample.size
    if saturated > 0.8:
        return Caveat(
            CaveatCode.SATURATED_FRAME, f"saturated frame ({saturated:.0%} of pixels at the maximum)"
        )
    if int(sample.max()) - int(sample.min()) <= max(2, top // 1000):
        return Caveat(CaveatCode.BLANK_FRAME, "blank frame (no contrast)")
    contrast, noise = sample_contrast(sample)
    lost = first_contrast is None or contrast < BLANK_CONTRAST_KEPT * first_contrast
    if contrast < BLANK_CONTRAST_TO_NOISE * noise and lost:
        return Caveat(
            CaveatCode.BLANK_FRAME,
            f"blank frame (only noise: its contrast {contrast:.1f} is {contrast / noise:.1f} times"
            " its noise)",
        )
    return None


# A frame whose contrast (sample_contrast) is under this many times its pixel noise shows no
# image, only the noise of a screen or video line: an analogue grabber's black or white frame
# while the C-arm's output is off. Every frame of the 156 benchmark recordings and the 3 bundled
# ones reads 3.4 times or more (tuning 5031's AP, 8-bit video: its median 5.8); a flat frame with
# white noise reads about 0.6.
BLANK_CONTRAST_TO_NOISE = 1.5
# ... and, once the view's first frame is known, under this share of that frame's contrast: an image
# kept under heavy noise (the bundled AP with noise of sd 32 added reads 1.7 times, its anatomy
# plain at the blocks' scale: an independent review) is no screen.
BLANK_CONTRAST_KEPT = 0.3
CONTRAST_BLOCK = 8  # the frame sample's values are averaged over blocks this many a side
NOISE_FLOOR = 0.5  # stored values: under half a step, the noise is the rounding's


def sample_contrast(sample: np.ndarray) -> tuple[float, float]:
    """The contrast of a frame and its pixel noise, in stored values, from ``sample`` (every
    FRAME_SAMPLE-th pixel each way, (h, w)): the 1st to 99th percentile range of its means over
    CONTRAST_BLOCK-wide blocks (anatomy, shutters; the noise averaged down), and the noise's sd
    from the median absolute difference of neighbours (on an eighth of them; at least
    NOISE_FLOOR); 0.17 ms at 1024 pixels.

    Why: a frame grabber on an analogue line sends a black or white screen with the line's noise
    on it, which the exact-flat check in :func:`_unusable` let through: such frames were read as
    frames with no cement (0.0 mL against 1.4, no distance, the level said monitored) and the
    frames after them raised false leaks (an independent test)."""
    b = CONTRAST_BLOCK
    h, w = sample.shape[0] // b, sample.shape[1] // b
    values = sample.astype(np.float32)
    means = np.sort(cv2.resize(values[: h * b, : w * b], (w, h), interpolation=cv2.INTER_AREA), axis=None)
    low, high = means[int(0.01 * (means.size - 1))], means[int(np.ceil(0.99 * (means.size - 1)))]
    steps = np.abs(np.diff(values[::4], axis=1)[:, ::2])  # every 4th row's neighbours, each once
    noise = max(float(np.median(steps)) / (0.6745 * np.sqrt(2.0)), NOISE_FLOOR)
    return float(high - low), noise


class PlaneAnalyzer:
    """One plane's state and measurements.

    Frames are analysed at a working resolution of about ``pixels.WORK_PIXEL_MM``
    (1024-pixel detectors are binned 2x2), inside a region of interest around
    the cannula tip; results are reported in full-resolution image pixels. The first
    frames make the baseline (:func:`learn_plane_baseline`); every later frame is
    registered to it, differenced, and measured.
    """

    def __init__(
        self,
        plane: str,
        photometric: str,
        relationship: str | None,
        bits_stored: int,
        pixel_mm: float | None,
        config: AnalysisConfig | None = None,
    ):
        self.plane = plane
        self.photometric = photometric
        self.relationship = relationship
        self.bits_stored = bits_stored
        self.grid = PixelGrid.for_spacing(pixel_mm)
        self.config = config or AnalysisConfig()
        self.physics = ScatterPhysics(
            self.config.physics.scatter_fraction, self.config.physics.scatter_sigma_mm
        )
        self.shape: tuple[int, int] | None = None  # the stream's frame shape, from its first frame
        # the least cement apart from the bolus read as a leak (mL), set per frame by the case
        # (CaseAnalyzer.apart_leak_size_ml)
        self.apart_leak_size_ml = self.config.detection.leak_min_ml
        self._first_frames: list[np.ndarray] = []  # until the baseline is learnt
        self._first_numbers: list[int] = []  # their frame numbers
        self.learnt: PlaneBaseline | None = None  # what the first frames said
        # called once the baseline is in, with this plane: the operator's input waits for it
        self.on_baseline: Callable[[PlaneAnalyzer], None] | None = None
        self.body: LateralBody | ApBody | None = None  # found, or the operator's
        self.anatomy_error: Caveat | None = None  # why the rules cannot be checked, while so
        self.caveats: list[Caveat] = []  # on every result from when each was added
        self.roi: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in working pixels
        self._state: BaselineState | None = None  # the baseline over ``roi``
        self._registration: Registration | None = None  # to the baseline over ``roi``
        self._distances: DistanceMaps | None = None  # to the walls, over ``roi``
        self._last_mask: np.ndarray | None = None  # the bolus seen so far, left out of registration
        # the bolus's outline on the last frame (ROI grid), the steel band across it filled
        # (monitor.vision.biplane.bolus_outline) ...
        self.cement_mask: np.ndarray | None = None
        # ... re-cut at a share of the bolus's own darkness, which its volume is read from
        # (monitor.vision.biplane.relative_outline) ...
        self.shape_mask: np.ndarray | None = None
        # ... and the cement apart from it, each piece read alone in this view (mL; pieces_volume_ml)
        self.cement_apart_ml = 0.0
        # how many frames running this view could not be read (clipped white past reading, blank,
        # saturated or held, after the baseline): its outline is an older frame's meanwhile
        self.unreadable_frames = 0
        # the spread of its first new exposures' difference from the baseline (_image_changed)
        self._usual_spread: list[float] = []
        # the view's contrast found changed against the baseline's (a display's setting, the kV),
        # and a frame of it found blurred: from then on less is enough (baseline.*_KEPT_*)
        self._contrast_changed = False
        self._blurred = False
        self._repeat = False  # the frame being read repeats the last (HeldImages), soon after it
        self._first_contrast: float | None = None  # the first usable frame's (sample_contrast)
        self.held = HeldImages()  # which frames are no new exposure
        self.last_exposure = (-1, 0.0)  # the newest frame that was a new exposure: number, time s
        self.holding = False  # its frames are skipped as a held image (_held_image) now
        self._exposure_steps: deque[float] = deque(maxlen=8)  # s between its new exposures
        self._shift = (0.0, 0.0)  # the breathing shift, working pixels, of the last frame
        self.time_s = 0.0  # the frame's acquisition time (s), set by the level before each frame
        # the last frame this view registered itself (not held): its number, time (s) and
        # cranio-caudal shift (mm at the vertebra, down the image): the breathing, which the other
        # view may take where it has too little left to register on
        self.breathing_registered: tuple[int, float, float] | None = None
        # the cranio-caudal breathing (mm) the other view registered at about this frame, or None
        # (CaseAnalyzer._breathing_elsewhere; args: this frame's time s)
        self.breathing_elsewhere: Callable[[float], float | None] = lambda time_s: None
        # (this view's, the other's) breathing (mm) on recent frames both registered themselves:
        # whether they move alike, and the last pair, the anchor a held frame adds the other's change to
        self._breath_pairs: deque[tuple[float, float]] = deque(maxlen=BREATHING_PAIRS_KEPT)
        self.without_scatter = False  # once the cement's halo has shown there is none
        self.halo_open = True  # still watched: until both planes' halos have settled the question
        self.halo = HaloEvidence()  # what the cement's halo says of the modelled scatter
        self.recursive = RecursiveFilter()  # the system's temporal filter, read and undone
        self._cement_seen = False  # once: the filter's weight is read only on frames before it
        # whether the level's cement was seen from its start, so that cement apart from the bolus
        # (with no outline) and thin lines leaving it are read (None: not decided yet); and where
        # the veins read apart lie (image pixels: a vein's cast that thickens stays one)
        self._apart: bool | None = None
        self._veins: list[tuple[float, float]] = []
        self._filter_said = False  # the filter's undoing logged (once a level)
        # lateral: who armed the 5 mm rule on the wall ("automatic", "operator"; None: not armed)
        self.wall_armed_by: str | None = None
        self.body_drawn = False  # the outline is the operator's box (set_body), not one found
        # why a disc lobe no outline of this view places is only a possible leak, or None when it is
        # a leak: the level's to say (CaseAnalyzer._unplaced_lobe_doubt; a known cleft, or the
        # lateral's armed outline judging an AP lobe)
        self.unplaced_lobe_doubt: Callable[[], str | None] = lambda: None
        # lateral: why the outline's endplates and anterior side are a guess though its wall is
        # armed (the operator drew the wall over an outline found with a wall not trusted, or over
        # none); None: they stand with the wall (found with it, or the operator's box)
        self.outline_guess: str | None = None
        self._unarmed_why = ""  # why not, for the caveat on every result while so
        # why physics refuted the wall found (the first cement read beyond it), None while not:
        # a refuted wall cannot be confirmed, only redrawn
        self.refuted_why: str | None = None
        # ... refuted by cement apart from the front behind it (not by the front itself): a
        # posterior leak off it is only a possible one (CaseAnalyzer._uncorroborated)
        self.wall_refuted_by_cement = False
        self.front_seen = False  # a front has been measured (the first one is at the tip)
        # (event, detail, value) for the log, taken by the caller
        self.news: list[tuple[str, str, dict]] = []

    @property
    def body_nominal(self) -> bool:
        """Lateral: the outline is nominal, drawn round the operator's wall where no body was
        found; cement apart from the bolus is still read as it was with no outline (_read_apart)."""
        return self.outline_guess == NOMINAL_OUTLINE

    @property
    def wall_refuted(self) -> bool:
        """Whether physics refuted the wall found (:meth:`_judge_wall`), or it moved on still
        baseline frames as no bone does (:attr:`WallConfidence.unseen`): only a drawn one arms."""
        return self.refuted_why is not None

    @property
    def pixel_mm(self) -> float | None:
        """Millimetres per working pixel (None: no scale)."""
        return self.grid.pixel_mm

    @property
    def scatter_modelled(self) -> bool:
        """Whether this plane's baseline models scatter (a scale, and a scatter fraction > 0),
        so that the cement's halo can say whether it is there."""
        return self._state is not None and self._state.scatter_layers is not None

    def read_without_scatter(self, why: str) -> None:
        """Read the volumes without scatter correction from now on, and say so on every result."""
        self.without_scatter, self.halo_open = True, False
        self.add_caveat(
            CaveatCode.SCATTER_NOT_SEEN,
            f"the cement leaves no scatter halo within {HALO_RINGS_MM[-1][1]} mm of it ({why}): no"
            " scatter, or scatter spread wider than that; volumes are read without scatter correction",
        )

    def add_caveat(self, code: CaveatCode, detail: str) -> None:
        """A caveat on every result from now on (several are kept, none lost); ``detail``
        says what happened and what it means for the measurement."""
        self.caveats.append(Caveat(code, detail))

    def has_caveat(self, code: CaveatCode) -> bool:
        return any(c.code == code for c in self.caveats)

    # ----------------------------------------------------------------- baseline

    def _learn(self) -> None:
        """The baseline from the first frames, then the operator's input (``on_baseline``)."""
        c = self.config
        self.learnt = learn_plane_baseline(
            self._first_frames,
            self.plane,
            self.photometric,
            self.relationship,
            self.bits_stored,
            self.grid,
            self.physics,
            c.physics.cement_mu_per_mm,
            c.detection.roi_half_mm,
            c.anatomy,
            (c.detection.wall_min_support, c.detection.wall_max_spread_mm),
        )
        self.body, self.anatomy_error = self.learnt.body, self.learnt.anatomy_error
        # clipping is judged on the range the model reads (the bits the values use,
        # intensity.bits_in_use): on the declared one, data declared 16 bits never clipped
        self.bits_stored = self.learnt.model.bits_stored
        self.caveats += self.learnt.caveats
        found = self.learnt.roi if self.body is None else body_roi(self.body, self.learnt.roi, self.pixel_mm)
        self._use_roi(found)
        # The filter's weight read from the baseline's noise already (its last frame is measured
        # next); undone only where the intensity read is the detector's (a guessed LOG scale reads
        # a power of it, where the undo is not the filter's inverse).
        model = self.learnt.model
        self.recursive.allowed = model.units_known
        for f, number in zip(self._first_frames[:-1], self._first_numbers[:-1], strict=True):
            shown = roi_intensity(f, self.grid, model, self.roi)
            self.recursive.unfilter(shown, number, self._state.exclude)
        confidence = self.learnt.wall_confidence
        self._first_frames, self._first_numbers = [], []
        if confidence is not None:
            if confidence.armed:
                self._arm("automatic", f"5 mm rule armed on the wall found: {confidence.describe()}")
            elif confidence.unseen:  # not offered to confirm: it is the noise's, not the bone's
                self._disarm(
                    f"{confidence.describe()}: a wall that moves so between still frames, on an outline"
                    " seen so little, is not seen in these images",
                    refuted=True,
                )
            else:
                self._disarm(f"{confidence.describe()}")
        if self.on_baseline is not None:
            self.on_baseline(self)

    def _arm(self, by: str, detail: str) -> None:
        self.wall_armed_by, self._unarmed_why = by, ""
        self.news.append(("wall-armed", detail, {"armed_by": by}))

    def _disarm(self, why: str, refuted: bool = False, by_cement: bool = False) -> None:
        """The 5 mm rule off until the operator confirms or draws the wall (only draws it, when
        the wall is ``refuted``: by physics, ``by_cement`` read behind it rather than by the front,
        or as not seen in the images, WallConfidence.unseen); said on every result. A wall not
        seen and then refuted by cement behind it is both (its posterior leaks are possible)."""
        self.wall_armed_by, self._unarmed_why = None, why
        if refuted:
            self.refuted_why = self.refuted_why or why
            self.wall_refuted_by_cement |= by_cement
        detail = f"5 mm rule not armed: {why}; {self._wall_todo}"
        value = {"refuted": refuted, "why": why} | ({"by_cement": True} if by_cement else {})
        self.news.append(("wall-not-confirmed", detail, value))

    @property
    def _wall_todo(self) -> str:
        """What the operator is asked to do about a wall not armed: draw it where the wall found
        was refuted (or is not seen), else confirm or draw it."""
        return "draw the wall" if self.wall_refuted else "confirm or draw the wall"

    def _unrefute(self) -> None:
        """A wall drawn by the operator is theirs, not the one physics refuted."""
        self.refuted_why, self.wall_refuted_by_cement = None, False

    def restore_apart(self, read: bool) -> None:
        """After a restart, whether this view had seen the level's cement from its start
        (:meth:`_decide_from_start`; ``read`` as its results logged it, "seen_from_start" in
        the overlay; in older logs False from its "apart-off" event, True from a result that
        checked "leak-apart"): not decided again on the bolus grown since, which would look like
        a late start. Off stays off."""
        self._apart = False if self._apart is False else read

    def restore_wall(self, event: str, detail: str, value: dict | None) -> None:
        """After a restart, the wall decision the analyzer logged before it (``event``
        "wall-armed" or "wall-not-confirmed", with its ``value``), replayed in the log's order
        with the operator's: the state goes on as it was, nothing said twice."""
        value = value or {}
        if event == "wall-not-confirmed":
            self._disarm(
                str(value.get("why") or detail), bool(value.get("refuted")), bool(value.get("by_cement"))
            )
        elif event == "wall-armed" and isinstance(self.body, LateralBody):
            by = str(value.get("armed_by") or "automatic")
            if by == "operator":  # the operator's wall is theirs, not the one refuted (set_wall)
                self._unrefute()
            self._arm(by, detail)
        self.news.clear()

    def restore_filter(self, weight: float | None) -> None:
        """After a restart, the temporal filter's weight logged before it (undone again on the
        frames to come if it was), not said twice."""
        if weight is not None:
            self.recursive.fixed = float(weight)
            self._filter_said = True

    def _use_roi(self, roi: tuple[int, int, int, int]) -> None:
        """Measure within ``roi`` (working pixels, inside the ROI around the tip) from now on."""
        tip_roi = self.learnt.roi
        x0, y0 = roi[0] - tip_roi[0], roi[1] - tip_roi[1]
        rows, cols = slice(y0, y0 + roi[3] - roi[1]), slice(x0, x0 + roi[2] - roi[0])
        self._state = self.learnt.state.window(rows, cols)
        self.roi = roi
        self._usual_spread = []  # learnt again over the new region
        self._contrast_changed = False
        self._blurred = False
        self._registration = Registration(self._state.attenuation)
        self._distances = DistanceMaps(self._state.exclude.shape)
        self._last_mask = None
        self.cement_mask = None
        self.shape_mask = None
        self.cement_apart_ml = 0.0
        self.recursive.restart()

    # ----------------------------------------------------------------- frames

    def process(self, pixels: np.ndarray, frame: int) -> PlaneResult:
        """One frame, (H, W) stored values: into the baseline while it builds, else measured."""
        if self.shape is None:
            self.shape = pixels.shape
        elif pixels.shape != self.shape:
            why = Caveat(CaveatCode.FRAME_SHAPE, f"frame is {pixels.shape}, stream is {self.shape}")
            return PlaneResult(self.plane, frame, (why,))
        # one sample of the frame for both checks (contiguous: read three times, and kept)
        sample = np.ascontiguousarray(pixels[::FRAME_SAMPLE, ::FRAME_SAMPLE])
        unusable = _unusable(sample, self.bits_stored, self._first_contrast)
        if unusable:  # never into the baseline, never measured: it would read as cement everywhere
            self.unreadable_frames += self.learnt is not None
            return PlaneResult(self.plane, frame, (unusable,))
        if self._first_contrast is None:
            self._first_contrast = sample_contrast(sample)[0]
        self._repeat = self.held.held(sample)  # the same exposure sent again (read, if soon)
        if not self._repeat:
            if self.last_exposure[0] >= 0 and self.time_s > self.last_exposure[1]:
                self._exposure_steps.append(self.time_s - self.last_exposure[1])
            self.last_exposure, self.holding = (frame, self.time_s), False
        elif (
            self.learnt is not None
            and self._exposure_steps  # its pulses' rate is known
            and self.time_s - self.last_exposure[1] >= self._held_after()
        ):
            return self._held_image(frame)
        if self.learnt is None:
            self._first_frames.append(pixels)
            self._first_numbers.append(frame)
            if len(self._first_frames) < self.config.detection.baseline_frames:
                return PlaneResult(self.plane, frame, baseline=True)
            self._learn()
        result = self._measure_frame(pixels, frame)
        if self._apart is not None:  # in every result once decided: a restart takes it back
            result.overlay["seen_from_start"] = self._apart
        return result

    def _measure_frame(self, pixels: np.ndarray, frame: int) -> PlaneResult:
        clipped = saturated_bright(pixels, self.grid, self.roi, self.photometric, self.bits_stored)
        share = float(clipped.mean())
        if share > CLIPPED_UNREADABLE_ABOVE:  # before any work: nothing on it is read
            return self._unreadable(frame, share)
        cement, comparison = self._cement(pixels, clipped, frame)
        if cement is None:
            return self._changed_image(frame, comparison)
        dx, dy = comparison.shift
        x0, y0 = self.roi[0], self.roi[1]
        # into ROI coordinates, then by the breathing shift
        body = None if self.body is None else shifted_body(shifted_body(self.body, -x0, -y0), dx, dy)
        axis = self._shaft_axis(cement.difference, body)
        shaft = None if axis is None else read_shaft(axis, self.learnt.cannulas[0], self.pixel_mm)
        cement = with_prior(cement, self._state.prior, comparison.shift)
        tips = [(c.tip[0] - x0 + dx, c.tip[1] - y0 + dy) for c in self.learnt.cannulas]
        # Cement does not go away: the bolus seen so far stays out of the registration and of
        # the background's level, so that one frame that loses it (the exposure clipping the
        # region around it) cannot make the background's level the cement's and lose it for good.
        bolus = growing_bolus(cement.mask, tips, self.pixel_mm)
        self._last_mask = bolus if self._last_mask is None else (bolus | self._last_mask)
        outline = self._outline_through_steel(cement.mask, comparison.exclude, tips)
        self.cement_mask = bolus_outline(outline, tips, self.pixel_mm) if self.pixel_mm else outline
        # most frames: the outline is the bolus, nothing apart
        apart = None if self.cement_mask is outline else outline & ~self.cement_mask
        self.shape_mask = (
            relative_outline(
                self.cement_mask,
                cement.difference,
                comparison.unread,
                self.pixel_mm,
                comparison.layers[..., LAYER_GRADIENT],
                apart,
            )
            if self.pixel_mm
            else self.cement_mask
        )
        self.cement_apart_ml = 0.0 if apart is None else pieces_volume_ml(apart, self.pixel_mm, self.plane)
        self.unreadable_frames = 0
        result = PlaneResult(
            self.plane,
            frame,
            tuple(
                filter(
                    None,
                    (
                        self.anatomy_error,
                        *self.caveats,
                        self._clipped_caveat(share, comparison),
                        self._contrast_caveat(comparison),
                        self._blur_caveat(comparison),
                    ),
                )
            ),
            shift_px=(dx * self.grid.scale, dy * self.grid.scale),
        )
        if self.pixel_mm:
            fill = comparison.exclude if self.learnt.cannulas else None
            result.volume_ml, result.volume_filled = integrated_volume_ml(
                cement, self.pixel_mm, self.config.physics.cement_mu_per_mm, fill, shaft
            )
        # Front and leaks also read the band's strips beside the steel, with the same
        # threshold: cement running back along the needle's track is the first to leave.
        sleeve = (comparison.layers[..., LAYER_SLEEVE] > SLEEVE_ABOVE) & ~comparison.uncovered
        if sleeve.any():
            band = comparison.layers[..., LAYER_EXCLUDED] > EXCLUDED_ABOVE
            shafts = [
                (tip, c.direction, BAND_WIDTHS / 2 * c.width_px + 1)
                for tip, c in zip(tips, self.learnt.cannulas, strict=True)
            ]
            cement = replace(cement, mask=cement.mask | sleeve_cement(cement, sleeve, band, shafts))
        if body is not None:
            self._measure(result, cement, body, shaft, axis)
            if self.pixel_mm:
                result.checked = PLANE_CHECKS[self.plane]
            if isinstance(body, LateralBody) and self.pixel_mm:
                self._judge_wall(result)
        if self._apart is None and self.pixel_mm and self.learnt.cannulas:
            self._decide_from_start(result.frame, cement, tips, body is not None)
        no_outline = body is None or self.body_nominal  # none found (a nominal one drawn round a wall)
        if no_outline and self.plane == "lateral" and self.pixel_mm and self.learnt.cannulas:
            self._read_apart(result, cement, tips, body)
        if self.pixel_mm:  # with or without an outline: a vein's cast is a line
            lines = find_vein_lines(
                cement.difference,
                comparison.layers[..., LAYER_ATTENUATION],
                comparison.layers[..., LAYER_GRADIENT],
                cement.mask,
                comparison.unread,
                self.pixel_mm,
            )
            mu = self.config.physics.cement_mu_per_mm
            doubt = None if self._apart else LINE_DOUBT
            lateral_body = body if isinstance(body, LateralBody) else None
            depth = self.config.detection.leak_min_depth_mm
            veins = vein_leaks(
                lines, cement.difference, self.grid, self.roi[:2], mu, doubt, lateral_body, depth
            )
            result.leaks = [*result.leaks, *veins]
        if self._apart:  # a lobe through an endplate: from a bolus seen from its start only
            self._read_lobes(result, cement, comparison.unread, tips, body)
        result.overlay = overlay_geometry(
            result.overlay,
            self.grid,
            self.roi,
            (dx, dy),
            self.learnt.cannulas,
            body,
            cement,
            result.leaks,
            self.config.alarms.proximity_mm,
        )
        if result.overlay.get("wall_state") == "not-confirmed":  # no rule armed, no line to draw
            result.overlay.pop("safety_line", None)
        return result

    def _outline_through_steel(
        self, mask: np.ndarray, unread: np.ndarray, tips: list[tuple[float, float]]
    ) -> np.ndarray:
        """The cement's outline ``mask`` (ROI grid, bool) with each cannula's band across it
        filled (:func:`outline_through_steel` over :func:`steel_bands`), ``tips`` the cannulas'
        (ROI pixels, this frame's shift)."""
        shafts = [(tip, c.direction, c.width_px) for tip, c in zip(tips, self.learnt.cannulas, strict=True)]
        if not shafts:
            return mask
        band_px = max(BAND_WIDTHS * width for _, _, width in shafts)
        return outline_through_steel(mask, unread & steel_bands(mask.shape, shafts), band_px)

    @property
    def places_endplates(self) -> bool:
        """Lateral: whether an armed outline, its endplates found with the wall, places them (a
        disc lobe is then judged against it, :meth:`_read_lobes`)."""
        return self.body is not None and self.wall_armed_by is not None and self.outline_guess is None

    def _read_lobes(self, result: PlaneResult, cement: CementMap, steel: np.ndarray, tips, body) -> None:
        """The disc lobes (:func:`find_disc_lobes`) into ``result`` as disc leaks. An armed lateral
        outline places the endplates: a lobe wholly inside it is no leak (a cleft), one reaching
        ``leak_min_depth_mm`` beyond it (as outline cement must) is sure, one reaching less is
        doubted (:data:`LOBE_SHALLOW_DOUBT`). Any other (no outline, an AP outline, a lateral one
        not confirmed, or one whose wall the operator drew over endplates found with a wall not
        trusted: ``outline_guess``; its endplates are a guess) is as the level says
        (``unplaced_lobe_doubt``): sure where it has no known cleft, doubted (:data:`LOBE_DOUBT`)
        where it has; an AP lobe while the lateral view's armed outline places the endplates is
        judged by the lateral's lobe (:data:`LOBE_JUDGED_IN_LATERAL`): backing a lateral lobe
        short of the endplate line must not make it sure (tuning 5020 and clefts under biconcave
        endplates, session 48).

        Why sure with no outline: on the benchmark's sets (36 tuning, 36 reporting, 30
        simple-world and 24 review cases) a lobe in both views showed on disc leaks only, and
        while it was only possible the real-CT disc leaks were never alarmed high (issue 19: 0 of
        4 on time). Cement filling a gas cleft on the endplate can show as one (one of six CT
        renders with such a cleft and no leak, session 58; a dense fill behind scatter,
        tests/test_realistic_leaks.py), and nothing in these images tells the two apart where no
        outline places the endplate. A cleft is seen before the procedure (CT or MRI shows its
        gas; Kuemmell's disease is why many levels are treated), so the operator says so for the
        level (``--cleft``, the viewer's "Known cleft"), and the lobe is then only a possible
        leak: undeclared, such a cleft can raise a false high disc alarm."""
        threshold = float(np.min(cement.threshold))
        lobes = find_disc_lobes(cement.difference, cement.mask, steel, tips, threshold, self.pixel_mm)
        sure: list = []
        shallow: list = []  # (lobe, how far beyond the armed outline, mm)
        if lobes and result.overlay.get("wall_state") == "armed" and self.outline_guess is None:
            depth = self.config.detection.leak_min_depth_mm / self.pixel_mm
            beyond = [(lobe, _reach_px(body, lobe)) for lobe in lobes]
            sure = [lobe for lobe, d in beyond if d >= depth]
            shallow = [(lobe, d * self.pixel_mm) for lobe, d in beyond if 0 < d < depth]
            lobes = []
        mu, where = self.config.physics.cement_mu_per_mm, (self.grid, self.roi[:2])
        found = lobe_leaks(sure, cement.difference, *where, mu)
        for lobe, reach_mm in shallow:
            doubt = LOBE_SHALLOW_DOUBT.format(
                reach_mm=reach_mm, depth_mm=self.config.detection.leak_min_depth_mm
            )
            found += lobe_leaks([lobe], cement.difference, *where, mu, doubt)
        if lobes:
            found += lobe_leaks(lobes, cement.difference, *where, mu, self.unplaced_lobe_doubt())
        result.leaks = [*result.leaks, *found]

    def _decide_from_start(
        self, frame: int, cement: CementMap, tips: list[tuple[float, float]], outline: bool
    ) -> None:
        """Whether this view reads the leaks that need the level's cement seen from its start:
        cement apart from the bolus (:meth:`_read_apart`) and the thin lines leaving it
        (:func:`find_vein_lines`). Decided once, on the first frame whose bolus at the tips
        reaches the leak size: where that bolus was not :func:`grown_from_tip`, or cement was
        found in the baseline, new cement is the rim of a bolus already there, which shows broken
        into pieces "apart" and as lines along the old bolus's edge (late starts of the tuning
        cases raised false leaks both ways): both are then off for the level in this view, said
        once ("apart-off"); the leaks read against an outline are not affected."""
        reading = self._apart_reading(cement, tips, least_ml=self.config.detection.leak_min_ml)
        if reading.bolus_ml < self.config.detection.leak_min_ml:
            return
        before = self.learnt.cement_grew or self._state.prior is not None
        self._apart = grown_from_tip(reading) and not before
        if self._apart:
            return
        if self.learnt.cement_grew:
            why = "cement grew over the first frames (monitoring began while it was being injected)"
        elif self._state.prior is not None:
            why = "cement was already there in the first frames"
        else:
            why = (
                "the first cement read was not a bolus seen from its start (in pieces, or"
                " too wide for its volume: new cement around cement already there)"
            )
        if not outline:
            todo = "draw the posterior wall or the body to read leaks"
        elif before:
            todo = "leaks beyond the body's outline, other than behind the wall, are possible leaks"
        else:
            todo = "leaks beyond the body's outline are read as before"
        apart = (
            "cement apart from the bolus is not read as a leak and "
            if not outline and self.plane == "lateral"
            else ""
        )
        detail = (
            f"{self.plane} view: {apart}thin lines leaving the bolus (veins too faint to outline) are only"
            f" possible leaks, and lobes above or below it are not read as disc leaks, on this level:"
            f" {why}, so new cement can show as broken pieces, lines along the edge or lobes, of a"
            f" bolus already there; {todo}"
        )
        self.news.append(("apart-off", detail, {"frame": frame, "plane": self.plane}))

    def _read_apart(
        self, result: PlaneResult, cement: CementMap, tips: list[tuple[float, float]], body=None
    ) -> None:
        """No outline to read a leak against, or only a nominal one (``body_nominal``): the
        cement apart from the bolus (:func:`find_apart_leaks`) into ``result``, with the rule said
        as checked ("leak-apart"), on a level whose bolus was seen from its start
        (:meth:`_decide_from_start`; said as checked only once on: before any bolus there is
        nothing to be apart from). Beside a nominal outline its leaks are added to the outline's:
        a wall drawn where no body was found must not lose a leak the monitor read without it
        (tuning 5032: a disc leak high on time alone, only possible once the wall was drawn).
        There a piece sited posterior (from where it lies seen from the tip) is one only when
        its centre lies ``leak_min_depth_mm`` behind the wall drawn (``body``, the nominal body
        in ROI coordinates at this frame's breathing shift): the operator vouches for that wall,
        and a piece in front of it is inside the body (an independent review's CT case 9305: a
        false high posterior leak 10 mm in front of the wall, 13 frames before any cement left)."""
        if not self._apart:
            return
        reading = self._apart_reading(cement, tips, self._veins)
        if self.body_nominal and isinstance(body, LateralBody):
            depth = self.config.detection.leak_min_depth_mm
            x0, y0 = self.roi[:2]

            def behind_mm(leak) -> float:  # how far the piece's centre lies behind the wall
                wx, wy = self.grid.to_working(*leak.centroid)
                away = body.posterior.signed_distance(np.float32(wx - x0), np.float32(wy - y0))
                return float(-body.posterior_sign * away * self.pixel_mm)

            leaks = [lk for lk in reading.leaks if lk.site != "posterior" or behind_mm(lk) >= depth]
            result.checked = (*result.checked, "leak-apart")
            result.leaks = [*result.leaks, *leaks]
        else:
            result.checked = ("leak-apart",)
            result.leaks = reading.leaks
        # the veins read, where they are now (a piece gone or moved drops its old place)
        veins = [lk.centroid for lk in reading.leaks if lk.site == "venous"]
        kept = [v for v in self._veins if not any(in_box(v, lk.box) for lk in reading.leaks)]
        self._veins = (veins + kept)[:MAX_VEINS_KEPT]

    def _apart_reading(
        self, cement: CementMap, tips: list[tuple[float, float]], veins=(), least_ml: float | None = None
    ) -> ApartReading:
        """:func:`find_apart_leaks` with this view's cannulas, grid and the configured physics,
        reading pieces from ``least_ml`` (None: :attr:`apart_leak_size_ml`, the case's; the
        decision from the start is made at the configured leak size its bound was set at)."""
        directions = [k.direction for k in self.learnt.cannulas]
        mu = self.config.physics.cement_mu_per_mm
        least = self.apart_leak_size_ml if least_ml is None else least_ml
        return find_apart_leaks(cement, tips, directions, self.grid, self.roi[:2], mu, least, veins)

    def _cement(
        self, pixels: np.ndarray, clipped: np.ndarray, number: int
    ) -> tuple[CementMap | None, Comparison]:
        """The frame against the baseline (its shift kept in ``_shift``) and the cement in it,
        ``clipped`` (ROI grid, bool) left unread; no cement (None) where the frame no longer
        matches the baseline (:meth:`_image_changed`), nothing of it kept. The halo's evidence is
        gathered here while it is watched."""
        # the intensity and the scatter apart, while the halo is watched or once the scatter is dropped
        parts = self._state.scatter_layers is not None and (self.halo_open or self.without_scatter)
        frame = (pixels, self.grid, self.learnt.model, self.physics, self.roi)

        still = not self._cement_seen

        def unfilter(shown: np.ndarray) -> np.ndarray:
            return self.recursive.unfilter(shown, number, self._state.exclude, still)

        # once w is read and there is no filter to undo, frames are read as they are (no cost)
        undo = unfilter if self.recursive.wanted(still) else None
        if parts:
            att, measured, scatter = primary_attenuation(*frame, parts=True, unfilter=undo)
        else:
            att, measured = primary_attenuation(*frame, unfilter=undo), None
        elsewhere = self.breathing_elsewhere(self.time_s) if self.pixel_mm else None

        def held_shift() -> tuple[float, float] | None:
            """Where too little is left to register on: this view's shift at the last frame it
            registered with the other's breathing since then added, once the two move alike."""
            if elsewhere is None or not self._breaths_agree():
                return None
            own_then, other_then = self._breath_pairs[-1]
            return self._shift[0], (own_then + elsewhere - other_then) / self.pixel_mm

        comparison = compare_with_baseline(
            att,
            self._state,
            self._registration,
            self._shift,
            self._last_mask,
            measured,
            self.without_scatter,
            clipped,
            held_shift,
            self._contrast_changed,
            self._blurred,
        )
        self._blurred = self._blurred or comparison.blur is not None
        if self._image_changed(comparison) or self._too_blurred(comparison):
            self.recursive.restart()  # nor is it the frame the next is filtered with
            return None, comparison
        self._shift = comparison.shift
        self._contrast_changed = self._contrast_changed or comparison.contrast is not None
        if comparison.held is None and self.pixel_mm:
            own = comparison.shift[1] * self.pixel_mm
            self.breathing_registered = (number, self.time_s, own)
            if elsewhere is not None:
                self._breath_pairs.append((own, elsewhere))
        c = comparison
        cement = segment(
            c.difference, c.layers[..., LAYER_GRADIENT], c.unread, self.pixel_mm, bolus=self._last_mask
        )
        self._cement_seen = self._cement_seen or bool(cement.mask.any())
        self._say_filter()
        if parts and self.halo_open:
            intensity = (measured, scatter)
            self.halo.add(c.difference, cement.mask, c.unread, intensity, c.intensity_before, self.pixel_mm)
        return cement, comparison

    def _say_filter(self) -> None:
        """Once the filter's weight is read for good (the first cement seen, or enough read),
        say once a level what was done: undone from which frame, or read but not undone (the
        view then shows moving cement late)."""
        if self._filter_said:
            return
        f = self.recursive
        w = f.weight
        done_reading = self._cement_seen or f.pairs >= MAX_PAIRS or f.fixed is not None
        if not done_reading or w is None or w < UNDO_ABOVE:
            return
        self._filter_said = True
        late = f"{w / (1 - w):.1f}" if w < 1 else "many"
        if f.undoing:
            since = "" if f.first_undone is None else f" from frame {f.first_undone} on"
            detail = (
                f"{self.plane} view: the C-arm's temporal filter read from the noise as weight {w:.2f}"
                f" and undone{since}"
                f" (it showed moving cement {late} frames late)"
            )
        else:
            detail = (
                f"{self.plane} view: the C-arm's temporal filter read from the noise as weight {w:.2f}"
                " but not undone"
                " (the LOG scale was guessed, so the intensity read is not the detector's): moving"
                f" cement shows about {late} frames late in this view"
            )
        value = {"weight": round(w, 3), "undone": bool(f.undoing), "frame": f.first_undone}
        self.news.append(("temporal-filter", detail, value))

    def _held_after(self) -> float:
        """How long (s) after the last new exposure a repeat of it is a held image: HELD_SAID_S,
        or HELD_SAID_PULSES of the usual steps between new exposures where they are slower;
        none is judged held before two new exposures have told that step. A grabber at 7.5
        frames/s of a C-arm pulsing once a second sends each pulse 7 times: its copies read as
        held from 0.5 s left 43 % of the frames unchecked, the level NOT MONITORED, where the
        same pulses stored one frame each were checked on all of them (an independent review)."""
        usual = small_median(self._exposure_steps)
        return max(HELD_SAID_S, HELD_SAID_PULSES * usual)

    def _held_image(self, frame: int) -> PlaneResult:
        """A frame that is no new exposure (:class:`HeldImages`), HELD_SAID_S or more after the
        last one: skipped, as a blank one is (no rule checked in this view, said as not monitored
        while it lasts; the view's volume and outline stay those of its last exposure, until
        ONE_VIEW_AFTER_UNREADABLE such frames leave the cement's shape to the other view)."""
        self.unreadable_frames += 1
        self.holding = True
        return PlaneResult(
            self.plane,
            frame,
            (
                Caveat(
                    CaveatCode.IMAGE_HELD,
                    f"image held: no new exposure since frame {self.last_exposure[0]} (the C-arm's last"
                    " image held, or a frame sent again): cement injected meanwhile is not seen",
                ),
            ),
        )

    def _image_changed(self, comparison: Comparison) -> bool:
        """Whether the frame, registered to the baseline, no longer matches it: the robust spread
        of its difference over the background (cement and steel left out) IMAGE_CHANGED_SPREAD
        times that of this view's first IMAGE_SPREAD_FRAMES frames compared, or more. The view
        was flipped or turned on the C-arm's display, zoomed, or the C-arm moved further than the
        breathing registration follows: what differs is anatomy, not cement (an independent test:
        the lateral view flipped left-right at frame 20 raised a false paravertebral leak, and the
        distance read 21 mm against a truth of 2 mm, with no caveat)."""
        keep = ~comparison.exclude[::3, ::3]  # on the sample alone: this runs every frame
        if self._last_mask is not None:
            keep &= ~self._last_mask[::3, ::3]
        sample = comparison.difference[::3, ::3]
        if comparison.contrast is not None:  # judged as compared: a flip is no change of contrast
            sample = sample + comparison.contrast.over(comparison.layers[::3, ::3, LAYER_ATTENUATION])
        values = sample[keep]
        if values.size < 100:
            return False
        # each side's spread, and the narrower: anatomy that no longer matches widens both, where
        # cement (attenuation gained) or brightness control's harder beam (lost, over bone) widens one
        centre = median(values)
        over, under = values[values > centre] - centre, centre - values[values < centre]
        if min(over.size, under.size) < 50:
            return False
        spread = 1.4826 * min(median(over), median(under)) + 1e-9
        if len(self._usual_spread) < IMAGE_SPREAD_FRAMES:
            # new exposures only: a grabber sending each pulse several times sent copies of the
            # baseline's own exposure first, whose tiny spread made every later exposure read as
            # changed, monitoring lost (an independent review: each frame 5 times)
            if not self._repeat:
                self._usual_spread.append(spread)
            return False
        usual = max(small_median(self._usual_spread), IMAGE_USUAL_SPREAD_FLOOR)
        return spread >= IMAGE_CHANGED_SPREAD * usual

    def _too_blurred(self, comparison: Comparison) -> bool:
        """Whether the frame is blurred against the baseline past reading: a sd over
        BLUR_UNREADABLE_MM (over BLUR_UNREADABLE_PX working pixels where there is no scale)."""
        if comparison.blur is None:
            return False
        sigma = comparison.blur.sigma_px
        return sigma * self.pixel_mm > BLUR_UNREADABLE_MM if self.pixel_mm else sigma > BLUR_UNREADABLE_PX

    def _blur_said(self, comparison: Comparison) -> str:
        """How blurred (or sharpened) the frame is against the baseline, for people."""
        blur = comparison.blur
        size = (
            f"{blur.sigma_px * self.pixel_mm:.1f} mm"
            if self.pixel_mm
            else f"{blur.sigma_px * self.grid.scale:.1f} pixels"
        )
        if blur.sharpened:
            return (
                f"the {self.plane} image is sharpened against the baseline (by a kernel of sd {size}:"
                " the C-arm's or a display's edge enhancement changed)"
            )
        return (
            f"the {self.plane} image is blurred against the baseline (by a sd of {size}: the patient"
            " or the C-arm moving during the exposure, or the C-arm's or a display's image processing"
            " changed)"
        )

    def _blur_caveat(self, comparison: Comparison) -> Caveat | None:
        """Said on a frame blurred or sharpened against the baseline, read against the baseline
        filtered alike."""
        if comparison.blur is None:
            return None
        return Caveat(
            CaveatCode.BLUR_MATCHED,
            f"{self._blur_said(comparison)}: the baseline was filtered alike before comparing; the"
            " cement's edges read as the image shows them, and a small faint leak may show later",
        )

    def _changed_image(self, frame: int, comparison: Comparison) -> PlaneResult:
        """A frame that no longer matches the baseline (:meth:`_image_changed`), or is blurred
        past reading (:meth:`_too_blurred`): skipped, as an unreadable one is (no rule checked
        in this view, said as not monitored while it lasts; its shift, volume and outline stay
        those of its last frame read)."""
        self.unreadable_frames += 1
        if self._too_blurred(comparison):  # the more telling of the two where both
            why = Caveat(
                CaveatCode.BLURRED_FRAME,
                f"{self._blur_said(comparison)}: too much to read, nothing is read on it; hold the"
                " patient and the C-arm still, or restore the image processing",
            )
            return PlaneResult(self.plane, frame, (why,))
        why = Caveat(
            CaveatCode.IMAGE_CHANGED,
            f"image changed: the {self.plane} view no longer matches the one monitoring began with"
            " (flipped or turned on the display, zoomed, or the C-arm moved): nothing is read on it;"
            " restore the view, or start this level again",
        )
        return PlaneResult(self.plane, frame, (why,))

    def _unreadable(self, frame: int, share: float) -> PlaneResult:
        """A frame whose region is clipped white over CLIPPED_UNREADABLE_ABOVE of it (``share``):
        what is left is too little to tell the background's level from the cement's (on a
        realistic case the cement then vanished from the view). Nothing is measured on it (no
        front, no leak rule checked, no halo evidence, said as skipped); the breathing shift and
        the view's own volume stay those of its last frame read, which the level's volume goes on
        using (cement does not go away), and so does its outline, until ONE_VIEW_AFTER_UNREADABLE
        frames running leave the cement's shape to the other view (volume-one-view)."""
        self.unreadable_frames += 1
        why = Caveat(
            CaveatCode.SATURATED_FRAME,
            f"{self._clipped(share)}: its cement cannot be read, no rule is checked in this view, and"
            " this view's own reading of the volume is held at its last one",
        )
        dx, dy = self._shift
        caveats = tuple(filter(None, (self.anatomy_error, *self.caveats, why)))
        return PlaneResult(self.plane, frame, caveats, shift_px=(dx * self.grid.scale, dy * self.grid.scale))

    def _breaths_agree(self) -> bool:
        """Whether this view's breathing has moved as the other view's on the recent frames both
        registered themselves: BREATHING_PAIRS_MIN or more of them, this view's moving
        BREATHING_MIN_RANGE_MM or more, and a least-squares slope of it on the other's within
        BREATHING_SLOPE. Both views show the patient's cranio-caudal breathing down their rows
        only if both stand upright at the same magnification; a view upside down, or one whose
        vertebra lies off the rotation centre, moves otherwise, and its breathing is not taken."""
        if len(self._breath_pairs) < BREATHING_PAIRS_MIN:
            return False
        own, other = np.array(self._breath_pairs).T
        if np.ptp(own) < BREATHING_MIN_RANGE_MM:
            return False
        spread = float(np.sum((other - other.mean()) ** 2))
        if spread <= 0.0:
            return False
        slope = float(np.sum((other - other.mean()) * (own - own.mean()))) / spread
        return BREATHING_SLOPE[0] <= slope <= BREATHING_SLOPE[1]

    def _clipped_caveat(self, share: float, comparison: Comparison) -> Caveat | None:
        """Said on a frame whose region measured is clipped white over CLIPPED_SAID_ABOVE of it
        (``share``): cement is not read there (a faint leak into it could stay unseen); and where
        too little was left to register on (``comparison.held``), whose breathing was used."""
        if share < CLIPPED_SAID_ABOVE and not comparison.held:
            return None
        detail = f"{self._clipped(share)}: no cement is read there, and a faint leak into it could go unseen"
        if comparison.held:
            taken = (
                "the other view's is used" if comparison.held == "given" else "the last frame's shift is kept"
            )
            detail += f"; too little is left to register the breathing on, so {taken}"
        return Caveat(CaveatCode.IMAGE_CLIPPED, detail)

    def _contrast_caveat(self, comparison: Comparison) -> Caveat | None:
        """Said on a frame whose contrast changed against the baseline's (``comparison.contrast``):
        by how much, that it was taken out, and how much of the densest bone was left unread."""
        curve = comparison.contrast
        if curve is None:
            return None
        return Caveat(
            CaveatCode.CONTRAST_CHANGED,
            f"the {self.plane} image's contrast differs from the baseline's (a display's contrast or"
            f" brightness turned, or the exposure's kV changed): the difference ran over {curve.span:.2f}"
            " log units with the bone's density, and was taken out; its densest bone"
            f" ({max(curve.densest_unread, 0.001):.1%} of the region) is read as no cement on this frame",
        )

    def _clipped(self, share: float) -> str:
        return (
            f"{share:.0%} of the {self.plane} region measured is clipped white (the exposure raised past"
            " the image's range, e.g. brightness control on windowed video)"
        )

    def _measure(
        self,
        result: PlaneResult,
        cement: CementMap,
        body,
        shaft: ShaftReading | None,
        axis: AxisProfile | None,
    ) -> None:
        """The front's distance and the leaks, into ``result`` (front in image pixels)."""
        c = self.config
        reading = read_cement(
            cement,
            body,
            self._distances,
            shaft,
            self.grid,
            self.roi[:2],
            c.physics.cement_mu_per_mm,
            c.detection.front_min_ml,
            c.detection.leak_margin_mm,
            c.detection.leak_min_depth_mm,
            self._read_track(axis, cement.threshold),
        )
        if reading.front_under_cannula:
            result.overlay["front_under_cannula"] = True
        if reading.front_px is not None:
            result.distance_px = reading.front_px * self.grid.scale
            result.distance_mm = result.bolus_front_mm = reading.front_px * self.pixel_mm
            result.overlay["front"] = self.grid.to_full(*reading.front_at, self.roi[:2])
        result.leaks = reading.leaks

    def _judge_wall(self, result: PlaneResult) -> None:
        """Physics before the 5 mm rule: the first cement is at the cannula tip, in front of
        the wall, so a first front read beyond the wall found, or cement read behind a wall not
        yet trusted on the frame the first front is measured in front of it, means the wall is
        wrong (a posterior leak off a wall refuted the second way is only a possible one:
        CaseAnalyzer._uncorroborated); and while the wall is not armed, its distance is withheld
        (the front is still drawn) and only the leak rules are checked."""
        first = not self.front_seen and result.bolus_front_mm is not None
        if first:
            self.front_seen = True
            beyond = result.bolus_front_mm < -FIRST_CEMENT_BEYOND_MM
            early = result.volume_ml is not None and result.volume_ml < FIRST_CEMENT_ML
            found = self.wall_armed_by != "operator"  # the wall found, armed or not yet confirmed
            # Cement apart from the front, behind the wall, on the frame the first front is
            # measured: it cannot have come from the tip. It refutes only a wall not yet
            # trusted: behind a trusted one it may be a vein filling at once from a tip beside
            # the basivertebral foramen, a leak that must stay high (the simulator starts no
            # leak with the first cement, so the benchmark cannot show it either way).
            behind = [lk for lk in result.leaks if lk.site == "posterior" and not lk.line and lk.lobe is None]
            judged = early and found and self._state.prior is None
            if judged and beyond:
                self._disarm(
                    f"the first cement, at the cannula tip, read {-result.bolus_front_mm:.1f} mm beyond the"
                    " wall found, so that wall cannot be right",
                    refuted=True,
                )
            elif judged and behind and self.wall_armed_by is None:
                self._disarm(
                    f"on the first frame of cement, {sum(lk.volume_ml for lk in behind):.3f} mL read behind"
                    " the wall found while the bolus at the cannula tip was in front of it (it cannot"
                    " have come from the tip), so that wall cannot be right",
                    refuted=True,
                    by_cement=True,
                )
        armed = self.wall_armed_by is not None
        result.overlay["wall_state"] = "armed" if armed else "not-confirmed"
        if armed:
            return
        # a wall refuted, or not seen in the images, is drawn by the operator, not confirmed
        result.overlay["wall_confirmable"] = not self.wall_refuted
        result.distance_mm = result.distance_px = result.bolus_front_mm = None
        result.checked = tuple(c for c in result.checked if c != "proximity")
        result.caveats += (
            Caveat(
                CaveatCode.WALL_NOT_CONFIRMED,
                f"WALL NOT CONFIRMED, the 5 mm rule is not armed ({self._unarmed_why}):"
                f" {self._wall_todo}; leaks are still read, but a leak off this outline other"
                " than behind the wall may be only a possible one (the AP view backing it, or the body"
                " drawn, can make it sure), a posterior leak is confirmed by its growth rather than at"
                " once by a front beyond this wall, and cement running back along the needle is read"
                " only once the wall is armed",
            ),
        )

    def confirm_wall(self) -> str:
        """The operator confirms the wall found (or already drawn): the 5 mm rule is armed on
        it. Returns what was done, for the log."""
        if self.plane != "lateral":
            raise ValueError("the posterior wall is confirmed on the lateral view")
        if not isinstance(self.body, LateralBody) or not self.pixel_mm:
            raise ValueError("no posterior wall to confirm: draw it")
        if self.wall_refuted:
            raise ValueError(f"the wall found cannot be confirmed ({self.refuted_why}): redraw it")
        if self.wall_armed_by is not None:
            return f"posterior wall already armed ({self.wall_armed_by})"
        self._arm("operator", "5 mm rule armed on the wall the operator confirmed")
        return "posterior wall confirmed by the operator: 5 mm rule armed"

    def _shaft_axis(self, difference: np.ndarray, body) -> AxisProfile | None:
        """:func:`axis_profile` of the first cannula's shaft, in the lateral view only: read once
        a frame, for the cement under the steel from the tip back and where it crosses the wall."""
        if self.plane != "lateral" or not self.learnt.cannulas or not isinstance(body, LateralBody):
            return None
        c = self.learnt.cannulas[0]
        dx, dy = self._shift
        tip = (c.tip[0] - self.roi[0] + dx, c.tip[1] - self.roi[1] + dy)
        return axis_profile(difference, c, tip, body, self.pixel_mm)

    def _read_track(self, axis: AxisProfile | None, threshold: np.ndarray) -> TrackReading | None:
        """:func:`read_track` on the first cannula's ``axis``, only on an armed wall: the reading
        is where the shaft crosses the wall, so a wall not trusted (found 18.8 mm off on a tuning
        case) would make the bolus around the shaft a "leak" along it."""
        if axis is None or self.wall_armed_by is None:
            return None
        x0, y0, x1, y1 = self.roi
        others = None
        for other in self.learnt.cannulas[1:]:  # the second shaft, where it is in the region
            part = other.mask[y0:y1, x0:x1]
            others = part if others is None else (others | part)
        cannula, mu = self.learnt.cannulas[0], self.config.physics.cement_mu_per_mm
        return read_track(axis, threshold, cannula, self.pixel_mm, mu, others)

    # ----------------------------------------------------------------- operator

    def set_wall(self, points, shift: tuple[float, float] | None = None) -> str:
        """The operator's posterior wall: two points (cranial, caudal) in image pixels
        of the current frame (``shift``: that frame's breathing shift, working pixels from the
        baseline, when it is not the last frame's: a restart replaying the log). It replaces
        the wall found automatically (or stands in for a body not found) and is tracked with
        the breathing shift from now on. Returns what was done, for the log."""
        if self.plane != "lateral":
            raise ValueError("the posterior wall is drawn on the lateral view")
        if self.learnt is None or not self.pixel_mm:
            raise ValueError("no baseline or no millimetre scale yet: the wall cannot be placed")
        self._check_in_frame("wall's points", points)
        dx, dy = self._shift if shift is None else shift
        ends = tuple((wx - dx, wy - dy) for wx, wy in (self.grid.to_working(x, y) for x, y in points))
        cannula = self.learnt.cannulas[0] if self.learnt.cannulas else None
        if cannula is not None:  # this frame's tip against the wall as drawn (both shifted alike)
            # to the segment drawn, not its line: a short stroke far along the line through the tip
            # (another level's wall, in line with this one) lies as far as its nearest end
            (x1, y1), (x2, y2) = ends
            tx, ty = cannula.tip
            along = ((tx - x1) * (x2 - x1) + (ty - y1) * (y2 - y1)) / max(
                (x2 - x1) ** 2 + (y2 - y1) ** 2, 1e-9
            )
            along = min(max(along, 0.0), 1.0)
            away_mm = (
                float(np.hypot(x1 + along * (x2 - x1) - tx, y1 + along * (y2 - y1) - ty)) * self.pixel_mm
            )
            if away_mm > MAX_WALL_FROM_TIP_MM:
                raise ValueError(
                    f"the wall drawn lies {away_mm:.0f} mm from the cannula's tip; a vertebral body is"
                    f" at most about {MAX_WALL_FROM_TIP_MM:g} mm deep, so it is not this body's"
                    " posterior wall: draw it again"
                )
        stands_in = not isinstance(self.body, LateralBody)  # for a body not found
        body, done = body_from_wall(ends, self.body, cannula, self.pixel_mm)
        # The operator vouches for the wall only: endplates found with a wall that was not trusted
        # (CT tuning cases: a drawn wall made them raise 4 false high leaks) or nominal ones stay a
        # guess until the operator draws the body.
        if stands_in or self.body_nominal:  # a wall redrawn keeps the body nominal
            self.outline_guess = NOMINAL_OUTLINE
        elif self.wall_armed_by is None:
            self.outline_guess = "its endplates and anterior side were found with a wall not trusted"
        if self.outline_guess is not None:
            done += (
                f"; {self.outline_guess}, so leaks through them are possible leaks until the AP view"
                " backs them or the body is drawn"
            )
        if stands_in:  # no body found: the whole region around the tip, as before
            roi = self.learnt.roi
        else:  # the body with the wall drawn and its margins (15 mm behind the wall), and the region
            # measured so far: the far field of the region around the tip holds no leak of this body's
            # but what brightness control changes there (reporting 7019, an intensifier's field edge:
            # a high posterior leak 30 mm above the body, 26 frames before any)
            new = body_roi(body, self.learnt.roi, self.pixel_mm)
            roi = (*np.minimum(self.roi[:2], new[:2]).tolist(), *np.maximum(self.roi[2:], new[2:]).tolist())
        if roi != self.roi:
            self._use_roi(tuple(int(v) for v in roi))
        self.body = body
        if stands_in:
            self.anatomy_error = None
        self._unrefute()
        self._placed("wall", (dx, dy))
        self._arm("operator", "5 mm rule armed on the wall the operator drew")
        return done

    def _check_in_frame(self, what: str, points) -> None:
        """ValueError unless every (x, y) of ``points`` (image pixels) lies on the frame: an
        edit off the image (a typing slip on the command line, a wrong image size) measured
        the cement against a wall 200 mm away, with every alarm silent and the level said
        monitored (an independent test)."""
        h, w = self.shape
        for x, y in points:
            if not (-1.0 <= x <= w and -1.0 <= y <= h):  # a pixel's slack at the edges
                raise ValueError(
                    f"the {what} ({x:g}, {y:g}) lie off the {self.plane} image ({w} x {h} pixels):"
                    " draw them on it"
                )

    def _placed(self, action: str, shift: tuple[float, float]) -> None:
        """Log the breathing shift an operator's edit was drawn at: a restart replays the edit
        at that shift, not at the last baseline frame's (a wall drawn mid-breath would move)."""
        mm = self.pixel_mm  # set: an edit is refused before the millimetre scale is known
        detail = (
            f"{self.plane} {action} kept where it was drawn, {shift[0] * mm:.1f} mm across and"
            f" {shift[1] * mm:.1f} mm down from the baseline's breathing position"
        )
        self.news.append(("edit-placed", detail, {"action": action, "shift_px": [float(v) for v in shift]}))

    def set_body(self, box, shift: tuple[float, float] | None = None) -> str:
        """The operator's vertebral body: a box (x, y, width, height) in image pixels of
        the current frame (``shift`` as for :meth:`set_wall`), in either view. It replaces the
        outline found (or stands in for one not found) and is tracked with the breathing
        shift from now on. Returns what was done, for the log."""
        if self.learnt is None or not self.pixel_mm:
            raise ValueError("no baseline or no millimetre scale yet: the body cannot be placed")
        x, y, w, h = (float(v) for v in box)
        s = self.grid.scale
        dx, dy = self._shift if shift is None else shift
        if min(w, h) * self.grid.full_pixel_mm < MIN_BOX_SIDE_MM:
            raise ValueError(f"the body box must be at least {MIN_BOX_SIDE_MM:g} mm on each side")
        if max(w, h) * self.grid.full_pixel_mm > MAX_BOX_SIDE_MM:
            raise ValueError(
                f"the body box is {max(w, h) * self.grid.full_pixel_mm:.0f} mm on a side; a vertebral body"
                f" is at most about {MAX_BOX_SIDE_MM:g} mm: draw it round the body"
            )
        self._check_in_frame("body box", [(x, y), (x + w, y + h)])
        wx, wy = self.grid.to_working(x, y)
        cannula = self.learnt.cannulas[0] if self.learnt.cannulas else None
        self.body = body_from_box(self.plane, (wx - dx, wy - dy), (w / s, h / s), cannula)
        self.body_drawn = True
        self.anatomy_error = None
        self._placed("body", (dx, dy))
        if self.plane == "lateral":
            self.outline_guess = None
            self._unrefute()
            self._arm("operator", "5 mm rule armed on the posterior side of the operator's box")
        self._use_roi(body_roi(self.body, self.learnt.roi, self.pixel_mm))
        return f"{self.plane} body outline replaced by the operator's box"


# The operator's wall or box is refused beyond these, as not this vertebra's: a lumbar body is
# about 30-45 mm deep and 40-55 mm wide, and the tip lies in it or in its pedicle.
MAX_WALL_FROM_TIP_MM = 60.0
MAX_BOX_SIDE_MM = 100.0

MAX_FRONT_STEP_MM = 3.0  # the front's distance may fall this much between two frames ...
MAX_FRONT_SPEED_MM_S = 20.0  # ... plus this much per second between them


LEAK_CORROBORATION_S = 0.3  # a lateral leak off a guessed outline: the AP's own leak this recent (s)


# A view unread (clipped white past reading) this many frames running leaves the cement's shape to
# the other view alone (biplane.one_view_volume_ml): its outline is an older frame's, which the cement
# outgrows (tuning 5031: 0.27 of the truth). Not on one frame: a view flickering in and out of reading
# would make the volume jump between the two readings (an independent review: 1.34 / 1.70 mL on
# alternate frames). 3 frames: 0.12 s at 25 frames a second.
ONE_VIEW_AFTER_UNREADABLE = 3

# The level's darkness is judged on its last this many results with a shape of 0.5 mL or more (two
# a frame, one per view), not on all of them: a hardening beam's darkness falls behind the cement
# as the bolus grows (tuning 5007 read 0.75-0.9 of the shape's truth to 1.5 mL, 0.55 from 2.5 mL),
# and a median over the whole level lagged it by 17 frames, the darkness's volume 40 % under the
# truth meanwhile. Chosen on the tuning seeds, replaying the benchmark's per-frame darkness and
# shape (one result a frame there: 5 / 10 / 15 / 20 frames gave a volume error of 9.7 / 9.8 / 10.0 /
# 10.0 %, p95 36.7 / 37.3 / 37.6 / 38.0 %, against 10.2 / 38.7 % over all); 10 frames, for a
# median that one frame's outline does not move. The simple world never reads under the
# threshold either way (2.6 / 9.5 %), but its margin is thinner: an independent review found the
# window's lowest median there 0.675 (case 19, whose shape over-reads 1.4-1.5x from 2 mL, its
# darkness right), where the whole level's was 0.685; a longer injection in such a room could
# cross 0.65, and the level's volume would then be the shape's. Run (session 57, with the cement
# apart read piece by piece): tuning 9.8 / 36.7 -> 9.6 / 36.6 %, reporting 8.6 / 28.4 -> 8.5 / 28.2 %.
LEVEL_SHARE_RESULTS = 20
# Where the level's darkness reads low (CaseAnalyzer.darkness_low: scatter, a hardening beam, a fainter
# cement than the profile's), cement apart from the bolus is read as a leak from this share of the
# leak size (CaseAnalyzer.apart_leak_size_ml): its volume is read from its darkness, which reads
# low there too, and with no outline to read it against (most real-CT levels) its size is all
# that holds a leak back. Tuning 5021 (CT, its darkness 0.44 of its shape's truth): the posterior
# leak apart from the bolus read 0.006 mL a frame after its onset, 0.07 mL having leaked, and was
# alarmed 3 frames late (session 65). A tuned sensitivity, not a measured scale: a leak's darkness
# read 0.1-1.2 of what had leaked on the tuning leaks, against the level's share (Spearman 0.5).
# Cement outside an outline keeps the configured size: scaled too (by the share's square root),
# it brought 3 false high alarms 1-6 frames earlier (tuning 5002, review seeds 9816 and 9819).
APART_SIZE_WHERE_DARKNESS_LOW = 0.5
_VIEW_NAMES = {"lateral": "lateral", "ap": "AP"}  # the views as people write them


class CaseAnalyzer:
    """Both planes of one level: distance, reconciled volume, alarms."""

    def __init__(self, config: AnalysisConfig | None = None):
        self.config = config or AnalysisConfig()
        self.planes: dict[str, PlaneAnalyzer] = {}
        # the operator said this level has an intravertebral cleft (seen on the images before the
        # procedure): its disc lobes where no armed outline places the endplate, and cement apart
        # above or below the bolus, are then only possible leaks (_unplaced_lobe_doubt, _uncorroborated)
        self.known_cleft = False
        self.alarms = AlarmEngine(self.config.alarms)
        self.volumes: dict[str, tuple[float, float]] = {}  # plane -> (volume, share filled in)
        # The syringe has calibrated the darkness (set by whoever applies the syringe scale): the
        # volume is then the darkness, not the shape's correction of the same under-read again.
        self.darkness_calibrated = False
        self._history: deque = deque(maxlen=40)  # (time, distance)
        self._held_cement: set[str] = set()  # views whose first frames held cement (late start)
        self._pending: dict[str, int] = {}
        # per view: the stream time (s) it last read cement outside its outline, and whether its
        # last result checked the leak rules (the AP's, to back a lateral leak off a guessed outline)
        self._leak_read_at: dict[str, float] = {}
        self._checks_leaks: dict[str, bool] = {}
        # per view: the last frame it read and that frame's veins' lines (not doubtful ones) read
        # behind the wall
        self._line_behind: dict[str, tuple[int, list[Leak]]] = {}
        # per view: what it last read of a disc lobe "above" or "below" the bolus: (stream time s,
        # its rise mm, whether the view was sure of it)
        self._lobes_read: dict[str, dict[str, tuple[float, float, bool]]] = {}
        self.scatter_seen: bool | None = None  # None: the cement's halo has not said yet
        self._scatter_carried: str | None = None  # why it was found none on the level before
        # what the darkness read of the shape's truth on the level's last LEVEL_SHARE_RESULTS
        # results with a shape of 0.5 mL or more (biplane.darkness_share): their median says
        # whether this room's darkness reads low. Not kept over a restart: it is read again from
        # the next frames (the decision itself is: darkness_low).
        self._darkness_shares: deque[float] = deque(maxlen=LEVEL_SHARE_RESULTS)
        # ... and on all those results, running sums of (log the shape's truth, log the darkness):
        # n (how many were read on the level), sum x, sum y, sum x^2, sum xy, min x, max x, for the
        # curve the darkness follows
        self._darkness_curve = (0, 0.0, 0.0, 0.0, 0.0, np.inf, -np.inf)
        # the level's darkness has read low (its median share under the level's threshold): the
        # room's, so kept for the level (a median rising back over it would make the volume said
        # fall while cement goes in), said once as news ("darkness-reads-low") and restored
        self.darkness_low = False
        self.news: list[tuple[str, str, dict]] = []
        # the views' darkness read without scatter correction from a frame on (assume_no_scatter),
        # on a level whose darkness was read with it: until it is brought to the new reading
        self._switch: _DarknessSwitch | None = None
        self._now_s = 0.0  # the stream time of the frame being analysed
        self.darkness_mixed = False  # ... read with the correction in one view, without in the other
        self._largest_volume: VolumeEstimate | None = None  # the largest said on this level
        self._largest_calibrated = False  # ... while the darkness was calibrated by a syringe, or not
        self._accepted: tuple[float, float] | None = None  # (time, distance) last alarmed on
        self._jumped: tuple[float, float] | None = None  # (time, distance) flagged as a jump
        self._speed = 0.0  # mm/s towards the wall between the last two distances alarmed on
        # per view: the stream times (s) of its newest frames, for when it falls silent
        self._seen_at: dict[str, deque[float]] = {}
        self._last_frame: dict[str, int] = {}  # per view: its newest frame's number
        self.silent: dict[str, tuple[float, int]] = {}  # silent view -> (its newest time s, frame)

    def recall_heard(self, plane: str, frame: int, time_s: float) -> None:
        """Note that ``plane`` sent its frame ``frame`` at ``time_s`` (stream s), judging
        nothing: :meth:`_heard` for each frame as it comes, and after a restart, the views' newest
        results before it (``restore_silence`` then), where only the baseline frames are fed
        again: a view's newest known frame was else its baseline's, and the first live frame of
        the other said it silent for the whole level so far."""
        self._seen_at.setdefault(plane, deque(maxlen=8)).append(time_s)
        self._last_frame[plane] = frame

    def restore_silence(self) -> None:
        """After a restart's recall: a view silent before it is silent still, and not said again."""
        for plane, times in self._seen_at.items():
            other = "ap" if plane == "lateral" else "lateral"
            others = self._seen_at.get(other)
            if others and times[-1] - others[-1] > self._silent_after(other):
                self.silent[other] = (others[-1], self._last_frame[other])

    def _silent_after(self, plane: str) -> float:
        """How long (s) ``plane`` may send no frame before it is silent: VIEW_SILENT_STEPS of
        its usual steps, at least VIEW_SILENT_S."""
        usual = usual_step(self._seen_at.get(plane, ())) or 0.0
        return max(VIEW_SILENT_S, VIEW_SILENT_STEPS * usual)

    def _heard(self, plane: str, frame: int, time_s: float) -> Caveat | None:
        """Note that ``plane`` sent a frame at ``time_s``; and decide whether the other view has
        fallen silent (VIEW_SILENT_STEPS of its usual steps, at least VIEW_SILENT_S, without a
        frame while this one's go on). Said once each way as news ("view-silent", "view-resumed")
        and on every result of this view while the other is silent (``view-silent``): the leak
        rules then have no current view to back or deny what this one reads, and the volume is
        this view's alone (:meth:`_read_volume`)."""
        self.recall_heard(plane, frame, time_s)
        if plane in self.silent:
            last_time, last_frame = self.silent.pop(plane)
            self.news.append(
                (
                    "view-resumed",
                    f"{_VIEW_NAMES[plane]} frames resumed at its frame {frame}, after"
                    f" {time_s - last_time:.1f} s without one (its frame {last_frame} the last before)",
                    {"plane": plane, "frame": frame, "silent_s": round(time_s - last_time, 3)},
                )
            )
        other = "ap" if plane == "lateral" else "lateral"
        times = self._seen_at.get(other)
        if not times:
            return None
        gap = time_s - times[-1]
        if gap <= self._silent_after(other):
            return None
        if other not in self.silent:
            self.silent[other] = (times[-1], self._last_frame[other])
            self.news.append(
                (
                    "view-silent",
                    f"no {_VIEW_NAMES[other]} frame for {gap:.1f} s while {_VIEW_NAMES[plane]} frames go"
                    f" on (its last at {times[-1]:.2f} s, frame {self.silent[other][1]}): the level is"
                    f" judged and measured in the {_VIEW_NAMES[plane]} view alone",
                    {"plane": other, "last_s": round(times[-1], 3), "frame": self.silent[other][1]},
                )
            )
        last_time, last_frame = self.silent[other]
        return Caveat(
            CaveatCode.VIEW_SILENT,
            f"no {_VIEW_NAMES[other]} frame since {last_time:.2f} s (its frame {last_frame}): nothing"
            f" backs or denies what the {_VIEW_NAMES[plane]} view reads, and the volume is read in it alone",
        )

    def _settle_scatter(self) -> None:
        """Whether the images hold the scatter modelled, from the cement's halo in each plane.

        A halo scale is biased by as much as the scatter's spread is off (+16 % for a
        spread 7 % too wide) and varies from case to case (the planes' mean 0.32-1.3 on
        our simulator's 30 cases, where it is 1), so it does not replace the configured
        scatter; but images with no scatter at all (0.03-0.22 on seven scatter-free
        renders) would read 1.3-1.9 times the volume with it."""
        fitted = [p for p in self.planes.values() if p.scatter_modelled]
        # one plane's halo alone is too uncertain (0.17 on a lateral view with scatter)
        if len(fitted) < 2 or any(p.halo.weight < HALO_DECIDE_WEIGHT for p in fitted):
            return
        scales = [p.halo.scale for p in fitted]
        scale = float(np.mean(scales))
        if scale >= SCATTER_SEEN_ABOVE:
            self.scatter_seen = True
            self.news.append(
                (
                    "scatter-seen",
                    f"the cement's halo shows the scatter modelled (the views' mean scale {scale:.2f} of"
                    " the configured): the darkness is read with the scatter correction from here on, on"
                    " this level and the next ones",
                    {"scale": round(scale, 3)},
                )
            )
        elif scale < NO_SCATTER_BELOW and max(scales) < SCATTER_SEEN_ABOVE:
            self.scatter_seen = False
        if self.scatter_seen is not None:
            for p in fitted:
                p.halo_open = False
        if self.scatter_seen is False:
            self.assume_no_scatter(f"scale {scale:.2f} of the configured scatter")

    @property
    def scatter_carried(self) -> str | None:
        """Why this level's images were found to hold no scatter (for the next level's caveat)."""
        return self._scatter_carried

    def carry_scatter(self, seen: bool | None, why: str | None) -> None:
        """A new level in the same room: whether its images hold scatter is the room's, so the
        last level's answer (``seen``; None: not settled there) is this one's from its first
        frame (``why`` the caveat's, where there is none). Without it a level read the scatter
        correction afresh until its own halo settled (about 1 mL in) while the syringes' scale
        carried over was learnt without it: a review's second level of the bundled case
        rendered without scatter read 2.67 mL for 1.43."""
        self.scatter_seen = seen
        self._scatter_carried = why

    def restore_scatter_seen(self) -> None:
        """After a restart: the cement's halo showed the scatter modelled before it (its
        "scatter-seen" logged, on this level or one before: the room's answer, carried). It is
        not watched again: on the bolus grown since, with no frame before the restart to
        compare, it could answer otherwise and switch the darkness's reading partway through
        the level, which the live analyzer did not do."""
        self.scatter_seen = True
        for p in self.planes.values():
            p.halo_open = False

    def assume_no_scatter(self, why: str, rescale: bool = True) -> None:
        """Read the volumes without scatter correction from now on (and say so). ``rescale``:
        what the level's darkness read so far is brought to the new reading once both views are
        read so (_rescaled_now); not after a restart, whose level reads so from its baseline."""
        self.scatter_seen = False
        self._scatter_carried = f"{why}, on a level before"
        switched = set()
        for p in self.planes.values():
            if p.scatter_modelled:
                p.read_without_scatter(why)
                switched.add(p.plane)
        read = {name: v for name, (v, _) in self.volumes.items() if name in switched}
        if rescale and read:
            when = {name: self.planes[name].time_s for name in read}
            filled = {name: f for name, (_, f) in self.volumes.items() if name in read}
            self._switch = _DarknessSwitch(self._now_s, read, when, filled, set(read))

    def plane(
        self, name: str, photometric: str, relationship: str | None, bits: int, pixel_mm: float | None
    ) -> PlaneAnalyzer:
        if name not in self.planes:
            self.planes[name] = PlaneAnalyzer(name, photometric, relationship, bits, pixel_mm, self.config)
            if self.scatter_seen is not None:  # the room's answer, from the level before (carry_scatter)
                self.planes[name].halo_open = False
                if self.scatter_seen is False:
                    self.planes[name].read_without_scatter(self._scatter_carried or "found before")
            self.planes[name].unplaced_lobe_doubt = functools.partial(self._unplaced_lobe_doubt, name)
            self.planes[name].breathing_elsewhere = functools.partial(self._breathing_elsewhere, name)
        return self.planes[name]

    def _breathing_elsewhere(self, plane: str, time_s: float) -> float | None:
        """The cranio-caudal breathing (mm at the vertebra, down the image, from the first
        frame) that the view other than ``plane`` registered on its own at the same instant as
        ``time_s`` or at its frame before (within BREATHING_ELSEWHERE_STEPS of its usual steps,
        and at most BREATHING_ELSEWHERE_S: a single-plane C-arm alternates its views, their
        frames are not at one time), or None. Breathing moves the patient cranio-caudally, which
        both views show down their rows: where brightness control has clipped one view's region
        until too little is left to register on (tuning 5001's AP from frame 23, 5029's from 16),
        the other's breathing since that view last registered is added to it
        (:meth:`PlaneAnalyzer._breaths_agree` says when), where keeping its last shift left it
        up to 1.9 mm off as the patient went on breathing. By time, not by frame number: the
        numbers of two runs begun apart, or at two rates, do not name one instant (until session
        73 the other's frame had to be this frame's number or the one before, so that two runs
        begun 0.8 s apart never lent each other their breathing)."""
        other_plane = "ap" if plane == "lateral" else "lateral"
        other = self.planes.get(other_plane)
        seen = None if other is None else other.breathing_registered
        if seen is None:
            return None
        usual = usual_step(self._seen_at.get(other_plane, ()))
        usual = BREATHING_ELSEWHERE_S if usual is None else usual
        if not 0.0 <= time_s - seen[1] <= min(BREATHING_ELSEWHERE_S, BREATHING_ELSEWHERE_STEPS * usual):
            return None
        return seen[2]

    def _unplaced_lobe_doubt(self, plane: str) -> str | None:
        """Why a disc lobe that no outline of ``plane`` places is only a possible leak now, or
        None (:meth:`PlaneAnalyzer._read_lobes`): the level's known cleft, which its cement fills
        as a lobe too; else, in the AP view, the lateral's armed outline placing the endplates."""
        if self.known_cleft:
            return LOBE_DOUBT
        lateral = self.planes.get("lateral")
        if plane == "ap" and lateral is not None and lateral.places_endplates:
            return LOBE_JUDGED_IN_LATERAL
        return None

    def process(
        self, plane: PlaneAnalyzer, pixels: np.ndarray, frame: int, time_s: float
    ) -> tuple[PlaneResult, CaseSummary]:
        """Analyse one frame; returns the plane result and what it means for the case: the
        reconciled volume, the time to the 5 mm line and the alarms raised now."""
        plane.apart_leak_size_ml = self.apart_leak_size_ml()
        plane.time_s = time_s
        # noted before its analysis, which may fail: the frame arrived all the same
        alone = self._heard(plane.plane, frame, time_s)
        r = plane.process(pixels, frame)
        if alone is not None and not r.baseline:
            r.caveats = (*r.caveats, alone)
        if any(c.code == CaveatCode.CEMENT_IN_BASELINE for c in r.caveats):
            self._held_cement.add(r.plane)
        self._now_s = time_s
        if self._switch is not None and self._switch.read:
            self._switch_progress(r.plane, r.volume_ml, time_s)
        if self.scatter_seen is None:
            self._settle_scatter()
        raised = []
        seconds_to_line = None
        self._checks_leaks[r.plane] = "leak" in r.checked
        if r.volume_ml is not None:
            self.volumes[r.plane] = (r.volume_ml, r.volume_filled)
            sw = self._switch
            if sw is not None and not sw.read and r.plane in sw.old:  # the switch frame's own
                sw.old[r.plane], sw.old_s[r.plane] = r.volume_ml, time_s
                sw.old_filled[r.plane] = r.volume_filled
        by_site: dict[str, list[Leak]] = {}
        behind: list[BehindWall] = []  # the confirmed leaks' pieces read behind the wall
        # the configured leak size, also where cement apart from the bolus is read from a smaller
        # one: a speck behind the wall must not move the distance
        least = self.config.detection.leak_min_ml
        # A vein's line has no leak size to stand for it: its reading behind the wall counts when
        # the view's frame before read one there too, near it (a line's site is confirmed by
        # lines on two frames, not necessarily the same line), and never a doubtful one.
        lines_behind = [lk for lk in r.leaks if lk.line and lk.doubt is None and lk.behind_wall]
        before_frame, before = self._line_behind.get(r.plane, (None, []))
        self._line_behind[r.plane] = (frame, lines_behind)
        if before_frame != frame - 1:
            before = []
        for leak in r.leaks:
            by_site.setdefault(leak.site, []).append(leak)
            if leak.lobe is not None:
                self._lobes_read.setdefault(r.plane, {})[leak.lobe] = (
                    time_s,
                    leak.lobe_rise_mm or 0.0,
                    leak.doubt is None,
                )
        for drawn in r.overlay.get("leaks", ()):  # a lobe the other view does not show is not drawn
            rise = drawn.get("lobe_rise_mm", 0.0)
            if "lobe" in drawn and self._lobe_backing(r.plane, drawn["lobe"], rise, time_s) is None:
                drawn["unbacked"] = True
        for site, leaks in by_site.items():
            confirmed, possible, how = self._judge_leak(r, site, leaks, frame, time_s)
            if possible is not None:  # labelled so on the overlay too
                for drawn in r.overlay.get("leaks", ()):
                    if drawn["site"] == site:
                        drawn["possible"] = True
            if confirmed:
                if how == "lobe":  # the lobes the other view backs, not one it does not show
                    leaks = [lk for lk in leaks if self._backs(r.plane, lk, time_s) is not None]
                else:  # a lobe is judged apart: the cement read otherwise is the evidence
                    leaks = [lk for lk in leaks if lk.lobe is None]
                    if how == "apart":  # beside a nominal outline, the same cement is read twice
                        leaks = [lk for lk in leaks if lk.apart] or leaks
                biggest = max(leaks, key=lambda lk: lk.volume_ml)
                evidence = {
                    "box_px": list(biggest.box),
                    "centroid_px": list(biggest.centroid),
                    "volume_ml": round(sum(lk.volume_ml for lk in leaks), 4),
                }
                raised += self.alarms.update_leak(
                    frame, r.plane, site, r.bolus_front_mm, evidence, possible, how
                )
                if possible is None:
                    # a piece of a leak's size; a line (no size to stand for it) as said above
                    behind += [
                        lk.behind_wall
                        for lk in leaks
                        if lk.behind_wall
                        and (lk.doubt is None and _near_one(lk, before) if lk.line else lk.volume_ml >= least)
                    ]
        behind_read = bool(behind) and self._cement_behind_wall(r, min(behind, key=lambda b: b.distance_mm))
        # a distance moved behind the wall by a leak the rules confirmed is no misread front
        jumped = (
            r.plane == "lateral" and r.distance_mm is not None and not behind_read and self._jump(r, time_s)
        )
        if jumped:  # not alarmed on, so not checked: said as such, not as a plain "no alarm"
            r.checked = tuple(c for c in r.checked if c != "proximity")
        if r.plane == "lateral" and r.distance_mm is not None and not jumped:
            self._history.append((time_s, r.distance_mm))
            seconds_to_line = self._seconds_to_line()
            evidence = {"front_px": r.overlay.get("front"), "wall_px": r.overlay.get("wall")}
            raised = (
                self.alarms.update_proximity(frame, r.plane, r.distance_mm, seconds_to_line, evidence)
                + raised
            )
        volume, doubt = self._volume()
        if doubt is not None:
            r.caveats = (*r.caveats, doubt)
        if volume is not None and volume.one_view is not None:
            r.caveats = (*r.caveats, self._one_view_caveat(volume.one_view))
        rescaled = self._rescaled_now(frame)
        return r, CaseSummary(volume, seconds_to_line, [a.as_dict() for a in raised], rescaled)

    def _switch_progress(self, plane: str, volume_ml: float | None, time_s: float) -> None:
        """After the switch frame: ``plane``'s volume read now (without the correction; None
        when unread) gives its own ratio; a view silent or held is not waited for (its darkness
        is not read), nor one unread for RESCALE_WAIT_S: its last volume, read with the
        correction, is brought to the new reading by the ratio of the views read since."""
        sw = self._switch
        if plane in sw.waiting and volume_ml is not None:
            if sw.old[plane] > 0 and volume_ml > 0:
                sw.ratios[plane] = volume_ml / sw.old[plane]
                if time_s - sw.old_s[plane] <= RESCALE_PROMPT_S:
                    sw.prompt.add(plane)
            sw.waiting.discard(plane)
        sw.waiting -= {
            p for p in sw.waiting if p in self.silent or (p in self.planes and self.planes[p].holding)
        }
        if sw.waiting and time_s - sw.time_s >= RESCALE_WAIT_S:
            common = sw.ratio()
            for p in sw.waiting:
                if common is not None and p in self.volumes:
                    v, filled = self.volumes[p]
                    self.volumes[p] = (v * common, filled)
            sw.waiting.clear()

    def _rescaled_now(self, frame: int | None) -> float | None:
        """Once no view is waited for after the switch (assume_no_scatter), the ratio of the
        level's darkness read without scatter correction to the one read with it
        (:meth:`_DarknessSwitch.ratio`; 0.55 on tuning 5035), within RESCALE_LEAST-1 (the
        correction only adds, and a larger ratio is growth). The level's darkness statistics
        are rescaled by it, and it is said ("darkness-rescale"; "darkness-not-rescaled" when
        nothing tells it). None on every other frame."""
        sw = self._switch
        if sw is None or not sw.read or sw.waiting:
            return None
        self._switch = None
        ratio = sw.ratio()
        when = f"frame {frame}" if frame is not None else "the last frames of the level"
        if ratio is None:
            self.news.append(
                (
                    "darkness-not-rescaled",
                    f"the darkness is read without scatter correction from {when}, but no view read"
                    " it both ways: what it read before on this level (and syringes anchored on it)"
                    " stays on the old reading",
                    {"frame": frame},
                )
            )
            return None
        ratio = min(max(ratio, RESCALE_LEAST), 1.0)
        self.rescale_darkness(ratio)
        read = ", ".join(f"{_VIEW_NAMES[v]} {sw.ratios[v]:.2f}" for v in sorted(sw.ratios))
        self.news.append(
            (
                "darkness-rescale",
                f"the darkness is read without scatter correction from {when}: what it read"
                f" before on this level is rescaled by {ratio:.2f} to it (each view's new reading over"
                f" its last with it: {read})",
                {"ratio": round(ratio, 9), "frame": frame},
            )
        )
        return ratio

    def finish_switch(self) -> float | None:
        """The level ends (a next one starts) while its darkness is read half with scatter
        correction and half without: the rescale the views read again give (None where none
        was, or none pending), as :meth:`_rescaled_now` would have made it."""
        sw = self._switch
        if sw is None or not sw.read:
            return None
        sw.waiting.clear()
        return self._rescaled_now(None)

    @property
    def darkness_switching(self) -> bool:
        """The darkness's reading changed on this level and it is not rescaled yet."""
        return self._switch is not None

    def rescale_darkness(self, ratio: float) -> None:
        """The level's statistics of its darkness against the shape, as if read ``ratio`` times
        what they were: each share, and the curve's log darkness shifted by log ``ratio`` (also
        after a restart, for a "darkness-rescale" logged after the curve restored)."""
        self._darkness_shares = deque((v * ratio for v in self._darkness_shares), maxlen=LEVEL_SHARE_RESULTS)
        n, sx, sy, sxx, sxy, x_min, x_max = self._darkness_curve
        shift = math.log(ratio)
        self._darkness_curve = (n, sx, sy + n * shift, sxx, sxy + shift * sx, x_min, x_max)

    @staticmethod
    def _one_view_caveat(plane: str) -> Caveat:
        """Said on every result while the cement's shape that gives or checks the volume is read
        from ``plane`` alone (biplane.one_view_volume_ml): why, and that its interval is wider."""
        other = "ap" if plane == "lateral" else "lateral"
        lo, hi = ONE_VIEW_SPREAD[plane]
        return Caveat(
            CaveatCode.VOLUME_ONE_VIEW,
            f"the cement's shape is read from the {_VIEW_NAMES[plane]} view alone: the {_VIEW_NAMES[other]}"
            " view gives no outline now (clipped white past reading, its image held, no region to read"
            " it in, or not streamed); each slice is taken as round, so the volume's 68 % interval is"
            f" wider (the truth x{lo:.2f}-{hi:.2f} of such a reading, where both views read x0.84-1.13)",
        )

    @staticmethod
    def _cement_behind_wall(r: PlaneResult, deepest: BehindWall) -> bool:
        """On a frame whose leak behind the posterior wall the leak rules confirmed (a posterior
        leak, or a vein through the wall; not only a possible one), the ``deepest`` of its pieces
        of a leak's size is the distance (the front's marker moved there and labelled so) while
        the bolus's front reads in front of the wall (or none is read): cement that left the body
        lies beyond the wall, where the bolus's edge, at half its own level, reads a thin sheet or
        a vein apart from it as the bolus. A front already beyond the wall stays: it is the front
        rule's own edge, where a vein's tapering end reads 0.3-0.8 mm deeper than the truth. Only
        on an armed wall, and only a confirmed leak's pieces of a leak's size: a speck behind the
        wall (noise, a misregistered edge) must not read as cement beyond it and raise the 5 mm
        alarm. Returns whether the distance moved."""
        front = r.bolus_front_mm
        if r.overlay.get("wall_state") != "armed" or (
            front is not None and (front < 0 or deepest.distance_mm >= front)
        ):
            return False
        r.distance_mm, r.distance_px = deepest.distance_mm, deepest.distance_px
        r.overlay["front"] = deepest.at
        r.overlay["front_behind_wall"] = True
        r.overlay.pop("front_under_cannula", None)
        return True

    def _judge_leak(
        self, r: PlaneResult, site: str, leaks: list[Leak], frame: int, time_s: float
    ) -> tuple[bool, str | None, str]:
        """What a view's leaks at ``site`` on this frame mean: whether they are confirmed, why
        they are only a possible leak (None: the leak itself) and how they were read ("line",
        "apart", "outline" or "lobe"). The cement outside the outline (or apart from the bolus),
        the veins read as lines and the disc lobes are judged apart, so that none lends another
        its standing: cement is confirmed at 2.5 times the leak size, at the leak size on two
        frames running, or at once behind the wall when the front itself reads beyond it (cement
        apart from the bolus alone: at :meth:`apart_leak_size_ml`, half the configured size where
        the level's darkness reads low, confirmed by such readings too; APART_KEY); a line
        at any volume on two frames running of lines; a lobe above or below the bolus
        (:mod:`monitor.vision.lobes`) when the other view read one on the same side within
        LEAK_CORROBORATION_S, a disc leak at once (two views agreeing), whatever its volume. A
        line stands on its own (it is read without the outline) unless its view doubts it
        (:data:`LINE_DOUBT`); cement outside an outline whose wall is not confirmed may need the
        AP's backing (:meth:`_uncorroborated`)."""
        cfg = self.config.detection
        key = f"{r.plane}:{site}"
        outline = [lk for lk in leaks if not lk.line and lk.lobe is None]
        # Cement apart from the bolus at leak size (beside a nominal outline: PlaneAnalyzer.
        # _read_apart) is judged alone, as with no outline: the nominal outline's cement at the
        # site neither adds to it nor lends it its doubt.
        apart = [lk for lk in outline if lk.apart]
        if apart and sum(lk.volume_ml for lk in apart) >= self.apart_leak_size_ml():
            outline = apart
        lines = [lk for lk in leaks if lk.line]
        backed = [(lk, b) for lk in leaks if (b := self._backs(r.plane, lk, time_s)) is not None]
        by_lobe = bool(backed)
        sure_lobe = any(lk.doubt is None or other_sure for lk, (_, _, other_sure) in backed)
        lobe_doubt = None if sure_lobe or not backed else backed[0][0].doubt
        cement_ml = sum(lk.volume_ml for lk in outline)
        apart_only = bool(outline) and all(lk.apart for lk in outline)
        size = self.apart_leak_size_ml() if apart_only else cfg.leak_min_ml
        before = max(
            self._pending.get(key, -10), self._pending.get(key + APART_KEY, -10) if apart_only else -10
        )
        # A posterior leak with the front itself measured clearly beyond the wall is
        # two measurements agreeing: no need to wait for it to grow.
        beyond_wall = (
            site == "posterior"
            and r.bolus_front_mm is not None
            and r.bolus_front_mm <= -cfg.leak_min_depth_mm
        )
        by_cement = bool(outline) and (
            cement_ml >= 2.5 * size or beyond_wall or (cement_ml >= size and before == frame - 1)
        )
        by_line = bool(lines) and self._pending.get(key + LINE_KEY, -10) == frame - 1
        self._note_leak(r.plane, site, cement_ml, frame, time_s, apart=apart_only)
        if lines:
            self._note_leak(r.plane, site, 0.0, frame, time_s, line=True)
        sure_line = any(not lk.doubt for lk in lines)
        line_doubt = None if sure_line or not lines else lines[0].doubt
        cement_doubt = self._uncorroborated(r, site, time_s, apart_only) if outline else None
        how = "apart" if apart_only else "outline"
        if by_cement and cement_doubt is None:
            return True, None, how
        if by_lobe and sure_lobe:
            return True, None, "lobe"
        if by_line and sure_line:
            return True, None, "line"
        if by_cement:
            return True, cement_doubt, how
        if by_lobe:
            return True, lobe_doubt, "lobe"
        if by_line:
            return True, line_doubt, "line"
        return False, (cement_doubt if outline else line_doubt), how

    def _backs(self, plane: str, leak: Leak, time_s: float) -> tuple[float, float, bool] | None:
        """What of the other view backs ``leak`` if it is a disc lobe (:meth:`_lobe_backing`)."""
        if leak.lobe is None:
            return None
        return self._lobe_backing(plane, leak.lobe, leak.lobe_rise_mm or 0.0, time_s)

    def _lobe_backing(
        self, plane: str, side: str, rise_mm: float, time_s: float
    ) -> tuple[float, float, bool] | None:
        """The other view's reading (stream time s, rise mm, sure) of a disc lobe on ``side``
        ("above" or "below") as far from its bolus as ``rise_mm`` (within LOBE_RISE_AGREES_MM or
        30 %: the views' magnifications differ a little) within LEAK_CORROBORATION_S (stream
        seconds) of ``time_s``; None when it read none."""
        other = "ap" if plane == "lateral" else "lateral"
        read = self._lobes_read.get(other, {}).get(side)
        if read is None or abs(time_s - read[0]) > LEAK_CORROBORATION_S:
            return None
        if abs(read[1] - rise_mm) > max(LOBE_RISE_AGREES_MM, 0.3 * max(read[1], rise_mm)):
            return None
        return read

    def recall_leak_reading(self, plane: str, frame: int, time_s: float, checks, leaks) -> None:
        """What a view's result logged before a restart said of leaks, taken back as
        :meth:`process` took it: whether the view checked the leak rules (``checks``, the rules
        the result names, None when it does not say) and, of its ``leaks`` (its overlay's: dicts
        with "site" and "volume_ml"), the sites read at leak size on ``frame`` at stream time
        ``time_s``. So a leak read on the last frame before the restart is confirmed on the
        first after it, as it would have been without one, and the AP's reading backs a lateral
        leak off a wall not confirmed (:meth:`_uncorroborated`) across the restart too, as does
        each view's disc lobe (its "lobe" side) the other's. Not taken back: where a vein's line
        lay behind the wall (the overlay does not keep it), so a line through the wall moves the
        distance one frame later than it would have (the safe side)."""
        if checks is not None:  # None: an analyzer that did not say (logs before 2026-12)
            self._checks_leaks[plane] = "leak" in checks
        by_site: dict[str, float] = {}
        apart_by_site: dict[str, float] = {}  # ... of which apart from the bolus ("apart")
        lines: set[str] = set()
        for leak in leaks or ():
            if leak.get("lobe"):
                rise, sure = float(leak.get("lobe_rise_mm", 0.0)), not leak.get("lobe_doubt")
                self._lobes_read.setdefault(plane, {})[leak["lobe"]] = (time_s, rise, sure)
            elif leak.get("line"):
                lines.add(leak["site"])
            else:
                by_site[leak["site"]] = by_site.get(leak["site"], 0.0) + float(leak["volume_ml"])
                if leak.get("apart"):
                    apart_by_site[leak["site"]] = apart_by_site.get(leak["site"], 0.0) + float(
                        leak["volume_ml"]
                    )
        for site, volume in by_site.items():
            apart = apart_by_site.get(site, 0.0)
            if apart >= self.apart_leak_size_ml():  # judged on its cement apart alone (_judge_leak)
                self._note_leak(plane, site, apart, frame, time_s, apart=True)
            else:
                self._note_leak(plane, site, volume, frame, time_s)
        for site in lines:
            self._note_leak(plane, site, 0.0, frame, time_s, line=True)

    def _note_leak(
        self,
        plane: str,
        site: str,
        volume_ml: float,
        frame: int,
        time_s: float,
        line: bool = False,
        apart: bool = False,
    ) -> None:
        """A view's cement outside its outline at ``site`` (``volume_ml`` summed there): at leak
        size (the configured ``leak_min_ml``), or a vein read as a ``line`` at any size (kept
        apart, LINE_KEY), a reading the next frame confirms (``_pending``) and the AP's backing
        of a lateral leak (``_leak_read_at``), by frame number and stream time. Cement
        ``apart`` from the bolus at :meth:`apart_leak_size_ml` (smaller where the level's
        darkness reads low) is a reading too, kept apart (APART_KEY): it confirms only cement
        apart, and backs nothing."""
        if line:
            self._pending[f"{plane}:{site}{LINE_KEY}"] = frame
            self._leak_read_at[plane] = time_s
            return
        if volume_ml >= self.config.detection.leak_min_ml:
            self._pending[f"{plane}:{site}"] = frame
            self._leak_read_at[plane] = time_s
        if apart and volume_ml >= self.apart_leak_size_ml():
            self._pending[f"{plane}:{site}{APART_KEY}"] = frame

    def _uncorroborated(self, r: PlaneResult, site: str, time_s: float, apart: bool = False) -> str | None:
        """Why a leak read in ``r`` is only possible, or None when it stands on its own.
        ``apart``: it is cement apart from the bolus (:meth:`PlaneAnalyzer._read_apart`), read
        without the outline, so the outline's doubts below do not touch it.

        A lateral outline whose wall is not confirmed is a guess: its anterior side and endplates
        were found with it (a body found 10 mm short of its true front put the growing bolus
        "outside" it, read as a venous leak, on 4 of 5 false leak alarms seen on both seed sets).
        Such a leak anywhere but behind the wall raises the high alarm only when the AP view, while
        it checks the leak rules, also read cement outside its own outline in the last
        LEAK_CORROBORATION_S (stream seconds: the views may run at different rates); otherwise a
        medium one, said as possible. A posterior leak is not held back: it is the one the AP view
        cannot see, and the one that injures (leaks behind a wall not confirmed were on time in 2
        tuning cases, false in 1); unless the wall was refuted by cement read behind it on the
        first frame of cement (PlaneAnalyzer._judge_wall): behind a wall known to be wrong,
        short of the true one, cement may be inside the body (a gas cleft filling did this).
        With no AP view checking the leak rules (none, or no outline
        in it) nothing can back it: it stays a possible leak, said with that reason, a medium
        alarm (not silence) until the operator confirms the wall (and with it the outline shown),
        which makes the outline's leaks high at once (reporting seed 7019, a CT case with no AP
        outline, alarmed high falsely when this case went unheld). A wall the operator drew vouches
        for the wall alone: over an outline found with a wall not trusted, or none (nominal
        endplates), the same holds until the operator draws the body (``outline_guess``).

        On a level with a known cleft (``known_cleft``), cement read apart from the bolus above or
        below it (``apart``, sited disc) is a possible leak (:data:`CLEFT_APART_DOUBT`).

        In either view, on a level that held cement when monitoring began (:meth:`_cement_before`),
        a leak off the outline anywhere but behind the wall is a possible leak until the operator
        draws that view's body (``body_drawn``; confirming or drawing the wall alone does not vouch
        for the endplates): the outline and the tip were found on images holding cement (started
        8-20 frames late, the tuning cases put an endplate through the bolus, the tip at its far
        side, and read the new cement beyond them as disc, venous and paravertebral leaks)."""
        view = self.planes.get(r.plane)
        if site == "posterior":
            if r.plane == "lateral" and view is not None and view.wall_refuted_by_cement:
                return (
                    "the wall found was refuted: on the first frame of cement, cement lay behind it while"
                    " the bolus at the tip was in front of it, so cement behind that wall may be inside"
                    " the body (a cleft filling); draw the wall"
                )
            return None
        if (late := self._cement_before()) and not (view is not None and view.body_drawn):
            return f"{late}: draw the body (Adjust body) in the {r.plane} view to vouch for its outline"
        if apart and site == "disc" and self.known_cleft:
            return CLEFT_APART_DOUBT
        if r.plane != "lateral" or apart:
            return None
        if r.overlay.get("wall_state") == "not-confirmed":
            doubt = "the lateral wall is not confirmed"
        elif view is not None and view.outline_guess is not None:
            doubt = f"the lateral wall is the operator's but {view.outline_guess}"
        else:
            return None
        if not self._checks_leaks.get("ap", False):
            return f"{doubt} and no AP view checks the leak rules to back it"
        if time_s - self._leak_read_at.get("ap", -np.inf) <= LEAK_CORROBORATION_S:
            return None
        return f"{doubt} and the AP view shows no cement outside its outline"

    def _cement_before(self) -> str | None:
        """Why this level's outlines are doubtful when a view's first frames held cement (its
        results say CEMENT_IN_BASELINE: cement grew over them, monitoring having begun while it
        was injected, or was found there), or None."""
        if not self._held_cement:
            return None
        plane = min(self._held_cement)  # "ap" before "lateral": the same each time
        return (
            f"the {plane} view's first frames held cement (already there, or growing as when"
            " monitoring begins during an injection), so the outlines and tips were found on images"
            " holding cement"
        )

    def _volume(self) -> tuple[VolumeEstimate | None, Caveat | None]:
        """The level's volume (:meth:`_read_volume`), held where it falls under VOLUME_HOLD_SHARE
        of the largest said on this level (from VOLUME_HOLD_FROM_ML): cement does not go away,
        and such a fall is an image that lost it (an exposure clipped white under brightness
        control, an outline lost), not cement leaving. Reporting seed 7010 (an intensifier with
        brightness control on 8-bit video) read 0.04 mL for ten frames after 1.8 mL. The held
        volume is the largest one, with its interval, and says so (VOLUME_HELD); the darkness
        read now is kept in it (what a syringe calibrates). Not kept over a restart."""
        estimate, doubt = self._read_volume()
        if estimate is None:
            return None, doubt
        if self._largest_calibrated != self.darkness_calibrated:
            # once a syringe calibrates the darkness, the volume read is the darkness's, on
            # another scale than the shape's said before: the largest is taken again from here
            self._largest_volume, self._largest_calibrated = None, self.darkness_calibrated
        top = self._largest_volume
        if (
            top is not None
            and top.volume_ml >= VOLUME_HOLD_FROM_ML
            and estimate.volume_ml < VOLUME_HOLD_SHARE * top.volume_ml
        ):
            held = replace(top, darkness_ml=estimate.darkness_ml)
            return held, Caveat(
                CaveatCode.VOLUME_HELD,
                f"the volume read now ({estimate.volume_ml:.2f} mL) is under half the"
                f" {top.volume_ml:.2f} mL read before on this level: cement does not go away (an"
                f" exposure clipped white, an outline lost), so the volume said stays"
                f" {top.volume_ml:.2f} mL ({top.low_ml:.2f}-{top.high_ml:.2f}) until the images"
                f" read it again",
            )
        if top is None or estimate.volume_ml > top.volume_ml:
            self._largest_volume = estimate
        return estimate, doubt

    def _read_volume(self) -> tuple[VolumeEstimate | None, Caveat | None]:
        """The level's volume with its interval (:func:`monitor.vision.biplane.fused_volume`):
        the planes' darkness reconciled, checked against the cement's shape in the two views;
        and, when the darkness reads well under the shape (more scatter, a harder beam, a
        fainter cement than assumed, or brightness control), the caveat that says so."""
        if not self.volumes:
            return None, None
        # a silent view's darkness, or a held one's, is an older moment's: the view still heard
        # (and sending new exposures) reads the volume
        volumes = dict(self.volumes)
        sw = self._switch
        common = sw.ratio() if sw is not None and sw.read and sw.waiting else None
        if common is not None:
            # a view read without scatter correction already: the others' last volumes, read with
            # it, brought to that reading by its ratio until they are read again (the bundled case
            # rendered without scatter said 2.14 mL for 1.53 on such a frame, half on each)
            volumes.update({p: (v * common, f) for p, (v, f) in volumes.items() if p in sw.waiting})
        heard = [
            v
            for plane, v in volumes.items()
            if plane not in self.silent and not (plane in self.planes and self.planes[plane].holding)
        ]
        darkness = _reconciled(heard or list(volumes.values()))
        switching = sw is not None and not sw.read
        if switching:  # the last frame read with the correction
            sw.read = True
        # until no view is waited for (and on that frame, before the rescale)
        mixed = self.darkness_mixed = self._switch is not None and not switching
        planes = [self.planes.get(p) for p in ("lateral", "ap")]
        shape, one_view = None, None
        # Only outlines measured in a region, and on the view's last frame: a view with no cannula
        # found (and no body drawn) is measured over its whole frame, where brightness control and
        # breathing outline far more than the cement; a view clipped white past reading keeps an
        # older frame's outline, which the cement has outgrown.
        outlined = [
            p is not None
            and p.cement_mask is not None
            and bool(p.pixel_mm)
            and bool(p.learnt.cannulas or p.roi != p.learnt.roi)
            for p in planes
        ]
        # a view unread for ONE_VIEW_AFTER_UNREADABLE frames running: its outline is no longer the
        # cement's (one frame's flicker keeps it: the shape would jump between one view and two)
        stale = [
            bool(ok) and (p.unreadable_frames >= ONE_VIEW_AFTER_UNREADABLE or p.plane in self.silent)
            for ok, p in zip(outlined, planes, strict=True)
        ]
        fresh = [ok and not old for ok, old in zip(outlined, stale, strict=True)]
        # The bolus's shape, plus the cement apart from it (each piece read alone: a stray piece
        # would stretch the bolus's slices, and real cement is not dropped), in the two views'
        # mean reading of it.
        if all(outlined) and (all(fresh) or all(stale)):  # both unread: their last outlines, as they were
            lateral, ap = planes
            shape = biplane_volume_ml(lateral.shape_mask, lateral.pixel_mm, ap.shape_mask, ap.pixel_mm)
            if shape is not None:
                shape += 0.5 * (lateral.cement_apart_ml + ap.cement_apart_ml)
        elif any(fresh):  # the other view unread, unattached or without a region: this one alone
            view = planes[fresh.index(True)]
            shape, one_view = one_view_volume_ml(view.shape_mask, view.pixel_mm, view.plane), view.plane
            if shape is not None:
                shape += view.cement_apart_ml
        # the level's statistics of the darkness against the shape are the two views' shape's: one
        # view's reads the truth on another scale (x0.78-1.30 of it), per case
        share = darkness_share(darkness, shape) if one_view is None and not mixed else None
        if share is not None and np.isfinite(share) and darkness > 0:
            self._darkness_shares.append(share)
            x, y = float(np.log(darkness / share)), float(np.log(darkness))  # log truth, log darkness
            n, sx, sy, sxx, sxy, x_min, x_max = self._darkness_curve
            self._darkness_curve = (
                n + 1,
                sx + x,
                sy + y,
                sxx + x * x,
                sxy + x * y,
                min(x_min, x),
                max(x_max, x),
            )
        level_share = self._level_share()
        if (
            not self.darkness_low
            and level_share is not None
            and level_share < LEVEL_DARKNESS_AGREES_WITH_SHAPE
        ):
            self.darkness_low = True
            self.news.append(
                (
                    "darkness-reads-low",
                    f"the image's darkness reads the cement low on this level (a median"
                    f" {np.floor(level_share * 100) / 100:.2f} of what the cement's shape gives, over"
                    f" its last {len(self._darkness_shares)} results of"
                    f" {self._darkness_curve[0]}): the volume is the shape's until syringes"
                    f" are entered, and the growth since each is then the shape's where the darkness"
                    f" bends (or its shapes show no curve yet), else the darkness's on the curve they show",
                    {"median_share": round(level_share, 4)},
                )
            )
        if self.darkness_calibrated:
            # the syringe is the reference now: the shape's correction would be a second one. The
            # two views' shape's truth is kept beside it: where the darkness does not follow the
            # analyzer's physics, the growth since the last syringe is read from it
            # (monitor.vision.biplane.syringe_shape_volume)
            truth = None
            if shape is not None and shape >= SHAPE_MIN_ML and one_view is None:
                truth = shape / shape_of_truth(shape)[1]
            return replace(darkness_volume(darkness), shape_ml=truth), None
        estimate = fused_volume(
            darkness,
            shape,
            self.darkness_low,
            ONE_VIEW_SPREAD.get(one_view, SHAPE_SPREAD),
            weigh=one_view is None,
        )
        if estimate.checked:  # a shape big enough to read (SHAPE_MIN_ML) checks or gives the volume
            estimate = replace(estimate, one_view=one_view)
        views = "the two views" if one_view is None else f"the {_VIEW_NAMES[one_view]} view alone"
        # said where the bolus is big enough that its outline would give a shape even at the
        # shape's lowest reading of the truth (smaller ones are often too small to outline), or
        # where a view has no region to outline it in
        if not estimate.checked and darkness >= SHAPE_MIN_ML / shape_of_truth(SHAPE_MIN_ML)[0]:
            return estimate, Caveat(
                CaveatCode.VOLUME_UNCHECKED,
                f"the cement's outline cannot be read in a view (too faint, or the whole frame measured:"
                f" no cannula found, no body drawn) to check the volume read from the image's"
                f" darkness ({darkness:.2f} mL) against its shape: in a room whose scatter, beam or"
                f" cement differ from those assumed it reads low, so its 68 % interval reaches up to"
                f" {estimate.high_ml:.2f} mL; enter syringe volumes to calibrate it",
            )
        if estimate.reads_high:
            return estimate, Caveat(
                CaveatCode.VOLUME_ABOVE_SHAPE,
                f"the volume read from the image's darkness ({darkness:.2f} mL) is well above what the"
                f" cement's shape in {views} gives ({shape:.2f} mL outlined, about"
                f" {estimate.volume_ml:.2f} mL at its size): a denser cement or less scatter than"
                f" assumed make it read high (or the outline misses cement); until syringe volumes"
                f" are entered the volume is taken from the shape ({estimate.volume_ml:.2f} mL,"
                f" {estimate.low_ml:.2f}-{estimate.high_ml:.2f}, before any syringe scaling)",
            )
        if not estimate.reads_low:
            return estimate, None
        over_level = (
            ""
            if level_share is None
            # floored, so that a median just under LEVEL_DARKNESS_AGREES_WITH_SHAPE reads under it
            else f"; over this level's last results, a median {np.floor(level_share * 100) / 100:.2f} of it"
        )
        # refused on the level's reading alone, this frame's darkness may not be below the shape's
        reads = (
            "is below"
            if darkness < estimate.volume_ml
            else "has read low on this level, though not on this frame, against"
        )
        return estimate, Caveat(
            CaveatCode.VOLUME_BELOW_SHAPE,
            f"the volume read from the image's darkness ({darkness:.2f} mL) {reads} what the cement's"
            f" shape in {views} gives ({shape:.2f} mL outlined, about {estimate.volume_ml:.2f}"
            f" mL at its size{over_level}):"
            f" scatter, the beam, the cement's opacity or brightness"
            f" control make it read low (or the outline takes in more than cement); until syringe"
            f" volumes are entered the volume is taken from the shape ({estimate.volume_ml:.2f} mL,"
            f" {estimate.low_ml:.2f}-{estimate.high_ml:.2f}, before any syringe scaling)",
        )

    def apart_leak_size_ml(self) -> float:
        """The least cement apart from the bolus read as a leak (mL): the leak size configured
        (``leak_min_ml``), and :data:`APART_SIZE_WHERE_DARKNESS_LOW` of it where this level's
        darkness has read low (:attr:`darkness_low`, a decision kept for the level and restored
        after a restart, so the size neither drifts nor changes over one)."""
        size = self.config.detection.leak_min_ml
        return size * APART_SIZE_WHERE_DARKNESS_LOW if self.darkness_low else size

    def _level_share(self) -> float | None:
        """The median of what the darkness read of the shape's truth over this level's last
        LEVEL_SHARE_RESULTS results (:func:`monitor.vision.biplane.darkness_share`), or None
        before any."""
        return float(np.median(self._darkness_shares)) if self._darkness_shares else None

    def shape_darkness_exponent(self) -> float | None:
        """p in darkness = a * volume ** p as this level's shapes show it, where its darkness
        has read low over the level (darkness_low: its median share under
        LEVEL_DARKNESS_AGREES_WITH_SHAPE; a room that is not the analyzer's, whose darkness grows
        sublinearly as the beam hardens);
        None where it agrees (linear: the analyzer's physics) or too few shapes were read
        (:func:`monitor.vision.biplane.darkness_curve_exponent`). The syringe's anchors use it."""
        if not self.darkness_low:
            return None
        return darkness_curve_exponent(self._darkness_curve)

    def growth_from_shape(self) -> bool:
        """Whether a syringe's growth on this level is read from the cement's shape
        (monitor.vision.biplane.syringe_shape_volume) rather than from its darkness: the level's
        darkness has read low against the shape (darkness_low: a room that is not the analyzer's)
        and does not grow linearly with it, as far as its shapes show (the curve they show,
        shape_darkness_exponent, under DARKNESS_BENDS_UNDER, or not yet shown: too few shapes).
        Asked at each syringe's entry, which logs the answer for a restart to keep (the curve's
        sums are not restored). A darkness that reads low but linearly (a cement's attenuation
        misstated, the analyzer's physics otherwise) is what one syringe calibrates exactly,
        where the shape's own factor of the truth drifts as the bolus grows (the bundled case at
        1.8x the attenuation: its growth read 9 % low)."""
        if not self.darkness_low:
            return False
        p = self.shape_darkness_exponent()
        return p is None or p < DARKNESS_BENDS_UNDER

    def darkness_curve_record(self) -> list[float] | None:
        """The running sums behind shape_darkness_exponent, as the log holds them (the seven of
        monitor.vision.biplane.darkness_curve_exponent); None before any shape was summed."""
        return None if self._darkness_curve[0] == 0 else [float(v) for v in self._darkness_curve]

    def restore_darkness_curve(self, record: list[float]) -> None:
        """After a restart: the darkness's curve as a syringe's entry logged it
        (darkness_curve_record), so that a later entry chooses its growth on the curve the level
        had shown, not on none (a darkness low but linear would read the shape's growth)."""
        n, sx, sy, sxx, sxy, x_min, x_max = (float(v) for v in record)
        self._darkness_curve = (int(n), sx, sy, sxx, sxy, x_min, x_max)

    def restore_darkness_low(self) -> None:
        """After a restart: this level's darkness had read low before it (its "darkness-reads-low"
        news), so it goes on being refused, as without the restart."""
        self.darkness_low = True

    def _jump(self, r: PlaneResult, time_s: float) -> bool:
        """Whether the front's distance fell since the last one alarmed on by more than cement
        travels in the time between (MAX_FRONT_STEP_MM plus MAX_FRONT_SPEED_MM_S): a
        misread front (a speck, a wrong region) must not raise the 5 mm alarm on one frame.
        Such a frame is flagged on its result, not alarmed on and not counted as checked; the
        next frame that reads the front as near or nearer confirms it (a vein filling at once
        does jump; a front moving fast goes on moving), so a true jump alarms one frame later."""
        d = r.distance_mm

        def step(before: tuple[float, float]) -> float:  # at the speed seen so far, if faster
            speed = MAX_FRONT_SPEED_MM_S + max(0.0, self._speed)
            return MAX_FRONT_STEP_MM + speed * (time_s - before[0])

        near = self._accepted is None or self._accepted[1] - d <= step(self._accepted)
        # the frame after a jump confirms it when it too reads the front near: where the jump
        # put it or nearer (a front still moving fast is accepted, not flagged frame after frame)
        confirmed = self._jumped is not None and d <= self._jumped[1] + step(self._jumped)
        if near or confirmed:
            if self._accepted is not None and time_s > self._accepted[0]:
                self._speed = (self._accepted[1] - d) / (time_s - self._accepted[0])
            self._accepted, self._jumped = (time_s, d), None
            return False
        self._jumped = (time_s, d)
        r.caveats += (
            Caveat(
                CaveatCode.DISTANCE_JUMP,
                f"the front's distance fell from {self._accepted[1]:.1f} to {d:.1f} mm in"
                f" {time_s - self._accepted[0]:.2f} s, faster than cement travels: not alarmed on"
                " until the next frame confirms it",
            ),
        )
        return True

    def _seconds_to_line(self) -> float | None:
        if len(self._history) < 4:
            return None
        t = np.array([h[0] for h in self._history])
        d = np.array([h[1] for h in self._history])
        recent = t >= t[-1] - 1.5
        if recent.sum() < 3 or np.ptp(t[recent]) <= 0:
            return None
        slope = np.polyfit(t[recent], d[recent], 1)[0]
        if slope >= -0.05:
            return None
        return max(0.0, (d[-1] - self.config.alarms.proximity_mm) / -slope)


# A vein's line read behind the wall counts when the frame before read one behind it whose box lay
# this near (mm at the vertebra): the same vein, grown or not, not another read elsewhere. Not
# its deepest point: a vein running along the wall in the epidural plexus is about as deep all
# along, and its deepest point moved 86 px (11 mm) up and down it between frames (tuning 5031).
LINE_STEP_MM = 3.0


def _near_one(line: Leak, before: list[Leak]) -> bool:
    """Whether one of ``before`` (the view's lines behind the wall on its frame before) lies
    within LINE_STEP_MM of ``line`` (one behind the wall now), box to box."""
    mm_per_px = line.behind_wall.distance_mm / line.behind_wall.distance_px  # both negative: beyond
    x, y, w, h = line.box

    def gap(other: Leak) -> float:
        ox, oy, ow, oh = other.box
        dx = max(0, ox - (x + w), x - (ox + ow))
        dy = max(0, oy - (y + h), y - (oy + oh))
        return float(np.hypot(dx, dy)) * mm_per_px

    return any(gap(other) <= LINE_STEP_MM for other in before)


def _reconciled(estimates: list[tuple[float, float]]) -> float:
    """One volume from the planes' (volume, share filled in under the cannula):
    each plane weighted by how little of it was interpolated rather than seen.
    A shaft lying along the bolus in one view can hide half of it there, while
    the other view sees the same shaft foreshortened."""
    weights = [1.0 / (filled + 0.05) for _, filled in estimates]
    return float(sum(w * v for w, (v, _) in zip(weights, estimates, strict=True)) / sum(weights))


def _reach_px(body, lobe) -> float:
    """How far a disc lobe reaches outside ``body``'s outline (its polygon in the ROI's working
    pixels): its far edge's (the top row of a lobe above the bolus, the bottom row of one below,
    at that row's middle), in working pixels; negative when the lobe lies wholly inside."""
    ys, xs = np.nonzero(lobe.mask)
    row = ys.min() if lobe.above else ys.max()
    polygon = np.asarray(body.outline(), np.float32).reshape(-1, 1, 2)
    return -cv2.pointPolygonTest(polygon, (float(xs[ys == row].mean()), float(row)), True)
