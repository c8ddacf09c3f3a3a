"""SL-MGAC and its baselines (learners.allocation): the agent's contract, its parts, and learning on the simulator."""

from __future__ import annotations

import dataclasses
import itertools
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.allocation import play_round
from connectors.sources.live_platform import LivePlatform, LivePlatformConfig, RequestState, Threshold
from learners.allocation import (
    AllocationAgent,
    AllocationConfig,
    AllocationNetwork,
    FeatureLayout,
    LagrangeMultiplier,
    Transition,
    session_transitions,
    two_hot,
)
from learners.allocation.distributional import expected_value

SMALL = {"batch": 16, "buffer": 256, "update_every": 2, "hidden": 16, "bins": 11}


def synthetic_transitions(n: int, seed: int = 0) -> list[Transition]:
    """Requests of 3 groups and 5 streamers with random outcomes, in sessions of about 4 decisions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        live = tuple(sorted(rng.choice(5, size=int(rng.integers(1, 4)), replace=False).tolist()))
        state = RequestState(
            int(rng.integers(10)), int(rng.integers(3)), float(rng.integers(5)) / 4, live, live[0], 0.3
        )
        action = int(rng.random() < 0.5)
        clicked = bool(action and rng.random() < 0.3)
        watch = float(rng.exponential(100.0)) if clicked else 0.0
        video = float(rng.exponential(30.0))
        out.append(Transition(state, action, 0.5, watch + video, watch + video, clicked, watch, False, None))
    return [
        dataclasses.replace(t, next_state=None if i % 4 == 3 or i == n - 1 else out[i + 1].state, exited=i % 4 == 3)
        for i, t in enumerate(out)
    ]


def agent_for(variant: str = "sl-mgac", seed: int = 0, **overrides: float) -> AllocationAgent:
    return AllocationAgent(3, 5, config=AllocationConfig.variant(variant, **{**SMALL, **overrides}), seed=seed)


def play(agent: AllocationAgent, transitions: list[Transition]) -> list[tuple[int, float]]:
    """Act then observe on each transition; the actions and propensities drawn."""
    actions = []
    for transition in transitions:
        actions.append(agent.act(transition.state))
        agent.observe(transition)
    return actions


@pytest.mark.parametrize("variant", ["sl-mgac", "actor-critic", "dqn"])
def test_state_dict_round_trip_continues_identically(variant: str) -> None:
    stream = synthetic_transitions(120, seed=1)
    original = agent_for(variant)
    play(original, stream[:62])  # mid-session: two transitions wait in their user's chain
    assert original._chains
    state = pickle.loads(pickle.dumps(original.state_dict()))
    restored = agent_for(variant)
    restored.load_state_dict(state)
    assert play(restored, stream[62:]) == play(original, stream[62:])
    for a, b in zip(original.network.parameters(), restored.network.parameters(), strict=True):
        assert torch.equal(a, b)
    assert restored.updates == original.updates > 0


def test_state_dict_refuses_other_parameters() -> None:
    state = agent_for(hidden=16).state_dict()
    with pytest.raises(ValueError, match="hidden=16"):
        agent_for(hidden=32).load_state_dict(state)
    other_groups = AllocationAgent(2, 5, config=AllocationConfig.variant("sl-mgac", **SMALL))
    with pytest.raises(ValueError, match="groups=3"):
        other_groups.load_state_dict(state)


def test_a_pickled_agent_holds_the_filled_replay_only_and_continues_identically() -> None:
    stream = synthetic_transitions(120, seed=4)
    empty = len(pickle.dumps(agent_for(buffer=100_000)))
    assert empty < 2_000_000  # the preallocated buffer (100,000 rows of paths and states) is not in the pickle
    original = agent_for(buffer=100_000)
    play(original, stream[:62])
    copy = pickle.loads(pickle.dumps(original))
    assert copy.size == original.size > 0
    assert play(copy, stream[62:]) == play(original, stream[62:])
    assert copy.updates == original.updates
    old_pickle = agent_for()
    with pytest.raises(ValueError, match="state format 3 or older"):
        old_pickle.__setstate__(dict(vars(agent_for())))  # what pickling an agent of format 3 stored
    with pytest.raises(ValueError, match=r"state format 4 .*delete the pipeline's checkpoint"):
        old_pickle.__setstate__({**original.__getstate__(), "format": 4})  # before the scaler and the wide heads


def test_the_behaviour_memory_keeps_the_most_recently_remembered_users() -> None:
    agent = agent_for(remembered_users=2)
    featurizer = agent.featurizer
    for user in (1, 2, 1, 3):  # user 2 is the least recently remembered when user 3 arrives
        featurizer.remember(user, 0, clicked=True, watch_seconds=50.0)
    assert list(featurizer.state_dict()["memory"]) == [1, 3]
    fresh = RequestState(2, 0, 0.0, (0,), 0, 0.5)
    assert np.array_equal(featurizer(fresh), agent_for().featurizer(fresh))  # user 2 looks new again
    restored = agent_for(remembered_users=1)
    restored.featurizer.load_state_dict(featurizer.state_dict())
    assert list(restored.featurizer.state_dict()["memory"]) == [3]


def test_same_seed_same_agent_and_other_seed_differs() -> None:
    stream = synthetic_transitions(80, seed=2)
    first, second, other = agent_for(seed=5), agent_for(seed=5), agent_for(seed=6)
    assert play(first, stream) == play(second, stream)
    assert torch.equal(first.network.actor.weight, second.network.actor.weight)
    assert not torch.equal(first.network.actor.weight, other.network.actor.weight)


def test_the_critic_target_sums_n_step_rewards_then_bootstraps() -> None:
    agent = agent_for(n_step=2, gamma=0.5, batch=64)  # no update: the buffer is only read
    states = [RequestState(0, 1, 0.0, (1, 2), 2, 0.3 + 0.1 * i) for i in range(4)]  # one session of 4 decisions
    session = [
        Transition(state, 0, 0.5, 30.0 + i, 30.0 + i, False, 0.0, i == 3, states[i + 1] if i < 3 else None)
        for i, state in enumerate(states)
    ]
    for transition in session[:2]:
        agent.observe(transition)
    assert agent.size == 1  # the first waits for its second step, then bootstraps at the third state
    for transition in session[2:]:
        agent.observe(transition)
    assert agent.size == 4 and not agent._chains
    rewards = [t.reward for t in session]
    columns = agent._columns[:4]
    expected = [rewards[0] + 0.5 * rewards[1], rewards[1] + 0.5 * rewards[2], rewards[2] + 0.5 * rewards[3], rewards[3]]
    assert columns[:, 2].tolist() == pytest.approx(expected)
    assert columns[:, -1].tolist() == [0.25, 0.25, 0.0, 0.0]  # the session ended: no bootstrap past its end
    assert np.array_equal(agent._paths[0, -1], agent.featurizer(states[2]))  # the path ends at the bootstrap state
    assert columns[:, -2].tolist() == [2, 2, 1, 0]  # later decision states on each path, cut at the session's end


def test_group_heads_are_selected_by_group() -> None:
    layout = FeatureLayout(dense=4, history=2)
    net = AllocationNetwork(layout, user_buckets=4, streamers=3, heads=3, out=5, auxiliary=False)
    rows = torch.rand(6, layout.width)
    rows[:, 0] = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])
    rows[:, 1:3] = 0.0
    rows[:, 3 + 4 : 3 + 4 + 2] = 0.0  # history ids
    before = net(rows)
    with torch.no_grad():
        net.actor.weight[2:4] += 1.0  # group 1's actor head
        net.critic.weight[10:20] += 1.0  # group 1's critic head (2 actions x 5 bins)
    after = net(rows)
    changed = [not torch.equal(before.actor[i], after.actor[i]) for i in range(6)]
    assert changed == [False, True, False, False, True, False]
    assert [not torch.equal(before.critic[i], after.critic[i]) for i in range(6)] == changed


def test_the_session_end_head_learns_how_fatigue_raises_the_exit_after_an_insertion() -> None:
    """The supervised end head follows fatigue where the data say it matters: after an insertion the session ends
    with probability 0.05 + 0.5 x fatigue, without one with 0.05 whatever the fatigue. The dense features are
    standardised by a scaler that the online and target networks share."""
    rng = np.random.default_rng(3)
    agent = agent_for(batch=64, buffer=4096, update_every=1, lr=3e-3)
    for _ in range(2000):
        state = RequestState(int(rng.integers(10)), int(rng.integers(3)), float(rng.integers(5)) / 4, (1, 2), 2, 0.2)
        action = int(rng.random() < 0.5)
        ended = bool(rng.random() < 0.05 + 0.5 * state.fatigue * action)
        next_state = None if ended else dataclasses.replace(state, fatigue=0.0)
        agent.observe(Transition(state, action, 0.5, 30.0, 30.0, False, 0.0, ended, next_state))

    def end(fatigue: float, action: int) -> float:
        rows = torch.from_numpy(
            np.stack([agent.featurizer(RequestState(u, u % 3, fatigue, (1, 2), 2, 0.2)) for u in range(10)])
        )
        with torch.no_grad():
            return float(torch.sigmoid(agent.network(rows).auxiliary[:, action, 3]).mean())

    assert end(1.0, 1) - end(0.0, 1) > 0.3  # 0.5 in the data
    assert abs(end(1.0, 0) - end(0.0, 0)) < 0.1
    scaler, lagged = agent.network.scaler, agent.target.scaler
    assert torch.equal(scaler.mean, lagged.mean) and torch.equal(scaler.variance, lagged.variance)
    assert 0.45 < float(scaler.mean[3]) < 0.55  # fatigue (after the groups' one-hot): levels 0..4, mean 0.5


def test_two_hot_targets_keep_the_value_and_sum_to_one() -> None:
    bins = torch.linspace(0.0, 10.0, 11)
    values = torch.tensor([0.0, 0.3, 4.5, 9.99, 10.0])
    target = two_hot(values, bins)
    assert torch.allclose(target.sum(-1), torch.ones(5))
    assert torch.allclose(target @ bins, values, atol=1e-5)
    assert int((target[2] > 0).sum()) == 2 and float(target[2, 4]) == pytest.approx(0.5)
    assert torch.allclose(two_hot(torch.tensor([-3.0, 50.0]), bins) @ bins, torch.tensor([0.0, 10.0]))
    assert float(expected_value(torch.log(target[2] + 1e-12), bins)) == pytest.approx(4.5, abs=1e-4)


def test_lagrange_multiplier_rises_when_violated_and_falls_when_met() -> None:
    multiplier = LagrangeMultiplier(floor=500.0, lr=0.1)
    values = []
    for app in [300.0] * 5 + [700.0] * 10:
        multiplier.update(app)
        values.append(multiplier.value)
    assert all(b > a for a, b in itertools.pairwise(values[:5]))
    assert values[5] < values[4] and values[-1] == 0.0
    off = LagrangeMultiplier(floor=None)
    off.update(0.0)
    assert off.value == 0.0


def test_the_agent_learns_lambda_from_session_app_time() -> None:
    agent = agent_for(app_floor=1e4, lagrange_lr=0.5)  # every synthetic session falls far short
    play(agent, synthetic_transitions(40))
    assert agent.lagrange.value > 1.0


def test_bad_transitions_are_refused() -> None:
    agent = agent_for()
    transition = synthetic_transitions(1)[0]
    with pytest.raises(ValueError, match="action must be 0"):
        agent.observe(dataclasses.replace(transition, action=2))
    with pytest.raises(ValueError, match=r"propensity must be in \(0, 1\]"):
        agent.observe(dataclasses.replace(transition, propensity=0.0))
    with pytest.raises(ValueError, match="group 7 is outside"):
        agent.act(SimpleNamespace(user=0, group=7, fatigue=0.0, live=(1,), streamer=1, ctr=0.2))
    with pytest.raises(ValueError, match="unknown agent 'ppo'"):
        AllocationConfig.variant("ppo")


def test_transitions_add_up_to_the_sessions_from_their_first_decision() -> None:
    platform = LivePlatform(LivePlatformConfig.small(), seed=2)
    states: list[RequestState] = []

    def policy(state: RequestState) -> float:
        states.append(state)
        return Threshold(0.2)(state) * 0.8 + 0.1

    log = platform.run(policy)
    transitions = session_transitions(states, log.decisions, log.sessions)
    decisions, sessions = log.decisions, log.sessions
    assert [t.action for t in transitions] == decisions.inserted.astype(int).tolist()
    ends = [i for i, t in enumerate(transitions) if t.next_state is None]
    assert len(ends) == len(set(decisions.session.tolist()))
    for end in ends[:20]:
        session = int(decisions.session[end])
        first = int(np.flatnonzero(decisions.session == session)[0])
        app = sum(t.app_seconds for t in transitions[first : end + 1])
        end_s = (sessions.start_ms[session] - decisions.ts_ms[first]) / 1000.0
        expected = sessions.live_seconds[session] + sessions.video_seconds[session] + end_s
        assert app == pytest.approx(expected, abs=0.05)  # timestamps are whole milliseconds
    with pytest.raises(ValueError, match="states for"):
        session_transitions(states[:-1], decisions, sessions)


def test_an_agent_trains_in_the_simulator_from_its_own_decisions() -> None:
    platform = LivePlatform(dataclasses.replace(LivePlatformConfig.small(), hours=6.0), seed=0)
    agent = AllocationAgent(3, 4, config=AllocationConfig(**SMALL), seed=0)
    log = play_round(platform, agent)
    assert agent.observed == len(log.decisions) > 0 and agent.updates > 0
    assert agent.featurizer.state_dict()["memory"]  # inserted cards' outcomes went into the behaviour memory


def test_serve_batch_gives_serve_s_decisions_and_the_featurizer_its_rows_after_a_restore() -> None:
    agent = agent_for()
    stream = synthetic_transitions(60, seed=3)
    play(agent, stream)
    requests = [transition.state for transition in stream]
    decisions = agent.serve_batch(requests)
    assert decisions.dtype == np.float64 and set(decisions.tolist()) <= {0.0, 1.0}
    assert decisions.tolist() == [agent.serve(request) for request in requests]
    restored = agent_for()
    restored.load_state_dict(agent.state_dict())
    for request in requests:
        assert np.array_equal(restored.featurizer(request), agent.featurizer(request))
    assert agent.serve_batch([]).shape == (0,)


def test_observations_without_training_owe_their_steps_until_train() -> None:
    stream = synthetic_transitions(80, seed=5)
    now, later = agent_for(), agent_for()
    for transition in stream:
        now.observe(transition)
        later.observe(transition, train=False)
    assert later.updates == 0 and later.owed == now.updates > 0
    restored = agent_for()
    restored.load_state_dict(later.state_dict())
    later.train()
    restored.train()
    assert later.owed == restored.owed == 0 and later.updates == restored.updates == now.updates
    for a, b in zip(later.network.parameters(), restored.network.parameters(), strict=True):
        assert torch.equal(a, b)
