"""ContinualTPP (PromptTPP and its baselines) and the streaming protocol, on exact Hawkes data."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from connectors.sources.hawkes import EventSequence, HawkesParams, drifting_hawkes, log_likelihood, simulate
from learners.tpp import ContinualTPP
from learners.tpp.protocol import run_protocol

SMALL: dict[str, Any] = {"d_model": 16, "n_heads": 2, "time_scale": 0.5, "batch_size": 8}


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs torch on one thread (tests/learners/conftest.py)."""


@pytest.fixture(scope="module")
def periods() -> list[list[EventSequence]]:
    """Three drifting periods of 8 short 2-type Hawkes sequences each (about 15 events per sequence)."""
    stream = drifting_hawkes(n_types=2, n_periods=3, sequences_per_period=8, t_end=8.0, seed=4)
    return [period.sequences for period in stream]


def make(strategy: str = "prompt", seed: int = 0, **params: Any) -> ContinualTPP:
    return ContinualTPP(2, strategy, seed=seed, **{**SMALL, **params})


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    """Names of the floating-point tensors that differ from ``before`` (running query statistics excluded)."""
    return {
        name
        for name, value in module.state_dict().items()
        if value.is_floating_point() and not name.startswith("query_") and not torch.equal(value, before[name])
    }


def test_predict_next_is_after_the_history_with_a_valid_type(periods: list[list[EventSequence]]) -> None:
    model = make()
    model.fit_period(periods[0], epochs=1)
    seq = periods[1][0]
    for prefix in (0, 1, 5):
        prediction = model.predict_next(seq.times[:prefix], seq.types[:prefix])
        last = float(seq.times[prefix - 1]) if prefix else 0.0
        assert prediction.time > last and prediction.type in (0, 1)
        assert prediction.type_probs.shape == (2,) and prediction.type_probs.sum() == pytest.approx(1.0)
        assert prediction.type == int(np.argmax(prediction.type_probs))
    later = model.predict_next(seq.times[:5], seq.types[:5], now=float(seq.times[4]) + 3.0)
    assert later.time > float(seq.times[4]) + 3.0


def test_the_same_seed_gives_the_same_numbers(periods: list[list[EventSequence]]) -> None:
    results = []
    for seed in (0, 0, 1):
        model = make(seed=seed)
        losses = [model.fit_period(period, epochs=1) for period in periods[:2]]
        results.append((losses, model.log_likelihood(periods[2]), model.predict_next([0.5, 1.0], [0, 1]).time))
    assert results[0] == results[1]
    assert results[0] != results[2]


def test_evaluating_changes_neither_the_model_nor_what_training_draws_next(periods: list[list[EventSequence]]) -> None:
    quiet, busy = make(), make()
    for model in (quiet, busy):
        model.fit_period(periods[0], epochs=1)
    assert busy.log_likelihood(periods[1]) == busy.log_likelihood(periods[1])
    busy.predict_next([0.5], [1])
    for model in (quiet, busy):
        model.fit_period(periods[1], epochs=1)
    assert quiet.log_likelihood(periods[2]) == busy.log_likelihood(periods[2])


@pytest.mark.parametrize("strategy", ["prompt", "finetune", "frozen"])
def test_a_restored_checkpoint_continues_identically(periods: list[list[EventSequence]], strategy: str) -> None:
    original = make(strategy)
    original.fit_period(periods[0], epochs=1)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)  # plain tensors and Python values: loadable with weights_only
    buffer.seek(0)
    restored = make(strategy)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for model in (original, restored):
        model.fit_period(periods[1], epochs=1)
    assert original.log_likelihood(periods[2]) == restored.log_likelihood(periods[2])
    assert original.predict_next([0.5, 1.0], [0, 1]).time == restored.predict_next([0.5, 1.0], [0, 1]).time


def test_a_checkpoint_is_refused_by_a_learner_built_differently(periods: list[list[EventSequence]]) -> None:
    state = make("prompt").state_dict()
    with pytest.raises(ValueError, match="saved with strategy='prompt' but this learner has strategy='finetune'"):
        make("finetune").load_state_dict(state)
    with pytest.raises(ValueError, match="not a ContinualTPP state"):
        make("prompt").load_state_dict({"format": 99})


def test_frozen_never_changes_after_its_first_period(periods: list[list[EventSequence]]) -> None:
    model = make("frozen")
    assert model.fit_period(periods[0], epochs=1) is not None
    before = snapshot(model.network)
    score = model.log_likelihood(periods[2])
    assert model.fit_period(periods[1], epochs=2) is None
    assert not changed(before, model.network)
    assert model.log_likelihood(periods[2]) == score
    assert (model.periods_seen, model.periods_trained) == (2, 1)


@pytest.mark.parametrize("strategy", ["prompt", "finetune"])
def test_finetune_and_prompt_keep_learning(periods: list[list[EventSequence]], strategy: str) -> None:
    model = make(strategy)
    for period in periods[:2]:
        before = snapshot(model.network)
        model.fit_period(period, epochs=1)
        assert changed(before, model.network)


def test_asynchronous_refresh_alternates_pools_and_base(periods: list[list[EventSequence]]) -> None:
    """First period: base and pools learn together. Then one batch per call: pools, base, pools, ..."""
    model = make("prompt", batch_size=len(periods[1]))
    before_base, before_pools = snapshot(model.network), snapshot(model.pools)
    model.fit_period(periods[0], epochs=1)
    assert changed(before_base, model.network) and changed(before_pools, model.pools)
    for _ in range(4):
        pools_turn = model.batches_seen % 2 == 0  # batches are counted on from the first period's
        before_base, before_pools = snapshot(model.network), snapshot(model.pools)
        model.fit_period(periods[1], epochs=1)  # one batch
        assert bool(changed(before_base, model.network)) is not pools_turn
        assert bool(changed(before_pools, model.pools)) is pools_turn
    assert model.optimizer.param_groups[0]["lr"] == model._params["base_lr"]


def test_the_cosine_term_is_what_trains_the_keys(periods: list[list[EventSequence]]) -> None:
    """Top-N retrieval is not differentiable: with cos_weight 0 the keys never move, with 0.1 the selected do."""
    keys = {}
    for weight in (0.0, 0.1):
        model = make("prompt", cos_weight=weight)
        before = snapshot(model.pools)
        model.fit_period(periods[0], epochs=1)
        keys[weight] = {name for name in changed(before, model.pools) if name.endswith(".keys")}
    assert keys[0.0] == set()
    assert keys[0.1] == {"layers.0.key_pool.keys", "layers.0.value_pool.keys"}


def test_training_beats_an_untrained_model_on_a_hawkes_process() -> None:
    params = HawkesParams(mu=np.array([0.4, 0.3]), alpha=np.array([[0.5, 0.1], [0.3, 0.3]]), beta=2.0)
    rng = np.random.default_rng(0)
    train = [simulate(params, 40.0, rng) for _ in range(12)]
    test = [simulate(params, 40.0, rng) for _ in range(6)]
    n_train, n_test = sum(len(s) for s in train), sum(len(s) for s in test)
    assert n_train > 300
    model = make("finetune", lr=1e-2)
    untrained = model.log_likelihood(test)[0] / n_test
    model.fit_period(train, epochs=6)
    trained = model.log_likelihood(test)[0] / n_test
    truth = sum(log_likelihood(params, s) for s in test) / n_test
    assert trained > untrained + 0.15
    assert trained > truth - 0.15


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_types": 0}, "n_types must be an int >= 1"),
        ({"strategy": "replay"}, "strategy must be one of prompt, finetune, frozen"),
        ({"d_model": 15}, "d_model must be an int divisible by 2 \\* n_heads"),
        ({"top_n": 11}, "top_n must be an int between 1 and pool_size=10"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"mc_samples": 0}, "mc_samples must be an int >= 1"),
    ],
)
def test_bad_parameters_are_refused_with_the_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContinualTPP(**{"n_types": 2, **kwargs})


@pytest.mark.parametrize(
    ("times", "types", "t_end", "message"),
    [
        ([0.5, 0.2], [0, 1], 1.0, "times must be non-decreasing \\(got 0.5 then 0.2 at positions 0, 1\\)"),
        ([0.5, 0.7], [0, 2], 1.0, "types must be in \\[0, 2\\) \\(got 2 at position 1\\)"),
        ([-0.1], [0], 1.0, "times must be >= 0"),
        ([0.5, 0.7], [0], 1.0, "1-D arrays of one length"),
        ([0.5, 0.7], [0.0, 1.0], 1.0, "types must be integers"),
        ([0.5, float("nan")], [0, 1], 1.0, "times must be finite"),
        ([0.5, 0.7], [0, 1], 0.6, "t_end must be finite and >= the last event time 0.7"),
    ],
)
def test_bad_sequences_are_refused_with_the_fix(
    times: list[float], types: list[Any], t_end: float, message: str
) -> None:
    model = make()

    class Sequence:  # a structural sequence: any object with .times, .types and .t_end
        def __init__(self) -> None:
            self.times, self.types, self.t_end = np.array(times), np.array(types), t_end

    with pytest.raises(ValueError, match=message):
        model.fit_period([Sequence()])
    with pytest.raises(ValueError, match="sequence 0"):
        model.log_likelihood([Sequence()])


def test_bad_calls_are_refused_with_the_fix() -> None:
    model = make()
    with pytest.raises(ValueError, match="expected a non-empty list of sequences"):
        model.fit_period([])
    with pytest.raises(ValueError, match="sequence 0 has no times, types, t_end"):
        model.log_likelihood([object()])
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        model.fit_period([EventSequence(np.array([0.1]), np.array([0]), 1.0)], epochs=0)
    with pytest.raises(ValueError, match=r"now must be finite and >= the last event time 2.0 \(got 1.5\)"):
        model.predict_next([1.0, 2.0], [0, 1], now=1.5)


def test_the_protocol_scores_each_period_before_training_on_it(periods: list[list[EventSequence]]) -> None:
    result = run_protocol(make("finetune"), periods, epochs=1, holdout=0.25, max_predictions=10, seed=0)
    untrained = make("finetune").log_likelihood(periods[0])
    assert result.prequential[0].log_likelihood == untrained[0] / untrained[1]
    assert len(result.prequential) == len(result.after_training) == len(result.final) == 3
    assert all(scores.n_predictions == 10 and 0.0 <= scores.type_accuracy <= 1.0 for scores in result.prequential)
    assert all(scores.rmse > 0.0 for scores in result.prequential)
    assert result.final[-1] == result.after_training[-1]
    drops = [a - f for a, f in zip(result.after_training[:2], result.final[:2], strict=True)]
    assert result.forgetting == pytest.approx(float(np.mean(drops)))
    assert result.mean_log_likelihood == pytest.approx(np.mean([s.log_likelihood for s in result.prequential]))


def test_a_frozen_model_forgets_nothing(periods: list[list[EventSequence]]) -> None:
    result = run_protocol(make("frozen"), periods, epochs=1, max_predictions=5)
    assert result.forgetting == 0.0


def test_the_protocol_refuses_bad_settings(periods: list[list[EventSequence]]) -> None:
    with pytest.raises(ValueError, match="holdout must be in \\[0, 1\\)"):
        run_protocol(make(), periods, holdout=1.0)
    with pytest.raises(ValueError, match="period 1 has 1 sequences; it needs at least 2"):
        run_protocol(make(), [periods[0], periods[1][:1]], holdout=0.2)
    with pytest.raises(ValueError, match="periods is empty"):
        run_protocol(make(), [])


def test_predict_next_of_a_constant_intensity_is_the_exponential_mean() -> None:
    """With λ = (0.2, 0.6) everywhere, the next event comes after Exp(0.8): mean 1.25, type 1 with probability 3/4."""
    model = make("finetune")
    with torch.no_grad():
        model.network.intensity_head.weight.zero_()
        model.network.intensity_head.bias.copy_(torch.tensor([0.2, 0.6]).expm1().log())  # softplus^-1
    prediction = model.predict_next([0.5, 1.0], [0, 1])
    assert prediction.time == pytest.approx(1.0 + 1.25, abs=1e-3)
    assert prediction.type == 1
    np.testing.assert_allclose(prediction.type_probs, [0.25, 0.75], atol=1e-6)
    later = model.predict_next([0.5, 1.0], [0, 1], now=4.0)
    assert later.time == pytest.approx(4.0 + 1.25, abs=1e-3)  # memoryless
