"""Where the kernel tests run: compiled on a GPU, interpreted on the CPU (``TRITON_INTERPRET=1``, which
tests/conftest.py sets before anything imports triton: triton decides at import time)."""

from __future__ import annotations

import sys

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction


def kernel_device(kernel: object) -> str:
    """``"cuda"`` on a GPU; otherwise ``"cpu"`` once ``kernel`` is known to be interpreted, or the test module fails
    saying how to fix it."""
    if torch.cuda.is_available():
        return "cuda"
    if not isinstance(kernel, InterpretedFunction):
        imported = [m for m in sys.modules if m.startswith(("kernels", "inference", "learners"))]
        pytest.fail(
            f"triton was imported before TRITON_INTERPRET=1 was set (by {imported} or a doctest), so its kernels "
            "cannot run on the CPU; run with TRITON_INTERPRET=1 in the environment",
            pytrace=False,
        )
    return "cpu"
