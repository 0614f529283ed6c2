"""Benchmarks that print measured numbers (``monitor bench ...``); no pass or fail.

``transport``: throughput of 1024x1024 uint16 frames over tcp loopback and
ipc, ours against imagezmq (the usual way Python streams OpenCV images over
ZeroMQ; installed by scripts/setup, the "bench" extra), and end-to-end latency from a
frame's publication to its result reaching a subscriber, at 15 and 30
frames/s biplane with a viewer attached.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid

import numpy as np
import zmq

SIDE = 1024


def _endpoint(transport: str) -> str:
    if transport == "ipc":
        return f"ipc:///tmp/monitor-bench-{uuid.uuid4().hex[:8]}"
    with zmq.Context() as ctx, ctx.socket(zmq.REP) as s:  # find a free port
        port = s.bind_to_random_port("tcp://127.0.0.1")
    return f"tcp://127.0.0.1:{port}"


def _ours_sender(endpoint: str, flow_endpoint: str, n: int) -> None:
    """Publishes as fast as the receiver acknowledges, as ``monitor replay --speed 0`` does."""
    from monitor.flow import FlowServer
    from monitor.io.transport import Publisher
    from monitor.messages import FrameHeader

    frames = [np.full((SIDE, SIDE), i, np.uint16) for i in range(4)]
    flow = FlowServer(flow_endpoint)
    with Publisher(endpoint, session="bench") as pub:
        while "analyzer" not in flow.ready:  # the receiver holds the analyzer's key
            pub.heartbeat()
            flow.poll(20)
        for i in range(n):
            while flow.behind("analyzer", "lateral", i - 1) > 8:
                flow.poll(1)
            h = FrameHeader(
                "bench", "lateral", i, i, i / 30, time.time(), (SIDE, SIDE), "uint16", "MONOCHROME2", 12
            )
            pub.send_frame(h, frames[i % 4])
            flow.poll(0)
        time.sleep(1.0)
    flow.close()


def _ours_receive(endpoint: str, n: int) -> tuple[float, int]:
    from monitor.flow import FlowClient
    from monitor.io.transport import Frame, Subscriber

    ctx = multiprocessing.get_context("spawn")
    flow_endpoint = _endpoint("ipc" if endpoint.startswith("ipc") else "tcp")
    sender = ctx.Process(target=_ours_sender, args=(endpoint, flow_endpoint, n))
    sender.start()
    flow = FlowClient(flow_endpoint, "analyzer")
    with Subscriber(endpoint, planes=("lateral",)) as sub:
        got, first, last = 0, None, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = sub.receive(3000)
            if m is None:
                break
            if got == 0:
                flow.ready()  # repeated until frames flow: an early one may be lost
            if isinstance(m, Frame):
                first = first or time.perf_counter()
                last = time.perf_counter()
                got += 1
                assert int(m.pixels[0, 0]) == m.header.seq % 4
                flow.ack("lateral", m.header.seq)
                if m.header.seq == n - 1:
                    break
    sender.join()
    flow.close()
    return (last - first) / max(got - 1, 1), got


def _imagezmq_sender(endpoint: str, n: int, reqrep: bool, go: multiprocessing.Event) -> None:
    import imagezmq

    frames = [np.full((SIDE, SIDE), i, np.uint16) for i in range(4)]
    sender = imagezmq.ImageSender(connect_to=endpoint, REQ_REP=reqrep)
    if not reqrep:
        go.wait(10)
    for i in range(n):
        sender.send_image(str(i), frames[i % 4])
    time.sleep(1.0)
    sender.close()


def _imagezmq_receive(endpoint: str, n: int, reqrep: bool) -> tuple[float, int]:
    import imagezmq

    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    if reqrep:
        hub = imagezmq.ImageHub(open_port=endpoint.replace("127.0.0.1", "*"), REQ_REP=True)
        sender = ctx.Process(target=_imagezmq_sender, args=(endpoint, n, True, go))
    else:
        sender = ctx.Process(target=_imagezmq_sender, args=(endpoint.replace("127.0.0.1", "*"), n, False, go))
    sender.start()
    if not reqrep:
        hub = imagezmq.ImageHub(open_port=endpoint, REQ_REP=False)
        time.sleep(1.0)
        go.set()
    got, first, last = 0, None, None
    hub.zmq_socket.setsockopt(zmq.RCVTIMEO, 3000)
    try:
        while got < n:
            name, image = hub.recv_image()
            if reqrep:
                hub.send_reply(b"OK")
            first = first or time.perf_counter()
            last = time.perf_counter()
            got += 1
            assert int(image[0, 0]) == int(name) % 4
    except zmq.Again:
        pass
    sender.join()
    hub.close()
    return (last - first) / max(got - 1, 1), got


def transport_throughput(n: int = 300) -> list[dict]:
    rows = []
    try:
        import imagezmq  # noqa: F401

        have_imagezmq = True
    except ImportError:
        have_imagezmq = False
    mb = SIDE * SIDE * 2 / 1e9
    for transport in ("tcp", "ipc"):
        per_frame, got = _ours_receive(_endpoint(transport), n)
        ours = {
            "transport": transport,
            "impl": "monitor (PUB/SUB, zero-copy)",
            "frames_per_s": 1 / per_frame,
            "gb_per_s": mb / per_frame,
            "received": got,
            "sent": n,
        }
        rows.append(ours)
        if have_imagezmq:
            for reqrep, label in ((True, "imagezmq REQ/REP (default)"), (False, "imagezmq PUB/SUB")):
                per_frame, got = _imagezmq_receive(_endpoint(transport), n, reqrep)
                rows.append(
                    {
                        "transport": transport,
                        "impl": label,
                        "frames_per_s": 1 / per_frame,
                        "gb_per_s": mb / per_frame,
                        "received": got,
                        "sent": n,
                        "ours_ratio": ours["frames_per_s"] * per_frame,
                    }
                )
    return rows


def _paced(n: int, fps: float):
    """Yields (i, seconds late) for ``n`` ticks at ``fps``, sleeping in between."""
    start = time.monotonic()
    for i in range(n):
        due = start + i / fps
        while time.monotonic() < due:
            time.sleep(max(0.0, min(0.002, due - time.monotonic())))
        yield i, time.monotonic() - due


def _paced_source(endpoint: str, flow_endpoint: str, fps: float, seconds: float) -> None:
    from monitor.flow import FlowServer
    from monitor.io.transport import Publisher
    from monitor.messages import End, FrameHeader

    frames = [np.full((SIDE, SIDE), i, np.uint16) for i in range(4)]
    flow = FlowServer(flow_endpoint)
    with Publisher(endpoint, session="bench") as pub:
        while "analyzer" not in flow.ready:
            pub.heartbeat()
            flow.poll(50)
        n = int(seconds * fps)
        for i, _late in _paced(n, fps):
            for plane in ("lateral", "ap"):
                h = FrameHeader(
                    "bench", plane, i, i, i / fps, time.time(), (SIDE, SIDE), "uint16", "MONOCHROME2", 12
                )
                pub.send_frame(h, frames[i % 4])
        pub.send(End("bench", "source", time.time(), {"lateral": n, "ap": n}))
        time.sleep(0.5)
    flow.close()


def _echo():
    """An analysis that answers each frame at once: the latency benchmark measures the
    transport, not the vision (whose cost per frame ``monitor bench accuracy`` reports)."""
    from monitor.analyzer import Analysis, result_for

    class Echo(Analysis):
        def process(self, frame):
            return result_for(frame.header)

    return Echo()


def _analyzer(frames_endpoint: str, results_endpoint: str, flow_endpoint: str) -> None:
    from monitor.analyzer import run_analyzer

    run_analyzer(frames_endpoint, results_endpoint, flow_endpoint, "bench", analysis=_echo())


def latency(fps: float, seconds: float = 10.0, transport: str = "tcp") -> dict:
    """Frame published -> result received by a viewer, through a real analyzer process."""
    from monitor.io.transport import VIEWER_HWM, Frame, Subscriber
    from monitor.messages import End, Result

    ctx = multiprocessing.get_context("spawn")
    frames_ep, results_ep, flow_ep = (_endpoint(transport) for _ in range(3))
    analyzer = ctx.Process(target=_analyzer, args=(frames_ep, results_ep, flow_ep))
    analyzer.start()
    viewer_results = Subscriber(results_ep)
    viewer_frames = Subscriber(frames_ep, hwm=VIEWER_HWM)
    time.sleep(1.0)
    source = ctx.Process(target=_paced_source, args=(frames_ep, flow_ep, fps, seconds))
    source.start()
    poller = zmq.Poller()
    poller.register(viewer_results.socket, zmq.POLLIN)
    poller.register(viewer_frames.socket, zmq.POLLIN)
    result_latency, frame_latency, results = [], [], 0
    done = False
    deadline = time.monotonic() + seconds + 30
    while not done and time.monotonic() < deadline:
        ready = dict(poller.poll(500))
        if viewer_frames.socket in ready:
            m = viewer_frames.receive(0)
            while m is not None:
                if isinstance(m, Frame):
                    frame_latency.append(m.received_at - m.header.send_time)
                m = viewer_frames.receive(0)
        if viewer_results.socket in ready:
            m = viewer_results.receive(0)
            while m is not None:
                if isinstance(m, Result):
                    result_latency.append(time.time() - m.frame_send_time)
                    results += 1
                elif isinstance(m, End):
                    done = True
                m = viewer_results.receive(0)
    source.join()
    analyzer.join(10)
    sent = int(seconds * fps) * 2
    out = {
        "transport": transport,
        "fps": fps,
        "frames_sent": sent,
        "results_received": results,
        "viewer_frames_received": len(frame_latency),
        "viewer_frames_dropped": int(sum(viewer_frames.stats.dropped.values())),
        "result_p50_ms": 1000 * float(np.percentile(result_latency, 50)),
        "result_p99_ms": 1000 * float(np.percentile(result_latency, 99)),
        "frame_p50_ms": 1000 * float(np.percentile(frame_latency, 50)),
        "frame_p99_ms": 1000 * float(np.percentile(frame_latency, 99)),
    }
    viewer_frames.close()
    viewer_results.close()
    return out


def _curve_pair() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """Fresh server and client key pairs (no ZAP: the cost of CURVE's encryption alone)."""
    return zmq.curve_keypair(), zmq.curve_keypair()


def _raw_sender(endpoint: str, n: int, fps: float, server_key=None) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    if server_key:
        sock.curve_publickey, sock.curve_secretkey = server_key
        sock.curve_server = True
    sock.bind(endpoint)
    time.sleep(1.0)
    image = np.zeros((SIDE, SIDE), np.uint16)
    for _ in range(n):
        sock.send_multipart([b"x", repr(time.time()).encode(), image], copy=False)
        time.sleep(1.0 / fps)
    time.sleep(0.5)
    sock.close()
    ctx.term()


def raw_pyzmq_latency(
    fps: float = 30.0, n: int = 300, transport: str = "tcp", curve: bool = False
) -> tuple[float, float]:
    """The floor: bare pyzmq PUB to SUB, one hop, nothing else running (p50, p99 in ms);
    with ``curve``, the same with CURVE encryption (and no ZAP)."""
    endpoint = _endpoint(transport)
    server_key = None
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    if curve:
        server_key, client_key = _curve_pair()
        sub.curve_publickey, sub.curve_secretkey = client_key
        sub.curve_serverkey = server_key[0]
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 3000)
    sub.connect(endpoint)
    sender = multiprocessing.get_context("spawn").Process(
        target=_raw_sender, args=(endpoint, n, fps, server_key)
    )
    sender.start()
    lat = []
    try:
        while len(lat) < n:
            parts = sub.recv_multipart(copy=False)
            lat.append(time.time() - float(bytes(parts[1].buffer)))
    except zmq.Again:
        pass
    sender.join()
    sub.close()
    ctx.term()
    return 1000 * float(np.percentile(lat, 50)), 1000 * float(np.percentile(lat, 99))


def _ours_paced_sender(endpoint: str, n: int, fps: float) -> None:
    from monitor.io.transport import Publisher
    from monitor.messages import FrameHeader

    image = np.zeros((SIDE, SIDE), np.uint16)
    with Publisher(endpoint, session="bench") as pub:
        time.sleep(1.0)
        for i in range(n):
            h = FrameHeader(
                "bench", "lateral", i, i, i / fps, time.time(), (SIDE, SIDE), "uint16", "MONOCHROME2", 12
            )
            pub.send_frame(h, image)
            time.sleep(1.0 / fps)
        time.sleep(0.5)


def ours_one_hop_latency(fps: float = 30.0, n: int = 300, transport: str = "tcp") -> tuple[float, float]:
    """Our Publisher to our Subscriber under the floor's conditions (p50, p99 in ms)."""
    from monitor.io.transport import Frame, Subscriber

    endpoint = _endpoint(transport)
    sender = multiprocessing.get_context("spawn").Process(target=_ours_paced_sender, args=(endpoint, n, fps))
    lat = []
    with Subscriber(endpoint) as sub:
        sender.start()
        while len(lat) < n:
            m = sub.receive(3000)
            if m is None:
                break
            if isinstance(m, Frame):
                lat.append(m.received_at - m.header.send_time)
    sender.join()
    return 1000 * float(np.percentile(lat, 50)), 1000 * float(np.percentile(lat, 99))


def run_transport(frames: int = 300, seconds: float = 10.0) -> None:
    print(
        f"transport benchmark: {SIDE}x{SIDE} uint16 frames ({SIDE * SIDE * 2 / 1e6:.1f} MB), "
        f"{os.cpu_count()} cores"
    )
    print()
    print(f"throughput, {frames} frames, sender and receiver in separate processes:")
    print(f"  {'transport':9} {'implementation':32} {'frames/s':>9} {'GB/s':>6} {'received':>9}  ours/this")
    for r in transport_throughput(frames):
        ratio = f"{r['ours_ratio']:.2f}x" if "ours_ratio" in r else ""
        print(
            f"  {r['transport']:9} {r['impl']:32} {r['frames_per_s']:9.0f} {r['gb_per_s']:6.2f} "
            f"{r['received']:>4}/{r['sent']:<4}  {ratio}"
        )
    print()
    print(
        f"latency, biplane, {seconds:g} s per rate: frame published -> analyzer process (answering at once) "
        "-> result at a viewer;"
    )
    print("  'frame' columns: frame published -> the same viewer (one hop)")
    print(
        f"  {'link':4} {'rate':>6} {'sent':>6} {'results':>8} {'result p50':>11} {'result p99':>11} "
        f"{'viewer frames':>14} {'frame p50':>10} {'frame p99':>10}"
    )
    for transport, fps in (("tcp", 15.0), ("tcp", 30.0), ("ipc", 30.0)):
        r = latency(fps, seconds, transport)
        print(
            f"  {transport:4} {fps:4.0f}/s {r['frames_sent']:6d} {r['results_received']:8d} "
            f"{r['result_p50_ms']:9.2f}ms "
            f"{r['result_p99_ms']:9.2f}ms {r['viewer_frames_received']:9d} "
            f"({r['viewer_frames_dropped']} lost) {r['frame_p50_ms']:7.2f}ms {r['frame_p99_ms']:7.2f}ms"
        )
    print()
    print("one hop, 30/s single plane, nothing else running (what our code adds over bare pyzmq):")
    for label, measure in (
        ("bare pyzmq PUB->SUB", raw_pyzmq_latency),
        ("bare pyzmq PUB->SUB, CURVE", lambda: raw_pyzmq_latency(curve=True)),
        ("monitor Publisher->Subscriber", ours_one_hop_latency),
    ):
        p50, p99 = measure()
        print(f"  {label:30} p50 {p50:5.2f} ms   p99 {p99:5.2f} ms")
    print("  (the monitor's sockets are CURVE-authenticated and encrypted, with ZAP: monitor.io.security)")


def _viewer_source(frames_endpoint: str, results_endpoint: str, fps: float, seconds: float, report) -> None:
    """30 frames/s biplane 1024x1024 frames, each with a result carrying a realistic overlay;
    reports how late it sent frames (a viewer must not slow the source)."""
    from monitor.io.transport import Publisher
    from monitor.messages import FrameHeader, Result

    rng = np.random.default_rng(0)
    frames = [rng.integers(200, 4000, (SIDE, SIDE), dtype=np.uint16) for _ in range(4)]
    angle = np.linspace(0, 2 * np.pi, 120)
    contour = [[500 + 40 * np.cos(a), 500 + 30 * np.sin(a)] for a in angle]
    overlay = {
        "body": [[600, 400], [380, 405], [375, 600], [605, 598]],
        "wall": [[600, 400], [605, 598]],
        "safety_line": [[580, 400], [585, 598]],
        "cement": [contour],
        "front": [540.0, 500.0],
        "leaks": [
            {"site": "posterior", "box": [610, 480, 20, 20], "centroid": [620, 490], "volume_ml": 0.03}
        ],
    }
    with (
        Publisher(frames_endpoint, session="bench") as pub,
        Publisher(results_endpoint, source="bench") as res,
    ):
        time.sleep(1.5)  # the viewer subscribes
        lateness = []
        n = int(seconds * fps)
        for i, late in _paced(n, fps):
            lateness.append(late)
            for plane in ("lateral", "ap"):
                h = FrameHeader(
                    "bench", plane, i, i, i / fps, time.time(), (SIDE, SIDE), "uint16", "MONOCHROME2", 12
                )
                pub.send_frame(h, frames[i % 4])
                res.send(
                    Result("bench", plane, i, i, i / fps, h.send_time, time.time(), "ok", distance_mm=6.0,
                           volume_ml=1.0, overlay=overlay)
                )  # fmt: skip
        report.put({"sent": n, "late_ms_p99": float(np.percentile(lateness, 99) * 1000)})


def run_viewer(seconds: float = 10.0, fps: float = 30.0) -> dict:
    """How many frames per second the live view puts on screen at 30 frames/s biplane
    1024x1024 (Qt offscreen: CPU rendering, as on this machine), and whether it slows the source."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from monitor.viewer import MonitorWindow, pg

    frames_ep, results_ep = _endpoint("ipc"), _endpoint("ipc")
    ctx = multiprocessing.get_context("spawn")
    report = ctx.Queue()
    source = ctx.Process(target=_viewer_source, args=(frames_ep, results_ep, fps, seconds, report))
    app = pg.mkQApp("bench")
    window = MonitorWindow(frames_ep, results_ep, None)
    window.resize(1600, 1000)
    window.show()
    source.start()
    ticks = []
    started = None
    deadline = time.monotonic() + seconds + 20
    while source.is_alive() and time.monotonic() < deadline:
        t = time.perf_counter()
        before = window.rendered
        window.poll()
        app.processEvents()  # paint
        if window.rendered > before:
            started = started or time.monotonic()
            ticks.append(time.perf_counter() - t)
    elapsed = time.monotonic() - (started or time.monotonic())
    source.join(5)
    sent = report.get(timeout=5)
    window.close()
    per_plane = window.rendered / 2
    result = {
        "rendered_frames_per_s": round(per_plane / max(elapsed, 1e-6), 1),
        "offered_frames_per_s": fps,
        "update_ms_median": round(float(np.median(ticks) * 1000), 1) if ticks else None,
        "update_ms_p99": round(float(np.percentile(ticks, 99) * 1000), 1) if ticks else None,
        "source_late_ms_p99": round(sent["late_ms_p99"], 2),
    }
    print(
        f"viewer at {fps:g} frames/s biplane {SIDE}x{SIDE}: rendered {result['rendered_frames_per_s']} "
        f"frames/s per plane (update + paint {result['update_ms_median']} ms median, "
        f"{result['update_ms_p99']} ms p99); the source stayed on time "
        f"(p99 {result['source_late_ms_p99']} ms late)"
    )
    return result


INTERRUPTED_EXIT = 130  # what a run ended by an interrupt returns (monitor.pipeline.run)


def restart_gaps(kills: int = 4, every_s: float = 6.0, say=print) -> dict:
    """How long the operator is blind when the analyzer crashes: a real run (the bundled default
    recording replayed in a loop at its recorded rate, through the analyzer and logger processes
    the supervisor starts, as ``monitor replay`` runs them), whose analyzer is killed (SIGKILL)
    ``every_s`` seconds after results begin and after each return, ``kills`` times. Each gap is
    from a kill to the first result a viewer receives that was sent after it (s; None where none
    came within 60 s): the supervisor seeing the death, the new process starting and importing
    its modules, restoring the level from the session log, and reading again. The run is ended
    as an operator ends one (SIGINT, its default handler put in for the run, as a shell's
    background job ignores it) ``every_s`` after the last return, so this must be called from
    the main thread. ``run_exit``: the run's own verdict (INTERRUPTED_EXIT, as intended; 3 where
    its log is incomplete, as when the interrupt came while a restarted analyzer caught up);
    ``said``: what the run said."""
    import shutil
    import signal
    import tempfile
    import threading
    from pathlib import Path

    from monitor.io.sources import DicomPairSource
    from monitor.io.transport import Subscriber
    from monitor.messages import Result
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.recordings import default_recording
    from monitor.replay import PaceOptions

    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("restart_gaps ends its run with SIGINT: call it from the main thread")
    recording = default_recording()
    folder = Path(tempfile.mkdtemp(prefix="monitor-bench-restart-"))
    endpoints = Endpoints.private()
    spec = RunSpec(str(folder / "session"), "L1", endpoints=endpoints, restarts=kills + 1)
    results = Subscriber(endpoints.results)
    received: list[tuple[float, float]] = []  # each result: (time.monotonic() received, its send_time)
    gaps: list[float | None] = []
    finished = threading.Event()
    said: list[str] = []

    def listen() -> None:
        while not finished.is_set():
            message = results.receive(50)
            if isinstance(message, Result):
                received.append((time.monotonic(), message.send_time))

    def kill_the_analyzer() -> None:
        try:
            deadline = time.monotonic() + 120.0
            while not received and time.monotonic() < deadline and not finished.is_set():
                time.sleep(0.05)
            for k in range(kills):
                if finished.wait(every_s):
                    return
                analyzer = [p for p in multiprocessing.active_children() if p.name == "analyzer"]
                if not analyzer:
                    say("  no analyzer process to kill: the run ended")
                    return
                killed, killed_wall = time.monotonic(), time.time()
                os.kill(analyzer[0].pid, signal.SIGKILL)
                gap = None
                while time.monotonic() - killed < 60.0 and not finished.is_set():
                    # sent after the kill: not one the dead analyzer had in flight
                    after = [got for got, sent in list(received) if sent > killed_wall]
                    if after:
                        gap = after[0] - killed
                        break
                    time.sleep(0.01)
                gaps.append(gap)
                outcome = "no result within 60 s" if gap is None else f"results again after {gap:.2f} s"
                say(f"  kill {k + 1} of {kills}: {outcome}")
            finished.wait(every_s)  # the last restarted analyzer catches up before the run ends
        finally:
            if not finished.is_set():  # the run goes on (a looped source): end it as an operator does
                os.kill(os.getpid(), signal.SIGINT)

    listener = threading.Thread(target=listen, daemon=True)
    killer = threading.Thread(target=kill_the_analyzer, daemon=True)
    source = DicomPairSource(recording.lateral, recording.ap)
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    listener.start()
    killer.start()
    try:
        code = run(source, spec, PaceOptions(speed=1.0, loop=True), say=said.append)
    finally:
        finished.set()
        signal.signal(signal.SIGINT, previous_handler)
        killer.join(70.0)
        listener.join(5.0)
        results.close()
        source.close()
        shutil.rmtree(folder, ignore_errors=True)
    measured = [g for g in gaps if g is not None]
    return {
        "recording": recording.name,
        "kills": kills,
        "gaps_s": [None if g is None else round(g, 3) for g in gaps],
        "median_s": float(np.median(measured)) if measured else None,
        "max_s": max(measured) if measured else None,
        "run_exit": code,
        "said": said,
    }
