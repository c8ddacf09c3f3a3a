"""Test set-up: the services come from the ``eddy`` pytest plugin (pipelines/testing/plugin.py), installed with
the package; in-process workers from tests/fixtures/worker.py."""

import os

# Triton decides at import whether it interprets kernels: tests run them on the CPU (DESIGN.md §8)
os.environ.setdefault("TRITON_INTERPRET", "1")

pytest_plugins = ["pytester", "tests.fixtures.worker"]
