"""Readiness and acknowledgements from consumers back to the source.

PUB/SUB never pushes back, which is right for live imaging (a slow viewer must
not slow anything) but wrong in two places: at start, when frames published
before a subscriber has joined are lost, and when replaying "as fast as the
consumers take it" (``--speed 0``). For those, the analyzer and the logger
send small JSON messages on a PUSH socket to the source's PULL socket:
``{"consumer": name, "event": "ready"}`` once subscribed (a restarted logger
adds ``"have": {plane: last seq logged}``, asking for the frames it missed), and
``{"consumer": name, "event": "ack", "plane": p, "seq": n}`` per frame done. The source
knows a consumer by the CURVE key it connected with (monitor.io.security), not by the
``consumer`` it writes.
"""

from __future__ import annotations

import contextlib
import json
import time

import zmq

from monitor.io import security
from monitor.io.transport import bind_endpoint, connect_endpoint
from monitor.messages import PLANES


class FlowClient:
    """The consumer's side: tell the source we are ready, and what we have done."""

    def __init__(self, endpoint: str | None, consumer: str, context: zmq.Context | None = None):
        """``consumer``: the key this consumer holds (``analyzer`` or ``logger``), which is how
        the source knows it."""
        self.consumer = consumer
        self._sock = None
        if endpoint:
            self._sock = (context or zmq.Context.instance()).socket(zmq.PUSH)
            self._sock.setsockopt(zmq.LINGER, 500)
            self._sock.setsockopt(zmq.SNDHWM, 1000)
            connect_endpoint(self._sock, endpoint, "flow", consumer)

    def ready(self, have: dict[str, int] | None = None) -> None:
        """Say we are subscribed. Consumers repeat it until frames flow: a PUSH
        socket still connecting may drop a message, and a lost "ready" would
        leave the source waiting. ``have``: the last seq per plane already held."""
        message = {"consumer": self.consumer, "event": "ready"}
        if have:
            message["have"] = have
        self._send(message)

    def ack(self, plane: str, seq: int) -> None:
        self._send({"consumer": self.consumer, "event": "ack", "plane": plane, "seq": seq})

    def _send(self, message: dict) -> None:
        if self._sock is not None:
            # The source may be gone or not pacing: acknowledgements are advisory.
            with contextlib.suppress(zmq.Again):
                self._sock.send(json.dumps(message).encode(), zmq.NOBLOCK)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


class FlowServer:
    """The source's side: who is ready, and how far behind each consumer is."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None):
        self._sock = (context or zmq.Context.instance()).socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FLOW_BYTES)  # a larger sender is disconnected
        self.endpoint = bind_endpoint(self._sock, endpoint, "flow")
        self.ready: set[str] = set()
        self.acked: dict[tuple[str, str], int] = {}  # (consumer, plane) -> last seq
        self.last_heard: dict[str, float] = {}
        self.resend_requests: list[tuple[str, dict[str, int]]] = []  # (consumer, have)
        self.rejoined: set[str] = set()  # restarted, and not yet acknowledging
        self._asked: dict[str, dict[str, int]] = {}
        self.rejected = 0  # malformed messages ignored

    def poll(self, timeout_ms: int = 0) -> None:
        """Read every pending message, waiting up to ``timeout_ms`` for the first."""
        wait = timeout_ms
        while self._sock.poll(wait):
            wait = 0
            raw = self._sock.recv(copy=False)
            message = _flow_message(raw.bytes)
            # Who speaks is the key it holds, not the name it writes: a process holding the
            # viewer's key cannot acknowledge frames for the analyzer.
            consumer = security.sender(raw)
            if message is None or not consumer:  # counted, never fatal: the source outlives any sender
                self.rejected += 1
                continue
            self.last_heard[consumer] = time.monotonic()
            if message["event"] == "ready":
                if any(c == consumer for c, _ in self.acked):
                    self.rejoined.add(consumer)
                self.ready.add(consumer)
                have = message.get("have")
                if have and self._asked.get(consumer) != have:  # "ready" is repeated: serve it once
                    self._asked[consumer] = have
                    self.resend_requests.append((consumer, have))
            else:
                self.rejoined.discard(consumer)
                key = (consumer, message["plane"])
                self.acked[key] = max(self.acked.get(key, -1), message["seq"])

    def behind(self, consumer: str, plane: str, sent_seq: int) -> int:
        """Frames of ``plane`` sent up to ``sent_seq`` that ``consumer`` has not acknowledged
        (none for a consumer that restarted and has yet to see a frame)."""
        if consumer in self.rejoined:
            return 0
        return max(0, sent_seq - self.acked.get((consumer, plane), -1))

    def close(self) -> None:
        self._sock.close()


MAX_FLOW_BYTES = 4096  # a ready or an ack is under 200 bytes
MAX_SEQ = 2**53  # sequence numbers past this are nonsense (and lose precision in JSON)


def _flow_message(raw: bytes) -> dict | None:
    """A consumer's "ready" or "ack", checked field by field; None for anything else.

    {"consumer": name, "event": "ready", "have": {plane: seq}} or
    {"consumer": name, "event": "ack", "plane": plane, "seq": seq}, seq an int in [0, 2**53].
    """
    if len(raw) > MAX_FLOW_BYTES:
        return None
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    consumer, event = message.get("consumer"), message.get("event")
    if not (isinstance(consumer, str) and 0 < len(consumer) <= 64) or event not in ("ready", "ack"):
        return None

    def seq_ok(n) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and -1 <= n <= MAX_SEQ

    if event == "ready":
        have = message.get("have") or {}
        if not (isinstance(have, dict) and all(p in PLANES and seq_ok(n) for p, n in have.items())):
            return None
        return {"consumer": consumer, "event": event, "have": have}
    plane, seq = message.get("plane"), message.get("seq")
    if plane not in PLANES or not seq_ok(seq):
        return None
    return {"consumer": consumer, "event": event, "plane": plane, "seq": seq}
