"""Key frames of a logged session with the monitor's overlay drawn, as PNG.

The headless counterpart of the viewer: used by ``monitor demo`` and for
closing-note and QA pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from monitor.display import auto_window, to_display
from monitor.errors import MonitorError
from monitor.io.store import SessionStore
from monitor.messages import PLANES
from monitor.overlay import alarm_banner, draw


def key_frames(results: list[dict]) -> list[int]:
    """The first analysed frame, every frame that raised an alarm, and the last."""
    frames = sorted({r["frame"] for r in results if r["status"] != "baseline"})
    if not frames:
        return []
    alarm_frames = sorted({r["frame"] for r in results if r["alarms"]})
    return sorted({frames[0], *alarm_frames, frames[-1]})


def render_session(session: Path, out: Path, frames: list[int] | None = None, size: int = 512) -> list[Path]:
    """One PNG per frame, from the pixels the session recorded: the planes side by
    side with their overlays and an alarm banner."""
    store = SessionStore.open(session)
    try:
        return [path for f, path in render_frames(store, frames, out, size)]
    finally:
        store.close()


def render_frames(store: SessionStore, frames: list[int] | None, out: Path | None, size: int = 512):
    """Yields (frame, PNG path or BGR image when ``out`` is None) for the key frames or ``frames``
    (frame indexes: where a looped replay or a restarted source sent an index again, its last
    copy; :func:`render_sent` names a frame by its place in the stream)."""
    results = store.results()
    by_key = {(r["plane"], r["frame"]): r for r in results}
    # each frame once: one resent to a restarted logger is logged only if it lacked it
    recorded = {(r.plane, r.frame): r for r in store.records("frame")}
    frames = key_frames(results) if frames is None else frames
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    windows: dict[str, tuple] = {}
    for f in frames:
        records = {plane: recorded[(plane, f)] for plane in PLANES if (plane, f) in recorded}
        found = {plane: by_key.get((plane, f), {"status": "no result"}) for plane in records}
        image = _instant_image(store, records, found, windows, size)
        if image is None:
            continue
        if out is None:
            yield f, image
            continue
        path = out / f"frame_{f:04d}.png"
        if not cv2.imwrite(str(path), image):
            raise MonitorError(f"{path}: could not write the image")
        yield f, path


def render_sent(store: SessionStore, wanted: list[tuple[str, str, int]], size: int = 512):
    """Yields (key, BGR image) for each of ``wanted``: a frame named by its place in the stream,
    (stream, plane, seq), unique in a session where frame indexes repeat (a looped replay, a
    source restarted). Drawn with the other plane's frame of the same instant of the same stream
    (or, at different frame rates, its newest before it, as the live view showed it), each with
    its own result. Keys the log does not hold are left out."""
    frames = store.frames_as_sent()
    sent = {(r.body["stream"], r.plane, r.seq): r for r in frames}
    runs: dict[tuple[str, str], list] = {}  # (stream, plane) -> its frames
    for r in frames:
        runs.setdefault((r.body["stream"], r.plane), []).append(r)
    results = {(r.get("stream"), r["plane"], r["seq"]): r for r in store.results()}
    windows: dict[str, tuple] = {}
    for key in wanted:
        record = sent.get(key)
        if record is None:
            continue
        records = {record.plane: record}
        for plane in PLANES:  # the other plane's frame of that instant, or its newest before it
            before = [r for r in runs.get((key[0], plane), ()) if _instant(r) <= _instant(record)]
            if plane != record.plane and before:
                records[plane] = max(before, key=_instant)
        found = {
            plane: results.get((key[0], plane, r.seq), {"status": "no result"})
            for plane, r in records.items()
        }
        image = _instant_image(store, records, found, windows, size)
        if image is not None:
            yield key, image


def _instant(record) -> float:
    """A frame's acquisition time (s) to 0.1 ms: each plane's times come from its own frame
    time, written to 4 decimals, so a biplane pair acquired together differs in the last digits
    at some rates (7.5 and 3.75 frames/s: 2.9333326 and 2.9333337 s); the audit merges them so too."""
    return round(float(record.body["acq_time"]), 4)


def _instant_image(store: SessionStore, records: dict, results: dict, windows: dict, size: int):
    """The planes' frames ``records`` (plane -> frame Record) side by side, each with its
    ``results`` overlay, under an alarm banner; None when there is none. ``windows``: each
    plane's display window, set from the first frame drawn and kept (one look per session)."""
    tiles, raised = [], []
    for plane in PLANES:
        record = records.get(plane)
        if record is None:
            continue
        pixels = store.image(record.rec)
        if plane not in windows:
            windows[plane] = auto_window(pixels.astype(np.float32))
        result = results[plane]
        raised += result.get("alarms", [])
        display = to_display(pixels, record.body["photometric"], windows[plane])
        tiles.append(draw(display, result, f"{plane} frame {record.frame}", size / max(display.shape)))
    if not tiles:
        return None
    height = max(t.shape[0] for t in tiles)
    tiles = [
        cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 4, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        for t in tiles
    ]
    body = np.hstack(tiles)
    return np.vstack([alarm_banner(body.shape[1], raised), body])


def write_video(store: SessionStore, out: Path, fps: float | None = None) -> Path:
    """Every frame of the session with its overlay, as Motion-JPEG AVI (plays everywhere,
    needs no codec beyond OpenCV's own)."""
    frames = sorted({r.frame for r in store.records("frame")})  # resent ones too: logged only if not held
    if fps is None:
        times = sorted({r.body["acq_time"] for r in store.records("frame", plane="lateral")})
        steps = np.diff(times)
        fps = float(1.0 / np.median(steps[steps > 0])) if len(steps) else 10.0
    writer = None
    try:
        for _, image in render_frames(store, frames, None):
            if writer is None:
                out.parent.mkdir(parents=True, exist_ok=True)
                size = (image.shape[1], image.shape[0])
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
                if not writer.isOpened():
                    raise MonitorError(f"{out}: could not open the video for writing")
            if (image.shape[1], image.shape[0]) == size:
                writer.write(image)
    finally:
        if writer is not None:
            writer.release()
    return out


def write_contact_sheet(paths: Sequence[Path], out: Path) -> Path:
    """The first, middle and last frame of each recording in one PNG (`monitor info --contact-sheet`)."""
    from monitor.display import contact_sheet
    from monitor.io.dicom import open_recording

    rows = []
    for path in paths:
        with open_recording(path) as rec:
            n = len(rec)
            window = auto_window(rec.frame(0).astype("float32"))
            picks = sorted({0, n // 2, n - 1})
            cells = [
                (f"frame {i}", to_display(rec.frame(i), rec.info.analysis_photometric, window)) for i in picks
            ]
            rows.append((rec.info.plane or path.name, cells))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), contact_sheet(rows)):
        raise MonitorError(f"{out}: could not write the image")
    return out
