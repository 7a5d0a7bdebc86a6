"""facegnet's cosine similarities on the 0..1 scales that CompreFace and DeepStack clients expect.

Clients of those services act on fixed numbers: Double Take multiplies CompreFace's ``similarity`` (or
DeepStack's ``confidence``) by 100 and, by default, calls a face a match at 60 or more and unknown below 40.
facegnet's own decisions come from calibrated cosine thresholds instead, so the compatible APIs answer with a
score that puts facegnet's lines where the clients' defaults are:

==========================================  =====================================================
cosine similarity                           score
==========================================  =====================================================
-1 (opposite)                               0.00
``unknown_below`` (the verification         0.40 (Double Take's ``unknown`` line)
threshold, a per-comparison false-accept
rate of 1% on the development pairs)
``match_at`` (the identification threshold  0.60 (Double Take's ``match`` line, DeepStack's default
in force for that search)                   ``min_confidence`` on these routes)
1 (identical)                               1.00
==========================================  =====================================================

Between the anchors the score is linear, so it is continuous and strictly increasing: the order of
candidates never changes, and a client's own threshold (70, say) still means "more certain than facegnet's
threshold". The anchors are arguments, never constants, so the scores follow whichever threshold is in force:
the server's ``--threshold``, or a default that depends on the gallery's size.

Scores are rounded to four decimals and never rounded *across* an anchor: a face below the identification
threshold scores at most 0.5999, so a client that rounds ``similarity × 100`` to two decimals, as Double Take
does, cannot lift it to 60.
"""
from __future__ import annotations

import math
from itertools import pairwise

#: The client-side lines the two thresholds are mapped to (Double Take's defaults, ×100 = 60 and 40).
MATCH_SCORE = 0.60
UNKNOWN_SCORE = 0.40
#: The least cosine distance kept between the two anchors when a threshold in force sits at or below the
#: verification threshold (a user's lenient ``--threshold``): the band of 'maybe' scores never collapses.
MIN_BAND = 0.05
_DECIMALS = 4
_STEP = 10.0 ** -_DECIMALS


def anchors(match_at: float, verification_threshold: float) -> tuple[float, float]:
    """The two cosine anchors ``(unknown_below, match_at)`` for one threshold in force.

    ``unknown_below`` is the verification threshold when it lies at least :data:`MIN_BAND` under ``match_at``,
    else ``match_at - MIN_BAND``; both are kept inside (-1, 1) so that every segment has a positive slope.
    """
    match_at = min(max(float(match_at), -1.0 + 2 * MIN_BAND), 1.0 - MIN_BAND)
    unknown_below = min(float(verification_threshold), match_at - MIN_BAND)
    unknown_below = max(unknown_below, -1.0 + MIN_BAND)
    return unknown_below, match_at


def client_score(similarity: float, match_at: float, unknown_below: float) -> float:
    """A cosine similarity as a 0..1 score: ``unknown_below`` → 0.40, ``match_at`` → 0.60 (see the module).

    Args:
        similarity: cosine similarity in [-1, 1] (values outside are clipped; NaN or -inf, a face with no
            candidate, scores 0).
        match_at: the identification threshold in force.
        unknown_below: the lower anchor, below ``match_at`` (see :func:`anchors`).
    """
    if not unknown_below < match_at:
        raise ValueError(f"unknown_below ({unknown_below}) must be below match_at ({match_at})")
    s = float(similarity)
    if math.isnan(s):
        return 0.0
    s = min(max(s, -1.0), 1.0)
    points = ((-1.0, 0.0), (unknown_below, UNKNOWN_SCORE), (match_at, MATCH_SCORE), (1.0, 1.0))
    for (x0, y0), (x1, y1) in pairwise(points):
        if s <= x1:
            score = y0 + (y1 - y0) * (s - x0) / (x1 - x0)
            break
    else:  # pragma: no cover - s was clipped to 1
        score = 1.0
    score = round(score, _DECIMALS)
    # Never across an anchor by rounding, here or in a client that rounds to two decimals of a percent.
    if s < match_at:
        score = min(score, MATCH_SCORE - _STEP)
    if s < unknown_below:
        score = min(score, UNKNOWN_SCORE - _STEP)
    if s >= match_at:
        score = max(score, MATCH_SCORE)
    return float(min(max(score, 0.0), 1.0))


__all__ = ["MATCH_SCORE", "MIN_BAND", "UNKNOWN_SCORE", "anchors", "client_score"]
