"""Key frames of a logged session with the monitor's overlay drawn, as PNG.

The headless counterpart of the viewer: used by ``monitor demo`` and for
closing-note and QA pictures.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from monitor.display import auto_window, to_display
from monitor.io.dicom import open_recording
from monitor.io.store import SessionStore
from monitor.overlay import alarm_banner, draw


def key_frames(results: list[dict]) -> list[int]:
    """The first analysed frame, every frame that raised an alarm, and the last."""
    frames = sorted({r["frame"] for r in results if r["status"] != "baseline"})
    if not frames:
        return []
    alarm_frames = sorted({r["frame"] for r in results if r["alarms"]})
    return sorted({frames[0], *alarm_frames, frames[-1]})


def render_session(
    session: Path, recordings: dict[str, Path], out: Path, frames: list[int] | None = None, size: int = 512
) -> list[Path]:
    """One PNG per frame: the planes side by side with their overlays and an alarm banner."""
    store = SessionStore.open(session)
    results = store.results()
    by_key = {(r["plane"], r["frame"]): r for r in results}
    frames = key_frames(results) if frames is None else frames
    out.mkdir(parents=True, exist_ok=True)
    opened = {plane: open_recording(path, plane=plane) for plane, path in recordings.items()}
    windows = {plane: auto_window(rec.frame(0).astype(np.float32)) for plane, rec in opened.items()}
    written = []
    try:
        for f in frames:
            tiles, raised = [], []
            for plane, rec in opened.items():
                if f >= len(rec):
                    continue
                result = by_key.get((plane, f), {"status": "no result"})
                raised += result.get("alarms", [])
                display = to_display(rec.frame(f), rec.info.photometric, windows[plane])
                scale = size / max(display.shape)
                tiles.append(draw(display, result, f"{plane} frame {f}", scale))
            if not tiles:
                continue
            height = max(t.shape[0] for t in tiles)
            tiles = [
                cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 4, cv2.BORDER_CONSTANT, value=(0, 0, 0))
                for t in tiles
            ]
            body = np.hstack(tiles)
            image = np.vstack([alarm_banner(body.shape[1], raised), body])
            path = out / f"frame_{f:04d}.png"
            cv2.imwrite(str(path), image)
            written.append(path)
    finally:
        for rec in opened.values():
            rec.close()
        store.close()
    return written
