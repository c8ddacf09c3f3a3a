"""Operator adapters: what a pipeline runs on each micro-batch, independent of Kafka and Faust.

An operator takes decoded :class:`Record` s and returns :class:`Output` s. One adapter per mode of a
pipeline spec:

- :class:`LearnerOperator` (``mode: learn``) hosts any River-compatible learner (``predict_one``/``learn_one``)
  prequentially: for each labelled record it predicts, scores the prediction, then learns.
- :class:`ServingOperator` (``mode: serve``) predicts with a model that the runtime swaps between batches.
- :class:`RelayOperator` (``mode: relay``) forwards validated records unchanged (the no-op used by benchmarks).
- :class:`AgentOperator` (``mode: agent``) hosts a streaming RL agent per environment on ``observation/v1``: it
  learns from each transition and answers each observation with an ``action/v1``.
- :class:`~pipelines.sequence_operator.SequenceOperator` (``mode: sequence``) predicts each user's next interaction
  with a temporal point process and trains it from the stream.
- :class:`~pipelines.frames_operator.FramesOperator` (``mode: frames``) embeds each camera's frames with a streaming
  convolutional encoder behind a similarity filter, one encoder step across the cameras of a batch.
- :class:`~pipelines.recommend_operator.RecommendOperator` (``mode: recommend``) answers each interaction with the
  top-k live streamers from a sequence transformer the registry alias points to, one cached decode step per user.
- :class:`~pipelines.allocate_operator.AllocateOperator` (``mode: allocate``) answers each feed request with an
  allocation decision from SL-MGAC's distilled student and learns online from the outcomes the requests report.

Operators are plain synchronous objects: the runtime calls them from one executor thread per pipeline.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.messages import Action, Event, Message, Observation, Prediction, encode
from pipelines.allocate_operator import AllocateOperator
from pipelines.frames_operator import FramesOperator
from pipelines.recommend_operator import RecommendOperator
from pipelines.records import BatchResult, Features, Operator, Output, Record, RecordRejected, Rejection, Source
from pipelines.scoring import Scoreboard
from pipelines.sequence_operator import SequenceOperator
from pipelines.spec import PipelineSpec, resolve_operator

__all__ = [
    "AgentOperator",
    "AllocateOperator",
    "BatchResult",
    "FramesOperator",
    "LearnerOperator",
    "Operator",
    "Output",
    "RecommendOperator",
    "Record",
    "RecordRejected",
    "Rejection",
    "RelayOperator",
    "Scoreboard",
    "SequenceOperator",
    "ServingOperator",
    "Source",
    "build_operator",
    "features_and_label",
]


def features_and_label(
    message: Message,
    target: str | None,
    *,
    labels: Mapping[str, Any] | None = None,
    exclude: Sequence[str] = (),
) -> tuple[Features, Any]:
    """Split a message into model features and its label (None when unlabelled).

    ``event/v1`` carries both; for other schemas the features are the message's scalar fields plus its feature
    or context dict, and ``target`` names the field that holds the label; ``labels`` maps its values to labels (a
    value not listed: no label), and the fields in ``exclude`` are dropped.
    """
    if isinstance(message, Event) and target is None:
        given = message.features
        return ({k: v for k, v in given.items() if k not in exclude} if exclude else given), message.label
    fields = message.model_dump(exclude={"ts", *exclude})
    features: Features = {}
    for name, value in fields.items():
        if isinstance(value, Mapping):
            features.update(value)
        elif isinstance(value, int | float | str | bool):
            features[name] = value
    label = features.pop(target, None) if target else None
    if labels is not None and label is not None:
        label = labels.get(str(label))
    return features, label


def _prediction(spec: PipelineSpec, record: Record, y_pred: Any, proba: Any, label: Any, version: str | None) -> Output:
    source = record.source
    message = Prediction(
        pipeline=spec.name,
        key=source.key.decode("utf-8", "replace") if source.key is not None else None,
        ts=getattr(record.message, "ts", None) or source.timestamp_ms / 1000.0,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        prediction=y_pred,
        proba={str(k): float(v) for k, v in proba.items()} if proba else None,
        label=label,
        model_version=version,
    )
    return Output("predictions", source.key, encode(message), source.timestamp_ms)


def _predict(model: Any, x: Features) -> tuple[Any, dict[Any, float] | None]:
    proba_fn = getattr(model, "predict_proba_one", None)
    if proba_fn is not None:
        proba = proba_fn(x)
        if proba:
            return max(proba, key=proba.__getitem__), proba
    return model.predict_one(x), None


def _answer(
    spec: PipelineSpec,
    records: Sequence[Record],
    model: Any,
    version: str | None,
    scoreboard: Scoreboard,
    *,
    learn: bool,
) -> BatchResult:
    """Predict each record in order (then learn it when ``learn``), scoring labelled ones; model errors reject."""
    result = BatchResult()
    op = spec.operator
    for record in records:
        x, y = features_and_label(record.message, op.target, labels=op.labels, exclude=op.exclude)
        if y is None and op.labels is not None:
            scoreboard.skipped += 1  # a record of a kind the label map leaves out (e.g. a comment for a CTR)
            continue
        try:
            y_pred, proba = _predict(model, x)
            if learn:
                model.learn_one(x, y)
        except Exception as exc:  # a record the model cannot take must not stop the worker
            result.rejected.append(Rejection(record.source, "operator_error", f"{type(exc).__name__}: {exc}"))
            continue
        if y is not None:
            scoreboard.update(y, y_pred, proba)
        result.outputs.append(_prediction(spec, record, y_pred, proba, y, version))
    return result


@dataclass
class LearnerOperator:
    """Prequential host for a River-compatible learner: predict, score, then learn, one record at a time."""

    spec: PipelineSpec
    learner: Any
    scoreboard: Scoreboard
    learned: int = 0
    version: str | None = field(default=None)

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> LearnerOperator:
        """Build the learner that ``spec.operator.use`` names with ``spec.operator.params``."""
        factory = resolve_operator(spec)
        return cls(spec, factory(**spec.operator.params), Scoreboard.from_spec(spec))

    def validate(self, message: Message) -> None:
        """Learning needs a label: an unlabelled record is rejected with reason ``missing_label`` (one whose target
        value ``operator.labels`` does not list is read, counted as skipped and not learned)."""
        _, label = features_and_label(message, self.spec.operator.target)
        if label is None:
            where = f"field {self.spec.operator.target!r}" if self.spec.operator.target else "'label'"
            raise RecordRejected("missing_label", f"record has no label in {where}; learn mode needs one")

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Predict, score and learn each record in order; one prediction per record."""
        result = _answer(self.spec, records, self.learner, self.version, self.scoreboard, learn=True)
        self.learned += len(result.outputs)
        return result

    def published_model(self) -> Any:
        """What a registry version holds: the learner."""
        return self.learner

    def state(self) -> Any:
        """Learner, metrics, detector and the count of learned events."""
        return {"learner": self.learner, "scoreboard": self.scoreboard, "learned": self.learned}

    def load_state(self, state: Any) -> None:
        """Resume from a checkpoint."""
        self.learner = state["learner"]
        self.scoreboard = state["scoreboard"]
        self.learned = state["learned"]

    def scores(self) -> dict[str, float]:
        """Current prequential metrics (and, with ``operator.labels``, the records skipped as unlabelled)."""
        values = self.scoreboard.values()
        return values if self.spec.operator.labels is None else {**values, "skipped": float(self.scoreboard.skipped)}


@dataclass
class ServingOperator:
    """Predicts with the model the runtime last swapped in; scores predictions of records that carry labels."""

    spec: PipelineSpec
    scoreboard: Scoreboard
    model: Any = None
    version: str | None = None

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> ServingOperator:
        """A serving operator with no model yet; the runtime swaps one in before the first batch."""
        return cls(spec, Scoreboard.from_spec(spec))

    def swap(self, model: Any, version: str) -> None:
        """Replace the model; called by the runtime between batches only."""
        self.model = model
        self.version = version

    def validate(self, message: Message) -> None:
        """Serving accepts labelled and unlabelled records alike."""

    def process(self, records: Sequence[Record]) -> BatchResult:
        """One prediction per record with the current model."""
        if self.model is None:
            raise RuntimeError(f"pipeline {self.spec.name!r}: no model to serve yet")
        return _answer(self.spec, records, self.model, self.version, self.scoreboard, learn=False)

    def state(self) -> Any:
        """Serving state is the metrics only: the model itself comes from the registry."""
        return {"scoreboard": self.scoreboard}

    def load_state(self, state: Any) -> None:
        """Resume metrics from a checkpoint."""
        self.scoreboard = state["scoreboard"]

    def scores(self) -> dict[str, float]:
        """Current metrics on labelled records."""
        return self.scoreboard.values()


@dataclass
class RelayOperator:
    """Forwards each validated record's bytes unchanged to the ``predictions`` output."""

    spec: PipelineSpec
    relayed: int = 0

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> RelayOperator:
        """A relay needs nothing from the spec beyond its outputs."""
        return cls(spec)

    def validate(self, message: Message) -> None:
        """Any record that decodes is relayed."""

    def process(self, records: Sequence[Record]) -> BatchResult:
        """The input bytes, in order."""
        self.relayed += len(records)
        return BatchResult([Output("predictions", r.source.key, r.source.raw, r.source.timestamp_ms) for r in records])

    def state(self) -> Any:
        """The relayed count (so that a restart resumes it)."""
        return {"relayed": self.relayed}

    def load_state(self, state: Any) -> None:
        """Resume the relayed count."""
        self.relayed = state["relayed"]

    def scores(self) -> dict[str, float]:
        """A relay scores nothing."""
        return {}


RECENT_EPISODES = 20  # episodes in the mean return a pipeline reports


@dataclass
class AgentOperator:
    """One streaming RL agent per environment (the ``env`` of each ``observation/v1``), built from the spec.

    For each observation: if it follows the env's last answered step, the agent learns from the transition
    (``observe(obs, action, reward, next_obs, terminated, truncated)``); unless the episode ended there, the agent
    acts and the action goes out on the primary output, keyed by env. Agents are independent (eligibility traces
    follow one trajectory), each seeded with ``params.seed`` plus a stable hash of its env id. The checkpointed
    state holds every agent's ``state_dict`` (networks, traces, normalisers, ε position, RNG) and the pending
    actions, so a restarted worker continues exactly where the checkpoint was taken.
    """

    spec: PipelineSpec
    factory: Callable[..., Any]
    agents: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, tuple[int, list[float], Any]] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    returns: list[float] = field(default_factory=list)
    learned: int = 0
    episodes: int = 0

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> AgentOperator:
        """Agents are made on first sight of each env with ``spec.operator.use`` and ``params``."""
        return cls(spec, resolve_operator(spec))

    def _agent(self, env: str) -> Any:
        agent = self.agents.get(env)
        if agent is None:
            params = dict(self.spec.operator.params)
            seed = int(params.pop("seed", 0)) + zlib.crc32(env.encode()) % 2**31
            agent = self.agents[env] = self.factory(**params, seed=seed)
        return agent

    def validate(self, message: Message) -> None:
        """Agents take ``observation/v1`` records only."""
        if not isinstance(message, Observation):
            raise RecordRejected("wrong_schema", f"mode agent takes observation/v1 (got {message.schema_name})")

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Learn from each transition and answer each observation of an unfinished episode with an action."""
        result = BatchResult()
        for record in records:
            obs = record.message
            assert isinstance(obs, Observation)
            try:
                action = self._step(obs)
            except Exception as exc:  # a record the agent cannot take must not stop the worker
                result.rejected.append(Rejection(record.source, "operator_error", f"{type(exc).__name__}: {exc}"))
                continue
            if action is not None:
                message = Action(env=obs.env, step=obs.step, action=action, ts=obs.ts)
                result.outputs.append(
                    Output("predictions", obs.env.encode(), encode(message), record.source.timestamp_ms)
                )
        return result

    def _step(self, obs: Observation) -> int | list[float] | None:
        agent = self._agent(obs.env)
        previous = self.pending.pop(obs.env, None)
        if previous is not None and previous[0] == obs.step - 1:
            _, prev_obs, prev_action = previous
            agent.observe(prev_obs, prev_action, obs.reward, obs.obs, obs.terminated, obs.truncated)
            self.learned += 1
            self.running[obs.env] = self.running.get(obs.env, 0.0) + obs.reward
        else:
            self.running[obs.env] = 0.0  # a new episode (or a gap in the env's numbering): start counting afresh
        if obs.terminated or obs.truncated:
            self.returns = [*self.returns[-(RECENT_EPISODES - 1) :], self.running.pop(obs.env, 0.0)]
            self.episodes += 1
            return None
        raw = agent.act(obs.obs)
        action: int | list[float] = int(raw) if isinstance(raw, int) else [float(v) for v in raw]
        self.pending[obs.env] = (obs.step, obs.obs, raw)
        return action

    def state(self) -> Any:
        """Every agent's state_dict, the actions waiting for their next observation, and the episode tallies."""
        return {
            "agents": {env: agent.state_dict() for env, agent in self.agents.items()},
            "pending": dict(self.pending),
            "running": dict(self.running),
            "returns": list(self.returns),
            "learned": self.learned,
            "episodes": self.episodes,
        }

    def load_state(self, state: Any) -> None:
        """Rebuild each agent and load its state_dict."""
        self.agents = {}
        for env, agent_state in state["agents"].items():
            self._agent(env).load_state_dict(agent_state)
        self.pending = dict(state["pending"])
        self.running = dict(state["running"])
        self.returns = list(state["returns"])
        self.learned = state["learned"]
        self.episodes = state["episodes"]

    def scores(self) -> dict[str, float]:
        """Mean return of the last finished episodes (all envs) and the number of episodes."""
        mean = sum(self.returns) / len(self.returns) if self.returns else 0.0
        return {"episode_return": mean, "episodes": float(self.episodes)}


OPERATOR_MODES: dict[str, Callable[[PipelineSpec], Operator]] = {
    "learn": LearnerOperator.from_spec,
    "serve": ServingOperator.from_spec,
    "relay": RelayOperator.from_spec,
    "agent": AgentOperator.from_spec,
    "sequence": SequenceOperator.from_spec,
    "frames": FramesOperator.from_spec,
    "recommend": RecommendOperator.from_spec,
    "allocate": AllocateOperator.from_spec,
}


def build_operator(spec: PipelineSpec) -> Operator:
    """The operator adapter for ``spec.operator.mode``."""
    return OPERATOR_MODES[spec.operator.mode](spec)
