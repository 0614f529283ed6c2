"""The vertebral body over time: moved with the breathing, bounded for measurement, and
replaced by what the operator draws.

Pure functions on the outlines of :mod:`monitor.vision.anatomy`. Coordinates are working
pixels; "ROI" coordinates are working pixels relative to a region of interest's corner.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from monitor.vision.anatomy import ApBody, Cannula, LateralBody, Line

BODY_MARGIN_MM = 10.0  # around the body found: the discs, the veins and soft tissue leaks enter first
CANAL_MARGIN_MM = 15.0  # behind the posterior wall: the epidural space and the needle's track
NOMINAL_BODY_DEPTH_MM = 30.0  # for a wall drawn without a body found: only bounds the leak search
NOMINAL_TIP_TO_FRONT_MM = 10.0  # ... and its front at least this far in front of the cannula tip
MIN_WALL_SPAN_MM = 5.0  # the operator's wall points, cranio-caudally apart at least
MIN_BOX_SIDE_MM = 8.0  # the operator's body box, on each side at least
INSIDE_SHARE = 0.97  # of the cement in the baseline that must lie in the body found
INSIDE_MARGIN_MM = 1.0  # ... with the outline grown by this much


def shift_line(line: Line, dx: float, dy: float) -> Line:
    """``line`` translated by (dx, dy) pixels (its bow with it)."""
    across, along = (dy, dx) if line.vertical else (dx, dy)  # x = a y + b, or y = a x + b
    bow = line.bow
    if bow is not None:
        moved = {"t0": bow.t0 + across, "lo": bow.lo + across, "hi": bow.hi + across}
        bow = replace(bow, b=bow.b + along - bow.a * across, **moved)
    return replace(line, b=line.b + along - line.a * across, bow=bow)


def shifted_body(body: LateralBody | ApBody, dx: float, dy: float) -> LateralBody | ApBody:
    """``body`` translated by (dx, dy) pixels: into a window's coordinates, or with the breathing."""
    if isinstance(body, LateralBody):
        lines = (body.posterior, body.anterior, body.superior, body.inferior)
        return LateralBody(*(shift_line(line, dx, dy) for line in lines), body.posterior_sign)
    return ApBody(
        *(shift_line(line, dx, dy) for line in (body.left, body.right, body.superior, body.inferior))
    )


def body_roi(
    body: LateralBody | ApBody, within: tuple[int, int, int, int], pixel_mm: float
) -> tuple[int, int, int, int]:
    """The region every frame is measured in: the body and the margins cement crosses first
    when it leaves it (wider behind the posterior wall, towards the canal), clipped to
    ``within`` (x0, y0, x1, y1), the ROI around the cannula tip. Working pixels.

    Around the outline with straight endplates: a bowed one's corners lie within
    ENDPLATE_MAX_SAG_MM of it, inside the margin, and a region grown with them takes in more of
    what moves around the body (on a cleft render, a neighbour's endplate read as cement)."""
    if isinstance(body, LateralBody):
        body = replace(body, superior=body.superior.straight(), inferior=body.inferior.straight())
    corners = body.polygon()
    low = corners.min(axis=0) - BODY_MARGIN_MM / pixel_mm
    high = corners.max(axis=0) + BODY_MARGIN_MM / pixel_mm
    if isinstance(body, LateralBody):
        extra = (CANAL_MARGIN_MM - BODY_MARGIN_MM) / pixel_mm
        if body.posterior_sign > 0:
            high[0] += extra
        else:
            low[0] -= extra
    x0, y0, x1, y1 = within
    return (
        max(x0, int(np.floor(low[0]))),
        max(y0, int(np.floor(low[1]))),
        min(x1, int(np.ceil(high[0]))),
        min(y1, int(np.ceil(high[1]))),
    )


def lies_inside(
    mask: np.ndarray, body: LateralBody | ApBody, origin: tuple[int, int], pixel_mm: float
) -> bool:
    """Whether the cement ``mask`` (ROI pixels, ROI corner at working pixel ``origin``) lies in
    ``body``: cement found in the baseline outside the body found means the outline was most
    likely taken from the cement's own edge."""
    outline = np.zeros(mask.shape, np.uint8)
    corners = body.outline() - np.array(origin, np.float64)
    cv2.fillPoly(outline, [np.round(corners).astype(np.int32)], 1)
    margin = int(round(INSIDE_MARGIN_MM / pixel_mm))
    outline = cv2.dilate(outline, np.ones((2 * margin + 1,) * 2, np.uint8)).astype(bool)
    return np.count_nonzero(mask & outline) >= INSIDE_SHARE * np.count_nonzero(mask)


def body_from_wall(
    ends: tuple[tuple[float, float], tuple[float, float]],
    body: LateralBody | ApBody | None,
    cannula: Cannula | None,
    pixel_mm: float,
) -> tuple[LateralBody, str]:
    """The lateral body with the operator's posterior wall through ``ends`` (working pixels,
    at the baseline's position): the body found with its wall replaced, or, with none found,
    a nominal body anterior of the wall, endplates at its ends. Returns it and what was done.
    ValueError when the points are too close or the body side cannot be told."""
    (x1, y1), (x2, y2) = ends
    if abs(y2 - y1) < MIN_WALL_SPAN_MM / pixel_mm:
        raise ValueError(
            f"the wall's two points must be at least {MIN_WALL_SPAN_MM:g} mm apart cranio-caudally"
        )
    (x1, y1), (x2, y2) = sorted(((x1, y1), (x2, y2)), key=lambda p: p[1])
    a = (x2 - x1) / (y2 - y1)
    wall = Line(a, x1 - a * y1, True, 0)
    if isinstance(body, LateralBody):
        return replace(body, posterior=wall), "posterior wall replaced by the operator's"
    if cannula is None:
        raise ValueError("no cannula found, so the body side of the wall is unknown")
    tx, ty = cannula.tip
    sign = 1 if wall.at(ty) > tx else -1  # the tip is inside the body, anterior of the wall
    # the front at least NOMINAL_TIP_TO_FRONT_MM in front of the tip (a tip is put in the body's
    # front third)
    tip_depth = sign * (wall.at(ty) - tx)
    depth = max(NOMINAL_BODY_DEPTH_MM / pixel_mm, tip_depth + NOMINAL_TIP_TO_FRONT_MM / pixel_mm)
    nominal = LateralBody(
        wall, Line(a, wall.b - sign * depth, True, 0), Line(0.0, y1, False, 0), Line(0.0, y2, False, 0), sign
    )
    return nominal, "no body had been found: operator's wall used, endplates at its ends"


def body_from_box(
    plane: str, corner: tuple[float, float], size: tuple[float, float], cannula: Cannula | None
) -> LateralBody | ApBody:
    """The operator's body box, corner (x, y) and size (width, height) in working pixels at
    the baseline's position. Lateral: its posterior side is the side the cannula comes in
    from (ValueError without a cannula)."""
    x0, y0 = corner
    w, h = size
    left, right = Line(0.0, x0, True, 0), Line(0.0, x0 + w, True, 0)
    top, bottom = Line(0.0, y0, False, 0), Line(0.0, y0 + h, False, 0)
    if plane != "lateral":
        return ApBody(left, right, top, bottom)
    if cannula is None:
        raise ValueError("no cannula found, so the box's posterior side is unknown: draw the wall")
    sign = 1 if cannula.direction[0] >= 0 else -1  # the cannula comes in from posterior
    posterior, anterior = (right, left) if sign > 0 else (left, right)
    return LateralBody(posterior, anterior, top, bottom, sign)
