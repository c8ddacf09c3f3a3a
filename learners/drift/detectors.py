"""River's drift detectors (ADWIN, KSWIN, PageHinkley, DDM) behind one interface: ``update(value) -> DriftSignal``.

River's detectors differ in what they expose (DDM warns, ADWIN keeps a window, KSWIN a p-value) and in what they
accept (DDM takes 0/1 errors only). A pipeline's monitor wants one shape: a signal per value, counts of alarms, and
a few statistics for the dashboard and ``/metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from river import drift
from river.drift import binary

DETECTOR_KINDS: dict[str, Callable[..., Any]] = {
    "adwin": drift.ADWIN,
    "kswin": drift.KSWIN,
    "page_hinkley": drift.PageHinkley,
    "ddm": binary.DDM,
}
BINARY_KINDS = frozenset({"ddm"})  # detectors that take 0/1 errors only


@dataclass(frozen=True, slots=True)
class DriftSignal:
    """What one value told the detector: a drift, a warning (DDM only), and the mean since the last drift."""

    drift: bool
    warning: bool
    mean: float
    n: int


class DriftDetector:
    """One River detector, counted: ``signal = detector.update(error)``.

    Parameters
    ----------
    kind
        ``adwin``, ``kswin``, ``page_hinkley`` or ``ddm``.
    params
        Keyword arguments for the River detector (e.g. ``delta=0.002`` for ADWIN).

    >>> detector = DriftDetector("adwin")
    >>> signals = [detector.update(0.0 if i < 1000 else 1.0) for i in range(2000)]
    >>> detector.drifts >= 1 and 1000 <= detector.last_drift_at < 1200
    True
    >>> sorted(detector.statistics())
    ['drifts', 'mean', 'width']

    References
    ----------
    Bifet, A., Gavaldà, R. (2007). Learning from Time-Changing Data with Adaptive Windowing. SDM.
    Gama, J. et al. (2004). Learning with Drift Detection. SBIA.
    """

    def __init__(self, kind: str, **params: Any) -> None:
        if kind not in DETECTOR_KINDS:
            raise ValueError(f"unknown drift detector {kind!r}; choose one of {', '.join(sorted(DETECTOR_KINDS))}")
        try:
            self.detector = DETECTOR_KINDS[kind](**params)
        except TypeError as exc:
            raise ValueError(f"drift detector {kind!r} does not take these parameters {params}: {exc}") from None
        self.kind = kind
        self.n = 0
        self.drifts = 0
        self.last_drift_at: int | None = None
        self._sum = 0.0
        self._count = 0

    def update(self, value: float) -> DriftSignal:
        """Feed one value (a 0/1 error for DDM; any finite number for the others)."""
        if not math.isfinite(value):
            raise ValueError(f"drift detector {self.kind!r}: value must be finite (got {value})")
        if self.kind in BINARY_KINDS and value not in (0, 1):
            raise ValueError(f"drift detector {self.kind!r} takes 0/1 errors (got {value}); use adwin for others")
        self.detector.update(value)
        self.n += 1
        drifted = bool(self.detector.drift_detected)
        if drifted:
            self.drifts += 1
            self.last_drift_at = self.n
            self._sum, self._count = 0.0, 0
        self._sum += value
        self._count += 1
        warning = bool(getattr(self.detector, "warning_detected", False))
        return DriftSignal(drifted, warning, self._sum / self._count, self.n)

    def statistics(self) -> dict[str, float]:
        """Alarm count, mean since the last drift, and what the detector exposes (ADWIN width, KSWIN p-value)."""
        stats = {"drifts": float(self.drifts), "mean": self._sum / self._count if self._count else 0.0}
        if self.kind == "adwin":
            stats["width"] = float(self.detector.width)
        if self.kind == "kswin":
            stats["p_value"] = float(getattr(self.detector, "p_value", 1.0))
        return stats
