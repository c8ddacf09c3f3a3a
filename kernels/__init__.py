"""Triton kernels, each beside the torch reference that defines what "correct" means (DESIGN.md §8).

Triton decides when it is first imported whether it compiles kernels or interprets them. Without a GPU a kernel can
only run interpreted, so on such a machine this package turns on ``TRITON_INTERPRET`` (unless the environment sets
it) before its modules import triton. It changes nothing in serving: the operators call a kernel for CUDA tensors
only, and the torch reference otherwise; it is what lets tests and users' pytest sessions that import Eddy's
pipelines (which load these modules) run the kernels on the CPU.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
