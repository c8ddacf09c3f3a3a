"""Test set-up: the services come from the ``eddy`` pytest plugin (pipelines/testing/plugin.py), installed with
the package; in-process workers from tests/fixtures/worker.py."""

import os
from pathlib import Path

import pytest

# Triton decides at import whether it interprets kernels: tests run them on the CPU (DESIGN.md §8)
os.environ.setdefault("TRITON_INTERPRET", "1")
# One intra-op thread for torch here and in the workers tests start: the suite runs the broker, Redis and workers on
# 2 cores beside torch, and tiny-tensor ops spin-waiting for a busy core run 100x slower (measured on the agent tests)
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # after the environment above (the eddy plugin may have imported it already)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # the variable is read once, when torch starts

pytest_plugins = ["pytester", "tests.fixtures.worker"]


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """A folder that outlives the run for what a test leaves to look at (screenshots, plots):
    ``$EDDY_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the repository root) / the test's name."""
    root = Path(os.environ.get("EDDY_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts")
    folder = root / request.node.name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
