"""Session-log benchmarks that print measured numbers (``monitor bench storage|summary``).

``storage``: what recording costs: bytes and milliseconds per 1024x1024
frame written into a session log (pixels compressed, hash-chained), and from
them the disk used per minute of 30 frames/s biplane.

``summary``: ``monitor audit DIR --summary`` over many generated session logs
(realistic sizes: one or two levels, minutes of results, alarms, syringe
events), and how long it takes.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from monitor.audit import record_digest
from monitor.io.store import SessionStore
from monitor.messages import FrameHeader, Result

OPERATORS = ("Dr Adams", "Dr Baker", "Dr Chen", "Dr Diaz", "Dr Evans", "Dr Fox")
TREATED_LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4")  # where the synthetic sessions inject
FAKE_START = 1_793_491_200.0  # 2026-11-01 00:00 UTC: the synthetic sessions begin then


def run_storage(recording: Path | None, say=print) -> dict:
    """Write every frame of a 1024x1024 recording into a session log, twice over (both planes)."""
    # Over 60 lines on purpose: a benchmark: set-up, the timed writes and the printed figures in one
    # place, so what is timed is seen.
    from monitor.io.dicom import open_recording

    work = Path(tempfile.mkdtemp(prefix="monitor-storage-"))
    try:
        if recording is None:
            from monitor.sim.simulate import SimConfig, simulate

            say("rendering a 1024x1024, 12-bit, 16-frame recording to measure on ...")
            simulate(SimConfig(seed=77, size=1024, frames=16, bits=12, scenario="posterior"), work / "rec")
            recording = work / "rec"
        store = SessionStore.create(work / "session", {"operator": "bench"})
        raw = 0
        times = []
        n = 0
        for plane in ("lateral", "ap"):
            with open_recording(recording / f"{plane}.dcm") as rec:
                for i, pixels in enumerate(rec.frames()):
                    h = FrameHeader(
                        "bench",
                        plane,
                        i,
                        i,
                        i / 30,
                        time.time(),
                        pixels.shape,
                        str(pixels.dtype),
                        rec.info.photometric,
                        rec.info.bits_stored,
                        rec.info.intensity_relationship,
                    )
                    t = time.perf_counter()
                    store.add_frame(h, pixels, time.time())
                    times.append(time.perf_counter() - t)
                    raw += pixels.nbytes
                    n += 1
                shape, bits = pixels.shape, rec.info.bits_stored
        store.close()
        size = sum(p.stat().st_size for p in (work / "session").iterdir())
        per_frame = size / n
        per_minute = per_frame * 30 * 2 * 60
        ms = np.array(times) * 1000
        figures = {
            "frames": n,
            "shape": list(shape),
            "bits_stored": bits,
            "bytes_per_frame": round(per_frame),
            "compression_ratio": round(size / raw, 3),
            "write_ms_median": round(float(np.median(ms)), 2),
            "write_ms_p99": round(float(np.percentile(ms, 99)), 2),
            "gib_per_minute_30fps_biplane": round(per_minute / 2**30, 2),
        }
        say(
            f"{n} frames of {shape[0]}x{shape[1]} ({bits} bits stored): {per_frame / 2**20:.2f} MiB "
            f"per frame on disk ({figures['compression_ratio']:.0%} of raw), written in "
            f"{figures['write_ms_median']} ms median, {figures['write_ms_p99']} ms p99 "
            "(compress, hash, commit; one core)"
        )
        say(f"recording 30 frames/s biplane: {figures['gib_per_minute_30fps_biplane']} GiB per minute")
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_fake_session(args: tuple[Path, int]) -> None:
    """One plausible session log: levels, results at 7.5 frames/s, alarms (a leak in some, a
    possible leak, medium, halfway through each level of seeds 3, 8, 13, ...), syringe events;
    three rooms, a session every six hours from FAKE_START, and one in 17 without an operator."""
    folder, seed = args
    rng = np.random.default_rng(seed)
    operator = None if seed % 17 == 16 else OPERATORS[seed % len(OPERATORS)]
    meta = {"session": f"s{seed:05d}", "operator": operator, "level": None, "room": f"room {seed % 3 + 1}"}
    store = SessionStore.create(folder, meta | {"created": FAKE_START + seed * 6 * 3600.0})
    start = int(rng.integers(0, len(TREATED_LEVELS) - 1))
    for level in TREATED_LEVELS[start : start + int(rng.integers(1, 3))]:
        frames = int(rng.integers(300, 900))  # 40 s to 2 min of fluoroscopy per level
        total = rng.uniform(1.5, 5.5)
        stop = int(frames * rng.uniform(0.8, 0.95))
        distance0 = rng.uniform(8, 20)
        closest = rng.uniform(-3, 9)
        with store.atomic():
            store.add_event("operator", "level", f"level {level} started", value=level, level=level)
            raised = set()
            for f in range(frames):
                t = f / 7.5
                progress = min(f, stop) / stop
                volume = round(total * progress + rng.normal(0, 0.01), 4)
                distance = round(distance0 + (closest - distance0) * progress + rng.normal(0, 0.1), 3)
                for plane in ("lateral", "ap"):
                    result = Result(
                        "bench",
                        plane,
                        f,
                        f,
                        t,
                        t,
                        t,
                        "ok",
                        distance_mm=distance if plane == "lateral" else None,
                        volume_ml=volume,
                        overlay={"cannula_tips": [[512.0, 500.0]]},
                    )
                    store.add_result(result, level)
                if distance <= -1.0 and seed % 5 == 0 and "extravasation" not in raised:
                    raised.add("extravasation")
                    alarm = {"id": f"{level}/leak/{f}", "kind": "extravasation", "priority": "high"}
                    alarm |= {"frame": f, "plane": "lateral", "site": "posterior", "distance_mm": distance}
                    store.add_alarm("raised", alarm, level, t)
                if f == stop // 2 and seed % 5 == 3:  # one the analyzer could not confirm
                    alarm = {"id": f"{level}/leak/{f}", "kind": "extravasation", "priority": "medium"}
                    alarm |= {"frame": f, "plane": "ap", "site": "disc", "distance_mm": None}
                    store.add_alarm("raised", alarm, level, t)
                if distance <= 5.0 and "proximity" not in raised:
                    raised.add("proximity")
                    alarm = {"id": f"{level}/proximity/{f}", "kind": "proximity", "priority": "high"}
                    alarm |= {"frame": f, "plane": "lateral", "site": None, "distance_mm": distance}
                    store.add_alarm("raised", alarm, level, t)
                if f % 225 == 224:
                    store.add_event("operator", "syringe", "1 mL delivered", value=1.0, level=level)
    store.add_meta({"summary": {"complete": True, "problems": []}})
    store.sign()
    store.close()
    record_digest(folder)  # as a run's close writes it (monitor.pipeline)


def _can_drop_caches() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def _drop_caches() -> None:
    """Write back and drop the OS's page, dentry and inode caches: the next reads go to disk."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_summary(sessions: int, folder: Path | None, workers: int = 2, say=print) -> dict:
    from monitor.audit import find_sessions, summarize

    keep = folder is not None
    root = folder or Path(tempfile.mkdtemp(prefix="monitor-sessions-"))
    try:
        existing = len(find_sessions(root)) if root.exists() else 0
        if existing < sessions:
            say(f"generating {sessions - existing} session logs in {root} ...")
            t = time.monotonic()
            jobs = [(root / f"session-{i:05d}", i) for i in range(existing, sessions)]
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for done, _ in enumerate(pool.imap_unordered(write_fake_session, jobs, chunksize=16), 1):
                    if done % 1000 == 0:
                        say(f"  {done} of {len(jobs)}")
            say(f"generated in {time.monotonic() - t:.0f} s")
        folders = find_sessions(root)[:sessions]
        size = sum(p.stat().st_size for f in folders for p in f.iterdir())
        timings = {}
        cache = root / ".bench-summary-cache.sqlite"
        cache.unlink(missing_ok=True)
        # logs: every log read (as for logs closed by a monitor before digests were written);
        # cold: no cache, the digests written at close; warm: the cache the cold run left;
        # os-cold: as cold, after the OS's caches are dropped (root only), the folder walk timed too
        runs = [("logs", False), ("cold", True), ("warm", True)]
        if _can_drop_caches():
            runs.append(("os-cold", True))
        else:
            say("(not root: the OS's caches cannot be dropped, so no os-cold run)")
        for run, close_digests in runs:
            if run != "warm":
                cache.unlink(missing_ok=True)
            walked = 0.0
            if run == "os-cold":
                _drop_caches()
                t = time.monotonic()
                folders = find_sessions(root)[:sessions]
                walked = time.monotonic() - t
            t = time.monotonic()
            table = summarize(folders, workers, cache=cache, close_digests=close_digests)
            timings[run] = time.monotonic() - t + walked
            cached = len(folders) - table["read"] - table["from_close"]
            walk = f" (the folder walk {walked:.1f} s of it)" if walked else ""
            say(
                f"summary of {len(folders)} sessions ({size / 2**30:.2f} GiB of logs), {run} "
                f"({table['read']} read, {table['from_close']} from digests written at close, {cached}"
                f" cached): {timings[run]:.1f} s{walk} with {workers} worker(s),"
                f" {1000 * timings[run] / len(folders):.2f} ms per session; {len(table['rows'])} rows"
            )
        return {"sessions": len(folders), **{k: round(v, 2) for k, v in timings.items()}}
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
