"""``monitor bench igtl``: what the OpenIGTLink bridge costs the monitor, and its latency.

Two measurements, each on a real monitor (``monitor replay --headless`` with its session log)
and a real bridge process (``monitor igtl``) with real TCP clients on loopback:

* **Throughput.** The recording replayed as fast as the monitor analyses it (``--speed 0``:
  the source waits for the analyzer's acknowledgements), ``repeats`` times without a bridge
  and as many with the bridge and two clients reading everything: frames analysed per
  second, from the source's own "published ... in S s".
* **Latency.** The recording replayed in real time with the bridge, two clients, and a
  ZeroMQ subscriber in this process (what the viewer does). Per frame: the time from the
  source's send to a client holding the whole IMAGE message, against the time to the
  subscriber holding the frame; the difference is what the bridge adds (receive, place,
  pack with its CRC-64, send).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from monitor.io.igtl import IgtlRecorder
from monitor.io.transport import VIEWER_HWM, Frame, Subscriber
from monitor.pipeline import Endpoints

CLIENTS = 2


def start_bridge(e: Endpoints, *extra: str) -> tuple[subprocess.Popen, int]:
    """`monitor igtl` on a free loopback port, attached to ``e`` (``extra``: more options);
    the process, stderr piped, and the port it serves on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "igtl", "--port", "0", *extra, *e.args()],
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stderr.readline()
    found = re.search(r"serving OpenIGTLink on 127\.0\.0\.1:(\d+) ", line)
    if not found:
        proc.kill()
        raise RuntimeError(f"monitor igtl did not start: {line}{proc.stderr.read()}")
    return proc, int(found.group(1))


def _replay(lateral: Path, ap: Path, e: Endpoints, speed: str, session: Path) -> float:
    """Runs the replay to its end; frames analysed per second, as the source measured it."""
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "replay", "--lateral", str(lateral), "--ap", str(ap)]
        + ["--headless", "--speed", speed, "--session", str(session), *e.args()],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    found = re.search(r"published (\d+) lateral, (\d+) ap frames in ([\d.]+) s", done.stderr)
    if done.returncode not in (0, 4) or not found:
        raise RuntimeError(f"the replay failed ({done.returncode}): {done.stderr[-2000:]}")
    lateral_n, ap_n, seconds = int(found[1]), int(found[2]), float(found[3])
    return (lateral_n + ap_n) / seconds


def _with_bridge(lateral: Path, ap: Path, speed: str, scratch: Path, direct: bool = False):
    e = Endpoints.private()
    bridge, port = start_bridge(e, "--until-end")
    clients = [IgtlRecorder(port) for _ in range(CLIENTS)]
    arrivals: dict[float, float] = {}  # frame send_time -> when a ZeroMQ subscriber had it
    stop = threading.Event()

    def subscribe():
        with Subscriber(e.frames, hwm=VIEWER_HWM, key="viewer") as sub:
            while not stop.is_set():
                message = sub.receive(50)
                if isinstance(message, Frame):
                    arrivals[round(message.header.send_time, 6)] = message.received_at

    thread = threading.Thread(target=subscribe, daemon=True)
    if direct:
        thread.start()
        time.sleep(0.5)  # connected before the first frame
    try:
        rate = _replay(lateral, ap, e, speed, scratch / f"s{time.monotonic_ns()}")
        bridge.communicate(timeout=60)
    finally:
        stop.set()
        for c in clients:
            c.close()
        if bridge.poll() is None:
            bridge.kill()
    return rate, clients, arrivals


def run(lateral: Path, ap: Path, repeats: int = 3, say=print) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-igtl-") as tmp:
        scratch = Path(tmp)
        without, with_bridge, images = [], [], []
        for i in range(repeats):
            say(f"throughput, run {i + 1}/{repeats}: without the bridge ...")
            without.append(_replay(lateral, ap, Endpoints.private(), "0", scratch / f"plain{i}"))
            say(f"throughput, run {i + 1}/{repeats}: with the bridge and {CLIENTS} clients ...")
            rate, clients, _ = _with_bridge(lateral, ap, "0", scratch)
            with_bridge.append(rate)
            images.append([sum(r.type == "IMAGE" for r in c.received) for c in clients])
        say("latency: real time, with the bridge, its clients and a ZeroMQ subscriber ...")
        _, clients, arrivals = _with_bridge(lateral, ap, "1", scratch, direct=True)
    total, added = [], []
    for c in clients:
        for r in c.received:
            if r.type != "IMAGE":
                continue
            total.append(r.at - r.timestamp)
            direct = arrivals.get(round(r.timestamp, 6))
            if direct is not None:
                added.append(r.at - direct)
    ms = lambda values, q: float(np.percentile(values, q) * 1000) if values else float("nan")  # noqa: E731
    return {
        "frames_per_s_without": without,
        "frames_per_s_with": with_bridge,
        "images_per_client": images,
        "latency_ms": {"median": ms(total, 50), "p99": ms(total, 99), "n": len(total)},
        "added_ms": {"median": ms(added, 50), "p99": ms(added, 99), "n": len(added)},
    }


def report(result: dict, lateral: Path) -> str:
    w, b = result["frames_per_s_without"], result["frames_per_s_with"]
    lat, add = result["latency_ms"], result["added_ms"]
    return "\n".join(
        [
            f"recording: {lateral.parent} (replayed as fast as analysed, headless, session logged)",
            f"frames analysed per second, without the bridge: {', '.join(f'{v:.1f}' for v in w)}"
            f" (median {np.median(w):.1f})",
            f"  with the bridge and {CLIENTS} clients:        {', '.join(f'{v:.1f}' for v in b)}"
            f" (median {np.median(b):.1f}); IMAGE messages per client: {result['images_per_client']}",
            f"latency, source send -> whole IMAGE at a client (real time, n={lat['n']}):"
            f" median {lat['median']:.1f} ms, p99 {lat['p99']:.1f} ms",
            f"  added by the bridge (over a ZeroMQ subscriber of the same frame, n={add['n']}):"
            f" median {add['median']:.1f} ms, p99 {add['p99']:.1f} ms",
        ]
    )
