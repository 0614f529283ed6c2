"""Why a result is not a plain measurement: typed caveats, rendered to text only for people.

A result carries a tuple of :class:`Caveat`; each has a stable :class:`CaveatCode` that
programs test (the viewer's UNCALIBRATED readout, the audit's rows, a restarted analyzer's
"scatter not seen") and a detail for the operator and QA. The wire's ``status`` (version 1)
is their rendering, ``"code: detail"`` joined by ``"; "``, ``"ok"`` when there are none,
``"baseline"`` while the baseline builds; it is never parsed back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class CaveatCode(str, Enum):
    """What kind of caveat; the value is the stable name on the wire and in the log."""

    # the frame was not measured
    BLANK_FRAME = "blank-frame"  # no contrast: no X-ray, or a grabber showing a flat screen
    IMAGE_HELD = "image-held"  # no new exposure: the C-arm's last image held, or a frame sent again
    SATURATED_FRAME = "saturated-frame"  # most pixels at the maximum
    FRAME_SHAPE = "frame-shape"  # not the size of the stream's first frame
    IMAGE_CHANGED = "image-changed"  # no longer the image the baseline was: flipped, turned, zoomed
    BLURRED_FRAME = "blurred-frame"  # blurred against the baseline past reading (motion, processing)
    ANALYSIS_FAILED = "analysis-failed"  # the analysis raised; the analyzer went on
    # the frame was measured, without some of what the rules need
    NO_CANNULA = "no-cannula"  # no cannula found: no region of interest, no body
    NO_ANATOMY = "no-anatomy"  # no body outline: no wall distance; leaks only as cement apart (lateral)
    UNCALIBRATED = "uncalibrated"  # no millimetre scale: no wall distance
    OPERATOR_WALL_UNUSED = "operator-wall-unused"  # the operator's wall could not be placed
    OPERATOR_BOX_UNUSED = "operator-box-unused"  # the operator's body box could not be placed
    WALL_NOT_CONFIRMED = "wall-not-confirmed"  # the wall found is not trusted: 5 mm rule not armed
    DISTANCE_JUMP = "distance-jump"  # the front jumped nearer than cement travels: not alarmed on yet
    # the frame was measured; what the numbers rest on
    LOG_SCALE_GUESSED = "log-scale-guessed"  # a LOG detector's scale assumed, not measured
    CEMENT_IN_BASELINE = "cement-in-baseline"  # cement present before monitoring began
    SCATTER_NOT_SEEN = "scatter-not-seen"  # volumes read without scatter correction
    VOLUME_BELOW_SHAPE = "volume-below-shape"  # the darkness's volume under the shape's: reads low
    VOLUME_ABOVE_SHAPE = "volume-above-shape"  # the darkness's volume well over the shape's: reads high
    VOLUME_UNCHECKED = "volume-unchecked"  # no shape to check the darkness's volume by: may read low
    VOLUME_ONE_VIEW = "volume-one-view"  # the cement's shape read from one view alone: a wider interval
    VOLUME_HELD = "volume-held"  # the volume read fell under half the level's largest: that one is said
    IMAGE_CLIPPED = "image-clipped"  # much of the region clipped white: no cement read there
    # the image's contrast changed against the baseline's (a display's contrast, the kV): taken out
    CONTRAST_CHANGED = "contrast-changed"
    # the image is blurred against the baseline's (motion during the exposure, image processing
    # changed): the baseline blurred alike before comparing
    BLUR_MATCHED = "blur-matched"
    CALIBRATION_NOT_LOADED = "calibration-not-loaded"  # frames from a profile the analyzer lacks
    # the other view has sent no frame for a while (a grabber unplugged, a plane stopped, a
    # single-plane C-arm turned to the other view): this view is judged and measured alone
    VIEW_SILENT = "view-silent"

    def __str__(self) -> str:
        return self.value


# How a code is written in the rendered status, where wire version 1 had a common word.
_PREFIX = {
    CaveatCode.BLANK_FRAME: "skipped",
    CaveatCode.IMAGE_HELD: "skipped",
    CaveatCode.SATURATED_FRAME: "skipped",
    CaveatCode.IMAGE_CHANGED: "skipped",
    CaveatCode.BLURRED_FRAME: "skipped",
    CaveatCode.FRAME_SHAPE: "error",
    CaveatCode.ANALYSIS_FAILED: "error",
}
NOT_MEASURED = frozenset(_PREFIX)
MAX_DETAIL = 1000  # characters of one caveat's detail on the wire
MAX_CAVEATS = 32  # per result on the wire


@dataclass(frozen=True)
class Caveat:
    code: CaveatCode
    detail: str  # for people: what happened and what it means for the measurement

    def __str__(self) -> str:
        return f"{_PREFIX.get(self.code, self.code.value)}: {self.detail}"

    def as_wire(self) -> dict:
        return {"code": self.code.value, "detail": self.detail}

    @staticmethod
    def from_wire(raw) -> Caveat:
        """A caveat from its wire form; ValueError naming what is wrong."""
        if not isinstance(raw, dict) or set(raw) != {"code", "detail"}:
            raise ValueError(f"caveat {raw!r}: expected code and detail")
        code, detail = raw["code"], raw["detail"]
        if not isinstance(detail, str) or len(detail) > MAX_DETAIL:
            raise ValueError(f"caveat detail {detail!r}")
        if not isinstance(code, str) or code not in {c.value for c in CaveatCode}:
            raise ValueError(f"caveat code {code!r} is not one of {', '.join(c.value for c in CaveatCode)}")
        return Caveat(CaveatCode(code), detail)


def render_status(caveats, baseline: bool = False) -> str:
    """The wire's version-1 ``status``: ``"baseline"``, ``"ok"`` or the caveats' text."""
    if baseline:
        return "baseline"
    return "; ".join(map(str, caveats)) or "ok"
