"""Sparse initialisation: uniform in ±1/sqrt(fan_in), then most of each unit's incoming weights set to zero."""

from __future__ import annotations

import math

import torch

__all__ = ["sparse_init_", "sparse_init_module_"]


@torch.no_grad()
def sparse_init_(weight: torch.Tensor, sparsity: float = 0.9, generator: torch.Generator | None = None) -> torch.Tensor:
    """Initialise a ``(fan_out, fan_in)`` weight in place: uniform ±1/sqrt(fan_in), then zeros.

    ``ceil(sparsity * fan_in)`` zeros per row; each row (one unit's incoming weights) gets its own random set of zeros.

    >>> w = sparse_init_(torch.empty(4, 10), generator=torch.Generator().manual_seed(0))
    >>> (w == 0).sum(dim=1).tolist()
    [9, 9, 9, 9]

    References
    ----------
    Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
    arXiv:2410.14606.
    """
    if weight.dim() != 2:
        raise ValueError(f"sparse_init_: weight must be 2-D (fan_out, fan_in) (got shape {tuple(weight.shape)})")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparse_init_: sparsity must be in [0, 1] (got {sparsity})")
    fan_in = weight.shape[1]
    bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
    values = torch.rand(weight.shape, generator=generator, dtype=torch.float64) * (2 * bound) - bound
    n_zeros = math.ceil(round(sparsity * fan_in, 9))
    if n_zeros:
        order = torch.rand(weight.shape, generator=generator).argsort(dim=1)
        values.scatter_(1, order[:, :n_zeros], 0.0)
    weight.copy_(values)
    return weight


@torch.no_grad()
def sparse_init_module_(
    module: torch.nn.Module, sparsity: float = 0.9, generator: torch.Generator | None = None
) -> None:
    """Sparse-initialise every ``nn.Linear`` in ``module`` (heads included) and zero its bias."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            sparse_init_(layer.weight, sparsity, generator)
            if layer.bias is not None:
                layer.bias.zero_()
