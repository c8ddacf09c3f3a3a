"""The env runner: the environment side of the RL loop over the bus (DESIGN.md §2, specs/streamx.md).

An :class:`EnvRunner` steps ``n_envs`` copies of one gymnasium environment for an agent it only knows through two
topics. It publishes an :class:`~connectors.messages.Observation` per env step to the observations topic, keyed by
the env's stream id (``cartpole-0``, ``cartpole-1``, ...), and applies the :class:`~connectors.messages.Action`
messages it reads from the actions topic.

Step numbers tell which observation an action answers. Each env numbers its observations 0, 1, 2, ... across all of
its episodes, so a number is never reused: the reset observation of the first episode is step 0, and every
observation that is neither terminated nor truncated waits for the action with its step number. That action is
applied, the resulting observation (with the reward) is published, and when it ends the episode, the next episode's
reset observation follows at once (``episode + 1``, reward 0). Any other action is counted, never applied:

* *stale*: its step was already answered (a duplicate, a late retry, an answer to a final observation), or it was
  written before this run started (the runner reads the actions topic from the beginning, because the embedded
  broker's end offsets are unreliable, and drops what older runs left there by the records' timestamps);
* *invalid*: it does not decode, names an env of no runner here, answers a step not yet published, or lies outside
  the action space; each is logged and counted by reason, and the runner goes on.

Every env ``i`` is first reset with ``seed + i``, so a run with the same actions is the same run. Episode returns
and lengths are kept in :attr:`EnvRunner.returns` and exported on :attr:`EnvRunner.registry` (Prometheus).

The runner can also be driven in-process (no broker needed), which is how its contract is shown here:

>>> runner = EnvRunner(
...     KafkaBus("kafka://localhost:9092"), "CartPole-v1", n_envs=2, seed=7,
...     observations_topic="rl.cartpole.obs", actions_topic="rl.cartpole.actions",
... )
>>> [(o.env, o.step, o.episode, o.reward) for o in runner.reset()]
[('cartpole-0', 0, 0, 0.0), ('cartpole-1', 0, 0, 0.0)]
>>> [(o.env, o.step, o.reward) for o in runner.handle(encode(Action(env="cartpole-1", step=0, action=1)))]
[('cartpole-1', 1, 1.0)]
>>> runner.handle(encode(Action(env="cartpole-1", step=0, action=1)))  # a duplicate: counted, not applied
[]
>>> runner.registry.get_sample_value("eddy_env_stale_actions_total")
1.0
>>> runner.close()
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from kafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from connectors.bus import KafkaBus, check_topic_name
from connectors.messages import DECODE_REASONS, Action, DecodeError, Observation, decode, encode

log = logging.getLogger(__name__)

DEFAULT_MAX_ACTION_BYTES = 65_536
INVALID_ACTION_REASONS = (*DECODE_REASONS, "unknown_env", "future_step", "out_of_space")
"""Every ``reason`` label of ``eddy_env_invalid_actions_total``: decode failures, then the runner's own checks."""
POLL_MS = 100
"""How long one poll of the actions topic waits: the most a stop request waits to be seen."""

StopReason = Literal["max_steps", "max_episodes", "stop_event"]


class EpisodeResult(NamedTuple):
    """One finished episode: the env's stream id, its episode number, the sum of its rewards and its steps."""

    env: str
    episode: int
    episode_return: float
    length: int


@dataclass(frozen=True)
class EnvRunSummary:
    """What one :meth:`EnvRunner.run` did and why it stopped (``observations``: how many it published)."""

    steps: int
    episodes: int
    observations: int
    stale_actions: int
    invalid_actions: int
    stopped_by: StopReason


class _InvalidAction(Exception):
    """An action record the runner refuses: a ``reason`` label and a ``detail`` for the log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _EnvSlot:
    """One environment and where it stands: the step awaiting an action, the episode and its running return."""

    name: str
    env: gym.Env[Any, Any]
    step: int = 0
    episode: int = 0
    episode_return: float = 0.0
    length: int = 0


class EnvRunner:
    """Steps ``n_envs`` gymnasium environments for the actions an agent sends over the bus.

    Parameters
    ----------
    bus
        The broker; both topics must exist on it (``bus.create_topics``).
    env_id
        A registered gymnasium id such as ``"CartPole-v1"``; its action space must be Discrete or Box.
    n_envs
        How many copies to run; env ``i`` is named ``f"{name}-{i}"`` and first reset with ``seed + i``.
    observations_topic, actions_topic
        Where observations go and where actions come from.
    seed
        Seed of env 0; the same seed and the same actions give the same observations.
    max_steps, max_episodes
        Stop after this many applied actions / finished episodes over all envs (None: no limit).
    name
        Stream id prefix; defaults to the env id's name in lower case (``"CartPole-v1"`` -> ``"cartpole"``).
    env_kwargs
        Keyword arguments for ``gymnasium.make``.
    max_action_bytes
        Larger action records are invalid (reason ``oversized``).
    keep_returns
        How many recent :class:`EpisodeResult` to keep in :attr:`returns`.
    """

    def __init__(
        self,
        bus: KafkaBus,
        env_id: str,
        *,
        observations_topic: str,
        actions_topic: str,
        n_envs: int = 1,
        seed: int = 0,
        max_steps: int | None = None,
        max_episodes: int | None = None,
        name: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        max_action_bytes: int = DEFAULT_MAX_ACTION_BYTES,
        keep_returns: int = 1000,
    ) -> None:
        if env_id not in gym.registry:
            close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
            hint = f"did you mean {', '.join(map(repr, close))}?" if close else "see gymnasium.pprint_registry()"
            raise ValueError(f"env_id {env_id!r} is not a registered gymnasium environment; {hint}")
        for what, value in (
            ("n_envs", n_envs),
            ("max_steps", max_steps),
            ("max_episodes", max_episodes),
            ("max_action_bytes", max_action_bytes),
            ("keep_returns", keep_returns),
        ):
            if value is not None and value < 1:
                unlimited = " (or None for no limit)" if what.startswith("max_") else ""
                raise ValueError(f"{what} must be >= 1{unlimited} (got {value})")
        prefix = name if name is not None else env_id.rsplit("/", 1)[-1].split("-v")[0].lower()
        if not prefix:
            raise ValueError(f"name must be a non-empty stream id prefix such as 'cartpole' (got {name!r})")
        self.bus = bus
        self.env_id = env_id
        self.observations_topic = check_topic_name(observations_topic)
        self.actions_topic = check_topic_name(actions_topic)
        self.seed = seed
        self.max_steps = max_steps
        self.max_episodes = max_episodes
        self.max_action_bytes = max_action_bytes
        self._slots = {
            f"{prefix}-{i}": _EnvSlot(f"{prefix}-{i}", gym.make(env_id, **dict(env_kwargs or {})))
            for i in range(n_envs)
        }
        space = next(iter(self._slots.values())).env.action_space
        if not isinstance(space, gym.spaces.Discrete | gym.spaces.Box):
            self.close()
            raise ValueError(f"{env_id} has action space {space}; the env runner supports Discrete and Box only")
        self.action_space: gym.spaces.Discrete | gym.spaces.Box = space
        self._returns: deque[EpisodeResult] = deque(maxlen=keep_returns)
        self._steps = self._episodes = self._stale = self._invalid = 0

        self.registry = CollectorRegistry()
        r = self.registry
        self.steps_metric = Counter("eddy_env_steps", "Actions applied (env steps)", ["env"], registry=r)
        self.episodes_metric = Counter("eddy_env_episodes", "Episodes finished", ["env"], registry=r)
        self.return_metric = Gauge(
            "eddy_env_episode_return", "Return of the last finished episode", ["env"], registry=r
        )
        self.length_metric = Gauge("eddy_env_episode_length", "Steps of the last finished episode", ["env"], registry=r)
        self.stale_metric = Counter(
            "eddy_env_stale_actions", "Actions for steps already answered or from before this run", registry=r
        )
        self.invalid_metric = Counter(
            "eddy_env_invalid_actions", "Actions refused, by reason (INVALID_ACTION_REASONS)", ["reason"], registry=r
        )
        for env in self._slots:  # export zeros from the start, so dashboards see every env
            self.steps_metric.labels(env)
            self.episodes_metric.labels(env)

    @property
    def envs(self) -> list[str]:
        """The stream ids of the environments, in seed order."""
        return list(self._slots)

    @property
    def returns(self) -> list[EpisodeResult]:
        """The most recent finished episodes (up to ``keep_returns``), oldest first."""
        return list(self._returns)

    def reset(self) -> list[Observation]:
        """Reset every env with its seed; returns the reset observations (step 0, episode 0) to publish."""
        self._steps = self._episodes = self._stale = self._invalid = 0
        observations = []
        for i, slot in enumerate(self._slots.values()):
            obs, _ = slot.env.reset(seed=self.seed + i)
            slot.step = slot.episode = slot.length = 0
            slot.episode_return = 0.0
            observations.append(self._observation(slot, obs, 0.0))
        return observations

    def handle(self, raw: bytes) -> list[Observation]:
        """Apply one raw action record; returns the observations to publish (none for a refused action).

        Refused actions are counted (stale, or invalid by reason) and invalid ones logged; nothing raises.
        """
        try:
            action = self._check(raw)
        except _InvalidAction as exc:
            self._invalid += 1
            self.invalid_metric.labels(exc.reason).inc()
            log.warning(
                "invalid action on %s (%s): %s",
                self.actions_topic,
                exc.reason,
                exc.detail,
                extra={"topic": self.actions_topic, "reason": exc.reason},
            )
            return []
        if action is None:
            self._count_stale()
            return []
        slot, value = action
        obs, reward, terminated, truncated, _ = slot.env.step(value)
        slot.step += 1
        slot.length += 1
        slot.episode_return += float(reward)
        self._steps += 1
        self.steps_metric.labels(slot.name).inc()
        observations = [self._observation(slot, obs, float(reward), bool(terminated), bool(truncated))]
        if terminated or truncated:
            self._finish_episode(slot)
            obs, _ = slot.env.reset()
            slot.step += 1
            observations.append(self._observation(slot, obs, 0.0))
        return observations

    def _stop_reason(self, stop: threading.Event | None = None) -> StopReason | None:
        """Why the run should stop now (a step or episode limit reached, or ``stop`` set), else None."""
        if self.max_steps is not None and self._steps >= self.max_steps:
            return "max_steps"
        if self.max_episodes is not None and self._episodes >= self.max_episodes:
            return "max_episodes"
        return "stop_event" if stop is not None and stop.is_set() else None

    def run(self, stop: threading.Event | None = None) -> EnvRunSummary:
        """Reset, publish, and answer actions until a limit is reached or ``stop`` is set (checked every 0.1 s).

        Actions whose records were written before this call are stale (see the module docstring): the agent's
        clock must not run behind the runner's.
        """
        tps = [TopicPartition(self.actions_topic, p) for p in range(self.bus.partitions(self.actions_topic))]
        consumer = self.bus.consumer(enable_auto_commit=False)
        producer = self.bus.producer()
        published = 0

        def publish(observations: list[Observation]) -> None:
            nonlocal published
            for observation in observations:
                producer.send(
                    self.observations_topic, value=encode(observation), key=observation.env.encode()
                ).add_errback(self._send_failed)
            published += len(observations)

        try:
            consumer.assign(tps)
            consumer.seek_to_beginning()
            started_ms = time.time() * 1000
            log.info(
                "env runner: %d x %s, observations to %s, actions from %s",
                len(self._slots),
                self.env_id,
                self.observations_topic,
                self.actions_topic,
            )
            publish(self.reset())
            producer.flush()
            while (reason := self._stop_reason(stop)) is None:
                records = [r for batch in consumer.poll(POLL_MS).values() for r in batch]
                for record in records:
                    if record.timestamp < started_ms:
                        self._count_stale()
                    else:
                        publish(self.handle(record.value))
                    if self._stop_reason() is not None:
                        break
                if records:
                    producer.flush()
        finally:
            producer.close()
            consumer.close()
        summary = EnvRunSummary(self._steps, self._episodes, published, self._stale, self._invalid, reason)
        log.info("env runner stopped by %s: %s", reason, summary)
        return summary

    def close(self) -> None:
        """Close every environment."""
        for slot in self._slots.values():
            slot.env.close()

    def __enter__(self) -> EnvRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check(self, raw: bytes) -> tuple[_EnvSlot, int | npt.NDArray[Any]] | None:
        """The env and the value to step it with; None for a stale action; raises :class:`_InvalidAction`."""
        try:
            action = decode(raw, Action.schema_name, max_bytes=self.max_action_bytes)
        except DecodeError as exc:
            raise _InvalidAction(exc.reason, exc.detail) from None
        assert isinstance(action, Action)
        slot = self._slots.get(action.env)
        if slot is None:
            raise _InvalidAction("unknown_env", f"env {action.env!r} is not one of {self.envs}")
        if action.step < slot.step:
            return None
        if action.step > slot.step:
            raise _InvalidAction(
                "future_step", f"{slot.name}: action for step {action.step} but step {slot.step} awaits one"
            )
        return slot, self._action_value(slot.name, action.action)

    def _action_value(self, env: str, action: int | list[float]) -> int | npt.NDArray[Any]:
        """``action`` as the action space takes it; raises :class:`_InvalidAction` when it is not in the space."""
        space = self.action_space
        value: int | npt.NDArray[Any] | None = None
        if isinstance(space, gym.spaces.Discrete):
            if isinstance(action, int) and space.contains(action):
                value = action
        else:
            vector = np.asarray(action, dtype=np.float64).ravel()
            if vector.size == np.prod(space.shape) and space.contains(vector.astype(space.dtype).reshape(space.shape)):
                value = vector.astype(space.dtype).reshape(space.shape)
        if value is None:
            raise _InvalidAction("out_of_space", f"{env}: action {action!r} is not in the action space {space}")
        return value

    def _finish_episode(self, slot: _EnvSlot) -> None:
        result = EpisodeResult(slot.name, slot.episode, slot.episode_return, slot.length)
        self._returns.append(result)
        self._episodes += 1
        self.episodes_metric.labels(slot.name).inc()
        self.return_metric.labels(slot.name).set(slot.episode_return)
        self.length_metric.labels(slot.name).set(slot.length)
        log.debug("episode finished: %s", result)
        slot.episode += 1
        slot.episode_return = 0.0
        slot.length = 0

    def _observation(
        self, slot: _EnvSlot, obs: Any, reward: float, terminated: bool = False, truncated: bool = False
    ) -> Observation:
        return Observation(
            env=slot.name,
            step=slot.step,
            episode=slot.episode,
            obs=np.asarray(obs, dtype=np.float64).ravel().tolist(),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
        )

    def _count_stale(self) -> None:
        self._stale += 1
        self.stale_metric.inc()

    def _send_failed(self, exc: BaseException) -> None:
        """Say so when an observation is lost: the agent would never answer it, and its env would wait forever."""
        log.error("env runner could not publish to %s: %s", self.observations_topic, exc)
