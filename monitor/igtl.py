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
                                      plane_volume_ml, checks (the safety rules evaluated),
                                      caveats (codes: why it is not a plain measurement)
``Alarm``                  STRING     each alarm change, JSON: state (raised, acknowledged,
                                      cleared), id, kind, priority, site, plane, frame,
                                      distance_mm; a new client first gets the standing ones
``MonitorStatus``          STRING     the monitor's status events, JSON: event (stale,
                                      resumed, dropped, acknowledge, level, end, ...), detail,
                                      source, plane; and the bridge's own: no-signal (nothing
                                      from the monitor for 2 s), signal, placement
``CommandReply``           STRING     the answer to a command this client sent
=========================  =========  ========================================================

Images, points, lines and measurements are latest-only per client (a slow client gets the
newest, at the rate it reads); alarm and status strings are queued, never replaced.

Coordinates: DICOM's patient frame, LPS (x to the patient's left, y posterior, z superior),
millimetres, origin at the C-arm's isocentre. Each plane's image is placed in the plane
through the isocentre perpendicular to its central ray, at the pixel spacing at the
isocentre (ImagerPixelSpacing x SOD / SID, or the calibration's), so that the lateral and the
AP images cross at the vertebra as they do in the room. The central ray points from the
isocentre to the detector along ``(sin a cos b, -cos a cos b, sin b)`` for the positioner's
primary angle ``a`` (PositionerPrimaryAngle: + towards the patient's left, LAO) and secondary
angle ``b`` (PositionerSecondaryAngle: + cranial); the image's columns run along
``(cos a, sin a, 0)`` and its rows downwards along the rotated ``-z``. So an AP image (a = 0)
has the patient's left to the right of the image and the head up; a lateral one (a = 90) the
back to the right. A recording without the angles is placed at its plane's nominal angle
(lateral 90, AP 0); one without a millimetre scale at 1 mm per pixel. Both are said, once,
on ``MonitorStatus``.

Commands: only with ``--accept-commands``. A STRING whose content is ``acknowledge`` is then
sent to the analyzer on the same command path as the viewer's, with the ``igtl`` key: the
analyzer carries out an acknowledge from that key and nothing else, and logs it with source
``igtl``. Without the option the client is told that it was refused.
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
from monitor.messages import PLANES, End, FrameHeader, Result, Status

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
    beam = rotation @ np.array([0.0, -1.0, 0.0])  # isocentre -> detector; AP: anterior
    rows, columns = shape
    m = np.eye(4)
    m[:3, 0] = column_direction * spacing_mm[1]
    m[:3, 1] = row_direction * spacing_mm[0]
    m[:3, 2] = beam  # 1 mm slice, facing the detector
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
        self.placements: dict[str, Placement] = {}
        self.said_placement: dict[str, str] = {}
        self.alarms: dict[str, dict] = {}  # id -> its newest change, while it stands

    def frame(self, header: FrameHeader, pixels: np.ndarray) -> list[tuple[str | None, bytes | Lazy]]:
        out = []
        where = placement(header)
        self.placements[header.plane] = where
        if self.said_placement.get(header.plane) != where.how:
            self.said_placement[header.plane] = where.how
            if where.how not in ("dicom", "calibration"):
                out.append((None, _status_string("placement", f"{header.plane}: {where.how}", header.plane)))
        image = pyigtl.ImageMessage(
            display_pixels(header, pixels),
            ijk_to_world_matrix=where.matrix,
            world_coordinate_system="lps",
            timestamp=header.send_time,
            device_name=IMAGE_DEVICES[header.plane],
        )
        # packed (8.6 ms and its CRC-64 for 1024x1024 16-bit) only if a client takes it
        out.append((IMAGE_DEVICES[header.plane], Lazy(image.pack)))
        return out

    def result(self, r: Result) -> list[tuple[str | None, bytes]]:
        out = []
        for change in r.alarm_changes or ():
            record = {**change, "acq_time": r.acq_time}
            before = self.alarms.get(change["id"], {}).get("state")
            if {before, change["state"]} == {"cleared", "acknowledged"}:
                self.alarms.pop(change["id"], None)  # neither active nor shown any more
            else:
                self.alarms[change["id"]] = record
            out.append((None, _string(ALARM_DEVICE, record, r.frame_send_time)))
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
                positions=where.to_world([front]),
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
                out.append((device, _polyline(device, where.to_world(line), r.frame_send_time)))
        return out

    def status(self, s: Status) -> list[tuple[str | None, bytes]]:
        return [(None, _status_string(s.event, s.detail, s.plane, s.source, s.send_time))]

    def end(self, e: End) -> list[tuple[str | None, bytes]]:
        detail = f"frames analysed: {e.frames}" + (f"; {e.reason}" if e.reason else "")
        return [(None, _status_string("end", detail, None, e.source, e.send_time))]

    def standing_alarms(self) -> list[bytes]:
        """For a client that connects: the alarms that stand now, each as its newest change."""
        return [_string(ALARM_DEVICE, {**a, "standing": True}, time.time()) for a in self.alarms.values()]


def _string(device: str, content: dict, timestamp: float) -> bytes:
    # ASCII JSON: pyigtl's STRING packing fails on other text
    return pyigtl.StringMessage(json.dumps(content), timestamp=timestamp, device_name=device).pack()


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
    images: int = 0  # IMAGE messages packed (only while a client is connected)
    results: int = 0
    alarm_changes: int = 0
    commands: int = 0  # acknowledges passed on to the analyzer
    refused_commands: int = 0


class Bridge:
    """The bridge's work, without its loop: what a frame, result or client message does."""

    def __init__(self, server: IgtlServer, commands: CommandSender | None, say: Callable[[str], None]):
        self.server = server
        self.commands = commands
        self.say = say
        self.translator = Translator()
        self.stats = BridgeStats()
        self.started = time.monotonic()
        self.silent_since: float | None = None  # time.monotonic() since when the monitor is silent
        server.on_connect = self.connected
        server.on_message = self.received

    def frame(self, frame: Frame) -> None:
        self.stats.frames += 1
        if not self.server.has_clients:  # nobody to pack an image for; points still need a place
            self.translator.placements[frame.header.plane] = placement(frame.header)
            return
        for key, data in self.translator.frame(frame.header, frame.pixels):
            self._publish(key, data)
        self.stats.images += 1

    def message(self, message) -> None:
        if isinstance(message, Result):
            self.stats.results += 1
            self.stats.alarm_changes += len(message.alarm_changes or ())
            out = self.translator.result(message)
        elif isinstance(message, Status):
            out = self.translator.status(message)
        elif isinstance(message, End):
            out = self.translator.end(message)
        else:
            return
        for key, data in out:
            self._publish(key, data)

    def _publish(self, key: str | None, data: bytes) -> None:
        if key is None:
            self.server.publish_event(data)
        else:
            self.server.publish_latest(key, data)

    def connected(self, client: Client) -> None:
        for data in self.translator.standing_alarms():
            self.server.send_event(client, data)
        if self.silent_since is not None:
            self.server.send_event(client, self._silence_message())

    def heard(self, newest: float | None, now: float) -> None:
        """Says on ``MonitorStatus`` when nothing (no frame, result or heartbeat) has come from
        the monitor for SILENT_S, and when it is heard again: a client must never take the last
        image and measurement it holds for the present. ``newest``: time.monotonic() of the
        newest message heard (None: none yet); ``now``: time.monotonic()."""
        quiet_for = now - (self.started if newest is None else newest)
        if self.silent_since is None and quiet_for > SILENT_S:
            self.silent_since = now - quiet_for
            self.server.publish_event(self._silence_message())
            self.say(f"no message from the monitor for {quiet_for:.1f} s")
        elif self.silent_since is not None and quiet_for <= SILENT_S:
            silent_for = now - self.silent_since
            self.silent_since = None
            self.server.publish_event(
                _status_string("signal", f"the monitor is heard again after {silent_for:.1f} s")
            )

    def _silence_message(self) -> bytes:
        return _status_string(
            "no-signal",
            "no message from the monitor: the images, points and measurements held are not the present",
        )

    def received(self, client: Client, message) -> None:
        if not isinstance(message, pyigtl.StringMessage):
            return  # images, transforms, queries from a client: this bridge only sends them
        text = message.string.strip().lower()
        if text != "acknowledge":
            what = message.string[:40]
            self._reply(client, f"refused: unknown command {what!r}; the only one is 'acknowledge'")
            self.stats.refused_commands += 1
            return
        if self.commands is None:
            self._reply(client, "refused: this bridge takes no commands (start it with --accept-commands)")
            self.stats.refused_commands += 1
            log.warning("OpenIGTLink: %s sent acknowledge; refused, no --accept-commands", client.address)
            return
        try:
            self.commands.send("acknowledge")
        except OSError as e:
            self._reply(client, f"not sent: {e}")
            return
        self.stats.commands += 1
        self.say(f"acknowledge from {client.address} sent to the analyzer")
        self._reply(client, "acknowledge sent to the analyzer")

    def _reply(self, client: Client, text: str) -> None:
        self.server.send_event(client, pyigtl.StringMessage(text, device_name=REPLY_DEVICE).pack())


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
) -> BridgeStats:
    """Serve until ``should_stop`` (or SIGINT/SIGTERM; with ``until_end``, the analyzer's end).

    ``control_endpoint``: where acknowledges from clients go; None takes no commands.
    """
    server = IgtlServer(host, port, max_clients)
    ctx = zmq.Context()
    frames = Subscriber(frames_endpoint, hwm=VIEWER_HWM, context=ctx, key="igtl")
    results = Subscriber(results_endpoint, hwm=RESULTS_HWM, context=ctx, role="results", key="igtl")
    commands = CommandSender(control_endpoint, "igtl", context=ctx) if control_endpoint else None
    bridge = Bridge(server, commands, say)
    stop = []
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.append(1))
    say(
        f"serving OpenIGTLink on {host}:{server.port} for the monitor at {frames_endpoint}"
        + ("; acknowledges from clients go to the analyzer" if commands else "; clients cannot command")
    )
    poller = zmq.Poller()
    poller.register(frames.socket, zmq.POLLIN)
    poller.register(results.socket, zmq.POLLIN)
    ended = False
    try:
        while not stop and not should_stop() and not ended:
            server.register(poller)
            ready = dict(poller.poll(100))
            if ready.get(results.socket):
                while (message := results.receive(0)) is not None:
                    bridge.message(message)
                    ended = ended or (until_end and isinstance(message, End) and message.source == "analyzer")
            if ready.get(frames.socket):
                newest: dict[str, Frame] = {}
                while (message := frames.receive(0)) is not None:
                    if isinstance(message, Frame):
                        newest[message.header.plane] = message  # the present, not a backlog
                for plane in PLANES:
                    if plane in newest:
                        bridge.frame(newest[plane])
            server.handle(ready)
            heard = [t for t in (frames.stats.last_message_at, results.stats.last_message_at) if t]
            bridge.heard(max(heard, default=None), time.monotonic())
        # what is queued for the clients (the end, the last alarms), as far as they take it
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(c.waiting for c in server.clients.values()):
            server.register(poller)
            server.handle(dict(poller.poll(50)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
        frames.close()
        results.close()
        if commands is not None:
            commands.close()
        ctx.term()
    s = bridge.stats
    say(
        f"OpenIGTLink bridge stopped: {s.frames} frames in, {s.images} images out, {s.results} results,"
        f" {s.alarm_changes} alarm changes, {s.commands} acknowledges passed on,"
        f" {s.refused_commands} commands refused; clients {server.stats()}"
    )
    return s
