"""N LayerNormMLPs trained by ObGD, as flat parameter and trace buffers with hand-derived forward and backward passes.

Why: the stream-x networks are tiny (a CartPole Q-net has 1,282 parameters), so a step with autograd and a
per-parameter optimiser costs mostly dispatch overhead, not arithmetic. Here every parameter of N same-shaped
networks lives in one ``(N, P)`` buffer and every trace in another, so that

- the forward pass is ``baddbmm -> native_layer_norm -> leaky_relu`` per layer (7 calls for two hidden layers),
  batched over the N networks and over B inputs each;
- the backward pass is written out (the same ATen backward kernels autograd would call) and fused with the trace
  update: ``e <- gamma * lambda * e + grad`` is one ``baddbmm_`` per weight and bias, no gradient is ever stored;
- the ObGD step is a handful of calls over the whole ``(N, P)`` buffers: one L1 norm per row, one update.

With N = 1 this is the engine of one agent (:class:`~learners.streamx.q.StreamQ`,
:class:`~learners.streamx.ac.StreamAC`); with N > 1 it steps N independent agents at once
(:class:`~learners.streamx.batched.BatchedStreamQ`): every row's arithmetic is independent of the other rows, so
an agent in a stack of N computes bit for bit what it computes alone. The networks handed in keep working as
ordinary modules: their parameters are rebound to views of the buffer, so ``network(x)``, ``network.state_dict()``
and ``network.load_state_dict()`` see and change the same numbers.

References
----------
Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
arXiv:2410.14606.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from learners.streamx.networks import LayerNormMLP
from learners.streamx.obgd import stacked_obgd_update

__all__ = ["ForwardPass", "LayerNormMLPStack"]

_LEAKY_RELU_BACKWARD = torch.ops.aten.leaky_relu_backward.default
_LAYER_NORM_BACKWARD = torch.ops.aten.native_layer_norm_backward.default
_INPUT_GRAD_ONLY = [True, False, False]
NEGATIVE_SLOPE = 0.01  # F.leaky_relu's default, as in LayerNormMLP.forward
EPS = 1e-5  # F.layer_norm's default


@dataclass(slots=True)
class ForwardPass:
    """What a forward pass keeps for its backward pass; valid while the parameters are unchanged (``version``).

    ``hidden`` holds, per hidden layer, its input, the pre-norm activation, the layer norm's mean and reciprocal
    standard deviation, and the normalised activation; ``head_input`` is what the linear head saw.
    """

    output: torch.Tensor
    head_input: torch.Tensor
    hidden: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    version: int


class LayerNormMLPStack:
    """N same-shaped :class:`LayerNormMLP` networks with their eligibility traces, stepped together by ObGD.

    Parameters
    ----------
    networks
        The networks (same architecture, same device). Their parameters are copied into the stack's buffer and
        replaced by parameters that are views of it (create optimisers over them after stacking).
    lr, gamma, lamda, kappa
        ObGD settings, shared by the N networks.

    Examples
    --------
    >>> nets = [LayerNormMLP(3, 2, hidden=8, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    >>> stack = LayerNormMLPStack(nets, lr=1.0, gamma=0.99, lamda=0.8, kappa=2.0)
    >>> x = torch.randn(4, 1, 3)
    >>> forward = stack.forward(x)
    >>> torch.allclose(forward.output[2], nets[2](x[2]))
    True
    >>> stack.accumulate(forward, torch.ones(4, 1, 2))
    >>> len(stack.step([0.5, -1.0, 0.0, 2.0], reset=False))
    4
    """

    def __init__(
        self, networks: Sequence[LayerNormMLP], *, lr: float, gamma: float, lamda: float, kappa: float
    ) -> None:
        if not networks:
            raise ValueError("LayerNormMLPStack: needs at least one network (got none)")
        layers = [[*net.hidden_layers, net.head] for net in networks]
        shapes = [tuple(layer.weight.shape) for layer in layers[0]]
        for i, net_layers in enumerate(layers):
            if [tuple(layer.weight.shape) for layer in net_layers] != shapes:
                raise ValueError(
                    f"LayerNormMLPStack: network {i} has layer shapes "
                    f"{[tuple(layer.weight.shape) for layer in net_layers]}, network 0 has {shapes}; stack only "
                    f"networks built with the same n_inputs, n_outputs, hidden and n_hidden"
                )
        self.lr, self.kappa, self.gamma_lambda = lr, kappa, gamma * lamda
        self.n_networks = len(networks)
        self.device = layers[0][0].weight.device
        n_params = sum(o * i + o for o, i in shapes)
        self.params = torch.empty(self.n_networks, n_params, device=self.device)
        self.traces = torch.zeros_like(self.params)
        weights, biases = self._views(self.params, shapes)
        weight_traces, bias_traces = self._views(self.traces, shapes)
        with torch.no_grad():
            for n, net_layers in enumerate(layers):
                for layer, w, b in zip(net_layers, weights, biases, strict=True):
                    w[n].copy_(layer.weight)
                    b[n, 0].copy_(layer.bias)
                    # Parameters made from views share the buffer's version counter: writes through the module
                    # make cached forward passes stale as the stack's own steps do
                    layer.weight = torch.nn.Parameter(w[n], requires_grad=layer.weight.requires_grad)
                    layer.bias = torch.nn.Parameter(b[n, 0], requires_grad=layer.bias.requires_grad)
        # forward: per layer (transposed weight, bias); backward: the head's and, from the last hidden layer down,
        # each hidden layer's (weight to carry the gradient to its input, None for the first; weight trace; bias trace)
        self._forward_layers = [(w.transpose(1, 2), b) for w, b in zip(weights, biases, strict=True)]
        self._head_backward = (weights[-1], weight_traces[-1], bias_traces[-1])
        self._hidden_backward = [
            (weights[i] if i else None, weight_traces[i], bias_traces[i]) for i in reversed(range(len(shapes) - 1))
        ]
        self._norm_shape = [shapes[0][0]]
        self._ones: dict[int, torch.Tensor] = {}

    @staticmethod
    def _views(buffer: torch.Tensor, shapes: list[tuple[int, ...]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer, the ``(N, out, in)`` weight and ``(N, 1, out)`` bias views of an ``(N, P)`` buffer."""
        weights, biases, offset = [], [], 0
        for out_features, in_features in shapes:
            size = out_features * in_features
            weights.append(buffer[:, offset : offset + size].view(-1, out_features, in_features))
            biases.append(buffer[:, offset + size : offset + size + out_features].view(-1, 1, out_features))
            offset += size + out_features
        return weights, biases

    @property
    def version(self) -> int:
        """Changes whenever the parameters change in place (an ObGD step, a load, a write through a network)."""
        return self.params._version

    def forward(self, x: torch.Tensor) -> ForwardPass:
        """Outputs ``(N, B, n_outputs)`` for inputs ``(N, B, n_inputs)``, keeping what the backward pass needs."""
        hidden = []
        for w_t, b in self._forward_layers[:-1]:
            z = torch.baddbmm(b, x, w_t)
            n, mean, rstd = torch.native_layer_norm(z, self._norm_shape, None, None, EPS)
            hidden.append((x, z, mean, rstd, n))
            x = F.leaky_relu(n, NEGATIVE_SLOPE)
        w_t, b = self._forward_layers[-1]
        return ForwardPass(torch.baddbmm(b, x, w_t), x, hidden, self.params._version)

    def accumulate(self, forward: ForwardPass, grad_output: torch.Tensor) -> None:
        """Fold the gradient of ``sum(grad_output * output)`` into the traces: ``e <- gamma * lambda * e + grad``.

        The gradient is summed over the B inputs of each network (rows of ``grad_output`` that are zero add
        nothing) and never stored on its own; the kernels are those autograd would run.
        """
        if forward.version != self.params._version:
            raise RuntimeError(
                "LayerNormMLPStack.accumulate: the parameters changed after this forward pass; run forward() again"
            )
        batch = grad_output.shape[1]
        ones = self._ones.get(batch)
        if ones is None:
            ones = self._ones[batch] = torch.ones(1, 1, batch, device=self.device).expand(self.n_networks, 1, -1)
        decay, grad = self.gamma_lambda, grad_output
        head_weight, head_weight_trace, head_bias_trace = self._head_backward
        head_weight_trace.baddbmm_(grad.mT, forward.head_input, beta=decay)
        head_bias_trace.baddbmm_(ones, grad, beta=decay)
        grad = torch.bmm(grad, head_weight)
        for (weight, weight_trace, bias_trace), (x, z, mean, rstd, n) in zip(
            self._hidden_backward, reversed(forward.hidden), strict=True
        ):
            grad = _LEAKY_RELU_BACKWARD(grad, n, NEGATIVE_SLOPE, False)
            grad = _LAYER_NORM_BACKWARD(grad, z, self._norm_shape, mean, rstd, None, None, _INPUT_GRAD_ONLY)[0]
            weight_trace.baddbmm_(grad.mT, x, beta=decay)
            bias_trace.baddbmm_(ones, grad, beta=decay)
            if weight is not None:  # the first layer's input needs no gradient
                grad = torch.bmm(grad, weight)

    def step(self, delta: Sequence[float], reset: bool | torch.Tensor) -> list[float]:
        """The bounded ObGD step of every network for its TD error in ``delta`` (N floats); returns the step sizes.

        ``reset`` (a bool, or a bool tensor ``(N,)``) zeroes the traces after the step. See
        :func:`~learners.streamx.obgd.stacked_obgd_update`.
        """
        return stacked_obgd_update(self.params, self.traces, delta, lr=self.lr, kappa=self.kappa, reset=reset)

    def state_dict(self) -> dict[str, Any]:
        """Parameters and traces, ``(N, P)`` each, on the CPU."""
        return {"params": self.params.detach().cpu().clone(), "traces": self.traces.cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (in place: the networks' views stay valid)."""
        for key in ("params", "traces"):
            value = state[key]
            if tuple(value.shape) != tuple(self.params.shape):
                raise ValueError(
                    f"LayerNormMLPStack: state[{key!r}] has shape {tuple(value.shape)}, this stack "
                    f"{tuple(self.params.shape)} (networks x parameters); load a checkpoint of the same architecture"
                )
        with torch.no_grad():
            self.params.copy_(state["params"])
            self.traces.copy_(state["traces"])
