"""NCIS off-policy evaluation (learners.allocation.ope) against on-policy averages and the simulator's exact values."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from connectors.sources.live_platform import LivePlatform, LivePlatformConfig, RequestState, Threshold, never
from connectors.sources.live_platform_optimal import AllocationMDP
from learners.allocation import ncis, session_transitions


def logged(hours: float, seed: int = 1) -> tuple[LivePlatform, list[RequestState], np.ndarray, np.ndarray, Any]:
    """A run of an exploratory behaviour policy (0.1 + 0.8 x greedy CTR at 0.3) on the small platform."""
    platform = LivePlatform(dataclasses.replace(LivePlatformConfig.small(), hours=hours), seed=seed)
    states: list[RequestState] = []

    def behaviour(state: RequestState) -> float:
        states.append(state)
        return 0.1 + 0.8 * Threshold(0.3)(state)

    log = platform.run(behaviour)
    returns = log.sessions.live_seconds + log.sessions.video_seconds
    rewards = np.array([t.reward for t in session_transitions(states, log.decisions, log.sessions)])
    return platform, states, returns, rewards, log.decisions


def test_target_equal_to_behaviour_gives_the_on_policy_average() -> None:
    _, _, returns, rewards, decisions = logged(24.0)
    estimate = ncis(returns, decisions.session, rewards, decisions.propensity, decisions.propensity)
    assert estimate.value == pytest.approx(float(np.mean(returns)))
    assert estimate.effective_sessions == pytest.approx(len(returns))
    assert estimate.capped_share == 0.0


@pytest.mark.parametrize("target", [never, Threshold(0.3)], ids=["never", "greedy"])
def test_ncis_is_close_to_the_exact_value_on_a_logged_run(target: Threshold) -> None:
    platform, states, returns, rewards, decisions = logged(24.0 * 20)
    insert = np.array([target(state) for state in states])
    probability = np.where(decisions.inserted, insert, 1.0 - insert)
    estimate = ncis(returns, decisions.session, rewards, decisions.propensity, probability, cap=1e4)
    exact = AllocationMDP(platform).value(target).reward
    assert estimate.capped_share < 0.01
    assert abs(estimate.value - exact) < 4.0 * estimate.stderr, (estimate, exact)


def test_ncis_refuses_what_it_cannot_estimate() -> None:
    with pytest.raises(ValueError, match="propensities must be in"):
        ncis([1.0], [0], [1.0], [0.0], [1.0])
    with pytest.raises(ValueError, match="no session supports it"):
        ncis([1.0, 2.0], [0, 1], [1.0, 2.0], [0.5, 0.5], [0.0, 0.0])
    with pytest.raises(ValueError, match="one entry per decision"):
        ncis([1.0], [0, 0], [1.0, 0.0], [0.5], [0.5])
