"""The one wire format between the monitor's processes (version 1).

Every message is a ZeroMQ multipart message whose first part is a topic, so a
subscriber can filter by prefix, and whose second part is a small UTF-8 JSON
header. A frame message has a third part: the raw pixel buffer, row-major,
little-endian, sent and received without copies.

    frame      [b"frame.lateral" | b"frame.ap", header, pixels]     source -> all
    heartbeat  [b"heartbeat", header]                              every publisher, ~5/s
    end        [b"end", header]                                    source, after its last frame
    result     [b"result.lateral" | b"result.ap", header]          analyzer -> viewers, logger
    status     [b"status", header]                                 analyzer: stale, resumed, drops
    command    [b"command", header]                                operator -> analyzer (control endpoint)

Frame header fields (all required unless marked optional):

    v            format version, 1
    kind         "frame"
    session      session id (string)
    plane        "lateral" or "ap"
    seq          per-plane sequence number from the source, +1 per frame sent;
                 a jump is a dropped frame
    frame        0-based frame index in the recording (or grabber frame count)
    acq_time     acquisition time, seconds from the start of the stream (runs on
                 across loops of a replayed recording)
    send_time    the sender's wall clock (time.time()) when it was sent
    shape        [rows, columns]
    dtype        "uint8" or "uint16"
    intensity    "LIN", "LOG" or null (unknown)
    photometric  "MONOCHROME1" or "MONOCHROME2"
    bits_stored  8..16
    scale        optional: {"spacing_mm": [row, column], "source": "dicom"} or
                 {"calibration": PROFILE_ID, "source": "calibration"}; null in pixels only
    resent       optional, default false: a frame sent again, from the source's
                 recent-frames buffer, for a logger that restarted; the analyzer
                 and viewers ignore it, and its seq does not count for drops

Heartbeat header: v, kind "heartbeat", session, source (who sends it),
send_time, seq, standing_alarms (optional, the analyzer's, about once a second while no result
carries them: between frames, and after the end; as on a result).

End header: v, kind "end", session, source, send_time, frames {plane: count
sent}, reason (optional: why the source did not finish), unsent (optional, {plane: count}:
a recording's frames not sent, the run stopped before its end). The analyzer forwards it on
its own stream with the counts it analysed, so the logger can prove that nothing was lost.

Result header: v, kind "result", session, plane, seq, frame, acq_time,
frame_send_time (the source's send_time, for latency), send_time, status
("ok", "baseline", "skipped: ...", "error: ...", or caveats joined by "; ":
"no-cannula: ...", "no-anatomy: ...", "uncalibrated: ...", "cement-in-baseline: ...",
"log-scale-guessed: ...", "scatter-not-seen: ...", "operator-wall-unused: ..."),
level (the vertebral level being treated, optional), distance_mm (cement front
to posterior wall, lateral only; null when unknown or uncalibrated, negative
beyond the wall), distance_px,
volume_ml (the level's volume: both planes' darkness reconciled, or the cement's shape in
the two views where the darkness reads well under or over it, or between the two where the
darkness reads a little under or over the shape; see monitor.vision.biplane), volume_low_ml and
volume_high_ml (its 68 % interval; optional), volume_darkness_weight (optional, 0-1: how much
of volume_ml is the darkness's, by ratio: 1 the darkness alone, on the syringes' scale too once
they set it, 0 the shape's, also once syringes set it where the growth since the last one is
read from the shape, between the two weighed), plane_volume_ml (this plane's own
estimate), seconds_to_line (predicted time to the 5 mm line),
volume_scale (optional, default 1: the syringe calibration the volumes include;
volume_ml / volume_scale is the purely image-based volume),
known_cleft (optional: whether the level has an intravertebral cleft the operator said is
known, the "cleft" command; null from an analyzer that does not say),
alarms (alarms raised on this frame: kind, priority, frame, plane, site,
distance_mm, evidence, reason; a possible leak also read_as, the ways its site was read while it
stood: "outline", "apart", "line", "lobe"), overlay (geometry for drawing, image pixel
coordinates: body, wall, safety_line, cement contours, front, leaks,
cannula_tips, roi, shift_px; lateral: wall_state "armed" or "not-confirmed", and with the
latter wall_confirmable, false where the wall found was refuted or is not seen in the images:
to be drawn, not confirmed; absent before 2026-12-07), alarm_changes (optional: the alarm states this frame
changed, raised, cleared or acknowledged, each with its id, kind, priority, frame, plane,
site and distance_mm), standing_alarms (optional, about once a second: every alarm still
active or not yet acknowledged, each with its id, kind, priority, frame, plane, site,
distance_mm, active and acknowledged, for a view or bridge attached after it was raised).

Status header: v, kind "status", session, source, send_time, event ("stale",
"resumed", "dropped", "rejected", "restarted", "log-failed", "log-resumed",
"rejected-command", "wall-armed", "wall-not-confirmed", "apart-off" (a view whose cement was
not seen from its start on this level: with no body outline it will not read cement apart from
the bolus as a leak, and a thin line leaving the bolus is only a possible leak; value: the frame
decided on and, from 2026-12-03, the view's "plane"; before, said by the lateral view only),
"temporal-filter" (value: the
weight of the C-arm's recursive filter read from the noise and undone, and the frame from
which), "darkness-reads-low" (the level's image darkness reads the cement low against its
shape: the volume is the shape's until syringes are entered; value: the median share then),
"view-silent" (a view sent no frame for 3 of its usual steps, at least 1 s, while the other's
went on: the level is judged and measured in the other alone; value: its "plane", "last_s" and
"frame", from 2026-12-07), "view-resumed" (its frames came back; value: "plane", "frame",
"silent_s"), "scatter-seen" (the cement's halo showed the scatter modelled: the darkness is
read with the scatter correction on this level and the next; value: the views' mean halo
"scale", from 2026-12-07),
"syringe-entry" (value: the
syringes' total at the level, and the image's darkness and the two views' shape's truth it was
anchored on, mL, the shape null where none was read; the growth read since it, "shape" or
"darkness"; and darkness_curve, the level's darkness-against-shape curve's seven running sums
then, or null; shape, growth and curve absent before 2026-12-06), "darkness-rescale" (the
level's darkness is read without scatter correction from here, the cement's halo having shown
none: what it read before, and a syringe's anchors on it, are rescaled; value: the "ratio", the
"frame" (null at a level's end) and the "anchors" rescaled, from 2026-12-07),
"darkness-not-rescaled" (the same, where no view read it both ways: value "frame"),
"volume-scale-carried" (a new level starts with the image-to-syringe scale the levels before
learnt: value "volume_scale", from 2026-12-07), or an
operator action once applied), detail
(human-readable), age_ms (stale only), plane (optional).

Command header: v, kind "command", session, source (who: "viewer", "cli"),
send_time, action and value: "acknowledge" (null), "level" (name, e.g. "L2":
a new level starts, with a new baseline), "syringe" (mL delivered), "pause",
"resume" (null), "wall" ([[x, y], [x, y]]: the posterior wall, lateral image
pixels, from cranial to caudal), "body" ({"plane": "lateral" or "ap", "box":
[x, y, width, height]}: the vertebral body, image pixels of that plane),
"confirm-wall" (null: the operator confirms the posterior wall found, arming the
5 mm rule on it), "cleft" (true or false: whether the level has an intravertebral
cleft the operator knows of from the images before the procedure; a disc lobe no
armed outline places is then only a possible leak). The
analyzer applies it, logs it, and
announces it as a status event named after the action.

Decoding checks everything and raises :class:`MessageError` with a short
``reason`` a receiver counts (``garbled``, ``version``, ``size``) and a detail
it logs; it never lets a malformed message through.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from monitor.vision.alarms import CHECKS, Plane
from monitor.vision.caveats import MAX_CAVEATS, Caveat, CaveatCode

VERSION = 1
# A header (overlay contours included) is a few kB; anything far larger is not one of ours,
# and a deeply nested one would exhaust the parser's recursion.
MAX_HEADER_BYTES = 1 << 20
PLANES = ("lateral", "ap")
# A vertebral level (the wire's and the log's ``level``) as the session log and the QA summary
# group by it: C1-C7, T1-T12, L1-L6 (a sixth lumbar where the spine has one) or S1, in capitals
VERTEBRAL_LEVEL = re.compile(r"(C[1-7]|T(1[0-2]|[1-9])|L[1-6]|S1)")
# The levels the monitor models (the simulator's anatomy, training cases, the viewer's list), cranial first.
LEVELS = tuple([f"T{i}" for i in range(5, 13)] + [f"L{i}" for i in range(1, 6)])
HEARTBEAT_S = 0.2  # a source and an analyzer send a heartbeat at least this often
# After a source's end, how long its consumers wait for frames it is still resending.
END_GRACE_S = 5.0
DTYPES = {"uint8": np.uint8, "uint16": np.uint16}
FRAME_TOPICS = {plane: f"frame.{plane}".encode() for plane in PLANES}
HEARTBEAT_TOPIC = b"heartbeat"
END_TOPIC = b"end"
RESULT_TOPICS = {plane: f"result.{plane}".encode() for plane in PLANES}
STATUS_TOPIC = b"status"
COMMAND_TOPIC = b"command"
ALARM_STATES = ("raised", "cleared", "acknowledged")
ALARM_NAMES = ("id", "kind", "priority")  # an alarm on the wire: these strings ...
ALARM_FLAGS = ("active", "acknowledged")  # ... and, standing, these booleans
MAX_ALARM_CHANGES = 64  # on one frame; a session raises a handful in all
STANDING_ALARMS_EVERY_S = 1.0  # how often a result carries the alarms standing (Result.standing_alarms)
ACTIONS = ("acknowledge", "level", "syringe", "pause", "resume", "wall", "body", "confirm-wall", "cleft")
# The operator's commands that change what the analysis measures or says: a replay of a logged
# session (monitor replay --session, monitor train) applies them again where they came;
# monitor reanalyze adds "acknowledge", as its report compares alarm states. Acknowledging is
# left to whoever watches a replay.
REPLAYED_EDITS = ("level", "wall", "body", "confirm-wall", "cleft", "syringe")
MAX_SIDE = 8192


class MessageError(ValueError):
    """A message that must be rejected; ``reason`` is the counter to bump."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FrameHeader:
    session: str
    plane: Plane
    seq: int
    frame: int
    acq_time: float
    send_time: float
    shape: tuple[int, int]
    dtype: str
    photometric: str
    bits_stored: int
    intensity: str | None = None
    scale: dict | None = None
    resent: bool = False
    v: int = VERSION
    kind: str = field(default="frame", init=False)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * np.dtype(DTYPES[self.dtype]).itemsize


@dataclass(frozen=True)
class Heartbeat:
    session: str
    source: str
    send_time: float
    seq: int
    # the analyzer's alarms standing (as Result.standing_alarms): sent on a heartbeat when no
    # result has carried them for STANDING_ALARMS_EVERY_S (no frames coming, or after the end),
    # so a view attached then shows them; None on the other heartbeats and on every source's
    standing_alarms: list | None = None
    v: int = VERSION
    kind: str = field(default="heartbeat", init=False)


@dataclass(frozen=True)
class End:
    session: str
    source: str
    send_time: float
    frames: dict  # plane -> frames sent (or analysed, when forwarded by the analyzer)
    # None when the source really finished; "aborted: <why>" when it stopped on a failure,
    # which makes the session incomplete (an end is always sent, so nothing waits forever)
    reason: str | None = None
    # plane -> frames of a recording not sent: the run was stopped (Ctrl-C, a service's stop)
    # before the recording's end. None from a live source, a loop, or a recording sent whole.
    # Not a failure (the log holds all that was sent), but the record covers only part of it.
    unsent: dict | None = None
    v: int = VERSION
    kind: str = field(default="end", init=False)


def unsent_phrase(unsent: dict[str, int]) -> str:
    """An end's ``unsent`` as said: {"lateral": 24, "ap": 24} -> "24 lateral and 24 ap frames not
    sent"."""
    said = [f"{unsent[plane]} {plane}" for plane in PLANES if unsent.get(plane)]  # in the views' order
    return " and ".join(said) + " frames not sent"


# A result's optional numeric measurements (None when unknown): checked as numbers on the wire,
# logged as they are.
RESULT_MEASUREMENTS = (
    "distance_mm",
    "distance_px",
    "volume_ml",
    "volume_low_ml",
    "volume_high_ml",
    "volume_darkness_weight",
    "plane_volume_ml",
    "seconds_to_line",
)


@dataclass(frozen=True)
class Result:
    session: str
    plane: Plane
    seq: int
    frame: int
    acq_time: float
    frame_send_time: float
    send_time: float
    status: str
    level: str | None = None
    distance_mm: float | None = None
    distance_px: float | None = None
    volume_ml: float | None = None
    # the volume's 68 % interval (mL, with the syringe scaling as volume_ml); None from an
    # analyzer that does not say (logs written before 2026-12-02) or when there is no volume
    volume_low_ml: float | None = None
    volume_high_ml: float | None = None
    # how much of volume_ml is the image's darkness's, by ratio (1: the darkness alone, 0: the
    # cement's shape's, between: the two weighed; monitor.vision.biplane.darkness_weight); None
    # from an analyzer that does not say (logs written before 2026-12-06) or with no volume
    volume_darkness_weight: float | None = None
    plane_volume_ml: float | None = None
    seconds_to_line: float | None = None
    volume_scale: float = 1.0  # syringe calibration applied to the volumes (1: image-based only)
    known_cleft: bool | None = None  # the level's cleft the operator knows of ("cleft"); None: not said
    alarms: list = field(default_factory=list)
    overlay: dict = field(default_factory=dict)
    # the safety rules evaluated on this frame, of CHECKS ("proximity", "leak", "leak-apart"); None from an
    # analyzer that does not say (logs written before 2026-12), [] when none could be
    checks: list | None = None
    # why it is not a plain measurement: [{"code": CaveatCode value, "detail": text}, ...];
    # None from an analyzer that does not say (logs written before 2026-12). ``status`` is
    # their rendering for people, never parsed back.
    caveats: list | None = None
    # the alarm states this frame changed: [{"state": "raised" | "cleared" | "acknowledged",
    # "id", "kind", "priority", "frame", "plane", "site", "distance_mm"}, ...]; None when none
    # changed, or from an analyzer that does not say. Not logged with the result: the log
    # keeps alarm changes as records of their own.
    alarm_changes: list | None = None
    # the alarms standing when this result was sent (raised and still shown: active or not yet
    # acknowledged), each as in alarm_changes with "active" and "acknowledged" instead of a
    # "state"; sent about once a second (STANDING_ALARMS_EVERY_S), None on the other results, so
    # that a view attached after an alarm was raised (a second view, or one restarted) shows it.
    # Not logged: the log keeps alarm changes as records of their own.
    standing_alarms: list | None = None
    v: int = VERSION
    kind: str = field(default="result", init=False)

    def caveat_codes(self) -> frozenset[CaveatCode]:
        """The codes of this result's caveats (none known from an analyzer that did not send them)."""
        return frozenset(CaveatCode(c["code"]) for c in self.caveats or ())


@dataclass(frozen=True)
class Status:
    session: str
    source: str
    send_time: float
    event: str
    detail: str
    age_ms: float | None = None
    plane: str | None = None
    v: int = VERSION
    kind: str = field(default="status", init=False)


@dataclass(frozen=True)
class Command:
    session: str
    source: str
    send_time: float
    action: str
    value: str | float | list | None = None
    v: int = VERSION
    kind: str = field(default="command", init=False)


def encode(message: Heartbeat | End | Result | Status | Command) -> list[bytes]:
    """Parts for any header-only message."""
    if isinstance(message, Result):
        topic = RESULT_TOPICS[message.plane]
    else:
        topic = {
            Heartbeat: HEARTBEAT_TOPIC,
            End: END_TOPIC,
            Status: STATUS_TOPIC,
            Command: COMMAND_TOPIC,
        }[type(message)]
    return [topic, json.dumps(asdict(message)).encode()]


def encode_frame(header: FrameHeader, pixels: np.ndarray) -> list:
    """Multipart parts for a frame; the pixel part is the array itself (no copy)."""
    if pixels.shape != tuple(header.shape) or pixels.dtype != DTYPES[header.dtype]:
        raise ValueError(f"pixels {pixels.shape} {pixels.dtype} do not match the header")
    if not pixels.flags.c_contiguous:
        pixels = np.ascontiguousarray(pixels)
    return [FRAME_TOPICS[header.plane], json.dumps(asdict(header)).encode(), pixels]


def decode(parts: list) -> tuple[FrameHeader, np.ndarray] | Heartbeat | End | Result | Status:
    """Parse a received multipart message (bytes or zmq.Frame parts).

    Frame pixels are a read-only view on the received buffer, not a copy.
    """
    if len(parts) < 2:
        raise MessageError("garbled", f"{len(parts)} part(s); expected a topic and a header")
    topic = bytes(_buffer(parts[0]))
    header = _buffer(parts[1])
    if header.nbytes > MAX_HEADER_BYTES:
        raise MessageError("garbled", f"header of {header.nbytes} bytes; at most {MAX_HEADER_BYTES}")
    try:
        raw = json.loads(bytes(header).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MessageError("garbled", f"header is not JSON ({e.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise MessageError("garbled", "header is not a JSON object")
    if raw.get("v") != VERSION:
        raise MessageError("version", f"format version {raw.get('v')!r}; this monitor speaks {VERSION}")
    if topic in HEADER_ONLY:
        if len(parts) != 2:
            raise MessageError("garbled", f"{topic.decode()} message with {len(parts)} parts")
        return _header_only(topic, raw)
    plane = next((p for p, t in FRAME_TOPICS.items() if t == topic), None)
    if plane is None:
        raise MessageError("garbled", f"unknown topic {topic[:40]!r}")
    if len(parts) != 3:
        raise MessageError("garbled", f"frame with {len(parts)} parts; expected 3")
    header = _frame_header(raw, plane)
    buffer = _buffer(parts[2])
    if len(buffer) != header.nbytes:
        raise MessageError(
            "size",
            f"{plane} frame {header.frame}: payload {len(buffer)} bytes, header says "
            f"{header.shape[0]}x{header.shape[1]} {header.dtype} = {header.nbytes}",
        )
    pixels = np.frombuffer(buffer, dtype=DTYPES[header.dtype]).reshape(header.shape)
    pixels.flags.writeable = False  # shared with ZeroMQ and with every other consumer
    return header, pixels


HEADER_ONLY = {HEARTBEAT_TOPIC, END_TOPIC, STATUS_TOPIC, COMMAND_TOPIC, *RESULT_TOPICS.values()}


def _header_only(topic: bytes, raw: dict) -> Heartbeat | End | Result | Status | Command:
    """A header-only message (heartbeat, end, result, status, command) from its topic and parsed
    JSON, its fields checked; MessageError says what was wrong."""
    session = _field(raw, "session", str)
    send_time = _number(raw, "send_time")
    if topic == COMMAND_TOPIC:
        return _command(session, send_time, raw)
    if topic == HEARTBEAT_TOPIC:
        standing = _alarms(raw, "standing_alarms", _standing)
        return Heartbeat(session, _field(raw, "source", str), send_time, _field(raw, "seq", int), standing)
    if topic == END_TOPIC:
        frames = _field(raw, "frames", dict)
        if not all(p in PLANES and isinstance(n, int) for p, n in frames.items()):
            raise MessageError("garbled", f"end frames {frames!r}")
        reason = raw.get("reason")
        if reason is not None and not (isinstance(reason, str) and len(reason) <= 1000):
            raise MessageError("garbled", f"end reason {reason!r}")
        unsent = raw.get("unsent")
        if unsent is not None and not (
            isinstance(unsent, dict)
            and all(
                p in PLANES and isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**53
                for p, n in unsent.items()
            )
        ):
            raise MessageError("garbled", f"end unsent {unsent!r}")
        return End(session, _field(raw, "source", str), send_time, frames, reason, unsent)
    if topic == STATUS_TOPIC:
        age = raw.get("age_ms")
        return Status(
            session,
            _field(raw, "source", str),
            send_time,
            _field(raw, "event", str),
            _field(raw, "detail", str),
            None if age is None else _number(raw, "age_ms"),
            raw.get("plane") if raw.get("plane") in PLANES else None,
        )
    return _result(topic, session, send_time, raw)


def _result(topic: bytes, session: str, send_time: float, raw: dict) -> Result:
    """A result from its topic (its plane) and parsed JSON, every field the wire gives checked."""
    plane = next(p for p, t in RESULT_TOPICS.items() if t == topic)
    if raw.get("plane") != plane:
        raise MessageError("garbled", f"result plane {raw.get('plane')!r} on topic {topic.decode()}")
    optional = {name: None if raw.get(name) is None else _number(raw, name) for name in RESULT_MEASUREMENTS}
    optional["volume_scale"] = 1.0 if raw.get("volume_scale") is None else _number(raw, "volume_scale")
    weight = optional["volume_darkness_weight"]
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise MessageError("garbled", f"field 'volume_darkness_weight' is {weight!r}; expected 0 to 1")
    level = raw.get("level")
    if level is not None and not isinstance(level, str):
        raise MessageError("garbled", f"level {level!r}")
    known_cleft = raw.get("known_cleft")
    if known_cleft is not None and not isinstance(known_cleft, bool):
        raise MessageError("garbled", f"known_cleft {known_cleft!r}; expected true, false or null")
    checks = raw.get("checks")
    if checks is not None and not (
        isinstance(checks, list) and len(checks) <= len(CHECKS) and all(c in CHECKS for c in checks)
    ):
        raise MessageError("garbled", f"checks {checks!r}; expected a list of {', '.join(CHECKS)}")
    caveats = raw.get("caveats")
    if caveats is not None:
        if not isinstance(caveats, list) or len(caveats) > MAX_CAVEATS:
            raise MessageError("garbled", f"caveats: expected a list of at most {MAX_CAVEATS}")
        try:
            caveats = [Caveat.from_wire(c).as_wire() for c in caveats]
        except ValueError as e:
            raise MessageError("garbled", str(e)[:200]) from None
    changes = _alarms(raw, "alarm_changes", lambda c: c.get("state") in ALARM_STATES)
    standing = _alarms(raw, "standing_alarms", _standing)
    return Result(
        session=session,
        plane=plane,
        level=level,
        seq=_field(raw, "seq", int),
        frame=_field(raw, "frame", int),
        acq_time=_number(raw, "acq_time"),
        frame_send_time=_number(raw, "frame_send_time"),
        send_time=send_time,
        status=_field(raw, "status", str),
        alarms=_field(raw, "alarms", list),
        overlay=_field(raw, "overlay", dict),
        checks=checks,
        known_cleft=known_cleft,
        caveats=caveats,
        alarm_changes=changes,
        standing_alarms=standing,
        **optional,
    )


def _standing(alarm: dict) -> bool:
    """Whether a standing alarm's flags are there, each a boolean (beyond what every alarm has)."""
    return all(isinstance(alarm.get(k), bool) for k in ALARM_FLAGS)


def checked_command(session: str, source: str, send_time: float, action: str, value) -> Command:
    """The command as the control socket would take it: MessageError when its action or value
    is not one the wire admits (a logged command read back from a log that may be edited)."""
    return _command(session, send_time, {"action": action, "value": value, "source": source})


def _command(session: str, send_time: float, raw: dict) -> Command:
    action = raw.get("action")
    value = raw.get("value")
    if action not in ACTIONS:
        raise MessageError("garbled", f"command action {action!r}; expected one of {', '.join(ACTIONS)}")
    if action == "level" and not (isinstance(value, str) and VERTEBRAL_LEVEL.fullmatch(value)):
        # as --level takes it: any text of 16 characters had been started as a level (a review,
        # session 77), which the QA summary then counted apart
        raise MessageError(
            "garbled", f"level {value!r}; expected a vertebral level: C1-C7, T1-T12, L1-L6 or S1"
        )
    if action == "syringe" and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 20
    ):
        raise MessageError("garbled", f"syringe volume {value!r}; expected mL between 0 and 20")
    if action == "wall" and not (
        isinstance(value, list)
        and len(value) == 2
        and all(
            isinstance(p, list)
            and len(p) == 2
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in p)
            for p in value
        )
    ):
        raise MessageError("garbled", f"wall {value!r}; expected [[x, y], [x, y]]")
    if action == "body" and not (
        isinstance(value, dict)
        and value.get("plane") in PLANES
        and isinstance(value.get("box"), list)
        and len(value["box"]) == 4
        and all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in value["box"]
        )
        and value["box"][2] > 0
        and value["box"][3] > 0
    ):
        raise MessageError("garbled", f"body {value!r}; expected {{'plane': 'lateral', 'box': [x, y, w, h]}}")
    if action == "cleft" and not isinstance(value, bool):
        raise MessageError("garbled", f"cleft {value!r}; expected true or false")
    if action in ("acknowledge", "pause", "resume", "confirm-wall"):
        value = None
    return Command(session, _field(raw, "source", str), send_time, action, value)


def _buffer(part) -> memoryview:
    """The bytes of a part without copying: zmq.Frame.buffer, or the bytes themselves."""
    buf = getattr(part, "buffer", None)
    return buf if buf is not None else memoryview(part)


def _alarms(raw: dict, name: str, valid) -> list | None:
    """``raw[name]``: None, or a list of at most MAX_ALARM_CHANGES alarms, each a dict with a
    string id, kind and priority and an integer frame (the views sort on it) for which
    ``valid`` holds; MessageError otherwise."""
    alarms = raw.get(name)
    if alarms is not None and not (
        isinstance(alarms, list)
        and len(alarms) <= MAX_ALARM_CHANGES
        and all(isinstance(a, dict) and valid(a) for a in alarms)
        and all(isinstance(a.get(k), str) for a in alarms for k in ALARM_NAMES)
        and all(isinstance(a.get("frame"), int) for a in alarms)
    ):
        raise MessageError("garbled", f"{name} {str(alarms)[:200]}")
    return alarms


def _field(raw: dict, name: str, kind: type):
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MessageError("garbled", f"field {name!r} is {value!r}; expected {kind.__name__}")
    return value


def _number(raw: dict, name: str) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MessageError("garbled", f"field {name!r} is {value!r}; expected a number")
    return float(value)


def _frame_header(raw: dict, plane: str) -> FrameHeader:
    if raw.get("kind") != "frame" or raw.get("plane") != plane:
        raise MessageError("garbled", f"header kind/plane {raw.get('kind')!r}/{raw.get('plane')!r}")
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_SIDE for n in shape)
    ):
        raise MessageError("garbled", f"shape {shape!r}")
    dtype = raw.get("dtype")
    if dtype not in DTYPES:
        raise MessageError("garbled", f"dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    photometric = raw.get("photometric")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise MessageError("garbled", f"photometric {photometric!r}")
    intensity = raw.get("intensity")
    if intensity not in (None, "LIN", "LOG", "DISP"):
        raise MessageError("garbled", f"intensity {intensity!r}")
    scale = raw.get("scale")
    if scale is not None and not isinstance(scale, dict):
        raise MessageError("garbled", f"scale {scale!r}")
    resent = raw.get("resent", False)
    if not isinstance(resent, bool):
        raise MessageError("garbled", f"resent {resent!r}")
    bits = _field(raw, "bits_stored", int)
    if not 1 <= bits <= 16:
        raise MessageError("garbled", f"bits_stored {bits}")
    return FrameHeader(
        session=_field(raw, "session", str),
        plane=plane,
        seq=_field(raw, "seq", int),
        frame=_field(raw, "frame", int),
        acq_time=_number(raw, "acq_time"),
        send_time=_number(raw, "send_time"),
        shape=(shape[0], shape[1]),
        dtype=dtype,
        photometric=photometric,
        bits_stored=bits,
        intensity=intensity,
        scale=scale,
        resent=resent,
    )
