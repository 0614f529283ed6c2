"""The wire format and the ZeroMQ transport, over real sockets."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, replace

import numpy as np
import pytest
import zmq

from monitor.io import security
from monitor.io.transport import Publisher, Subscriber
from monitor.messages import FrameHeader, Heartbeat, MessageError, decode, encode_frame


def header(plane="lateral", seq=0, shape=(64, 80), dtype="uint16") -> FrameHeader:
    return FrameHeader(
        session="s1",
        plane=plane,
        seq=seq,
        frame=seq,
        acq_time=seq / 15,
        send_time=time.time(),
        shape=shape,
        dtype=dtype,
        photometric="MONOCHROME2",
        bits_stored=12,
        intensity="LIN",
        scale={"spacing_mm": [0.2, 0.2], "source": "dicom"},
    )


def pixels(seed=0, shape=(64, 80)):
    return np.random.default_rng(seed).integers(0, 4096, shape).astype(np.uint16)


@pytest.fixture()
def link():
    """A publisher on an ephemeral loopback port and a subscriber that is
    already receiving (heartbeats until the subscription has propagated)."""
    ctx = zmq.Context()
    pub = Publisher("tcp://127.0.0.1:*", session="s1", context=ctx)
    sub = Subscriber(pub.endpoint, context=ctx)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.heartbeat()
        if isinstance(sub.receive(50), Heartbeat):
            break
    else:
        pytest.fail("subscriber never connected")
    yield pub, sub
    sub.close()
    pub.close()
    ctx.term()


def test_frames_arrive_intact_in_order_for_both_planes(link):
    pub, sub = link
    sent = {}
    for i in range(5):
        for plane in ("lateral", "ap"):
            image = pixels(seed=i + (plane == "ap") * 10)
            sent[(plane, i)] = image.copy()
            pub.send_frame(header(plane, pub.next_seq(plane)), image)
    got = []
    while len(got) < 10:
        message = sub.receive(2000)
        assert message is not None, "timed out"
        if hasattr(message, "pixels"):
            got.append(message)
    for frame in got:
        h = frame.header
        assert np.array_equal(frame.pixels, sent[(h.plane, h.seq)])
        assert h.scale == {"spacing_mm": [0.2, 0.2], "source": "dicom"} and h.intensity == "LIN"
        assert frame.gap == 0
    assert [f.header.seq for f in got if f.header.plane == "ap"] == list(range(5))
    assert sub.stats.frames == 10 and not sub.stats.rejected and not sub.stats.dropped


def test_received_pixels_are_a_view_on_the_message_buffer_not_a_copy(link):
    pub, sub = link
    pub.send_frame(header(shape=(512, 512)), pixels(shape=(512, 512)))
    frame = sub.receive(2000)
    while not hasattr(frame, "pixels"):
        frame = sub.receive(2000)
    assert not frame.pixels.flags.owndata and not frame.pixels.flags.writeable


def test_malformed_messages_are_counted_and_skipped_and_good_ones_still_arrive():
    """A bare PUB socket sends what a broken or foreign source might."""
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    security.serve(raw)  # a broken source of this installation: it holds the monitor's key
    raw.bind("tcp://127.0.0.1:*")
    sub = Subscriber(raw.getsockopt_string(zmq.LAST_ENDPOINT), context=ctx)
    good = encode_frame(header(), pixels())
    good_bytes = [good[0], good[1], good[2].tobytes()]
    future = json.loads(good[1])
    future["v"] = 2
    short = [good[0], good[1], good[2].tobytes()[:-2]]
    deadline = time.monotonic() + 5
    while sub.stats.frames == 0 and time.monotonic() < deadline:  # wait for the subscription
        raw.send_multipart(good_bytes)
        sub.receive(50)
    assert sub.stats.frames > 0
    before = sub.stats.frames
    raw.send_multipart([b"frame.lateral", b"{not json", b"xx"])
    raw.send_multipart([good[0], json.dumps(future).encode(), good[2].tobytes()])
    raw.send_multipart(short)
    raw.send_multipart([b"\xff\xfe"])
    raw.send_multipart([b"frame.ap", good[1], good[2].tobytes()])  # header says lateral
    raw.send_multipart(good_bytes)
    frame = None
    while frame is None or not hasattr(frame, "pixels"):
        frame = sub.receive(2000)
        assert frame is not None, "the good frame after the bad ones never arrived"
    assert sub.stats.frames == before + 1
    assert sub.stats.rejected == {"garbled": 3, "version": 1, "size": 1}
    sub.close()
    raw.close()
    ctx.term()


def test_sequence_gaps_are_counted_as_dropped_frames(link):
    pub, sub = link
    for seq in (0, 1, 4, 5):
        pub.send_frame(header("lateral", seq), pixels())
    frames = []
    while len(frames) < 4:
        message = sub.receive(2000)
        assert message is not None
        if hasattr(message, "pixels"):
            frames.append(message)
    assert [f.gap for f in frames] == [0, 0, 2, 0]
    assert sub.stats.dropped == {"lateral": 2}


def test_a_late_subscriber_gets_frames_from_where_it_joins():
    ctx = zmq.Context()
    pub = Publisher("tcp://127.0.0.1:*", context=ctx)
    for _ in range(3):  # nobody listening yet: dropped by PUB, never blocks
        pub.send_frame(header(seq=pub.next_seq("lateral")), pixels())
    sub = Subscriber(pub.endpoint, context=ctx)
    received = None
    deadline = time.monotonic() + 5
    while received is None and time.monotonic() < deadline:
        pub.send_frame(header(seq=pub.next_seq("lateral")), pixels())
        message = sub.receive(50)
        received = message if hasattr(message, "pixels") else None
    assert received is not None and received.header.seq >= 3
    assert received.gap == 0  # the first frame a subscriber sees is not a gap
    sub.close()
    pub.close()
    ctx.term()


def test_a_subscriber_that_never_reads_does_not_block_the_publisher():
    ctx = zmq.Context()
    pub = Publisher("tcp://127.0.0.1:*", context=ctx)
    stalled = Subscriber(pub.endpoint, hwm=2, context=ctx)
    time.sleep(0.2)
    image = pixels(shape=(1024, 1024))
    started = time.monotonic()
    for _ in range(500):  # ~1 GB at 2 MB a frame; far beyond every buffer
        pub.send_frame(header(shape=(1024, 1024), seq=pub.next_seq("lateral")), image)
    assert time.monotonic() - started < 30
    stalled.close()
    pub.close()
    ctx.term()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"dtype": "float64"}, "garbled"),
        ({"shape": [0, 10]}, "garbled"),
        ({"shape": [10]}, "garbled"),
        ({"photometric": "RGB"}, "garbled"),
        ({"seq": "3"}, "garbled"),
        ({"send_time": float("nan")}, "garbled"),
        ({"v": None}, "version"),
    ],
)
def test_decode_rejects_each_bad_field(change, reason):
    parts = encode_frame(header(), pixels())
    raw = {**asdict(header()), **change}
    with pytest.raises(MessageError) as err:
        decode([parts[0], json.dumps(raw).encode(), parts[2].tobytes()])
    assert err.value.reason == reason


def test_encode_refuses_pixels_that_do_not_match_the_header():
    with pytest.raises(ValueError):
        encode_frame(replace(header(), shape=(10, 10)), pixels())


def _result_parts(standing) -> list[bytes]:
    """A result as the analyzer sends it, with ``standing`` as its standing alarms (raw)."""
    from monitor.messages import Result, encode

    result = Result("s", "lateral", 0, 12, 1.6, 1.0, 1.1, "ok", level="L1")
    topic, body = encode(result)
    return [topic, json.dumps({**json.loads(body), "standing_alarms": standing}).encode()]


STANDING = {"id": "L1/proximity/wall/high/10", "kind": "proximity", "priority": "high", "frame": 10}


def test_standing_alarms_cross_the_wire_and_garbled_ones_are_refused():
    alarm = {**STANDING, "plane": "lateral", "site": None, "active": True, "acknowledged": False}
    assert decode(_result_parts([alarm])).standing_alarms == [alarm]
    assert decode(_result_parts(None)).standing_alarms is None
    # on the analyzer's heartbeat too, when no result carries them (no frames, or after the end)
    from monitor.messages import Heartbeat, encode

    beat = Heartbeat("s", "analyzer", 1.5, 7, [alarm])
    assert (
        decode(encode(beat)) == beat
        and decode(encode(replace(beat, standing_alarms=None))).standing_alarms is None
    )

    def heartbeat_parts(standing):
        topic, body = encode(beat)
        return [topic, json.dumps({**json.loads(body), "standing_alarms": standing}).encode()]

    for garbled in (
        alarm,  # not a list
        [{**alarm, "active": "yes"}],
        [{k: v for k, v in alarm.items() if k != "acknowledged"}],
        [{**alarm, "id": 3}],
        [{**alarm, "frame": None}],  # the views sort on it
        [alarm] * 65,  # more than one frame's worth
    ):
        for parts in (_result_parts(garbled), heartbeat_parts(garbled)):
            with pytest.raises(MessageError) as err:
                decode(parts)
            assert err.value.reason == "garbled"


def test_the_levels_known_cleft_crosses_the_wire_as_a_boolean():
    """A result says whether the level has a cleft the operator knows of (true, false, or null
    from an analyzer that does not say); the "cleft" command carries true or false. Anything
    else is refused as garbled, never read as a cleft known or not."""
    from monitor.messages import COMMAND_TOPIC, Command, Result, encode

    for known in (True, False, None):
        result = Result("s", "lateral", 0, 12, 1.6, 1.0, 1.1, "ok", level="L1", known_cleft=known)
        assert decode(encode(result)).known_cleft is known
    command = Command("s", "viewer", 1.0, "cleft", True)
    assert decode(encode(command)) == command
    for bad in ("yes", 1, [True]):
        topic, body = encode(Result("s", "lateral", 0, 12, 1.6, 1.0, 1.1, "ok"))
        raw = [[topic, json.dumps({**json.loads(body), "known_cleft": bad}).encode()]]
        raw.append([COMMAND_TOPIC, json.dumps({**json.loads(encode(command)[1]), "value": bad}).encode()])
        for parts in raw:
            with pytest.raises(MessageError) as err:
                decode(parts)
            assert err.value.reason == "garbled"


@pytest.mark.parametrize("role", ["results", "control"])
def test_a_client_connecting_while_its_endpoint_is_probed_reaches_the_owner(tmp_path, role):
    """A view started before the run connects to the results and control endpoints while the
    run's preflight holds each for a moment (monitor.pipeline._preflight); it must then reach
    the analyzer that binds them. A probe that speaks another mechanism or socket type than the
    analyzer fails the client's handshake for good (libzmq does not retry a protocol error):
    CI saw a training run wait 60 s for a view that never heard a result."""
    from zmq.utils.monitor import recv_monitor_message

    from monitor.io.transport import CommandSender, bind_endpoint, probing

    endpoint = f"ipc://{tmp_path}/{role}"
    if role == "results":
        client = Subscriber(endpoint, role="results", key="viewer")
    else:
        client = CommandSender(endpoint, "viewer")
    owner, events = None, client.socket.get_monitor_socket()
    try:
        with probing(endpoint, role):
            handshake = {zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL}
            handshake |= {zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}
            seen, deadline = [], time.monotonic() + 10
            while not handshake & set(seen) and time.monotonic() < deadline:  # it meets the probe
                if events.poll(100):
                    seen.append(recv_monitor_message(events)["event"])
        client.socket.disable_monitor()
        events.close(0)
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED in seen, seen
        heard = False
        deadline = time.monotonic() + 10
        if role == "results":
            owner = Publisher(endpoint, session="s1", source="analyzer", role="results")
            while not heard and time.monotonic() < deadline:
                owner.heartbeat()
                heard = isinstance(client.receive(100), Heartbeat)
        else:
            owner = zmq.Context.instance().socket(zmq.PULL)  # as the analyzer binds it
            owner.setsockopt(zmq.LINGER, 0)
            bind_endpoint(owner, endpoint, "control")
            while not heard and time.monotonic() < deadline:  # sent again: one sent as the probe
                with contextlib.suppress(OSError):  # closed went down with its connection
                    client.send("acknowledge")
                heard = bool(owner.poll(200)) and b"acknowledge" in owner.recv()
        assert heard, f"the {role} client never reached the endpoint's owner after the probe"
    finally:
        client.close()
        if owner is not None:
            owner.close()


def test_an_end_says_what_a_stopped_recording_left_unsent_and_garbled_counts_are_refused():
    """A replay stopped before its recording's end says, on its end, the frames it never sent
    (the logger and the audit say the record covers only part of it)."""
    from monitor.messages import End, encode

    end = End("s", "replay", 2.5, {"lateral": 24, "ap": 24}, None, {"lateral": 24, "ap": 24})
    assert decode(encode(end)) == end and decode(encode(replace(end, unsent=None))).unsent is None
    topic, body = encode(end)
    for garbled in ([24], {"side": 3}, {"lateral": -1}, {"lateral": 2.5}, {"ap": "24"}, {"ap": True}):
        with pytest.raises(MessageError) as err:
            decode([topic, json.dumps({**json.loads(body), "unsent": garbled}).encode()])
        assert err.value.reason == "garbled"


def test_a_level_command_is_a_vertebral_level_or_refused():
    """The viewer's level box is editable, and the analyzer started any text of up to 16
    characters as a level (a review, session 77), which the QA summary then counted apart:
    a command's level is now held to what --level takes."""
    from monitor.messages import COMMAND_TOPIC

    def level(value):
        raw = {"v": 1, "kind": "command", "session": "s", "source": "viewer", "send_time": 1.0}
        return decode([COMMAND_TOPIC, json.dumps(raw | {"action": "level", "value": value}).encode()])

    assert [level(v).value for v in ("L2", "T12", "C7", "S1", "L6")] == ["L2", "T12", "C7", "S1", "L6"]
    for bad in ("XYZ", "l2", "L7", "T13", "L2 ", "", 2, None):
        with pytest.raises(MessageError) as err:
            level(bad)
        assert err.value.reason == "garbled" and "vertebral level" in str(err.value.detail), bad
