"""A live view's place in a run: seen by the source before the first frame, and heard by the
analyzer after the last one (an alarm acknowledged after the end is carried out and logged)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from monitor.audit import audit_json  # noqa: E402
from monitor.flow import FlowServer  # noqa: E402
from monitor.io.sources import DicomPairSource  # noqa: E402
from monitor.io.store import SessionStore  # noqa: E402
from monitor.io.transport import Publisher  # noqa: E402
from monitor.pipeline import Endpoints, RunSpec, run  # noqa: E402
from monitor.recordings import default_recording  # noqa: E402
from monitor.replay import PaceOptions  # noqa: E402
from monitor.viewer import MonitorWindow, QtCore  # noqa: E402


def test_a_view_says_it_is_ready_only_once_it_hears_the_source_and_the_analyzer(qtbot):
    """A frame or a result published before the view has subscribed is lost to it: it says
    "ready" on the source's flow endpoint only once it has heard both streams, and stops
    saying it once frames flow."""
    e = Endpoints.private()
    flow = FlowServer(e.flow)
    frames = Publisher(e.frames, session="t")
    results = Publisher(e.results, session="t", source="analyzer", role="results")
    window = MonitorWindow(e.frames, e.results, e.control, flow_endpoint=e.flow)
    qtbot.addWidget(window)
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # the source only: the analyzer's results not yet heard
            frames.heartbeat()
            qtbot.wait(50)
            flow.poll(0)
        assert window.frames.stats.heartbeats > 0
        assert "viewer" not in flow.ready
        deadline = time.monotonic() + 10
        while "viewer" not in flow.ready and time.monotonic() < deadline:
            frames.heartbeat()
            results.heartbeat()
            qtbot.wait(50)
            flow.poll(0)
        assert "viewer" in flow.ready
    finally:
        window.close()
        frames.close()
        results.close()
        flow.close()


@pytest.fixture
def acknowledged_after_the_end(qtbot, tmp_path):
    """The bundled posterior-leak case run with its live view (a real viewer process, offscreen
    Qt); once the recording has ended, a view attached only then shows what it saw, the
    operator presses Acknowledge in a second view, and then the system closes the first
    (SIGTERM). Returns (exit code, session folder, the operator's window, what the run said,
    the alarms the view attached after the end showed)."""
    rec = default_recording()
    session = tmp_path / "session"
    spec = RunSpec(str(session), "L1", endpoints=Endpoints.private(), viewer=True)
    said: list[str] = []
    outcome = {}
    source = DicomPairSource(rec.lateral, rec.ap)

    def replay():
        outcome["code"] = run(source, spec, PaceOptions(speed=4), say=said.append)

    runner = threading.Thread(target=replay, daemon=True)
    runner.start()
    operator = MonitorWindow(spec.endpoints.frames, spec.endpoints.results, spec.endpoints.control)
    qtbot.addWidget(operator)
    operator.show()
    try:
        qtbot.waitUntil(lambda: operator.state.ended is not None, timeout=60000)
        qtbot.waitUntil(lambda: any("acknowledged in the viewer" in line for line in said), timeout=30000)
        assert operator.state.alarms() and not any(a["acknowledged"] for a in operator.state.alarms())
        # a view attached after the end (a second screen, the view restarted): no result will
        # come; the standing alarms come on the analyzer's heartbeat
        late = MonitorWindow(spec.endpoints.frames, spec.endpoints.results, spec.endpoints.control)
        qtbot.addWidget(late)
        deadline = time.monotonic() + 5.0
        while not late.state.alarms() and time.monotonic() < deadline:
            qtbot.wait(50)
        late_alarms = late.state.alarms()
        late.close()
        qtbot.wait(1500)  # the operator acknowledges a while after the end
        qtbot.mouseClick(operator.ack, QtCore.Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: operator.state.said_after_end is not None, timeout=10000)
        said.append(f"view: {operator.state.said_after_end}")
        operator.send("level", "L2")  # no frame will be judged at L2: refused
        qtbot.waitUntil(
            lambda: "level: the recording has ended" in operator.state.said_after_end, timeout=5000
        )
        (viewer,) = [p for p in multiprocessing.active_children() if p.name == "viewer"]
        viewer.terminate()  # SIGTERM: the viewer closes its window as the operator would
        runner.join(60)
        # the run over, its analyzer gone: a second press is said to be lost, not silently dropped
        qtbot.waitUntil(lambda: not operator.analyzer_listening(), timeout=10000)
        qtbot.mouseClick(operator.ack, QtCore.Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "NOT DELIVERED" in operator.status_line.text(), timeout=2000)
        said.append(f"view: {operator.state.said_after_end}")
    finally:
        operator.close()
        source.close()
    assert not runner.is_alive()
    return outcome["code"], session, operator, said, late_alarms


def test_a_view_attached_after_the_end_shows_the_alarms_standing(acknowledged_after_the_end):
    *_, operator, _said, late_alarms = acknowledged_after_the_end
    shown = {(a["id"], a["frame"], a["acknowledged"]) for a in late_alarms}
    # every alarm the operator's view still shows at the end of the run stood then, unacknowledged
    assert shown and {a[0] for a in shown} >= {a["id"] for a in operator.state.alarms()}
    assert not any(acknowledged for *_, acknowledged in shown), shown
    assert any(a["kind"] == "extravasation" and a["priority"] == "high" for a in late_alarms), late_alarms


def test_an_alarm_acknowledged_after_the_end_is_carried_out_and_logged(acknowledged_after_the_end):
    code, session, operator, said, _late = acknowledged_after_the_end
    assert code == 0, said
    assert "consumers ready: analyzer, logger, viewer" in said  # no frame before the view listened
    first, second = [line for line in said if line.startswith("view: ")]
    assert "alarm(s) acknowledged" in first, first
    assert operator.banner.text().startswith("ACKNOWLEDGED"), operator.banner.text()
    assert "ACKNOWLEDGE NOT DELIVERED: the analyzer has stopped" in second, second
    store = SessionStore.open(session)
    try:
        last_frame = max(r.body["acq_time"] for r in store.records("result"))
        events = store.events()
        (ack,) = [e for e in events if e["event"] == "acknowledge"]
        acknowledged = [r for r in store.records("alarm") if r.body["state"] == "acknowledged"]
        report = audit_json(store, verify_images=False)
    finally:
        store.close()
    assert ack["source"] == "viewer"
    # on the stream's clock run on past the last frame at the rate the replay ran (4x, less on a
    # loaded machine; never under 1): pressed 1.5 s or more after the end
    assert ack["acq_time"] > last_frame + 1.5, (ack["acq_time"], last_frame)
    assert acknowledged and all(r.body["acq_time"] == ack["acq_time"] for r in acknowledged)
    assert not any(e["event"] == "level" for e in events), "a level started after the end"
    assert report["levels"] and all(level["level"] == "L1" for level in report["levels"])
    assert report["integrity"]["intact"], report["integrity"]  # signed again after the acknowledge
    alarms = [a for level in report["levels"] for a in level["alarms"]]
    assert any(a["acknowledged_after_s"] is not None for a in alarms)


def test_the_stream_clock_runs_on_at_the_rate_the_source_paced_it():
    """After the end, stream time = the last frame's + the wall time since it was sent, times
    the rate the source sent frames at (a replay at 4x: 4 stream seconds per second)."""
    from monitor.analyzer import StreamClock

    def bracketed(clock: StreamClock, last_acq: float, last_sent: float, rate: float) -> None:
        """The clock read now lies between the stream times expected just before and just after
        the reading (a loaded machine may pause the test between the two: no fixed tolerance)."""
        before = last_acq + (time.time() - last_sent) * rate
        read = clock.at(time.monotonic())
        after = last_acq + (time.time() - last_sent) * rate
        assert before - 1e-3 <= read <= after + 1e-3, (before, read, after)

    now = time.time()
    clock = StreamClock(first_acq=0.0, first_arrival=now - 4.0)
    clock.tick(8.0, now - 2.0)  # 8 stream seconds sent over 2 wall seconds
    assert clock.rate() == pytest.approx(4.0)
    bracketed(clock, 8.0, now - 2.0, 4.0)
    live = StreamClock(first_acq=100.0, first_arrival=now - 11.0)
    live.tick(110.0, now - 1.0)
    bracketed(live, 110.0, now - 1.0, 1.0)
    just_started = StreamClock(first_acq=0.0, first_arrival=now - 0.2)
    just_started.tick(5.0, now - 0.1)  # under half a second of stream: no rate yet, 1
    assert just_started.rate() == 1.0


def test_a_view_attached_after_an_alarm_was_raised_shows_it(qtbot, tmp_path):
    """A view opened mid-level (a second screen, or the view restarted after a crash) never
    heard the change that raised an alarm still standing. The bundled posterior-leak case runs
    at half its recorded rate; once a first view has heard the 5 mm alarm raised (frame 10, well
    before the leak at frame 37), a second view attaches: within a few seconds, and before the
    recording ends, it shows that alarm too (the analyzer sends the standing alarms with a
    result about once a second), unacknowledged, in its banner."""
    rec = default_recording()
    spec = RunSpec(str(tmp_path / "session"), "L1", endpoints=Endpoints.private())
    e = spec.endpoints
    outcome = {}
    source = DicomPairSource(rec.lateral, rec.ap)
    first = MonitorWindow(e.frames, e.results, e.control)
    qtbot.addWidget(first)
    runner = threading.Thread(
        target=lambda: outcome.update(code=run(source, spec, PaceOptions(speed=0.5), say=lambda m: None)),
        daemon=True,
    )
    runner.start()
    late = None
    try:

        def proximity(window):
            return [a for a in window.state.alarms() if a["kind"] == "proximity" and a["priority"] == "high"]

        qtbot.waitUntil(lambda: bool(proximity(first)), timeout=30000)
        (raised,) = proximity(first)
        late = MonitorWindow(e.frames, e.results, e.control)
        qtbot.addWidget(late)
        qtbot.waitUntil(lambda: bool(proximity(late)), timeout=5000)
        assert late.state.ended is None, "the recording ended before the late view showed the alarm"
        (shown,) = proximity(late)
        assert (shown["id"], shown["frame"], shown["acknowledged"]) == (raised["id"], raised["frame"], False)
        assert raised["frame"] < 37, raised  # raised before the late view came, not after
        priority, text = late.state.banner()
        assert priority == "high" and "mm from the wall" in text, (priority, text)
        runner.join(60)
    finally:
        first.close()
        if late is not None:
            late.close()
        source.close()
    assert not runner.is_alive()
