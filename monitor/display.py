"""Turning stored fluoroscopy pixels into 8-bit pictures for people.

Fluoroscopy is shown as the C-arm shows it: more X-ray intensity is brighter,
so bone, steel and cement are dark. MONOCHROME1 data are inverted for that.
"""

from __future__ import annotations

import cv2
import numpy as np


def to_display(frame: np.ndarray, photometric: str, window: tuple[float, float] | None = None) -> np.ndarray:
    """Window a stored frame to uint8, dense objects dark.

    ``window`` is (low, high) in stored values; by default the 1st to 99th
    percentile of pixels inside the exposed field.
    """
    f = frame.astype(np.float32)
    if window is None:
        window = auto_window(f)
    lo, hi = window
    out = np.clip((f - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)
    return 255 - out if photometric == "MONOCHROME1" else out


def auto_window(frame: np.ndarray) -> tuple[float, float]:
    """Percentile window over the central half of the image, where the operator
    centres the treated vertebra, ignoring collimator shutters and saturation."""
    h, w = frame.shape
    centre = frame[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
    sample = centre[:: max(1, h // 256), :: max(1, w // 256)].ravel()
    lo_all, hi_all = np.percentile(sample, [0.5, 99.5])
    exposed = sample[(sample > lo_all + 0.02 * (hi_all - lo_all)) & (sample < hi_all)]
    if exposed.size < 100:
        exposed = sample
    lo, hi = np.percentile(exposed, [1.0, 99.0])
    return float(lo), float(hi)


def contact_sheet(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], tile: int = 384) -> np.ndarray:
    """A grid of labelled 8-bit tiles: one row per plane, one column per frame."""
    label_h = 28
    n_cols = max(len(cells) for _, cells in rows)
    sheet = np.full((len(rows) * (tile + label_h), n_cols * tile), 32, np.uint8)
    for r, (row_name, cells) in enumerate(rows):
        for c, (cell_name, image) in enumerate(cells):
            y0, x0 = r * (tile + label_h), c * tile
            sheet[y0 + label_h : y0 + label_h + tile, x0 : x0 + tile] = cv2.resize(
                image, (tile, tile), interpolation=cv2.INTER_AREA
            )
            cv2.putText(
                sheet,
                f"{row_name}  {cell_name}",
                (x0 + 6, y0 + 20),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.55,
                230,
                1,
                cv2.LINE_AA,
            )
    return sheet
