"""Returns as categorical distributions over fixed bins: two-hot targets and their expectation.

The supervised-learning-enhanced critic of SL-MGAC predicts a return's distribution over discretised bins and is
trained with cross-entropy against a *two-hot* target: a scalar ``y`` between bins ``b_i <= y < b_{i+1}`` puts
weight ``(b_{i+1} - y) / (b_{i+1} - b_i)`` on ``b_i`` and the rest on ``b_{i+1}``, so that the target's expectation
is ``y`` exactly (values outside the bins are clipped to the end bins).
"""

from __future__ import annotations

import torch

__all__ = ["expected_value", "two_hot"]


def two_hot(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """The two-hot distributions (``values.shape + (len(bins),)``) whose expectations are ``values`` clipped to
    ``[bins[0], bins[-1]]``; ``bins`` ascending.

    >>> bins = torch.tensor([0.0, 1.0, 2.0, 4.0])
    >>> two_hot(torch.tensor([1.25, 3.0, -1.0, 9.0]), bins)
    tensor([[0.0000, 0.7500, 0.2500, 0.0000],
            [0.0000, 0.0000, 0.5000, 0.5000],
            [1.0000, 0.0000, 0.0000, 0.0000],
            [0.0000, 0.0000, 0.0000, 1.0000]])
    """
    if bins.ndim != 1 or len(bins) < 2 or not bool(torch.all(bins[1:] > bins[:-1])):
        raise ValueError(f"two_hot: bins must be 1-d, at least 2 and strictly ascending (got {bins.tolist()})")
    clipped = values.clamp(float(bins[0]), float(bins[-1]))
    upper = torch.searchsorted(bins, clipped.contiguous(), right=True).clamp(1, len(bins) - 1)
    lower = upper - 1
    width = bins[upper] - bins[lower]
    upper_weight = (clipped - bins[lower]) / width
    target = torch.zeros(*values.shape, len(bins), dtype=bins.dtype)
    target.scatter_(-1, lower.unsqueeze(-1), (1.0 - upper_weight).unsqueeze(-1))
    target.scatter_add_(-1, upper.unsqueeze(-1), upper_weight.unsqueeze(-1))
    return target


def expected_value(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """The expectation over ``bins`` of the categorical distributions ``softmax(logits)`` (last axis).

    >>> float(expected_value(torch.log(torch.tensor([0.0, 0.75, 0.25, 0.0]) + 1e-30), torch.tensor([0.0, 1, 2, 4])))
    1.25
    """
    return torch.softmax(logits, dim=-1) @ bins
