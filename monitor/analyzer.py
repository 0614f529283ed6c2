"""The analyzer process: frames in, results and stream status out.

It subscribes to a source, analyses each frame, and publishes one result per
frame on its own stream, plus heartbeats, and status events from its
watchdog: "stale" when no new frame has arrived for ``stale_ms``, "resumed"
when frames come back, "dropped" on sequence gaps, "rejected" on malformed
messages. It survives anything a sender can send, and a restarted analyzer
simply reconnects to the running source.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import zmq

from monitor.collection import CollectionPacing
from monitor.errors import MonitorError
from monitor.flow import FlowClient
from monitor.io import security
from monitor.io.store import LogWriteError, SessionStore
from monitor.io.transport import MAX_COMMAND_BYTES, Frame, Publisher, Subscriber, bind_endpoint
from monitor.messages import (
    END_GRACE_S,
    HEARTBEAT_S,
    PLANES,
    STANDING_ALARMS_EVERY_S,
    Command,
    End,
    FrameHeader,
    Heartbeat,
    MessageError,
    Result,
    Status,
    decode,
)
from monitor.replay import frame_header
from monitor.vision.alarms import Alarm
from monitor.vision.analysis import AnalysisConfig, CaseAnalyzer, OperatorInput, PlaneAnalyzer
from monitor.vision.biplane import (
    SYRINGE_MIN_DARKNESS_ML,
    VolumeEstimate,
    syringe_anchored_volume,
    syringe_shape_volume,
)
from monitor.vision.calibrate import RadialDistortion
from monitor.vision.caveats import Caveat, CaveatCode, render_status
from monitor.vision.sampling import BilinearImage, Border, Positions

if TYPE_CHECKING:
    from monitor.io.sources import LoggedCommand

log = logging.getLogger(__name__)


class CommandRefused(Exception):
    """An operator command that cannot be carried out now (no lateral frame yet, a body box
    under 8 mm, ...): said to the operator and logged as ``rejected-command``, and the
    analysis goes on. Any other exception from a command is a bug, and is reported as one."""


class Analysis:
    """What the analyzer process runs on each frame and command. This base analyses
    nothing and takes no commands; :class:`VisionAnalysis` is the monitor's."""

    level: str | None = None  # the vertebral level being treated, for the log

    def process(self, frame: Frame) -> Result:
        raise NotImplementedError

    def apply(self, command: Command) -> str:
        """Carry out an operator command; returns what was done, for the log.
        :class:`CommandRefused` when it cannot be carried out now."""
        raise CommandRefused("this analyzer takes no operator commands")

    def alarm_changes(self, acq_time: float) -> list[tuple[str, dict]]:
        """(state, alarm) for every alarm raised, cleared or acknowledged since the last call."""
        return []

    def standing_alarms(self) -> list[dict]:
        """The alarms standing now (active or not yet acknowledged), each with its id, kind,
        priority, frame, plane, site, distance_mm, "active" and "acknowledged"."""
        return []

    def news(self) -> list[tuple[str, str, str, dict]]:
        """(event, detail, plane, value) the analysis decided since the last call, for the log
        and the viewers: the 5 mm rule armed on the wall, or not."""
        return []

    def restore(self, store: SessionStore, stream: str) -> str | None:
        """After a restart, pick up the session from its log; returns what was restored."""
        return None


class VisionAnalysis(Analysis):
    """The vision pipeline behind the analyzer: one CaseAnalyzer per level treated,
    and the operator's commands applied to it."""

    def __init__(self, config: AnalysisConfig | None = None, level: str | None = None):
        self.config = config
        self.level = level
        self._commands = {  # action -> handler(value) -> what was done
            "acknowledge": self._acknowledge,
            "level": self._start_level,
            "wall": self._set_wall,
            "body": self._set_body,
            "confirm-wall": self._confirm_wall,
            "cleft": self._set_cleft,
            "syringe": lambda ml: self._syringe(float(ml)),
            "pause": lambda _value: "injection paused",
            "resume": lambda _value: "injection resumed",
        }
        self.case = CaseAnalyzer(config)
        self._frames_seen = False  # any frame processed (a level command before names the first)
        # the command line's known cleft is the first level's, as its wall and boxes are
        self.case.known_cleft = bool(config and config.operator.known_cleft)
        self._logged_alarms: dict[str, dict] = {}  # alarm id -> last state logged
        self._undistort: dict[str, tuple] = {}  # plane -> (distortion, shape, source positions, model)
        self._syringe_ml = 0.0  # delivered at this level, by the operator's "1 mL delivered"
        self._raw_volume_ml: float | None = None  # the image-based volume before syringe scaling
        self._raw_shape_ml: float | None = None  # the two views' shape's truth then (mL), if read
        # the last frame's image-based volume estimate, before any syringe anchoring: its darkness
        # and shape estimates apart (the accuracy benchmark plots each against the truth)
        self.last_volume: VolumeEstimate | None = None
        self.volume_scale = 1.0  # syringe volume / image-based volume, once 1 mL has gone in
        # this level's syringe anchors: (the image-based volume, the two views' shape's truth or
        # None, the syringes' total) mL at each entry from 1 mL on
        self._anchors: list[tuple[float, float | None, float]] = []
        self._shape_top: float | None = None  # the largest shape's truth since the last anchor (mL)
        # the growth since the last anchor is read from the shape: decided at its entry and logged
        # with it (CaseAnalyzer.growth_from_shape), so that a restart reads it the same way
        self._growth_from_shape = False
        # the last anchored volume and its k; and, while the darkness is read half with scatter
        # correction and half without (CaseAnalyzer.darkness_mixed), how many anchors were taken on
        # the reading with it (those the rescale applies to)
        self._last_anchored: tuple[VolumeEstimate, float] | None = None
        self._anchors_before_switch: int | None = None
        self._news: list[tuple[str, str, str | None, dict]] = []  # the analysis's own, beside the planes'
        if self.case.known_cleft:  # said and logged as the operator's command would be, with its time
            self._news.append(("cleft", f"from the command line: {self._set_cleft(True)}", None, True))
        # the command line's wall and boxes, for the first level only: plane -> the commands
        # to apply once its baseline is in, each with what to say if it cannot be applied
        self._pending = _operator_commands(config.operator if config else None)

    def process(self, frame: Frame) -> Result:
        self._frames_seen = True
        h = frame.header
        spacing = (h.scale or {}).get("spacing_mm")
        pixel_mm = float(sum(spacing) / 2) if spacing else None
        plane = self.case.plane(h.plane, h.photometric, h.intensity, h.bits_stored, pixel_mm)
        plane.on_baseline = self._apply_pending
        self._check_calibration(plane, h)
        pixels = np.asarray(frame.pixels)
        distortion = self._distortion(h.plane, h.scale, pixels.shape)
        if distortion is not None:
            # Measure on the undistorted image; draw (below) on the image as the operator sees it.
            # Corners the detector never saw repeat its edge: a constant fill would be a
            # straight dense edge, which the cannula search could take for steel.
            undistorted = BilinearImage(pixels, Border.REPLICATE).at(self._undistort[h.plane][2])
            if np.issubdtype(pixels.dtype, np.integer):  # stored values stay stored values
                top = np.iinfo(pixels.dtype).max
                undistorted = np.clip(np.rint(undistorted), 0, top).astype(pixels.dtype)
            pixels = undistorted
        r, summary = self.case.process(plane, pixels, h.frame, h.acq_time)
        volume = summary.volume
        self.last_volume = volume
        if self.case.darkness_mixed and self._anchors_before_switch is None:
            self._anchors_before_switch = len(self._anchors)
        if summary.darkness_rescaled is not None:  # the darkness is read another way from here
            self._rescaled(summary.darkness_rescaled)
        if not self.case.darkness_mixed:
            self._anchors_before_switch = None
        k = self.volume_scale
        if volume is not None:
            self._raw_volume_ml = volume.darkness_ml  # what the syringe calibrates
            shape = volume.shape_ml if volume.one_view is None else None  # one view's: another scale
            self._raw_shape_ml = shape
            if shape is not None and self._anchors:
                self._shape_top = max(self._shape_top or 0.0, shape)
            if (
                self._anchors
                and self.case.darkness_mixed
                and self._last_anchored is not None
                and len(self._anchors) == self._anchors_before_switch
            ):
                # one view's darkness read with scatter correction, the other's without (at most
                # RESCALE_WAIT_S): on neither scale, the last anchored volume is held (not past a
                # syringe entered meanwhile, whose total it would hide)
                volume, k = self._last_anchored
            elif self._anchors and math.isfinite(volume.darkness_ml):
                # this level's syringes anchor the volume; k is then what it makes of the darkness
                # (the wire's volume_scale: volume_ml / volume_scale is the image's own volume).
                # The growth since the last one is the shape's where that syringe's entry chose it
                # and the shape is read now, else the darkness's.
                darkness = max(volume.darkness_ml, 1e-3)
                anchored = None
                if self._growth_from_shape:
                    anchored = syringe_shape_volume(
                        volume.darkness_ml, shape, self._shape_anchors, self._shape_top
                    )
                if anchored is None:
                    anchored = syringe_anchored_volume(
                        volume.darkness_ml,
                        self._pairs,
                        self.volume_scale,
                        self.case.shape_darkness_exponent(),
                    )
                k = anchored.volume_ml / darkness
                volume = replace(
                    anchored, volume_ml=darkness, low_ml=anchored.low_ml / k, high_ml=anchored.high_ml / k
                )
                self._last_anchored = (volume, k)
        overlay = _plain(r.overlay)
        if distortion is not None:
            overlay = distort_overlay(overlay, distortion)
        return result_for(
            h,
            r.caveats,
            baseline=r.baseline,
            level=self.level,
            distance_mm=_rounded(r.distance_mm, 3),
            distance_px=_rounded(r.distance_px, 2),
            volume_ml=_rounded(None if volume is None else k * volume.volume_ml, 4),
            volume_low_ml=_rounded(None if volume is None else k * volume.low_ml, 4),
            volume_high_ml=_rounded(None if volume is None else k * volume.high_ml, 4),
            volume_darkness_weight=_rounded(None if volume is None else volume.darkness_weight, 3),
            plane_volume_ml=_rounded(None if r.volume_ml is None else k * r.volume_ml, 4),
            seconds_to_line=_rounded(summary.seconds_to_line, 2),
            volume_scale=round(k, 4),
            known_cleft=self.case.known_cleft,
            alarms=summary.raised,
            overlay=overlay,
            checks=list(r.checked),
        )

    def _check_calibration(self, plane, h: FrameHeader) -> None:
        """Frames the source measured with a calibration profile this analyzer was not given
        (a standalone ``monitor analyze`` started without ``--calibration``, or with another
        room's): their millimetres are right, but the room's cement attenuation and scatter
        are not known here, so every result from then on says so."""
        measured_with = (h.scale or {}).get("calibration")
        given = self.config.physics.calibration if self.config else None
        if (
            measured_with is None
            or measured_with == given
            or plane.has_caveat(CaveatCode.CALIBRATION_NOT_LOADED)
        ):
            return
        has = f"profile {given!r}" if given else "no profile"
        plane.add_caveat(
            CaveatCode.CALIBRATION_NOT_LOADED,
            f"frames measured with calibration profile {measured_with!r},"
            f" the analyzer has {has}: cement attenuation and scatter are not the room's, volumes"
            " may be wrong; give the analyzer --calibration",
        )

    def _distortion(self, plane: str, scale: dict | None, shape) -> RadialDistortion | None:
        d = (scale or {}).get("distortion")
        if not d:
            return None
        cached = self._undistort.get(plane)
        if cached is None or cached[1] != shape or cached[0] != d:
            model = RadialDistortion(tuple(d["centre"]), d["k1"], d["k2"], d["radius"])
            self._undistort[plane] = (d, shape, Positions.of(*model.maps(shape)), model)
        return self._undistort[plane][3]

    def _shown(self, plane: str) -> RadialDistortion | None:
        """The distortion of the image the operator draws on (None: as measured)."""
        return self._undistort[plane][3] if plane in self._undistort else None

    def apply(self, command: Command) -> str:
        handler = self._commands.get(command.action)
        if handler is None:  # the wire admits only known actions; a newer viewer's, refused
            raise CommandRefused(f"unknown action {command.action!r}")
        return handler(command.value)

    def _apply_pending(self, plane: PlaneAnalyzer) -> None:
        """The command line's wall and boxes for ``plane``, now that its baseline is in: through
        :meth:`apply`, as the operator's live edits go. One refused is said on every result."""
        for command, unused in self._pending.pop(plane.plane, ()):
            try:
                self.apply(command)
            except CommandRefused as e:
                plane.add_caveat(unused, str(e))

    def _acknowledge(self, _value) -> str:
        shown = len(self.case.alarms.shown())
        self.case.alarms.acknowledge()
        return f"{shown} alarm(s) acknowledged"

    def _start_level(self, level) -> str:
        previous = self.level
        self.level = str(level)
        if not self._frames_seen:
            # no frame yet: this names the first level, which the command line's wall, boxes and
            # cleft were given for (run without --level, the level named in the viewer)
            return f"level {self.level} named (was {previous or 'not named'}) before its first frame"
        # a level ending while its darkness is read half with scatter correction and half without:
        # finished, so that the scale carried is on the reading the next level starts on
        pending = self.case.darkness_switching
        ratio = self.case.finish_switch()
        if ratio is not None:
            self._rescaled(ratio)
        # what the level's end said of it (the case is replaced next): logged with the new level
        self._news += [(event, detail, None, value) for event, detail, value in self.case.news]
        self.case.news.clear()
        calibrated = self.case.darkness_calibrated  # the scale is kept: same cement
        scatter = (self.case.scatter_seen, self.case.scatter_carried)  # and the room's scatter
        if pending and ratio is None:  # the scale is on the reading with it: so is the next level
            scatter = (None, None)
        self.case = CaseAnalyzer(self.config)
        self.case.darkness_calibrated = calibrated
        self.case.carry_scatter(*scatter)
        # the command line's cleft was the first level's: not said for this one if not said yet,
        # but its loss is (the command line gave it; the operator may think it holds)
        unsaid = [n for n in self._news if n[0] == "cleft"]
        self._news = [n for n in self._news if n[0] != "cleft"]
        self._pending = {}  # the command line's wall and boxes were drawn on the first level
        self._forget_syringes()  # the volume scale learnt so far is kept: same cement
        if calibrated:  # logged after the level, so that a restart in it carries the same scale
            self._news.append(
                (
                    "volume-scale-carried",
                    f"the image-to-syringe scale carried to level {self.level}: {self.volume_scale:.3f}",
                    None,
                    {"volume_scale": round(self.volume_scale, 9)},
                )
            )
        # the last level's darkness and shape must not anchor this one's syringes
        self._raw_volume_ml, self._raw_shape_ml = None, None
        lost = (
            "; the command line's known cleft was the first level's: say Known cleft again if this one has it"
        )
        return f"level {self.level} started (after {previous or 'none'}): new baseline" + (
            lost if unsaid else ""
        )

    def _set_wall(self, points) -> str:
        plane = self.case.planes.get("lateral")
        if plane is None:
            raise CommandRefused("no lateral frame yet")
        try:
            return plane.set_wall(_as_measured(points, self._shown("lateral")))
        except ValueError as e:  # the vision core's refusal: too early, too short, ...
            raise CommandRefused(str(e)) from e

    def _restore_cleft(self, events: list, start: int, later_level: bool) -> None:
        """The current level's known cleft as its log says, before anything else is restored (a
        cleft is often declared before the level's first frame): the command line's (logged by
        the analyzer, first level only) and the operator's "cleft" commands since the level
        started, the last one standing; none on a later level that has none. The command line's,
        said on starting, is not said again when the log has it (or it was the first level's)."""
        said = [r for r in events if r.rec > start and r.body["event"] == "cleft"]
        if later_level:
            self.case.known_cleft = False
        if later_level or any(r.body["source"] == "analyzer" for r in said):
            self._news = [n for n in self._news if n[0] != "cleft"]
        for r in said:
            self.case.known_cleft = bool(r.body.get("value"))

    def _set_cleft(self, known) -> str:
        self.case.known_cleft = bool(known)
        level = self.level or "(not named)"
        if self.case.known_cleft:
            return (
                f"level {level}: an intravertebral cleft is known; cement above or below the bolus"
                " where no body outline is armed is a possible disc leak (it may fill the cleft)"
            )
        return (
            f"level {level}: no cleft known; cement above or below the bolus in both views, past any"
            " armed outline's endplate or with none, is a disc leak"
        )

    def _confirm_wall(self, _value) -> str:
        plane = self.case.planes.get("lateral")
        if plane is None:
            raise CommandRefused("no lateral frame yet")
        try:
            return plane.confirm_wall()
        except ValueError as e:
            raise CommandRefused(str(e)) from e

    def news(self) -> list[tuple[str, str, str | None, dict]]:
        taken, self._news = self._news, []
        taken += [(event, detail, None, value) for event, detail, value in self.case.news]
        self.case.news.clear()
        for plane in self.case.planes.values():
            taken += [(event, detail, plane.plane, value) for event, detail, value in plane.news]
            plane.news.clear()
        return taken

    def _set_body(self, value) -> str:
        plane = self.case.planes.get(value["plane"])
        if plane is None:
            raise CommandRefused(f"no {value['plane']} frame yet")
        try:
            return plane.set_body(_box_as_measured(value["box"], self._shown(plane.plane)))
        except ValueError as e:
            raise CommandRefused(str(e)) from e

    def alarm_changes(self, acq_time: float) -> list[tuple[str, dict]]:
        """(state, alarm) for every alarm raised, cleared or acknowledged since the last call."""
        changes = []
        # a possible leak said again ends the one it replaced (logged as cleared) before it is raised
        for alarm in [*self.case.alarms.take_superseded(), *self.case.alarms.alarms.values()]:
            record = {k: v for k, v in alarm.as_dict().items() if k not in ("active", "acknowledged")}
            alarm_id = self._alarm_id(alarm)
            record["id"] = alarm_id
            before = self._logged_alarms.get(alarm_id)
            if before is None:
                changes.append(("raised", record))
                before = {"active": True, "acknowledged": False}
            else:
                record.pop("evidence")
            if before["active"] and not alarm.active:
                changes.append(("cleared", record))
            if alarm.acknowledged and not before["acknowledged"]:
                changes.append(("acknowledged", record))
            self._logged_alarms[alarm_id] = {"active": alarm.active, "acknowledged": alarm.acknowledged}
        return changes

    def _take_up_syringes(self, events: list[dict]) -> None:
        """After a restart: the anchors of the syringes entered at the current level, from the
        logged ``events`` (bodies, in the order logged): each "syringe-entry" with the darkness
        and the shape it was anchored on and the growth it chose, and the darkness's curve as the
        last entry saw it (for a later entry to choose its growth on); a "level" forgets those
        before it. Logs before 2026-12-06 have no shape: the darkness's growth, as they were
        read. Not restored: the largest shape read between the last entry and the restart (the
        frames before a restart are not analysed again), which is then the entry's own."""
        self._forget_syringes()
        curve = None  # the darkness's curve as this level's last entry logged it
        since_curve = 1.0  # the darkness rescaled by this since that entry
        for b in events:
            if b["event"] == "level":
                self._forget_syringes()
                curve, since_curve = None, 1.0
            elif b["event"] == "syringe-entry" and b["source"] == "analyzer" and b.get("value"):
                value = b["value"]
                self._syringe_ml = float(value["syringe_ml"])
                shape = None if value.get("shape_ml") is None else float(value["shape_ml"])
                self._anchor(float(value["darkness_ml"]), "", shape, value.get("growth") == "shape")
                if value.get("darkness_curve") is not None:
                    curve, since_curve = value["darkness_curve"], 1.0
            elif b["event"] == "volume-scale-carried" and b["source"] == "analyzer" and b.get("value"):
                # as the level before left it, a switch finished at its end included (not logged)
                self.volume_scale = float(b["value"]["volume_scale"])
            elif b["event"] == "darkness-rescale" and b["source"] == "analyzer" and b.get("value"):
                ratio = float(b["value"]["ratio"])
                self._rescale_anchors(ratio, b["value"].get("anchors"))
                since_curve *= ratio
        if curve is not None:
            self.case.restore_darkness_curve(curve)
            if since_curve != 1.0:
                self.case.rescale_darkness(since_curve)

    @property
    def _pairs(self) -> list[tuple[float, float]]:
        """(image-based, syringe) mL at each anchor: what the darkness's growth reads on."""
        return [(darkness, total) for darkness, _, total in self._anchors]

    @property
    def _shape_anchors(self) -> list[tuple[float | None, float]]:
        """(the two views' shape's truth or None, syringe) mL at each anchor: what the shape's
        growth reads on."""
        return [(shape, total) for _, shape, total in self._anchors]

    def _forget_syringes(self) -> None:
        """No syringe entered at this level yet: a new level, or a restart reading the log's."""
        self._syringe_ml, self._anchors = 0.0, []
        self._shape_top, self._growth_from_shape = None, False
        self._last_anchored, self._anchors_before_switch = None, None

    def _fit_scale(self) -> bool:
        """The image-to-syringe scale from the anchors whose darkness can be read: least squares
        through the origin over every one so far (one noisy reading does not set it alone).
        False, the scale unchanged, where none can be read."""
        readable = [(r, s) for r, s in self._pairs if r >= SYRINGE_MIN_DARKNESS_ML]
        if readable:
            self.volume_scale = sum(r * s for r, s in readable) / sum(r * r for r, _ in readable)
        return bool(readable)

    def _rescaled(self, ratio: float) -> None:
        """The case rescaled its darkness by ``ratio`` (CaseSummary.darkness_rescaled): the
        anchors taken before the switch likewise, and how many is logged with the rescale (a
        restart then rescales those alone, not one entered while the reading was mixed)."""
        first = len(self._anchors) if self._anchors_before_switch is None else self._anchors_before_switch
        self._rescale_anchors(ratio, first)
        for event, _, value in self.case.news:
            if event == "darkness-rescale" and "anchors" not in value:
                value["anchors"] = first

    def _rescale_anchors(self, ratio: float, first: int | None = None) -> None:
        """The level's darkness is read ``ratio`` times what it read before from here on (read
        without scatter correction: CaseSummary.darkness_rescaled): the anchors' darkness
        likewise (the ``first`` ones, those entered on the reading before; default all), and the
        image-to-syringe scale refitted on them as :meth:`_anchor` fits it.
        Without it, tuning 5035 with 1 mL syringes read 1.00 mL from the first syringe's anchor
        to the end (the darkness 0.55 of the anchor's read as no growth) for 1.19-1.51 mL."""
        if not self._anchors:
            if self.case.darkness_calibrated:  # the scale a level before learnt: on the old reading
                self.volume_scale /= ratio
            return
        n = len(self._anchors) if first is None else first  # those entered on the reading before
        self._anchors = [
            (darkness * ratio, shape, total) if i < n else (darkness, shape, total)
            for i, (darkness, shape, total) in enumerate(self._anchors)
        ]
        self._fit_scale()

    def _syringe(self, ml: float) -> str:
        """Calibrate the volume against what the syringes delivered: from 1 mL on, each entry
        anchors this level's volume: the syringes' total plus the growth since, read from the
        cement's shape (:func:`syringe_shape_volume`) where the level's darkness reads low and
        bends (CaseAnalyzer.growth_from_shape, decided here) and the shape is read, else from
        the darkness (:func:`syringe_anchored_volume`); the overall ratio of syringe to darkness
        is kept as the scale of a next level's images until its own syringes are entered. Each
        entry is also said as a "syringe-entry" news item, with the darkness and the shape it
        was anchored on and which growth it chose, so that an analyzer restarted from the log
        takes up the same anchors (:meth:`restore`)."""
        self._syringe_ml += ml
        raw = self._raw_volume_ml
        raw = raw if raw is not None and math.isfinite(raw) else 0.0
        shape = self._raw_shape_ml
        from_shape = shape is not None and self.case.growth_from_shape()
        said = f"{self._syringe_ml:g} mL by syringe at this level, {raw:.2f} mL read from the image then"
        if self._syringe_ml >= 1.0:  # an anchor: how the volume grows from it, for the audit
            said += (
                f" (the cement's shape {shape:.2f} mL): the volume grows from here as the cement's shape"
                " does (this level's darkness reads low, and its shapes show it bending or no curve yet)"
                if from_shape
                else ": the volume grows from here as the image's darkness does"
            )
        self._news.append(
            (
                "syringe-entry",
                said,
                None,
                {
                    "syringe_ml": self._syringe_ml,
                    "darkness_ml": round(raw, 6),
                    "shape_ml": _rounded(shape, 6),
                    "growth": "shape" if from_shape else "darkness",
                    # the curve the level's shapes show, for a restart's later entries to choose on
                    "darkness_curve": self.case.darkness_curve_record(),
                },
            )
        )
        done = f"{ml:g} mL delivered by syringe ({self._syringe_ml:g} mL at this level)"
        return self._anchor(raw, done, shape, from_shape)

    def _anchor(
        self, raw: float, done: str = "", shape: float | None = None, from_shape: bool = False
    ) -> str:
        """The syringes' total so far (``_syringe_ml``) against ``raw``, the image's darkness
        (mL) when it was entered, and ``shape``, the two views' shape's truth then (mL; None where
        none was read): an anchor of this level's volume from 1 mL on, its growth read from the
        shape if ``from_shape``. Returns ``done`` and what the anchor did."""
        if self._syringe_ml < 1.0:
            return done + "; volume scale unchanged"
        self._anchors.append((raw, shape, self._syringe_ml))
        self._shape_top, self._growth_from_shape = shape, from_shape
        if not self._fit_scale():
            return (
                done + f"; the image shows too little cement to read ({raw:.2f} mL):"
                " this level's volume is the syringes' total"
            )
        # Only a scale learnt calibrates the darkness (and is carried to a next level).
        self.case.darkness_calibrated = True
        return (
            done + f"; image showed {raw:.2f} mL: this level's volume is anchored on the syringes"
            f" (image to syringe {self.volume_scale:.2f})"
        )

    def standing_alarms(self) -> list[dict]:
        standing = []
        for alarm in self.case.alarms.shown():
            record = {k: v for k, v in alarm.as_dict().items() if k not in ("evidence", "reason")}
            standing.append({**record, "id": self._alarm_id(alarm)})
        return standing

    def _alarm_id(self, alarm: Alarm) -> str:
        return f"{self.level or '-'}/{alarm.kind}/{alarm.site or 'wall'}/{alarm.priority}/{alarm.frame}"

    def restore(self, store: SessionStore, stream: str) -> str | None:
        """After a restart: re-learn the current level's baseline from the frames the
        session recorded, and which alarms were already raised, so that nothing
        is raised twice and measurements go on against the same baseline."""
        events = store.records("event")
        levels = [r for r in events if r.body["event"] == "level"]
        start = levels[-1].rec if levels else 0
        self.level = levels[-1].body["value"] if levels else self.level or store.meta().get("level")
        ours = [r for r in store.frames_as_sent() if r.body.get("stream") == stream]
        # a level named before the stream's first frame is the first level (_start_level)
        later = bool(levels) and any(r.rec < start for r in ours)
        if later:  # the command line's wall and boxes were the first level's, not this one's
            self._pending = {}
        self._restore_cleft(events, start if later else 0, later)
        # this level's frames: those after the last of each plane judged before it began (a frame
        # resent to a restarted logger, its only copy, is logged late: after the level's start
        # though sent before it, or after frames sent later)
        judged_before: dict[str, int] = {}
        for rec, judged_in, plane, seq in store.result_keys():
            if rec < start and judged_in == stream:
                judged_before[plane] = max(judged_before.get(plane, -1), seq)
        frames = [r for r in ours if r.seq > judged_before.get(r.plane, -1)]
        if not frames:
            return None
        fed = 0
        for plane in ("lateral", "ap"):
            first = sorted((r for r in frames if r.plane == plane), key=lambda r: r.seq)[
                : (self.config or AnalysisConfig()).detection.baseline_frames
            ]
            for r in first:
                header = _header_from_record(r)
                self.process(Frame(header, store.image(r.rec), r.time, 0))
                fed += 1
        lateral = self.case.planes.get("lateral")
        # the syringes entered, with the darkness each was anchored on: this level's anchors, and
        # the scale the earlier levels' left (kept from level to level, as _start_level does)
        self._take_up_syringes([r.body for r in events])
        # the operator's edits and the analyzer's own wall decisions, in the order logged; each
        # edit at the breathing shift it was drawn at (the "edit-placed" logged after it; logs
        # before 2026-12-05 have none: the last baseline frame's)
        since = [r for r in events if r.rec > start]
        for k, r in enumerate(since):
            b = r.body
            if b["event"] == "wall" and lateral is not None:
                with contextlib.suppress(ValueError):
                    lateral.set_wall(b["value"], _drawn_at(since[k + 1 :], "wall"))
            if b["event"] == "body" and b["value"]["plane"] in self.case.planes:
                drawn_at = _drawn_at(since[k + 1 :], "body")
                with contextlib.suppress(ValueError):
                    self.case.planes[b["value"]["plane"]].set_body(b["value"]["box"], drawn_at)
            if b["event"] == "confirm-wall" and lateral is not None:
                with contextlib.suppress(ValueError):
                    lateral.confirm_wall()
            if b["event"] in ("wall-armed", "wall-not-confirmed") and b["source"] == "analyzer" and lateral:
                lateral.restore_wall(b["event"], b["detail"], b.get("value"))
            if b["event"] == "apart-off" and b["source"] == "analyzer":
                view = self.case.planes.get((b.get("value") or {}).get("plane", "lateral"))
                if view is not None:  # before 2026-12-03 said only by the lateral view
                    view.restore_apart(False)
            # the temporal filter's weight as read before the restart: the frames after it are
            # cement, never still again, so it could not be read anew
            if b["event"] == "temporal-filter" and b["source"] == "analyzer" and r.plane in self.case.planes:
                self.case.planes[r.plane].restore_filter((b.get("value") or {}).get("weight"))
            # the level's darkness read low before the restart: it goes on being refused
            if b["event"] == "darkness-reads-low" and b["source"] == "analyzer":
                self.case.restore_darkness_low()
        if lateral is not None:  # the first front was seen before the restart: it is not the first
            seen = store.query(
                "SELECT 1 FROM journal WHERE kind = 'result' AND plane = 'lateral' AND rec > ?"
                " AND json_extract(body, '$.stream') = ?"
                " AND json_extract(body, '$.overlay.front') IS NOT NULL LIMIT 1",
                (start, stream),
            ).fetchone()
            lateral.front_seen = seen is not None
        # what each view read of leaks, in the order logged: a leak read just before the restart
        # is confirmed on the next frame, and the AP's backs the lateral's, as without a restart.
        # Only this stream's newest results count (the frame before, the last LEAK_CORROBORATION_S),
        # and they are few: RECALLED_RESULTS a view, read newest first, not a whole level's (72,000
        # results of a 20-minute level: 1 ms, where reading them all took 5.6 s and 269 MB).
        for plane_name in PLANES:
            rows = store.query(
                "SELECT frame, json_extract(body, '$.acq_time'), json_extract(body, '$.status'),"
                " json_extract(body, '$.checks'), json_extract(body, '$.overlay.leaks') FROM journal"
                " WHERE kind = 'result' AND plane = ? AND rec > ? AND json_extract(body, '$.stream') = ?"
                " ORDER BY seq DESC LIMIT ?",  # the frames' order in the stream, by the index
                (plane_name, start, stream, RECALLED_RESULTS),
            ).fetchall()
            for frame_number, acq_time, status, checks, leaks in reversed(rows):
                if str(status).startswith("error"):  # the state it left is not in its result
                    continue
                checks = None if checks is None else json.loads(checks)
                if plane_name == "lateral" and lateral is not None and "leak-apart" in (checks or ()):
                    lateral.restore_apart(True)  # read before: not decided again on a grown bolus
                self.case.recall_leak_reading(
                    plane_name, frame_number, float(acq_time), checks, json.loads(leaks) if leaks else []
                )
            for frame_number, acq_time, *_ in reversed(rows):  # errors too: the frame came
                self.case.recall_heard(plane_name, frame_number, float(acq_time))
        self.case.restore_silence()
        # whether each view had seen the level's cement from its start, as its newest results said
        # (every result once decided; a frame left unread says nothing, so a few are looked at)
        for plane_name, plane in self.case.planes.items():
            said = store.query(
                "SELECT seen FROM (SELECT json_extract(body, '$.overlay.seen_from_start') AS seen"
                " FROM journal WHERE kind = 'result' AND plane = ? AND rec > ?"
                " AND json_extract(body, '$.stream') = ? ORDER BY seq DESC LIMIT ?) WHERE seen IS NOT NULL"
                " LIMIT 1",
                (plane_name, start, stream, RECALLED_RESULTS),
            ).fetchone()
            if said is not None:
                plane.restore_apart(bool(said[0]))
        for plane in self.case.planes.values():
            plane.news.clear()  # said before the restart
        # a level whose images were found to hold no scatter goes on without its correction
        began = min(r.rec for r in ours)  # this stream's first frame in the log
        last = store.query(
            "SELECT body FROM journal WHERE kind = 'result' AND rec > ? ORDER BY rec DESC LIMIT 2", (start,)
        ).fetchall()
        codes = {c["code"] for (body,) in last for c in json.loads(body).get("caveats") or ()}
        if CaveatCode.SCATTER_NOT_SEEN.value in codes:
            self.case.assume_no_scatter("found before the restart", rescale=False)
        elif any(
            r.body["event"] == "scatter-seen" and r.body["source"] == "analyzer" and r.rec > began
            for r in events
        ):
            # ... and one whose images were found to hold it keeps its correction: any level's
            # finding (the room's, carried from level to level), but this stream's only (a run
            # continuing the session in the folder starts watching the halo afresh, live too)
            self.case.restore_scatter_seen()
        for r in store.records("alarm", after=start):
            b = r.body
            state = self._logged_alarms.setdefault(b["id"], {"active": True, "acknowledged": False})
            state["active"] &= b["state"] != "cleared"
            state["acknowledged"] |= b["state"] == "acknowledged"
            if b["state"] == "raised":
                self.case.alarms.alarms[(b["kind"], b["site"], b["priority"])] = Alarm(
                    b["kind"], b["priority"], b["frame"], b["plane"], b["site"], b["distance_mm"], {},
                    reason=b.get("reason", ""), read_as=tuple(b.get("read_as") or ()),
                )  # fmt: skip
        for alarm in self.case.alarms.alarms.values():
            state = self._logged_alarms[self._alarm_id(alarm)]
            alarm.active, alarm.acknowledged = state["active"], state["acknowledged"]
        return f"restored after a restart: level {self.level}, baseline from {fed} logged frame(s)"


# The results a view's leak readings are taken back from after a restart, newest first: more
# than the frames of LEAK_CORROBORATION_S at any frame rate a C-arm runs (30 frames/s).
RECALLED_RESULTS = 32


def _drawn_at(after: list, action: str) -> tuple[float, float] | None:
    """The breathing shift (working pixels) an operator's ``action`` was drawn at: the analyzer's
    "edit-placed" event logged right after it applied it (before the next operator event), or
    None (an older log)."""
    for r in after:
        b = r.body
        if b["source"] != "analyzer":
            return None
        if b["event"] == "edit-placed" and (b.get("value") or {}).get("action") == action:
            dx, dy = b["value"]["shift_px"]
            return float(dx), float(dy)
    return None


def _operator_commands(given: OperatorInput | None) -> dict[str, list[tuple[Command, CaveatCode]]]:
    """The operator's input from the command line as the commands a viewer would send: per
    plane, in the order applied (a plane's box before the wall, which may refine it), each with
    the caveat that says it could not be applied."""
    pending: dict[str, list[tuple[Command, CaveatCode]]] = {}
    if given is None:
        return pending
    for plane, box in given.body_boxes:
        body = Command("", "command-line", 0.0, "body", {"plane": plane, "box": list(box)})
        pending.setdefault(plane, []).append((body, CaveatCode.OPERATOR_BOX_UNUSED))
    if given.posterior_wall is not None:
        wall = Command("", "command-line", 0.0, "wall", [list(p) for p in given.posterior_wall])
        pending.setdefault("lateral", []).append((wall, CaveatCode.OPERATOR_WALL_UNUSED))
    return pending


def _header_from_record(r) -> FrameHeader:
    b = r.body
    return FrameHeader(
        session="",
        plane=r.plane,
        seq=r.seq,
        frame=r.frame,
        acq_time=b["acq_time"],
        send_time=b["send_time"],
        shape=tuple(b["shape"]),
        dtype=b["dtype"],
        photometric=b["photometric"],
        bits_stored=b["bits_stored"],
        intensity=b["intensity"],
        scale=b["scale"],
    )


def result_for(h: FrameHeader, caveats=(), baseline: bool = False, **measurements) -> Result:
    """A result answering the frame ``h``; the send time is stamped when it goes out.
    ``caveats`` (of :class:`Caveat`) go on the wire typed, and rendered as its ``status``."""
    return Result(
        session=h.session,
        plane=h.plane,
        seq=h.seq,
        frame=h.frame,
        acq_time=h.acq_time,
        frame_send_time=h.send_time,
        send_time=0.0,
        status=render_status(caveats, baseline),
        caveats=[c.as_wire() for c in caveats],
        **measurements,
    )


def distort_overlay(overlay: dict, distortion: RadialDistortion) -> dict:
    """Overlay geometry from undistorted (measured) to distorted (displayed) image pixels."""

    def points(pts):
        return np.round(distortion.distort(np.asarray(pts, float).reshape(-1, 2)), 1).tolist()

    out = dict(overlay)
    for key in ("body", "wall", "safety_line", "cannula_tips"):
        if out.get(key):
            out[key] = points(out[key])
    if out.get("front"):
        out["front"] = points(out["front"])[0]
    if out.get("cement"):
        out["cement"] = [points(c) for c in out["cement"]]
    leaks = []
    for leak in out.get("leaks", []):
        x, y, w, h = leak["box"]
        corners = points([[x, y], [x + w, y], [x, y + h], [x + w, y + h]])
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        box = [int(min(xs)), int(min(ys)), int(max(xs) - min(xs)), int(max(ys) - min(ys))]
        leaks.append(leak | {"centroid": points(leak["centroid"])[0], "box": box})
    if leaks:
        out["leaks"] = leaks
    return out


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _plain(value):
    """JSON-ready: numpy numbers and arrays to Python ones, tuples to lists (dicts with string
    keys, as the overlay's). Through the standard library's C encoder and decoder rather than
    a Python walk: the overlay holds a few hundred contour points a frame, and the walk cost
    about 0.5 ms of the frame's budget. Floats come back exactly (shortest repr round-trips)."""
    return json.loads(json.dumps(value, default=_numpy_value))


def _numpy_value(value):
    """What the JSON encoder cannot take itself: numpy scalars (float64 it can) and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-ready: {type(value).__name__}")


class Watchdog:
    """Turns the arrival times of frames into stale / resumed events."""

    def __init__(self, stale_ms: float):
        self.stale_ms = stale_ms
        self.last_frame: float | None = None
        self.stale_since: float | None = None

    def frame_arrived(self, now: float) -> float | None:
        """Returns how long the stream had been stale (ms) if this frame ends a stale spell."""
        ended = None
        if self.stale_since is not None:
            ended = (now - self.last_frame) * 1000.0
            self.stale_since = None
        self.last_frame = now
        return ended

    def check(self, now: float) -> float | None:
        """Returns the age (ms) of the newest frame when the stream has just become stale."""
        if self.last_frame is None or self.stale_since is not None:
            return None
        age = (now - self.last_frame) * 1000.0
        if age >= self.stale_ms:
            self.stale_since = now
            return age
        return None


class SessionLog:
    """The analyzer's writes to the session log. A failed write (full disk, lost
    volume) never stops the monitoring: it is announced loudly, at once and every
    ``repeat_s`` while it lasts, and writing resumes when the disk does."""

    def __init__(self, session_dir, announce: Callable[[str, str], None], repeat_s: float = 10.0):
        self.store = None
        self._announce = announce
        self._repeat_s = repeat_s
        self._failing_since: float | None = None
        self._announced = 0.0
        self.failed_writes = 0
        if session_dir is not None:
            try:
                self.store = SessionStore.create(session_dir)
            except MonitorError as e:
                self._failed(str(e))

    def write(self, method, *args, **kwargs) -> None:
        """``method``: a SessionStore method's name, or a function doing the writing."""
        if self.store is None:
            return
        try:
            (getattr(self.store, method) if isinstance(method, str) else method)(*args, **kwargs)
        except LogWriteError as e:
            self._failed(str(e))
            return
        if self._failing_since is not None:
            lost, self.failed_writes = self.failed_writes, 0
            self._failing_since = None
            self._announce("log-resumed", f"session logging works again; {lost} record(s) were lost")

    def write_result(self, result: Result, changes: list[tuple[str, dict]], level: str | None) -> None:
        """A result and the alarm changes it brought, in one transaction: a restarted
        analyzer finds both or neither."""
        if self.store is None:
            return

        def both():
            with self.store.atomic():
                for state, alarm in changes:
                    on_this_frame = (alarm.get("plane"), alarm.get("frame")) == (result.plane, result.frame)
                    sent_as = (result.session, result.seq) if state == "raised" and on_this_frame else None
                    self.store.add_alarm(state, alarm, level, result.acq_time, sent_as)
                self.store.add_result(result, level)

        self.write(both)

    def _failed(self, why: str) -> None:
        self.failed_writes += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._announced >= self._repeat_s:
            self._announced = now
            message = f"SESSION LOGGING FAILED, monitoring continues: {why}"
            log.error(message)
            self._announce("log-failed", message)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class AnalyzerNode:
    """The analyzer process's logic, event by event: a message from the source (a frame, a
    heartbeat, its end, or nothing within a turn), the operator's commands, and what is said
    and logged about each. :func:`run_analyzer` owns the sockets and the loop; nothing here
    blocks, and the order of the steps in :meth:`on_message` is the order they must happen in.

    With ``session_dir`` every result, alarm change, operator event and stream fault goes to
    the session log from here, so no alarm depends on another process being alive; if that
    log already holds frames of this stream (a restart), the baseline and alarms are restored
    from it first, and the frames already analysed are skipped when the source resends them.

    ``replayed``: a logged session's operator commands (``SessionSource.logged_commands``) when
    this run replays it: each is carried out as the operator's was, announced and logged with
    source "replay", before the first frame at or after the place it came in the logged
    analysis (``frames_before``, by frame number per plane: a frame the stream dropped does not
    put it off). Restarted with the replay's log, the analyzer skips as many as that log holds
    events of the replay's (each command carried out, refused or failed logs one; those carried
    out are restored with the log, so none is applied twice; those before a frame whose result
    it holds count too). Restarted with no log, its analysis starts afresh at the first frame it
    gets: the commands that came before that frame are said not re-applied rather than applied
    at once to it. So a
    replay alarms as the logged session did where the operator drew the wall, confirmed it,
    adjusted a body, said a cleft, entered a syringe or started a level.
    """

    def __init__(
        self,
        analysis: Analysis,
        session: str,
        results: Publisher,
        flow: FlowClient,
        stale_ms: float = 1000.0,
        session_dir=None,
        exit_on_end: bool = True,
        replayed: Sequence[LoggedCommand] = (),
    ):
        self.analysis = analysis
        self.session = session
        self.results = results
        self.flow = flow
        self.exit_on_end = exit_on_end
        self.stream_time: float | None = None  # the newest analysed frame's acquisition time
        self.log = SessionLog(session_dir, self.announce)
        self.done = self._restore()  # plane -> last seq analysed in this stream, before a restart
        # in the log's order, so in the analysis's too; those this replay's log says were carried
        # out (or refused) before a restart are done
        self.replayed = list(replayed)[self._replayed_before(replayed) :]
        self.first_frame = True  # the next frame is the first this process analyses
        self.catch_up = CatchUp({(session, p): n for p, n in self.done.items()})
        self.watchdog = Watchdog(stale_ms)
        self.gate = CommandGate()
        self.analysed: dict[str, int] = {}
        self.end: End | None = None  # the source's end, once heard
        self.end_at = 0.0
        self.stream_clock: StreamClock | None = None  # the stream's time against ours
        self.sent_end: End | None = None  # the analyzer's own end, once sent
        self.ready = False
        self.next_beat = 0.0
        self.next_standing = 0.0  # when a result or heartbeat next carries the standing alarms
        self.rejected_reported = 0

    def announce(
        self, event: str, detail: str, age_ms=None, plane=None, value=None, source="analyzer"
    ) -> None:
        """A status event on the results stream, and (but for the log's own) in the log."""
        status = Status(self.session, source, time.time(), event, detail, age_ms, plane)
        self.results.send(status)
        if event not in ("log-failed", "log-resumed"):
            self.log.write(
                "add_event",
                source,
                event,
                detail,
                age_ms,
                plane,
                status.send_time,
                value,
                self.analysis.level,
                self.stream_time,
            )

    def _restore(self) -> dict[str, int]:
        store = self.log.store
        if store is None:
            return {}
        restored = (
            self.analysis.restore(store, self.session) if store.count("frame", stream=self.session) else None
        )
        if not restored:
            self.log.write("add_event", "analyzer", "started", f"pid {os.getpid()}", at=time.time())
            return {}
        done = {p: n for p in PLANES if (n := store.last_seq("result", p, self.session)) is not None}
        self.announce("restarted", f"pid {os.getpid()} {restored}; results logged up to {done}")
        return done

    def _replayed_before(self, replayed: Sequence[LoggedCommand]) -> int:
        """How many of ``replayed`` this run's log says were carried out, refused or failed (0
        with no log, or a new one): those before a frame whose result it holds, or as many as it
        holds events of the replay's (each command logs one), whichever is more. The events
        count one carried out just before the analyzer died, its frame's result not yet
        written; the results, one whose event a failing disk lost."""
        store = self.log.store
        if store is None:
            return 0
        judged = sum(any(self.done.get(p, -1) >= n for p, n in c.frames_before.items()) for c in replayed)
        return max(judged, sum(r.body.get("source") == "replay" for r in store.records("event")))

    def on_commands(self, control: zmq.Socket) -> None:
        _take_commands(control, self.analysis, self.announce, self.gate)

    def on_message(self, message, rejected: dict[str, int], now: float) -> bool:
        """One turn: ``message`` from the source (None: nothing within the turn), ``rejected``
        the subscriber's counts of messages refused so far. True when the run is over."""
        # said before anything else, the end included: what was rejected on the way to it
        total_rejected = sum(rejected.values())
        if total_rejected > self.rejected_reported:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(rejected.items()))
            self.announce("rejected", f"rejected messages so far: {detail}")
            self.rejected_reported = total_rejected
        if now >= self.next_beat:
            self.results.heartbeat(self._standing(now))
            self.next_beat = now + HEARTBEAT_S
        if message is not None and not self.ready:
            self.flow.ready(self.done)
            self.catch_up.asked()
            self.ready = isinstance(message, Frame)
        if isinstance(message, Frame):
            self._arrived(message, now)
        for frame in self.catch_up.admit(message if isinstance(message, Frame) else None):
            self.on_frame(frame)
        if isinstance(message, End) and self.end is None:
            self.end, self.end_at = message, now
        if self.end is not None and self.on_end(now) and self.exit_on_end:
            return True
        if message is None or isinstance(message, Heartbeat):
            self.on_idle(now)
        return False

    def _arrived(self, frame: Frame, now: float) -> None:
        stale_for = self.watchdog.frame_arrived(now)
        if stale_for is not None:
            self.announce(
                "resumed", f"frames resumed after {stale_for:.0f} ms", stale_for, frame.header.plane
            )
        if frame.gap:
            h = frame.header
            self.announce("dropped", f"{frame.gap} {h.plane} frame(s) lost before seq {h.seq}", plane=h.plane)

    def on_frame(self, frame: Frame) -> None:
        """Analyse a frame; log its result with the alarm changes it brought, send it, ack it."""
        h = frame.header
        first, self.first_frame = self.first_frame, False
        # a restart with no log to restore from, the frames before no longer kept: the analysis
        # starts afresh here, and an edit made on frames it never had is no edit of it
        if first and self.log.store is None:
            while self.replayed and h.seq > self.replayed[0].frames_before.get(h.plane, 0):
                c = self.replayed.pop(0)
                self.announce(
                    "rejected-command",
                    f"{c.action}: not re-applied: it came before {h.plane} frame"
                    f" {c.frames_before.get(h.plane, 0)}, and this analyzer started at frame {h.seq}",
                    value=c.value,
                    source="replay",
                )
        while self.replayed and h.seq >= self.replayed[0].frames_before.get(h.plane, 0):
            c = self.replayed.pop(0)
            _carry_out(
                self.analysis, Command(self.session, "replay", time.time(), c.action, c.value), self.announce
            )
        result = _analyse(self.analysis, frame)
        self.stream_time = h.acq_time
        if self.stream_clock is None:
            self.stream_clock = StreamClock(h.acq_time, h.send_time)
        self.stream_clock.tick(h.acq_time, h.send_time)
        for event, detail, plane, value in self.analysis.news():
            self.announce(event, detail, plane=plane, value=value)
        changes = self.analysis.alarm_changes(result.acq_time)
        self.log.write_result(result, changes, self.analysis.level)
        if changes:  # on the wire too, for consumers that follow alarm states (monitor igtl)
            result = replace(result, alarm_changes=[_change(state, a) for state, a in changes])
        standing = self._standing(time.monotonic())
        if standing is not None:
            result = replace(result, standing_alarms=standing)
        self.results.send(result)
        self.analysed[h.plane] = self.analysed.get(h.plane, 0) + 1
        self.flow.ack(h.plane, h.seq)

    def _standing(self, now: float) -> list[dict] | None:
        """The alarms standing, for the next result or heartbeat sent, about once a second
        (STANDING_ALARMS_EVERY_S; None in between): a view or bridge attached since an alarm
        was raised shows it, whether frames still come (on a result) or not (on a heartbeat:
        the source stalled, or the recording has ended and a view is still open)."""
        if now < self.next_standing:
            return None
        self.next_standing = now + STANDING_ALARMS_EVERY_S
        return self.analysis.standing_alarms()

    def on_end(self, now: float) -> bool:
        """After the source's end: done (the analyzer's own end sent) once every frame the
        source sent is analysed, or it is too late for the missing ones."""
        if self.catch_up.behind(self.end) and now - self.end_at <= END_GRACE_S:
            return False
        # the source's reason passed on: a viewer tells a recording's end from a source's failure
        self.sent_end = End(
            self.end.session, "analyzer", time.time(), self.analysed, self.end.reason, self.end.unsent
        )
        self.results.send(self.sent_end)
        self.end = None
        return True

    def after_end(self, control: zmq.Socket, now: float) -> None:
        """One turn after the end, while a view is still open: only an acknowledge is taken
        (anything else is refused: no frame will be judged by it), and the alarm changes it
        brings are logged at the stream's clock run on past the last frame at the rate the
        stream ran (a live source: an acknowledge 20 s after the last frame is logged 20 s
        after it; a replay at 4x: 80 stream seconds after it). The analyzer's end is said
        again with each heartbeat, for views attached since."""
        if self.stream_time is not None and self.stream_clock is not None:
            self.stream_time = self.stream_clock.at(now)
        _take_commands(control, self.analysis, self.announce, self.gate, only=AFTER_END_COMMANDS)
        if now >= self.next_beat:  # the views know the analyzer still listens, and that it ended
            self.results.heartbeat(self._standing(now))
            if self.sent_end is not None:
                self.results.send(self.sent_end)
            self.next_beat = now + HEARTBEAT_S
        changes = self.analysis.alarm_changes(self.stream_time)
        if changes and self.log.store is not None:
            store, level, at = self.log.store, self.analysis.level, self.stream_time

            def write():
                with store.atomic():
                    for state, alarm in changes:
                        store.add_alarm(state, alarm, level, at)

            self.log.write(write)

    def on_idle(self, now: float) -> None:
        """No frame this turn: say when the stream has gone stale."""
        age = self.watchdog.check(now)
        if age is not None:
            self.announce("stale", f"no new frame for {age:.0f} ms", age)


AFTER_END_COMMANDS = frozenset({"acknowledge"})  # taken after the end, while a view is open


@dataclass
class StreamClock:
    """The stream's acquisition time against the source's send time (wall seconds,
    ``time.time()``, in the frame header), to run the stream's clock on past its last frame at
    the rate the source paced it: 1 for a live source, the replay's speed for a recording
    (measured, not told; the send time, not the arrival, so the analyzer's own lag is not in it)."""

    first_acq: float
    first_arrival: float
    last_acq: float = 0.0
    last_arrival: float = 0.0

    def tick(self, acq_time: float, arrival: float) -> None:
        self.last_acq, self.last_arrival = acq_time, arrival

    def rate(self) -> float:
        """Stream seconds per wall second; 1 until the stream has run for half a second."""
        wall = self.last_arrival - self.first_arrival
        return (self.last_acq - self.first_acq) / wall if wall > 0.5 else 1.0

    def at(self, monotonic_now: float) -> float:
        """The stream's time now (``monotonic_now``: time.monotonic(), converted here)."""
        wall_now = time.time() - (time.monotonic() - monotonic_now)
        return self.last_acq + max(0.0, wall_now - self.last_arrival) * self.rate()


@dataclass
class AfterEnd:
    """How an analyzer outlives the source's end while a live view is open: it calls
    ``finished`` once all is analysed (its end sent), then serves commands until ``released``
    returns True (the view closed). Across processes, two multiprocessing Events."""

    finished: Callable[[], None]
    released: Callable[[], bool]


def run_analyzer(
    frames_endpoint: str,
    results_endpoint: str,
    flow_endpoint: str | None = None,
    session: str = "",
    stale_ms: float = 1000.0,
    analysis: Analysis | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    exit_on_end: bool = True,
    session_dir=None,
    control_endpoint: str | None = None,
    level: str | None = None,
    after_end: AfterEnd | None = None,
    replayed: Sequence[LoggedCommand] = (),
) -> dict:
    """Run an :class:`AnalyzerNode` until the source's end message (or ``should_stop``);
    returns counts. With ``control_endpoint`` it takes operator commands there; ``replayed``:
    a logged session's, carried out again where they came (:class:`AnalyzerNode`).

    With ``after_end`` (a live view is open), once everything is analysed it says so and
    keeps taking the operator's commands until released: an alarm acknowledged after the
    recording ended is carried out and logged, not lost with the analyzer."""
    ctx = zmq.Context()
    analysis = analysis or VisionAnalysis(level=level)
    frames = Subscriber(frames_endpoint, context=ctx, session=session, key="analyzer")
    results = Publisher(results_endpoint, session=session, source="analyzer", context=ctx, role="results")
    control = ctx.socket(zmq.PULL)
    control.setsockopt(zmq.LINGER, 0)
    control.setsockopt(zmq.MAXMSGSIZE, MAX_COMMAND_BYTES)  # a larger sender is disconnected
    if control_endpoint:
        bind_endpoint(control, control_endpoint, "control")
    flow = FlowClient(flow_endpoint, "analyzer", context=ctx)
    node = None
    pacing = CollectionPacing()
    try:
        node = AnalyzerNode(analysis, session, results, flow, stale_ms, session_dir, exit_on_end, replayed)
        released = after_end.released if after_end is not None else lambda: False
        with pacing:  # Python's full collections between frames, not inside one
            while not should_stop() and not released():
                node.on_commands(control)
                message = frames.receive(20)
                if node.on_message(message, frames.stats.rejected, time.monotonic()):
                    break
                pacing.between_frames()
        if after_end is not None and not should_stop() and not released():
            after_end.finished()
            while not should_stop() and not released():
                node.after_end(control, time.monotonic())
                time.sleep(0.02)
            node.after_end(control, time.monotonic())  # what was pressed as the window closed
    finally:
        frames.close()
        results.close()
        control.close()
        flow.close()
        if node is not None:
            node.log.close()
        ctx.term()
    return {
        "analysed": node.analysed,
        "rejected": dict(frames.stats.rejected),
        "dropped": dict(frames.stats.dropped),
    }


def analyse_source(source, analysis: Analysis | None = None, session: str = "offline"):
    """Every frame of ``source`` (a DicomPairSource, VideoSource, SessionSource, ...) through
    ``analysis`` (default: the monitor's own, default configuration), in the source's order,
    in this process: yields (SourceFrame, Result) per frame.

    The analyzer process does exactly this with each frame it receives (header as the
    source publishes it, then ``analysis.process``), so the accuracy benchmark and the tests
    measure the path that runs in the room: its pixel spacing, distortion correction,
    syringe scaling, operator input and rounding included."""
    analysis = analysis or VisionAnalysis()
    seq = dict.fromkeys(source.formats, 0)
    for item in source.frames():
        header = frame_header(session, item, seq[item.plane], source.formats[item.plane])
        seq[item.plane] += 1
        yield item, analysis.process(Frame(header, item.pixels, 0.0, 0))


class CatchUp:
    """Frames in the order to analyse them, each once.

    After a restart the source resends the frames the analyzer missed, but live
    frames may arrive first: for ``window_s`` after asking, a frame waits until
    its plane's previous one has been analysed, so the gap is filled in order. Frames
    already analysed (before the restart, or copies resent for a logger) are
    skipped.
    """

    def __init__(self, done: dict[tuple[str, str], int], window_s: float = 10.0):
        self.done = dict(done)  # (stream, plane) -> last seq analysed
        self.window_s = window_s
        self.until = float("inf") if done else 0.0  # filling until the resend is asked for, then window_s
        self.held: list[Frame] = []

    def asked(self) -> None:
        """The resend has been asked for: fill the gap for at most ``window_s`` from now."""
        if self.until == float("inf"):
            self.until = time.monotonic() + self.window_s

    def behind(self, end: End) -> bool:
        """Frames the source says it sent that are not analysed yet."""
        return bool(self.held) or any(
            self.done.get((end.session, plane), -1) < count - 1 for plane, count in end.frames.items()
        )

    def admit(self, frame: Frame | None) -> list[Frame]:
        """Take one arriving frame (or None); returns the frames to analyse now."""
        if frame is not None:
            h = frame.header
            if h.seq > self.done.get((h.session, h.plane), -1):
                self.held.append(frame)
        filling = time.monotonic() < self.until
        out = []
        while self.held:
            ready = [
                f
                for f in self.held
                if not filling
                or f.header.seq == self.done.get((f.header.session, f.header.plane), f.header.seq - 1) + 1
            ]
            if not ready:
                break
            first = min(ready, key=lambda f: (f.header.acq_time, PLANES.index(f.header.plane)))
            self.held.remove(first)
            out.append(first)
            self.done[(first.header.session, first.header.plane)] = first.header.seq
        return out


class CommandGate:
    """At most ``rate`` operator commands a second (``burst`` at once) are carried out; the
    rest are dropped, counted and said once a second. An operator presses a few buttons a
    second; a flood (30,000 commands delayed results by 3.6 s) must not stall the analysis,
    nor fill the log."""

    SAFETY = frozenset({"acknowledge", "pause", "resume"})  # a bucket of their own: never starved

    def __init__(self, rate: float = 10.0, burst: int = 20):
        self.rate, self.burst = rate, burst
        now = time.monotonic()
        # (sender's key, safety?) -> [tokens, at]: one sender's flood (a 3D Slicer client
        # acknowledging thousands of times through the bridge) never starves another's pause
        self._buckets: dict[tuple[str | None, bool], list[float]] = {}
        self._said = now
        self.dropped = 0  # since last said

    def admit(self, action: str | None = None, sender: str | None = None) -> bool:
        """Whether to carry out a command (``action``; None: unreadable) sent with the key
        named ``sender`` now."""
        now = time.monotonic()
        bucket = self._buckets.setdefault((sender, action in self.SAFETY), [float(self.burst), now])
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        self.dropped += 1
        return False

    def report(self, announce) -> None:
        now = time.monotonic()
        if self.dropped and now - self._said >= 1.0:
            announce(
                "rejected-command",
                f"{self.dropped} operator command(s) dropped unread: more than {self.rate:g} a second",
            )
            self.dropped, self._said = 0, now


MAX_COMMANDS_PER_TURN = 200  # read (most of them dropped) between two frames, at most


def _take_commands(
    control: zmq.Socket, analysis, announce, gate: CommandGate | None = None, only: frozenset | None = None
) -> None:
    """Apply the pending operator commands the gate admits, and announce (and log) each.
    ``only``: the actions taken now (after the end: acknowledge); others are refused, said."""
    gate = gate or CommandGate()
    for _ in range(MAX_COMMANDS_PER_TURN):
        if not control.poll(0):
            break
        parts = control.recv_multipart(copy=False)
        sender = security.sender(parts[0])  # the key it came with: the only source believed
        try:
            message = decode(parts)
        except MessageError as e:
            if gate.admit(None, sender):
                announce("rejected-command", f"malformed operator command: {e.detail}", source=sender or "?")
            continue
        if not gate.admit(message.action if isinstance(message, Command) else None, sender):
            continue
        if not isinstance(message, Command):
            announce("rejected-command", f"{type(message).__name__} on the control endpoint")
            continue
        if not security.may_command(sender, message.action):
            announce(
                "rejected-command",
                f"{message.action}: sent with the {sender or 'no'} key; only the viewer and operator"
                " keys command the analyzer (the igtl key: acknowledge only)",
                value=message.value,
                source=sender or "?",
            )
            continue
        message = replace(message, source=sender)
        if only is not None and message.action not in only:
            announce(
                "rejected-command",
                f"{message.action}: the recording has ended; only {', '.join(sorted(only))} is taken now",
                value=message.value,
                source=message.source,
            )
            continue
        _carry_out(analysis, message, announce)
    gate.report(announce)


def _carry_out(analysis, message: Command, announce) -> None:
    """Apply one operator command and announce (and log) what was done, or why it was not:
    refused (``rejected-command``), or a fault in the monitor (``command-failed``, the monitoring
    goes on). The news the command brought is announced after it."""
    try:
        done = analysis.apply(message)
    except CommandRefused as e:
        announce("rejected-command", f"{message.action}: {e}", value=message.value, source=message.source)
        return
    except Exception as e:  # a bug: said and logged as one; the monitoring goes on
        log.exception("operator command %s failed", message.action)
        detail = f"{message.action} failed (a fault in the monitor, not the command): {e!r}"[:300]
        announce("command-failed", detail, value=message.value, source=message.source)
        return
    announce(message.action, done, value=message.value, source=message.source)
    for event, detail, plane, value in analysis.news():  # logged now: a restart must find them
        announce(event, detail, plane=plane, value=value)


def _change(state: str, alarm: dict) -> dict:
    """An alarm change as the wire carries it: what happened, and the alarm without its evidence."""
    return {"state": state, **{k: v for k, v in alarm.items() if k != "evidence"}}


def _analyse(analysis, frame: Frame) -> Result:
    """One frame's result; an exception becomes an error result, never a dead analyzer."""
    try:
        result = analysis.process(frame)
    except Exception as e:  # a bug or a frame the analysis cannot handle: report it, keep running
        log.exception("analysis failed on %s frame %d", frame.header.plane, frame.header.frame)
        result = result_for(frame.header, (Caveat(CaveatCode.ANALYSIS_FAILED, f"{e}"[:193]),), checks=[])
    return replace(result, send_time=time.time())


def _as_measured(points, distortion: RadialDistortion | None) -> list:
    """Points the operator gave on the image as shown, on the image as measured (undistorted)."""
    points = np.asarray(points, float)
    return (distortion.undistort(points) if distortion is not None else points).tolist()


def _box_as_measured(box, distortion: RadialDistortion | None) -> list[float]:
    """A box given on the image as shown: the box around its corners once undistorted."""
    x, y, w, h = (float(v) for v in box)
    corners = np.asarray(_as_measured([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], distortion))
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
