"""Readiness and acknowledgements from consumers back to the source.

PUB/SUB never pushes back, which is right for live imaging (a slow viewer must
not slow anything) but wrong in two places: at start, when frames published
before a subscriber has joined are lost, and when replaying "as fast as the
consumers take it" (``--speed 0``). For those, the analyzer and the logger
send small JSON messages on a PUSH socket to the source's PULL socket:
``{"consumer": name, "event": "ready"}`` once subscribed (a restarted logger
adds ``"have": {plane: last seq logged}``, asking for the frames it missed), and
``{"consumer": name, "event": "ack", "plane": p, "seq": n}`` per frame done.
"""

from __future__ import annotations

import contextlib
import json
import time

import zmq


class FlowClient:
    """The consumer's side: tell the source we are ready, and what we have done."""

    def __init__(self, endpoint: str | None, consumer: str, context: zmq.Context | None = None):
        self.consumer = consumer
        self._sock = None
        if endpoint:
            self._sock = (context or zmq.Context.instance()).socket(zmq.PUSH)
            self._sock.setsockopt(zmq.LINGER, 500)
            self._sock.setsockopt(zmq.SNDHWM, 1000)
            self._sock.connect(endpoint)

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
        self._sock.bind(endpoint)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ready: set[str] = set()
        self.acked: dict[tuple[str, str], int] = {}  # (consumer, plane) -> last seq
        self.last_heard: dict[str, float] = {}
        self.resend_requests: list[tuple[str, dict[str, int]]] = []  # (consumer, have)
        self.rejoined: set[str] = set()  # restarted, and not yet acknowledging
        self._asked: dict[str, dict[str, int]] = {}

    def poll(self, timeout_ms: int = 0) -> None:
        """Read every pending message, waiting up to ``timeout_ms`` for the first."""
        wait = timeout_ms
        while self._sock.poll(wait):
            wait = 0
            try:
                message = json.loads(self._sock.recv())
                consumer = str(message["consumer"])
            except (ValueError, KeyError, TypeError):
                continue
            self.last_heard[consumer] = time.monotonic()
            if message.get("event") == "ready":
                if any(c == consumer for c, _ in self.acked):
                    self.rejoined.add(consumer)
                self.ready.add(consumer)
                have = message.get("have")
                if isinstance(have, dict) and have:
                    clean = {str(p): int(n) for p, n in have.items() if isinstance(n, int)}
                    if self._asked.get(consumer) != clean:  # "ready" is repeated: serve it once
                        self._asked[consumer] = clean
                        self.resend_requests.append((consumer, clean))
            elif message.get("event") == "ack":
                self.rejoined.discard(consumer)
                key = (consumer, str(message.get("plane")))
                self.acked[key] = max(self.acked.get(key, -1), int(message.get("seq", -1)))

    def behind(self, consumer: str, plane: str, sent_seq: int) -> int:
        """Frames of ``plane`` sent up to ``sent_seq`` that ``consumer`` has not acknowledged
        (none for a consumer that restarted and has yet to see a frame)."""
        if consumer in self.rejoined:
            return 0
        return sent_seq - self.acked.get((consumer, plane), -1)

    def close(self) -> None:
        self._sock.close()
