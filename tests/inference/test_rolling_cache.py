"""RollingKVCache keeps a stream's first tokens and its last window in a ring; SlotAllocator evicts the LRU stream."""

from __future__ import annotations

import pytest
import torch

from inference.rolling_cache import RollingKVCache, SlotAllocator, SlotAssignment
from kernels.sink_window_attention import cache_positions


def append(cache: RollingKVCache, slot: int, tokens: range) -> None:
    """Append ``tokens`` to ``slot``: in every layer, a key (and value, negated) whose entries all equal the token."""
    slots = torch.tensor([slot])
    _, layers, _, heads, _, head_dim = cache.data.shape
    for token in tokens:
        cache.advance(slots)
        for layer in range(layers):
            key = torch.full((1, heads, head_dim), float(token + 1000 * layer))
            cache.store(slots, layer, key, -key)


@pytest.mark.parametrize(("sinks", "window"), [(4, 6), (0, 5), (3, 1)])
@pytest.mark.parametrize("tokens", [0, 2, 9, 10, 11, 57])
def test_the_cache_keeps_the_first_sinks_and_the_last_window_in_place_order(
    sinks: int, window: int, tokens: int
) -> None:
    cache = RollingKVCache(3, 2, 2, 4, window=window, sinks=sinks)
    append(cache, 1, range(tokens))
    kept = [t for t in range(tokens) if t < sinks or t >= tokens - window]
    slot = torch.tensor([1])
    assert cache.seen[1] == tokens and cache.valid(slot).item() == len(kept)
    order = cache_positions(cache.seen[slot], cache.capacity, sinks)[0].argsort()[: len(kept)]
    for layer in range(2):
        keys, values = cache.layer(layer)
        assert keys[1, :, order, :].eq(torch.tensor(kept, dtype=torch.float32).view(1, -1, 1) + 1000 * layer).all()
        assert values[1, :, order, :].eq(-keys[1, :, order, :]).all()
    assert cache.seen[0] == cache.seen[2] == 0 and cache.data[[0, 2]].eq(0).all(), "other slots untouched"


@pytest.mark.parametrize("tokens", [0, 3, 10, 31])
def test_fill_leaves_what_appending_token_by_token_leaves(tokens: int) -> None:
    appended, filled = (RollingKVCache(2, 2, 3, 4, window=6, sinks=2) for _ in range(2))
    g = torch.Generator().manual_seed(tokens)
    keys, values = torch.randn(2, 3, tokens, 4, generator=g), torch.randn(2, 3, tokens, 4, generator=g)
    slots = torch.tensor([1])
    for t in range(tokens):
        appended.advance(slots)
        for layer in range(2):
            appended.store(slots, layer, keys[layer, :, t].unsqueeze(0), values[layer, :, t].unsqueeze(0))
    filled.fill(1, keys, values)
    assert torch.equal(filled.seen, appended.seen)
    assert torch.equal(filled.data, appended.data)


def test_fill_checks_the_shape() -> None:
    cache = RollingKVCache(2, 2, 3, 4, window=6)
    with pytest.raises(ValueError, match=r"must be \[layers=2, heads=3, tokens, head_dim=4\] \(got \(2, 3, 5\)"):
        cache.fill(0, torch.zeros(2, 3, 5), torch.zeros(2, 3, 5))


def test_memory_per_stream_is_one_row_of_the_cache() -> None:
    cache = RollingKVCache(5, 3, 4, 16, window=60, sinks=4, dtype=torch.float16)
    assert cache.bytes_per_stream == 3 * 2 * 4 * 64 * 16 * 2 + 8
    assert cache.bytes_per_stream * 5 == cache.data.nbytes + cache.seen.nbytes


def test_the_allocator_evicts_the_least_recently_used_stream() -> None:
    slots = SlotAllocator(3)
    assert slots.assign(["a", "b", "c"]) == [
        SlotAssignment("a", 0, True),
        SlotAssignment("b", 1, True),
        SlotAssignment("c", 2, True),
    ]
    assert slots.assign(["a"]) == [SlotAssignment("a", 0, False)]  # b is now the least recently used
    assert slots.assign(["d", "c"]) == [SlotAssignment("d", 1, True, evicted="b"), SlotAssignment("c", 2, False)]
    assert slots.assign(["b", "e", "d"]) == [  # d, the least recent, is in the batch: a and c go
        SlotAssignment("b", 0, True, evicted="a"),
        SlotAssignment("e", 2, True, evicted="c"),
        SlotAssignment("d", 1, False),
    ]
    assert len(slots) == 3 and "a" not in slots and "e" in slots


def test_a_full_batch_never_evicts_its_own_streams() -> None:
    slots = SlotAllocator(4)
    slots.assign(["a", "b", "c", "d"])
    out = slots.assign(["w", "x", "y", "z"])
    assert [a.evicted for a in out] == ["a", "b", "c", "d"]
    assert sorted(a.slot for a in out) == [0, 1, 2, 3]


def test_a_stream_that_comes_back_gets_an_empty_row() -> None:
    cache = RollingKVCache(1, 1, 1, 2, window=4)
    cache.assign(["a"])
    append(cache, 0, range(3))
    assert cache.assign(["b"])[0].evicted == "a" and cache.seen[0] == 0
    append(cache, 0, range(2))
    assert cache.assign(["b"])[0].fresh is False and cache.seen[0] == 2


def test_bad_arguments_are_refused_with_the_value_seen() -> None:
    with pytest.raises(ValueError, match=r"slots must be >= 1 \(got 0\)"):
        SlotAllocator(0)
    with pytest.raises(ValueError, match="keys must be distinct"):
        SlotAllocator(3).assign(["a", "b", "a"])
    with pytest.raises(ValueError, match="3 streams in one batch but only 2 slots"):
        SlotAllocator(2).assign(["a", "b", "c"])
    with pytest.raises(ValueError, match=r"window must be >= 1 and sinks >= 0 \(got window=0, sinks=4\)"):
        RollingKVCache(1, 1, 1, 2, window=0)
    with pytest.raises(ValueError, match=r"heads must be >= 1 \(got 0\)"):
        RollingKVCache(1, 1, 0, 2, window=3)
