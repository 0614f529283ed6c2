"""The analyzer process: frames in, results and stream status out.

It subscribes to a source, analyses each frame, and publishes one result per
frame on its own stream, plus heartbeats, and status events from its
watchdog: "stale" when no new frame has arrived for ``stale_ms``, "resumed"
when frames come back, "dropped" on sequence gaps, "rejected" on malformed
messages. It survives anything a sender can send, and a restarted analyzer
simply reconnects to the running source.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import zmq

from monitor.flow import FlowClient
from monitor.io.transport import Frame, Publisher, Subscriber
from monitor.messages import End, FrameHeader, Heartbeat, Result, Status
from monitor.vision.analysis import AnalysisConfig, CaseAnalyzer

log = logging.getLogger(__name__)
HEARTBEAT_S = 0.2


class VisionAnalysis:
    """The vision pipeline behind the analyzer: one CaseAnalyzer for the level being treated."""

    def __init__(self, config: AnalysisConfig | None = None):
        self.case = CaseAnalyzer(config)

    def process(self, frame: Frame) -> Result:
        h = frame.header
        spacing = (h.scale or {}).get("spacing_mm")
        pixel_mm = float(sum(spacing) / 2) if spacing else None
        plane = self.case.plane(h.plane, h.photometric, h.intensity, h.bits_stored, pixel_mm)
        r, summary = self.case.process(plane, np.asarray(frame.pixels), h.frame, h.acq_time)
        return result_for(
            h,
            r.status,
            distance_mm=_rounded(r.distance_mm, 3),
            distance_px=_rounded(r.distance_px, 2),
            volume_ml=_rounded(summary["volume_ml"], 4),
            plane_volume_ml=_rounded(r.volume_ml, 4),
            seconds_to_line=_rounded(summary["seconds_to_line"], 2),
            alarms=summary["raised"],
            overlay=_plain(r.overlay),
        )


def result_for(h: FrameHeader, status: str, **measurements) -> Result:
    """A result answering the frame ``h``; the send time is stamped when it goes out."""
    return Result(
        session=h.session,
        plane=h.plane,
        seq=h.seq,
        frame=h.frame,
        acq_time=h.acq_time,
        frame_send_time=h.send_time,
        send_time=0.0,
        status=status,
        **measurements,
    )


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _plain(value):
    """JSON-ready: numpy numbers and arrays to Python ones."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class Watchdog:
    """Turns the arrival times of frames into stale / resumed events."""

    def __init__(self, stale_ms: float):
        self.stale_ms = stale_ms
        self.last_frame: float | None = None
        self.stale_since: float | None = None

    def frame_arrived(self, now: float) -> float | None:
        """Returns how long the stream had been stale (ms) if this frame ends a stale spell."""
        ended = None
        if self.stale_since is not None:
            ended = (now - self.last_frame) * 1000.0
            self.stale_since = None
        self.last_frame = now
        return ended

    def check(self, now: float) -> float | None:
        """Returns the age (ms) of the newest frame when the stream has just become stale."""
        if self.last_frame is None or self.stale_since is not None:
            return None
        age = (now - self.last_frame) * 1000.0
        if age >= self.stale_ms:
            self.stale_since = now
            return age
        return None


def run_analyzer(
    frames_endpoint: str,
    results_endpoint: str,
    flow_endpoint: str | None = None,
    session: str = "",
    stale_ms: float = 1000.0,
    analysis=None,
    should_stop: Callable[[], bool] = lambda: False,
    exit_on_end: bool = True,
) -> dict:
    """Run until the source's end message (or ``should_stop``); returns counts."""
    ctx = zmq.Context()
    analysis = analysis or VisionAnalysis()
    frames = Subscriber(frames_endpoint, context=ctx)
    results = Publisher(results_endpoint, session=session, source="analyzer", context=ctx)
    flow = FlowClient(flow_endpoint, "analyzer", context=ctx)
    watchdog = Watchdog(stale_ms)
    analysed: dict[str, int] = {}
    rejected_reported = 0
    ready = False
    next_beat = 0.0
    try:
        while not should_stop():
            message = frames.receive(20)
            now = time.monotonic()
            if now >= next_beat:
                results.heartbeat()
                next_beat = now + HEARTBEAT_S
            if message is not None and not ready:
                flow.ready()
                ready = isinstance(message, Frame)
            if isinstance(message, Frame):
                stale_for = watchdog.frame_arrived(now)
                if stale_for is not None:
                    results.send(
                        _status(
                            session,
                            "resumed",
                            f"frames resumed after {stale_for:.0f} ms",
                            stale_for,
                            message.header.plane,
                        )
                    )
                if message.gap:
                    results.send(
                        _status(
                            session,
                            "dropped",
                            f"{message.gap} {message.header.plane} frame(s) "
                            f"lost before seq {message.header.seq}",
                            None,
                            message.header.plane,
                        )
                    )
                result = _analyse(analysis, message)
                results.send(result)
                analysed[message.header.plane] = analysed.get(message.header.plane, 0) + 1
                flow.ack(message.header.plane, message.header.seq)
            elif isinstance(message, End):
                results.send(End(message.session, "analyzer", time.time(), analysed))
                if exit_on_end:
                    break
            elif message is None or isinstance(message, Heartbeat):
                age = watchdog.check(now)
                if age is not None:
                    results.send(_status(session, "stale", f"no new frame for {age:.0f} ms", age, None))
            total_rejected = sum(frames.stats.rejected.values())
            if total_rejected > rejected_reported:
                detail = ", ".join(f"{n} {reason}" for reason, n in sorted(frames.stats.rejected.items()))
                results.send(_status(session, "rejected", f"rejected messages so far: {detail}", None, None))
                rejected_reported = total_rejected
    finally:
        frames.close()
        results.close()
        flow.close()
        ctx.term()
    return {
        "analysed": analysed,
        "rejected": dict(frames.stats.rejected),
        "dropped": dict(frames.stats.dropped),
    }


def _analyse(analysis, frame: Frame) -> Result:
    """One frame's result; an exception becomes an error result, never a dead analyzer."""
    try:
        result = analysis.process(frame)
    except Exception as e:  # a bug or a frame the analysis cannot handle: report it, keep running
        log.exception("analysis failed on %s frame %d", frame.header.plane, frame.header.frame)
        result = result_for(frame.header, f"error: {e}"[:200])
    return replace(result, send_time=time.time())


def _status(session: str, event: str, detail: str, age_ms: float | None, plane: str | None) -> Status:
    return Status(session, "analyzer", time.time(), event, detail, age_ms, plane)
