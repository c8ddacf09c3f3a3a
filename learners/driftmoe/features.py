"""The router's view of a River feature dict: a fixed-order float vector that grows as the stream reveals features.

Numeric features are standardised with running (Welford) mean and variance, so that the router sees comparable
scales on any stream without a warm-up pass. String features are one-hot encoded with a vocabulary that grows as
categories arrive; a category or numeric feature first seen at predict time has no column and is left out (an
all-zero block), which is what the router saw for it on every past instance.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from numbers import Real
from typing import Any

import numpy as np


def validated_features(x: Any, owner: str) -> dict[Hashable, Any]:
    """``x`` without its missing (``None``) values, after refusing what the router and the trees cannot use: a
    non-dict, a value that is neither a number nor a string, and a non-finite number."""
    if not isinstance(x, dict):
        raise ValueError(f"{owner}: x must be a dict of feature -> value (got {type(x).__name__}: {x!r})")
    for name, value in x.items():
        if value is None or isinstance(value, str):
            continue
        if not isinstance(value, Real):
            raise ValueError(
                f"{owner}: feature {name!r} must be a number, a string or None (got {type(value).__name__}: "
                f"{value!r}); convert it to a float or a category string"
            )
        if not math.isfinite(value):
            raise ValueError(f"{owner}: feature {name!r} is not finite (got {value!r}); drop or impute it upstream")
    return {name: value for name, value in x.items() if value is not None}


class RouterInputs:
    """Online standardiser + growing one-hot vocabulary: ``learn(x)`` then ``transform(x) -> np.ndarray``.

    Columns are appended in order of first appearance and never move, so a vector made earlier is a prefix of
    the one the same instance would give now (the router pads old buffered vectors with zeros).

    >>> inputs = RouterInputs()
    >>> for x in [{"a": 1.0, "c": "red"}, {"a": 3.0, "c": "blue"}]:
    ...     _ = inputs.learn(x)
    >>> inputs.transform({"a": 3.0, "c": "blue"}).tolist()
    [1.0, 0.0, 1.0]
    >>> inputs.transform({"a": 2.0, "c": "green", "new": 5.0}).tolist()
    [0.0, 0.0, 0.0]
    """

    def __init__(self) -> None:
        self.numeric: dict[Hashable, int] = {}  # feature -> column
        self.categories: dict[tuple[Hashable, str], int] = {}  # (feature, category) -> column
        self.moments: dict[Hashable, list[float]] = {}  # feature -> [count, mean, sum of squared deviations]

    @property
    def width(self) -> int:
        """The number of columns seen so far (the router's input size)."""
        return len(self.numeric) + len(self.categories)

    def learn(self, x: dict[Hashable, Any]) -> bool:
        """Update the running moments and give unseen features and categories a column; whether anything changed
        (nothing does for known categories alone), that is whether ``transform`` may now give another vector."""
        changed = False
        for name, value in x.items():
            if isinstance(value, str):
                if (name, value) not in self.categories:
                    self.categories[(name, value)] = self.width
                    changed = True
                continue
            changed = True
            moments = self.moments.get(name)
            if moments is None:
                self.numeric[name] = self.width
                moments = self.moments[name] = [0.0, 0.0, 0.0]
            moments[0] += 1.0
            delta = value - moments[1]
            moments[1] += delta / moments[0]
            moments[2] += delta * (value - moments[1])
        return changed

    def transform(self, x: dict[Hashable, Any]) -> np.ndarray:
        """The router input for ``x`` (float32, ``width`` columns); unknown features and categories are zeros."""
        vector = np.zeros(self.width, dtype=np.float32)
        for name, value in x.items():
            if isinstance(value, str):
                column = self.categories.get((name, value))
                if column is not None:
                    vector[column] = 1.0
                continue
            column = self.numeric.get(name)
            if column is not None:
                count, mean, squares = self.moments[name]
                std = math.sqrt(squares / count)
                vector[column] = (value - mean) / std if std > 0.0 else 0.0
        return vector
