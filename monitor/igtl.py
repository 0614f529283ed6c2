"""``monitor igtl``: the running monitor, served as OpenIGTLink to 3D Slicer and navigation.

A bridge process: it subscribes to a monitor's frames and results (with the installation's
``igtl`` key) and serves them on an OpenIGTLink port (:mod:`monitor.io.igtl`) to any number
of clients. It is a consumer like the viewer: the source never waits for it, and a slow or
absent bridge changes nothing in the monitor.

Messages (device names are what 3D Slicer's OpenIGTLinkIF names its nodes after):

=========================  =========  ========================================================
device                     type       content
=========================  =========  ========================================================
``Lateral``, ``AP``        IMAGE      each plane's newest frame, as stored (MONOCHROME1 is
                                      inverted so that bone is bright), placed in 3D
``CementFront_Lateral``    POINT      the cement front (the point nearest the posterior wall)
                                      in patient coordinates, on the lateral image (the AP
                                      view has none: the 5 mm rule is judged on the lateral;
                                      ``CementFront_AP`` should an analyzer give one)
``PosteriorWall``          POLYDATA   the posterior wall, a line on the lateral image
``SafetyLine5mm``          POLYDATA   the 5 mm line, a line on the lateral image
``Measurement_Lateral``,   STRING     per analysed frame, JSON: frame, acq_time, level,
``Measurement_AP``                    status, distance_mm, seconds_to_line, volume_ml,
                                      volume_low_ml, volume_high_ml (its 68 % interval),
                                      volume_darkness_weight (how much of it is the
                                      darkness's: 1 alone, 0 the shape's), volume_scale
                                      (the syringes' calibration in it, 1 none),
                                      plane_volume_ml, checks (the safety rules evaluated),
                                      caveats (codes: why it is not a plain measurement)
``Alarm``                  STRING     each alarm change, JSON: state (raised, acknowledged,
                                      cleared), id, kind, priority, site, plane, frame,
                                      distance_mm; a new client first gets the standing ones
``MonitorStatus``          STRING     the monitor's status events, JSON: event (stale,
                                      resumed, dropped, acknowledge, level, end, ...), detail,
                                      source, plane; and the bridge's own: no-signal (no frame
                                      for 2 s), no-analysis (no result for 2 s), signal,
                                      analysis, attached, placement, refused, end-unheard
                                      (--until-end: the analyzer silent 10 s, its end lost)
``CommandReply``           STRING     the answer to a command this client sent
=========================  =========  ========================================================

Images, points, lines and measurements are latest-only per client (a slow client gets the
newest, at the rate it reads); alarm and status strings are queued, never replaced.

Coordinates: sent in RAS (x to the patient's right, y anterior, z superior), millimetres,
origin at the C-arm's isocentre, because 3D Slicer takes every OpenIGTLink matrix and point as
RAS and ignores an IMAGE's coordinate-system field. Computed, and described here, in DICOM's
patient frame LPS (RAS with x and y negated). Each plane's image is placed in the plane
through the isocentre perpendicular to its central ray, at the pixel spacing at the
isocentre (ImagerPixelSpacing x SOD / SID, or the calibration's), so that the lateral and the
AP images cross at the vertebra as they do in the room. The central ray points from the
isocentre to the detector along ``(sin a cos b, -cos a cos b, sin b)`` for the positioner's
primary angle ``a`` (PositionerPrimaryAngle: + towards the patient's left, LAO) and secondary
angle ``b`` (PositionerSecondaryAngle: + cranial); the image's columns run along
``(cos a, sin a, 0)`` and its rows downwards along the rotated ``-z``; its third axis is their
cross product (right-handed). So an AP image (a = 0)
has the patient's left to the right of the image and the head up; a lateral one (a = 90) the
back to the right. A recording without the angles is placed at its plane's nominal angle
(lateral 90, AP 0); one without a millimetre scale at 1 mm per pixel. Both are said, once,
on ``MonitorStatus``.

Commands: only with ``--accept-commands``. A STRING whose content is ``acknowledge`` is then
sent to the analyzer on the same command path as the viewer's, with the ``igtl`` key: the
analyzer carries out an acknowledge from that key and nothing else, and logs it with source
``igtl``. Refused, and the client told why on ``CommandReply``: without the option, more than
one a second from a client, or while the analyzer is not heard.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyigtl
import zmq

from monitor.io.igtl import DEFAULT_PORT, Client, IgtlServer, Lazy
from monitor.io.transport import VIEWER_HWM, CommandSender, Frame, Subscriber
from monitor.messages import PLANES, End, FrameHeader, Heartbeat, Result, Status

log = logging.getLogger(__name__)

IMAGE_DEVICES = {"lateral": "Lateral", "ap": "AP"}
FRONT_DEVICES = {"lateral": "CementFront_Lateral", "ap": "CementFront_AP"}
MEASUREMENT_DEVICES = {"lateral": "Measurement_Lateral", "ap": "Measurement_AP"}
WALL_DEVICE = "PosteriorWall"
SAFETY_LINE_DEVICE = "SafetyLine5mm"
ALARM_DEVICE = "Alarm"
STATUS_DEVICE = "MonitorStatus"
REPLY_DEVICE = "CommandReply"
NOMINAL_PRIMARY_ANGLE_DEG = {"lateral": 90.0, "ap": 0.0}  # DICOM's: lateral from the patient's left
SILENT_S = 2.0  # nothing from the monitor for this long (it sends heartbeats 5 times a second): said
REATTACH_S = 5.0  # silent this long, attached by the run registry: look for a monitor started anew
# --until-end, the analyzer heard once and then silent this long (it beats 5 times a second): its
# end was lost or it died; the bridge stops rather than serve old images and measurements forever
UNTIL_END_SILENT_S = 10.0
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ACK_INTERVAL_S = 1.0  # one acknowledge a second from a client; more are refused, not passed on
RESULTS_HWM = 1024  # results are small, and the alarm changes in them must not be lost
FRONT_RGBA = [255, 40, 40, 255]
FRONT_DIAMETER_MM = 3.0


@dataclass(frozen=True)
class Placement:
    """Where a plane's image lies in the patient.

    ``matrix``: 4x4, (column i, row j, slice k, 1) -> LPS millimetres (see the module's
    docstring). ``how``: "dicom" (the recording's angles and spacing), or what was assumed.
    """

    matrix: np.ndarray
    how: str

    def to_world(self, points) -> np.ndarray:
        """Image pixel coordinates (N, 2) as (x = column, y = row) -> LPS mm (N, 3)."""
        p = np.asarray(points, dtype=float).reshape(-1, 2)
        homogeneous = np.column_stack([p, np.zeros(len(p)), np.ones(len(p))])
        return (homogeneous @ self.matrix.T)[:, :3]

    @property
    def ras_matrix(self) -> np.ndarray:
        """:attr:`matrix` to RAS, as sent: 3D Slicer takes every OpenIGTLink matrix and point as
        RAS, whatever an IMAGE's coordinate-system field says."""
        return LPS_TO_RAS @ self.matrix

    def to_ras(self, points) -> np.ndarray:
        """Image pixel coordinates (N, 2) -> RAS mm (N, 3), as sent."""
        return self.to_world(points) * LPS_TO_RAS.diagonal()[:3]


def image_to_world(
    shape: tuple[int, int], spacing_mm: tuple[float, float], primary_deg: float, secondary_deg: float = 0.0
) -> np.ndarray:
    """The 4x4 matrix from image indices (column, row, 0, 1) to LPS mm, for an image of
    ``shape`` (rows, columns) with ``spacing_mm`` (between rows, between columns) at the
    isocentre, centred on the central ray, for the C-arm at the given positioner angles."""
    a, b = math.radians(primary_deg), math.radians(secondary_deg)
    # The C-arm's rotation: primary about the patient's z axis, after secondary about x.
    primary = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    secondary = np.array([[1, 0, 0], [0, math.cos(b), math.sin(b)], [0, -math.sin(b), math.cos(b)]])
    rotation = primary @ secondary
    column_direction = rotation @ np.array([1.0, 0.0, 0.0])  # AP: towards the patient's left
    row_direction = rotation @ np.array([0.0, 0.0, -1.0])  # AP: towards the feet
    rows, columns = shape
    m = np.eye(4)
    m[:3, 0] = column_direction * spacing_mm[1]
    m[:3, 1] = row_direction * spacing_mm[0]
    # a 1 mm slice along the image's normal, columns x rows: a right-handed matrix, as VTK
    # expects; it is the central ray's line (the beam, isocentre to detector, is its opposite)
    m[:3, 2] = np.cross(column_direction, row_direction)
    m[:3, 3] = -(m[:3, 0] * (columns - 1) + m[:3, 1] * (rows - 1)) / 2  # centre on the isocentre
    return m


def placement(header: FrameHeader) -> Placement:
    """Where ``header``'s image lies, from what its source read (DICOM geometry, calibration)."""
    scale = header.scale or {}
    geometry = scale.get("geometry") or {}
    spacing = scale.get("spacing_mm")
    primary = geometry.get("primary_angle_deg")
    assumed = []
    if primary is None:
        primary = NOMINAL_PRIMARY_ANGLE_DEG[header.plane]
        assumed.append(f"no positioner angle: placed at the nominal {primary:g} deg")
    if not spacing:
        spacing = (1.0, 1.0)
        assumed.append("no millimetre scale: placed at 1 mm per pixel")
    how = "; ".join(assumed) or "dicom"
    if not assumed and scale.get("source") == "calibration":
        how = "calibration"
    secondary = geometry.get("secondary_angle_deg") or 0.0
    matrix = image_to_world(header.shape, (float(spacing[0]), float(spacing[1])), primary, secondary)
    return Placement(matrix, how)


def display_pixels(header: FrameHeader, pixels: np.ndarray) -> np.ndarray:
    """The frame as (1, rows, columns) for an IMAGE message, bone bright (MONOCHROME1 inverted)."""
    if header.photometric == "MONOCHROME1":
        top = (1 << header.bits_stored) - 1
        pixels = (top - np.minimum(pixels, top)).astype(pixels.dtype)
    return np.ascontiguousarray(pixels)[np.newaxis]


class Translator:
    """The monitor's messages -> packed OpenIGTLink messages, each ``(key, bytes or Lazy)``:
    ``key`` names what a newer message replaces, None for an event that must not be replaced."""

    def __init__(self):
        self.placements: dict[str, Placement] = {}  # plane -> where its newest frame lies
        self.alarms: dict[str, dict] = {}  # id -> its newest change, while it stands
        self.acq_time: float | None = None  # the newest result's acquisition time (s)
        self.packed_images = 0

    def frame(self, header: FrameHeader, pixels: np.ndarray) -> list[tuple[str | None, bytes | Lazy]]:
        out = []
        where = placement(header)
        before = self.placements.get(header.plane)
        self.placements[header.plane] = where
        said = before is not None and before.how == where.how  # an assumption is said once, when made
        if not said and where.how not in ("dicom", "calibration"):
            out.append((None, _status_string("placement", f"{header.plane}: {where.how}", header.plane)))

        def pack() -> bytes:
            """Only when a client takes the frame: the inversion of a MONOCHROME1 frame, the
            message and its CRC-64 cost nothing on frames every client skips."""
            self.packed_images += 1
            image = pyigtl.ImageMessage(
                display_pixels(header, pixels),
                ijk_to_world_matrix=where.ras_matrix,
                world_coordinate_system="ras",
                timestamp=header.send_time,
                device_name=IMAGE_DEVICES[header.plane],
            )
            return image.pack()

        out.append((IMAGE_DEVICES[header.plane], Lazy(pack)))
        return out

    def result(self, r: Result) -> list[tuple[str | None, bytes]]:
        out = []
        self.acq_time = r.acq_time
        for change in r.alarm_changes or ():
            record = {**change, "acq_time": r.acq_time}
            before = self.alarms.get(change["id"], {}).get("state")
            if {before, change["state"]} == {"cleared", "acknowledged"}:
                self.alarms.pop(change["id"], None)  # neither active nor shown any more
            else:
                self.alarms[change["id"]] = record
            out.append((None, _string(ALARM_DEVICE, record, r.frame_send_time)))
        if r.standing_alarms is not None:
            out += self.take_standing(r.standing_alarms, r.frame_send_time)
        measurement = {
            "session": r.session,
            "plane": r.plane,
            "frame": r.frame,
            "acq_time": r.acq_time,
            "level": r.level,
            "status": r.status,
            "distance_mm": r.distance_mm,
            "seconds_to_line": r.seconds_to_line,
            "volume_ml": r.volume_ml,
            "volume_low_ml": r.volume_low_ml,
            "volume_high_ml": r.volume_high_ml,
            "volume_darkness_weight": r.volume_darkness_weight,
            "volume_scale": r.volume_scale,
            "plane_volume_ml": r.plane_volume_ml,
            "checks": r.checks,
            "caveats": [c["code"] for c in r.caveats or ()],
        }
        device = MEASUREMENT_DEVICES[r.plane]
        out.append((device, _string(device, measurement, r.frame_send_time)))
        where = self.placements.get(r.plane)
        if where is None:  # no frame of this plane seen yet: nowhere to put the geometry
            return out
        front = r.overlay.get("front")
        if front:
            point = pyigtl.PointMessage(
                positions=where.to_ras([front]),
                names=["front"],
                groups="CementFront",
                rgba_colors=FRONT_RGBA,
                diameters=FRONT_DIAMETER_MM,
                owners=IMAGE_DEVICES[r.plane],
                timestamp=r.frame_send_time,
                device_name=FRONT_DEVICES[r.plane],
            )
            out.append((FRONT_DEVICES[r.plane], point.pack()))
        for device, name in ((WALL_DEVICE, "wall"), (SAFETY_LINE_DEVICE, "safety_line")):
            line = r.overlay.get(name)
            if r.plane == "lateral" and line and len(line) >= 2:
                out.append((device, _polyline(device, where.to_ras(line), r.frame_send_time)))
        return out

    def take_standing(self, alarms: list[dict], timestamp: float) -> list[tuple[str | None, bytes]]:
        """The analyzer's standing alarms (on a result, or on its heartbeat when no frames come
        or after the end; about once a second) are its own list: one no longer in it is dropped
        (no later client is told of it), and one a bridge started after it was raised never
        heard of is made known, said as standing, not as an event (at the newest result's
        acquisition time heard, None before any)."""
        out = []
        ids = {a["id"] for a in alarms}
        self.alarms = {alarm_id: a for alarm_id, a in self.alarms.items() if alarm_id in ids}
        for standing in alarms:
            if standing["id"] in self.alarms:
                continue
            acknowledged, active = standing["acknowledged"], standing["active"]
            state = "acknowledged" if acknowledged else "raised" if active else "cleared"
            fields = {k: v for k, v in standing.items() if k not in ("active", "acknowledged")}
            record = {"state": state, **fields, "acq_time": self.acq_time}
            self.alarms[standing["id"]] = record
            out.append((None, _string(ALARM_DEVICE, {**record, "standing": True}, timestamp)))
        return out

    def status(self, s: Status) -> list[tuple[str | None, bytes]]:
        return [(None, _status_string(s.event, s.detail, s.plane, s.source, s.send_time))]

    def end(self, e: End) -> list[tuple[str | None, bytes]]:
        detail = f"frames analysed: {json.dumps(e.frames)}" + (f"; {e.reason}" if e.reason else "")
        return [(None, _status_string("end", detail, None, e.source, e.send_time))]

    def standing_alarms(self) -> list[bytes]:
        """For a client that connects: the alarms that stand now, each as its newest change."""
        return [_string(ALARM_DEVICE, {**a, "standing": True}, time.time()) for a in self.alarms.values()]


def _string(device: str, content: dict, timestamp: float) -> bytes:
    # ASCII JSON: pyigtl's STRING packing fails on other text
    return pyigtl.StringMessage(json.dumps(content), timestamp=timestamp, device_name=device).pack()


def _ascii(text: str) -> str:
    """``text`` as ASCII (pyigtl packs nothing else: its STRING encoding fails on the rest)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _status_string(event, detail, plane=None, source="igtl", timestamp=None) -> bytes:
    content = {"event": event, "detail": detail, "plane": plane, "source": source}
    return _string(STATUS_DEVICE, content, time.time() if timestamp is None else timestamp)


def _polyline(device: str, points: np.ndarray, timestamp: float) -> bytes:
    """A POLYDATA of one line through ``points`` (N, 3). Packed here: pyigtl writes the cell
    arrays of vertices in the machine's byte order, and cannot read POLYDATA back."""
    n = len(points)
    lines = np.array([n, *range(n)], dtype=">u4")
    message = pyigtl.PolyDataMessage(points=np.asarray(points, dtype=">f4"), lines=lines, device_name=device)
    message.timestamp = timestamp
    return message.pack()


@dataclass
class BridgeStats:
    frames: int = 0  # frames received from the monitor
    images: int = 0  # IMAGE messages packed (only when a client took one)
    results: int = 0
    alarm_changes: int = 0
    commands: int = 0  # acknowledges passed on to the analyzer
    refused_commands: int = 0
    interrupted: bool = False  # stopped by SIGINT or SIGTERM
    end_unheard: bool = False  # --until-end: stopped on the analyzer's silence, its end never heard


@dataclass
class Silence:
    """One of the monitor's streams, watched for silence (it sends heartbeats 5 times a second)."""

    lost: str  # the MonitorStatus event when it falls silent ...
    back: str  # ... and when it is heard again
    meaning: str  # what a client must conclude, in the event's detail
    since: float | None = None  # time.monotonic() since when it is silent

    def message(self, quiet_for: float) -> bytes:
        return _status_string(self.lost, f"nothing for {quiet_for:.1f} s: {self.meaning}")


class Bridge:
    """The bridge's work, without its loop: what a frame, result or client message does."""

    def __init__(self, server: IgtlServer, commands: CommandSender | None, say: Callable[[str], None]):
        self.server = server
        self.commands = commands
        self.say = say
        self.translator = Translator()
        self.stats = BridgeStats()
        self.started = time.monotonic()
        self.source = Silence(
            "no-signal",
            "signal",
            "no frame from the monitor; the images, points and measurements held are old",
        )
        self.analyzer = Silence(
            "no-analysis", "analysis", "no result from the analyzer; the points and measurements held are old"
        )
        self._last_ack: dict[str, float] = {}  # client address -> time.monotonic() of its last acknowledge
        server.on_connect = self.connected
        server.on_message = self.received
        server.refusal = _status_string("refused", f"already {server.max_clients} clients; try again later")

    def frame(self, frame: Frame) -> None:
        """Always translated, packed only when a client takes it: a client that connects gets
        the newest image at once."""
        self.stats.frames += 1
        for key, data in self.translator.frame(frame.header, frame.pixels):
            self._publish(key, data)

    def message(self, message) -> None:
        if isinstance(message, Result):
            self.stats.results += 1
            self.stats.alarm_changes += len(message.alarm_changes or ())
            out = self.translator.result(message)
        elif isinstance(message, Status):
            out = self.translator.status(message)
        elif isinstance(message, End):
            out = self.translator.end(message)
        elif isinstance(message, Heartbeat) and message.standing_alarms is not None:
            out = self.translator.take_standing(message.standing_alarms, message.send_time)
        else:
            return
        for key, data in out:
            self._publish(key, data)

    def _publish(self, key: str | None, data: bytes | Lazy) -> None:
        if key is None:
            self.server.publish_event(data)
        else:
            self.server.publish_latest(key, data)

    def connected(self, client: Client) -> None:
        for data in self.translator.standing_alarms():
            self.server.send_event(client, data)
        now = time.monotonic()
        for watch in (self.source, self.analyzer):
            if watch.since is not None:
                self.server.send_event(client, watch.message(now - watch.since))

    def heard(self, frames_at: float | None, results_at: float | None, now: float) -> None:
        """Says on ``MonitorStatus`` when a stream has been silent for SILENT_S, and when it is
        heard again: the source's frames (``no-signal``) and the analyzer's results
        (``no-analysis``: frames arriving must not hide a hung analyzer). A client must never
        take the last image and measurement it holds for the present. Times are
        time.monotonic() of the newest message on each (None: none yet)."""
        for watch, newest in ((self.source, frames_at), (self.analyzer, results_at)):
            quiet_for = now - (self.started if newest is None else newest)
            if watch.since is None and quiet_for > SILENT_S:
                watch.since = now - quiet_for
                self.server.publish_event(watch.message(quiet_for))
                self.say(f"{watch.lost}: {watch.meaning} ({quiet_for:.1f} s)")
            elif watch.since is not None and quiet_for <= SILENT_S:
                silent_for = now - watch.since
                watch.since = None
                self.server.publish_event(_status_string(watch.back, f"heard again after {silent_for:.1f} s"))
                self.say(f"{watch.back}: heard again after {silent_for:.1f} s")

    def received(self, client: Client, message) -> None:
        if not isinstance(message, pyigtl.StringMessage):
            return  # images, transforms, queries from a client: this bridge only sends them
        text = message.string.strip().lower()
        if text != "acknowledge":
            self._refuse(client, f"unknown command {message.string[:40]!r}; the only one is 'acknowledge'")
            return
        if self.commands is None:
            self._refuse(client, "this bridge takes no commands (start it with --accept-commands)")
            return
        now = time.monotonic()
        if now - self._last_ack.get(client.address, -ACK_INTERVAL_S) < ACK_INTERVAL_S:
            self._refuse(client, "one acknowledge a second at most; this one was not passed on")
            return
        silent = self.analyzer.since if self.analyzer.since is not None else self.source.since
        if silent is not None:
            self._refuse(client, f"the analyzer has not been heard for {now - silent:.1f} s; not passed on")
            return
        if len(self._last_ack) > 4 * self.server.max_clients:
            self._last_ack.clear()
        self._last_ack[client.address] = now
        try:
            self.commands.send("acknowledge")
        except OSError as e:
            self._refuse(client, f"not passed on: {e}")
            return
        self.stats.commands += 1
        self.say(f"acknowledge from {client.address} passed to the analyzer")
        self._reply(
            client, "acknowledge passed to the analyzer; it confirms on MonitorStatus (event acknowledge)"
        )

    def _refuse(self, client: Client, why: str) -> None:
        self.stats.refused_commands += 1
        self._reply(client, f"refused: {why}")

    def _reply(self, client: Client, text: str) -> None:
        message = pyigtl.StringMessage(_ascii(text), device_name=REPLY_DEVICE)
        self.server.send_event(client, message.pack())


class _Streams:
    """The subscriptions to one monitor, replaced when the bridge follows a monitor started anew."""

    def __init__(self, ctx: zmq.Context, frames: str, results: str, control: str | None):
        self.endpoints = (frames, results, control)
        self.frames = Subscriber(frames, hwm=VIEWER_HWM, context=ctx, key="igtl")
        self.results = Subscriber(results, hwm=RESULTS_HWM, context=ctx, role="results", key="igtl")
        self.commands = CommandSender(control, "igtl", context=ctx) if control else None

    def close(self) -> None:
        self.frames.close()
        self.results.close()
        if self.commands is not None:
            self.commands.close()


def run_bridge(
    frames_endpoint: str,
    results_endpoint: str,
    control_endpoint: str | None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    max_clients: int = 16,
    until_end: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
    reattach: Callable[[], tuple[str, str, str | None] | None] | None = None,
) -> BridgeStats:
    """Serve until ``should_stop`` (or SIGINT/SIGTERM; with ``until_end``, the analyzer's end,
    or UNTIL_END_SILENT_S of silence from an analyzer heard before: ``end_unheard`` in the stats).

    ``control_endpoint``: where acknowledges from clients go; None takes no commands.
    ``reattach``: where the monitor running now is (frames, results, control endpoints), or
    None; asked while the monitor has been silent for REATTACH_S, so that a bridge attached
    through the run registry follows a monitor that was stopped and started again.
    """
    # Over 60 lines on purpose: the bridge process's loop, its server and sockets opened (the sockets
    # reopened on reattaching) and closed in one place, so that every way out (the analyzer's end,
    # SIGINT or SIGTERM, should_stop) is seen beside what it must close and the handlers it restores.
    server = IgtlServer(host, port, max_clients)
    ctx = zmq.Context()
    streams = _Streams(ctx, frames_endpoint, results_endpoint, control_endpoint)
    bridge = Bridge(server, streams.commands, say)
    stop = []
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.append(1))
    say(
        f"serving OpenIGTLink on {host}:{server.port} for the monitor at {frames_endpoint}"
        + (
            "; acknowledges from clients go to the analyzer"
            if control_endpoint
            else "; clients cannot command"
        )
    )
    poller = zmq.Poller()
    poller.register(streams.frames.socket, zmq.POLLIN)
    poller.register(streams.results.socket, zmq.POLLIN)
    ended = False
    next_look = 0.0
    try:
        while not stop and not should_stop() and not ended:
            server.register(poller)
            ready = dict(poller.poll(100))
            if ready.get(streams.results.socket):
                while (message := streams.results.receive(0)) is not None:
                    bridge.message(message)
                    ended = ended or (until_end and isinstance(message, End) and message.source == "analyzer")
            if ready.get(streams.frames.socket):
                newest: dict[str, Frame] = {}
                while (message := streams.frames.receive(0)) is not None:
                    if isinstance(message, Frame):
                        newest[message.header.plane] = message  # the present, not a backlog
                for plane in PLANES:
                    if plane in newest:
                        bridge.frame(newest[plane])
            server.handle(ready)
            now = time.monotonic()
            bridge.heard(streams.frames.stats.last_message_at, streams.results.stats.last_message_at, now)
            quiet = bridge.analyzer.since
            heard_once = streams.results.stats.last_message_at is not None
            if until_end and heard_once and quiet is not None and now - quiet > UNTIL_END_SILENT_S:
                bridge.stats.end_unheard = ended = True
                say(
                    f"the analyzer's end was never heard and it has been silent for {now - quiet:.0f} s:"
                    " stopping (--until-end)"
                )
                server.publish_event(
                    _status_string(
                        "end-unheard", "the analyzer fell silent and its end was not heard; the bridge stops"
                    )
                )
            silent = bridge.source.since
            if reattach and silent is not None and now - silent > REATTACH_S and now >= next_look:
                next_look = now + 2.0
                found = reattach()
                if found and found[0] != streams.endpoints[0]:
                    for sub in (streams.frames, streams.results):
                        poller.unregister(sub.socket)
                    streams.close()
                    control = found[2] if control_endpoint else None
                    streams = _Streams(ctx, found[0], found[1], control)
                    bridge.commands = streams.commands
                    poller.register(streams.frames.socket, zmq.POLLIN)
                    poller.register(streams.results.socket, zmq.POLLIN)
                    say(f"following the monitor now running at {found[0]}")
                    server.publish_event(_status_string("attached", "following a monitor started anew"))
        bridge.stats.images = bridge.translator.packed_images
        # what is queued for the clients (the end, the last alarms), as far as they take it
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(c.waiting for c in server.clients.values()):
            server.register(poller)
            server.handle(dict(poller.poll(50)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
        streams.close()
        ctx.term()
    s = bridge.stats
    s.interrupted = bool(stop)
    say(
        f"OpenIGTLink bridge stopped: {s.frames} frames in, {s.images} images out, {s.results} results,"
        f" {s.alarm_changes} alarm changes, {s.commands} acknowledges passed on,"
        f" {s.refused_commands} commands refused; clients {server.stats()}"
    )
    return s
