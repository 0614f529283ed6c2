"""The session logger process: every frame, result and event into the session store.

It subscribes to the source's frames and to the analyzer's results, commits
each as it arrives, and at the end proves completeness: every frame the
source says it sent was logged, and every logged frame has its result. It
stops on the end messages of both streams, or when a stream falls silent for
``idle_timeout_s`` (a dead source or analyzer), and records why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import zmq

from monitor.flow import FlowClient
from monitor.io.store import SessionStore
from monitor.io.transport import Frame, Subscriber
from monitor.messages import End, Heartbeat, Result, Status

COMPLETE, INCOMPLETE = 0, 3


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
    ctx = zmq.Context()
    store = SessionStore.create(session_dir, meta)
    frames = Subscriber(frames_endpoint, context=ctx)
    results = Subscriber(results_endpoint, context=ctx)
    flow = FlowClient(flow_endpoint, "logger", context=ctx)
    poller = zmq.Poller()
    poller.register(frames.socket, zmq.POLLIN)
    poller.register(results.socket, zmq.POLLIN)
    heard = {"frames": None, "results": None}
    source_end: End | None = None
    analyzer_end: End | None = None
    ready = False
    try:
        while True:
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
                    if isinstance(message, Frame):
                        h = message.header
                        store.add_frame(
                            h.plane,
                            h.seq,
                            h.frame,
                            h.acq_time,
                            h.send_time,
                            message.received_at,
                            h.shape,
                            message.gap,
                        )
                        flow.ack(h.plane, h.seq)
                    elif isinstance(message, Result):
                        store.add_result(message, time.time())
                    elif isinstance(message, Status):
                        store.add_event(
                            message.source,
                            message.event,
                            message.detail,
                            message.age_ms,
                            message.plane,
                            message.send_time,
                        )
                    elif isinstance(message, End):
                        if name == "frames":
                            source_end = message
                        else:
                            analyzer_end = message
                    elif not isinstance(message, Heartbeat):
                        store.add_event("logger", "unexpected", f"{type(message).__name__} on {name}")
                    message = sub.receive(0)
            if not ready and all(t is not None for t in heard.values()):
                flow.ready()
                ready = store.count("frames") > 0
            if source_end is not None and analyzer_end is not None:
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
        return _finish(store, source_end, analyzer_end, frames, results)
    finally:
        frames.close()
        results.close()
        flow.close()
        store.close()
        ctx.term()


def _finish(
    store: SessionStore,
    source_end: End | None,
    analyzer_end: End | None,
    frames: Subscriber,
    results: Subscriber,
) -> int:
    problems = []
    logged = {plane: store.count("frames", plane) for plane in ("lateral", "ap")}
    analysed = {plane: store.count("results", plane) for plane in ("lateral", "ap")}
    if source_end is None:
        problems.append("no end message from the source")
    else:
        for plane, sent in source_end.frames.items():
            if logged[plane] != sent:
                problems.append(f"{plane}: source sent {sent} frames, {logged[plane]} logged")
    if analyzer_end is None:
        problems.append("no end message from the analyzer")
    for plane in ("lateral", "ap"):
        if analysed[plane] != logged[plane]:
            problems.append(f"{plane}: {logged[plane]} frames logged, {analysed[plane]} results")
    rejected = sum(frames.stats.rejected.values()) + sum(results.stats.rejected.values())
    if rejected:
        problems.append(f"{rejected} malformed messages rejected")
    dropped = sum(frames.stats.dropped.values())
    if dropped:
        problems.append(f"{dropped} frames dropped in transport")
    summary = {
        "complete": not problems,
        "problems": problems,
        "frames_logged": logged,
        "results_logged": analysed,
        "source_sent": source_end.frames if source_end else None,
        "dropped": dict(frames.stats.dropped),
        "rejected": dict(frames.stats.rejected),
        "ended": time.time(),
    }
    store.set_meta({"summary": summary})
    for problem in problems:
        store.add_event("logger", "incomplete", problem)
    return COMPLETE if not problems else INCOMPLETE
