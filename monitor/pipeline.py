"""How the monitor's processes connect, in one place.

    source (this process) --frames--> analyzer --results--> logger, viewers
          \\------------------frames-------------------------> logger, viewers
    analyzer, logger --flow (ready, acks)--> source

The source binds the frames and flow endpoints, the analyzer binds the
results endpoint; everyone else connects, so any consumer can restart
without the source noticing. Endpoints default to loopback.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field

from monitor import __version__
from monitor.analyzer import run_analyzer
from monitor.errors import MonitorError
from monitor.flow import FlowServer
from monitor.io.transport import DEFAULT_FRAMES_ENDPOINT, DEFAULT_RESULTS_ENDPOINT, Publisher
from monitor.logger import run_logger
from monitor.replay import PaceOptions, publish

DEFAULT_FLOW_ENDPOINT = "tcp://127.0.0.1:5573"


@dataclass(frozen=True)
class Endpoints:
    frames: str = DEFAULT_FRAMES_ENDPOINT
    results: str = DEFAULT_RESULTS_ENDPOINT
    flow: str = DEFAULT_FLOW_ENDPOINT

    @staticmethod
    def private() -> Endpoints:
        """Unique IPC endpoints, for a self-contained run that must not collide with others."""
        base = f"ipc:///tmp/monitor-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return Endpoints(f"{base}-frames", f"{base}-results", f"{base}-flow")


@dataclass
class RunSpec:
    """What a run consists of."""

    session_dir: str | None
    level: str | None
    meta: dict = field(default_factory=dict)
    endpoints: Endpoints = field(default_factory=Endpoints)
    analyzer: bool = True
    stale_ms: float = 1000.0


def _orphaned(parent: int):
    """True once the process that started us has died (we were re-parented)."""
    return lambda: os.getppid() != parent


def _analyzer_main(endpoints: Endpoints, session: str, stale_ms: float, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the source decides when the run ends
    run_analyzer(
        endpoints.frames, endpoints.results, endpoints.flow, session, stale_ms, should_stop=_orphaned(parent)
    )


def _logger_main(endpoints: Endpoints, session_dir: str, meta: dict, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(
        run_logger(
            endpoints.frames,
            endpoints.results,
            session_dir,
            meta,
            endpoints.flow,
            should_stop=_orphaned(parent),
        )
    )


def run(source, spec: RunSpec, pace: PaceOptions, say=lambda m: print(m, file=sys.stderr)) -> int:
    """Start the consumers, publish the source through them, and report.

    Returns 0 when the run completed and (with a session) everything was
    logged; 3 when something was lost or a process failed.
    """
    session = uuid.uuid4().hex[:12]
    ctx = multiprocessing.get_context("spawn")
    children: dict[str, multiprocessing.Process] = {}
    wait_for = []
    if spec.analyzer:
        children["analyzer"] = ctx.Process(
            target=_analyzer_main, name="analyzer", args=(spec.endpoints, session, spec.stale_ms, os.getpid())
        )
        wait_for.append("analyzer")
    if spec.session_dir:
        meta = {"session": session, "level": spec.level, "software_version": __version__, **spec.meta}
        children["logger"] = ctx.Process(
            target=_logger_main, name="logger", args=(spec.endpoints, spec.session_dir, meta, os.getpid())
        )
        wait_for.append("logger")
    flow = FlowServer(spec.endpoints.flow)
    try:
        publisher = Publisher(spec.endpoints.frames, session=session, source="replay")
    except OSError as e:
        flow.close()
        raise MonitorError(str(e)) from None
    for child in children.values():
        child.start()
    interrupted = False

    def stop_requested() -> bool:
        dead = [n for n, c in children.items() if c.exitcode not in (None, 0)]
        if dead:
            say(f"stopping: {', '.join(dead)} exited unexpectedly")
        return interrupted or bool(dead)

    started = time.monotonic()
    try:
        sent = publish(
            source,
            publisher,
            PaceOptions(**{**pace.__dict__, "wait_for": tuple(wait_for)}),
            flow,
            stop_requested,
            say,
        )
    except KeyboardInterrupt:
        interrupted = True
        sent = None
        say("interrupted: ending the run")
    except MonitorError:
        for child in children.values():
            child.terminate()
            child.join(5)
        raise
    finally:
        publisher.close()
        flow.close()
    for name, child in children.items():
        child.join(timeout=30)
        if child.is_alive():
            say(f"{name} did not finish within 30 s; terminating it")
            child.terminate()
            child.join(5)
    elapsed = time.monotonic() - started
    codes = {name: child.exitcode for name, child in children.items()}
    if sent is not None:
        counts = ", ".join(f"{n} {p}" for p, n in sent.items())
        say(f"published {counts} frames in {elapsed:.1f} s")
    failed = {n: c for n, c in codes.items() if c != 0}
    if spec.session_dir:
        say(f"session logged in {spec.session_dir}" + (" (INCOMPLETE)" if "logger" in failed else ""))
    if failed:
        say("failed: " + ", ".join(f"{n} exit {c}" for n, c in failed.items()))
        return 3
    return 130 if interrupted else 0
