"""Prequential scoring of an operator's predictions, with the drift monitor watching their errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from river import metrics

from learners.drift import DriftMonitor
from learners.metrics import KappaM
from pipelines.spec import PipelineSpec

METRICS: dict[str, Callable[[], Any]] = {
    "accuracy": metrics.Accuracy,
    "auc": metrics.ROCAUC,
    "kappa_m": KappaM,
    "log_loss": metrics.LogLoss,
    "mae": metrics.MAE,
    "rmse": metrics.RMSE,
}


PROBABILISTIC = ("log_loss", "auc")  # metrics of the predicted probability of the positive class


@dataclass
class Scoreboard:
    """Prequential metrics and an optional drift monitor on the error stream."""

    metrics: dict[str, Any]
    monitor: DriftMonitor | None
    labelled: int = 0
    skipped: int = 0  # records read but not scored: operator.labels gives their target value no label

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> Scoreboard:
        """The metrics and detector that ``spec.monitor`` names (accuracy and no detector by default)."""
        names = list(spec.monitor.metrics) if spec.monitor else ["accuracy"]
        detector = spec.monitor.detector if spec.monitor else "none"
        return cls({name: METRICS[name]() for name in names}, DriftMonitor(detector) if detector != "none" else None)

    @property
    def drifts(self) -> int:
        """Drift alarms raised so far."""
        return self.monitor.drifts if self.monitor is not None else 0

    def update(self, y_true: Any, y_pred: Any, proba: dict[Any, float] | None) -> None:
        """Score one prediction; the drift monitor gets its error."""
        self.labelled += 1
        for name, metric in self.metrics.items():
            if name in PROBABILISTIC:
                if proba is not None:
                    metric.update(y_true, proba.get(True, proba.get(1, 0.0)))
            elif y_pred is not None:
                metric.update(y_true, y_pred)
        if self.monitor is not None and y_pred is not None:
            self.monitor.update(y_true, y_pred)

    def values(self) -> dict[str, float]:
        """Metric values by name, NaN-free."""
        out: dict[str, float] = {}
        for name, metric in self.metrics.items():
            value = float(metric.get())
            out[name] = value if math.isfinite(value) else 0.0
        return out
