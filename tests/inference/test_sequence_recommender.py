"""The sequence model served through the rolling cache computes what recomputing from the ids computes."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
import torch
import torch.nn.functional as F

from connectors.sources.playlists import playlist_streams
from inference.rolling_cache import RollingKVCache
from inference.sequence_recommender import (
    SequenceRecommender,
    SequenceTransformer,
    rolling_next_item_loss,
    train_next_item,
)

VOCAB = 20


def model_and_cache(layers: int, sinks: int, window: int, slots: int = 4) -> tuple[SequenceTransformer, RollingKVCache]:
    model = SequenceTransformer(VOCAB, dim=16, layers=layers, heads=2, seed=layers)
    return model, RollingKVCache(slots, layers, 2, 8, window=window, sinks=sinks)


def random_ids(streams: int, tokens: int, seed: int) -> torch.Tensor:
    return torch.randint(VOCAB, (streams, tokens), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("layers", "sinks", "window"), [(2, 4, 6), (3, 0, 7), (1, 2, 1)])
def test_decoding_through_the_cache_equals_the_windowed_recompute_far_past_the_window(
    layers: int, sinks: int, window: int
) -> None:
    """Three streams decoded as one batch, starting at different steps, for five times the cache's capacity."""
    model, cache = model_and_cache(layers, sinks, window)
    tokens = 5 * (sinks + window)
    ids = random_ids(3, tokens, seed=layers)
    starts = [0, 1, 4]
    slots = torch.tensor([a.slot for a in cache.assign(["a", "b", "c"])])
    decoded: list[list[torch.Tensor]] = [[], [], []]
    for step in range(tokens + max(starts)):
        live = [i for i, start in enumerate(starts) if 0 <= step - start < tokens]
        hidden = model.decode(cache, slots[live], torch.stack([ids[i, step - starts[i]] for i in live]))
        for row, i in enumerate(live):
            decoded[i].append(hidden[row])
    expected = model(ids, sinks=sinks, window=window)
    for i in range(3):
        torch.testing.assert_close(torch.stack(decoded[i]), expected[i], rtol=1e-4, atol=1e-5)


def test_with_one_layer_each_step_equals_full_attention_over_the_sinks_and_the_window() -> None:
    """One layer's keys and values depend on the token only, so step t is plain causal attention recomputed over
    the first ``sinks`` and last ``window`` ids (the spec's check, literally)."""
    sinks, window = 3, 5
    model, cache = model_and_cache(1, sinks, window)
    ids = random_ids(1, 30, seed=7)[0]
    slot = torch.tensor([cache.assign(["a"])[0].slot])
    for t in range(len(ids)):
        hidden = model.decode(cache, slot, ids[t : t + 1])
        kept = torch.cat((ids[: min(sinks, t + 1)], ids[max(sinks, t + 1 - window) : t + 1]))
        torch.testing.assert_close(hidden[0], model(kept.unsqueeze(0))[0, -1], rtol=1e-4, atol=1e-5)


def test_the_windowed_recompute_is_plain_causal_attention_until_the_cache_is_full() -> None:
    model, _ = model_and_cache(2, 4, 6)
    ids = random_ids(2, 10, seed=3)
    torch.testing.assert_close(model(ids, sinks=4, window=6), model(ids), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(model(ids[:, :9], sinks=2, window=3), model(ids[:, :9]), atol=1e-3)


@pytest.mark.parametrize("tokens", [0, 5, 10, 33])
def test_prefill_leaves_the_cache_that_decoding_the_ids_leaves(tokens: int) -> None:
    model, prefilled = model_and_cache(2, 4, 6, slots=2)
    _, decoded = model_and_cache(2, 4, 6, slots=2)
    ids = random_ids(1, tokens + 1, seed=tokens)[0]
    prefilled.assign(["x", "a"])
    decoded.assign(["x", "a"])
    hidden = model.prefill(prefilled, 1, ids[:tokens])
    steps = [model.decode(decoded, torch.tensor([1]), ids[t : t + 1])[0] for t in range(tokens)]
    assert torch.equal(prefilled.seen, decoded.seen)
    torch.testing.assert_close(prefilled.data, decoded.data, rtol=1e-4, atol=1e-5)
    if tokens:
        torch.testing.assert_close(hidden, torch.stack(steps), rtol=1e-4, atol=1e-5)
    after = [model.decode(cache, torch.tensor([1]), ids[tokens:]) for cache in (prefilled, decoded)]
    torch.testing.assert_close(after[0], after[1], rtol=1e-4, atol=1e-5)


def test_top_k_is_the_best_candidates_by_dot_product_best_first() -> None:
    model, _ = model_and_cache(1, 4, 6)
    hidden = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    candidates = torch.tensor([17, 2, 9, 4, 11])
    scores, items = model.top_k(hidden, 3, candidates)
    brute = hidden @ model.embedding.weight[candidates].T
    for row in range(3):
        order = brute[row].argsort(descending=True)[:3]
        assert items[row].tolist() == candidates[order].tolist()
        torch.testing.assert_close(scores[row], brute[row, order])
    assert model.top_k(hidden, VOCAB)[1].sort().values.eq(torch.arange(VOCAB)).all()
    with pytest.raises(ValueError, match=r"k must be in \[1, 5\], the number of candidates \(got 6\)"):
        model.top_k(hidden, 6, candidates)


def test_the_model_refuses_a_cache_of_another_shape_odd_heads_and_sinks_without_a_window() -> None:
    model, _ = model_and_cache(2, 4, 6)
    cache = RollingKVCache(2, 3, 2, 8, window=6)
    with pytest.raises(ValueError, match="the cache holds 3 layers x 2 heads x 8 dims but the model has 2 x 2 x 8"):
        model.decode(cache, torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"heads of an even size for RoPE \(got dim=12, heads=4\)"):
        SequenceTransformer(VOCAB, dim=12, heads=4)
    with pytest.raises(ValueError, match=r"got sinks=4, window=None"):
        model(torch.ones(1, 3, dtype=torch.long), sinks=4)
    with pytest.raises(ValueError, match=r"got sinks=0, window=0"):
        model(torch.ones(1, 3, dtype=torch.long), window=0)


class History:
    """What the pipeline keeps per stream (in Redis): the ids so far, here all of them; counts the look-ups."""

    def __init__(self) -> None:
        self.ids: dict[Hashable, list[int]] = {}
        self.calls: list[Hashable] = []

    def __call__(self, key: Hashable) -> list[int]:
        self.calls.append(key)
        return list(self.ids.get(key, []))

    def record(self, keys: list[str], items: list[int]) -> None:
        for key, item in zip(keys, items, strict=True):
            self.ids.setdefault(key, []).append(item)


def test_an_evicted_stream_is_rebuilt_by_one_prefill_and_recommends_as_if_never_evicted() -> None:
    """Two slots for three users (histories within sinks + window, where a rebuild is exact) against a recommender
    with a slot for everyone."""
    model, small = model_and_cache(2, 2, 8, slots=2)
    _, large = model_and_cache(2, 2, 8, slots=3)
    histories = History(), History()
    recommenders = [SequenceRecommender(model, c, h) for c, h in zip((small, large), histories, strict=True)]
    batches = [(["a", "b"], [1, 2]), (["c"], [3]), (["a", "c"], [4, 5]), (["b"], [6]), (["a", "b"], [7, 8])]
    evicted = []
    for keys, items in batches:
        outs = [r.step(keys, items, k=4, candidates=torch.arange(1, VOCAB)) for r in recommenders]
        for history in histories:
            history.record(keys, items)
        assert torch.equal(outs[0].items, outs[1].items)
        torch.testing.assert_close(outs[0].scores, outs[1].scores, rtol=1e-4, atol=1e-5)
        assert outs[1].evicted == []
        evicted.append(outs[0].evicted)
    assert evicted == [[], ["a"], ["b"], ["c"], []]
    assert histories[0].calls == ["a", "b", "c", "a", "b"]  # the first look-up of each, then one per return
    assert histories[1].calls == ["a", "b", "c"]


def test_the_recommender_refuses_mismatched_keys_and_items() -> None:
    model, cache = model_and_cache(1, 2, 4)
    recommender = SequenceRecommender(model, cache, lambda key: [])
    with pytest.raises(ValueError, match="got 2 keys but 1 items"):
        recommender.step(["a", "b"], [1], k=1)


def test_training_is_seeded_and_lowers_the_next_item_loss() -> None:
    sequences = torch.from_numpy(playlist_streams(64, 17, items=VOCAB - 1, playlist=(2, 3), noise=0.0, seed=0))
    runs = []
    for _ in range(2):
        model = SequenceTransformer(VOCAB, dim=16, layers=1, heads=2, seed=0)
        runs.append(train_next_item(model, sequences, steps=40, batch_size=16, lr=1e-2, seed=1))
    assert runs[0] == runs[1]
    assert sum(runs[0][-5:]) < 0.6 * sum(runs[0][:5])


def test_the_rolling_loss_is_the_windowed_recompute_loss() -> None:
    model, _ = model_and_cache(2, 2, 5)
    ids = random_ids(3, 25, seed=1)
    expected = F.cross_entropy(
        model.logits(model(ids[:, :-1], sinks=2, window=5)).transpose(1, 2), ids[:, 1:], reduction="none"
    ).mean(0)
    torch.testing.assert_close(rolling_next_item_loss(model, ids, window=5, sinks=2), expected, rtol=1e-4, atol=1e-5)
