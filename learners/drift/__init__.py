"""Drift detection: River's detectors behind one interface, and a monitor of prequential errors."""

from learners.drift.detectors import DETECTOR_KINDS, DriftDetector, DriftSignal
from learners.drift.monitor import DriftMonitor

__all__ = ["DETECTOR_KINDS", "DriftDetector", "DriftMonitor", "DriftSignal"]
