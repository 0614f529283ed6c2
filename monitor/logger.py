"""The session logger process: every frame received, with its pixels, into the session log.

It subscribes to the source's frames (the analyzer writes its own results,
alarms and events into the same log), commits each frame as it arrives, and at
the end proves completeness: every frame the source says it sent was logged,
and every logged frame has its result. It stops on the end messages of both
streams, or when a stream falls silent for ``idle_timeout_s`` (a dead source
or analyzer), and records why.

Restarted after a crash, it continues the same log and asks the source for the
frames it missed (the source keeps its recent frames for this).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from monitor.collection import CollectionPacing
from monitor.flow import FlowClient
from monitor.io.store import LogWriteError, SessionStore, load_image_codec
from monitor.io.transport import Frame, Subscriber
from monitor.messages import END_GRACE_S, PLANES, End, Heartbeat, Result, Status, unsent_phrase

COMPLETE, INCOMPLETE = 0, 3
log = logging.getLogger(__name__)


def run_logger(
    frames_endpoint: str,
    results_endpoint: str,
    session_dir: str | Path,
    meta: dict,
    flow_endpoint: str | None = None,
    idle_timeout_s: float = 10.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Log one session; returns 0 when everything sent was logged, 3 otherwise."""
    # Over 60 lines on purpose: the logger process's loop, its sockets and the log opened and closed
    # in one place, so that every way out (both ends heard, its parent gone, a silent stream, a
    # failed write) is seen beside what it must close.
    ctx = zmq.Context()
    load_image_codec()
    store = SessionStore.create(session_dir, meta)
    store.add_event("logger", "started", f"pid {os.getpid()}")
    last = store.records("frame", after=store.last_rec("frame") - 1)
    last_stream = last[-1].body["stream"] if last else None
    logged_before = {p: n for p in PLANES if (n := store.last_seq("frame", p, last_stream)) is not None}
    session = str(meta.get("session") or "")  # followed: other sessions' messages are counted, not logged
    frames = Subscriber(frames_endpoint, context=ctx, session=session, key="logger")
    results = Subscriber(results_endpoint, context=ctx, role="results", session=session, key="logger")
    flow = FlowClient(flow_endpoint, "logger", context=ctx)
    poller = zmq.Poller()
    poller.register(frames.socket, zmq.POLLIN)
    poller.register(results.socket, zmq.POLLIN)
    heard = {"frames": None, "results": None}
    stream: str | None = None  # the source's session id: one run of a source
    source_end: End | None = None
    analyzer_end: End | None = None
    ready = False
    have: dict[str, int] | None = None
    ends_at = None
    failures = WriteFailures()
    pacing = CollectionPacing()  # Python's full collections between messages, not inside a burst
    try:
        pacing.start()
        while True:
            pacing.between_frames()
            if should_stop():
                store.add_event("logger", "stopped", "the process that started the logger has gone")
                break
            events = dict(poller.poll(50))
            now = time.monotonic()
            for name, sub in (("frames", frames), ("results", results)):
                if sub.socket not in events:
                    continue
                message = sub.receive(0)
                while message is not None:
                    heard[name] = now
                    if name == "frames" and stream is None:
                        stream = message.header.session if isinstance(message, Frame) else message.session
                    if isinstance(message, Frame):
                        h = message.header
                        if not (h.resent and store.has_frame(h.plane, h.seq, h.session)):
                            failures.attempt(
                                store.add_frame, h, message.pixels, message.received_at, message.gap, h.resent
                            )
                        if not h.resent:
                            flow.ack(h.plane, h.seq)
                    elif isinstance(message, End):
                        if name == "frames":
                            source_end = message
                        else:
                            analyzer_end = message
                    elif not isinstance(message, (Heartbeat, Result, Status)):
                        store.add_event("logger", "unexpected", f"{type(message).__name__} on {name}")
                    message = sub.receive(0)
            if not ready and all(t is not None for t in heard.values()):
                if have is None:
                    # Restarted mid-stream: ask for this stream's frames logged by no one.
                    have = logged_before if stream == last_stream else {}
                    if have:
                        failures.attempt(
                            store.add_event, "logger", "restarted", f"restarted; frames logged up to {have}"
                        )
                flow.ready(have)
                ready = store.count("frame", stream=stream) > 0
            # no frame sent (a run stopped before its first): nothing for the analyzer to end, whose
            # own end may have gone out before this logger had joined its stream
            if source_end is not None and (analyzer_end is not None or not any(source_end.frames.values())):
                ends_at = ends_at or now
                missing = any(store.count("frame", p, stream) < n for p, n in source_end.frames.items())
                if not missing or now - ends_at > END_GRACE_S:  # resent frames may still be coming
                    break
            silent = [n for n, t in heard.items() if t is not None and now - t > idle_timeout_s]
            if silent:
                store.add_event(
                    "logger",
                    "silent",
                    f"no message on {', '.join(silent)} for "
                    f"{idle_timeout_s:g} s; closing the session as incomplete",
                )
                break
        return _finish(store, stream, source_end, analyzer_end, frames, failures)
    except LogWriteError as e:
        log.error("session logging failed: %s", e)
        return INCOMPLETE
    finally:
        pacing.stop()
        frames.close()
        results.close()
        flow.close()
        store.close()
        ctx.term()


class WriteFailures:
    """Frames that could not be written (full disk): counted and reported, never fatal."""

    def __init__(self):
        self.lost = 0
        self.last_error = ""
        self._said = 0.0

    def attempt(self, write, *args) -> None:
        try:
            write(*args)
        except LogWriteError as e:
            self.lost += 1
            self.last_error = str(e)
            if time.monotonic() - self._said > 10.0:
                self._said = time.monotonic()
                log.error("SESSION LOGGING FAILED (%d record(s) lost so far): %s", self.lost, e)


def _finish(
    store: SessionStore,
    stream: str | None,
    source_end: End | None,
    analyzer_end: End | None,
    frames: Subscriber,
    failures: WriteFailures,
) -> int:
    problems = []
    logged = {plane: store.count("frame", plane, stream) for plane in PLANES}
    analysed = {plane: store.count("result", plane, stream) for plane in PLANES}
    if failures.lost:
        problems.append(f"{failures.lost} frame(s) could not be written: {failures.last_error}")
    if source_end is None:
        problems.append("no end message from the source")
    else:
        if source_end.reason:
            problems.append(f"the source did not finish: {source_end.reason}")
        for plane, sent in source_end.frames.items():
            if logged[plane] != sent:
                problems.append(f"{plane}: source sent {sent} frames, {logged[plane]} logged")
    if analyzer_end is None and (source_end is None or any(source_end.frames.values())):
        problems.append("no end message from the analyzer")
    for plane in PLANES:
        if analysed[plane] != logged[plane]:
            problems.append(f"{plane}: {logged[plane]} frames logged, {analysed[plane]} results")
    rejected = sum(frames.stats.rejected.values())
    if rejected:
        problems.append(f"{rejected} malformed messages rejected")
    dropped = sum(frames.stats.dropped.values())
    if dropped:
        problems.append(f"{dropped} frames dropped in transport")
    for problem in problems:  # said first: with the disk full, the log cannot hold them
        log.error("the session log is incomplete: %s", problem)
    unsent = source_end.unsent if source_end else None
    if unsent:  # the log holds all that was sent: complete, but of part of the recording
        store.add_event(
            "logger",
            "stopped-early",
            f"the recording was not sent to its end ({unsent_phrase(unsent)}: stopped, or the"
            " source ended early)",
        )
    summary = {
        "complete": not problems,
        "unsent": unsent,
        "problems": problems,
        "frames_logged": logged,
        "results_logged": analysed,
        "source_sent": source_end.frames if source_end else None,
        "dropped": dict(frames.stats.dropped),
        "rejected": dict(frames.stats.rejected),
        "ended": time.time(),
    }
    store.add_meta({"summary": summary})
    for problem in problems:
        store.add_event("logger", "incomplete", problem)
    return COMPLETE if not problems else INCOMPLETE
