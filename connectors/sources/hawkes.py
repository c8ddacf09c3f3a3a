"""Multivariate exponential Hawkes processes: exact simulation, closed-form intensity and likelihood, drift schedules.

The ground truth for the temporal-point-process learners (specs/prompttpp.md): a model's per-event log-likelihood
on these sequences is reported beside the true process's, which :func:`log_likelihood` gives exactly. The
conditional intensity of type ``i`` given the events ``(t_j, k_j)`` strictly before ``t`` is

    λ_i(t) = mu[i] + Σ_{t_j < t} alpha[i, k_j] · beta · exp(-beta (t - t_j))

so ``alpha[i, j]`` is the expected number of type-``i`` children of one type-``j`` event (the kernel
``beta · exp(-beta s)`` integrates to 1), the process is stationary when the spectral radius of ``alpha`` (the
branching ratio) is below 1, and its stationary rates are ``(I - alpha)^-1 mu``. Everything here is O(n) in the
number of events, by the usual recursion on the exponential state. numpy only.

>>> params = HawkesParams(mu=np.array([0.5, 0.2]), alpha=np.array([[0.3, 0.1], [0.2, 0.4]]), beta=2.0)
>>> params.n_types, round(params.branching_ratio, 3), params.stationary_rates().round(3).tolist()
(2, 0.5, [0.8, 0.6])
>>> seq = simulate(params, t_end=100.0, rng=np.random.default_rng(0))
>>> bool(np.all(np.diff(seq.times) > 0)), seq.t_end, bool(log_likelihood(params, seq) < 0)
(True, 100.0, True)

References
----------
Ogata, Y. (1981). On Lewis' simulation method for point processes. IEEE Trans. Inf. Theory 27(1), 23-31.
Hawkes, A. G. (1971). Spectra of some self-exciting and mutually exciting point processes. Biometrika 58(1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from connectors.messages import Interaction

Drift = Literal["excitation", "base", "both", "none"]
DRIFTS: tuple[Drift, ...] = get_args(Drift)
"""The drift schedules of :func:`drifting_hawkes`: what changes from one period to the next."""

INTERACTION_KINDS: tuple[str, ...] = get_args(Interaction.model_fields["kind"].annotation)
"""The values ``Interaction.kind`` accepts, which :func:`to_interactions` maps event types to."""

_BASE_SPREAD = (0.25, 1.75)
"""Base rates are drawn as ``base_rate`` times a uniform factor in this range, so regimes differ visibly."""
_RANDOM_BLOCK = 1024
"""How many exponential and uniform variates the simulator draws at a time (one numpy call per block)."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _frozen(array: npt.ArrayLike, dtype: type[np.float64] | type[np.int64]) -> npt.NDArray[np.generic]:
    """A read-only copy: a frozen dataclass should not be changed through its arrays either."""
    copy = np.array(array, dtype=dtype)
    copy.flags.writeable = False
    return copy


def _spectral_radius(matrix: FloatArray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(matrix)))) if matrix.size else 0.0


@dataclass(frozen=True, eq=False)
class HawkesParams:
    """One regime of a multivariate exponential Hawkes process (see the module docstring for the intensity).

    ``mu`` (K,) base rates > 0; ``alpha`` (K, K) >= 0, ``alpha[i, j]`` the expected number of type-``i`` children of
    one type-``j`` event; ``beta`` > 0 the decay rate shared by all kernels. The arrays are stored as read-only
    float64 copies. An explosive regime (branching ratio >= 1, the number of events would grow without bound) is
    refused. Equal when the values are equal.

    >>> HawkesParams(mu=np.array([1.0]), alpha=np.array([[1.2]]), beta=1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: HawkesParams: alpha has spectral radius 1.2 >= 1, ... e.g. alpha * 0.75 for a branching ratio of 0.9
    """

    mu: FloatArray
    alpha: FloatArray
    beta: float

    def __post_init__(self) -> None:
        mu = np.asarray(self.mu, dtype=np.float64)
        alpha = np.asarray(self.alpha, dtype=np.float64)
        if mu.ndim != 1 or mu.size == 0:
            raise ValueError(f"HawkesParams: mu must be a non-empty 1-D array of base rates (got shape {mu.shape})")
        n_types = mu.size
        if alpha.shape != (n_types, n_types):
            raise ValueError(
                f"HawkesParams: alpha must have shape (K, K) = ({n_types}, {n_types}) to match mu (got {alpha.shape})"
            )
        if not (np.all(np.isfinite(mu)) and np.all(mu > 0)):
            raise ValueError(f"HawkesParams: mu must be finite and > 0 (got {mu.tolist()})")
        if not (np.all(np.isfinite(alpha)) and np.all(alpha >= 0)):
            raise ValueError(f"HawkesParams: alpha must be finite and >= 0 (got {alpha.tolist()})")
        beta = float(self.beta)
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"HawkesParams: beta must be finite and > 0 (got {self.beta})")
        radius = _spectral_radius(alpha)
        if radius >= 1:
            raise ValueError(
                f"HawkesParams: alpha has spectral radius {radius:.4g} >= 1, so the process explodes (every event has "
                f"{radius:.4g} children on average); scale alpha down, e.g. alpha * {0.9 / radius:.4g} for a "
                "branching ratio of 0.9"
            )
        object.__setattr__(self, "mu", _frozen(mu, np.float64))
        object.__setattr__(self, "alpha", _frozen(alpha, np.float64))
        object.__setattr__(self, "beta", beta)

    @property
    def n_types(self) -> int:
        """K, the number of event types."""
        return int(self.mu.size)

    @property
    def branching_ratio(self) -> float:
        """The spectral radius of ``alpha``: the long-run number of descendants per generation (< 1)."""
        return _spectral_radius(self.alpha)

    def stationary_rates(self) -> FloatArray:
        """``(I - alpha)^-1 mu``: the expected number of events per unit time of each type, once stationary."""
        return np.asarray(np.linalg.solve(np.eye(self.n_types) - self.alpha, self.mu), dtype=np.float64)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HawkesParams):
            return NotImplemented
        return self.beta == other.beta and np.array_equal(self.mu, other.mu) and np.array_equal(self.alpha, other.alpha)

    def __hash__(self) -> int:
        return hash((self.mu.tobytes(), self.alpha.tobytes(), self.beta))


@dataclass(frozen=True, eq=False)
class EventSequence:
    """A marked event sequence observed on the window ``[0, t_end]``.

    ``times`` (float64) are non-decreasing in ``[0, t_end]``: ties are allowed because real logs have them
    (EasyTPP's Taobao and StackOverflow sets do), and an event's history is always the events *strictly* before
    it, so tied events do not excite each other. Simulated sequences never tie. ``types`` (int64) are >= 0; each
    function taking a :class:`HawkesParams` checks them against its ``n_types``. Stored as read-only copies;
    equal when the values are equal.
    """

    times: FloatArray
    types: IntArray
    t_end: float

    def __post_init__(self) -> None:
        times = np.asarray(self.times, dtype=np.float64)
        raw_types = np.asarray(self.types)
        if times.ndim != 1 or raw_types.ndim != 1 or times.size != raw_types.size:
            raise ValueError(
                f"EventSequence: times and types must be 1-D and equally long (got shapes {times.shape} and "
                f"{raw_types.shape})"
            )
        if raw_types.size and raw_types.dtype.kind not in "iu":
            raise ValueError(f"EventSequence: types must be integers (got dtype {raw_types.dtype})")
        types = raw_types.astype(np.int64)
        t_end = float(self.t_end)
        if not (math.isfinite(t_end) and t_end >= 0):
            raise ValueError(f"EventSequence: t_end must be finite and >= 0 (got {self.t_end})")
        if not np.all(np.isfinite(times)):
            raise ValueError("EventSequence: times must be finite")
        if times.size and (times[0] < 0 or times[-1] > t_end):
            raise ValueError(
                f"EventSequence: times must lie in [0, t_end] = [0, {t_end}] (got {times[0]} .. {times[-1]})"
            )
        steps = np.diff(times)
        if np.any(steps < 0):
            position = int(np.argmax(steps < 0)) + 1
            raise ValueError(
                f"EventSequence: times must be non-decreasing; event {position} at {times[position]} comes before "
                f"event {position - 1} at {times[position - 1]} (sort the events by time)"
            )
        if np.any(types < 0):
            raise ValueError(f"EventSequence: types must be >= 0 (got {int(types.min())})")
        object.__setattr__(self, "times", _frozen(times, np.float64))
        object.__setattr__(self, "types", _frozen(types, np.int64))
        object.__setattr__(self, "t_end", t_end)

    def __len__(self) -> int:
        return int(self.times.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventSequence):
            return NotImplemented
        return (
            self.t_end == other.t_end
            and np.array_equal(self.times, other.times)
            and np.array_equal(self.types, other.types)
        )

    def __hash__(self) -> int:
        return hash((self.times.tobytes(), self.types.tobytes(), self.t_end))


def _check_types(params: HawkesParams, seq: EventSequence) -> None:
    if len(seq) and int(seq.types.max()) >= params.n_types:
        raise ValueError(
            f"the sequence has event type {int(seq.types.max())} but the process has {params.n_types} types "
            f"(0..{params.n_types - 1})"
        )


def _check_t_end(t_end: float) -> float:
    value = float(t_end)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"t_end must be finite and > 0 (got {t_end})")
    return value


def simulate(
    params: HawkesParams, t_end: float, rng: np.random.Generator, max_events: int | None = None
) -> EventSequence:
    """One sequence on ``[0, t_end)`` started empty, by Ogata's thinning, in O(n) time.

    Between events the total intensity only decays, so its value just after the last candidate bounds it until
    the next event: a candidate time is drawn from a Poisson process at that bound and kept with probability
    (intensity there) / bound, its type drawn in proportion to the per-type intensities. The excitation is kept
    as one K-vector that decays by ``exp(-beta dt)`` and jumps by ``beta alpha[:, k]`` at a type-``k`` event.

    ``max_events`` caps the length: the sequence then ends at its ``max_events``-th event (``t_end`` is that
    event's time), a stopping time, so the log-likelihood of the shorter window stays exact.
    """
    t_end = _check_t_end(t_end)
    if max_events is not None and max_events < 1:
        raise ValueError(f"max_events must be >= 1 or None (got {max_events})")
    mu, beta = params.mu, params.beta
    jumps = beta * params.alpha.T  # jumps[k]: what a type-k event adds to each type's intensity
    jump_totals = jumps.sum(axis=1)
    excitation = np.zeros(params.n_types)
    times: list[float] = []
    types: list[int] = []
    now, last_type = 0.0, params.n_types - 1
    bound = float(mu.sum())
    waits, uniforms = rng.standard_exponential(_RANDOM_BLOCK), rng.random(_RANDOM_BLOCK)
    draw = 0
    while True:
        if draw == _RANDOM_BLOCK:
            waits, uniforms = rng.standard_exponential(_RANDOM_BLOCK), rng.random(_RANDOM_BLOCK)
            draw = 0
        wait, uniform = waits[draw] / bound, uniforms[draw] * bound
        draw += 1
        if now + wait >= t_end:
            break
        now += wait
        excitation *= math.exp(-beta * wait)
        rates = mu + excitation
        cumulative = np.cumsum(rates)
        total = float(cumulative[-1])
        if uniform < total:  # accepted: uniform is then uniform on [0, total), and picks the type too
            kind = min(int(np.searchsorted(cumulative, uniform, side="right")), last_type)
            times.append(now)
            types.append(kind)
            excitation += jumps[kind]
            total += float(jump_totals[kind])
            if max_events is not None and len(times) >= max_events:
                return EventSequence(np.array(times), np.array(types, dtype=np.int64), now)
        bound = total
    return EventSequence(np.array(times), np.array(types, dtype=np.int64), t_end)


def _excitation_after_events(params: HawkesParams, seq: EventSequence) -> FloatArray:
    """Row ``i``: ``λ(t_i^+) - mu``, the excitation just after event ``i`` (events up to ``i`` included)."""
    after = np.empty((len(seq), params.n_types))
    jumps = params.beta * params.alpha.T
    decays = np.exp(-params.beta * np.diff(seq.times, prepend=seq.times[:1]))
    excitation = np.zeros(params.n_types)
    for index, (decay, kind) in enumerate(zip(decays, seq.types, strict=True)):
        excitation = excitation * decay + jumps[kind]
        after[index] = excitation
    return after


def _as_times(t: npt.ArrayLike) -> FloatArray:
    times = np.asarray(t, dtype=np.float64)
    if times.ndim != 1 or not np.all(np.isfinite(times)) or np.any(times < 0):
        raise ValueError(f"t must be a 1-D array of finite times >= 0 (got shape {times.shape})")
    return times


def intensity(params: HawkesParams, seq: EventSequence, t: npt.ArrayLike) -> FloatArray:
    """``λ(t)`` at each time of ``t``, shape ``(len(t), K)``, from the events strictly before each time.

    At an event's time this is the left limit ``λ(t_i^-)`` (what the likelihood uses). Past the sequence's last
    event it is the intensity given that nothing more happened, which is what next-event prediction needs; ``t``
    may be in any order and beyond ``t_end``. O((n + len(t)) K).

    >>> params = HawkesParams(mu=np.array([1.0]), alpha=np.array([[0.5]]), beta=2.0)
    >>> seq = EventSequence(np.array([1.0]), np.array([0]), t_end=3.0)
    >>> intensity(params, seq, [1.0, 1.5]).round(4).tolist()  # 1 + 0.5 * 2 * exp(-2 * 0.5) after the event
    [[1.0], [1.3679]]
    """
    _check_types(params, seq)
    times = _as_times(t)
    rates = np.tile(params.mu, (times.size, 1))
    if len(seq) == 0:
        return rates
    before = np.searchsorted(seq.times, times, side="left")  # how many events are strictly before each time
    has_past = before > 0
    last = before[has_past] - 1
    decay = np.exp(-params.beta * (times[has_past] - seq.times[last]))
    rates[has_past] += _excitation_after_events(params, seq)[last] * decay[:, None]
    return rates


def compensator(params: HawkesParams, seq: EventSequence, t: float | None = None) -> FloatArray:
    """``∫_0^t λ_k(s) ds`` for each type ``k``, shape ``(K,)``, in closed form; ``t`` defaults to ``seq.t_end``.

    Each event ``j`` before ``t`` adds ``alpha[k, k_j] (1 - exp(-beta (t - t_j)))`` to type ``k``'s integral.
    """
    _check_types(params, seq)
    until = seq.t_end if t is None else float(_as_times([t])[0])
    past = seq.times < until
    weights = -np.expm1(-params.beta * (until - seq.times[past]))
    per_source = np.bincount(seq.types[past], weights=weights, minlength=params.n_types)
    total: FloatArray = params.mu * until + params.alpha @ per_source
    return total


def rescaled_times(params: HawkesParams, seq: EventSequence) -> FloatArray:
    """``Λ(t_i) = Σ_k ∫_0^{t_i} λ_k``, the total compensator at each event time, in O(n K).

    By the time-rescaling theorem these are the event times of a unit-rate Poisson process when ``params`` is the
    true regime: their increments are independent Exp(1), a goodness-of-fit check for any intensity model.
    """
    _check_types(params, seq)
    if len(seq) == 0:
        return np.empty(0)
    gaps = np.diff(seq.times, prepend=0.0)
    previous = np.zeros((len(seq), params.n_types))
    previous[1:] = _excitation_after_events(params, seq)[:-1]
    excited = previous.sum(axis=1) * -np.expm1(-params.beta * gaps) / params.beta
    rescaled: FloatArray = np.cumsum(params.mu.sum() * gaps + excited)
    return rescaled


def log_likelihood(params: HawkesParams, seq: EventSequence) -> float:
    """The exact log-likelihood ``Σ_i log λ_{k_i}(t_i^-) - Σ_k ∫_0^T λ_k(t) dt`` of ``seq`` on ``[0, t_end]``.

    O(n K) by the exponential recursion. A Poisson process (``alpha = 0``) gives ``n log mu - mu T``:

    >>> params = HawkesParams(mu=np.array([2.0]), alpha=np.zeros((1, 1)), beta=1.0)
    >>> seq = EventSequence(np.array([0.5, 1.0, 2.5]), np.array([0, 0, 0]), t_end=4.0)
    >>> round(log_likelihood(params, seq), 6) == round(3 * math.log(2.0) - 2.0 * 4.0, 6)
    True
    """
    at_events = intensity(params, seq, seq.times)[np.arange(len(seq)), seq.types]
    return float(np.log(at_events).sum() - compensator(params, seq).sum())


def random_params(
    n_types: int, branching_ratio: float, rng: np.random.Generator, base_rate: float = 0.5, beta: float = 1.0
) -> HawkesParams:
    """A random regime whose ``alpha`` has exactly the given branching ratio (spectral radius).

    ``alpha`` is a uniform random non-negative matrix scaled to the ratio; ``mu`` is ``base_rate`` times a uniform
    factor in [0.25, 1.75) per type. ``branching_ratio = 0`` gives independent Poisson processes.

    >>> params = random_params(3, 0.7, np.random.default_rng(1))
    >>> params.n_types, round(params.branching_ratio, 12)
    (3, 0.7)
    """
    if n_types < 1:
        raise ValueError(f"n_types must be >= 1 (got {n_types})")
    if not 0 <= branching_ratio < 1:
        raise ValueError(f"branching_ratio must be in [0, 1) for a stationary process (got {branching_ratio})")
    mu = base_rate * rng.uniform(*_BASE_SPREAD, size=n_types)
    shape = rng.uniform(size=(n_types, n_types))
    alpha = shape * (branching_ratio / _spectral_radius(shape))
    return HawkesParams(mu=mu, alpha=alpha, beta=beta)


@dataclass(frozen=True)
class Period:
    """One period ("task") of a drifting stream: its index, its true regime and the sequences drawn from it."""

    index: int
    params: HawkesParams
    sequences: list[EventSequence]


def drifting_hawkes(
    n_types: int,
    n_periods: int,
    sequences_per_period: int,
    t_end: float,
    seed: int,
    branching_ratio: float = 0.6,
    drift: Drift = "excitation",
) -> list[Period]:
    """Consecutive periods of Hawkes sequences, each period its own regime: a known drift schedule.

    ``drift`` says what changes from one period to the next: ``"excitation"`` a new ``alpha`` (same ``mu``),
    ``"base"`` new base rates (same ``alpha``), ``"both"``, or ``"none"`` (stationary: one regime throughout).
    Every regime has the given branching ratio. Deterministic for a seed; the regimes depend only on the seed,
    ``n_types``, ``n_periods``, ``branching_ratio`` and ``drift``, not on how many or how long the sequences are.

    >>> periods = drifting_hawkes(n_types=2, n_periods=3, sequences_per_period=4, t_end=10.0, seed=7)
    >>> [len(p.sequences) for p in periods], periods[0].params == periods[1].params
    ([4, 4, 4], False)
    >>> bool(np.array_equal(periods[0].params.mu, periods[2].params.mu))  # "excitation" keeps the base rates
    True
    """
    if drift not in DRIFTS:
        raise ValueError(f"drift must be one of {list(DRIFTS)} (got {drift!r})")
    if n_periods < 1 or sequences_per_period < 0:
        raise ValueError(
            f"n_periods must be >= 1 and sequences_per_period >= 0 (got {n_periods} and {sequences_per_period})"
        )
    t_end = _check_t_end(t_end)
    regime_seed, sequence_seed = np.random.SeedSequence(seed).spawn(2)
    regime_rng = np.random.default_rng(regime_seed)
    first = random_params(n_types, branching_ratio, regime_rng)
    periods: list[Period] = []
    for index, period_seed in enumerate(sequence_seed.spawn(n_periods)):
        params = first
        if index > 0 and drift != "none":
            fresh = random_params(n_types, branching_ratio, regime_rng)
            params = HawkesParams(
                mu=fresh.mu if drift in ("base", "both") else first.mu,
                alpha=fresh.alpha if drift in ("excitation", "both") else first.alpha,
                beta=first.beta,
            )
        rng = np.random.default_rng(period_seed)
        sequences = [simulate(params, t_end, rng) for _ in range(sequences_per_period)]
        periods.append(Period(index, params, sequences))
    return periods


def to_interactions(seq: EventSequence, user: str, kinds: Sequence[str], t0: float = 0.0) -> list[Interaction]:
    """The events as one user's :class:`~connectors.messages.Interaction` log lines, in order.

    Type ``k`` becomes ``kind=kinds[k]`` on streamer ``f"s{k}"`` at ``ts = t0 + time``; ``kinds`` must be values
    of ``Interaction.kind`` (:data:`INTERACTION_KINDS`) and cover every type in the sequence.

    >>> seq = EventSequence(np.array([0.5, 1.25]), np.array([1, 0]), t_end=2.0)
    >>> [(i.kind, i.streamer, i.ts) for i in to_interactions(seq, "u1", ["click", "like"], t0=100.0)]
    [('like', 's1', 100.5), ('click', 's0', 101.25)]
    """
    unknown = [kind for kind in kinds if kind not in INTERACTION_KINDS]
    if unknown:
        raise ValueError(f"kinds {unknown} are not Interaction kinds; use some of {list(INTERACTION_KINDS)}")
    if len(seq) and int(seq.types.max()) >= len(kinds):
        raise ValueError(
            f"the sequence has event type {int(seq.types.max())} but only {len(kinds)} kinds were given; "
            "pass one kind per type"
        )
    return [
        Interaction(user=user, streamer=f"s{kind}", ts=t0 + time, kind=kinds[kind])
        for time, kind in zip(seq.times.tolist(), seq.types.tolist(), strict=True)
    ]
