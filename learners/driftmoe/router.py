"""DriftMoE's router: an MLP ``d -> h1 -> h2 -> E`` trained with BCE against the experts' correctness mask.

Two forward paths share one set of weights. Routing one instance (every ``predict_one`` and ``learn_one``) runs a
numpy forward over views of the torch parameters, because torch's per-call dispatch costs more than the arithmetic
on a batch of one. Training runs in torch on a buffered mini-batch, with dropout masks drawn from the router's own
``torch.Generator`` so that runs are reproducible without touching global RNG state.

The input layer grows as the stream reveals features (and, for MoE-Task, the output layer as it reveals classes).
New weights are drawn Xavier-uniform for the new fan-in/fan-out from the router's generator; since a column that did
not exist was an all-zero input on every past instance, growing leaves the router's function on past inputs
unchanged. Adam's moment estimates are zero-padded to the new shapes, so optimisation continues where it was.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class Router:
    """Growable MLP router with a numpy inference path and a torch training path.

    Parameters
    ----------
    n_inputs, n_outputs
        Initial input width (0 is fine: the layer grows) and number of experts.
    hidden
        Hidden layer widths (at least one).
    dropout
        Dropout probability after each hidden ReLU, applied in training only.
    lr
        Adam learning rate.
    generator
        The source of initial weights and dropout masks.

    >>> router = Router(2, 3, hidden=(8, 4), dropout=0.2, lr=1e-2, generator=torch.Generator().manual_seed(0))
    >>> router.scores(np.ones(2, dtype=np.float32)).shape
    (3,)
    >>> loss = router.fit(np.ones((4, 2), dtype=np.float32), np.eye(3, dtype=np.float32)[[0, 0, 1, 0]])
    >>> router.grow(n_inputs=5, n_outputs=4)
    >>> router.scores(np.ones(5, dtype=np.float32)).shape
    (4,)
    """

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        *,
        hidden: tuple[int, ...],
        dropout: float,
        lr: float,
        generator: torch.Generator,
    ) -> None:
        self.dropout = dropout
        self.lr = lr
        self.generator = generator
        sizes = [n_inputs, *hidden, n_outputs]
        self.params: list[torch.nn.Parameter] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            weight = self._padded(torch.zeros(0, 0), (fan_out, fan_in), draw=True)  # Xavier-uniform
            self.params += [torch.nn.Parameter(weight), torch.nn.Parameter(torch.zeros(fan_out))]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self._refresh_views()

    @property
    def n_inputs(self) -> int:
        """The input width."""
        return self.params[0].shape[1]

    @property
    def n_outputs(self) -> int:
        """The number of experts scored."""
        return self.params[-1].shape[0]

    def _refresh_views(self) -> None:
        """numpy views of the parameters: they share memory, so in-place optimiser steps show through."""
        self._views = [param.detach().numpy() for param in self.params]

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """Router logits for one instance (eval mode: no dropout), computed in numpy."""
        hidden = inputs
        last = len(self._views) - 2
        for index in range(0, len(self._views), 2):
            hidden = self._views[index] @ hidden + self._views[index + 1]
            if index < last:
                hidden = np.maximum(hidden, 0.0)
        return hidden

    def fit(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """One Adam step of BCE-with-logits on a mini-batch ``(B, n_inputs)`` -> ``(B, n_outputs)``; returns the
        loss."""
        hidden = torch.from_numpy(inputs)
        last = len(self.params) - 2
        for index in range(0, len(self.params), 2):
            hidden = F.linear(hidden, self.params[index], self.params[index + 1])
            if index < last:
                hidden = torch.relu(hidden)
                if self.dropout > 0.0:
                    keep = torch.rand(hidden.shape, generator=self.generator) >= self.dropout
                    hidden = hidden * keep / (1.0 - self.dropout)
        loss = F.binary_cross_entropy_with_logits(hidden, torch.from_numpy(targets))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._refresh_views()
        return float(loss.detach())

    def grow(self, n_inputs: int, n_outputs: int) -> None:
        """Widen the input layer to ``n_inputs`` and the output layer to ``n_outputs`` (never shrinks)."""
        if n_inputs <= self.n_inputs and n_outputs <= self.n_outputs:
            return
        optimizer_state = self.optimizer.state_dict()
        out_index = len(self.params) - 2  # hidden layers are required, so the input and output layers differ
        n_outputs = max(n_outputs, self.n_outputs)
        grown = {
            0: (self.params[0].shape[0], max(n_inputs, self.n_inputs)),
            out_index: (n_outputs, self.params[out_index].shape[1]),
            out_index + 1: (n_outputs,),
        }
        for index, shape in grown.items():
            self.params[index] = torch.nn.Parameter(self._padded(self.params[index].detach(), shape, draw=True))
        for index, state in optimizer_state["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = self._padded(state[key], tuple(self.params[index].shape), draw=False)
        self.optimizer = torch.optim.Adam(self.params, lr=self.lr)
        self.optimizer.load_state_dict(optimizer_state)
        self._refresh_views()

    def _padded(self, tensor: torch.Tensor, shape: tuple[int, ...], *, draw: bool) -> torch.Tensor:
        """``tensor`` in the top-left corner of a ``shape`` tensor; the rest is zeros, or Xavier-uniform draws for
        a weight matrix when ``draw``."""
        padded = torch.zeros(shape)
        if draw and len(shape) == 2:
            bound = math.sqrt(6.0 / (shape[0] + shape[1]))
            padded.uniform_(-bound, bound, generator=self.generator)
        padded[tuple(slice(0, size) for size in tensor.shape)] = tensor
        return padded

    def state_dict(self) -> dict[str, Any]:
        """Weights, Adam state and generator state (copies)."""
        return {
            "params": [param.detach().clone() for param in self.params],
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (shapes may differ from the current ones)."""
        self.params = [torch.nn.Parameter(param.clone()) for param in state["params"]]
        self.optimizer = torch.optim.Adam(self.params, lr=self.lr)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self._refresh_views()
