"""Geometry for drawing a plane's result: full-resolution image pixel coordinates.

What the overlay (live view, PNG and video renderings, the OpenIGTLink bridge) draws, from
the measurements in working pixels of a region of interest.
"""

from __future__ import annotations

import cv2
import numpy as np

from monitor.vision.anatomy import ApBody, Cannula, LateralBody
from monitor.vision.cement import CementMap
from monitor.vision.measure import Leak
from monitor.vision.pixels import PixelGrid

MAX_CONTOURS = 20  # the largest cement regions drawn; the rest are specks


def overlay_geometry(
    start: dict,
    grid: PixelGrid,
    roi: tuple[int, int, int, int],
    shift: tuple[float, float],
    cannulas: list[Cannula],
    body: LateralBody | ApBody | None,
    cement: CementMap,
    leaks: list[Leak],
    proximity_mm: float,
) -> dict:
    """``start`` (what the measurement put there: the front) plus ``roi`` (x0, y0, x1, y1,
    full pixels), ``shift_px``, ``cannula_tips``, ``body`` (its outline: the corners, and points
    along a bowed endplate), for a lateral body ``wall`` and ``safety_line`` (its ends, and the
    line ``proximity_mm`` anterior of them), ``cement`` (contours) and ``leaks``. ``roi`` and
    cannula tips in working pixels of the frame, ``shift`` (dx, dy) working pixels, ``body`` and
    ``cement`` in the ROI's."""
    s = grid.scale
    dx, dy = shift
    x0, y0 = roi[0], roi[1]

    def full(x: float, y: float) -> list[float]:
        return grid.to_full(x, y, (x0, y0))

    out = dict(start)
    out["roi"] = [v * s for v in roi]
    out["shift_px"] = [round(dx * s, 3), round(dy * s, 3)]
    if cannulas:
        out["cannula_tips"] = [full(c.tip[0] - x0 + dx, c.tip[1] - y0 + dy) for c in cannulas]
    if body is not None:
        out["body"] = [full(x, y) for x, y in body.outline()]
        if isinstance(body, LateralBody):
            ends = body.wall_segment()
            out["wall"] = [full(x, y) for x, y in ends]
            offset = proximity_mm / grid.pixel_mm * np.hypot(1, body.posterior.a)
            inward = -body.posterior_sign * offset
            out["safety_line"] = [full(x + inward, y) for x, y in ends]
    contours, _ = cv2.findContours(cement.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out["cement"] = [
        grid.points_to_full(c, (x0, y0)).tolist()
        for c in sorted(contours, key=len, reverse=True)[:MAX_CONTOURS]
        if len(c) >= 3
    ]
    out["leaks"] = [
        {
            "site": lk.site,
            "centroid": list(lk.centroid),
            "box": list(lk.box),
            # to 1 nL: a restart compares the logged leaks with the leak size again
            # (CaseAnalyzer.recall_leak_reading), and 4 decimals put 0.00797 over 0.008 mL
            "volume_ml": round(lk.volume_ml, 6),
            # cement apart from the bolus: on a level whose darkness reads low, read from a smaller
            # size (CaseAnalyzer.apart_leak_size_ml), and so recalled after a restart
            **({"apart": True} if lk.apart else {}),
            **({"line": True} if lk.line else {}),  # a vein read as a line: held at any volume
            # a disc lobe: "above" or "below" the bolus, how far (mm), and whether its view doubts it
            **({"lobe": lk.lobe, "lobe_rise_mm": round(lk.lobe_rise_mm or 0.0, 2)} if lk.lobe else {}),
            **({"lobe_doubt": lk.doubt} if lk.lobe and lk.doubt else {}),
        }
        for lk in leaks
    ]
    return out
