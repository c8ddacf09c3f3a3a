"""Real services for the tests: the embedded broker, redis-server, MLflow on sqlite, in-process workers."""

import os

# Triton decides at import whether it interprets kernels: tests run them on the CPU (DESIGN.md §8)
os.environ.setdefault("TRITON_INTERPRET", "1")

pytest_plugins = ["tests.fixtures.broker", "tests.fixtures.mlflow", "tests.fixtures.redis", "tests.fixtures.worker"]
