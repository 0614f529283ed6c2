"""Drawing a result's overlay on a frame, for reports and the headless demo.

Pure: an 8-bit frame and a result's fields in, a BGR image out. Colours
follow the alarm conventions: red is high priority (breach, leak), yellow the
5 mm safety line and medium priority, green the body outline, cyan cement.
"""

from __future__ import annotations

import cv2
import numpy as np

from monitor.vision.caveats import CaveatCode

RED, YELLOW, GREEN, CYAN, WHITE = (40, 40, 230), (0, 215, 255), (80, 200, 80), (230, 200, 40), (235, 235, 235)
VIOLET = (255, 128, 192)  # BGR: the wall found but not confirmed, as the live view draws it


def _pts(points) -> np.ndarray:
    return np.round(np.asarray(points, np.float32)).astype(np.int32)


def draw(display: np.ndarray, result: dict, title: str = "", scale: float = 1.0) -> np.ndarray:
    """Overlay of one plane's result on its 8-bit frame, resized by ``scale``."""
    # Over 60 lines on purpose: the overlay's elements drawn in the order they stack (body, 5 mm line,
    # wall, cement, front, leak boxes, leak labels, readout panel), each a few lines.
    img = cv2.cvtColor(display, cv2.COLOR_GRAY2BGR) if display.ndim == 2 else display.copy()
    if scale != 1.0:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    o = result.get("overlay") or {}

    def s(points):
        return _pts(np.asarray(points, np.float32) * scale)

    thick = max(1, int(round(2 * scale)))
    if "body" in o:
        cv2.polylines(img, [s(o["body"])], True, GREEN, thick, cv2.LINE_AA)
    if "safety_line" in o:
        a, b = s(o["safety_line"])
        _dashed(img, tuple(a), tuple(b), YELLOW, thick)
    if "wall" in o and o.get("wall_state") == "not-confirmed":  # a candidate, not a wall to trust
        a, b = s(o["wall"])
        _dashed(img, tuple(a), tuple(b), VIOLET, thick + 1)
        text = "WALL NOT CONFIRMED"  # on a dark backdrop beside the wall's cranial end
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        x = int(min(max(4, a[0] - tw - 10), img.shape[1] - tw - 4))
        y = int(max(th + 6, a[1]))
        cv2.rectangle(img, (x - 3, y - th - 4), (x + tw + 3, y + 4), (24, 24, 24), -1)
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, VIOLET, 1, cv2.LINE_AA)
    elif "wall" in o:
        a, b = s(o["wall"])
        cv2.line(img, tuple(a), tuple(b), RED, thick + 1, cv2.LINE_AA)
    for contour in o.get("cement", []):
        cv2.polylines(img, [s(contour)], True, CYAN, thick, cv2.LINE_AA)
    if "front" in o:
        front = s([o["front"]])[0]
        cv2.drawMarker(
            img, (int(front[0]), int(front[1])), RED, cv2.MARKER_TILTED_CROSS, 14 * thick // 2 + 8, thick
        )
    for leak in drawn_leaks(o.get("leaks", [])):
        x, y, w, h = (np.asarray(leak["box"], np.float32) * scale).astype(int)
        cv2.rectangle(img, (x - 4, y - 4), (x + w + 4, y + h + 4), RED, thick)
    # labels on a dark backdrop, legible over the wall, the bolus and bone
    for leak in labelled_leaks(drawn_leaks(o.get("leaks", []))):
        x, y, w, _ = (np.asarray(leak["box"], np.float32) * scale).astype(int)
        _label(img, f"{leak_name(leak.get('possible', False))} {leak['site']}", x + w + 10, y + 10, 0.5)
    label = front_label(o, result.get("distance_mm")) if "front" in o else ""
    if label:
        _label(img, label, int(front[0]) + 10, int(front[1]) + 22, 0.45)
    lines = [title] if title else []
    d = result.get("distance_mm")
    if d is not None:
        lines.append(f"wall {d:+.1f} mm" + (" (beyond it)" if d < 0 else ""))
    v = result.get("volume_ml")
    if v is not None:
        low, high = result.get("volume_low_ml"), result.get("volume_high_ml")
        interval = "" if low is None or high is None else f" ({low:.2f}-{high:.2f})"
        lines.append(f"volume {v:.2f} mL{interval}")
    status = result.get("status", "")
    if status and status != "ok":
        lines.append(short_status(result))
    if lines:  # readouts on a dark panel: legible over bone and over bright soft tissue alike
        width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)[0][0] for t in lines)
        panel = img[0 : 12 + 22 * len(lines), 0 : min(img.shape[1], width + 16)]
        panel[:] = (panel * 0.35).astype(img.dtype)
    for i, text in enumerate(lines):
        cv2.putText(img, text, (8, 22 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6, WHITE, 1, cv2.LINE_AA)
    if no_wall_found(result):  # as the live view says it: the 5 mm rule was off, not passed
        text = NO_WALL_LABEL
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        x, y = 8, 12 + 22 * len(lines) + th + 10
        cv2.rectangle(img, (x - 3, y - th - 4), (x + tw + 3, y + 4), (24, 24, 24), -1)
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, VIOLET, 1, cv2.LINE_AA)
    return img


NO_WALL_LABEL = "NO WALL FOUND: 5 mm rule OFF"


def no_wall_found(result: dict) -> bool:
    """Whether a lateral result was measured with no posterior wall at all (none found, none
    drawn: the no-anatomy caveat and no wall in its overlay), so that its picture says so as the
    live view's readout does ("NO WALL FOUND"); a wall found but not confirmed is drawn dashed
    and labelled instead."""
    if result.get("plane") != "lateral" or result.get("status") == "baseline":
        return False
    if "wall" in (result.get("overlay") or {}):
        return False
    # (a result logged before results carried their caveats, 2026-12, is not labelled)
    return any(c["code"] == CaveatCode.NO_ANATOMY.value for c in result.get("caveats") or ())


def _label(img: np.ndarray, text: str, x: int, y: int, size: float) -> None:
    """``text`` in red on a dark backdrop, its baseline's left end at (x, y), kept inside ``img``."""
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)
    x, y = min(x, img.shape[1] - tw - 4), max(y, th + 4)
    cv2.rectangle(img, (x - 3, y - th - 4), (x + tw + 3, y + 4), (24, 24, 24), -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, size, RED, 1, cv2.LINE_AA)


def front_label(overlay: dict, distance_mm: float | None = None) -> str:
    """What the front's marker is labelled with: where the nearest cement was read ("" on the
    bolus's own edge in front of the wall): "behind wall" wherever the distance is negative (cement
    read behind the wall in a confirmed leak, or the bolus's own front beyond it), "under cannula"
    for the end of the cement read along the shaft."""
    if overlay.get("front_behind_wall") or (distance_mm is not None and distance_mm < 0):
        return "behind wall"
    return "under cannula" if overlay.get("front_under_cannula") else ""


def leak_name(possible: bool) -> str:
    """What a leak is called on every screen: one read off a lateral outline whose wall is not
    confirmed, not backed by the AP view, is a possible leak (a medium alarm; its overlay leak
    carries "possible": true)."""
    return "POSSIBLE LEAK" if possible else "LEAK"


def drawn_leaks(leaks: list[dict]) -> list[dict]:
    """The leaks to draw: all but a disc lobe the other view did not show ("unbacked", see
    :mod:`monitor.vision.lobes`), which is no leak on its own."""
    return [lk for lk in leaks if not lk.get("unbacked")]


def labelled_leaks(leaks: list[dict]) -> list[dict]:
    """The leak pieces that carry a label: the largest of each site (a leak in several
    pieces is not several leaks)."""
    largest: dict[str, dict] = {}
    for leak in sorted(leaks, key=lambda lk: -lk.get("volume_ml", 0.0)):
        largest.setdefault(leak["site"], leak)
    return list(largest.values())


def short_status(result: dict, width: int = 40) -> str:
    """A result's status for a readout panel: whole if it fits, else its caveats' codes, each
    once ("scatter-not-seen; cement-in-baseline": cement both found in the baseline and grown
    over it is two caveats of one code), the details being in the log."""
    status = result.get("status", "")
    if len(status) <= width:
        return status
    caveats = result.get("caveats")
    if caveats is None:  # logged before results carried their caveats (2026-12)
        return status[:width]
    return "; ".join(dict.fromkeys(c["code"] for c in caveats))[:width]


def _dashed(img, a, b, colour, thickness, dash: int = 8) -> None:
    a, b = np.array(a, float), np.array(b, float)
    length = np.linalg.norm(b - a)
    if length < 1:
        return
    step = (b - a) / length
    for start in np.arange(0, length, 2 * dash):
        p = a + step * start
        q = a + step * min(start + dash, length)
        cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, thickness, cv2.LINE_AA)


def alarm_banner(width: int, alarms: list[dict]) -> np.ndarray:
    """A strip naming the alarms raised on this frame: red for high priority, yellow for medium."""
    strip = np.full((34, width, 3), 30, np.uint8)
    if not alarms:
        return strip
    high = any(a["priority"] == "high" for a in alarms)
    strip[:] = RED if high else YELLOW
    words = []
    for a in alarms:
        if a["kind"] == "proximity":
            words.append(f"{a['priority'].upper()}: cement {a['distance_mm']:.1f} mm from the posterior wall")
        else:
            leak = leak_name(a["priority"] != "high").lower()
            words.append(f"{a['priority'].upper()}: {leak} ({a['site']}) in {a['plane']}")
    cv2.putText(
        strip,
        " | ".join(words)[:110],
        (8, 23),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6,
        (255, 255, 255) if high else (0, 0, 0),
        2,
        cv2.LINE_AA,
    )
    return strip
