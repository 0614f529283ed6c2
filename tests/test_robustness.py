"""What a faulty file, a careless user or another local process can send must not end
monitoring silently (issue 24, findings C and E): bad messages are counted, never fatal;
a source that fails says so in its end, and the session is then incomplete."""

from __future__ import annotations

import json
import threading
import time

import pytest
import zmq

from monitor.errors import MonitorError, RecordingError
from monitor.flow import FlowServer
from monitor.io.sources import DicomPairSource, SourceFrame
from monitor.io.store import SessionStore
from monitor.pipeline import Endpoints, RunSpec, run
from monitor.recordings import default_recording
from monitor.replay import PaceOptions
from tests.test_audit import monitor_cli

GARBAGE = [
    b"not json",
    b"\xff\xfe",
    b"[]",
    json.dumps({"event": "ack", "seq": "abc"}).encode(),  # the red team's: killed the source at frame 17
    json.dumps({"consumer": "x", "event": "ack", "plane": "lateral", "seq": "abc"}).encode(),
    json.dumps({"consumer": "x", "event": "ack", "plane": "lateral", "seq": 10**30}).encode(),
    json.dumps({"consumer": "x", "event": "ack", "plane": "sagittal", "seq": 3}).encode(),
    json.dumps({"consumer": "x", "event": "ack", "plane": "lateral", "seq": True}).encode(),
    json.dumps({"consumer": "x" * 500, "event": "ready"}).encode(),
    json.dumps({"consumer": "x", "event": "ready", "have": {"lateral": "many"}}).encode(),
    json.dumps({"consumer": "x", "event": "ready", "have": [1, 2]}).encode(),
    json.dumps({"consumer": "x", "event": "shutdown"}).encode(),
]


def _push(endpoint: str, parts: list[bytes], ctx: zmq.Context) -> None:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(endpoint)
    for part in parts:
        sock.send(part)
    sock.close()


def test_the_flow_server_counts_garbage_and_keeps_what_is_well_formed():
    ctx = zmq.Context()
    server = FlowServer("tcp://127.0.0.1:*", context=ctx)
    good = [
        json.dumps({"consumer": "analyzer", "event": "ready", "have": {"lateral": 4}}).encode(),
        json.dumps({"consumer": "analyzer", "event": "ack", "plane": "lateral", "seq": 7}).encode(),
    ]
    _push(server.endpoint, GARBAGE + good, ctx)
    deadline = time.monotonic() + 5
    while server.rejected + len(server.acked) < len(GARBAGE) + 1 and time.monotonic() < deadline:
        server.poll(100)
    assert server.rejected == len(GARBAGE)
    assert server.ready == {"analyzer"} and server.acked == {("analyzer", "lateral"): 7}
    assert server.resend_requests == [("analyzer", {"lateral": 4})]
    assert server.behind("analyzer", "lateral", 5) == 0  # never negative
    server.close()
    ctx.term()


def test_garbage_on_the_flow_endpoint_during_a_run_changes_nothing(tmp_path):
    """The bundled case replayed while another process floods the source's flow endpoint."""
    rec = default_recording()
    e = Endpoints.private()
    ctx = zmq.Context()
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            _push(e.flow, GARBAGE, ctx)
            time.sleep(0.02)

    attacker = threading.Thread(target=flood)
    attacker.start()
    source = DicomPairSource(rec.lateral, rec.ap)
    try:
        spec = RunSpec(str(tmp_path / "s"), "L1", endpoints=e)
        code = run(source, spec, PaceOptions(speed=0), lambda m: None)
    finally:
        stop.set()
        attacker.join()
        source.close()
        ctx.term()
    assert code == 0
    summary = SessionStore.open(tmp_path / "s").meta()["summary"]
    assert summary["complete"], summary["problems"]
    assert summary["frames_logged"] == summary["results_logged"] == {"lateral": 48, "ap": 48}


def test_a_source_that_fails_mid_stream_leaves_a_session_that_says_so(tmp_path):
    """Its end message says "aborted", so the log is incomplete, with the reason, and the
    audit exits 3; it used to send a normal end and be logged complete."""

    class Failing(DicomPairSource):
        def frames(self):
            for item in super().frames():
                if (item.plane, item.index) == ("lateral", 20):
                    raise RecordingError("lateral.dcm: frame 20 could not be decoded (test)")
                yield SourceFrame(item.plane, item.index, item.acq_time, item.pixels)

    rec = default_recording()
    source = Failing(rec.lateral, rec.ap)
    with pytest.raises(RecordingError, match="frame 20"):
        run(source, RunSpec(str(tmp_path / "s"), "L1", endpoints=Endpoints.private()), PaceOptions(speed=0))
    source.close()
    done = monitor_cli("audit", tmp_path / "s", "--json")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert not report["complete"]
    assert "the source did not finish: aborted: lateral.dcm: frame 20 could not be decoded (test)" in report[
        "problems"
    ]


@pytest.mark.parametrize(
    "option, value", [("--speed", "nan"), ("--speed", "-1"), ("--speed", "inf"), ("--stale-ms", "nan")]
)
def test_nonsense_numbers_on_the_command_line_are_refused(option, value):
    rec = default_recording()
    done = monitor_cli("replay", "--lateral", rec.lateral, "--headless", option, value)
    assert done.returncode == 2 and f"argument {option}: must be" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_session_directory_that_already_holds_a_log_is_refused(tmp_path):
    """A QA replay pointed at a live (or closed) session's folder merged two patients into one
    "complete" record; now the second run is refused and the first log is untouched."""
    rec = default_recording()
    folder = tmp_path / "s"
    source = DicomPairSource(rec.lateral, rec.ap)
    assert run(source, RunSpec(str(folder), "L1", endpoints=Endpoints.private()), PaceOptions(speed=0)) == 0
    source.close()
    before = SessionStore.open(folder).count("frame")
    again = DicomPairSource(rec.lateral, rec.ap)
    with pytest.raises(MonitorError, match="already holds a session log"):
        run(again, RunSpec(str(folder), "L1", endpoints=Endpoints.private()), PaceOptions(speed=0))
    again.close()
    assert SessionStore.open(folder).count("frame") == before == 96
