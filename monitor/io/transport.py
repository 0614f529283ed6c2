"""ZeroMQ publish/subscribe for frames and heartbeats, without copies.

Sources bind a PUB socket and publish; the analyzer, viewers and the logger
connect SUB sockets, so any subscriber can restart without the source noticing.

Socket choices, on purpose:

- PUB send high-water mark of 64 messages (about a second of 30 frames/s
  biplane): past it ZeroMQ drops messages *for that subscriber only*, so a
  frozen viewer can never block the source or the analyzer.
- SUB receive high-water mark: deep (256) for the analyzer and the logger,
  which must see every frame; shallow for viewers, which only want the newest.
  ``ZMQ_CONFLATE`` would be the textbook "latest only" option but it does not
  support multipart messages, so viewers drain their queue instead
  (:meth:`Subscriber.latest`).
- Endpoints default to IPC paths in a user-only directory (monitor.io.runs), and
  every socket is CURVE-authenticated and encrypted (monitor.io.security).

Zero copy: frames go out with ``send_multipart(..., copy=False)`` straight from
the numpy array, and come in with ``recv_multipart(copy=False)``, the pixels a
``numpy.frombuffer`` view on ZeroMQ's own buffer.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import zmq

from monitor.errors import MonitorError
from monitor.io import security
from monitor.messages import (
    FRAME_TOPICS,
    HEARTBEAT_TOPIC,
    Command,
    End,
    FrameHeader,
    Heartbeat,
    MessageError,
    Result,
    Status,
    decode,
    encode,
    encode_frame,
)

log = logging.getLogger(__name__)

DEFAULT_FRAMES_ENDPOINT = "tcp://127.0.0.1:5571"
DEFAULT_RESULTS_ENDPOINT = "tcp://127.0.0.1:5572"
DEFAULT_FLOW_ENDPOINT = "tcp://127.0.0.1:5573"  # monitor.flow: readiness and acknowledgements
DEFAULT_CONTROL_ENDPOINT = "tcp://127.0.0.1:5574"
PUB_HWM = 64
ANALYZER_HWM = 256
VIEWER_HWM = 4


class EndpointError(MonitorError):
    """An endpoint this process must own cannot be bound (in use, or not a valid address)."""


MAX_MESSAGE_PART_BYTES = 64 * 2**20  # a 4096x4096 16-bit frame is 32 MiB; larger is not ours
MAX_COMMAND_BYTES = 64 * 2**10  # an operator command is a few hundred bytes


def check_endpoint(endpoint: str, role: str) -> None:
    """Refuse an endpoint that is not a ZeroMQ ipc:// or tcp:// address (EndpointError naming
    the option). Off this machine is allowed: every endpoint is CURVE-authenticated and
    encrypted (monitor.io.security), so a viewer elsewhere needs the installation's keys."""
    if endpoint.startswith("ipc://") and len(endpoint) > len("ipc://"):
        return
    if endpoint.startswith("tcp://") and ":" in endpoint[len("tcp://") :]:
        return
    if endpoint.startswith("inproc://"):
        return
    raise EndpointError(
        f"the {role} endpoint {endpoint!r} is not an ipc:// path or a tcp://host:port address"
        f" (--{role}-endpoint)"
    )


def _ipc_in_use(path: str) -> bool:
    """Whether a process listens on this IPC path. ZeroMQ's bind deletes the file first, so a
    second binder would silently take a running monitor's socket away from it."""
    if path.startswith("@") or not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            return False  # a socket file left by a run that died: free to take
    return True


def connect_endpoint(sock: zmq.Socket, endpoint: str, role: str, key: str = "operator") -> None:
    """Connect ``sock`` to ``endpoint`` as a CURVE client holding ``key`` (one of
    security.CLIENTS: what this process is); EndpointError if the endpoint is malformed.
    The socket is closed when it cannot connect."""
    try:
        check_endpoint(endpoint, role)
        security.join(sock, key)
    except MonitorError:
        sock.close(0)
        raise
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise EndpointError(f"cannot connect to the {role} endpoint {endpoint}: {e}") from None


def _in_use(endpoint: str, role: str) -> EndpointError:
    return EndpointError(
        f"the {role} endpoint {endpoint} is already in use, probably by another monitor on"
        f" this machine: stop it, or give this run its own endpoints (--{role}-endpoint)"
    )


def _bind(sock: zmq.Socket, endpoint: str, role: str) -> None:
    """Bind, or EndpointError in one line: not an address, or already in use (an IPC path a
    process listens on included: ZeroMQ's bind would silently take it over)."""
    check_endpoint(endpoint, role)
    if endpoint.startswith("ipc://") and _ipc_in_use(endpoint[len("ipc://") :]):
        raise _in_use(endpoint, role)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        if e.errno == zmq.EADDRINUSE:
            raise _in_use(endpoint, role) from None
        raise EndpointError(f"cannot bind the {role} endpoint {endpoint}: {e.strerror}") from None


def bind_endpoint(sock: zmq.Socket, endpoint: str, role: str) -> str:
    """Bind ``sock`` to ``endpoint``; returns the address bound (a port chosen by the system
    included). ``role`` names the endpoint for the error, as its option does
    (``frames``: ``--frames-endpoint``). The socket is closed when it cannot be bound.

    Two monitors on one machine both default to the same loopback ports: the second
    must say so in one line, not die in a traceback or, worse, half-start.

    The socket becomes a CURVE server (monitor.io.security.serve): only clients holding a
    key of this installation complete the handshake."""
    try:
        security.serve(sock)  # before the bind: only this installation's keys get in
        _bind(sock, endpoint, role)
    except MonitorError:
        sock.close(0)
        raise
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


LISTENER_CLOSE_TIMEOUT_MS = 2000  # a probe waits this long at most for its listener to close
# The socket the analyzer binds on each endpoint the run probes: a probe must be the same.
BOUND_AS = {"results": zmq.PUB, "control": zmq.PULL}


@contextlib.contextmanager
def probing(endpoint: str, role: str) -> Iterator[zmq.Socket]:
    """``endpoint`` bound, while in the block, as its owner will bind it: the same socket type
    (BOUND_AS) and a CURVE server (bind_endpoint). EndpointError in one line if it cannot be.

    As its owner binds it, because a client may already be connecting (a view started before
    the run retries every 100 ms). A client that met a plain socket there failed its handshake
    on a mechanism mismatch, which libzmq never retries: that view never heard a result, and
    its run waited for it in vain (CI, session 71: "viewer did not start within 60 s"). Met
    as here, the client completes its handshake, loses the connection when the probe closes,
    and reconnects to the owner. (A command a view sends in the moment it is connected to the
    control probe goes with it: before the run has started, when no command has a frame to
    act on.)

    Let go once ZeroMQ has closed the listener, which it does in its I/O thread moments after
    unbind() returns: an owner binding straight after found the endpoint still in use."""
    sock = zmq.Context.instance().socket(BOUND_AS[role])
    sock.setsockopt(zmq.LINGER, 0)
    closed = sock.get_monitor_socket(zmq.EVENT_CLOSED)
    try:
        bound = bind_endpoint(sock, endpoint, role)
        yield sock
        sock.unbind(bound)
        if closed.poll(LISTENER_CLOSE_TIMEOUT_MS):
            closed.recv_multipart()
    finally:
        with contextlib.suppress(zmq.ZMQError):  # bind_endpoint closes it when it cannot bind
            sock.disable_monitor()
        closed.close(0)
        sock.close(0)


def probe_bind(endpoint: str, role: str) -> None:
    """Bind ``endpoint`` for a moment and let it go (:func:`probing`): EndpointError in one
    line if it cannot be bound (in use, or not an address of this machine). For the endpoints
    a child process binds, checked before it starts: its failure would otherwise be a
    traceback, then a run that "did not start"."""
    with probing(endpoint, role):
        pass


class Publisher:
    """Binds a PUB socket: a source publishing frames, or the analyzer publishing results.

    A source keeps its last ``keep_bytes`` of frames, so that a logger killed
    and restarted mid-session gets back the frames it missed (:meth:`resend`).
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_FRAMES_ENDPOINT,
        session: str = "",
        source: str = "source",
        context: zmq.Context | None = None,
        keep_bytes: int = 0,
        role: str = "frames",
    ):
        self.session = session
        self.source = source
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, PUB_HWM)
        self._sock.setsockopt(zmq.LINGER, 2000)  # flush the last frames on a clean exit
        self.endpoint = bind_endpoint(self._sock, endpoint, role)
        self._seq = dict.fromkeys(FRAME_TOPICS, 0)
        self._beats = 0
        self.ended: End | None = None  # the end the source sent (monitor.replay.publish), to repeat
        self._recent: collections.deque = collections.deque()  # (header, pixels), newest last
        self._recent_bytes = 0
        self._resend_queue: collections.deque = collections.deque()
        self.keep_bytes = keep_bytes

    def send_frame(self, header: FrameHeader, pixels: np.ndarray) -> None:
        """Publish one frame; ``pixels`` must not be modified afterwards (it is sent in place,
        and kept for :meth:`resend`)."""
        self._sock.send_multipart(encode_frame(header, pixels), copy=False)
        if self.keep_bytes:
            self._recent.append((header, pixels))
            self._recent_bytes += pixels.nbytes
            while self._recent_bytes > self.keep_bytes and len(self._recent) > 1:
                self._recent_bytes -= self._recent.popleft()[1].nbytes

    def resend(self, have: dict[str, int]) -> dict[str, int]:
        """Queue for publishing again, marked ``resent``, the kept frames newer than
        ``have`` (plane -> last seq a restarted consumer holds); :meth:`pump_resends`
        sends them. Returns how many per plane, and -1 for a plane whose missing frames
        are older than what is kept."""
        counts: dict[str, int] = {}
        for plane, last in have.items():
            kept = [(h, p) for h, p in self._recent if h.plane == plane and h.seq > last]
            if kept and kept[0][0].seq > last + 1:
                counts[plane] = -1
            self._resend_queue.extend(kept)
            counts.setdefault(plane, len(kept))
        return counts

    @property
    def resends_pending(self) -> int:
        return len(self._resend_queue)

    def pump_resends(self, most: int) -> None:
        """Send up to ``most`` queued resent frames. A burst would overflow the high-water
        mark of a consumer that is still busy, and be dropped for it: a few per call."""
        for _ in range(min(most, len(self._resend_queue))):
            header, pixels = self._resend_queue.popleft()
            self._sock.send_multipart(encode_frame(replace(header, resent=True), pixels), copy=False)

    def next_seq(self, plane: str) -> int:
        seq = self._seq[plane]
        self._seq[plane] = seq + 1
        return seq

    def heartbeat(self, standing_alarms: list | None = None) -> None:
        """A heartbeat; the analyzer's carries the alarms standing now and then (Heartbeat)."""
        beat = Heartbeat(self.session, self.source, time.time(), self._beats, standing_alarms)
        self._beats += 1
        self._sock.send_multipart(encode(beat))

    def send(self, message: End | Result | Status) -> None:
        self._sock.send_multipart(encode(message))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class StreamStats:
    """What a subscriber has seen: frames, rejects by reason, drops by plane."""

    frames: int = 0
    heartbeats: int = 0
    rejected: collections.Counter = field(default_factory=collections.Counter)
    dropped: collections.Counter = field(default_factory=collections.Counter)
    source_restarts: int = 0
    last_seq: dict = field(default_factory=dict)
    last_message_at: float | None = None  # time.monotonic() of the last valid message

    def note_seq(self, plane: str, seq: int) -> int:
        """Record a frame's sequence number; returns how many frames were skipped."""
        previous = self.last_seq.get(plane)
        self.last_seq[plane] = seq
        if previous is None:
            return 0
        if seq <= previous:  # the source restarted and counts from zero again
            self.source_restarts += 1
            return 0
        gap = seq - previous - 1
        if gap:
            self.dropped[plane] += gap
        return gap


@dataclass(frozen=True)
class Frame:
    header: FrameHeader
    pixels: np.ndarray  # read-only view on the received buffer
    received_at: float  # time.time() on arrival
    gap: int  # frames of this plane skipped just before this one


MAX_SEQ_JUMP = 100_000  # frames a plane may skip at once (55 min at 30 frames/s); beyond: absurd


class Subscriber:
    """Connects a SUB socket to a publisher and yields validated messages.

    Malformed messages are counted in ``stats.rejected`` by reason, logged, and
    skipped; they never raise out of :meth:`receive`.

    With ``session`` (a session id, or "" for the first one heard) it follows one session,
    as the analyzer and the logger must: messages of any other session ("other-session"),
    live frames whose seq does not increase ("repeated-seq") or leaps by more than
    MAX_SEQ_JUMP ("absurd-seq") are counted and skipped. An absurd leap confirmed by the
    next frame (seq + 1) is a source that really moved on: the plane resynchronises on it
    rather than freezing. Viewers follow no session (a restarted monitor's frames show).
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_FRAMES_ENDPOINT,
        planes=("lateral", "ap"),
        hwm: int = ANALYZER_HWM,
        context: zmq.Context | None = None,
        role: str = "frames",
        session: str | None = None,
        key: str = "operator",
    ):
        self.session = session or None  # the session followed ("" : the first heard)
        self._follows = session is not None
        self._leap: dict[str, int] = {}  # plane -> an absurd seq, until the next confirms it
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_PART_BYTES)  # a larger sender is dropped
        if set(planes) == set(FRAME_TOPICS):
            # Everything, so that whatever a broken sender publishes is seen and counted.
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        else:
            for plane in planes:
                self._sock.setsockopt(zmq.SUBSCRIBE, FRAME_TOPICS[plane])
            self._sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        connect_endpoint(self._sock, endpoint, role, key)
        self.stats = StreamStats()

    @property
    def socket(self) -> zmq.Socket:
        """For a zmq.Poller watching several subscribers at once."""
        return self._sock

    def receive(self, timeout_ms: int) -> Frame | Heartbeat | End | Result | Status | None:
        """The next valid message, or None if none arrives within ``timeout_ms``."""
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(remaining):
                return None
            parts = self._sock.recv_multipart(copy=False)
            try:
                message = decode(parts)
            except MessageError as e:
                self.stats.rejected[e.reason] += 1
                log.warning(
                    "rejected message (%s, %d so far): %s", e.reason, self.stats.rejected[e.reason], e.detail
                )
                continue
            if self._follows and (reason := self._foreign(message)):
                self.stats.rejected[reason] += 1
                continue
            self.stats.last_message_at = time.monotonic()
            if isinstance(message, Heartbeat):
                self.stats.heartbeats += 1
                return message
            if not isinstance(message, tuple):
                return message
            header, pixels = message
            if header.resent:
                return Frame(header, pixels, time.time(), 0)
            self.stats.frames += 1
            gap = self.stats.note_seq(header.plane, header.seq)
            if gap:
                log.warning("%s: %d frame(s) dropped before seq %d", header.plane, gap, header.seq)
            return Frame(header, pixels, time.time(), gap)

    def _foreign(self, message) -> str | None:
        """Why a message is not of the session followed, or not in its sequence; None if it is."""
        header = message[0] if isinstance(message, tuple) else message
        session = header.session
        if self.session is None and isinstance(message, tuple):
            self.session = session  # the first frame heard names the session followed
        if self.session is not None and session != self.session:
            return "other-session"
        if not isinstance(message, tuple):
            return None
        previous = self.stats.last_seq.get(header.plane)
        if header.resent:  # a copy of a frame already sent live: never ahead of the live stream
            return "absurd-seq" if previous is not None and header.seq > previous else None
        if previous is None:
            return None
        if header.seq <= previous:
            return "repeated-seq"
        leap = self._leap.pop(header.plane, None)  # only the very next frame can confirm a leap
        if header.seq - previous > MAX_SEQ_JUMP and leap != header.seq - 1:
            self._leap[header.plane] = header.seq
            return "absurd-seq"
        return None

    def latest(self, timeout_ms: int) -> dict[str, Frame]:
        """Wait for a message, then drain the queue: the newest frame of each plane.

        For viewers, which should show the present rather than catch up.
        """
        newest: dict[str, Frame] = {}
        message = self.receive(timeout_ms)
        while message is not None:
            if isinstance(message, Frame):
                newest[message.header.plane] = message
            message = self.receive(0)
        return newest

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CommandSender:
    """The operator's side of the control endpoint: commands to the analyzer.

    PUSH/PULL rather than PUB/SUB: a command must not be dropped for want of a
    subscription, and ZeroMQ queues it while the analyzer (re)connects. ``source`` is the
    key it holds (``viewer`` or ``operator``): the analyzer names a command's source by the
    key it came with, whatever the message's ``source`` field says.
    """

    def __init__(self, endpoint: str, source: str, session: str = "", context: zmq.Context | None = None):
        self.source = source
        self.session = session
        self._sock = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._sock.setsockopt(zmq.SNDTIMEO, 1000)
        connect_endpoint(self._sock, endpoint, "control", source)

    @property
    def socket(self) -> zmq.Socket:
        """For a zmq.Poller or a socket monitor."""
        return self._sock

    def send(self, action: str, value=None) -> Command:
        command = Command(self.session, self.source, time.time(), action, value)
        try:
            self._sock.send_multipart(encode(command))
        except zmq.Again:
            raise OSError("the analyzer is not taking commands (no one on the control endpoint)") from None
        return command

    def close(self) -> None:
        self._sock.close()
