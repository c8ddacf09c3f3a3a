"""Prequential metrics that River does not ship, with River's ``update``/``get`` surface."""

from __future__ import annotations

from collections import Counter
from typing import Any


class KappaM:
    """Kappa-M: accuracy relative to always predicting the majority class seen so far.

    ``(p0 - pm) / (1 - pm)`` where ``p0`` is the accuracy and ``pm`` the accuracy of the majority-class
    classifier. Streams with class imbalance make plain accuracy flattering; Kappa-M is the drift literature's
    standard correction (Bifet et al., 2015).

    >>> m = KappaM()
    >>> for y, p in [(1, 1), (0, 0), (1, 1), (0, 1)]:
    ...     m.update(y, p)
    >>> round(m.get(), 3)
    0.5

    References
    ----------
    Bifet, A., de Francisci Morales, G., Read, J., Holmes, G., Pfahringer, B. (2015). Efficient online evaluation
    of big data stream classifiers. KDD.
    """

    def __init__(self) -> None:
        self.n = 0
        self.correct = 0
        self.counts: Counter[Any] = Counter()

    def update(self, y_true: Any, y_pred: Any) -> None:
        """Count one prediction against its label."""
        self.n += 1
        self.correct += int(y_true == y_pred)
        self.counts[y_true] += 1

    def get(self) -> float:
        """The current Kappa-M (0 before any update; 1 is perfect, 0 is no better than the majority class)."""
        if self.n == 0:
            return 0.0
        p0 = self.correct / self.n
        pm = max(self.counts.values()) / self.n
        return 0.0 if pm == 1.0 else (p0 - pm) / (1.0 - pm)
