"""The sink+window decode attention kernel against its torch reference, and the reference against attention written
out over the kept tokens in stream order (interpreted on the CPU, compiled on a GPU)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction

import kernels.sink_window_attention as swa
from tests.kernels.interpreted import kernel_device

DEVICE = kernel_device(swa._decode_split_kernel)

TOLERANCE: dict[torch.dtype, dict[str, Any]] = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.float16: {"rtol": 1e-2, "atol": 2e-3},
}


def make_case(
    slots: int, heads: int, capacity: int, head_dim: int, seen: list[int], dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, ...]:
    """Queries, a whole cache ``[slots, layers=2, 2, heads, capacity, head_dim]`` read through its layer-1 views (as
    the model reads it), a random choice of distinct rows, and the tokens each stream has seen."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(slots, 2, 2, heads, capacity, head_dim, generator=g).to(dtype)
    q = torch.randn(len(seen), heads, head_dim, generator=g).to(dtype)
    rows = torch.randperm(slots, generator=g)[: len(seen)]
    return tuple(t.to(DEVICE) for t in (q, data[:, 1, 0], data[:, 1, 1], rows, torch.tensor(seen, dtype=torch.long)))


def test_the_kernels_run_interpreted_on_cpu() -> None:
    if DEVICE == "cpu":
        assert isinstance(swa._decode_split_kernel, InterpretedFunction)
        assert isinstance(swa._merge_splits_kernel, InterpretedFunction)


EDGE_CASES = {
    # name: (capacity, sinks, head_dim, seen per stream)
    "no-streams": (8, 2, 8, []),
    "empty-cache": (8, 2, 8, [0, 0]),
    "empty-beside-full": (8, 2, 8, [0, 8, 3]),
    "fewer-than-sinks": (10, 4, 8, [1, 2, 3]),
    "window-just-full": (10, 4, 8, [10, 9, 11]),
    "rolled-many-times": (10, 4, 8, [10 + 6 * 13 + 5, 1000, 37]),
    "no-sinks": (9, 0, 8, [4, 9, 10, 23]),
    "window-of-one": (5, 4, 8, [4, 5, 6, 99]),
    "odd-half-head-dim": (12, 4, 6, [5, 12, 40]),
    "non-power-of-two-head-dim": (12, 4, 40, [5, 12, 40]),
    "several-blocks": (150, 4, 16, [150, 64, 65, 1000]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", EDGE_CASES, ids=str)
def test_triton_matches_reference_on_edge_cases(case: str, dtype: torch.dtype) -> None:
    capacity, sinks, head_dim, seen = EDGE_CASES[case]
    q, k, v, rows, counts = make_case(len(seen) + 2, 2, capacity, head_dim, seen, dtype, seed=len(case))
    expected = swa.sink_window_decode_attention_reference(q, k, v, rows, counts, sinks=sinks)
    for splits in (1, 3):
        out = swa.sink_window_decode_attention_triton(q, k, v, rows, counts, sinks=sinks, splits=splits)
        assert out.dtype == dtype and out.shape == q.shape
        torch.testing.assert_close(out, expected, **TOLERANCE[dtype])
    empty = counts == 0
    assert bool(out[empty].eq(0).all()), "a stream with nothing cached attends to nothing: zeros"


@pytest.mark.parametrize("seed", range(6))
def test_triton_matches_reference_on_random_shapes(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (), generator=g))

    capacity, heads, head_dim = draw(1, 140), draw(1, 3), 2 * draw(1, 20)
    sinks = draw(0, min(4, capacity - 1))
    seen = [draw(0, 3 * capacity) for _ in range(draw(1, 4))]
    dtype = (torch.float32, torch.float16)[seed % 2]
    q, k, v, rows, counts = make_case(len(seen) + 1, heads, capacity, head_dim, seen, dtype, seed)
    scale = 0.3 if seed % 3 == 0 else None
    expected = swa.sink_window_decode_attention_reference(q, k, v, rows, counts, sinks=sinks, scale=scale)
    out = swa.sink_window_decode_attention_triton(q, k, v, rows, counts, sinks=sinks, scale=scale, splits=draw(1, 4))
    torch.testing.assert_close(out, expected, **TOLERANCE[dtype])


def attention_over_kept_tokens(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, sinks: int, window: int
) -> torch.Tensor:
    """One head of one stream written out: the first ``sinks`` and last ``window`` of the stream's ``[tokens, dim]``
    keys and values, in stream order at positions 0.., the query at the last of them."""
    tokens = len(keys)
    kept = [t for t in range(tokens) if t < sinks or t >= tokens - window]
    k = swa.apply_rope(keys[kept], torch.arange(len(kept)))
    query = swa.apply_rope(q, torch.tensor(len(kept) - 1))
    weights = torch.softmax(k @ query / math.sqrt(q.shape[-1]), dim=0)
    return weights @ values[kept]


@pytest.mark.parametrize(("sinks", "window", "tokens"), [(4, 6, 3), (4, 6, 10), (4, 6, 11), (4, 6, 47), (0, 5, 23)])
def test_the_reference_is_attention_over_the_kept_tokens_in_stream_order(sinks: int, window: int, tokens: int) -> None:
    """Token t of a stream goes to index t if t < sinks, else sinks + (t - sinks) % window (the cache's ring)."""
    g = torch.Generator().manual_seed(tokens)
    keys, values, q = (
        torch.randn(tokens, 8, generator=g),
        torch.randn(tokens, 8, generator=g),
        torch.randn(8, generator=g),
    )
    k_cache, v_cache = torch.zeros(1, 1, sinks + window, 8), torch.zeros(1, 1, sinks + window, 8)
    for t in range(tokens):
        index = t if t < sinks else sinks + (t - sinks) % window
        k_cache[0, 0, index], v_cache[0, 0, index] = keys[t], values[t]
    out = swa.sink_window_decode_attention_reference(
        q.view(1, 1, 8), k_cache, v_cache, torch.tensor([0]), torch.tensor([tokens]), sinks=sinks
    )
    torch.testing.assert_close(out[0, 0], attention_over_kept_tokens(q, keys, values, sinks, window))


def test_the_dispatch_runs_the_reference_on_cpu_tensors_and_the_kernel_on_cuda() -> None:
    q, k, v, rows, counts = make_case(4, 2, 16, 8, [3, 30], torch.float32, seed=0)
    out = swa.sink_window_decode_attention(q, k, v, rows, counts, sinks=4)
    torch.testing.assert_close(out, swa.sink_window_decode_attention_reference(q, k, v, rows, counts, sinks=4))


def test_the_wrapper_checks_shapes_and_dtypes() -> None:
    q, k, v, rows, counts = make_case(3, 2, 8, 8, [1, 2], torch.float32, seed=0)
    attend = swa.sink_window_decode_attention_triton
    with pytest.raises(ValueError, match=r"q must be \[batch, heads, head_dim\] \(got shape \(2, 16\)\)"):
        attend(q.flatten(1), k, v, rows, counts, sinks=2)
    with pytest.raises(ValueError, match="k_cache and v_cache must both be"):
        attend(q, k, v[:, :, :4], rows, counts, sinks=2)
    with pytest.raises(ValueError, match="the cache has 2 heads of 8 dims but q has 1 of 8"):
        attend(q[:, :1], k, v, rows, counts, sinks=2)
    with pytest.raises(ValueError, match=r"head_dim must be even \(got 7\)"):
        attend(q[..., :7], k[..., :7], v[..., :7], rows, counts, sinks=2)
    with pytest.raises(ValueError, match="slots must be 2 integers"):
        attend(q, k, v, rows.float(), counts, sinks=2)
    with pytest.raises(ValueError, match="seen must be 2 integers"):
        attend(q, k, v, rows, counts[:1], sinks=2)
    with pytest.raises(ValueError, match=r"sinks must be in \[0, capacity\).*sinks=8, capacity=8"):
        attend(q, k, v, rows, counts, sinks=8)
    with pytest.raises(ValueError, match=r"k_cache is torch\.float16 but q is torch\.float32"):
        attend(q, k.half(), v, rows, counts, sinks=2)
    with pytest.raises(ValueError, match=r"float16, bfloat16 or float32 \(got torch.float64\)"):
        attend(q.double(), k.double(), v.double(), rows, counts, sinks=2)
    with pytest.raises(ValueError, match="unit stride in head_dim"):
        attend(q, k.transpose(2, 3), v.transpose(2, 3), rows, counts, sinks=2)
    with pytest.raises(ValueError, match="splits must be >= 1"):
        attend(q, k, v, rows, counts, sinks=2, splits=0)
