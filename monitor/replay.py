"""The source process: publish a source's frames, paced, with heartbeats and an end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from monitor.collection import CollectionPacing
from monitor.errors import MonitorError
from monitor.flow import FlowServer
from monitor.interrupts import held, interruptible, stops_held_in
from monitor.io.sources import PlaneFormat, SourceFrame
from monitor.io.transport import Publisher
from monitor.messages import HEARTBEAT_S, PLANES, End, FrameHeader


@dataclass(frozen=True)
class PaceOptions:
    speed: float = 1.0  # 1 = recorded rate; 0 = as fast as the consumers take it
    loop: bool = False
    wait_for: tuple[str, ...] = ()  # consumers that must be ready (and, at speed 0, keep up)
    # ... that must be ready before the first frame but are never waited for after it: a live
    # view, which must see the baseline but may fall behind alone (it drops frames, not the source)
    ready_for: tuple[str, ...] = ()
    # A consumer alive but not yet subscribed this long is given up on. A consumer that dies while
    # it starts ends the wait at once (``hopeless``), so this bounds only a slow start: a spawned
    # child imports numpy, OpenCV and zmq, 1-3 s idle, and took over 20 s on a loaded machine
    # (session 71, four tests beside a full suite).
    ready_timeout_s: float = 60.0
    window: int = 8  # frames a consumer may be behind at speed 0
    ack_timeout_s: float = 5.0  # a consumer silent this long is no longer waited for


def publish(
    source,
    publisher: Publisher,
    options: PaceOptions,
    flow: FlowServer | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    say: Callable[[str], None] = lambda _m: None,
    hopeless: Callable[[], str | None] = lambda: None,
) -> dict[str, int]:
    """Publish every frame of ``source``; returns the frames sent per plane.

    Always ends with an ``end`` message carrying those counts, even when
    stopped early, so that downstream processes can account for every frame; when it
    stops on a failure the ``end`` says "aborted: <why>", and the session is incomplete.
    Ctrl-C and a service manager's stop are taken only where it waits (for a frame, the pace, its
    consumers): never inside a message, between a frame and its count, or before the end
    (:mod:`monitor.interrupts`).
    """
    if options.speed < 0:
        raise MonitorError("--speed must be 0 (as fast as possible) or positive")
    with stops_held_in():
        return _publish(source, publisher, options, flow, should_stop, say, hopeless)


def _publish(source, publisher: Publisher, options: PaceOptions, flow, should_stop, say, hopeless):
    sent = dict.fromkeys(source.formats, 0)
    last_seq: dict[str, int] = {}
    aborted = None
    pacing = CollectionPacing()  # Python's full collections between frames, not before one is sent
    try:
        pacing.start()
        _wait_until_ready(publisher, options, flow, say, hopeless)
        offset = 0.0
        started = time.monotonic()
        next_beat = started
        while True:
            duration = 0.0
            frames = iter(source.frames())
            while True:
                with interruptible():  # a stop is taken where the source waits, here for a frame
                    item = next(frames, None)
                if item is None:
                    break
                if should_stop():
                    return sent
                due = started + (offset + item.acq_time) / options.speed if options.speed else None
                next_beat = _wait(publisher, due, next_beat)
                if options.speed == 0 and flow is not None:
                    next_beat = _wait_for_consumers(publisher, flow, options, last_seq, next_beat, say)
                if flow is not None:  # before the next frame, so that a restarted consumer sees order
                    flow.poll(0)
                    serve_resends(publisher, flow, say)
                # (no stop is taken here, only in the waits: sent and counted, or neither)
                seq = publisher.next_seq(item.plane)
                publisher.send_frame(
                    frame_header(publisher.session, item, seq, source.formats[item.plane], offset),
                    item.pixels,
                )
                sent[item.plane] += 1
                last_seq[item.plane] = seq
                pacing.between_frames()
                duration = max(duration, item.acq_time)
                if time.monotonic() >= next_beat:
                    publisher.heartbeat()
                    next_beat = time.monotonic() + HEARTBEAT_S
            if not options.loop or should_stop():
                return sent
            offset += duration + _frame_interval(source)
    except Exception as e:  # a source that fails mid-stream: said, never "done" (an interrupt,
        # how a live run is ended, is not a failure)
        aborted = f"aborted: {e}"[:300]
        raise
    finally:
        with held():  # held already, unless a stop cut a wait's edge: the end always goes out
            pacing.stop()
            end = End(
                publisher.session,
                publisher.source,
                time.time(),
                sent,
                aborted,
                _unsent(source, sent, options),
            )
            publisher.send(end)
            publisher.ended = end  # repeated as it was for consumers that join after it


def _unsent(source, sent: dict[str, int], options: PaceOptions) -> dict[str, int] | None:
    """A recording's frames per plane not sent (the run stopped before its end), or None: all
    sent, or a source that cannot say (live). A replay stopped with Ctrl-C was audited
    "complete" with nothing said of the frames it never reached, and exported as a COMPLETE
    report (an independent test). A loop has no end, but its first pass has: stopped in it,
    the recording was not all sent (a loop was said whole however early it stopped, session
    77's review); ``sent`` counts every pass, so a later stop leaves nothing unsent."""
    counts = getattr(source, "counts", None)
    if counts is None:
        return None
    try:
        total = counts()
    except Exception:  # the end must go out whatever the source can say of itself
        return None
    left = {plane: n - sent.get(plane, 0) for plane, n in total.items()}
    return {plane: left[plane] for plane in PLANES if left.get(plane, 0) > 0} or None


def serve_resends(publisher: Publisher, flow: FlowServer, say, most: int = 3) -> None:
    """Give a restarted consumer the frames it missed, from the publisher's recent frames,
    ``most`` at a time (called between live frames, so the consumer keeps up)."""
    while flow.resend_requests:
        consumer, have = flow.resend_requests.pop(0)
        counts = publisher.resend(have)
        lost = [p for p, n in counts.items() if n < 0]
        resent = ", ".join(f"{max(n, 0)} {p}" for p, n in counts.items())
        say(
            f"{consumer} restarted: resent {resent} frame(s)"
            + (f"; older {', '.join(lost)} frames are no longer kept" if lost else "")
        )
    publisher.pump_resends(most)


def _frame_interval(source) -> float:
    fps = getattr(source, "fps", None)
    return 1.0 / fps if fps else 0.1


def frame_header(
    session: str, item: SourceFrame, seq: int, fmt: PlaneFormat, offset: float = 0.0
) -> FrameHeader:
    """The header a source publishes with a frame, stamped now. ``offset``: seconds of
    earlier loops, so that time runs on when a recording repeats."""
    return FrameHeader(
        session=session,
        plane=item.plane,
        seq=seq,
        frame=item.index,
        acq_time=offset + item.acq_time,
        send_time=time.time(),
        shape=(int(item.pixels.shape[0]), int(item.pixels.shape[1])),
        dtype=str(item.pixels.dtype),
        photometric=fmt.photometric,
        bits_stored=fmt.bits_stored,
        intensity=fmt.intensity,
        scale=fmt.scale,
    )


def _wait(publisher: Publisher, due: float | None, next_beat: float) -> float:
    """Sleep until ``due`` (monotonic), sending heartbeats meanwhile."""
    if due is None:
        return next_beat
    while True:
        now = time.monotonic()
        if now >= next_beat:
            publisher.heartbeat()
            next_beat = now + HEARTBEAT_S
        if now >= due:
            return next_beat
        with interruptible():
            time.sleep(min(due, next_beat) - now)


def _wait_until_ready(
    publisher: Publisher, options: PaceOptions, flow: FlowServer | None, say, hopeless=lambda: None
) -> None:
    """Hold the first frame until every consumer named is subscribed; ``hopeless`` says why
    waiting on is pointless (a consumer has exited), which ends the wait at once."""
    needed = set(options.wait_for) | set(options.ready_for)
    if not needed or flow is None:
        return
    started = time.monotonic()
    deadline = started + options.ready_timeout_s
    said = False
    while not needed <= flow.ready:
        missing = ", ".join(sorted(needed - flow.ready))
        if why := hopeless():
            raise MonitorError(why)
        if time.monotonic() > deadline:
            raise MonitorError(f"{missing} did not start within {options.ready_timeout_s:g} s")
        if not said and time.monotonic() - started > 3.0:
            say(f"waiting for {missing} to start before the first frame")
            said = True
        publisher.heartbeat()
        with interruptible():
            flow.poll(100)
    say(f"consumers ready: {', '.join(sorted(flow.ready))}")


def _wait_for_consumers(publisher, flow: FlowServer, options: PaceOptions, last_seq, next_beat, say) -> float:
    """At speed 0, hold the next frame while a live consumer is more than a window behind."""
    waited_since = time.monotonic()
    while True:
        flow.poll(0)
        serve_resends(publisher, flow, say)
        lagging = [
            c
            for c in options.wait_for
            for plane, seq in last_seq.items()
            if flow.behind(c, plane, seq) > options.window
            and time.monotonic() - flow.last_heard.get(c, waited_since) < options.ack_timeout_s
        ]
        if not lagging:
            return next_beat
        if time.monotonic() >= next_beat:
            publisher.heartbeat()
            next_beat = time.monotonic() + HEARTBEAT_S
        with interruptible():
            flow.poll(5)
