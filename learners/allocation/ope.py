"""NCIS: normalised capped importance sampling of a target policy's value per session from logged sessions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from learners._state import require

__all__ = ["NCISEstimate", "ncis"]


@dataclass(frozen=True)
class NCISEstimate:
    """An NCIS estimate: ``value`` per session, its ``stderr`` (from each session's influence on the estimate),
    the effective number of sessions at the last step ``(sum w)² / sum w²`` and the share of weights the cap cut."""

    value: float
    stderr: float
    effective_sessions: float
    capped_share: float


def ncis(
    returns: npt.ArrayLike,
    session: npt.ArrayLike,
    rewards: npt.ArrayLike,
    propensity: npt.ArrayLike,
    target_probability: npt.ArrayLike,
    *,
    cap: float = 100.0,
) -> NCISEstimate:
    """Estimate the target policy's expected return per session from sessions logged under a behaviour policy.

    ``returns[j]`` is session ``j``'s whole return; per logged decision ``i``, in session order: ``session[i]``,
    ``rewards[i]`` the reward of its step (until the next decision or the session's end), ``propensity[i]`` the
    behaviour policy's probability of the action taken and ``target_probability[i]`` the target policy's. What a
    session earns before its first decision does not depend on the policy and counts as logged. Step ``t`` of every
    session is weighted by the product of the session's ratios up to it (per-decision importance sampling; a session
    that ended keeps its last weight and earns 0), capped at ``cap``, and normalised per step: ``sum_t sum_j w_jt r_jt /
    sum_j w_jt``. The cap and the normalisation bias it slightly but keep its variance far below plain importance
    sampling's, whose weights grow with the session's length.

    >>> ncis([10.0, 20.0], [0, 1], rewards=[10.0, 20.0], propensity=[0.5, 0.5], target_probability=[0.5, 0.5]).value
    15.0
    >>> ncis([10.0, 20.0], [0, 1], [10.0, 20.0], [0.5, 0.5], [1.0, 0.0]).value  # only session 0 took the target's
    10.0

    References
    ----------
    Gilotte, A., Calauzènes, C., Nedelec, T., Abraham, A., Dollé, S. (2018). Offline A/B testing for Recommender
    Systems. WSDM. Precup, D., Sutton, R. S., Singh, S. (2000). Eligibility Traces for Off-Policy Policy Evaluation.
    ICML.
    """
    returns_ = np.asarray(returns, dtype=np.float64)
    session_ = np.asarray(session, dtype=np.int64)
    rewards_ = np.asarray(rewards, dtype=np.float64)
    behaviour = np.asarray(propensity, dtype=np.float64)
    target = np.asarray(target_probability, dtype=np.float64)
    n = len(returns_)
    require(n >= 1, "ncis: no sessions to estimate from (got 0 returns)")
    require(
        session_.shape == rewards_.shape == behaviour.shape == target.shape,
        f"ncis: session, rewards, propensity and target_probability need one entry per decision (got shapes "
        f"{session_.shape}, {rewards_.shape}, {behaviour.shape}, {target.shape})",
    )
    require(bool(np.all((session_ >= 0) & (session_ < n))), f"ncis: session ids must index the {n} returns")
    require(bool(np.all(np.diff(session_) >= 0)), "ncis: decisions must be in session order (sort them by session)")
    require(
        bool(np.all((behaviour > 0) & (behaviour <= 1))),
        f"ncis: propensities must be in (0, 1] (got min {behaviour.min(initial=1.0)}); the behaviour policy must "
        "give every action it took a positive probability",
    )
    require(bool(np.all((target >= 0) & (target <= 1))), "ncis: target probabilities must be in [0, 1]")
    require(cap > 0 and math.isfinite(cap), f"ncis: cap must be finite and > 0 (got {cap})")
    before = returns_ - np.bincount(session_, weights=rewards_, minlength=n)  # earned before the first decision
    first = np.searchsorted(session_, session_, side="left")
    step = np.arange(len(session_)) - first
    steps = int(step.max(initial=-1)) + 1
    with np.errstate(divide="ignore"):
        log_ratio = np.log(target) - np.log(behaviour)
    log_weight = np.full((n, steps), 0.0)
    reward = np.zeros((n, steps))
    log_weight[session_, step] = log_ratio
    reward[session_, step] = rewards_
    raw = np.exp(np.cumsum(log_weight, axis=1))  # a finished session keeps its last weight (ratio 1 after its end)
    weight = np.minimum(raw, cap)
    total = weight.sum(axis=0)
    require(
        bool(np.all(total > 0)),
        "ncis: at some step every logged session gives probability 0 under the target policy to an action the "
        "behaviour policy took, so no session supports it; log with a behaviour policy closer to the target",
    )
    mean_step = (weight * reward).sum(axis=0) / total
    value = float(before.mean() + mean_step.sum())
    influence = before + (n * weight * (reward - mean_step) / total).sum(axis=1)
    last = weight[:, -1] if steps else np.ones(n)
    return NCISEstimate(
        value=value,
        stderr=float(influence.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf,
        effective_sessions=float(last.sum() ** 2 / np.sum(last**2)),
        capped_share=float(np.mean(raw > cap)) if steps else 0.0,
    )
