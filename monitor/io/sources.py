"""Where frames come from: recorded DICOM, recorded video, or a live frame grabber.

Every source yields :class:`SourceFrame` objects in acquisition order; pacing
and publishing are the replay loop's job, not the source's.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from monitor.errors import MissingGeometryError, MonitorError, RecordingError
from monitor.messages import PLANES, REPLAYED_EDITS, MessageError, checked_command
from monitor.vision.stats import usual_step


@dataclass(frozen=True)
class PlaneFormat:
    """How one plane's pixels are to be read, fixed for a whole stream."""

    photometric: str
    intensity: str | None
    bits_stored: int
    scale: dict | None  # as in the wire format: spacing at the vertebra, or a calibration


@dataclass(frozen=True)
class SourceFrame:
    plane: str
    index: int  # 0-based frame index within its plane's recording
    acq_time: float  # seconds from the first frame of the run that began first
    pixels: np.ndarray


PLAUSIBLE_FRAME_RATE = (0.2, 200.0)  # frames per second: pulsed fluoroscopy 0.5-30, cine up to 60-120
# Two runs that began further apart than this are no two views of one injection (a level's
# cement goes in over minutes): a wrong pair of files, or a clock set wrong on one plane.
PLANES_APART_AT_MOST_S = 3600.0


class DicomPairSource:
    """A lateral and/or an AP DICOM recording, merged in acquisition order."""

    def __init__(
        self,
        lateral: str | os.PathLike | None,
        ap: str | os.PathLike | None,
        fps: float | None = None,
        planes_start_together: bool = False,
    ):
        """``planes_start_together``: pair the two runs from their first frames whatever their
        headers say of when each began (:meth:`_start_offsets`)."""
        if lateral is None and ap is None:
            raise MonitorError("no recording: give --lateral, --ap or both")
        self.recordings = {}
        # what was assumed where the files do not say, for the operator at the start and the
        # session log (the audit's source warnings)
        self.warnings: list[str] = []
        try:
            self._open(lateral, ap, fps, planes_start_together)
        except BaseException:  # refused: the files opened so far are closed, not left to the GC
            self.close()
            raise

    def _open(self, lateral, ap, fps: float | None, planes_start_together: bool) -> None:
        # pydicom is imported here, where files are read, not at the top: the analyzer and the
        # logger import this module (for the frame types) and never read DICOM; it cost each 0.4 s
        from monitor.io.dicom import open_recording

        for plane, path in (("lateral", lateral), ("ap", ap)):
            if path is None:
                continue
            rec = open_recording(path)
            if rec.info.plane is not None and rec.info.plane != plane:
                raise RecordingError(
                    f"{path}: given as --{plane} but its PositionerPrimaryAngle says {rec.info.plane}"
                )
            if rec.info.plane is None:
                angle = rec.info.primary_angle_deg
                header = (
                    "no PositionerPrimaryAngle"
                    if angle is None
                    else f"an oblique PositionerPrimaryAngle {angle:g}"
                )
                self.warnings.append(
                    f"{Path(path).name}: taken as the {plane} view because it was given as --{plane};"
                    f" its header says no plane ({header}): check the files are not swapped"
                )
            if rec.info.intensity_relationship is None:
                self.warnings.append(
                    f"{Path(path).name}: no PixelIntensityRelationship (0028,1040): its values are read as"
                    " LOG (the log of the X-ray intensity); if they are LIN, cement and volumes read wrong"
                )
            if rec.info.timing_source and "not a time" in rec.info.timing_source and not fps:
                self.warnings.append(f"{Path(path).name}: timing from its {rec.info.timing_source}")
            if rec.info.modality_lut:
                self.warnings.append(
                    f"{Path(path).name}: its Modality LUT Sequence (0028,3000) is not applied: values"
                    " are read as stored (harmless for LOG data; LIN data would read wrong)"
                )
            self.warnings += [f"{Path(path).name}: {note}" for note in rec.info.header_notes]
            rec.info = replace(rec.info, plane=plane)  # oblique or unlabelled: the operator said which
            self.recordings[plane] = rec
        self.fps = fps
        for rec in self.recordings.values():
            self._check_timing(rec)
        # seconds from the earlier run's first frame to each plane's first frame
        self.start_offsets_s = self._start_offsets(planes_start_together)
        self.scale_problems: dict[str, str] = {}  # plane -> why it has no millimetre scale
        self.formats = {plane: self._format(plane, rec) for plane, rec in self.recordings.items()}

    def _format(self, plane: str, rec) -> PlaneFormat:
        try:
            spacing = rec.info.spacing_at_vertebra_mm()
            g = rec.info.geometry
            scale = {
                "spacing_mm": [round(spacing[0], 6), round(spacing[1], 6)],
                "source": "dicom",
                "geometry": {  # as read, so that a logged session exports with it
                    "imager_pixel_spacing_mm": list(g.imager_pixel_spacing_mm),
                    "source_to_detector_mm": g.source_to_detector_mm,
                    "source_to_patient_mm": g.source_to_patient_mm,
                    "estimated_magnification": g.estimated_magnification,
                    # where the C-arm stood (DICOM's patient-based angles), for consumers that
                    # place the image in 3D (monitor igtl); None when the file does not say
                    "primary_angle_deg": rec.info.primary_angle_deg,
                    "secondary_angle_deg": rec.info.secondary_angle_deg,
                },
            }
        except MissingGeometryError as e:  # missing, or implausible: the tag is named
            self.scale_problems[plane] = str(e).split("; supply")[0]
            scale = None
        # which way the values run is the sign's, where the file gives one
        i = rec.info
        return PlaneFormat(i.analysis_photometric, i.intensity_relationship, i.value_bits, scale)

    def _check_timing(self, rec) -> None:
        """Say when --fps replaces the file's own timing, and refuse a file's timing no
        fluoroscopy has (a FrameTime written in seconds, not the milliseconds DICOM says, read
        as 30,000 frames/s; an independent test, session 72)."""
        info = rec.info
        # the usual step, not the mean: a run with long pauses is still a run at its own rate
        step = usual_step(info.frame_times_s) if info.frame_times_s is not None else None
        rate = 1.0 / step if step else None
        if self.fps:
            if info.timing_source is not None:
                self.warnings.append(
                    f"{info.path.name}: --fps {self.fps:g} replaces its {info.timing_source}"
                    + (f" ({rate:.4g} frames/s)" if rate else "")
                )
            return
        low, high = PLAUSIBLE_FRAME_RATE
        if rate is not None and not low <= rate <= high:
            raise RecordingError(
                f"{info.path}: {rate:.4g} frames/s from its {info.timing_source} is no fluoroscopy's"
                f" ({low:g}-{high:g}; DICOM's FrameTime is in milliseconds): pass --fps"
            )

    def _start_offsets(self, together: bool) -> dict[str, float]:
        """Where each plane's run begins on one clock, from the date and time its header gives
        (:func:`monitor.io.dicom.run_starts`), by one family of tags both give (the acquisition's,
        else the content's: a content time may be a storage time).

        The analysis reads the two views at the same moment as one: an AP reading backs a
        lateral leak only within a second or so of it, and the breathing one view measured
        stands for the other's. Paired from their first frames, an AP run begun 2 s after the
        lateral's had each AP frame read beside a lateral frame 2 s older, so an AP view could
        back or deny a lateral reading with cement the lateral had not reached yet. Where the
        stamps cannot tell the starts apart (a difference within the coarser stamp's resolution:
        many C-arms write whole seconds, and two runs begun together can read a second apart),
        without a family both give, or with ``together`` (``--planes-start-together``: a C-arm's
        clock set wrong), the runs are paired from their first frames, and that is said where it
        is an assumption."""
        offsets = dict.fromkeys(self.recordings, 0.0)
        if len(self.recordings) < 2:
            return offsets
        lateral, ap = (self.recordings[plane].info for plane in PLANES)
        if together:
            self.warnings.append(
                "--planes-start-together: the lateral and AP runs are paired from their first frames,"
                " whatever their headers say of when each began"
            )
            return offsets
        common = next(((a, b) for a in lateral.starts for b in ap.starts if a.family == b.family), None)
        if common is None:
            undated = [i.path.name for i in (lateral, ap) if not i.starts]
            why = (
                f"{' and '.join(undated)}: no acquisition date and time (AcquisitionDateTime, or"
                " AcquisitionDate with AcquisitionTime, to the second)"
                if undated
                else f"{lateral.path.name} gives its start by {lateral.started_from} and {ap.path.name}"
                f" by {ap.started_from}, which need not name the same moment"
            )
            self.warnings.append(
                f"{why}: the lateral and AP runs are paired from their first frames, as if they"
                " began together"
            )
            return offsets
        starts = {"lateral": common[0], "ap": common[1]}
        when = {plane: start.when for plane, start in starts.items()}
        if (when["lateral"].tzinfo is None) != (when["ap"].tzinfo is None):  # one says its zone
            when = {plane: w.replace(tzinfo=None) for plane, w in when.items()}
        apart = (when["ap"] - when["lateral"]).total_seconds()
        first, later = ("lateral", "ap") if apart >= 0 else ("ap", "lateral")
        names = {plane: self.recordings[plane].info.path.name for plane in PLANES}
        if abs(apart) >= PLANES_APART_AT_MOST_S:
            raise RecordingError(
                f"{names[first]} began {starts[first].when:%Y-%m-%d %H:%M:%S%z} and {names[later]}"
                f" {starts[later].when:%Y-%m-%d %H:%M:%S%z} ({starts[later].tags}), {_span(abs(apart))}"
                f" apart: not two views of one injection (under {_span(PLANES_APART_AT_MOST_S)});"
                " replay them one at a time, or pass --planes-start-together if a C-arm's clock was wrong"
            )
        resolution = max(start.resolution_s for start in starts.values())
        if abs(apart) <= resolution:
            if apart != 0.0:  # their stamps differ, by no more than they can tell
                self.warnings.append(
                    f"{names[later]}: its {later} run's start reads {abs(apart):g} s after the {first}"
                    f" run's, which their {starts[later].tags} (to {resolution:g} s) cannot tell from"
                    " none: the runs are paired from their first frames"
                )
            return offsets
        offsets[later] = abs(apart)
        step = max(self._usual_step(plane) for plane in self.recordings)
        span = float(self._own_times(first)[-1]) if len(self.recordings[first]) else 0.0
        after = (
            f", after the {first} run's last frame (a replay at the recorded pace waits for it)"
            if abs(apart) > span + step
            else ""
        )
        within = f" (+/- {resolution:g} s)" if resolution >= 0.05 else ""
        self.warnings.append(
            f"{names[later]}: its {later} run began {abs(apart):.2f} s{within} after the {first} run"
            f" ({starts[later].tags}){after}; the views are paired on that clock"
        )
        return offsets

    def _usual_step(self, plane: str) -> float:
        """A plane's usual step between frames (s), the median; 0 for a single frame."""
        return usual_step(self._own_times(plane)) or 0.0

    def _own_times(self, plane: str) -> np.ndarray:
        """Each frame's time (s) from its run's first frame: from --fps, else the file's timing."""
        rec = self.recordings[plane]
        if self.fps:
            return np.arange(len(rec)) / self.fps
        return rec.info.require_frame_times()

    def _times(self, plane: str) -> np.ndarray:
        """Each frame's acquisition time (s) on the source's one clock, from the first frame of
        the run that began first."""
        return self._own_times(plane) + self.start_offsets_s[plane]

    def frames(self) -> Iterator[SourceFrame]:
        streams = [self._plane_frames(plane) for plane in self.recordings]
        # Merge the planes by acquisition time; lateral first on ties (it is the primary view).
        yield from heapq.merge(*streams, key=lambda f: (f.acq_time, PLANES.index(f.plane)))

    def _plane_frames(self, plane: str) -> Iterator[SourceFrame]:
        times = self._times(plane)
        for i, pixels in enumerate(self.recordings[plane].frames()):
            yield SourceFrame(plane, i, float(times[i]), pixels)

    def counts(self) -> dict[str, int]:
        return {plane: len(rec) for plane, rec in self.recordings.items()}

    def close(self) -> None:
        for rec in self.recordings.values():
            rec.close()


def _span(seconds: float) -> str:
    """A duration as people say it: "45 s", "12 min 5 s", "2 h 3 min"."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.3g} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


@dataclass(frozen=True)
class Layout:
    """Which part of a video frame is which plane: (x, y, width, height) crops."""

    crops: dict[str, tuple[int, int, int, int]]

    @staticmethod
    def single(plane: str) -> Layout:
        return Layout({plane: (0, 0, 0, 0)})  # zero size: the whole frame

    @staticmethod
    def side_by_side(width: int, height: int, left: str = "lateral") -> Layout:
        right = "ap" if left == "lateral" else "lateral"
        half = width // 2
        return Layout({left: (0, 0, half, height), right: (half, 0, width - half, height)})

    @staticmethod
    def from_file(path: str | os.PathLike) -> Layout:
        """Crops from a JSON file: {"video_layout": {"lateral": [x, y, w, h], "ap": [x, y, w, h]}}.

        This is the video-layout section of a room's calibration profile.
        """
        import json

        p = Path(path)
        try:
            section = json.loads(p.read_text())["video_layout"]
            crops = {}
            for plane, box in section.items():
                if plane not in PLANES:
                    raise ValueError(f"unknown plane {plane!r}")
                x, y, w, h = (int(v) for v in box)
                if min(x, y) < 0 or min(w, h) <= 0:
                    raise ValueError(f"{plane} crop {box} must have x, y >= 0 and positive size")
                crops[plane] = (x, y, w, h)
            if not crops:
                raise ValueError("no planes")
        except FileNotFoundError:
            raise MonitorError(f"{p}: no such layout file") from None
        except (KeyError, TypeError, ValueError) as e:
            raise MonitorError(
                f'{p}: bad video_layout ({e}); expected {{"video_layout": {{"lateral": [x, y, w, h], ...}}}}'
            ) from None
        return Layout(crops)

    def split(self, image: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for plane, (x, y, w, h) in self.crops.items():
            if w == 0 and h == 0:
                out[plane] = image
                continue
            if y + h > image.shape[0] or x + w > image.shape[1]:
                raise RecordingError(
                    f"{plane} crop {x},{y},{w}x{h} lies outside the {image.shape[1]}x{image.shape[0]} frame"
                )
            out[plane] = image[y : y + h, x : x + w]
        return out


class VideoSource:
    """Video from a file (a frame-grabber capture) or a live device, as 8-bit grey.

    Video carries no geometry: unless a calibration supplies the scale, the
    monitor measures in pixels only.
    """

    def __init__(self, capture: cv2.VideoCapture, name: str, layout: Layout, fps: float | None, live: bool):
        self._cap = capture
        self.name = name
        self.layout = layout
        self.live = live
        reported = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps or (reported if reported and reported > 0 else None)
        if self.fps is None:
            raise MonitorError(f"{name}: no frame rate in the video; pass --fps")
        low, high = PLAUSIBLE_FRAME_RATE
        if not low <= self.fps <= high:  # as a DICOM's own timing is held (a review, session 77)
            raise MonitorError(
                f"{name}: {self.fps:.4g} frames/s in the video is no fluoroscopy's or grabber's"
                f" ({low:g}-{high:g}): pass --fps"
            )
        self.formats = {plane: PlaneFormat("MONOCHROME2", None, 8, None) for plane in layout.crops}

    @classmethod
    def open_file(cls, path: str | os.PathLike, layout: Layout, fps: float | None = None) -> VideoSource:
        p = Path(path)
        if not p.is_file():
            raise RecordingError(f"{p}: no such file")
        cap = cv2.VideoCapture(str(p))
        if not cap.isOpened():
            raise RecordingError(f"{p}: not a video OpenCV can read")
        return cls(cap, str(p), layout, fps, live=False)

    @classmethod
    def open_device(cls, index: int, layout: Layout, fps: float | None = None) -> VideoSource:
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            devices = sorted(str(d) for d in Path("/dev").glob("video*"))
            found = ", ".join(devices) if devices else "none"
            raise MonitorError(f"no video device {index} (video devices present: {found})")
        return cls(cap, f"device {index}", layout, fps, live=True)

    def frames(self) -> Iterator[SourceFrame]:
        index = 0
        while True:
            ok, image = self._cap.read()
            if not ok:
                return
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
            t = index / self.fps
            for plane, pixels in self.layout.split(grey).items():
                yield SourceFrame(plane, index, t, np.ascontiguousarray(pixels))
            index += 1

    def counts(self) -> dict[str, int]:
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not self.live else 0
        return dict.fromkeys(self.layout.crops, n)

    def close(self) -> None:
        self._cap.release()


@dataclass(frozen=True)
class LoggedCommand:
    """An operator command a session logged, and where it came in the analyzer's work: before
    frame ``frames_before[plane]`` (0-based, as :meth:`SessionSource.frames` yields each
    plane's frames; every plane named) of each plane, the frames before it being those whose
    results were logged before it. ``source`` is who sent it (the viewer's or the operator's
    key, or "replay" for one a replay carried out again); ``acq_time`` the stream time (s) it
    was logged at, when known; ``after_last_frame``: it came after every frame (an edit then
    changes no frame's result); ``refused``: why its logged value is not one the control
    socket takes (an edited log), None when it is."""

    frames_before: dict[str, int]
    action: str
    value: object
    source: str
    acq_time: float | None
    after_last_frame: bool = False
    refused: str | None = None


class SessionSource:
    """The frames a session logged, in the order they were sent (``SessionStore.frames_as_sent``:
    each once, a frame resent to a restarted logger where it was sent first): ``monitor replay
    --session``. A session continued over several runs of a source replays them one after the
    other, time running on.
    """

    def __init__(self, folder: str | os.PathLike):
        from monitor.io.store import SessionStore

        self.store = SessionStore.open(folder)
        self.name = f"session {folder}"
        self._records = self.store.frames_as_sent()
        if not self._records:
            self.store.close()
            raise MonitorError(f"{folder}: the session recorded no frames")
        self.formats = {}
        for r in self._records:
            if r.plane not in self.formats:
                b = r.body
                self.formats[r.plane] = PlaneFormat(
                    b["photometric"], b["intensity"], b["bits_stored"], b["scale"]
                )
        # each plane's own usual step, the faster plane's rate: merged, two planes begun a
        # fraction of a frame apart would halve the step (an independent review, session 73)
        steps = [usual_step(r.body["acq_time"] for r in self._records if r.plane == p) for p in self.formats]
        steps = [step for step in steps if step]
        self.fps = 1.0 / min(steps) if steps else None

    def calibration_settings(self) -> dict:
        """The calibration profile's analysis settings the session was analysed with (its
        physics and id), so that a replay measures as the session did; {} when it had no
        profile or was logged before they were kept."""
        return dict(self.store.meta().get("calibration_settings") or {})

    def analysis_settings(self) -> dict:
        """The analysis settings the session was measured with, as
        ``AnalysisConfig.from_settings`` takes them: its calibration profile's
        (:meth:`calibration_settings`) and the command line's wall, boxes and known cleft."""
        meta = self.store.meta()
        settings = self.calibration_settings()
        if meta.get("posterior_wall"):
            settings["posterior_wall"] = tuple(tuple(p) for p in meta["posterior_wall"])
        if meta.get("known_cleft"):
            settings["known_cleft"] = True
        if meta.get("body_boxes"):
            settings["body_boxes"] = tuple((plane, tuple(box)) for plane, box in meta["body_boxes"].items())
        return settings

    def logged_commands(self, actions: Iterable[str] = REPLAYED_EDITS) -> list[LoggedCommand]:
        """The operator's commands of ``actions`` the session logged, in the order logged, each
        where it came in the analyzer's work: before the frames after the newest of each plane
        whose result was logged before it (by the frame itself, not by counting results: a
        frame the analyzer missed, or a logger restarted, would put a count off; not by stream
        time, which a session continued over several runs restarts, and which a command before
        the first frame has none of). The analyzer's own events and the command line's are not
        commands; a value the control socket would refuse is kept, with why (``refused``)."""
        wanted = set(actions)
        position, counts = {}, Counter()  # (stream, plane, seq) -> its index among the plane's frames
        for r in self._records:
            position[(r.body["stream"], r.plane, r.seq)] = counts[r.plane]
            counts[r.plane] += 1
        reached = dict.fromkeys(self.formats, 0)  # per plane, the frames before the next command
        results = iter(self.store.result_keys())
        result = next(results, None)
        commands = []
        for r in self.store.records("event"):
            b = r.body
            while result is not None and result[0] < r.rec:
                _rec, stream, plane, seq = result
                at = position.get((stream, plane, seq))
                if at is not None and plane in reached:
                    reached[plane] = max(reached[plane], at + 1)
                result = next(results, None)
            if b.get("event") not in wanted or b.get("source") in ("analyzer", "command-line"):
                continue
            refused = None
            try:
                checked_command("", str(b.get("source")), 0.0, b["event"], b.get("value"))
            except MessageError as e:
                refused = e.detail
            commands.append(
                LoggedCommand(
                    dict(reached),
                    b["event"],
                    b.get("value"),
                    str(b.get("source")),
                    b.get("acq_time"),
                    all(reached[plane] >= counts[plane] for plane in reached),
                    refused,
                )
            )
        return commands

    def frames(self) -> Iterator[SourceFrame]:
        offset, stream, last = 0.0, None, 0.0
        interval = 1.0 / self.fps if self.fps else 0.1
        for r in self._records:
            if r.body["stream"] != stream:
                if stream is not None:
                    offset = last + interval - r.body["acq_time"]
                stream = r.body["stream"]
            last = r.body["acq_time"] + offset
            yield SourceFrame(r.plane, r.frame, last, self.store.image(r.rec))

    def counts(self) -> dict[str, int]:
        """Per plane, the frames of the recording the session was of: those it logged, and those
        its source never sent (a run stopped early). So a replay of a stopped session, sent
        whole, is still said to be of part of a recording (it was audited as a whole one)."""
        counts: dict[str, int] = {}
        for r in self._records:
            counts[r.plane] = counts.get(r.plane, 0) + 1
        unsent = (self.store.meta().get("summary") or {}).get("unsent") or {}
        for plane, n in unsent.items():
            if plane in counts and isinstance(n, int) and n > 0:
                counts[plane] += n
        return counts

    def close(self) -> None:
        self.store.close()


def apply_profile(source, profile) -> None:
    """Measure ``source`` with a calibration profile: its scale (and distortion) for every
    plane, after checking the profile is for images of this size."""
    from dataclasses import replace as _replace

    for plane, fmt in list(source.formats.items()):
        if isinstance(source, DicomPairSource):
            shape = source.recordings[plane].info.shape
        else:
            x, y, w, h = source.layout.crops[plane]
            shape = (h, w)
        profile.check_size(plane, shape)
        source.formats[plane] = _replace(fmt, scale=profile.scale())
