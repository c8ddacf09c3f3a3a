"""ObGD: overshooting-bounded gradient descent with eligibility traces, as a ``torch.optim.Optimizer``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["ObGD", "ObGDUpdate", "foreach_obgd_update", "obgd_step_size", "stacked_obgd_update"]


class ObGDUpdate(Protocol):
    """A fused ObGD step over lists of tensors (in place); returns the effective step size."""

    def __call__(
        self,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        traces: Sequence[torch.Tensor],
        delta: float,
        *,
        lr: float,
        kappa: float,
        gamma_lambda: float,
        reset: bool,
    ) -> torch.Tensor | float: ...


def obgd_step_size(delta: float, trace_l1: float, lr: float, kappa: float) -> float:
    """The effective step size ``lr / max(M, 1)`` with ``M = lr * kappa * max(|delta|, 1) * trace_l1``.

    The bound guarantees ``step * kappa * max(|delta|, 1) * trace_l1 <= lr`` whenever it clips.

    >>> obgd_step_size(0.5, 3.0, lr=1.0, kappa=2.0)
    0.16666666666666666
    >>> obgd_step_size(0.1, 0.1, lr=1.0, kappa=2.0)
    1.0
    """
    bound = lr * kappa * max(abs(delta), 1.0) * trace_l1
    return lr / bound if bound > 1.0 else lr


def foreach_obgd_update(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    traces: Sequence[torch.Tensor],
    delta: float,
    *,
    lr: float,
    kappa: float,
    gamma_lambda: float,
    reset: bool,
) -> float:
    """One fused ObGD step with ``torch._foreach_*`` ops (CPU or GPU); updates in place, returns the step size.

    >>> p, g, e = [torch.zeros(3)], [torch.ones(3)], [torch.zeros(3)]
    >>> foreach_obgd_update(p, g, e, 0.5, lr=1.0, kappa=2.0, gamma_lambda=0.8, reset=True)
    0.16666666666666666
    >>> p[0], e[0]
    (tensor([0.0833, 0.0833, 0.0833]), tensor([0., 0., 0.]))
    """
    params, grads, traces = list(params), list(grads), list(traces)
    if not params:
        return lr
    torch._foreach_mul_(traces, gamma_lambda)
    torch._foreach_add_(traces, grads)
    trace_l1 = float(torch.stack(torch._foreach_norm(traces, 1)).sum())
    step = obgd_step_size(delta, trace_l1, lr, kappa)
    torch._foreach_add_(params, traces, alpha=step * delta)
    if reset:
        torch._foreach_zero_(traces)
    return step


def stacked_obgd_update(
    params: torch.Tensor,
    traces: torch.Tensor,
    delta: Sequence[float],
    *,
    lr: float,
    kappa: float,
    reset: bool | torch.Tensor,
) -> list[float]:
    """ObGD's bounded step for N flat parameter vectors at once, their traces already accumulated; returns step sizes.

    ``params`` and ``traces`` are ``(N, P)`` tensors, ``delta`` holds one TD error per row (host floats: the agents
    compute TD errors on the host). Row ``n`` moves by ``step_n * delta_n * e_n`` with ``step_n`` from
    :func:`obgd_step_size` and ``||e_n||_1``; then the traces of the rows in ``reset`` (a bool for all rows, or a
    bool tensor ``(N,)``) are zeroed. Rows do not interact, so N agents stepped together compute what each computes
    alone. A few calls and one host synchronisation (the L1 norms), whatever N is.

    >>> p, e = torch.zeros(2, 3), torch.ones(2, 3)
    >>> stacked_obgd_update(p, e, [0.5, 0.01], lr=1.0, kappa=2.0, reset=torch.tensor([True, False]))
    [0.16666666666666666, 0.16666666666666666]
    >>> p[:, 0], e[:, 0]
    (tensor([0.0833, 0.0017]), tensor([0., 1.]))
    """
    if params.dim() != 2 or traces.shape != params.shape or len(delta) != params.shape[0]:
        raise ValueError(
            f"stacked_obgd_update: params and traces must be (N, P) and delta N floats "
            f"(got {tuple(params.shape)}, {tuple(traces.shape)} and {len(delta)} TD errors)"
        )
    trace_l1 = traces.abs().sum(dim=1).tolist()  # 3x faster than linalg.vector_norm(ord=1) on the CPU
    steps = [obgd_step_size(d, l1, lr, kappa) for d, l1 in zip(delta, trace_l1, strict=True)]
    scale = np.array([s * d for s, d in zip(steps, delta, strict=True)], dtype=np.float32).reshape(-1, 1)
    params.addcmul_(traces, torch.from_numpy(scale).to(params.device))
    if isinstance(reset, torch.Tensor):
        traces.masked_fill_(reset.view(-1, 1), 0.0)
    elif reset:
        traces.zero_()
    return steps


def _backend_for(device: torch.device) -> ObGDUpdate:
    """The fused update for parameters on ``device``: the Triton kernel on CUDA, ``torch._foreach_*`` elsewhere."""
    if device.type == "cuda":
        from kernels.obgd import obgd_update_triton  # imported here: triton loads only where a GPU runs it

        return obgd_update_triton
    return foreach_obgd_update


class ObGD(torch.optim.Optimizer):
    """Overshooting-bounded gradient descent with accumulating eligibility traces.

    Callers back-propagate the *prediction* (``q(s, a)``, ``v(s)``, a policy surrogate) and call
    ``step(delta, reset)`` with the TD error; per step::

        e <- gamma * lambda * e + grad
        M  = lr * kappa * max(|delta|, 1) * ||e||_1       (one sum over all parameters)
        theta <- theta + min(lr / M, lr) * delta * e
        e <- 0 if reset                                    (after the update)

    The update is one fused call: the Triton kernel of ``kernels/obgd.py`` for CUDA parameters, ``torch._foreach_*``
    on every other device.

    Parameters
    ----------
    params
        The parameters to optimise (one parameter group).
    lr, gamma, lamda, kappa
        Step size, discount, trace decay and overshooting factor (paper defaults; ``kappa=3`` for actors).
    update
        Optional fused update to use instead of the device's backend.

    Examples
    --------
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Linear(2, 1)
    >>> opt = ObGD(net.parameters())
    >>> opt.zero_grad()
    >>> net(torch.tensor([1.0, -1.0])).sum().backward()
    >>> step = opt.step(delta=0.5)
    >>> 0.0 < step <= 1.0
    True

    References
    ----------
    Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
    arXiv:2410.14606.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1.0,
        gamma: float = 0.99,
        lamda: float = 0.8,
        kappa: float = 2.0,
        update: ObGDUpdate | None = None,
    ) -> None:
        for name, value in (("lr", lr), ("kappa", kappa)):
            if not value > 0.0:
                raise ValueError(f"ObGD: {name} must be > 0 (got {value})")
        for name, value in (("gamma", gamma), ("lamda", lamda)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ObGD: {name} must be in [0, 1] (got {value})")
        super().__init__(params, {"lr": lr, "gamma": gamma, "lamda": lamda, "kappa": kappa})
        if len(self.param_groups) != 1:
            raise ValueError(f"ObGD: expects one parameter group (got {len(self.param_groups)})")
        self._params: list[torch.Tensor] = list(self.param_groups[0]["params"])
        for p in self._params:
            self.state[p]["eligibility_trace"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        self._update = update

    @property
    def traces(self) -> list[torch.Tensor]:
        """The eligibility traces, one per parameter, in parameter order."""
        return [self.state[p]["eligibility_trace"] for p in self._params]

    @torch.no_grad()
    def step(self, delta: float, reset: bool = False) -> Any:  # type: ignore[override]
        """Fold the current gradients into the traces and move the parameters by the bounded step.

        Parameters without a gradient contribute a zero gradient. Returns the effective step size.
        """
        group = self.param_groups[0]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        if not self._params:
            return group["lr"]
        update = self._update or _backend_for(self._params[0].device)
        return update(
            [p.data for p in self._params],
            grads,
            self.traces,
            float(delta),
            lr=group["lr"],
            kappa=group["kappa"],
            gamma_lambda=group["gamma"] * group["lamda"],
            reset=reset,
        )

    def reset_traces(self) -> None:
        """Zero every eligibility trace (episode end)."""
        torch._foreach_zero_(self.traces)
