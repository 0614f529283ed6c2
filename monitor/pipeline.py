"""How the monitor's processes connect, in one place.

    source (this process) --frames--> analyzer --results--> logger, viewers
          \\------------------frames-------------------------> logger, viewers
    analyzer, logger --flow (ready, acks)--> source
    viewers, operator --control (commands)--> analyzer

The source binds the frames and flow endpoints, the analyzer binds the
results and control endpoints; everyone else connects, so any consumer can
restart without the source noticing. Endpoints default to loopback.

This process also supervises: an analyzer or logger that dies (a crash, a
SIGKILL) is started again at once, continues the same session log, and gets
back what it needs from it (the analyzer its baseline and alarms) or from the
source (the logger the frames it missed).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from monitor import __version__
from monitor.analyzer import run_analyzer
from monitor.errors import MonitorError
from monitor.flow import FlowServer
from monitor.io import security
from monitor.io.security import SERVER as SERVER_KEY
from monitor.io.store import DB_NAME, SessionStore
from monitor.io.transport import (
    DEFAULT_CONTROL_ENDPOINT,
    DEFAULT_FLOW_ENDPOINT,
    DEFAULT_FRAMES_ENDPOINT,
    DEFAULT_RESULTS_ENDPOINT,
    Publisher,
    check_endpoint,
    probe_bind,
)
from monitor.logger import run_logger
from monitor.messages import End
from monitor.replay import PaceOptions, publish, serve_resends


@dataclass(frozen=True)
class Endpoints:
    frames: str = DEFAULT_FRAMES_ENDPOINT
    results: str = DEFAULT_RESULTS_ENDPOINT
    flow: str = DEFAULT_FLOW_ENDPOINT
    control: str = DEFAULT_CONTROL_ENDPOINT

    @staticmethod
    def private() -> Endpoints:
        """Unique IPC endpoints, for a self-contained run that must not collide with others: in
        this user's runtime directory (0700, :func:`monitor.io.runs.runtime_dir`), where no other
        user can connect to read the frames or send commands. (They were in /tmp, whose sockets
        other users can reach, and stayed there after a killed run.)"""
        from monitor.io import runs

        e = runs.private_endpoints()
        return Endpoints(e["frames"], e["results"], e["flow"], e["control"])

    def args(self) -> list[str]:
        """The command-line options that name these endpoints (for a `monitor` subprocess)."""
        return [
            *("--frames-endpoint", self.frames, "--results-endpoint", self.results),
            *("--flow-endpoint", self.flow, "--control-endpoint", self.control),
        ]


@dataclass
class RunSpec:
    """What a run consists of."""

    session_dir: str | None
    level: str | None
    meta: dict = field(default_factory=dict)
    endpoints: Endpoints = field(default_factory=Endpoints)
    analyzer: bool = True
    viewer: bool = False  # open the live view too; the run ends when the source does, the window stays
    or_mode: bool = False  # the live view full screen, legible from 2 m (monitor.viewer.OR_FONTS)
    stale_ms: float = 1000.0
    analysis: dict = field(default_factory=dict)  # flat settings: AnalysisConfig.from_settings
    keep_bytes: int = 512 * 2**20  # recent frames the source keeps for a restarted logger
    restarts: int = 3  # per process, before the run gives up on it
    # said once the run is known to start (after the checks that refuse it in one line)
    warnings: tuple[str, ...] = ()
    # a logged session's operator commands, carried out again where they came (a replay of it:
    # SessionSource.logged_commands; monitor.analyzer.AnalyzerNode)
    replayed: tuple = ()


def _orphaned(parent: int):
    """True once the process that started us has died (we were re-parented)."""
    return lambda: os.getppid() != parent


def _analyzer_main(
    endpoints: Endpoints,
    session: str,
    stale_ms: float,
    session_dir: str | None,
    level,
    parent: int,
    analysis: dict | None = None,
    after_end: tuple | None = None,
    replayed: tuple = (),
) -> None:
    """``after_end``: (finished, released) multiprocessing Events, when a live view is open
    (see ``monitor.analyzer.AfterEnd``); ``replayed``: RunSpec's."""
    from monitor.analyzer import AfterEnd, VisionAnalysis
    from monitor.vision.analysis import AnalysisConfig

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the source decides when the run ends
    stop = []  # a SIGTERM once its part is done (staying on for the view): let go, exit 0

    def terminated(_signum, _frame):
        if after_end is not None and after_end[0].is_set():
            stop.append(True)
        else:  # while it has work: a death, which the supervisor sees and restarts
            sys.exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, terminated)
    orphaned = _orphaned(parent)
    linger = None if after_end is None else AfterEnd(after_end[0].set, after_end[1].is_set)
    run_analyzer(
        endpoints.frames,
        endpoints.results,
        endpoints.flow,
        session,
        stale_ms,
        should_stop=lambda: bool(stop) or orphaned(),
        session_dir=session_dir,
        control_endpoint=endpoints.control,
        level=level,
        analysis=VisionAnalysis(AnalysisConfig.from_settings(analysis), level),
        after_end=linger,
        replayed=replayed,
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


def exit_said(code: int) -> str:
    """A process's exit code as the run says it: "signal 9", "exit 1"."""
    return f"signal {-code}" if code < 0 else f"exit {code}"


class Supervisor:
    """Starts the consumers (analyzer, logger) and restarts one that dies, at most
    ``max_restarts`` times each: the one place a run decides what a child's exit means."""

    def __init__(self, plans: dict[str, tuple], ctx, max_restarts: int, say, finished: dict | None = None):
        """``finished``: name -> an Event a consumer sets when it has done its part but stays
        on (the analyzer while a live view is open): from then on it counts as finished."""
        self.plans = plans  # name -> (target, args): how to (re)start each consumer
        self.finished = finished or {}
        self.ctx = ctx
        self.max_restarts = max_restarts
        self.say = say
        self.restarts = dict.fromkeys(plans, 0)
        self.children = {name: self._start(name) for name in plans}

    def _start(self, name: str) -> multiprocessing.Process:
        if name in self.finished:  # started anew: it has not done its part yet
            self.finished[name].clear()
        target, args = self.plans[name]
        child = self.ctx.Process(target=target, name=name, args=args)
        child.start()
        return child

    def revive(self, source_ended: bool) -> str | None:
        """Restart each consumer that has died. Returns why the run must stop (one died
        once too often while the source runs), or None.

        While the source runs, any exit is a death: nothing ends on its own before the
        source's end. After it, exit 0 (finished) and 3 (the logger's "incomplete") are a
        consumer's own verdicts; only a signal or a crash (exit 1) is a death, and one past
        its restarts is left to the grace period rather than stopping anything."""
        for name, child in list(self.children.items()):
            code = child.exitcode
            if code in (None, 0):
                continue
            if source_ended:
                if not (code < 0 or code == 1) or self.restarts[name] >= self.max_restarts:
                    continue
                self.restarts[name] += 1
                how = f"signal {-code}" if code < 0 else "a crash"
                self.say(f"{name} died ({how}) after the source ended; restarting it")
            else:
                how = exit_said(code)
                if self.restarts[name] >= self.max_restarts:
                    return f"{name} died ({how}) after {self.restarts[name]} restart(s)"
                self.restarts[name] += 1
                self.say(f"{name} died ({how}); restarting it ({self.restarts[name]} of {self.max_restarts})")
            self.children[name] = self._start(name)
        return None

    def running(self) -> bool:
        """Whether a consumer is still at work (alive, and not finished while staying on)."""
        return bool(self.working())

    def working(self) -> list[str]:
        return [
            name
            for name, child in self.children.items()
            if child.is_alive() and not (name in self.finished and self.finished[name].is_set())
        ]


def _let_consumers_finish(supervisor: Supervisor, publisher, flow, sent, say, grace_s: float = 30.0) -> None:
    """After the source's end: wait for the consumers, still restarting one that is killed,
    answering its resend request and repeating the end every second, so that a crash now
    loses nothing either. A consumer still busy ``grace_s`` after the last restart is
    terminated."""
    deadline = time.monotonic() + grace_s
    next_end = time.monotonic() + 1.0
    while supervisor.running() and time.monotonic() < deadline:
        before = sum(supervisor.restarts.values())
        supervisor.revive(source_ended=True)
        if sum(supervisor.restarts.values()) > before:
            deadline = time.monotonic() + grace_s
        publisher.heartbeat()  # a restarted consumer says it is ready once it hears the source
        flow.poll(200)
        if sent is not None:
            serve_resends(publisher, flow, say, most=8)  # 40 frames/s while the consumers finish
        # the end again, for whoever joined after it, as publish sent it (its reason, what it left
        # unsent): also after a Ctrl-C before the first frame, which the consumers still starting
        # had not heard; they waited for it until terminated 30 s on, the log left INCOMPLETE
        end = publisher.ended or (
            None if sent is None else End(publisher.session, publisher.source, time.time(), sent)
        )
        if end is not None and time.monotonic() >= next_end and not publisher.resends_pending:
            publisher.send(end)
            next_end = time.monotonic() + 1.0
    working = supervisor.working()  # not one that has finished and stays on for the view
    for name, child in supervisor.children.items():
        if name in supervisor.finished and name not in working and child.is_alive():
            continue  # let go with the view (_release)
        if name in working:
            say(f"{name} did not finish within {grace_s:g} s; terminating it")
            child.terminate()
        child.join(5)


def _viewer_main(endpoints: Endpoints, or_mode: bool = False) -> None:
    from monitor.viewer import run_viewer

    # Ctrl-C reaches the whole process group: the run decides (the first one ends a live source,
    # the window staying for acknowledges; a second closes it, _outcome)
    run_viewer(
        endpoints.frames,
        endpoints.results,
        endpoints.control,
        or_mode=or_mode,
        flow_endpoint=endpoints.flow,
        close_on_interrupt=False,
    )


def run(source, spec: RunSpec, pace: PaceOptions, say=lambda m: print(m, file=sys.stderr)) -> int:
    """Start the consumers, publish the source through them, and report.

    Returns 0 when the run completed and (with a session) everything was
    logged; 3 when something was lost or a process failed.
    """
    # Over 60 lines on purpose: the run's lifetime (start, publish, drain, sign) in one place,
    # so that every way out (an interrupt, a failed source, a consumer dead too often) is
    # seen beside the sockets and processes it must release.
    _preflight(spec)
    session = uuid.uuid4().hex[:12]
    ctx = multiprocessing.get_context("spawn")
    # With a live view, the analyzer stays on after the end until the window closes, so that
    # an alarm acknowledged then is carried out and logged (AfterEnd)
    after_end = (ctx.Event(), ctx.Event()) if spec.viewer and spec.analyzer else None
    plans = _consumer_plans(spec, session, after_end)
    wait_for = list(plans)
    flow = FlowServer(spec.endpoints.flow)
    try:
        publisher = Publisher(
            spec.endpoints.frames, session=session, source="replay", keep_bytes=spec.keep_bytes
        )
    except MonitorError:
        flow.close()
        raise
    for warning in spec.warnings:  # the run starts: nothing above refused it
        say(f"warning: {warning}")

    supervisor = Supervisor(
        plans, ctx, spec.restarts, say, finished={"analyzer": after_end[0]} if after_end else None
    )
    viewer = None
    if spec.viewer:
        viewer = ctx.Process(target=_viewer_main, name="viewer", args=(spec.endpoints, spec.or_mode))
        viewer.start()
    interrupted = False
    failure: Exception | None = None

    def stop_requested() -> bool:
        """Restart a consumer that died; stop once one has died too often."""
        why = _revive_while_streaming(supervisor, flow)
        if why:
            say(f"stopping: {why}")
            return True
        return interrupted

    started = time.monotonic()
    try:
        sent = publish(
            source,
            publisher,
            PaceOptions(
                **{
                    **pace.__dict__,
                    "wait_for": tuple(wait_for),
                    # the view sees the baseline: no frame before it has subscribed
                    "ready_for": (*pace.ready_for, *(["viewer"] if viewer is not None else [])),
                }
            ),
            flow,
            stop_requested,
            say,
            hopeless=lambda: _hopeless_start(supervisor, viewer),
        )
    except KeyboardInterrupt:
        interrupted = True
        sent = None
        say("interrupted: ending the run")
    except Exception as e:
        # The source failed (a frame that cannot be decoded, consumers that never started):
        # its end said "aborted: ...". Give the consumers a moment to log that, so the
        # session says why it is incomplete, then report the failure.
        failure, sent = e, None
    try:
        grace = 5.0 if failure is not None else 30.0
        _let_consumers_finish(supervisor, publisher, flow, sent, say, grace)
    finally:
        publisher.close()
        flow.close()
        signed = _sign_when_written(spec, supervisor, say)
    try:
        if failure is not None:
            if viewer is not None:
                viewer.terminate()
            raise failure
        if sent is not None:
            counts = ", ".join(f"{n} {p}" for p, n in sent.items())
            say(f"published {counts} frames in {time.monotonic() - started:.1f} s")
        return _outcome(spec, supervisor, viewer, interrupted, signed, say, after_end)
    finally:  # whatever way out: the analyzer let go, the log signed as it now ends
        if after_end is not None and not after_end[1].is_set():
            _release(after_end, supervisor, spec, say)


def _hopeless_start(supervisor: Supervisor, viewer) -> str | None:
    """Why waiting on for the consumers to start is pointless, or None: the view has exited, or
    a consumer has died before the first frame. Such a death ends the run at once, naming it
    (before session 72 it was waited out for 20 s and read as "analyzer, logger did not start").
    It is not restarted: an analyzer restarted before the first frame could leave the logger
    deaf to its results (the log then incomplete, "no end message from the analyzer": 3 of 5
    runs of a test of it, session 72), and with nothing analysed yet, starting the run again
    loses nothing."""
    if viewer is not None and viewer.exitcode is not None:
        return f"the viewer exited (code {viewer.exitcode}) before it subscribed"
    for name, child in supervisor.children.items():
        if (code := child.exitcode) is not None:
            return (
                f"{name} died ({exit_said(code)}) while starting, before the first frame; nothing was"
                " analysed: start again"
            )
    return None


def _revive_while_streaming(supervisor: Supervisor, flow: FlowServer) -> str | None:
    """:meth:`Supervisor.revive` while the source runs, each consumer restarted marked rejoined
    in the flow: not waited for frame by frame until it acknowledges one. A consumer that died
    before its first acknowledgement was waited for forever at speed 0 (review of session 72):
    the frames it missed were never its to acknowledge."""
    before = dict(supervisor.children)
    why = supervisor.revive(source_ended=False)
    flow.rejoined.update(name for name, child in supervisor.children.items() if before.get(name) is not child)
    return why


def _release(after_end, supervisor: Supervisor, spec: RunSpec, say) -> bool:
    """Let an analyzer staying on for the view go (the window closed, or the run failed) and
    sign the log again if it wrote to it after the first signing (an acknowledge after the
    end). Returns whether the log is signed as it now ends."""
    if after_end is None:
        return True
    after_end[1].set()
    analyzer = supervisor.children.get("analyzer")
    if analyzer is not None:
        analyzer.join(10)
        if analyzer.is_alive():
            say("the analyzer did not stop within 10 s of the view closing; terminating it")
            analyzer.terminate()
            analyzer.join(5)
    return _sign_when_written(spec, supervisor, say)


def _sign_when_written(spec: RunSpec, supervisor: Supervisor, say) -> bool:
    """Sign the session log, if any, once no consumer can append to it but one staying on
    for the view (signed again when it goes, ``_release``); False (said) when one still runs
    (a second interrupt during the drain) or it could not be signed."""
    if not spec.session_dir:
        return True
    writing = supervisor.working()
    if writing:
        say(f"the session log is not signed: {', '.join(writing)} still running")
        return False
    return _sign(Path(spec.session_dir), say)


def _preflight(spec: RunSpec) -> None:
    """What would fail in a child, said here in one line before any process starts: the
    endpoints, what the analyzer will bind, and the keys the children will hold
    (``monitor.io.security``)."""
    for role in ("frames", "results", "flow", "control"):
        check_endpoint(getattr(spec.endpoints, role), role)
    security.require(
        [
            SERVER_KEY,
            *(["analyzer"] if spec.analyzer else []),
            *(["logger"] if spec.session_dir else []),
            *(["viewer"] if spec.viewer else []),
        ]
    )
    if spec.analyzer:  # as the analyzer will bind them (CURVE): a view may be connecting already
        probe_bind(spec.endpoints.results, "results")
        probe_bind(spec.endpoints.control, "control")


def _consumer_plans(spec: RunSpec, session: str, after_end: tuple | None = None) -> dict[str, tuple]:
    """name -> (target, args): how to (re)start each consumer of the run."""
    plans: dict[str, tuple] = {}
    if spec.analyzer:
        plans["analyzer"] = (
            _analyzer_main,
            (
                spec.endpoints,
                session,
                spec.stale_ms,
                spec.session_dir,
                spec.level,
                os.getpid(),
                spec.analysis,
                after_end,
                spec.replayed,
            ),
        )
    if spec.session_dir:
        # One session, one log: appending a second run (another patient, a QA replay pointed
        # at a live session's folder) would merge two records into one "complete" one.
        if (Path(spec.session_dir) / DB_NAME).exists():
            raise MonitorError(
                f"{spec.session_dir}: already holds a session log (in use or closed); "
                "give a new --session directory"
            )
        _check_session_dir(Path(spec.session_dir))
        meta = {"session": session, "level": spec.level, "software_version": __version__, **spec.meta}
        plans["logger"] = (_logger_main, (spec.endpoints, spec.session_dir, meta, os.getpid()))
    return plans


def _check_session_dir(folder: Path) -> None:
    """Refuse, before anything starts, a session directory the logger could not write: a file,
    a folder that cannot be made, one not writable. The logger found it out itself and died in
    two tracebacks, the run saying both that logging failed and that the logger was restarted
    (an independent test's --session naming a file). Made here if it does not exist."""
    if folder.exists() and not folder.is_dir():
        raise MonitorError(f"{folder}: is a file, not a directory; give a new --session directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MonitorError(f"{folder}: cannot create the session directory ({e.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MonitorError(f"{folder}: cannot write the session log there (no permission)")


def _outcome(
    spec: RunSpec, supervisor: Supervisor, viewer, interrupted: bool, signed: bool, say, after_end=None
) -> int:
    """The run's exit status, once the source has ended and the consumers are done: 3 when a
    process failed or the log is not signed, 4 when a level was not monitored, 130 when
    interrupted, else 0; each said. Waits for the viewer window to close, the analyzer
    taking the operator's commands (acknowledge) until it does."""
    # Over 60 lines on purpose: every way a run can end is judged here, in the order the
    # operator hears about it (the log, the levels not monitored, the view, the failures).
    children = supervisor.children
    logger_code = children["logger"].exitcode if "logger" in children else 0
    unmonitored = []
    if spec.session_dir:
        say(f"session logged in {spec.session_dir}" + (" (INCOMPLETE)" if logger_code != 0 else ""))
        unmonitored = _unmonitored_levels(Path(spec.session_dir))
        for line in unmonitored:
            say(line)
    if viewer is not None and viewer.is_alive():  # a live source ended by Ctrl-C too
        say(
            "the source has ended; alarms can still be acknowledged in the viewer; close its window to"
            " finish" + (" (Ctrl-C again closes it)" if interrupted else "")
        )
        try:
            viewer.join()
        except KeyboardInterrupt:  # Ctrl-C, or a service manager's stop: the window is closed for us
            interrupted = True
            say("interrupted: closing the viewer")
            viewer.terminate()  # its SIGTERM handler closes the window as the operator would
            viewer.join(10)
    if after_end:  # signed again if the analyzer logged anything after the first signing
        signed = _release(after_end, supervisor, spec, say)
    codes = {name: child.exitcode for name, child in children.items()}
    failed = {n: c for n, c in codes.items() if c != 0}
    if viewer is not None and viewer.exitcode not in (0, None) and not interrupted:
        failed["viewer"] = viewer.exitcode  # the operator saw no window: not a clean run
    if failed:
        say("failed: " + ", ".join(f"{n} exit {c}" for n, c in failed.items()))
        return 3
    if not signed:
        return 3
    if unmonitored:  # before the interrupt: Ctrl-C is how a live grab ends
        return 4
    return 130 if interrupted else 0


def _sign(session_dir: Path, say) -> bool:
    """Sign the log's end now that every writer is done (monitor.io.signing); False if it
    could not be (the audit will call the log untrusted, so the run says so too)."""
    if not (session_dir / DB_NAME).exists():
        return True
    try:
        store = SessionStore.open(session_dir)
        try:
            store.sign()
        finally:
            store.close()
    except (MonitorError, OSError) as e:
        say(f"the session log could not be signed: {e}")
        return False
    from monitor.audit import record_digest

    try:  # for the QA summary, which then need not read the log
        record_digest(session_dir)
    except (MonitorError, OSError) as e:  # the log is signed and whole: only slower to summarise
        say(f"the session's summary digest could not be written: {e}")
    return True


def _unmonitored_levels(session_dir: Path) -> list[str]:
    """One "NOT MONITORED" line per level of the logged session whose safety rules went
    unevaluated on too many frames (monitor.audit.monitoring), or that analysed none."""
    from monitor.audit import NOT_RECORDED, level_reports

    try:
        store = SessionStore.open(session_dir)
    except MonitorError as e:
        return [f"NOT MONITORED: the session log cannot be read back ({e})"]
    try:
        levels = level_reports(store, store.meta().get("level"))
    finally:
        store.close()
    if not levels:
        return ["NOT MONITORED: no frame was analysed"]
    return [
        f"NOT MONITORED: level {lv['level'] or NOT_RECORDED}: " + "; ".join(lv["monitoring"]["reasons"])
        for lv in levels
        if lv["monitoring"]["monitored"] is False
    ]
