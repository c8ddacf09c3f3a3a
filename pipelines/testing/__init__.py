"""Testing pipelines: an in-process harness, golden files, and the ``eddy`` pytest plugin (``plugin.py``)."""

from pipelines.testing.golden import Golden, GoldenMismatch
from pipelines.testing.harness import HarnessError, HarnessResult, PipelineHarness, WorkerThread

__all__ = ["Golden", "GoldenMismatch", "HarnessError", "HarnessResult", "PipelineHarness", "WorkerThread"]
