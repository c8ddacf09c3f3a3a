"""The agent pipeline (mode agent): stream-x agents answering an env runner's observations, exactly once."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from connectors.bus import KafkaBus
from connectors.embedded import ServiceProcess
from connectors.env_runner import EnvRunner
from connectors.messages import Action, Observation, decode, encode
from connectors.state import StateStore
from pipelines.operators import AgentOperator, Record, Source
from pipelines.serialization import dump_state, load_state
from pipelines.spec import SpecError, load_spec, parse_spec
from tests.fixtures.worker_process import WorkerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "cartpole-streamq.yaml"


def transitions(total: int, n_envs: int = 2, seed: int = 3) -> list[Observation]:
    """CartPole observations of ``n_envs`` envs driven by random actions, in the order an env runner publishes."""
    runner = EnvRunner(
        KafkaBus("kafka://127.0.0.1:1"), "CartPole-v1", n_envs=n_envs, seed=seed,
        observations_topic="t.obs", actions_topic="t.actions",
    )  # fmt: skip
    rng = random.Random(seed)
    published = runner.reset()
    waiting = list(published)
    while len(published) < total:
        obs = waiting.pop(0)
        new = runner.handle(encode(Action(env=obs.env, step=obs.step, action=rng.randrange(2))))
        published += new
        waiting += [o for o in new if not (o.terminated or o.truncated)]
    runner.close()
    return published[:total]


def records(observations: list[Observation], start: int = 0) -> list[Record]:
    return [Record(o, Source(encode(o), o.env.encode(), "t.obs", 0, start + i, 0)) for i, o in enumerate(observations)]


def parameters(operator: AgentOperator) -> dict[str, dict[str, torch.Tensor]]:
    return {env: agent.state_dict()["network"] for env, agent in operator.agents.items()}


def test_agent_answers_each_open_observation_and_learns_each_transition() -> None:
    stream = transitions(400)
    operator = AgentOperator.from_spec(load_spec(EXAMPLE))
    result = operator.process(records(stream))
    actions = [decode(o.value, "action/v1") for o in result.outputs]
    open_observations = [o for o in stream if not (o.terminated or o.truncated)]
    assert [(a.env, a.step) for a in actions] == [(o.env, o.step) for o in open_observations]  # type: ignore[attr-defined]
    assert [o.key for o in result.outputs] == [o.env.encode() for o in open_observations]
    resets = sum(1 for o in stream if o.step > 0 and o.reward == 0.0)
    assert operator.learned == len(stream) - 2 - resets  # every observation but the resets follows an answered step
    assert operator.episodes == sum(1 for o in stream if o.terminated or o.truncated) > 0
    assert set(operator.agents) == {"cartpole-0", "cartpole-1"}
    assert operator.scores()["episode_return"] > 0


def test_checkpointed_state_resumes_with_identical_parameters() -> None:
    stream = transitions(1500)
    spec = load_spec(EXAMPLE)
    straight = AgentOperator.from_spec(spec)
    straight.process(records(stream))

    first = AgentOperator.from_spec(spec)
    first.process(records(stream[:700]))
    blob = dump_state(first.state(), b"secret")
    resumed = AgentOperator.from_spec(spec)
    resumed.load_state(load_state(blob, b"secret"))
    resumed.process(records(stream[700:], start=700))

    assert resumed.learned == straight.learned and resumed.returns == straight.returns
    for env, params in parameters(straight).items():
        for name, tensor in params.items():
            assert torch.equal(parameters(resumed)[env][name], tensor), (env, name)


def test_an_observation_the_agent_cannot_take_is_rejected_and_the_rest_go_on() -> None:
    operator = AgentOperator.from_spec(load_spec(EXAMPLE))
    bad = Observation(env="cartpole-9", step=0, obs=[0.0, 1.0])  # 2 values for a 4-value agent
    stream = transitions(10)
    result = operator.process(records([bad, *stream]))
    assert [r.reason for r in result.rejected] == ["operator_error"]
    assert "shape (4,)" in result.rejected[0].detail
    assert len(result.outputs) == sum(1 for o in stream if not (o.terminated or o.truncated))


def test_agent_mode_spec_checks() -> None:
    spec: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    with pytest.raises(SpecError, match="mode 'agent' reads observation/v1"):
        parse_spec({**spec, "input": {"topics": ["x"], "schema": "event/v1"}})
    with pytest.raises(SpecError, match=r"operator.use is required for mode 'agent'"):
        parse_spec({**spec, "operator": {"mode": "agent"}})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkilled_agent_worker_resumes_with_the_parameters_of_an_uninterrupted_run(
    eddy_bus: KafkaBus, eddy_broker: ServiceProcess, eddy_redis: ServiceProcess, tmp_path: Path
) -> None:
    stream = transitions(3000)
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["checkpoint"] = {"every_events": 300, "every_s": 60}
    spec_path = tmp_path / "agent.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    eddy_bus.create_topics(["cartpole.observations", "cartpole.actions"])
    eddy_bus.produce("cartpole.observations", [encode(o) for o in stream], keys=[o.env.encode() for o in stream])
    env = {
        **os.environ,
        "EDDY_BROKER": eddy_broker.url,
        "EDDY_STATE": eddy_redis.url,
        "EDDY_HOME": str(tmp_path / "home"),
        "EDDY_SECRET": "agent-secret",
    }
    reference = AgentOperator.from_spec(parse_spec(spec))
    reference.process(records(stream))

    log = tmp_path / "worker.log"
    first = WorkerProcess(spec_path, env, log)
    first.wait_for(lambda s: s["learned"] >= 1000, "1000 transitions learned")
    first.kill()
    second = WorkerProcess(spec_path, env, log)
    try:
        second.wait_for(lambda s: s["learned"] >= reference.learned, "every transition learned after restart")
    finally:
        assert second.stop() == 0

    checkpoint = StateStore(eddy_redis.url).read_checkpoint("cartpole-streamq")
    assert checkpoint is not None and checkpoint.offsets == {"cartpole.observations:0": len(stream)}
    state = load_state(checkpoint.state, b"agent-secret")
    assert state["learned"] == reference.learned and state["returns"] == reference.returns
    for env_id, agent in reference.agents.items():
        for name, tensor in agent.state_dict()["network"].items():
            assert torch.equal(state["agents"][env_id]["network"][name], tensor), (env_id, name)


def _simulated_returns(spec: dict[str, Any], steps: int) -> list[float]:
    """The episode returns of the same loop run in-process (one env: the loop is the same whatever the timing)."""
    operator = AgentOperator.from_spec(parse_spec(spec))
    runner = EnvRunner(
        KafkaBus("kafka://127.0.0.1:1"), "CartPole-v1", n_envs=1, seed=1, observations_topic="a", actions_topic="b"
    )
    waiting, done = runner.reset(), 0
    while done < steps:
        for output in operator.process(records([waiting.pop(0)], start=done)).outputs:
            waiting += runner.handle(output.value)
            done += 1
    runner.close()
    return [r.episode_return for r in runner.returns]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cartpole_learned_over_the_embedded_broker(eddy_services: Any, run_worker: Any) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["operator"]["params"]["exploration_steps"] = 1000
    run_worker([spec])
    runner = EnvRunner(
        KafkaBus(eddy_services.broker_url), "CartPole-v1", n_envs=1, seed=1, max_steps=3000,
        observations_topic="cartpole.observations", actions_topic="cartpole.actions",
    )  # fmt: skip
    with runner:
        summary = runner.run()
    returns = [r.episode_return for r in runner.returns]
    assert summary.steps == 3000 and summary.invalid_actions == 0
    first, last = sum(returns[:10]) / 10, sum(returns[-10:]) / 10
    assert last > 3 * first, (first, last)  # random play scores ~20; the agent learned through the broker
    assert returns == _simulated_returns(spec, 3000)
