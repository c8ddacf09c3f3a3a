"""The Hawkes simulator and its closed forms, checked against brute force, numerical integration and theory."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from connectors.messages import decode, encode
from connectors.sources import (
    EventSequence,
    HawkesParams,
    compensator,
    drifting_hawkes,
    intensity,
    log_likelihood,
    random_params,
    rescaled_times,
    simulate,
    to_interactions,
)
from connectors.sources.hawkes import INTERACTION_KINDS

Z = 5.0
"""How many standard errors a simulated statistic may be off: a false failure has odds below one in a million."""


@pytest.fixture
def params() -> HawkesParams:
    return random_params(3, 0.7, np.random.default_rng(11), base_rate=0.5, beta=2.0)


@pytest.fixture
def seq(params: HawkesParams) -> EventSequence:
    sequence = simulate(params, 20.0, np.random.default_rng(12))
    assert 50 < len(sequence) < 200
    return sequence


@pytest.fixture
def tied() -> EventSequence:
    """Events with ties (as real logs have): a tied event is not in the history of the one it ties with."""
    return EventSequence(np.array([0.5, 1.0, 1.0, 1.0, 2.0, 3.5]), np.array([0, 1, 2, 0, 1, 1]), t_end=4.0)


def brute_intensity(params: HawkesParams, seq: EventSequence, t: np.ndarray, right: bool = False) -> np.ndarray:
    """O(n m) sum over every (time, event) pair; ``right`` includes the events at the time itself (right limit)."""
    lags = t[:, None] - seq.times[None, :]
    before = lags >= 0 if right else lags > 0
    kernel = np.where(before, params.beta * np.exp(-params.beta * np.where(before, lags, 0.0)), 0.0)
    return params.mu + kernel @ params.alpha[:, seq.types].T


def numerical_compensator(params: HawkesParams, seq: EventSequence, until: float, points: int = 401) -> np.ndarray:
    """The trapezoid rule on a fine grid between consecutive events (the intensity jumps at events)."""
    breaks = np.unique(np.concatenate([[0.0], seq.times[seq.times < until], [until]]))
    total = np.zeros(params.n_types)
    for start, stop in itertools.pairwise(breaks):
        grid = np.linspace(start, stop, points)
        values = np.vstack([brute_intensity(params, seq, grid[:1], right=True), brute_intensity(params, seq, grid[1:])])
        total += np.trapezoid(values, grid, axis=0)
    return total


def test_intensity_matches_the_brute_force_sum(params: HawkesParams, seq: EventSequence) -> None:
    rng = np.random.default_rng(3)
    t = np.concatenate([rng.uniform(0.0, seq.t_end + 2.0, 300), seq.times, [0.0]])
    rng.shuffle(t)
    np.testing.assert_allclose(intensity(params, seq, t), brute_intensity(params, seq, t), rtol=1e-10)


def test_ties_stay_out_of_each_others_history(params: HawkesParams, tied: EventSequence) -> None:
    t = np.concatenate([tied.times, [1.0 + 1e-9, 3.9]])
    np.testing.assert_allclose(intensity(params, tied, t), brute_intensity(params, tied, t), rtol=1e-10)
    at_events = brute_intensity(params, tied, tied.times)[np.arange(len(tied)), tied.types]
    expected = np.log(at_events).sum() - numerical_compensator(params, tied, tied.t_end).sum()
    assert log_likelihood(params, tied) == pytest.approx(expected, rel=1e-6)


def test_intensity_without_events_is_the_base_rate(params: HawkesParams) -> None:
    empty = EventSequence(np.array([]), np.array([], dtype=np.int64), t_end=5.0)
    np.testing.assert_array_equal(intensity(params, empty, [0.0, 2.0]), np.tile(params.mu, (2, 1)))
    np.testing.assert_allclose(compensator(params, empty), params.mu * 5.0)
    assert log_likelihood(params, empty) == pytest.approx(-params.mu.sum() * 5.0)


def test_compensator_matches_numerical_integration(params: HawkesParams, seq: EventSequence) -> None:
    for until in (seq.t_end, float(seq.times[len(seq) // 2]), 0.37 * seq.t_end, seq.t_end + 3.0):
        np.testing.assert_allclose(
            compensator(params, seq, until), numerical_compensator(params, seq, until), rtol=1e-5
        )
    np.testing.assert_array_equal(compensator(params, seq), compensator(params, seq, seq.t_end))


def test_log_likelihood_matches_brute_force(params: HawkesParams, seq: EventSequence) -> None:
    at_events = brute_intensity(params, seq, seq.times)[np.arange(len(seq)), seq.types]
    expected = np.log(at_events).sum() - numerical_compensator(params, seq, seq.t_end).sum()
    assert log_likelihood(params, seq) == pytest.approx(expected, rel=1e-6)


def test_the_true_regime_explains_its_data_better(params: HawkesParams, seq: EventSequence) -> None:
    other = random_params(3, 0.7, np.random.default_rng(99), base_rate=0.5, beta=2.0)
    assert log_likelihood(params, seq) > log_likelihood(other, seq)


def test_rescaled_times_are_the_compensator_at_events(params: HawkesParams, seq: EventSequence) -> None:
    expected = [compensator(params, seq, float(t)).sum() for t in seq.times]
    np.testing.assert_allclose(rescaled_times(params, seq), expected, rtol=1e-10)


def test_time_rescaling_gives_unit_exponential_gaps() -> None:
    """Time-rescaling theorem: the compensator's increments between events are independent Exp(1)."""
    params = HawkesParams(mu=np.array([0.3, 0.2]), alpha=np.array([[0.4, 0.2], [0.3, 0.3]]), beta=1.5)
    gaps = np.diff(rescaled_times(params, simulate(params, 1_000.0, np.random.default_rng(5))), prepend=0.0)
    n = gaps.size
    assert n > 1_000
    assert abs(gaps.mean() - 1.0) < Z / math.sqrt(n)  # Exp(1): variance 1
    assert abs(gaps.var() - 1.0) < Z * math.sqrt(8.0 / n)  # variance of the sample variance: (mu4 - 1) / n = 8 / n
    uniform = np.sort(-np.expm1(-gaps))
    ranks = np.arange(1, n + 1) / n
    kolmogorov_smirnov = max(np.max(ranks - uniform), np.max(uniform - (ranks - 1.0 / n)))
    assert kolmogorov_smirnov < 1.95 / math.sqrt(n)  # the 0.1% critical value


def test_counts_per_type_match_the_stationary_rates() -> None:
    params = HawkesParams(
        mu=np.array([0.4, 0.2, 0.3]), alpha=np.array([[0.3, 0.1, 0.0], [0.2, 0.2, 0.1], [0.0, 0.3, 0.2]]), beta=3.0
    )
    t_end = 4_000.0
    counts = np.bincount(simulate(params, t_end, np.random.default_rng(8)).types, minlength=3)
    # Asymptotic covariance of N(T) / T for a Hawkes process: B diag(rates) B^T with B = (I - alpha)^-1
    rates = params.stationary_rates()
    amplification = np.linalg.inv(np.eye(3) - params.alpha)
    variance = np.diag(amplification @ np.diag(rates) @ amplification.T) * t_end
    z_scores = (counts - rates * t_end) / np.sqrt(variance)
    assert np.all(np.abs(z_scores) < Z), z_scores


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.8])
def test_each_event_has_branching_ratio_children_on_average(ratio: float) -> None:
    """1-D: N = immigrants + children, immigrants ~ Poisson(mu T), so (N - mu T) / N estimates the ratio."""
    mu, beta, t_end = 1.0, 2.0, 1_500.0
    params = HawkesParams(mu=np.array([mu]), alpha=np.array([[ratio]]), beta=beta)
    n = len(simulate(params, t_end, np.random.default_rng(21)))
    # E N(T) from an empty start: m(t) = mu / (1 - ratio) - (mu ratio / (1 - ratio)) exp(-beta (1 - ratio) t)
    stationary = mu / (1 - ratio)
    deficit = (stationary - mu) / (beta * (1 - ratio)) * -math.expm1(-beta * (1 - ratio) * t_end)
    expected = stationary * t_end - deficit
    spread = math.sqrt(mu * t_end / (1 - ratio) ** 3)
    assert abs(n - expected) < Z * spread
    assert (n - mu * t_end) / n == pytest.approx(ratio, abs=Z * (1 - ratio) * spread / n + 1e-12)


def test_simulation_is_deterministic_and_can_be_capped(params: HawkesParams) -> None:
    first = simulate(params, 50.0, np.random.default_rng(4))
    assert first == simulate(params, 50.0, np.random.default_rng(4))
    assert first != simulate(params, 50.0, np.random.default_rng(5))
    assert np.all(np.diff(first.times) > 0) and first.times[-1] < first.t_end == 50.0
    capped = simulate(params, 50.0, np.random.default_rng(4), max_events=10)
    assert len(capped) == 10 and capped.t_end == capped.times[-1]
    np.testing.assert_array_equal(capped.times, first.times[:10])
    assert math.isfinite(log_likelihood(params, capped))


def test_known_values() -> None:
    params = HawkesParams(mu=np.array([0.5, 0.2]), alpha=np.array([[0.3, 0.1], [0.2, 0.4]]), beta=2.0)
    assert params.n_types == 2
    assert params.branching_ratio == pytest.approx(0.5)
    np.testing.assert_allclose(params.stationary_rates(), [0.8, 0.6])
    for seed, size, ratio in ((1, 1, 0.5), (2, 4, 0.9), (3, 6, 0.0)):
        assert random_params(size, ratio, np.random.default_rng(seed)).branching_ratio == pytest.approx(ratio)


def test_params_are_read_only_copies() -> None:
    mu = np.array([1.0, 2.0])
    params = HawkesParams(mu=mu, alpha=np.zeros((2, 2)), beta=1)
    mu[0] = 5.0
    assert params.mu[0] == 1.0 and params.mu.dtype == np.float64 and isinstance(params.beta, float)
    with pytest.raises(ValueError, match="read-only"):
        params.mu[0] = 3.0
    assert params == HawkesParams(mu=[1.0, 2.0], alpha=[[0, 0], [0, 0]], beta=1.0)  # type: ignore[arg-type]
    assert len({params, HawkesParams(mu=np.array([1.0, 2.0]), alpha=np.zeros((2, 2)), beta=1.0)}) == 1


@pytest.mark.parametrize(
    ("mu", "alpha", "beta", "message"),
    [
        ([1.0], [[1.0]], 1.0, r"spectral radius 1 >= 1.*alpha \* 0.9"),
        ([1.0, 1.0], [[0.2, 0.9], [0.9, 0.2]], 1.0, "spectral radius 1.1 >= 1"),
        ([-1.0], [[0.1]], 1.0, r"mu must be finite and > 0 \(got \[-1.0\]\)"),
        ([0.0], [[0.1]], 1.0, "mu must be finite and > 0"),
        ([1.0], [[-0.1]], 1.0, "alpha must be finite and >= 0"),
        ([1.0], [[math.nan]], 1.0, "alpha must be finite and >= 0"),
        ([1.0, 1.0], [[0.1]], 1.0, r"alpha must have shape \(K, K\) = \(2, 2\).*got \(1, 1\)"),
        ([[1.0]], [[0.1]], 1.0, r"mu must be a non-empty 1-D array.*\(1, 1\)"),
        ([], [], 1.0, "mu must be a non-empty 1-D array"),
        ([1.0], [[0.1]], 0.0, r"beta must be finite and > 0 \(got 0.0\)"),
        ([1.0], [[0.1]], math.inf, "beta must be finite and > 0"),
    ],
)
def test_bad_params_are_refused_with_what_to_change(mu: list, alpha: list, beta: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HawkesParams(mu=np.array(mu), alpha=np.array(alpha), beta=beta)


@pytest.mark.parametrize(
    ("times", "types", "t_end", "message"),
    [
        ([1.0, 0.5], [0, 0], 2.0, "non-decreasing; event 1 at 0.5 comes before event 0 at 1.0"),
        ([0.5, 3.0], [0, 0], 2.0, r"in \[0, t_end\] = \[0, 2.0\]"),
        ([-0.5], [0], 2.0, r"in \[0, t_end\]"),
        ([0.5], [0, 1], 2.0, "equally long"),
        ([0.5], [0.5], 2.0, "types must be integers"),
        ([0.5], [-1], 2.0, "types must be >= 0"),
        ([math.nan], [0], 2.0, "times must be finite"),
        ([0.5], [0], -1.0, "t_end must be finite and >= 0"),
    ],
)
def test_bad_sequences_are_refused(times: list, types: list, t_end: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventSequence(np.array(times), np.array(types), t_end)


def test_bad_arguments_are_refused(params: HawkesParams, seq: EventSequence) -> None:
    rng = np.random.default_rng(0)
    for t_end in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="t_end must be finite and > 0"):
            simulate(params, t_end, rng)
    with pytest.raises(ValueError, match="max_events must be >= 1"):
        simulate(params, 1.0, rng, max_events=0)
    with pytest.raises(ValueError, match=r"event type 3 but the process has 3 types \(0..2\)"):
        log_likelihood(params, EventSequence(np.array([1.0]), np.array([3]), 2.0))
    with pytest.raises(ValueError, match="finite times >= 0"):
        intensity(params, seq, [-1.0])
    with pytest.raises(ValueError, match=r"branching_ratio must be in \[0, 1\)"):
        random_params(2, 1.0, rng)
    with pytest.raises(ValueError, match="drift must be one of"):
        drifting_hawkes(2, 2, 1, 1.0, seed=0, drift="sudden")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t_end must be finite and > 0"):
        drifting_hawkes(2, 2, 1, 0.0, seed=0)


def test_drifting_hawkes_is_deterministic_for_a_seed() -> None:
    periods = drifting_hawkes(n_types=3, n_periods=3, sequences_per_period=2, t_end=15.0, seed=5)
    assert periods == drifting_hawkes(n_types=3, n_periods=3, sequences_per_period=2, t_end=15.0, seed=5)
    assert periods != drifting_hawkes(n_types=3, n_periods=3, sequences_per_period=2, t_end=15.0, seed=6)
    assert [p.index for p in periods] == [0, 1, 2]
    assert all(p.params.branching_ratio == pytest.approx(0.6) for p in periods)
    # the regimes do not depend on how many or how long the sequences are
    longer = drifting_hawkes(n_types=3, n_periods=3, sequences_per_period=5, t_end=40.0, seed=5)
    assert [p.params for p in longer] == [p.params for p in periods]


@pytest.mark.parametrize(
    ("drift", "new_mu", "new_alpha"),
    [("excitation", False, True), ("base", True, False), ("both", True, True), ("none", False, False)],
)
def test_drift_schedules_change_what_they_say(drift: str, new_mu: bool, new_alpha: bool) -> None:
    periods = drifting_hawkes(3, 4, 1, 5.0, seed=1, branching_ratio=0.5, drift=drift)  # type: ignore[arg-type]
    for before, after in itertools.pairwise(periods):
        assert np.array_equal(before.params.mu, after.params.mu) is not new_mu
        assert np.array_equal(before.params.alpha, after.params.alpha) is not new_alpha
        assert after.params.beta == before.params.beta
    if drift == "none":
        assert len({p.params for p in periods}) == 1


def test_to_interactions_round_trips_count_order_and_kinds(seq: EventSequence) -> None:
    kinds = ["click", "like", "gift"]
    interactions = to_interactions(seq, "u7", kinds, t0=1_000.0)
    assert len(interactions) == len(seq)
    assert [kinds.index(i.kind) for i in interactions] == seq.types.tolist()
    assert [f"s{k}" for k in seq.types] == [i.streamer for i in interactions]
    np.testing.assert_allclose([i.ts - 1_000.0 for i in interactions], seq.times, atol=1e-9)
    assert {i.user for i in interactions} == {"u7"}
    assert decode(encode(interactions[0]), "interaction/v1") == interactions[0]


def test_to_interactions_refuses_unknown_or_missing_kinds(seq: EventSequence) -> None:
    with pytest.raises(ValueError, match=r"kinds \['purchase'\] are not Interaction kinds"):
        to_interactions(seq, "u1", ["click", "purchase", "like"])
    with pytest.raises(ValueError, match="event type 2 but only 2 kinds"):
        to_interactions(seq, "u1", ["click", "like"])
    assert "click" in INTERACTION_KINDS
