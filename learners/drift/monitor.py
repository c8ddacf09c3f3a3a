"""A pipeline's drift monitor: prequential errors in, drift alarms (with where they fell) out."""

from __future__ import annotations

from typing import Any

from learners.drift.detectors import DriftDetector, DriftSignal

MAX_ALARMS = 1000  # alarm positions kept (the dashboard draws them); older ones drop off


class DriftMonitor:
    """Feeds each labelled prediction's error to a detector and remembers the alarms.

    The error is 0/1 for classification (``y_true != y_pred``) and ``|y_true - y_pred|`` for regression (a float
    label). Positions count labelled predictions since the monitor started.

    >>> monitor = DriftMonitor("adwin")
    >>> for i in range(3000):
    ...     _ = monitor.update(True, True if i < 1500 else False)
    >>> monitor.alarms[0] >= 1500, monitor.statistics()["drifts"] >= 1
    (True, True)
    """

    def __init__(self, kind: str = "adwin", **params: Any) -> None:
        self.detector = DriftDetector(kind, **params)
        self.alarms: list[int] = []

    @staticmethod
    def error(y_true: Any, y_pred: Any) -> float:
        """0/1 for labels, absolute error for float targets."""
        if isinstance(y_true, float) and not isinstance(y_pred, bool) and y_pred is not None:
            return abs(y_true - float(y_pred))
        return float(y_true != y_pred)

    def update(self, y_true: Any, y_pred: Any) -> DriftSignal:
        """Score one prediction; an alarm is remembered at its position."""
        signal = self.detector.update(self.error(y_true, y_pred))
        if signal.drift:
            self.alarms = [*self.alarms[-(MAX_ALARMS - 1) :], signal.n]
        return signal

    @property
    def drifts(self) -> int:
        """Alarms raised so far."""
        return self.detector.drifts

    def statistics(self) -> dict[str, float]:
        """The detector's statistics, for metrics and the dashboard."""
        return self.detector.statistics()
