"""How far the posterior wall found can be trusted, and whether the 5 mm rule is armed on it.

A wall found in the wrong place gives millimetres that look as good as right ones, and a
monitor confidently wrong about the wall is worse than none. So the wall found
automatically arms the 5 mm rule only when the evidence for it is measurably good:

- **outline support**: the share of the lines searched across the body's four sides (the
  posterior and anterior walls, both endplates) whose edge lies on its side's fitted line.
  A real body's cortex is seen along most of its outline; an outline pieced together from
  soft tissue, ribs and noise agrees with itself along under half of it.
- **stillness**: how far the wall moves between the baseline frames once their breathing
  shift is taken out. Bone does not move within the body between still frames; a wall
  taken from noise does.
- **straightness**: the root-mean-square distance of the wall's edge points from its line
  (a concave wall is a little curved; reported, not gated).

Each measure maps to a 0-1 score that is 0.5 at its limit; the wall's confidence is the
lowest of them, and it arms the rule at ``ARM_AT`` (0.5) or above, unless the wall is
withheld for evidence the score does not weigh (:meth:`WallConfidence.withheld`: found on
images already holding cement). Otherwise the level is not armed for the 5 mm rule: the
operator is asked to confirm the wall or draw it ("WALL NOT CONFIRMED"), while the leak
rules stay armed, with three exceptions the caveat names: a leak off the outline anywhere but
behind the wall may be only a possible one (the outline was found with the wall; the AP view
backing it, or the body drawn on a level that held cement when monitoring began, makes it
sure: CaseAnalyzer._uncorroborated); a posterior leak is confirmed by its growth over two
frames, not at once by a front read beyond the wall (the front is not measured against a wall
not armed); and cement running back along the needle track is read only on an armed wall
(where the shaft crosses it). The limits were set on the tuning seeds
of the realistic world and the simple corpus (see README, "Wall confidence"), and are not
re-tuned on the reporting seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from monitor.vision.anatomy import LateralBody

ARM_AT = 0.5  # the confidence from which the wall found arms the 5 mm rule
MIN_OUTLINE_SUPPORT = 0.6  # tuning: right walls 0.74-0.94 (42 cases), the wrong one 0.46
SUPPORT_SPAN = 0.15  # the support score runs from 0 at the limit minus this to 1 at plus it
MAX_WALL_SPREAD_MM = 0.5  # tuning: right walls moved at most 0.07 mm
# A wall found this far apart on still baseline frames (or not found on one of them: 10 mm), on an
# outline seen along less of it than arming asks, is not seen in these images: it is not offered
# for the operator to confirm, only to draw. Bone does not move within the body between still
# frames, so such a wall is the noise's; an outline seen well with one frame that found none (a
# blurred frame) is still offered. On the realistic world's tuning seeds (5000-5035, 5100-5147)
# 12 walls were shown unconfirmed: the 3 right within 1.1 mm had moved at most 2.15 mm; 6 of the
# 9 wrong by 3.8-19 mm had moved 5 mm or more, all on outlines seen on 29-44 % of their length.
UNSEEN_WALL_SPREAD_MM = 3.0
# the first cement is at the tip: read this far beyond the wall, the wall found is wrong
FIRST_CEMENT_BEYOND_MM = 0.0
FIRST_CEMENT_ML = 0.5  # "the first cement": the plane's volume below this (0.01-0.1 mL on the bundled cases)


@dataclass(frozen=True)
class WallConfidence:
    """The evidence for a wall found automatically, its 0-1 ``score``, and whether it arms
    the 5 mm rule (``armed``); ``reasons`` say in words why not (empty when armed)."""

    outline_support: float  # share of the searched lines agreeing with the body's outline
    spread_mm: float | None  # the wall's largest move between baseline frames (None: one frame)
    straightness_mm: float  # the wall's edge points' RMS distance from its line
    score: float
    armed: bool
    reasons: tuple[str, ...]
    # not seen in these images: moved over UNSEEN_WALL_SPREAD_MM between still baseline frames, on
    # an outline seen less than arming asks; not one the operator can confirm (only draw)
    unseen: bool = False

    def as_dict(self) -> dict:
        """For the log and the wire's overlay: plain numbers, rounded."""
        return {
            "score": round(self.score, 2),
            "outline_support": round(self.outline_support, 2),
            "spread_mm": None if self.spread_mm is None else round(self.spread_mm, 2),
            "straightness_mm": round(self.straightness_mm, 2),
            "armed": self.armed,
        }

    def withheld(self, reason: str) -> WallConfidence:
        """The same evidence, not arming, for ``reason`` (evidence the score does not weigh)."""
        return replace(self, armed=False, reasons=(*self.reasons, reason))

    def describe(self) -> str:
        """One line for people: the score and why it does or does not arm."""
        why = "; ".join(self.reasons) if self.reasons else "the evidence is good"
        return f"wall confidence {self.score:.2f} ({why})"


def outline_support(body: LateralBody) -> float:
    """The share of the searched lines across the four sides whose edge agreed with the
    side's line (0 for an outline nobody searched for: drawn by the operator)."""
    lines = (body.posterior, body.anterior, body.superior, body.inferior)
    searched = sum(line.searched for line in lines)
    return sum(line.support for line in lines) / searched if searched else 0.0


def _ramp(value: float, limit: float, span: float, higher_is_better: bool) -> float:
    """0.5 at ``limit``, linear to 0 and 1 at ``span`` either side, clipped."""
    margin = (value - limit) if higher_is_better else (limit - value)
    return float(np.clip(0.5 + 0.5 * margin / span, 0.0, 1.0))


def assess_wall(
    body: LateralBody,
    pixel_mm: float,
    wall_moves_mm: list[float],
    min_support: float = MIN_OUTLINE_SUPPORT,
    max_spread_mm: float = MAX_WALL_SPREAD_MM,
) -> WallConfidence:
    """The confidence of ``body``'s posterior wall found automatically. ``wall_moves_mm``:
    for each baseline frame after the first, how far its wall (found again on it, breathing
    shift taken out) lies from the first frame's, in mm; a frame where none was found counts
    as 10 mm. ``min_support`` and ``max_spread_mm``: the limits (``Detection`` sets them)."""
    support = outline_support(body)
    spread = max((abs(m) for m in wall_moves_mm), default=None)
    scores = [_ramp(support, min_support, SUPPORT_SPAN, True)]
    reasons = []
    if support < min_support:
        reasons.append(f"the body's outline seen on only {support:.0%} of its length")
    if spread is not None:
        scores.append(_ramp(spread, max_spread_mm, max_spread_mm, False))
        if spread > max_spread_mm:
            reasons.append(f"the wall moved {spread:.1f} mm between still baseline frames")
    score = min(scores)
    unseen = spread is not None and spread > UNSEEN_WALL_SPREAD_MM and support < min_support
    return WallConfidence(
        support, spread, body.posterior.rms_px * pixel_mm, score, score >= ARM_AT, tuple(reasons), unseen
    )
