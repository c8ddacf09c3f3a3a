"""The env runner against a real broker: a small agent loop in the test drives CartPole over two topics."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from kafka import TopicPartition

from connectors.bus import BusError, KafkaBus
from connectors.env_runner import EnvRunner, EnvRunSummary, EpisodeResult
from connectors.messages import Action, Observation, decode, encode

DEADLINE_S = 15.0
Responder = Callable[[Observation], Iterable[bytes]]


def random_policy(seed: int) -> Responder:
    """One random CartPole action for every observation that awaits one."""
    rng = random.Random(seed)
    return lambda obs: [encode(Action(env=obs.env, step=obs.step, action=rng.randrange(2)))]


def drive(bus: KafkaBus, runner: EnvRunner, respond: Responder) -> tuple[EnvRunSummary, list[Observation]]:
    """Run ``runner`` in a thread and answer its observations with ``respond`` until it stops.

    Returns its summary and every observation it published, in topic order.
    """
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["summary"] = runner.run(stop)
        except BaseException as exc:  # surfaced in the test thread
            outcome["error"] = exc

    consumer = bus.consumer(enable_auto_commit=False)
    consumer.assign([TopicPartition(runner.observations_topic, 0)])
    consumer.seek_to_beginning()
    producer = bus.producer(linger_ms=0)
    thread = threading.Thread(target=run, daemon=True)
    seen: list[Observation] = []
    deadline = time.monotonic() + DEADLINE_S
    thread.start()
    try:
        while thread.is_alive() or ("summary" in outcome and len(seen) < outcome["summary"].observations):
            assert time.monotonic() < deadline, f"runner still going after {DEADLINE_S}s ({len(seen)} observations)"
            for records in consumer.poll(50).values():
                for record in records:
                    obs = decode(record.value, "observation/v1")
                    assert isinstance(obs, Observation) and record.key == obs.env.encode()
                    seen.append(obs)
                    if thread.is_alive() and not (obs.terminated or obs.truncated):
                        for raw in respond(obs):
                            producer.send(runner.actions_topic, raw, key=obs.env.encode())
            producer.flush()
    finally:
        stop.set()
        thread.join(DEADLINE_S)
        producer.close()
        consumer.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["summary"], seen


def episodes_of(observations: list[Observation]) -> list[EpisodeResult]:
    """The finished episodes a stream of one env's observations shows, checking its numbering on the way."""
    results = []
    for before, after in itertools.pairwise(observations):
        assert after.step == before.step + 1
        if before.terminated or before.truncated:
            assert (after.episode, after.reward, after.terminated) == (before.episode + 1, 0.0, False)
        else:
            assert after.episode == before.episode
    for episode in sorted({o.episode for o in observations}):
        steps = [o for o in observations if o.episode == episode]
        assert steps[0].reward == 0.0
        if steps[-1].terminated or steps[-1].truncated:
            rewards = [o.reward for o in steps[1:]]
            results.append(EpisodeResult(steps[0].env, episode, sum(rewards), len(rewards)))
    return results


def make_runner(bus: KafkaBus, topics: Callable[..., str], **options: Any) -> EnvRunner:
    return EnvRunner(bus, "CartPole-v1", observations_topic=topics("obs"), actions_topic=topics("actions"), **options)


def test_runner_steps_envs_for_actions_over_the_bus(eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str]) -> None:
    with make_runner(eddy_bus, eddy_topic_factory, n_envs=3, seed=11, max_steps=240) as runner:
        summary, seen = drive(eddy_bus, runner, random_policy(0))

    assert summary.stopped_by == "max_steps" and summary.steps == 240
    assert summary.stale_actions == summary.invalid_actions == 0
    assert summary.episodes > 5  # random CartPole episodes last about 20 steps
    # every reset, every step, and the reset after each finished episode; nothing else
    assert len(seen) == summary.observations == 3 + summary.steps + summary.episodes
    by_env = {env: [o for o in seen if o.env == env] for env in runner.envs}
    assert runner.envs == ["cartpole-0", "cartpole-1", "cartpole-2"]
    assert all(obs[0].step == 0 and obs[0].episode == 0 for obs in by_env.values())
    shown = [result for env in runner.envs for result in episodes_of(by_env[env])]
    assert sorted(shown) == sorted(runner.returns) and len(shown) == summary.episodes
    assert all(result.episode_return == result.length for result in shown)  # CartPole pays 1 per step

    metric = runner.registry.get_sample_value
    for env, observations in by_env.items():
        finished = [result for result in runner.returns if result.env == env]
        assert metric("eddy_env_steps_total", {"env": env}) == sum(1 for o in observations if o.step and o.reward)
        assert metric("eddy_env_episodes_total", {"env": env}) == len(finished)
        assert metric("eddy_env_episode_return", {"env": env}) == finished[-1].episode_return
        assert metric("eddy_env_episode_length", {"env": env}) == finished[-1].length
    assert metric("eddy_env_stale_actions_total") == 0.0


def test_stale_duplicate_and_invalid_actions_are_counted_not_applied(
    eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="connectors.env_runner")
    rng = random.Random(1)

    def respond(obs: Observation) -> list[bytes]:
        good = encode(Action(env=obs.env, step=obs.step, action=rng.randrange(2)))
        bad = [
            b"not json",
            b'{"env": "cartpole-0", "step": 0}',  # no action
            encode(Action(env="pong-0", step=obs.step, action=0)),
            encode(Action(env=obs.env, step=obs.step + 1, action=0)),
            encode(Action(env=obs.env, step=obs.step, action=2)),
            encode(Action(env=obs.env, step=obs.step, action=[0.5])),
            b"x" * 2000,
        ]
        return [*bad, good, good]  # the second good one is a duplicate

    with make_runner(eddy_bus, eddy_topic_factory, n_envs=2, max_episodes=4, max_action_bytes=1000) as runner:
        eddy_bus.producer().send(  # left over from an earlier run: would match step 0
            runner.actions_topic,
            encode(Action(env="cartpole-0", step=0, action=1)),
            timestamp_ms=int(time.time() * 1000) - 60_000,
        ).get(timeout=10)
        summary, seen = drive(eddy_bus, runner, respond)

    assert summary.stopped_by == "max_episodes" and summary.episodes == 4
    assert len(seen) == 2 + summary.steps + summary.episodes
    for env in runner.envs:
        episodes_of([o for o in seen if o.env == env])
    # the run stops right after its last applied action: every one had its bad records before it, and all but the
    # last its duplicate after it
    applied = summary.steps
    assert summary.invalid_actions == 7 * applied
    assert summary.stale_actions == 1 + applied - 1
    metric = runner.registry.get_sample_value
    assert {
        reason: metric("eddy_env_invalid_actions_total", {"reason": reason})
        for reason in ("invalid_json", "validation", "unknown_env", "future_step", "out_of_space", "oversized")
    } == {
        "invalid_json": applied,
        "validation": applied,
        "unknown_env": applied,
        "future_step": applied,
        "out_of_space": 2 * applied,
        "oversized": applied,
    }
    assert metric("eddy_env_stale_actions_total") == summary.stale_actions
    assert (
        "invalid action on" in caplog.text and "env 'pong-0' is not one of ['cartpole-0', 'cartpole-1']" in caplog.text
    )


def test_stop_event_ends_a_run_without_limits(eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str]) -> None:
    with make_runner(eddy_bus, eddy_topic_factory, n_envs=2) as runner:
        stop = threading.Event()
        summaries: list[EnvRunSummary] = []
        thread = threading.Thread(target=lambda: summaries.append(runner.run(stop)), daemon=True)
        thread.start()
        resets = eddy_bus.read(runner.observations_topic, 2, timeout_s=DEADLINE_S)  # the runner is up
        stop.set()
        thread.join(DEADLINE_S)
    assert [record.key for record in resets] == [b"cartpole-0", b"cartpole-1"]
    assert not thread.is_alive()
    assert summaries == [EnvRunSummary(0, 0, 2, 0, 0, "stop_event")]


def drive_in_process(runner: EnvRunner, steps: int) -> list[Observation]:
    """Drive ``runner`` in-process with a fixed policy (push the pole back up) and return its observations."""
    seen = runner.reset()
    pending = list(seen)
    for _ in range(steps):
        obs = pending.pop(0)
        published = runner.handle(encode(Action(env=obs.env, step=obs.step, action=int(obs.obs[2] > 0))))
        seen += published
        pending += [o for o in published if not (o.terminated or o.truncated)]
    return seen


def test_same_seed_same_run() -> None:
    bus = KafkaBus("kafka://localhost:9092")  # in-process: no broker is contacted

    def run(seed: int) -> list[tuple[Any, ...]]:
        with EnvRunner(bus, "CartPole-v1", n_envs=2, seed=seed, observations_topic="o", actions_topic="a") as runner:
            return [(o.env, o.step, o.episode, o.obs, o.reward, o.terminated) for o in drive_in_process(runner, 200)]

    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"env_id": "CartPole-v9"}, "'CartPole-v9' is not a registered gymnasium environment; did you mean"),
        ({"n_envs": 0}, r"n_envs must be >= 1 \(got 0\)"),
        ({"max_steps": 0}, r"max_steps must be >= 1 \(or None for no limit\) \(got 0\)"),
        ({"observations_topic": "bad topic"}, "invalid topic name 'bad topic'"),
        ({"actions_topic": ""}, "invalid topic name ''"),
        ({"name": ""}, "name must be a non-empty stream id prefix"),
    ],
)
def test_bad_configuration_says_how_to_fix(options: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"env_id": "CartPole-v1", "observations_topic": "o", "actions_topic": "a", **options}
    with pytest.raises(ValueError, match=message):
        EnvRunner(KafkaBus("kafka://localhost:9092"), **settings)


def test_missing_actions_topic_is_a_clear_error(eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str]) -> None:
    runner = EnvRunner(
        eddy_bus, "CartPole-v1", observations_topic=eddy_topic_factory("obs"), actions_topic="no.such.actions"
    )
    with runner, pytest.raises(BusError, match=r"'no\.such\.actions' does not exist"):
        runner.run()
