"""Recommend only what can be watched: the top-k candidates among those live at the request time."""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping
from typing import TypeVar

from learners._state import require

Key = TypeVar("Key", bound=Hashable)


def live_only(scores: Mapping[Key, float], live: Collection[Key], k: int) -> list[tuple[Key, float]]:
    """The ``k`` best-scored candidates that are in ``live``, best first (ties keep the order of ``scores``).

    A scored candidate that is not live (its room ended, or has not started) is never recommended, whatever its
    score; a live id without a score is not a candidate.

    >>> live_only({"r1": 0.9, "r2": 0.4, "r3": 0.7, "r4": 0.7}, live={"r2", "r3", "r4"}, k=2)
    [('r3', 0.7), ('r4', 0.7)]
    >>> live_only({"r1": 0.9}, live=set(), k=3)
    []
    """
    require(isinstance(k, int) and k >= 1, f"live_only: k must be an int >= 1 (got {k!r})")
    bad = {key: score for key, score in scores.items() if not math.isfinite(score)}
    require(not bad, f"live_only: scores must be finite (got {bad}); score those candidates again or drop them")
    ranked = sorted((key for key in scores if key in live), key=lambda key: -scores[key])  # sorted() is stable
    return [(key, scores[key]) for key in ranked[:k]]
