"""BatchedStreamQ: N agents stepped together behave as N separate StreamQ agents; checkpoints; input checks."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from learners.streamx import (
    BatchedStreamQ,
    ObservationNormalizer,
    RewardScaler,
    StackedObservationNormalizer,
    StackedRewardScaler,
    StreamQ,
)

SEEDS = [3, 7, 11, 19]
SETTINGS: dict[str, Any] = {"exploration_steps": 300, "hidden": 16}


class CartPoles:
    """N CartPole-v1 environments stepped together, each reset on its own when its episode ends."""

    def __init__(self, n: int, seed: int) -> None:
        gym = pytest.importorskip("gymnasium", reason="the `rl` extra (gymnasium) is not installed")
        self.envs = [gym.make("CartPole-v1") for _ in range(n)]
        self.obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]).astype(np.float64)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Step every environment; returns (obs, actions, rewards, next_obs, terminated, truncated)."""
        results = [env.step(int(a)) for env, a in zip(self.envs, actions, strict=True)]
        next_obs = np.stack([r[0] for r in results]).astype(np.float64)
        rewards = np.array([r[1] for r in results], dtype=np.float64)
        terminated = np.array([r[2] for r in results])
        truncated = np.array([r[3] for r in results])
        transition = (self.obs, actions, rewards, next_obs, terminated, truncated)
        self.obs = next_obs.copy()
        for i, env in enumerate(self.envs):
            if terminated[i] or truncated[i]:
                self.obs[i] = env.reset()[0]
        return transition


def agent_params(agents: list[StreamQ]) -> torch.Tensor:
    return torch.cat([agent.network_stack.params for agent in agents])


def agent_traces(agents: list[StreamQ]) -> torch.Tensor:
    return torch.cat([agent.network_stack.traces for agent in agents])


@pytest.mark.usefixtures("one_thread")
def test_batched_agents_equal_separate_stream_q_agents_on_the_same_transitions() -> None:
    batched = BatchedStreamQ(len(SEEDS), 4, 2, seeds=SEEDS, **SETTINGS)
    singles = [StreamQ(4, 2, seed=s, **SETTINGS) for s in SEEDS]
    torch.testing.assert_close(batched.stack.params, agent_params(singles))  # same initialisation
    envs = CartPoles(len(SEEDS), seed=0)
    episodes = 0
    for step in range(1_000):
        actions = batched.act(envs.obs)
        assert actions.tolist() == [agent.act(o) for agent, o in zip(singles, envs.obs, strict=True)]
        obs, actions, rewards, next_obs, terminated, truncated = envs.step(actions)
        batched.observe(obs, actions, rewards, next_obs, terminated, truncated)
        for i, agent in enumerate(singles):
            agent.observe(obs[i], int(actions[i]), rewards[i], next_obs[i], terminated[i], truncated[i])
        episodes += int((terminated | truncated).sum())
        if step % 100 == 99:
            torch.testing.assert_close(batched.stack.params, agent_params(singles))
            torch.testing.assert_close(batched.stack.traces, agent_traces(singles))
    assert episodes > 20
    assert batched.steps.tolist() == [agent.steps for agent in singles]
    np.testing.assert_array_equal(batched.epsilon, [agent.epsilon for agent in singles])


@pytest.mark.usefixtures("one_thread")
def test_an_agent_moves_between_a_batch_and_a_stream_q_and_carries_on_identically() -> None:
    batched = BatchedStreamQ(3, 4, 2, seed=5, **SETTINGS)
    envs = CartPoles(3, seed=1)
    for _ in range(150):
        batched.observe(*envs.step(batched.act(envs.obs)))
    single = StreamQ(4, 2, seed=0, **SETTINGS)
    single.load_state_dict(batched.agent_state_dict(1))
    twin = BatchedStreamQ(3, 4, 2, seed=40, **SETTINGS)  # other seeds: agent 1 is then loaded from the StreamQ
    twin.load_state_dict(batched.state_dict())
    twin.load_agent_state_dict(1, single.state_dict())
    for _ in range(150):
        actions = batched.act(envs.obs)
        assert actions[1] == single.act(envs.obs[1])
        np.testing.assert_array_equal(twin.act(envs.obs), actions)
        obs, actions, rewards, next_obs, terminated, truncated = envs.step(actions)
        batched.observe(obs, actions, rewards, next_obs, terminated, truncated)
        twin.observe(obs, actions, rewards, next_obs, terminated, truncated)
        single.observe(obs[1], int(actions[1]), rewards[1], next_obs[1], terminated[1], truncated[1])
    torch.testing.assert_close(batched.stack.params[1:2], single.network_stack.params)
    torch.testing.assert_close(twin.stack.params, batched.stack.params)
    torch.testing.assert_close(twin.stack.traces, batched.stack.traces)


def test_state_dict_round_trip_continues_bit_identically() -> None:
    batched = BatchedStreamQ(2, 4, 2, seed=0, **SETTINGS)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2, 4))

    def run(agents: BatchedStreamQ, obs: np.ndarray, rng: np.random.Generator, steps: int) -> list[list[int]]:
        history = []
        for t in range(steps):
            actions = agents.act(obs)
            next_obs = rng.normal(size=(2, 4))
            ends = np.array([t % 7 == 6, t % 5 == 4])
            agents.observe(obs, actions, actions.astype(float), next_obs, ends, np.zeros(2, bool))
            history.append(actions.tolist())
            obs = next_obs
        return history

    run(batched, obs, rng, 40)
    buffer = io.BytesIO()
    torch.save(batched.state_dict(), buffer)
    buffer.seek(0)
    restored = BatchedStreamQ(2, 4, 2, seed=9, **SETTINGS)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    obs = rng.normal(size=(2, 4))
    state = rng.bit_generator.state
    first = run(batched, obs, rng, 30)
    rng.bit_generator.state = state
    assert run(restored, obs, rng, 30) == first
    assert torch.equal(batched.stack.params, restored.stack.params)
    assert torch.equal(batched.stack.traces, restored.stack.traces)


def test_an_observation_is_normalised_once_per_agent() -> None:
    batched = BatchedStreamQ(2, 3, 2, seed=0)
    obs = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    batched.act(obs)
    next_obs = obs.copy()
    next_obs[1] += 1.0  # agent 0 sees the same observation again, agent 1 a new one
    batched.observe(obs, np.array([0, 1]), np.ones(2), next_obs, np.zeros(2, bool), np.zeros(2, bool))
    assert batched.obs_normalizer.count.tolist() == [1, 2]


def test_stacked_normalisers_equal_the_single_ones_row_by_row() -> None:
    rng = np.random.default_rng(0)
    stacked_obs, stacked_rewards = StackedObservationNormalizer(3, (2,)), StackedRewardScaler(3, gamma=0.9)
    singles_obs = [ObservationNormalizer((2,)) for _ in range(3)]
    singles_rewards = [RewardScaler(gamma=0.9) for _ in range(3)]
    for _ in range(50):
        rows = np.flatnonzero(rng.random(3) < 0.7)
        x = rng.normal(size=(len(rows), 2))
        got = stacked_obs(x, rows)
        for row, values, expected_row in zip(rows, got, x, strict=True):
            np.testing.assert_array_equal(values, singles_obs[row](expected_row))
        rewards, done = rng.normal(size=3), rng.random(3) < 0.2
        scaled = stacked_rewards(rewards, done)
        assert scaled.tolist() == [s(r, d) for s, r, d in zip(singles_rewards, rewards, done, strict=True)]
    for row in range(3):
        expected_obs, got_obs = singles_obs[row].state_dict(), stacked_obs.row_state_dict(row)
        assert got_obs["count"] == expected_obs["count"]
        assert torch.equal(got_obs["mean"], expected_obs["mean"]) and torch.equal(got_obs["m2"], expected_obs["m2"])
        assert stacked_rewards.row_state_dict(row)["trace"] == singles_rewards[row].trace


def test_bad_input_raises_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"n_agents must be >= 1 \(got 0\)"):
        BatchedStreamQ(0, 4, 2)
    with pytest.raises(ValueError, match=r"seeds must hold one seed per agent \(3\) \(got 2\)"):
        BatchedStreamQ(3, 4, 2, seeds=[1, 2])
    with pytest.raises(ValueError, match=r"n_actions must be >= 1 \(got 0\)"):  # StreamQ's own checks apply
        BatchedStreamQ(2, 4, 0)
    agents = BatchedStreamQ(2, 4, 2)
    obs, no = np.zeros((2, 4)), np.zeros(2, bool)
    with pytest.raises(ValueError, match=r"obs must have shape \(2, 4\) \(got \(4,\)\); pass one row per agent"):
        agents.act(np.zeros(4))
    with pytest.raises(ValueError, match=r"obs must be finite \(rows \[1\] are not\)"):
        agents.act(np.array([[0.0] * 4, [0.0, np.inf, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="next_obs must be numeric"):
        agents.observe(obs, [0, 1], [1.0, 1.0], [["a"] * 4] * 2, no, no)
    with pytest.raises(ValueError, match=r"actions must be ints in \[0, 2\) \(got \[0.0, 2.0\]\)"):
        agents.observe(obs, [0, 2], [1.0, 1.0], obs, no, no)
    with pytest.raises(ValueError, match=r"actions must be ints in \[0, 2\) \(got \[0.5, 1.0\]\)"):
        agents.observe(obs, [0.5, 1], [1.0, 1.0], obs, no, no)
    with pytest.raises(ValueError, match="rewards must be finite"):
        agents.observe(obs, [0, 1], [1.0, float("nan")], obs, no, no)
    with pytest.raises(ValueError, match=r"terminated must have shape \(2,\) \(got \(3,\)\)"):
        agents.observe(obs, [0, 1], [1.0, 1.0], obs, np.zeros(3, bool), no)
    assert agents.steps.tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"agent must be in \[0, 2\) \(got 2\)"):
        agents.agent_state_dict(2)
    other = BatchedStreamQ(3, 4, 2).state_dict()
    with pytest.raises(ValueError, match=r"state\['steps'\] has shape \(3,\), expected \(2,\); .* with 2 agents"):
        agents.load_state_dict(other)
    bigger = StreamQ(4, 2, hidden=64).state_dict()
    with pytest.raises(ValueError, match=r"has shape \(1, 4610\), expected \(1, 1282\); load a StreamQ of the same"):
        agents.load_agent_state_dict(0, bigger)
