"""Drift detectors behind one interface: alarms after known drifts, few on a stationary stream, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from learners.drift import DETECTOR_KINDS, DriftDetector, DriftMonitor

DRIFTS = (4000, 8000)  # the error rate jumps 0.1 -> 0.4 -> 0.1 at these positions
MAX_DELAY = 400


def error_stream(kind: str, n: int, seed: int, drifts: tuple[int, ...] = ()) -> np.ndarray:
    """0/1 errors at rate 0.1, switching to 0.4 and back at each drift; for KSWIN, whose Kolmogorov-Smirnov test
    needs continuous values, absolute errors around 0.5 that shift to 1.5 and back."""
    shifted = np.zeros(n, dtype=bool)
    for k, start in enumerate(drifts):
        end = drifts[k + 1] if k + 1 < len(drifts) else n
        shifted[start:end] = k % 2 == 0
    rng = np.random.default_rng(seed)
    if kind == "kswin":
        return np.abs(rng.normal(np.where(shifted, 1.5, 0.5), 0.3))
    return (rng.random(n) < np.where(shifted, 0.4, 0.1)).astype(float)


@pytest.mark.parametrize("kind", sorted(DETECTOR_KINDS))
def test_every_detector_alarms_soon_after_each_drift(kind: str) -> None:
    detector = DriftDetector(kind)
    alarms = [s.n for s in map(detector.update, error_stream(kind, 12_000, seed=1, drifts=DRIFTS)) if s.drift]
    for drift in DRIFTS[:1] if kind == "ddm" else DRIFTS:  # DDM watches for rising error only
        assert any(drift <= a <= drift + MAX_DELAY for a in alarms), (kind, drift, alarms)
    assert detector.drifts == len(alarms) and detector.last_drift_at == alarms[-1]


@pytest.mark.parametrize(("kind", "most"), [("adwin", 0), ("ddm", 2), ("page_hinkley", 1), ("kswin", 30)])
def test_false_alarms_on_a_stationary_stream_stay_few(kind: str, most: int) -> None:
    """Measured on 20,000 values (seeds 2-4): ADWIN 0, DDM 1-2, PageHinkley 0-1, KSWIN 22-26 (it tests every value
    at alpha 0.005, so it alarms far more often than the others)."""
    detector = DriftDetector(kind)
    for value in error_stream(kind, 20_000, seed=2):
        detector.update(value)
    assert detector.drifts <= most, (kind, detector.drifts)


def test_monitor_scores_labels_and_float_targets_and_keeps_alarm_positions() -> None:
    monitor = DriftMonitor("adwin")
    assert monitor.error(True, False) == 1.0 and monitor.error("a", "a") == 0.0 and monitor.error(2.5, 1.0) == 1.5
    for i in range(3000):
        monitor.update(1, 1 if i < 1500 else 0)
    assert monitor.alarms and 1500 <= monitor.alarms[0] <= 1500 + MAX_DELAY
    stats = monitor.statistics()
    assert stats["drifts"] == monitor.drifts and stats["mean"] == 1.0 and stats["width"] > 0


def test_bad_configuration_and_values_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="unknown drift detector 'cusum'; choose one of adwin, ddm"):
        DriftDetector("cusum")
    with pytest.raises(ValueError, match="does not take these parameters"):
        DriftDetector("adwin", window=3)
    with pytest.raises(ValueError, match="takes 0/1 errors"):
        DriftDetector("ddm").update(0.5)
    with pytest.raises(ValueError, match="must be finite"):
        DriftDetector("adwin").update(float("nan"))
