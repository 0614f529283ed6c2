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

from collections import deque
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from monitor.vision.alarms import PLANE_CHECKS, AlarmConfig, AlarmEngine
from monitor.vision.anatomy import (
    ApBody,
    LateralBody,
    NotFound,
    exposed_field,
    find_ap_body,
    find_cannulas,
    find_lateral_body,
    shaft_band,
)
from monitor.vision.baseline import (
    EXCLUDED_ABOVE,
    LAYER_ATTENUATION,
    LAYER_EXCLUDED,
    LAYER_GRADIENT,
    LAYER_SLEEVE,
    SLEEVE_ABOVE,
    BaselineState,
    find_cement_in_baseline,
)
from monitor.vision.body import (
    MIN_BOX_SIDE_MM,
    body_from_box,
    body_from_wall,
    body_roi,
    lies_inside,
    shifted_body,
)
from monitor.vision.caveats import Caveat, CaveatCode, render_status
from monitor.vision.cement import (
    DEFAULT_CEMENT_MU,
    CementMap,
    Registration,
    ShaftReading,
    growing_bolus,
    integrated_volume_ml,
    segment,
    shift_image,
)
from monitor.vision.drawing import overlay_geometry
from monitor.vision.intensity import IntensityModel, model_for
from monitor.vision.measure import DistanceMaps, Leak, read_cement, read_shaft
from monitor.vision.pixels import PixelGrid
from monitor.vision.scatter import (
    HALO_DECIDE_WEIGHT,
    NO_SCATTER_BELOW,
    SCATTER_SEEN_ABOVE,
    HaloEvidence,
    ScatterPhysics,
    primary_attenuation,
)


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


@dataclass(frozen=True)
class OperatorInput:
    """What the operator said before monitoring began (the command line), applied once the
    baseline is in; live edits come as commands."""

    # the posterior wall, ((x, y) cranial, (x, y) caudal) in lateral image pixels
    posterior_wall: tuple | None = None
    # the body boxes, ((plane, (x, y, width, height)), ...) in image pixels of each plane
    body_boxes: tuple = ()


@dataclass(frozen=True)
class AnalysisConfig:
    """Everything the analysis is configured with, in one object built once (from a profile,
    a session log's settings and the command line: :meth:`from_settings`) and handed to
    every process that analyses."""

    physics: Physics = field(default_factory=Physics)
    detection: Detection = field(default_factory=Detection)
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
    distance_mm: float | None = None
    distance_px: float | None = None
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


@dataclass(frozen=True)
class CaseSummary:
    """What one frame means for the case (both planes): :meth:`CaseAnalyzer.process`."""

    volume_ml: float | None  # the level's volume, both planes' estimates reconciled (None: none yet)
    seconds_to_line: float | None  # predicted time until the front reaches the 5 mm line
    raised: list  # alarms raised on this frame, as Alarm.as_dict()


def _unusable(pixels: np.ndarray, bits_stored: int) -> Caveat | None:
    """Why a frame cannot be measured (blank, or saturated over most of it), or None."""
    sample = pixels[::4, ::4]
    top = 2**bits_stored - 1
    saturated = np.count_nonzero(sample >= top) / sample.size
    if saturated > 0.8:
        return Caveat(
            CaveatCode.SATURATED_FRAME, f"saturated frame ({saturated:.0%} of pixels at the maximum)"
        )
    if int(sample.max()) - int(sample.min()) <= max(2, top // 1000):
        return Caveat(CaveatCode.BLANK_FRAME, "blank frame (no contrast)")
    return None


class PlaneAnalyzer:
    """One plane's state and measurements.

    Frames are analysed at a working resolution of about ``pixels.WORK_PIXEL_MM``
    (1024-pixel detectors are binned 2x2), inside a region of interest around
    the cannula tip; results are reported in full-resolution image pixels.
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
        self._raw: list[np.ndarray] = []
        self.model: IntensityModel | None = None
        self.baseline: np.ndarray | None = None  # ROI of the registered mean baseline
        self._registration: Registration | None = None
        self.roi: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in working pixels
        self.cannulas = []
        self.body: LateralBody | ApBody | None = None
        self.anatomy_error: Caveat | None = None  # why the rules cannot be checked, while so
        self.caveats: list[Caveat] = []  # on every result from when each was added
        self._prior: tuple[np.ndarray, np.ndarray] | None = None  # cement already in the baseline
        self.shape: tuple[int, int] | None = None
        self._exclude: np.ndarray | None = None
        # baseline, its edge strength, pixels excluded, and (lateral) the sleeve: shifted in one warp
        self._layers: np.ndarray | None = None
        self._last_mask: np.ndarray | None = None
        self._shift = (0.0, 0.0)
        self._tip_roi: tuple[int, int, int, int] | None = None  # the ROI before the body was found
        self._tip_state: BaselineState | None = None  # over the ROI around the tip
        # the operator's, from the command line, used once the baseline is in (image pixels):
        self.operator_wall = None  # two points, the posterior wall (lateral)
        self.operator_box = None  # x, y, width, height: the body
        self._distances: DistanceMaps | None = None  # to the walls, over the current ROI
        self.without_scatter = False  # once the cement's halo has shown there is none
        self.halo_open = True  # still watched: until both planes' halos have settled the question
        self._scatter_layers: np.ndarray | None = None  # the baseline's intensity and modelled scatter
        self.halo = HaloEvidence()  # what the cement's halo says of the modelled scatter

    @property
    def full_pixel_mm(self) -> float | None:
        """Millimetres per image pixel at the vertebra (None: no scale)."""
        return self.grid.full_pixel_mm

    @property
    def scale(self) -> int:
        """Full pixels per working pixel, each way."""
        return self.grid.scale

    @property
    def pixel_mm(self) -> float | None:
        """Millimetres per working pixel (None: no scale)."""
        return self.grid.pixel_mm

    @property
    def scatter_modelled(self) -> bool:
        """Whether this plane's baseline models scatter (a scale, and a scatter fraction > 0),
        so that the cement's halo can say whether it is there."""
        return self._scatter_layers is not None

    def read_without_scatter(self, why: str) -> None:
        """Read the volumes without scatter correction from now on, and say so on every result."""
        self.without_scatter, self.halo_open = True, False
        self.add_caveat(
            CaveatCode.SCATTER_NOT_SEEN,
            f"the cement leaves no scatter halo ({why}), so volumes are read without scatter correction",
        )

    @property
    def halo_weight(self) -> float:
        return self.halo.weight

    @property
    def halo_scale(self) -> float:
        """The scale of the modelled scatter the halo supports, pooled over the frames so far."""
        return self.halo.scale

    # ----------------------------------------------------------------- pixels

    def _primary(self, pixels: np.ndarray, roi=None, scatter: bool = True, parts: bool = False):
        """:func:`primary_attenuation` of a frame of this plane."""
        return primary_attenuation(pixels, self.grid, self.model, self.physics, roi, scatter, parts)

    def _full(self, x: float, y: float) -> list[float]:
        """Working-ROI pixel to full-resolution image pixel."""
        return self.grid.to_full(x, y, self.roi[:2])

    # ----------------------------------------------------------------- baseline

    def _build_baseline(self) -> None:
        """From the first frames: the intensity model, the cannulas, the ROI around the tip,
        the registered mean baseline and its layers, the body, and the operator's input."""
        frames = self._raw
        self._read_intensity(frames)
        fits = bool(self.full_pixel_mm) and self.config.physics.scatter_fraction > 0
        parts = [self._primary(f, parts=True) if fits else (self._primary(f), None, None) for f in frames]
        plain = self._primary(frames[0], scatter=False)
        try:
            self.cannulas = find_cannulas(plain, self.pixel_mm)
        except NotFound as e:
            self.cannulas = []
            self.anatomy_error = Caveat(CaveatCode.NO_CANNULA, str(e))
        self.roi = self._roi_around_tip(parts[0][0].shape)
        self._register_baseline(parts, fits)
        exclude = self._make_layers(plain)
        if self.cannulas and self.pixel_mm:
            self._find_body(plain, exclude)
        elif not self.pixel_mm and self.cannulas:
            self.anatomy_error = Caveat(CaveatCode.UNCALIBRATED, "no millimetre scale, so no wall distance")
        self._tip_roi = self.roi
        self._tip_state = BaselineState(
            self.baseline, self._layers, self._exclude, self._prior, self._scatter_layers
        )
        if self.body is not None:
            self._use_roi(self._body_roi())
        self._apply_operator_input()

    def _read_intensity(self, frames: list[np.ndarray]) -> None:
        self.model = model_for(self.photometric, self.relationship, self.bits_stored, frames)
        if self.model.relationship == "LOG" and not self.model.log_scale_measured:
            self.add_caveat(
                CaveatCode.LOG_SCALE_GUESSED,
                "the LOG detector's scale could not be measured from its noise"
                " (filtered or too few frames); volumes assume three decades over the full range"
                " until syringe volumes are entered",
            )

    def _roi_around_tip(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) working pixels: ``roi_half_mm`` around the first cannula's tip
        (without a scale, 30 % of the frame's larger side), or the whole frame without one."""
        h, w = shape
        if not self.cannulas:
            return 0, 0, w, h
        tx, ty = self.cannulas[0].tip
        half = self.config.detection.roi_half_mm / self.pixel_mm if self.pixel_mm else 0.3 * max(h, w)
        return int(max(0, tx - half)), int(max(0, ty - half)), int(min(w, tx + half)), int(min(h, ty + half))

    def _register_baseline(self, parts: list, fits: bool) -> None:
        """The baseline: the frames' attenuation over the ROI registered to the first and
        averaged; with ``fits``, their intensity and modelled scatter likewise."""
        x0, y0, x1, y1 = self.roi
        first_roi = Registration(parts[0][0][y0:y1, x0:x1])
        registered, measured = [first_roi.reference], []
        for i, (att, intensity, scatter) in enumerate(parts):
            dx, dy = (0.0, 0.0) if i == 0 else first_roi.shift(att[y0:y1, x0:x1])
            if i:
                registered.append(shift_image(att[y0:y1, x0:x1], -dx, -dy))
            if fits:  # the intensity and the scatter modelled in it, for refitting the scatter
                measured.append(shift_image(cv2.merge([intensity, scatter])[y0:y1, x0:x1], -dx, -dy))
        self.baseline = np.mean(registered, axis=0).astype(np.float32)
        self._scatter_layers = np.mean(measured, axis=0).astype(np.float32) if fits else None
        self._registration = Registration(self.baseline)

    def _make_layers(self, plain: np.ndarray) -> np.ndarray:
        """The layers shifted with the baseline (see LAYER_*); returns the pixels never to
        compare over the whole frame, (h, w) bool."""
        x0, y0, x1, y1 = self.roi
        smooth = cv2.GaussianBlur(self.baseline, (0, 0), 1.0)
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / 8
        gradient = cv2.magnitude(gx, gy)
        # Pixels never to compare: the cannulas (their lumen fills with cement) and
        # anything outside the collimated field (its edge does not move with the patient).
        outside = ~cv2.erode(exposed_field(plain).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        exclude = outside.copy()
        for c in self.cannulas:
            exclude |= c.mask
        self._exclude = exclude[y0:y1, x0:x1]
        sleeve = np.zeros_like(self._exclude)
        if self.plane == "lateral" and self.cannulas:
            # Cement running back along the shaft, in a sleeve narrower than the band
            # excluded above, may be the front: for it only the steel itself is left out.
            steel = np.any(
                [shaft_band(plain.shape, c.tip, c.direction, c.width_px, 1.15) for c in self.cannulas], 0
            )
            sleeve = (exclude & ~outside & ~steel)[y0:y1, x0:x1]
        self._layers = cv2.merge(  # in the order of LAYER_*
            [self.baseline, gradient, self._exclude.astype(np.float32), sleeve.astype(np.float32)]
        )
        return exclude

    def _find_body(self, plain: np.ndarray, exclude: np.ndarray) -> None:
        """The body on the first frame (``plain``: its attenuation without scatter correction),
        after the cement already in the baseline, if any, is found and painted out."""
        x0, y0, x1, y1 = self.roi
        c = self.config
        found = find_cement_in_baseline(
            self.baseline,
            self._exclude,
            self.cannulas,
            self.roi[:2],
            self.pixel_mm,
            c.physics.cement_mu_per_mm,
        )
        if found is not None:
            self._prior = (found.mask, found.values)
            self.add_caveat(
                CaveatCode.CEMENT_IN_BASELINE,
                f"about {found.volume_ml:.1f} mL was already there when monitoring began,"
                " estimated from the first frames and counted in distance, leaks and volume",
            )
            # its edges are not the body's: look for the body without it
            plain = plain.copy()
            hole = self._prior[1] > 0
            window = plain[y0:y1, x0:x1]
            filled = cv2.inpaint(window, (hole | self._exclude).astype(np.uint8), 5, cv2.INPAINT_TELEA)
            window[hole] = filled[hole]
        try:
            if self.plane == "lateral":
                self.body = find_lateral_body(plain, self.cannulas[0], self.pixel_mm, exclude)
            else:
                self.body = find_ap_body(plain, self.cannulas[0], self.pixel_mm, exclude)
        except NotFound as e:
            self.anatomy_error = Caveat(CaveatCode.NO_ANATOMY, str(e))
        if self._prior is not None and (
            self.body is None or not lies_inside(self._prior[0], self.body, self.roi[:2], self.pixel_mm)
        ):
            self.body = None
            self.anatomy_error = Caveat(
                CaveatCode.NO_ANATOMY,
                "cement already in the baseline hides the body's outline"
                " (draw the posterior wall to measure)",
            )

    def _apply_operator_input(self) -> None:
        """The operator's body box and wall from the command line, now that there is a baseline."""
        for unused, value, apply in (
            (CaveatCode.OPERATOR_BOX_UNUSED, self.operator_box, self.set_body),
            (CaveatCode.OPERATOR_WALL_UNUSED, self.operator_wall, self.set_wall),
        ):
            if value is not None:
                try:
                    apply(value)
                except ValueError as e:
                    self.add_caveat(unused, str(e))

    def add_caveat(self, code: CaveatCode, detail: str) -> None:
        """A caveat on every result from now on (several are kept, none lost); ``detail``
        says what happened and what it means for the measurement."""
        self.caveats.append(Caveat(code, detail))

    def has_caveat(self, code: CaveatCode) -> bool:
        return any(c.code == code for c in self.caveats)

    def _body_roi(self) -> tuple[int, int, int, int]:
        return body_roi(self.body, self._tip_roi, self.pixel_mm)

    def _use_roi(self, roi: tuple[int, int, int, int]) -> None:
        """Measure within ``roi`` (working pixels, inside the ROI around the tip) from now on."""
        x0, y0 = roi[0] - self._tip_roi[0], roi[1] - self._tip_roi[1]
        state = self._tip_state.window(slice(y0, y0 + roi[3] - roi[1]), slice(x0, x0 + roi[2] - roi[0]))
        self.roi = roi
        self.baseline, self._layers, self._exclude = state.attenuation, state.layers, state.exclude
        self._scatter_layers, self._prior = state.scatter_layers, state.prior
        self._registration = Registration(self.baseline)
        self._distances = DistanceMaps(self._exclude.shape)
        self._last_mask = None

    # ----------------------------------------------------------------- frames

    def process(self, pixels: np.ndarray, frame: int) -> PlaneResult:
        if self.shape is None:
            self.shape = pixels.shape
        elif pixels.shape != self.shape:
            return PlaneResult(
                self.plane,
                frame,
                (Caveat(CaveatCode.FRAME_SHAPE, f"frame is {pixels.shape}, stream is {self.shape}"),),
            )
        unusable = _unusable(pixels, self.bits_stored)
        if unusable:  # never into the baseline, never measured: it would read as cement everywhere
            return PlaneResult(self.plane, frame, (unusable,))
        if self.baseline is None:
            self._raw.append(pixels)
            if len(self._raw) < self.config.detection.baseline_frames:
                return PlaneResult(self.plane, frame, baseline=True)
            self._build_baseline()
            self._raw = []
        # the intensity and the scatter apart, while the halo is watched or once the scatter is dropped
        parts = self._scatter_layers is not None and (self.halo_open or self.without_scatter)
        if parts:
            att, measured, scatter = self._primary(pixels, self.roi, parts=True)
        else:
            att = self._primary(pixels, self.roi)
        ignore = self._exclude if self._last_mask is None else (self._exclude | self._last_mask)
        dx, dy = self._registration.shift(att, ignore, self._shift)
        self._shift = (dx, dy)
        layers = shift_image(self._layers, dx, dy)
        base, gradient = layers[..., LAYER_ATTENUATION], layers[..., LAYER_GRADIENT]
        # Rows and columns the shifted baseline does not cover are not comparable.
        bx, by = int(np.ceil(abs(dx))) + 2, int(np.ceil(abs(dy))) + 2
        uncovered = np.zeros(att.shape, bool)
        uncovered[:by, :] = uncovered[-by:, :] = uncovered[:, :bx] = uncovered[:, -bx:] = True
        exclude = (layers[..., LAYER_EXCLUDED] > EXCLUDED_ABOVE) | uncovered
        if parts:
            before = shift_image(self._scatter_layers, dx, dy)
        # without scatter, the measured intensities' own log ratio
        difference = np.log(before[..., 0] / measured) if self.without_scatter else att - base
        background = ~exclude if self._last_mask is None else ~(exclude | self._last_mask)
        sample = difference[::3, ::3][background[::3, ::3]]
        difference -= float(np.median(sample)) if sample.size else 0.0
        cement = segment(difference, gradient, exclude, self.pixel_mm)
        if parts and self.halo_open:
            self.halo.add(difference, cement.mask, exclude, (measured, scatter), before, self.pixel_mm)
        x0, y0 = self.roi[0], self.roi[1]
        # into ROI coordinates, then by the breathing shift
        body = None if self.body is None else shifted_body(shifted_body(self.body, -x0, -y0), dx, dy)
        shaft = self._read_shaft(cement.difference, dx, dy, body)
        cement = self._with_prior(cement, dx, dy)
        tips = [(c.tip[0] - x0 + dx, c.tip[1] - y0 + dy) for c in self.cannulas]
        self._last_mask = growing_bolus(cement.mask, tips, self.pixel_mm)
        result = PlaneResult(
            self.plane,
            frame,
            tuple(filter(None, (self.anatomy_error, *self.caveats))),
            shift_px=(dx * self.scale, dy * self.scale),
        )
        if self.pixel_mm:
            fill = exclude if self.cannulas else None
            result.volume_ml, result.volume_filled = integrated_volume_ml(
                cement, self.pixel_mm, self.config.physics.cement_mu_per_mm, fill, shaft
            )
        # Front and leaks also read the band's strips beside the steel, with the same
        # threshold: cement running back along the needle's track is the first to leave.
        sleeve = (layers[..., LAYER_SLEEVE] > SLEEVE_ABOVE) & ~uncovered
        seen = replace(cement, mask=cement.mask | (sleeve & (cement.difference > cement.threshold)))
        if body is not None:
            self._measure(result, seen, body, shaft)
            if self.pixel_mm:
                result.checked = PLANE_CHECKS[self.plane]
        result.overlay = overlay_geometry(
            result.overlay,
            self.grid,
            self.roi,
            (dx, dy),
            self.cannulas,
            body,
            seen,
            result.leaks,
            self.config.alarms.proximity_mm,
        )
        return result

    def _with_prior(self, cement: CementMap, dx: float, dy: float) -> CementMap:
        """``cement`` plus the cement that was already in the baseline, if any."""
        if self._prior is None:
            return cement
        mask, values = self._prior
        return replace(
            cement,
            mask=cement.mask | (shift_image(mask.astype(np.float32), dx, dy) > 0.5),
            difference=cement.difference + shift_image(values, dx, dy),
        )

    def set_wall(self, points) -> str:
        """The operator's posterior wall: two points (cranial, caudal) in image pixels
        of the current frame. It replaces the wall found automatically (or stands
        in for a body not found) and is tracked with the breathing shift from now on.
        Returns what was done, for the log."""
        if self.plane != "lateral":
            raise ValueError("the posterior wall is drawn on the lateral view")
        if self.baseline is None or not self.pixel_mm:
            raise ValueError("no baseline or no millimetre scale yet: the wall cannot be placed")
        dx, dy = self._shift
        ends = tuple((wx - dx, wy - dy) for wx, wy in (self.grid.to_working(x, y) for x, y in points))
        cannula = self.cannulas[0] if self.cannulas else None
        stands_in = not isinstance(self.body, LateralBody)  # for a body not found
        body, done = body_from_wall(ends, self.body, cannula, self.pixel_mm)
        if self.roi != self._tip_roi:  # the wall may lie outside the margins of the body found
            self._use_roi(self._tip_roi)
        self.body = body
        if stands_in:
            self.anatomy_error = None
        return done

    def set_body(self, box) -> str:
        """The operator's vertebral body: a box (x, y, width, height) in image pixels of
        the current frame, in either view. It replaces the outline found (or stands
        in for one not found) and is tracked with the breathing shift from now on.
        Returns what was done, for the log."""
        if self.baseline is None or not self.pixel_mm:
            raise ValueError("no baseline or no millimetre scale yet: the body cannot be placed")
        x, y, w, h = (float(v) for v in box)
        s = self.scale
        dx, dy = self._shift
        if min(w, h) * self.full_pixel_mm < MIN_BOX_SIDE_MM:
            raise ValueError(f"the body box must be at least {MIN_BOX_SIDE_MM:g} mm on each side")
        wx, wy = self.grid.to_working(x, y)
        cannula = self.cannulas[0] if self.cannulas else None
        self.body = body_from_box(self.plane, (wx - dx, wy - dy), (w / s, h / s), cannula)
        self.anatomy_error = None
        self._use_roi(self._body_roi())
        return f"{self.plane} body outline replaced by the operator's box"

    def _measure(self, result: PlaneResult, cement: CementMap, body, shaft: ShaftReading | None) -> None:
        """The front's distance and the leaks, into ``result`` (front in image pixels)."""
        if self._distances is None:
            self._distances = DistanceMaps(self._exclude.shape)
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
        )
        if reading.front_under_cannula:
            result.overlay["front_under_cannula"] = True
        if reading.front_px is not None:
            result.distance_px = reading.front_px * self.scale
            result.distance_mm = reading.front_px * self.pixel_mm
            result.overlay["front"] = self._full(*reading.front_at)
        result.leaks = reading.leaks

    def _read_shaft(self, difference: np.ndarray, dx: float, dy: float, body) -> ShaftReading | None:
        """:func:`read_shaft` of the first cannula, in the lateral view only."""
        if self.plane != "lateral" or not self.cannulas or not isinstance(body, LateralBody):
            return None
        c = self.cannulas[0]
        tip = (c.tip[0] - self.roi[0] + dx, c.tip[1] - self.roi[1] + dy)
        return read_shaft(difference, c, tip, body, self.pixel_mm)


class CaseAnalyzer:
    """Both planes of one level: distance, reconciled volume, alarms."""

    def __init__(self, config: AnalysisConfig | None = None):
        self.config = config or AnalysisConfig()
        self.planes: dict[str, PlaneAnalyzer] = {}
        self.alarms = AlarmEngine(self.config.alarms)
        self.volumes: dict[str, tuple[float, float]] = {}  # plane -> (volume, share filled in)
        self._history: deque = deque(maxlen=40)  # (time, distance)
        self._pending: dict[str, int] = {}
        self.scatter_seen: bool | None = None  # None: the cement's halo has not said yet

    def _settle_scatter(self) -> None:
        """Whether the images hold the scatter modelled, from the cement's halo in each plane.

        A halo scale is biased by as much as the scatter's spread is off (+16 % for a
        spread 7 % too wide) and varies from case to case (the planes' mean 0.32-1.3 on
        our simulator's 30 cases, where it is 1), so it does not replace the configured
        scatter; but images with no scatter at all (0.03-0.22 on seven scatter-free
        renders) would read 1.3-1.9 times the volume with it."""
        fitted = [p for p in self.planes.values() if p.scatter_modelled]
        # one plane's halo alone is too uncertain (0.17 on a lateral view with scatter)
        if len(fitted) < 2 or any(p.halo_weight < HALO_DECIDE_WEIGHT for p in fitted):
            return
        scales = [p.halo_scale for p in fitted]
        scale = float(np.mean(scales))
        if scale >= SCATTER_SEEN_ABOVE:
            self.scatter_seen = True
        elif scale < NO_SCATTER_BELOW and max(scales) < SCATTER_SEEN_ABOVE:
            self.scatter_seen = False
        if self.scatter_seen is not None:
            for p in fitted:
                p.halo_open = False
        if self.scatter_seen is False:
            self.assume_no_scatter(f"scale {scale:.2f} of the configured scatter")

    def assume_no_scatter(self, why: str) -> None:
        """Read the volumes without scatter correction from now on (and say so)."""
        self.scatter_seen = False
        for p in self.planes.values():
            if p.scatter_modelled:
                p.read_without_scatter(why)

    def plane(
        self, name: str, photometric: str, relationship: str | None, bits: int, pixel_mm: float | None
    ) -> PlaneAnalyzer:
        if name not in self.planes:
            self.planes[name] = PlaneAnalyzer(name, photometric, relationship, bits, pixel_mm, self.config)
        return self.planes[name]

    def process(
        self, plane: PlaneAnalyzer, pixels: np.ndarray, frame: int, time_s: float
    ) -> tuple[PlaneResult, CaseSummary]:
        """Analyse one frame; returns the plane result and what it means for the case: the
        reconciled volume, the time to the 5 mm line and the alarms raised now."""
        r = plane.process(pixels, frame)
        if self.scatter_seen is None:
            self._settle_scatter()
        raised = []
        seconds_to_line = None
        if r.volume_ml is not None:
            self.volumes[r.plane] = (r.volume_ml, r.volume_filled)
        if r.plane == "lateral" and r.distance_mm is not None:
            self._history.append((time_s, r.distance_mm))
            seconds_to_line = self._seconds_to_line()
            evidence = {"front_px": r.overlay.get("front"), "wall_px": r.overlay.get("wall")}
            raised += self.alarms.update_proximity(frame, r.plane, r.distance_mm, seconds_to_line, evidence)
        cfg = self.config
        by_site: dict[str, list[Leak]] = {}
        for leak in r.leaks:
            by_site.setdefault(leak.site, []).append(leak)
        for site, leaks in by_site.items():
            volume = sum(lk.volume_ml for lk in leaks)
            key = f"{r.plane}:{site}"
            # A posterior leak with the front itself measured clearly beyond the wall is
            # two measurements agreeing: no need to wait for it to grow.
            beyond_wall = (
                site == "posterior"
                and r.distance_mm is not None
                and r.distance_mm <= -cfg.detection.leak_min_depth_mm
            )
            confirmed = (
                volume >= 2.5 * cfg.detection.leak_min_ml
                or beyond_wall
                or (volume >= cfg.detection.leak_min_ml and self._pending.get(key, -10) == frame - 1)
            )
            if volume >= cfg.detection.leak_min_ml:
                self._pending[key] = frame
            if confirmed:
                biggest = max(leaks, key=lambda lk: lk.volume_ml)
                evidence = {
                    "box_px": list(biggest.box),
                    "centroid_px": list(biggest.centroid),
                    "volume_ml": round(volume, 4),
                }
                raised += self.alarms.update_leak(frame, r.plane, site, r.distance_mm, evidence)
        volume = _reconciled(list(self.volumes.values())) if self.volumes else None
        return r, CaseSummary(volume, seconds_to_line, [a.as_dict() for a in raised])

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


def _reconciled(estimates: list[tuple[float, float]]) -> float:
    """One volume from the planes' (volume, share filled in under the cannula):
    each plane weighted by how little of it was interpolated rather than seen.
    A shaft lying along the bolus in one view can hide half of it there, while
    the other view sees the same shaft foreshortened."""
    weights = [1.0 / (filled + 0.05) for _, filled in estimates]
    return float(sum(w * v for w, (v, _) in zip(weights, estimates, strict=True)) / sum(weights))
