"""MLPs with parameter-free layer normalisation before every LeakyReLU, sparse-initialised."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from learners.streamx.init import sparse_init_module_

__all__ = ["LayerNormMLP"]


class LayerNormMLP(nn.Module):
    """``Linear -> LayerNorm -> LeakyReLU`` per hidden layer, then a linear head (no norm on the head).

    The layer norm has no gain and no bias; it normalises each sample's whole activation vector. Every layer,
    heads included, is sparse-initialised (90% zeros per unit) with zero biases.

    Parameters
    ----------
    n_inputs, n_outputs
        Input and output sizes.
    hidden
        Hidden width (32 classic control, 128 MinAtar/MuJoCo, 256 Atari).
    n_hidden
        Number of hidden layers (the paper uses two).
    generator
        Seeded generator for the initialisation.

    Examples
    --------
    >>> net = LayerNormMLP(4, 2, hidden=32, generator=torch.Generator().manual_seed(0))
    >>> net(torch.zeros(4)).shape, sum(p.numel() for p in net.parameters())
    (torch.Size([2]), 1282)

    References
    ----------
    Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
    arXiv:2410.14606.
    """

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        hidden: int = 32,
        n_hidden: int = 2,
        sparsity: float = 0.9,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("n_inputs", n_inputs), ("n_outputs", n_outputs), ("hidden", hidden)):
            if value < 1:
                raise ValueError(f"LayerNormMLP: {name} must be >= 1 (got {value})")
        sizes = [n_inputs] + [hidden] * n_hidden
        self.hidden_layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.head = nn.Linear(sizes[-1], n_outputs)
        sparse_init_module_(self, sparsity, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden_layers:
            x = layer(x)
            x = F.leaky_relu(F.layer_norm(x, x.shape[-1:]))
        return self.head(x)
