"""Fused ObGD update (overshooting-bounded gradient descent with eligibility traces): Triton kernel + torch reference.

One ObGD step over a list of parameter tensors, for the TD error ``delta``::

    e     <- gamma_lambda * e + g                      (every tensor)
    M     =  lr * kappa * max(|delta|, 1) * sum |e|    (one global L1 sum)
    step  =  lr / max(M, 1)
    theta <- theta + step * delta * e
    e     <- 0                                         (if reset)

``obgd_update_reference`` defines what "correct" means; ``obgd_update_triton`` does the same in two Triton passes
(trace update with per-block partial L1 sums, then the parameter step), with the step size computed on the device so
that nothing synchronises with the host. Partial sums are reduced with ``torch.sum`` (no atomics), so the result is
deterministic. Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors.

References
----------
Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works. arXiv:2410.14606.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

BLOCK = 1024


def obgd_update_reference(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    traces: Sequence[torch.Tensor],
    delta: float,
    *,
    lr: float,
    kappa: float,
    gamma_lambda: float,
    reset: bool,
) -> torch.Tensor:
    """One ObGD step, written one tensor at a time; updates ``params`` and ``traces`` in place.

    Returns the effective step size ``lr / max(M, 1)`` as a 0-d tensor.

    >>> p, g, e = [torch.zeros(3)], [torch.ones(3)], [torch.zeros(3)]
    >>> obgd_update_reference(p, g, e, 0.5, lr=1.0, kappa=2.0, gamma_lambda=0.8, reset=False).item()
    0.16666666666666666
    >>> p[0]
    tensor([0.0833, 0.0833, 0.0833])
    """
    _check_lists(params, grads, traces)
    l1 = torch.zeros((), dtype=torch.float64)
    for e, g in zip(traces, grads, strict=True):
        e.mul_(gamma_lambda).add_(g)
        l1 += e.abs().sum().double().cpu()
    bound = lr * kappa * max(abs(delta), 1.0) * l1
    step = lr / torch.clamp(bound, min=1.0)
    for p, e in zip(params, traces, strict=True):
        p.add_(e, alpha=float(step) * delta)
        if reset:
            e.zero_()
    return step


@triton.jit
def _obgd_trace_kernel(grad_ptr, trace_ptr, partial_ptr, n, decay, BLOCK_SIZE: tl.constexpr):  # type: ignore[no-untyped-def]
    pid = tl.program_id(0)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0)
    e = tl.load(trace_ptr + offs, mask=mask, other=0.0)
    e = e * decay + g
    tl.store(trace_ptr + offs, e, mask=mask)
    tl.store(partial_ptr + pid, tl.sum(tl.abs(e), axis=0))


@triton.jit
def _obgd_apply_kernel(param_ptr, trace_ptr, scale_ptr, n, RESET: tl.constexpr, BLOCK_SIZE: tl.constexpr):  # type: ignore[no-untyped-def]
    pid = tl.program_id(0)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    scale = tl.load(scale_ptr)
    p = tl.load(param_ptr + offs, mask=mask, other=0.0)
    e = tl.load(trace_ptr + offs, mask=mask, other=0.0)
    tl.store(param_ptr + offs, p + scale * e, mask=mask)
    if RESET:
        tl.store(trace_ptr + offs, tl.zeros_like(e), mask=mask)


def obgd_update_triton(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    traces: Sequence[torch.Tensor],
    delta: float,
    *,
    lr: float,
    kappa: float,
    gamma_lambda: float,
    reset: bool,
) -> torch.Tensor:
    """The same step as :func:`obgd_update_reference` with Triton kernels; updates in place, returns the step size.

    All tensors must be contiguous float32 on one device, and ``params[i]``, ``grads[i]``, ``traces[i]`` must have
    the same shape. The step size stays on the device (no host synchronisation).
    """
    _check_lists(params, grads, traces)
    for i, (p, g, e) in enumerate(zip(params, grads, traces, strict=True)):
        for name, t in (("params", p), ("grads", g), ("traces", e)):
            if t.dtype != torch.float32 or not t.is_contiguous():
                raise ValueError(
                    f"obgd_update_triton: {name}[{i}] must be contiguous float32 (got {t.dtype}, "
                    f"contiguous={t.is_contiguous()}); call .float().contiguous() first"
                )
            if t.device != params[0].device:
                raise ValueError(f"obgd_update_triton: {name}[{i}] is on {t.device}, params[0] on {params[0].device}")
    device = params[0].device if params else torch.device("cpu")
    blocks = [triton.cdiv(p.numel(), BLOCK) for p in params]
    partials = torch.zeros(max(sum(blocks), 1), dtype=torch.float32, device=device)
    start = 0
    for p, g, e, nb in zip(params, grads, traces, blocks, strict=True):
        if nb:
            _obgd_trace_kernel[(nb,)](g, e, partials[start:], p.numel(), float(gamma_lambda), BLOCK_SIZE=BLOCK)
        start += nb
    bound = lr * kappa * max(abs(delta), 1.0) * partials.sum(dtype=torch.float64)
    step = lr / torch.clamp(bound, min=1.0)
    scale = (step * delta).to(torch.float32).reshape(1)
    for p, e, nb in zip(params, traces, blocks, strict=True):
        if nb:
            _obgd_apply_kernel[(nb,)](p, e, scale, p.numel(), RESET=bool(reset), BLOCK_SIZE=BLOCK)
    return step


def _check_lists(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], traces: Sequence[torch.Tensor]) -> None:
    if not len(params) == len(grads) == len(traces):
        raise ValueError(
            f"obgd update: params, grads and traces must have the same length "
            f"(got {len(params)}, {len(grads)}, {len(traces)})"
        )
    for i, (p, g, e) in enumerate(zip(params, grads, traces, strict=True)):
        if not p.shape == g.shape == e.shape:
            raise ValueError(
                f"obgd update: params[{i}], grads[{i}], traces[{i}] must have one shape "
                f"(got {tuple(p.shape)}, {tuple(g.shape)}, {tuple(e.shape)})"
            )
