"""An OpenIGTLink server for any number of clients, none of which can slow the others.

OpenIGTLink (http://openigtlink.org/) is the TCP protocol of 3D Slicer's OpenIGTLinkIF, the
PLUS device server and many navigation systems: a 58-byte header (version, type, device
name, timestamp, body size, CRC-64) and a typed body. The messages themselves are packed and
unpacked by ``pyigtl``; this module is the server around them, which pyigtl's own is not fit
to be here: its server takes one client at a time, shares one outgoing queue between them
(each message reaches one client), blocks the sender while a client is slow, and installs
signal handlers.

What this server guarantees:

* **Latest only for state.** ``publish_latest(key, data)`` replaces what a client has not yet
  started to receive under that key (a plane's image, its measurement), so a client gets
  images at the rate it reads them and a slow one never holds up the caller or the others.
* **Nothing lost for events.** ``publish_event(data)`` queues (alarm changes, status events);
  a client that lets ``max_events`` pile up is dropped, with a log line, rather than silently
  losing alarms. It gets the current state again when it reconnects.
* **Garbage is dropped.** A header that is not OpenIGTLink (version, type name, size over
  ``max_body`` bytes), a body whose CRC-64 does not match, a message begun and not finished
  within 5 s, or one the caller's handler fails on, closes that connection.
* **Slots are not held for nothing.** A client that takes nothing of a waiting message for
  30 s is closed (it reconnects, and gets the present), so that stalled connections cannot
  keep the ``max_clients`` slots from the living. One over ``max_clients`` is told why
  (a STRING on ``MonitorStatus``) and closed.
* **Loopback by default.** OpenIGTLink has no authentication or encryption: whoever reaches the
  port reads the patient's images. ``host`` is 127.0.0.1 unless the caller says otherwise.

Single-threaded: the caller polls :meth:`sockets` with its own ``zmq.Poller`` (which takes
plain sockets) beside its ZeroMQ subscribers and hands the ready ones to :meth:`handle`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import zmq
from pyigtl.messages import CRC64, MessageBase

log = logging.getLogger(__name__)

DEFAULT_PORT = 18944  # OpenIGTLink's registered port
HEADER = struct.Struct("> H 12s 20s I I Q Q")  # version, type, device, seconds, fraction, size, crc
HEADER_SIZE = HEADER.size  # 58
MAX_BODY = 64 * 1024  # what a client may send us: commands and queries, never images
MAX_EVENTS = 256  # queued events a client may fall behind by before it is dropped
PARTIAL_TIMEOUT_S = 5.0  # a message begun must arrive whole within this (pyigtl's own limit)
NOT_READING_TIMEOUT_S = 30.0  # a client that takes nothing of a waiting message for this long
ACCEPT_PAUSE_S = 1.0  # after accept() fails (out of file descriptors): the listener rests
MAX_UNKNOWN_TYPES = 32  # distinct unknown type names counted by name; the rest as "other"
_TYPE_NAME = re.compile(rb"[A-Z0-9_]{1,12}")


class Lazy:
    """A message packed when the first client is ready to take it, once for all of them: an
    image that every client skips (each is still busy with an earlier one) is never packed."""

    def __init__(self, pack: Callable[[], bytes]):
        self._pack = pack
        self._data: bytes | None = None

    def get(self) -> bytes:
        if self._data is None:
            self._data, self._pack = self._pack(), None
        return self._data


@dataclass
class Client:
    """One connected OpenIGTLink peer and what is waiting for it."""

    sock: socket.socket
    address: str
    fd: int = -1  # the socket's descriptor while it was open (a zmq.Poller's name for it)
    connected_at: float = field(default_factory=time.time)
    inbox: bytearray = field(default_factory=bytearray)
    sending: memoryview | None = None  # the message being written, from where the socket stopped
    events: deque = field(default_factory=deque)
    latest: dict = field(default_factory=dict)  # key -> packed message, newest only
    sent: int = 0  # messages written whole
    replaced: int = 0  # latest-only messages replaced before this client took them
    closed: bool = False
    partial_since: float | None = None  # time.monotonic() a message from it began and is not whole
    stuck_since: float | None = None  # time.monotonic() since it took nothing of what waits

    @property
    def waiting(self) -> bool:
        return bool(self.sending or self.events or self.latest)


@dataclass(frozen=True)
class ServerStats:
    connected: int
    accepted: int
    refused: int  # over max_clients
    dropped: dict  # why -> connections closed by the server


class IgtlServer:
    """Serve OpenIGTLink on ``host:port`` (port 0: any free port, see :attr:`port`).

    ``on_connect(client)`` runs for each new client, to queue the current state for it;
    ``on_message(client, message)`` for each valid message a client sends, as a pyigtl
    message (types pyigtl does not know are skipped, and counted).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        max_clients: int = 16,
        max_events: int = MAX_EVENTS,
        max_body: int = MAX_BODY,
        on_connect: Callable[[Client], None] = lambda client: None,
        on_message: Callable[[Client, MessageBase], None] = lambda client, message: None,
    ):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, port))
        except OSError as e:
            self._listener.close()
            raise OSError(f"cannot serve OpenIGTLink on {host}:{port}: {e.strerror or e}") from None
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self.max_clients = max_clients
        self.max_events = max_events
        self.max_body = max_body
        self.on_connect = on_connect
        self.on_message = on_message
        self.clients: dict[socket.socket, Client] = {}
        self._accepted = 0
        self._refused = 0
        self._dropped: dict[str, int] = {}
        self.unknown_types: dict[str, int] = {}
        self._latest: dict[str, bytes] = {}  # key -> the newest published, for a client that connects
        self._accept_paused_until = 0.0
        self.refusal: bytes | None = None  # told to a client over max_clients before it is closed

    # -- what the caller publishes --------------------------------------------------------

    def publish_latest(self, key: str, data: bytes | Lazy) -> None:
        """``data`` (a packed message, or a :class:`Lazy` one) to every client, replacing any not
        yet begun under ``key``; kept for clients that connect later."""
        self._latest[key] = data
        for client in self.clients.values():
            if client.closed:
                continue
            if key in client.latest:
                client.replaced += 1
                del client.latest[key]  # re-inserted last: the others waiting go first
            client.latest[key] = data

    def publish_event(self, data: bytes) -> None:
        """``data`` to every client, in order, never replaced; a client too far behind is dropped."""
        for client in list(self.clients.values()):
            if not client.closed:
                self.send_event(client, data)

    def send_event(self, client: Client, data: bytes) -> None:
        """``data`` to one client (an answer, or the state a new client starts from)."""
        if len(client.events) >= self.max_events:
            self._drop(client, f"too slow: {self.max_events} events unread")
            return
        client.events.append(data)

    @property
    def has_clients(self) -> bool:
        return bool(self.clients)

    def stats(self) -> ServerStats:
        return ServerStats(len(self.clients), self._accepted, self._refused, dict(self._dropped))

    # -- the caller's poll loop -----------------------------------------------------------

    def register(self, poller: zmq.Poller) -> None:
        """Before each poll: the listener and every open client registered with ``poller``
        (writable interest only for clients with something waiting, so an idle poll does
        not spin), closed clients unregistered and forgotten."""
        if time.monotonic() >= self._accept_paused_until:
            poller.register(self._listener, zmq.POLLIN)
        else:  # out of descriptors: a readable listener would make every poll return at once
            with contextlib.suppress(KeyError):
                poller.unregister(self._listener)
        for sock, client in list(self.clients.items()):
            if client.closed:
                del self.clients[sock]
                with contextlib.suppress(KeyError):  # closed before it was ever registered
                    poller.unregister(sock)
            else:
                poller.register(sock, zmq.POLLIN | (zmq.POLLOUT if client.waiting else 0))

    def handle(self, ready: dict) -> None:
        """Accept, read and write whatever ``ready`` (``dict(poller.poll(...))``, where plain
        sockets appear as their file descriptors) says can be,
        and write whatever else waits, until the sockets would block."""
        if ready.get(self._listener.fileno()):  # zmq.Poller names plain sockets by descriptor
            self._accept()
        for client in list(self.clients.values()):
            if client.closed:
                continue
            if ready.get(client.fd, 0) & zmq.POLLIN and not self._read(client):
                continue
            if client.waiting:
                self._write(client)
        self._expire(time.monotonic())

    def _expire(self, now: float) -> None:
        for client in list(self.clients.values()):
            if client.closed:
                continue
            if client.partial_since is not None and now - client.partial_since > PARTIAL_TIMEOUT_S:
                self._gone(
                    client, f"began a message and did not finish it in {PARTIAL_TIMEOUT_S:g} s", "garbage"
                )
            elif client.stuck_since is not None and now - client.stuck_since > NOT_READING_TIMEOUT_S:
                self._gone(client, f"took nothing for {NOT_READING_TIMEOUT_S:g} s", "not-reading")

    def close(self) -> None:
        for client in list(self.clients.values()):
            client.sock.close()
        self.clients.clear()
        self._listener.close()

    # -- the sockets ----------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, (host, port) = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors, ...: said, and the server rests a moment
                log.warning(
                    "OpenIGTLink: cannot accept a connection (%s); trying again in %g s", e, ACCEPT_PAUSE_S
                )
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S
                return
            if len(self.clients) >= self.max_clients:
                self._refused += 1
                log.warning("OpenIGTLink: refused %s:%d: already %d clients", host, port, self.max_clients)
                if self.refusal:
                    with contextlib.suppress(OSError):
                        sock.setblocking(False)
                        sock.send(self.refusal)
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = Client(sock, f"{host}:{port}", sock.fileno(), latest=dict(self._latest))
            self.clients[sock] = client
            self._accepted += 1
            log.info("OpenIGTLink: %s connected (%d clients)", client.address, len(self.clients))
            self.on_connect(client)

    def _read(self, client: Client) -> bool:
        """Take what the client sent; False when it is gone or sent garbage."""
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as e:
            return self._gone(client, f"connection error: {e.strerror or e}")
        if not data:
            return self._gone(client, "disconnected")
        client.inbox += data
        while len(client.inbox) >= HEADER_SIZE and not client.closed:
            version, kind, device, _, _, size, crc = HEADER.unpack_from(client.inbox)
            kind = kind.rstrip(b"\0")
            if version not in (1, 2) or not _TYPE_NAME.fullmatch(kind) or size > self.max_body:
                return self._gone(
                    client,
                    f"not OpenIGTLink (header version {version}, type {kind[:12]!r}, body of {size} bytes)",
                    "garbage",
                )
            if len(client.inbox) < HEADER_SIZE + size:
                break
            body = bytes(client.inbox[HEADER_SIZE : HEADER_SIZE + size])
            header = bytes(client.inbox[:HEADER_SIZE])
            del client.inbox[: HEADER_SIZE + size]
            if CRC64(body) != crc:
                return self._gone(client, f"{kind.decode()} message with a wrong CRC-64", "garbage")
            message = MessageBase.create_message(kind.decode())
            if message is None:  # a type we have no use for (GET_CAPABIL, STT_TDATA, ...)
                name = kind.decode()
                if name not in self.unknown_types and len(self.unknown_types) >= MAX_UNKNOWN_TYPES:
                    name = "other"
                self.unknown_types[name] = self.unknown_types.get(name, 0) + 1
                continue
            try:
                message.unpack(MessageBase.parse_header(header), body)
            except Exception as e:  # pyigtl raises what it meets: a malformed body is garbage
                return self._gone(client, f"malformed {kind.decode()} body ({type(e).__name__})", "garbage")
            try:
                self.on_message(client, message)
            except Exception as e:  # whatever one client sent fails, that client goes, not the server
                log.exception("OpenIGTLink: handling a %s from %s failed", kind.decode(), client.address)
                return self._gone(
                    client, f"sent a {kind.decode()} that could not be handled ({e!r})"[:300], "garbage"
                )
        client.partial_since = (client.partial_since or time.monotonic()) if client.inbox else None
        return not client.closed

    def _write(self, client: Client) -> bool:
        """Write what waits until the socket would block; False when the client is gone.
        Notes since when a client with something waiting has taken nothing of it."""
        progressed = False
        while True:
            if not client.sending:
                if client.events:
                    client.sending = memoryview(client.events.popleft())
                elif client.latest:
                    data = client.latest.pop(next(iter(client.latest)))
                    client.sending = memoryview(data.get() if isinstance(data, Lazy) else data)
                else:
                    client.stuck_since = None  # all taken
                    return True
            try:
                n = client.sock.send(client.sending)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                return self._gone(client, f"connection error: {e.strerror or e}")
            progressed = progressed or n > 0
            client.sending = client.sending[n:]
            if not client.sending:
                client.sent += 1
        if progressed or client.stuck_since is None:
            client.stuck_since = time.monotonic()
        return True

    def _gone(self, client: Client, why: str, counter: str = "disconnected") -> bool:
        self._dropped[counter] = self._dropped.get(counter, 0) + 1
        level = logging.WARNING if counter != "disconnected" else logging.INFO
        log.log(level, "OpenIGTLink: %s %s; connection closed", client.address, why)
        client.sock.close()
        client.closed = True
        return False

    def _drop(self, client: Client, why: str) -> None:
        self._gone(client, why, "slow")


# -- the other end: a client that records ------------------------------------------------


@dataclass
class Received:
    at: float  # time.time() when the whole message had arrived
    type: str
    device: str
    timestamp: float
    message: object  # a pyigtl message, or a dict for POLYDATA

    def json(self) -> dict:
        return json.loads(self.message.string)


def unpack_polydata(body: bytes) -> dict:
    """POLYDATA (OpenIGTLink v2): counts and sizes, then points (big-endian float32 xyz) and
    cell arrays (uint32: n, i1..in per cell)."""
    counts = struct.unpack_from("> 10I", body)
    n_points, _, size_vertices, _, size_lines = counts[:5]
    offset = 40
    points = np.frombuffer(body, ">f4", n_points * 3, offset).reshape(n_points, 3)
    offset += n_points * 12 + size_vertices
    lines = np.frombuffer(body, ">u4", size_lines // 4, offset)
    return {"points": points.astype(float), "lines": lines.astype(int)}


class IgtlRecorder:
    """An OpenIGTLink client that records every message it receives, in order, in a thread
    (pyigtl's own client keeps only the newest message per device, and cannot unpack
    POLYDATA). For the tests and ``monitor bench igtl``; ``read=False`` connects and never
    reads, as a stalled client would."""

    def __init__(self, port: int, read: bool = True, rcvbuf: int | None = None, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, port))
        self.received: list[Received] = []
        self.closed_by_peer = threading.Event()
        self.crc_errors = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        if read:
            self._thread.start()

    def _exactly(self, n: int) -> bytes | None:
        chunks, got = [], 0
        while got < n:
            try:
                data = self.sock.recv(n - got)
            except TimeoutError:
                if self._stop:
                    return None
                continue
            except OSError:
                return None
            if not data:
                return None
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            header = self._exactly(HEADER.size)
            if header is None:
                break
            _, _, _, _, _, size, crc = HEADER.unpack(header)
            body = self._exactly(size)
            if body is None:
                break
            if CRC64(body) != crc:
                self.crc_errors += 1
            fields = MessageBase.parse_header(header)
            kind = fields["message_type"]
            if kind == "POLYDATA":
                message = unpack_polydata(body)
            else:
                message = MessageBase.create_message(kind)
                message.unpack(fields, body)
            self.received.append(
                Received(time.time(), kind, fields["device_name"], fields["timestamp"], message)
            )
        if not self._stop:
            self.closed_by_peer.set()

    def send(self, message) -> None:
        self.sock.sendall(message.pack())

    def of(self, device: str) -> list[Received]:
        return [r for r in list(self.received) if r.device == device]

    def wait_for(self, predicate, timeout: float = 20.0) -> Received | None:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            items = list(self.received)
            for r in items[seen:]:
                if predicate(r):
                    return r
            seen = len(items)
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self._stop = True
        if self._thread.is_alive():
            self._thread.join(2)
        self.sock.close()
