"""What the live view shows, decided without Qt (``monitor/viewer.py`` draws it).

Fed by the frames, results and status messages of a session: which alarms
are shown (latched until acknowledged), whether the stream is stale, what the
large readouts say, and the distance and volume history for the timelines.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from monitor.audit import MAX_UNCHECKED_S, MONITORED_SHARE
from monitor.display import auto_window
from monitor.messages import PLANES, Result, Status
from monitor.overlay import leak_name
from monitor.vision.alarms import PLANE_CHECKS
from monitor.vision.caveats import CaveatCode
from monitor.vision.stats import small_median
from monitor.vision.temporal import VIEW_SILENT_STEPS

# shown orange: the volume read from the shape, not checked, or on a level that held cement
# when monitoring began (what went in before is estimated, or left out)
DOUBTFUL_VOLUME = {
    CaveatCode.VOLUME_BELOW_SHAPE,
    CaveatCode.VOLUME_ABOVE_SHAPE,
    CaveatCode.VOLUME_UNCHECKED,
    CaveatCode.VOLUME_ONE_VIEW,
    CaveatCode.VOLUME_HELD,
    CaveatCode.CEMENT_IN_BASELINE,
}

STALE_S = 1.0  # no new frame for this long: NO SIGNAL
# The live NOT MONITORED state is judged, per plane, on its newest results after the baseline,
# with the audit's threshold (monitor.audit.MONITORED_SHARE).
COVERAGE_WINDOW = 20
CLEFT_SENT_S = 3.0  # a Known cleft press is shown this long before the analyzer has said it done
NO_ANALYSIS_S = 2.0  # frames but no result for this long: the analyzer is not answering
BANNER_LINES = 3  # the alarm banner's height in lines of its font (fixed: the images never move)
HELD_SHOWN_S = 0.5  # a held result stands for the frames shown this long after its own (s)
DISPLAY_SIDE = 768  # frames are shown decimated to at most this many pixels a side


@dataclass
class PlaneState:
    pixels: np.ndarray | None = None
    frame: int | None = None
    photometric: str = "MONOCHROME2"
    window: tuple[float, float] | None = None
    arrived: float | None = None  # time.monotonic()
    acq_time: float = 0.0  # of the frame shown
    result: Result | None = None
    # the view's newest steps between frames as they arrived (s, time.monotonic(): a replay slower
    # than recorded spaces them out): how long it may send none (view_silent_for)
    steps: deque = field(default_factory=lambda: deque(maxlen=8))


@dataclass
class ViewState:
    """Everything the view shows, fed by messages; no Qt."""

    stale_s: float = STALE_S
    planes: dict = field(default_factory=lambda: {p: PlaneState() for p in PLANES})
    shown_alarms: list = field(default_factory=list)  # latched until acknowledged
    level: str | None = None
    distance_mm: float | None = None
    seconds_to_line: float | None = None
    volume_ml: float | None = None
    volume_interval_ml: tuple[float, float] | None = None  # the volume's 68 % interval, when said
    # the volume shown is one the monitor cannot vouch for: the shape's, the darkness having read
    # low or high (volume-below-shape, volume-above-shape), the darkness with no shape to check
    # it by (volume-unchecked), or on a level that held cement when monitoring began (cement-in-baseline)
    volume_doubtful: bool = False
    _volume_doubts: dict = field(default_factory=dict)  # plane -> its newest result doubts the volume
    distances: deque = field(default_factory=lambda: deque(maxlen=3000))  # (time, mm), lateral
    volumes: deque = field(default_factory=lambda: deque(maxlen=3000))  # (time, mL)
    last_result_at: float | None = None
    notices: deque = field(default_factory=lambda: deque(maxlen=5))  # recent status lines
    stale_notice: str | None = None  # the analyzer's "no new frame", until its "resumed"
    paused: bool = False
    known_cleft: bool = False  # the level's cleft the operator knows of, as the analyzer last said
    # the operator's Known cleft sent from this view, until the analyzer says it done (its "cleft"
    # status): (value, when sent in this view's monotonic s); shown meanwhile (shown_cleft)
    _cleft_sent: tuple[bool, float] | None = None
    # per plane, the newest results after the baseline: (rules evaluated, status)
    checked: dict = field(default_factory=lambda: {p: deque(maxlen=COVERAGE_WINDOW) for p in PLANES})
    stream_since: float | None = None  # stream time of the level's first result after the baseline
    stream_at: float | None = None  # ... and of its newest, in any plane
    proximity_checked_at: float | None = None  # ... of the newest lateral frame checked for 5 mm
    # once the source has said it is done: "RECORDING ENDED", or "SOURCE STOPPED: why" when it
    # stopped on a fault; not a lost signal, so no NO SIGNAL and no alarm sound from then on
    ended: str | None = None
    said_after_end: str | None = None  # the newest status line heard after the end (an acknowledge)
    # The analyzer's alarm states, when its results carry them (Result.alarm_changes, and its
    # whole list about once a second, on a result or a heartbeat: standing_alarms): alarm id ->
    # the alarm with "active" (its condition present) and "acknowledged". An acknowledged alarm
    # stays shown, steady, while its condition lasts (IEC 60601-1-8); only its sound stops.
    alarm_states: dict = field(default_factory=dict)
    follows_changes: bool = False  # once any result carried alarm states

    def end(self, reason: str | None) -> None:
        """The source's end message (``reason``: None for a recording played to its end)."""
        self.ended = "RECORDING ENDED" if not reason else f"SOURCE STOPPED: {reason}"

    def frame(
        self, plane: str, pixels: np.ndarray, frame: int, photometric: str, now: float, acq_time: float = 0.0
    ) -> None:
        p = self.planes[plane]
        if p.arrived is not None and now > p.arrived:  # on the clock its age is told on
            p.steps.append(now - p.arrived)
        p.pixels, p.frame, p.photometric, p.arrived = pixels, frame, photometric, now
        p.acq_time = acq_time
        if p.window is None:
            p.window = auto_window(pixels.astype(np.float32))

    def result(self, r: Result, now: float) -> None:
        self.planes[r.plane].result = r
        self.last_result_at = now
        if r.level and r.level != self.level:
            self.level = r.level
            self.distances.clear()
            self.volumes.clear()
            for recent in self.checked.values():
                recent.clear()
            self.stream_since = self.stream_at = self.proximity_checked_at = None
            self.alarm_states.clear()  # a new level: the last one's alarms are not this one's
            self.known_cleft = False
            self._volume_doubts.clear()
        if r.status != "baseline" and r.checks is not None:
            self.checked[r.plane].append((frozenset(r.checks), r.status))
            self.stream_since = r.acq_time if self.stream_since is None else self.stream_since
            self.stream_at = max(self.stream_at or r.acq_time, r.acq_time)
            if r.plane == "lateral" and "proximity" in r.checks:
                self.proximity_checked_at = r.acq_time
        if r.known_cleft is not None:
            self.known_cleft = r.known_cleft
        if r.plane == "lateral":
            self.distance_mm = r.distance_mm
            self.seconds_to_line = r.seconds_to_line
            if r.distance_mm is not None:
                self.distances.append((r.acq_time, r.distance_mm))
        if r.volume_ml is not None:
            self.volume_ml = r.volume_ml
            said = r.volume_low_ml is not None and r.volume_high_ml is not None
            self.volume_interval_ml = (r.volume_low_ml, r.volume_high_ml) if said else None
            # the level's volume: doubtful while either view's newest result doubts it (set per
            # view, it flickered frame by frame where one view alone held cement at the start)
            self._volume_doubts[r.plane] = bool(DOUBTFUL_VOLUME & set(r.caveat_codes()))
            self.volume_doubtful = any(self._volume_doubts.values())
            self.volumes.append((r.acq_time, r.volume_ml))
        for change in r.alarm_changes or ():
            self.follows_changes = True
            state = self.alarm_states.setdefault(
                change["id"], {**change, "active": True, "acknowledged": False}
            )
            if change["state"] == "cleared":
                state["active"] = False
            elif change["state"] == "acknowledged":
                state["acknowledged"] = True
            if not state["active"] and state["acknowledged"]:
                del self.alarm_states[change["id"]]
        if r.standing_alarms is not None:
            self.standing(r.standing_alarms)
        for alarm in r.alarms:
            self.shown_alarms = [a for a in self.shown_alarms if _key(a) != _key(alarm)] + [alarm]

    def standing(self, alarms: list[dict]) -> None:
        """The alarms standing at the analyzer (Result.standing_alarms, or on its heartbeat when
        no frames come or after the end; about once a second) are the analyzer's own list, made
        after every change and status sent before it (results, statuses and heartbeats come in
        order on one socket): they replace what this view pieced together. A view attached
        after an alarm was raised never heard its change; one that heard a change out of its
        context (an "acknowledged" for an alarm it had let go, the same alarm raised again on a
        looped replay, a level started again) is put right."""
        self.follows_changes = True
        self.alarm_states = {a["id"]: dict(a) for a in alarms}

    def status(self, s: Status) -> None:
        if s.event == "acknowledge":
            self.shown_alarms = []
            for alarm_id, state in list(self.alarm_states.items()):  # said now; confirmed by the results
                state["acknowledged"] = True
                if not state["active"]:
                    del self.alarm_states[alarm_id]
        elif s.event in ("pause", "resume"):
            self.paused = s.event == "pause"
        elif s.event == "cleft" and self._cleft_sent is not None:
            # done: what was sent stands until a result says otherwise (another view's press)
            self.known_cleft, self._cleft_sent = self._cleft_sent[0], None
        elif s.event == "resumed" and self.stale_notice in self.notices:
            # the spell is over: left as the newest notice, it read as the present over a live stream
            self.notices.remove(self.stale_notice)
        if s.event not in ("resumed",):
            self.notices.append(f"{s.source}: {s.detail}")
            if self.ended:
                self.said_after_end = self.notices[-1]
            self.stale_notice = self.notices[-1] if s.event == "stale" else self.stale_notice

    def cleft_sent(self, known: bool, now: float) -> None:
        """This view sent the operator's Known cleft (``known``) at ``now`` (monotonic s)."""
        self._cleft_sent = (known, now)

    def shown_cleft(self, now: float) -> bool:
        """Whether the level has a known cleft, as shown: what this view sent while the analyzer
        has not said it done (results computed before it came in say the old state), for up to
        CLEFT_SENT_S (a command refused or lost: the analyzer's results then stand); else what
        the analyzer last said. So a press stands on the screen while no frames come."""
        if self._cleft_sent is not None and now - self._cleft_sent[1] < CLEFT_SENT_S:
            return self._cleft_sent[0]
        return self.known_cleft

    def analysis_lag_s(self) -> float | None:
        """How far (stream seconds) the newest result is behind the newest frame shown."""
        lags = [
            p.acq_time - p.result.acq_time for p in self.planes.values() if p.result and p.pixels is not None
        ]
        return max(lags) if lags else None

    def stale_for(self, now: float) -> float | None:
        """Seconds since the newest frame of any plane, if that is too long; None while live,
        and once the source has ended (no frame is expected)."""
        if self.ended:
            return None
        arrivals = [p.arrived for p in self.planes.values() if p.arrived is not None]
        if not arrivals:
            return None
        age = now - max(arrivals)
        return age if age >= self.stale_s else None

    def view_held(self, plane: str) -> bool:
        """Whether the analysis skips ``plane``'s frames as a held image (image-held) on the
        frames on screen: its newest result says so, of a frame acquired at most HELD_SHOWN_S
        before the one shown (an analyzer stopped or behind after a held result left new
        exposures greyed under IMAGE HELD: an independent review)."""
        p = self.planes[plane]
        r = p.result
        return (
            r is not None
            and CaveatCode.IMAGE_HELD in r.caveat_codes()
            and p.acq_time - r.acq_time <= HELD_SHOWN_S
        )

    def view_silent_for(self, plane: str, now: float) -> float | None:
        """Seconds since ``plane``'s newest frame while the other view's frames go on, if that is
        over the analysis's own limit for it (VIEW_SILENT_STEPS of its usual steps), and at least
        stale_s; None while it is live, before its first frame, once the source has ended, and
        while the whole stream is stale (said as such, over both views). An AP grabber unplugged
        mid-level left the AP's last image and overlay shown as if live."""
        p = self.planes[plane]
        if self.ended or p.arrived is None:
            return None
        others = [q.arrived for name, q in self.planes.items() if name != plane and q.arrived is not None]
        if not others or now - max(others) >= self.stale_s:
            return None
        usual = small_median(p.steps) or 0.0
        age = now - p.arrived
        return age if age >= max(self.stale_s, VIEW_SILENT_STEPS * usual) else None

    def analysis_silent(self, now: float) -> bool:
        arrivals = [p.arrived for p in self.planes.values() if p.arrived is not None]
        if not arrivals or now - max(arrivals) > self.stale_s:
            return False
        return self.last_result_at is None or now - self.last_result_at > NO_ANALYSIS_S

    def not_monitored(self) -> str | None:
        """Why the newest frames of a plane were not checked against a safety rule (the
        status of the latest such frame, per plane), or None while they all are.

        A standing state, not an alarm: it holds as long as the frames go unchecked, so
        that "no alarm" is never read as "all clear" when nobody looked.
        """
        return "; ".join(f"{plane}: {why}" for plane, why in self.unchecked()) or None

    def unchecked(self) -> list[tuple[str, str]]:
        """(plane, why) for each plane whose newest frames go unchecked (see not_monitored)."""
        reasons = []
        for plane, rules in PLANE_CHECKS.items():
            recent = self.checked[plane]
            if not recent:
                continue
            for rule in rules:
                if sum(rule in done for done, _ in recent) < MONITORED_SHARE * len(recent):
                    why = next(status for done, status in reversed(recent) if rule not in done)
                    reasons.append((plane, why))
                    break
        lateral_said = any(plane == "lateral" for plane, _ in reasons)
        if self.stream_at is not None and not lateral_said:  # a lateral view stopped, the AP going on
            since = self.proximity_checked_at
            since = self.stream_since if since is None else since
            if self.stream_at - since > MAX_UNCHECKED_S:
                gap = self.stream_at - since
                reasons.insert(0, ("lateral", f"no frame checked against the 5 mm rule for {gap:.1f} s"))
        return reasons

    def wall_confirmable(self) -> bool:
        """Whether the newest lateral result's wall found may be confirmed: not where the analyzer
        refuted it or found it not seen in the images (``wall_confirmable`` false: to be drawn);
        True with no result, or from an analyzer that does not say."""
        r = self.planes["lateral"].result
        return r is None or r.overlay.get("wall_confirmable", True)

    def wall_prompt(self) -> str | None:
        """What the operator must do about the posterior wall before the 5 mm rule is checked,
        from the newest lateral result: confirm the wall found or draw it ("WALL NOT
        CONFIRMED"; only draw it where the result says the wall found cannot be confirmed,
        ``wall_confirmable``), or draw one where none was found; None while the rule is armed. Where none
        was found there is no body outline to read a leak against either (a drawn wall or box
        gives one, and the caveat goes): at most cement apart from the bolus is read as a leak
        there (when the result says it checked "leak-apart"). It says which, as this prompt stands
        in the banner in place of the lateral view's NOT MONITORED, and must not say less."""
        r = self.planes["lateral"].result
        if r is None or r.status == "baseline" or self.ended:
            return None
        codes = r.caveat_codes()
        if CaveatCode.WALL_NOT_CONFIRMED in codes and not self.wall_confirmable():
            # refuted by the first cement, or not seen in these images: drawn, not confirmed
            return (
                "WALL NOT CONFIRMED: 5 mm rule OFF. The wall found cannot be trusted: draw it (Adjust wall)"
            )
        if CaveatCode.WALL_NOT_CONFIRMED in codes:
            return "WALL NOT CONFIRMED: 5 mm rule OFF. Check the dashed wall: Confirm wall, or Adjust wall"
        if CaveatCode.NO_ANATOMY in codes and CaveatCode.UNCALIBRATED not in codes:
            if "leak-apart" in (r.checks or ()):
                return (
                    "NO WALL FOUND: 5 mm rule OFF; lateral leaks only seen apart from the bolus."
                    " Draw the posterior wall (Adjust wall)"
                )
            return "NO WALL FOUND: 5 mm and leak rules OFF in lateral. Draw the posterior wall (Adjust wall)"
        return None

    def alarms(self) -> list[dict]:
        """The alarms to show, highest priority and then newest first: unacknowledged ones,
        and acknowledged ones whose condition lasts (each with "acknowledged")."""
        if self.follows_changes:
            shown = list(self.alarm_states.values())
        else:  # an analyzer that sends no alarm states: shown until acknowledged
            shown = [{**a, "acknowledged": False} for a in self.shown_alarms]
        return sorted(shown, key=lambda a: (a["priority"] != "high", -a["frame"]))

    def sounding(self) -> str | None:
        """The priority to be heard: the highest of the alarms not yet acknowledged ("high",
        "medium"), or None (an acknowledged high alarm standing does not sound over a new
        medium one)."""
        waiting = [a["priority"] for a in self.alarms() if not a["acknowledged"]]
        return "high" if "high" in waiting else ("medium" if waiting else None)

    def banner(self, lines: int = BANNER_LINES) -> tuple[str, str]:
        """(priority, text) of the alarm banner: "high" or "medium" (an alarm not yet
        acknowledged: flashing, sounding), "high-acknowledged" or "medium-acknowledged" (all
        shown are acknowledged, their condition lasting: steady, silent), "not-monitored" (no
        alarm, but frames go unchecked) or "" (no alarm). A proximity alarm gives the current
        distance, not the one at its onset. ``lines``: the banner's height in lines; the
        conditions go one per line when they fit."""
        unchecked = self.not_monitored()
        prefix = f"NOT MONITORED: {unchecked}" if unchecked else ""
        wall = self.wall_prompt()
        if wall:  # said first, as what to do; the other planes' reasons after it
            others = "; ".join(f"{plane}: {why}" for plane, why in self.unchecked() if plane != "lateral")
            prefix = wall + (f"\nNOT MONITORED: {others}" if others else "")
            unchecked = prefix
        ordered = self.alarms()
        if not ordered:
            return ("not-monitored", prefix) if unchecked else ("", "")
        words = []
        said_proximity = False  # one proximity condition: the medium "approaching" is in the high one
        for a in ordered:
            if a["kind"] == "proximity" and said_proximity:
                continue
            said_proximity = said_proximity or a["kind"] == "proximity"
            said = "ACKNOWLEDGED " if a["acknowledged"] else ""
            if a["kind"] == "proximity":
                d = self.distance_mm if self.distance_mm is not None else a.get("distance_mm")
                if d is None:
                    where = "near the wall"
                elif d < 0:
                    where = f"{-d:.1f} mm BEYOND the wall"
                else:
                    where = f"{d:.1f} mm from the wall"
                words.append(f"{said}{a['priority'].upper()}: cement {where}")
            else:
                leak = leak_name(a["priority"] != "high")
                words.append(f"{said}{a['priority'].upper()}: {leak} ({a['site']}) in {a['plane']}")
        # one condition per line, so none is broken mid-phrase; on one line when they would not
        # fit the banner's lines beside what is unchecked
        said_lines = prefix.count("\n") + 1 if prefix else 0
        text = "\n".join(words) if said_lines + len(words) <= lines else "  |  ".join(words)
        priority = ordered[0]["priority"]
        if all(a["acknowledged"] for a in ordered):
            priority += "-acknowledged"
        # the alarms first: what must be acted on now is never the part that has to shrink away
        return priority, f"{text}\n{prefix}" if prefix else text


def _key(alarm: dict) -> tuple:
    return (alarm["kind"], alarm.get("site"), alarm["priority"])


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """Decimated for the screen (overlay coordinates stay in full-resolution pixels)."""
    step = max(1, int(np.ceil(max(pixels.shape) / DISPLAY_SIDE)))
    return pixels[::step, ::step] if step > 1 else pixels
