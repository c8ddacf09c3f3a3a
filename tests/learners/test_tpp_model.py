"""The attention TPP and its prompt pools: likelihood arithmetic, masks (prompts, padding, causality), retrieval."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from learners.tpp.model import AttentionTPP, Prefix, widened_mask
from learners.tpp.prompts import PromptPool, PromptPools
from learners.tpp.sequences import EventBatch, ValidSequence, pad_sequences

N_TYPES = 2


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs torch on one thread (tests/learners/conftest.py)."""


def make_model(seed: int = 0, n_layers: int = 2) -> AttentionTPP:
    torch.manual_seed(seed)
    return AttentionTPP(N_TYPES, d_model=16, n_layers=n_layers, n_heads=2, time_scale=0.5)


def make_batch() -> EventBatch:
    """Two sequences of different lengths, so that the shorter one is padded."""
    return pad_sequences(
        [
            ValidSequence(np.array([0.3, 0.9, 1.0, 2.2]), np.array([0, 1, 1, 0]), 3.0),
            ValidSequence(np.array([0.5, 1.7]), np.array([1, 0]), 2.5),
        ],
        N_TYPES,
    )


def make_prompts(n_layers: int, seed: int, shape: tuple[int, int] = (2, 5), n_prompts: int = 6) -> list[Prefix]:
    """Random prompts for every history (event position) of a batch of ``shape`` (B, N + 1)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        Prefix(
            torch.randn(*shape, n_prompts, 16, generator=generator),
            torch.randn(*shape, n_prompts, 16, generator=generator),
            torch.zeros(2),
        )
        for _ in range(n_layers)
    ]


def with_padding(batch: EventBatch, seed: int) -> EventBatch:
    """The same batch with random times and types written into the padded positions."""
    generator = torch.Generator().manual_seed(seed)
    pad = ~batch.valid
    times = torch.where(pad, torch.rand(batch.times.shape, generator=generator) * 10.0, batch.times)
    types = torch.where(pad, torch.randint(0, N_TYPES + 1, batch.types.shape, generator=generator), batch.types)
    return EventBatch(times, types, batch.valid, batch.counts, batch.t_end)


def query_grid(batch: EventBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Two time queries in every gap of every sequence, (B, N + 1, 2), and the gap of each group, (B, N + 1)."""
    gaps = torch.arange(batch.n_positions).expand(len(batch.counts), -1)
    ends = torch.cat([batch.times[:, 1:], batch.t_end[:, None]], dim=1)
    ends = torch.where(gaps < batch.counts[:, None], ends, batch.t_end[:, None])
    return torch.stack([(batch.times + ends) / 2.0, ends], dim=-1), gaps


def test_constant_intensity_gives_the_closed_form_log_likelihood() -> None:
    model = make_model()
    rate = 0.7
    with torch.no_grad():
        model.intensity_head.weight.zero_()
        model.intensity_head.bias.fill_(math.log(math.expm1(rate)))  # softplus^-1(rate)
    batch = make_batch()
    ll = model.log_likelihood(batch, 20, torch.Generator().manual_seed(0))
    expected = batch.counts * math.log(rate) - N_TYPES * rate * batch.t_end
    torch.testing.assert_close(ll, expected.float(), rtol=1e-5, atol=1e-5)


def test_log_likelihood_matches_a_manual_computation_from_the_intensity() -> None:
    """Σ log λ at the events minus a fine trapezoid integral of Σ_k λ_k, gap by gap, from ``hidden`` directly."""
    model = make_model(seed=3)
    seq = ValidSequence(np.array([0.4, 1.1, 1.3]), np.array([1, 0, 1]), 2.0)
    batch = pad_sequences([seq], N_TYPES)
    bounds = [0.0, *seq.times.tolist(), seq.t_end]
    manual = 0.0
    with torch.no_grad():
        for gap, (start, end) in enumerate(itertools.pairwise(bounds)):
            grid = torch.linspace(start, end, 2001)[1:]  # strictly after the gap's first event
            _, hidden = model.hidden(batch, grid[None, None], torch.tensor([[gap]]))
            total = model.intensities(hidden)[0, 0].sum(-1).double().numpy()
            sliver = float(total[0]) * (grid[0] - start).item()  # from the gap's start to the first grid time
            manual -= float(np.trapezoid(total, grid.double().numpy())) + sliver
            if gap < len(seq):
                at_event = model.intensities(hidden)[0, 0, -1, int(seq.types[gap])]
                manual += math.log(float(at_event))
        estimates = [
            float(model.log_likelihood(batch, 20, torch.Generator().manual_seed(seed))[0]) for seed in range(5)
        ]
    assert np.mean(estimates) == pytest.approx(manual, abs=2e-3)
    assert max(estimates) - min(estimates) < 1e-2  # stratified samples: little Monte-Carlo noise


def test_padding_contents_never_reach_a_valid_output() -> None:
    model = make_model()
    batch = make_batch()
    query_times, gaps = query_grid(batch)
    for prompts in (None, make_prompts(2, seed=1)):
        with torch.no_grad():
            events, hidden = model.hidden(batch, query_times, gaps, prompts)
            ll = model.log_likelihood(batch, 20, torch.Generator().manual_seed(0), prompts)
            summaries = model.history_summaries(batch)
            for seed in range(3):
                noisy = with_padding(batch, seed)
                noisy_events, noisy_hidden = model.hidden(noisy, query_times, gaps, prompts)
                valid_gaps = gaps <= batch.counts[:, None]
                torch.testing.assert_close(noisy_events[batch.valid], events[batch.valid])
                torch.testing.assert_close(noisy_hidden[valid_gaps], hidden[valid_gaps])
                torch.testing.assert_close(
                    model.log_likelihood(noisy, 20, torch.Generator().manual_seed(0), prompts), ll
                )
                torch.testing.assert_close(model.history_summaries(noisy)[batch.valid], summaries[batch.valid])


def test_widened_mask_shows_every_prompt_to_every_query_and_hides_what_was_hidden() -> None:
    visible = torch.tensor([[[True, False, False], [True, True, False]]])  # (B=1, Q=2, N=3), position 2 is padding
    mask = widened_mask(visible, n_prompts=4)
    assert mask.shape == (1, 1, 2, 7)
    assert (mask[0, 0, :, :4] == 0).all()
    torch.testing.assert_close(mask[0, 0, :, 4:] == 0, visible[0])
    assert torch.isneginf(mask[0, 0, :, 6]).all()


def test_every_query_sees_the_prompts() -> None:
    """Changing the prompt values changes the hidden state of every event and every time query."""
    model = make_model()
    batch = make_batch()
    query_times, gaps = query_grid(batch)
    first, second = make_prompts(2, seed=1), make_prompts(2, seed=1)
    second[0] = Prefix(first[0].keys, first[0].values + 1.0, first[0].log_weight)
    with torch.no_grad():
        events_a, hidden_a = model.hidden(batch, query_times, gaps, first)
        events_b, hidden_b = model.hidden(batch, query_times, gaps, second)
    valid_gaps = gaps <= batch.counts[:, None]
    assert ((events_a - events_b).abs().amax(-1)[batch.valid] > 1e-4).all()
    assert ((hidden_a - hidden_b).abs().amax(-1)[valid_gaps] > 1e-4).all()


def test_an_intensity_never_depends_on_later_events() -> None:
    model = make_model(n_layers=1)
    seq = ValidSequence(np.array([0.3, 0.9, 1.0, 2.2]), np.array([0, 1, 1, 0]), 3.0)
    changed = ValidSequence(np.array([0.3, 0.9, 1.0, 1.05]), np.array([0, 1, 1, 1]), 3.0)
    times = torch.tensor([[[0.2, 0.25], [0.5, 0.6], [0.95, 1.0], [1.02, 1.04]]])  # up to event 3's time and past it
    gaps = torch.tensor([[0, 1, 2, 3]])
    pools = PromptPools(n_layers=1, d_model=16, n_heads=2, pool_size=10, prompt_length=5, top_n=5)
    hidden = []
    for sequence in (seq, changed):
        batch = pad_sequences([sequence], N_TYPES)
        with torch.no_grad():  # also with prompts retrieved for each history, as the learner does
            query = pools.standardise(model.history_summaries(batch), batch.valid, update=False)
            prompts, _ = pools.retrieve(query)
            hidden.append([model.hidden(batch, times, gaps, p)[1] for p in (None, prompts)])
    torch.testing.assert_close(hidden[0], hidden[1])


def test_retrieval_picks_the_most_cosine_similar_keys() -> None:
    torch.manual_seed(0)
    pool = PromptPool(pool_size=6, prompt_length=2, d_model=3)
    with torch.no_grad():
        pool.keys.copy_(
            torch.tensor(
                [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [5.0, 1.0, 0], [-1.0, 0, 0], [1.0, 1.0, 0]],
            )
        )
    query = torch.tensor([[2.0, 0.1, 0.0], [0.0, 1.0, 0.5]])
    prompts, similarity = pool.retrieve(query, top_n=3)
    expected = [[0, 3, 5], [1, 5, 2]]  # by cosine, not by dot product: key 3 is the longest, not the most aligned
    for row, indices in enumerate(expected):
        torch.testing.assert_close(prompts[row], pool.prompts[indices].flatten(0, 1))
        cosines = torch.nn.functional.cosine_similarity(query[row][None], pool.keys[indices], dim=-1)
        torch.testing.assert_close(similarity[row], cosines)
    assert (similarity[:, :-1] >= similarity[:, 1:]).all()


def test_pools_give_one_prefix_per_layer_and_sum_the_selected_cosines() -> None:
    torch.manual_seed(0)
    pools = PromptPools(n_layers=2, d_model=8, n_heads=2, pool_size=10, prompt_length=5, top_n=5)
    query = torch.randn(3, 8)
    prefixes, similarity = pools.retrieve(query)
    assert len(prefixes) == 2
    assert all(p.keys.shape == p.values.shape == (3, 25, 8) for p in prefixes)
    torch.testing.assert_close(prefixes[0].log_weight, torch.full((2,), -math.log(25)))
    expected = sum(
        pool.retrieve(query, 5)[1].sum(1) for layer in pools.layers for pool in (layer.key_pool, layer.value_pool)
    )
    torch.testing.assert_close(similarity, expected)
    similarity.sum().backward()  # the cosine term reaches the keys, and only the selected ones
    key_grad = pools.layers[0].key_pool.keys.grad
    assert key_grad is not None and 5 <= int((key_grad.abs().sum(1) > 0).sum()) <= 10


def test_query_standardisation_tracks_training_queries_only() -> None:
    pools = PromptPools(n_layers=1, d_model=4, n_heads=1, pool_size=4, prompt_length=1, top_n=2)
    queries = torch.randn(64, 4) * 3.0 + 5.0
    valid = torch.ones(64, dtype=torch.bool)
    valid[-8:] = False  # queries that are not histories (padding) do not count
    queries[-8:] = 1e6
    standardised = pools.standardise(queries, valid, update=True)
    torch.testing.assert_close(standardised[:-8].mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    state = (pools.query_mean.clone(), pools.query_var.clone())
    pools.standardise(torch.randn(8, 4), torch.ones(8, dtype=torch.bool), update=False)
    torch.testing.assert_close((pools.query_mean, pools.query_var), state)
