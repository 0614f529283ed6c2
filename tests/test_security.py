"""Who may talk to a monitor (issue 24, finding B): only holders of this installation's
CURVE keys, each known by its key. Real sockets, real key files, a real analyzer."""

from __future__ import annotations

import contextlib
import os
import stat
import time

import numpy as np
import pytest
import zmq

from monitor.errors import MonitorError
from monitor.flow import FlowClient, FlowServer
from monitor.io import security
from monitor.io.store import SessionStore
from monitor.io.transport import CommandSender, Frame, Publisher, Subscriber
from monitor.messages import Command, FrameHeader, encode
from monitor.pipeline import Endpoints, RunSpec, run
from monitor.recordings import default_recording
from monitor.replay import PaceOptions


def _header(seq: int) -> FrameHeader:
    return FrameHeader("s1", "lateral", seq, seq, seq / 30, time.time(), (8, 8), "uint16", "MONOCHROME2", 12)


def _publish_until(pub: Publisher, receive, seconds: float = 3.0):
    """Publish a frame every 20 ms until ``receive`` returns something, or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < deadline:
        pub.send_frame(_header(seq), np.full((8, 8), seq, np.uint16))
        seq += 1
        got = receive()
        if got is not None:
            return got
    return None


def test_keys_are_made_once_per_installation_in_a_user_only_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("MONITOR_KEY_DIR", str(tmp_path / "install"))
    first = security.Keys()
    folder = tmp_path / "install" / "curve"
    assert first.folder == folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (security.SERVER, *security.CLIENTS):
        secret = folder / "private" / f"{name}.key_secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(first.pair(name).public) == 40  # Z85 of 32 bytes
    again = security.Keys()  # a second process reads the same keys, makes none
    assert again.pair("viewer") == first.pair("viewer")
    assert len({first.pair(n).public for n in security.CLIENTS}) == len(security.CLIENTS)


def test_a_key_directory_others_can_enter_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MONITOR_KEY_DIR", str(tmp_path / "install"))
    security.Keys()
    os.chmod(tmp_path / "install" / "curve", 0o755)
    with pytest.raises(MonitorError, match="only this user can enter"):
        security.Keys()


def test_a_subscriber_with_an_installation_key_receives_frames():
    endpoint = Endpoints.private().frames
    with Publisher(endpoint, session="s1") as pub, Subscriber(endpoint, key="viewer") as sub:
        got = _publish_until(pub, lambda: sub.receive(20))
    assert isinstance(got, Frame) and got.header.session == "s1"


@pytest.mark.parametrize("client", ["no CURVE", "a key not of this installation"])
def test_a_stranger_cannot_read_the_frames(client):
    endpoint = Endpoints.private().frames
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    if client != "no CURVE":  # knows the monitor's public key, but holds a key of its own
        sub.curve_publickey, sub.curve_secretkey = zmq.curve_keypair()
        sub.curve_serverkey = security.installation_keys().pair(security.SERVER).public
    sub.connect(endpoint)
    with Publisher(endpoint, session="s1") as pub, Subscriber(endpoint) as member:
        # the member's frames prove frames were flowing while the stranger was connected
        assert _publish_until(pub, lambda: member.receive(20)) is not None
        for seq in range(20):
            pub.send_frame(_header(1000 + seq), np.zeros((8, 8), np.uint16))
        assert not sub.poll(500)
    sub.close()
    ctx.term()


def test_a_subscriber_does_not_take_frames_from_a_publisher_without_the_monitors_key():
    """A process that binds where the monitor would (or that the viewer is pointed at) cannot
    feed it frames: the subscriber trusts only the installation's server key."""
    endpoint = Endpoints.private().frames
    ctx = zmq.Context()
    impostor = ctx.socket(zmq.PUB)
    impostor.curve_publickey, impostor.curve_secretkey = zmq.curve_keypair()
    impostor.curve_server = True
    impostor.setsockopt(zmq.LINGER, 0)
    impostor.bind(endpoint)
    from monitor.messages import encode_frame

    with Subscriber(endpoint) as sub:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            impostor.send_multipart(encode_frame(_header(1), np.zeros((8, 8), np.uint16)), copy=False)
            assert sub.receive(20) is None
    impostor.close()
    ctx.term()


def test_the_source_knows_a_consumer_by_its_key_not_by_the_name_it_writes():
    server = FlowServer(Endpoints.private().flow)
    liar = FlowClient(server.endpoint, "logger")
    liar.consumer = "analyzer"  # writes "analyzer" in every message, holds the logger's key
    deadline = time.monotonic() + 5
    while "logger" not in server.ready and time.monotonic() < deadline:
        liar.ready()
        server.poll(50)
    liar.ack("lateral", 7)
    while ("logger", "lateral") not in server.acked and time.monotonic() < deadline:
        server.poll(50)
    assert server.ready == {"logger"}
    assert server.acked == {("logger", "lateral"): 7}
    liar.close()
    server.close()


def test_a_command_is_credited_to_the_key_it_came_with(tmp_path):
    """The red team's viewer impersonation: the source a sender writes is ignored; a key
    that is not an operator's (the logger's) cannot command, nor can the OpenIGTLink
    bridge's do more than acknowledge; a stranger's PUSH never
    completes the handshake, so its "resume" never reaches the analyzer."""
    import threading

    from tests.test_pipeline import SyntheticSource
    from tests.test_session_log import _wait_for

    e = Endpoints.private()
    ctx = zmq.Context()
    stranger = ctx.socket(zmq.PUSH)
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect(e.control)
    operator = CommandSender(e.control, "operator")
    operator.source = "viewer"  # writes "viewer" in its commands, holds the operator's key
    logger = CommandSender(e.control, "logger")
    bridge = CommandSender(e.control, "igtl")  # the OpenIGTLink bridge's key: acknowledge only

    def operate():
        _wait_for(tmp_path / "s", "result", 4)
        operator.send("pause")
        logger.send("resume")
        bridge.send("resume")
        with contextlib.suppress(zmq.Again):  # queued, at most: its handshake never completes
            stranger.send_multipart(encode(Command("", "viewer", time.time(), "resume", None)), zmq.NOBLOCK)

    thread = threading.Thread(target=operate)
    thread.start()
    times = [i / 10 for i in range(40)]
    spec = RunSpec(str(tmp_path / "s"), "L1", endpoints=e)
    code = run(SyntheticSource(times), spec, PaceOptions(speed=1.0))
    thread.join()
    operator.close()
    logger.close()
    bridge.close()
    stranger.close()
    ctx.term()
    assert code == 4  # logged whole; flat synthetic frames hold no vertebra: NOT MONITORED
    store = SessionStore.open(tmp_path / "s")
    said = [(ev["source"], ev["event"], ev["detail"]) for ev in store.events() if ev["source"] != "analyzer"]
    store.close()
    assert ("operator", "pause") in [(who, event) for who, event, _ in said]
    rejected = [(who, detail) for who, event, detail in said if event == "rejected-command"]
    assert sorted(who for who, _ in rejected) == ["igtl", "logger"], said
    assert all("only the viewer and operator keys" in detail for _, detail in rejected)
    assert not any(who == "viewer" for who, _, _ in said)  # the written source is never believed
    assert not any(event == "resume" for _, event, _ in said)


def test_a_viewers_copy_of_the_keys_is_used_as_it_is_and_cannot_serve(tmp_path, monkeypatch):
    """What `monitor keys` tells a viewer on another machine to copy: the monitor's public
    key and the viewer's pair. Its first run must not make a monitor key of its own (that
    would replace the one it was given) and must refuse to serve frames."""
    import shutil

    monkeypatch.setenv("MONITOR_KEY_DIR", str(tmp_path / "room"))
    room = security.Keys()
    viewer_dir = tmp_path / "elsewhere" / "curve"
    (viewer_dir / "public").mkdir(parents=True, mode=0o700)
    (viewer_dir / "private").mkdir(mode=0o700)
    os.chmod(viewer_dir, 0o700)
    os.chmod(viewer_dir.parent, 0o700)
    shutil.copy(room.public_dir / "monitor.key", viewer_dir / "public")
    shutil.copy(room.private_dir / "viewer.key_secret", viewer_dir / "private")
    monkeypatch.setenv("MONITOR_KEY_DIR", str(tmp_path / "elsewhere"))
    copy = security.installation_keys()
    assert copy.pair("monitor") == security.KeyPair("monitor", room.pair("monitor").public, None)
    assert copy.pair("viewer") == room.pair("viewer")
    sock = zmq.Context.instance().socket(zmq.PUB)
    with pytest.raises(MonitorError, match="does not hold the monitor's secret key"):
        security.serve(sock)
    sock.close(0)


def test_a_missing_client_secret_is_refused_in_one_line_before_anything_starts(tmp_path, monkeypatch):
    """Found by review: with the analyzer's secret gone, the analyzer died in a traceback, was
    restarted three times, and the run ended "did not start within 20 s"."""
    import shutil

    from tests.conftest import monitor_cli

    keys = tmp_path / "keys"
    monkeypatch.setenv("MONITOR_KEY_DIR", str(keys))
    security.Keys()
    (keys / "curve" / "private" / "analyzer.key_secret").unlink()
    rec = default_recording()
    done = monitor_cli("replay", "--lateral", rec.lateral, "--headless", "--session", tmp_path / "s")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "no secret key for the analyzer" in done.stderr
    assert not (tmp_path / "s" / "session.sqlite").exists()
    shutil.rmtree(keys)


def test_a_pid_that_is_not_running_is_said_even_with_endpoints_given(tmp_path):
    """Found by review: `analyze --run PID --results-endpoint ...` with a wrong PID silently
    took the TCP defaults for the rest, which may be another monitor's."""
    from monitor.io import runs
    from tests.conftest import monitor_cli

    record = runs.register(runs.private_endpoints(), "a run")  # one monitor is running: this process
    try:
        done = monitor_cli("analyze", "--run", "1", "--results-endpoint", Endpoints.private().results)
    finally:
        runs.unregister(record)
    assert done.returncode == 1 and "no monitor with pid 1 is running" in done.stderr, done.stderr
