"""The Triton ObGD kernel against its torch reference (interpreted on the CPU, compiled on a GPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction

import kernels.obgd as obgd
from tests.kernels.interpreted import kernel_device

DEVICE = kernel_device(obgd._obgd_trace_kernel)


def make_case(shapes: list[tuple[int, ...]], seed: int) -> tuple[list[torch.Tensor], ...]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]
    traces = [torch.randn(s, generator=g) for s in shapes]
    return tuple([t.to(DEVICE) for t in ts] for ts in (params, grads, traces))


def clone(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone() for t in ts]


def test_the_kernels_run_interpreted_on_cpu() -> None:
    if DEVICE == "cpu":
        assert isinstance(obgd._obgd_trace_kernel, InterpretedFunction)
        assert isinstance(obgd._obgd_apply_kernel, InterpretedFunction)


SHAPES = [
    [(1,)],
    [(0,), (3,)],
    [(7,), (5, 3)],
    [(32, 4), (32,), (32, 32), (32,), (2, 32), (2,)],
    [(1023,), (1025,), (2049,)],
    [(1, 1), (13, 17), (3, 5, 7)],
]


@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "-".join("x".join(map(str, x)) for x in s))
@pytest.mark.parametrize(("delta", "reset"), [(0.3, False), (-4.0, True), (1e-4, False), (0.0, True)])
def test_triton_matches_reference(shapes: list[tuple[int, ...]], delta: float, reset: bool) -> None:
    params, grads, traces = make_case(shapes, seed=len(shapes) + int(delta * 10))
    p_ref, e_ref = clone(params), clone(traces)
    kwargs: dict[str, Any] = {"lr": 1.0, "kappa": 2.0, "gamma_lambda": 0.99 * 0.8, "reset": reset}
    step_ref = obgd.obgd_update_reference(p_ref, grads, e_ref, delta, **kwargs)
    step = obgd.obgd_update_triton(params, grads, traces, delta, **kwargs)
    torch.testing.assert_close(step.double().cpu(), step_ref.double().cpu(), rtol=1e-5, atol=0)
    for a, b in zip(params + traces, p_ref + e_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if reset:
        assert all(int(e.count_nonzero()) == 0 for e in traces)


@pytest.mark.parametrize("seed", range(5))
def test_triton_matches_reference_on_random_shapes(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 6, (), generator=g))
    shapes = [tuple(int(d) for d in torch.randint(1, 40, (int(torch.randint(1, 3, (), generator=g)),), generator=g))]
    shapes += [(int(torch.randint(1, 3000, (), generator=g)),) for _ in range(n - 1)]
    delta = float(torch.randn((), generator=g)) * 3
    params, grads, traces = make_case(shapes, seed)
    p_ref, e_ref = clone(params), clone(traces)
    kwargs: dict[str, Any] = {"lr": 0.5, "kappa": 3.0, "gamma_lambda": 0.7, "reset": False}
    obgd.obgd_update_reference(p_ref, grads, e_ref, delta, **kwargs)
    obgd.obgd_update_triton(params, grads, traces, delta, **kwargs)
    for a, b in zip(params + traces, p_ref + e_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_small_traces_take_the_full_step() -> None:
    params, grads, traces = (
        [torch.zeros(4, device=DEVICE)],
        [torch.full((4,), 0.01, device=DEVICE)],
        [torch.zeros(4, device=DEVICE)],
    )
    step = obgd.obgd_update_triton(params, grads, traces, 0.5, lr=1.0, kappa=2.0, gamma_lambda=0.8, reset=False)
    assert float(step) == 1.0
    torch.testing.assert_close(params[0].cpu(), torch.full((4,), 0.005))


def test_the_wrapper_checks_shapes_and_dtypes() -> None:
    p, g, e = [torch.zeros(3)], [torch.zeros(4)], [torch.zeros(3)]
    kwargs: dict[str, Any] = {"lr": 1.0, "kappa": 2.0, "gamma_lambda": 0.8, "reset": False}
    with pytest.raises(ValueError, match=r"params\[0\], grads\[0\], traces\[0\] must have one shape"):
        obgd.obgd_update_triton(p, g, e, 0.1, **kwargs)
    with pytest.raises(ValueError, match="same length"):
        obgd.obgd_update_triton(p, [], e, 0.1, **kwargs)
    with pytest.raises(ValueError, match="contiguous float32"):
        obgd.obgd_update_triton([torch.zeros(3, dtype=torch.float64)], [torch.zeros(3)], e, 0.1, **kwargs)
    with pytest.raises(ValueError, match="contiguous float32"):
        obgd.obgd_update_triton([torch.zeros(3, 2).t()], [torch.zeros(2, 3)], [torch.zeros(2, 3)], 0.1, **kwargs)
