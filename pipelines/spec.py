"""Pipeline specs: a pipeline is data, a YAML file validated by pydantic.

A spec names one input stream, one operator and the topics it writes::

    name: live-ctr
    input: {topics: [live.interactions], schema: interaction/v1, start: earliest}
    operator: {use: learners.driftmoe:MoEData, params: {experts: 12, top_k: 3}, target: clicked, mode: learn}
    batch: {max: 256, within_ms: 20}
    outputs: {predictions: live-ctr.predictions}
    checkpoint: {every_events: 10000, every_s: 30}
    registry: {model: live-ctr, publish_every_events: 200000, alias: champion}
    monitor: {detector: adwin, metrics: [accuracy]}
    limits: {max_message_bytes: 1048576}

Only ``name``, ``input`` and ``operator`` are required. Every problem becomes one :class:`SpecError` that lists
all of them, one line each, in the house style
``pipeline 'live-ctr': batch.max must be >= 1 (got 0)``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

__all__ = [
    "BatchSpec",
    "CheckpointSpec",
    "FramesSpec",
    "InputSpec",
    "LimitsSpec",
    "MonitorSpec",
    "OperatorSpec",
    "PipelineSpec",
    "RecommendSpec",
    "RegistrySpec",
    "SequenceSpec",
    "SpecError",
    "load_spec",
    "load_specs",
    "parse_spec",
    "primary_output",
    "resolve_operator",
    "spec_json_schema",
]

NAME_PATTERN = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
NAME_MAX = 63  # a DNS label: the name also ends up in Kubernetes resource names
TOPIC_PATTERN = r"[A-Za-z0-9._-]+"
TOPIC_MAX = 249  # Kafka's limit
SCHEMA_PATTERN = r"[a-z][a-z0-9_.-]*/v[0-9]+"
OPERATOR_PATTERN = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
MODEL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
ALIAS_PATTERN = r"[A-Za-z_][A-Za-z0-9_-]*"
OUTPUT_PATTERN = r"[a-z][a-z0-9_]*"
DEFAULT_FETCH_WAIT_MS = 20  # the broker fetch wait of input.fetch_wait_ms (pipelines/transport.py says why)
RESERVED_OUTPUT_PREFIXES = ("eddy.", "__")  # eddy.models and Kafka's internal topics
LABEL_SCHEMA = "event/v1"  # the schema whose records carry their label in Event.label

AGENT_SCHEMA = "observation/v1"
SEQUENCE_SCHEMA = "interaction/v1"
INTERACTION_KINDS = ("impression", "click", "like", "comment", "gift", "follow", "leave")  # Interaction.kind
FRAMES_SCHEMA = "frame/v1"
ALLOCATE_SCHEMA = "feed-request/v1"
FRAMES_ENCODER = "inference.frame_encoder:StreamingConvEncoder"  # operator.use of mode frames when left out
RECOMMEND_KINDS = ("click", "comment", "like", "gift", "follow")  # a user chose a streamer
Mode = Literal["learn", "serve", "relay", "agent", "sequence", "frames", "recommend", "allocate"]
PRIMARY_OUTPUTS: dict[str, str] = {  # else "predictions"
    "frames": "embeddings",
    "recommend": "recommendations",
    "allocate": "allocations",
}
FOLLOWING_MODES = ("serve", "recommend")  # modes that take their model from a registry alias
Detector = Literal["adwin", "page_hinkley", "kswin", "ddm", "none"]
Metric = Literal["accuracy", "auc", "kappa_m", "log_loss", "mae", "rmse"]


class SpecError(ValueError):
    """A pipeline spec that cannot be used; the message lists every problem, one line each.

    ``source`` is what the spec was read from (``pipeline 'name'`` or the file; None when the problems name
    their pipelines themselves) and ``problems`` the lines without it.
    """

    def __init__(self, source: str | None, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = self.problems if source is None else [f"{source}: {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_topic(topic: str) -> str | None:
    """Why ``topic`` is not a valid Kafka topic name, or None."""
    if not re.fullmatch(TOPIC_PATTERN, topic) or topic in {".", ".."}:
        return "use only letters, digits, '.', '_' and '-'"
    if len(topic) > TOPIC_MAX:
        return f"are at most {TOPIC_MAX} characters (got {len(topic)})"
    return None


def _check_alias(alias: str) -> str:
    if not re.fullmatch(ALIAS_PATTERN, alias) or alias == "latest" or re.fullmatch(r"v\d+", alias):
        raise ValueError(
            f"must be an MLflow alias: letters, digits, '_' and '-', not 'latest' or 'v<number>' (got {_show(alias)})"
        )
    return alias


def primary_output(mode: str) -> str:
    """The output name a mode writes its answer for each record to: 'embeddings' for frames, 'recommendations' for
    recommend, else 'predictions'."""
    return PRIMARY_OUTPUTS.get(mode, "predictions")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InputSpec(_Section):
    """The input stream: one or more topics carrying the same message schema."""

    topics: list[str] = Field(description="Kafka topics to consume, all with the same schema.")
    schema_name: str = Field(
        alias="schema", description="Message schema name and version, e.g. 'event/v1' or 'interaction/v1'."
    )
    start: Literal["earliest", "latest"] = Field(
        "earliest",
        description=(
            "Where to start a partition that no checkpoint covers yet: 'earliest' reads it from the beginning "
            "(every event learned exactly once); 'latest' from the consumer group's committed offset, else the end."
        ),
    )
    fetch_wait_ms: int = Field(
        DEFAULT_FETCH_WAIT_MS,
        ge=1,
        le=1000,
        description=(
            "How long a fetch waits at the broker for data, in ms. The embedded broker holds a fetch for its whole "
            "wait, so this bounds the delivery delay; shorter costs more idle fetches. A worker hosting several "
            "pipelines uses the smallest of theirs."
        ),
    )

    @field_validator("topics")
    @classmethod
    def _topics(cls, topics: list[str]) -> list[str]:
        if not topics:
            raise ValueError("must list at least one topic (got [])")
        for topic in topics:
            if (why := _check_topic(topic)) is not None:
                raise ValueError(f"has an invalid topic name {_show(topic)}: topic names {why}")
        duplicates = sorted({t for t in topics if topics.count(t) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(map(repr, duplicates))} more than once; list each topic once")
        return topics

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, schema: str) -> str:
        if not re.fullmatch(SCHEMA_PATTERN, schema):
            raise ValueError(f"must look like 'name/v<version>', e.g. 'event/v1' (got {_show(schema)})")
        return schema


class OperatorSpec(_Section):
    """What runs on each micro-batch."""

    use: str | None = Field(
        None,
        description="The learner or model to host, as 'package.module:Attr'. Required for modes learn, agent and "
        f"sequence; informational for serve (the model comes from the registry); unused by relay; for frames, the "
        f"encoder (default {FRAMES_ENCODER}).",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the operator.")
    target: str | None = Field(
        None,
        description="Name of the field holding the label. Optional for schema event/v1 (Event.label); "
        "required in mode learn for other schemas.",
    )
    labels: dict[str, bool | int | str] | None = Field(
        None,
        description="mode learn: the label for each value of the target field, e.g. {click: true, impression: "
        "false} with target: kind; records whose target value is not listed are read and counted but not learned.",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="mode learn and serve: fields the model must not see, e.g. [value] when it reveals the label.",
    )
    mode: Mode = Field(
        "learn",
        description="learn: prequential predict, score, learn; serve: predict with the model a registry alias "
        "points to; relay: pass records through unchanged (benchmarks); agent: a streaming RL agent per env on "
        "observation/v1, actions to the primary output; sequence: next-event prediction per user on "
        "interaction/v1 with a temporal point process trained from the stream; frames: per-camera frame embeddings on "
        "frame/v1 (a streaming convolutional encoder behind a similarity filter), batched across cameras; recommend: "
        "top-k live streamers per interaction/v1 from a sequence transformer the registry alias points to, one "
        "decode step per interaction through each user's rolling cache; allocate: insert the top live room or not "
        "for each feed-request/v1, learning online (SL-MGAC) from the outcomes the requests report.",
    )

    @field_validator("use")
    @classmethod
    def _use(cls, use: str | None) -> str | None:
        if use is not None and not re.fullmatch(OPERATOR_PATTERN, use):
            raise ValueError(
                f"must be 'package.module:Attr', e.g. 'river.tree:HoeffdingTreeClassifier' (got {_show(use)})"
            )
        return use

    @field_validator("target")
    @classmethod
    def _target(cls, target: str | None) -> str | None:
        if target is not None and not target.strip():
            raise ValueError("must name the label field, e.g. 'clicked' (got an empty string); or leave it out")
        return target


class BatchSpec(_Section):
    """Micro-batching: up to ``max`` records, or whatever arrived within ``within_ms``."""

    max: int = Field(256, ge=1, le=100_000, description="Most records per operator call.")
    within_ms: float = Field(20.0, ge=0, description="Longest wait for a batch to fill, in milliseconds.")


class CheckpointSpec(_Section):
    """When to write operator state plus input offsets to the state store (whichever comes first)."""

    every_events: int = Field(10_000, ge=1, description="Checkpoint after this many input records.")
    every_s: float = Field(30.0, gt=0, description="Checkpoint after this many seconds (if anything changed).")


class RegistrySpec(_Section):
    """The model registry: what a learning pipeline publishes, or what a serving pipeline follows."""

    model: str = Field(description="Registered model name.")
    publish_every_events: int = Field(
        100_000, ge=1, description="mode learn: publish a version after this many learned records."
    )
    alias: str = Field("champion", description="mode learn: the alias published versions get.")
    follow: str | None = Field(
        None, description="modes serve and recommend: the alias to serve and follow, e.g. 'champion'."
    )

    @field_validator("model")
    @classmethod
    def _model(cls, model: str) -> str:
        if not re.fullmatch(MODEL_PATTERN, model) or len(model) > 256:
            raise ValueError(
                f"must be a model name of letters, digits, '.', '_' and '-', e.g. 'live-ctr' (got {_show(model)})"
            )
        return model

    @field_validator("alias")
    @classmethod
    def _alias(cls, alias: str) -> str:
        return _check_alias(alias)

    @field_validator("follow")
    @classmethod
    def _follow(cls, follow: str | None) -> str | None:
        return None if follow is None else _check_alias(follow)


class MonitorSpec(_Section):
    """Prequential metrics and the drift detector watching them."""

    detector: Detector = Field("adwin", description="Drift detector on the prediction error stream.")
    metrics: list[Metric] = Field(default_factory=lambda: list[Metric](["accuracy"]), description="Metrics to report.")

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: list[str]) -> list[str]:
        duplicates = sorted({m for m in metrics if metrics.count(m) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(map(repr, duplicates))} more than once; list each metric once")
        return metrics


class SequenceSpec(_Section):
    """mode sequence: each user's recent interactions are one event sequence (times and kinds) for a temporal
    point process that predicts the user's next event, and learns from the stream periodically."""

    kinds: list[str] = Field(
        default_factory=lambda: list(INTERACTION_KINDS),
        description="Interaction kinds that are event types, in type order; other kinds go to the dead-letter "
        "topic (reason unknown_kind).",
    )
    history: int = Field(64, ge=2, le=4096, description="Most recent events kept per user (in the state store).")
    train_every_events: int = Field(
        2000, ge=1, description="Train on the sequences of the users seen since the last training this often."
    )
    epochs: int = Field(1, ge=1, le=100, description="Passes over those sequences per training.")

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [k for k in kinds if k not in INTERACTION_KINDS]
        if unknown:
            raise ValueError(f"has unknown kind(s) {', '.join(map(repr, unknown))}; use {', '.join(INTERACTION_KINDS)}")
        if len(kinds) < 2 or len(set(kinds)) != len(kinds):
            raise ValueError(f"must list at least two different kinds, each once (got {_show(kinds)})")
        return kinds


class FramesSpec(_Section):
    """mode frames: the frames every camera sends, the similarity filter in front of the encoder, and how many
    cameras keep per-camera state (cached activations, filter reference frame, last embedding) at once."""

    height: int = Field(64, ge=1, le=4096, description="Frame height in pixels; other frames go to the dead letters.")
    width: int = Field(64, ge=1, le=4096, description="Frame width in pixels; other frames go to the dead letters.")
    channels: int = Field(
        3, ge=1, le=64, description="Channels per pixel (3 for RGB); the encoder is built with as many in_channels."
    )
    threshold: float | None = Field(
        0.98,
        description="The similarity filter's threshold: a frame this similar (cosine) to its camera's last encoded "
        "one or more may be skipped and reuse that embedding. null encodes every frame.",
    )
    max_skips: int = Field(10, ge=0, description="Most frames skipped in a row per camera (0 skips none).")
    max_cameras: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Cameras with state at once; one more evicts the least recently seen, which starts cold when "
        "it comes back. Memory per camera is about height * width * channels bytes plus the encoder's cache.",
    )
    seed: int = Field(
        0, ge=0, description="Seed of the filter's draws (a frame's fate is a hash of seed, camera, seq)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the encoder and the per-camera state live: auto picks cuda when there is a GPU."
    )

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, threshold: float | None) -> float | None:
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise ValueError(
                f"must be in [0, 1), e.g. 0.98 (StreamDiffusion's), or null to encode every frame (got {threshold})"
            )
        return threshold

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)``, as ``Frame.shape`` must be."""
        return (self.height, self.width, self.channels)


class AllocateSpec(_Section):
    """mode allocate: the allocation agent (spec livestream.md §3) and the sizes of the platform it serves."""

    variant: Literal["sl-mgac", "actor-critic", "dqn"] = Field(
        "sl-mgac", description="SL-MGAC, or one of its learned baselines (plain actor-critic, DQN)."
    )
    groups: int = Field(ge=1, le=64, description="User activity groups (requests carry group < groups).")
    streamers: int = Field(
        ge=1, le=10_000_000, description="Streamer ids the agent embeds (requests carry ids < streamers)."
    )
    seed: int = Field(0, ge=0, description="Seeds the networks and the exploration draws.")
    config: dict[str, float | int | bool | None] = Field(
        default_factory=dict,
        description="Overrides of learners.allocation.AllocationConfig, e.g. {explore: 0.05, app_floor: 600}.",
    )


class RecommendSpec(_Section):
    """mode recommend: which interactions extend a user's stream, where the live rooms come from, and the rolling
    caches (``sinks + window`` streamers per user, ``slots`` users at once)."""

    kinds: list[str] = Field(
        default_factory=lambda: list(RECOMMEND_KINDS),
        description="Interaction kinds that extend the user's stream and are answered with a recommendation.",
    )
    skip: list[str] = Field(
        default_factory=lambda: ["impression", "leave"],
        description="Interaction kinds read and counted but not answered; any kind in neither list goes to the "
        "dead-letter topic (reason unknown_kind).",
    )
    rooms_topic: str = Field("live.rooms", description="The room/v1 topic the live streamers come from.")
    k: int = Field(10, ge=1, le=1000, description="Streamers per recommendation (fewer when fewer are live).")
    sinks: int = Field(4, ge=0, le=1024, description="First streamers of each user's stream kept in the cache.")
    window: int = Field(60, ge=1, le=65_536, description="Most recent streamers of each user kept in the cache.")
    slots: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Users with a cache at once; one more evicts the least recently seen, rebuilt from the streamer "
        "ids kept in the state store when it comes back.",
    )
    room_retention_s: float = Field(
        86_400.0, gt=0, description="How long ended rooms are remembered, in event time behind the newest interaction."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model and the caches live: auto picks cuda when there is a GPU."
    )

    @field_validator("kinds", "skip")
    @classmethod
    def _kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [k for k in kinds if k not in INTERACTION_KINDS]
        if unknown:
            raise ValueError(f"has unknown kind(s) {', '.join(map(repr, unknown))}; use {', '.join(INTERACTION_KINDS)}")
        return kinds

    @field_validator("rooms_topic")
    @classmethod
    def _rooms_topic(cls, topic: str) -> str:
        if (why := _check_topic(topic)) is not None:
            raise ValueError(f"is not a valid topic name {_show(topic)}: topic names {why}")
        return topic

    @model_validator(mode="after")
    def _disjoint(self) -> RecommendSpec:
        if not self.kinds:
            raise ValueError("recommend.kinds must list at least one kind, e.g. [click]")
        both = sorted(set(self.kinds) & set(self.skip))
        if both:
            raise ValueError(f"kind(s) {', '.join(map(repr, both))} are in both kinds and skip; keep each in one")
        return self


class LimitsSpec(_Section):
    """Guards against bad input."""

    max_message_bytes: int = Field(
        1_048_576, ge=1, le=100 * 1_048_576, description="Larger messages go to the dead-letter topic."
    )


class PipelineSpec(_Section):
    """One pipeline: an input stream, an operator, and the topics it writes."""

    model_config = ConfigDict(title="Eddy pipeline spec", extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(
        description="Pipeline name: lowercase letters, digits and '-'; used in topic names, state keys and "
        "metric labels."
    )
    input: InputSpec
    operator: OperatorSpec
    batch: BatchSpec = Field(default_factory=BatchSpec)
    outputs: dict[str, str] = Field(
        default_factory=dict,
        description="Output name -> topic. 'predictions' is the primary output (relay writes its records there, "
        "an agent its actions); in mode frames it is 'embeddings', in mode recommend 'recommendations'. Default: "
        "{predictions: '<name>.predictions'} (frames: {embeddings: '<name>.embeddings'}, recommend: "
        "{recommendations: '<name>.recommendations'}).",
    )
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    registry: RegistrySpec | None = None
    monitor: MonitorSpec | None = None
    sequence: SequenceSpec | None = Field(None, description="mode sequence only (defaults apply when left out).")
    frames: FramesSpec | None = Field(None, description="mode frames only (defaults apply when left out).")
    recommend: RecommendSpec | None = Field(None, description="mode recommend only (defaults apply when left out).")
    allocate: AllocateSpec | None = Field(None, description="mode allocate only (required there).")
    limits: LimitsSpec = Field(default_factory=LimitsSpec)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """The primary output's topic when no outputs are given, and mode frames' default encoder."""
        if not isinstance(data, Mapping):
            return data
        operator = data.get("operator")
        mode = operator.get("mode") if isinstance(operator, Mapping) else None
        if data.get("outputs") is None:
            name = data.get("name")
            valid = isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) is not None
            primary = primary_output(mode) if isinstance(mode, str) else "predictions"
            # an invalid name is reported once, under 'name', not again through the topic derived from it
            data = {**data, "outputs": {primary: f"{name if valid else 'unnamed'}.{primary}"}}
        if mode == "frames" and isinstance(operator, Mapping) and operator.get("use") is None:
            data = {**data, "operator": {**operator, "use": FRAMES_ENCODER}}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(
                "must be lowercase letters, digits and '-', starting and ending with a letter or digit, "
                f"e.g. 'live-ctr' (got {_show(name)})"
            )
        if len(name) > NAME_MAX:
            raise ValueError(f"must be at most {NAME_MAX} characters (got {len(name)})")
        return name

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, outputs: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        operator = info.data.get("operator")  # absent when invalid: its own error says so, and the mode is unknown
        mode = operator.mode if isinstance(operator, OperatorSpec) else None
        primary = primary_output(mode) if mode is not None else None
        if primary is not None and primary not in outputs:
            article = "an" if primary[0] in "aeiou" else "a"
            raise ValueError(
                f"must name {article} {primary!r} topic, the primary output of mode {mode!r} (got {_show(outputs)}); "
                f"e.g. outputs: {{{primary}: my-pipeline.{primary}}}"
            )
        for key, topic in outputs.items():
            if not re.fullmatch(OUTPUT_PATTERN, key):
                raise ValueError(f"has an invalid output name {_show(key)}: use lowercase letters, digits and '_'")
            if (why := _check_topic(topic)) is not None:
                raise ValueError(f"{key} is not a valid topic name {_show(topic)}: topic names {why}")
            if topic.startswith(RESERVED_OUTPUT_PREFIXES):
                raise ValueError(
                    f"{key} writes to the reserved topic {_show(topic)}; topics 'eddy.*' and '__*' are internal"
                )
        duplicates = sorted({t for t in outputs.values() if list(outputs.values()).count(t) > 1})
        if duplicates:
            raise ValueError(f"sends several outputs to {', '.join(map(repr, duplicates))}; give each its own topic")
        return outputs

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        problems: list[str] = []
        mode, op, registry = self.operator.mode, self.operator, self.registry
        if mode == "learn" and op.use is None:
            problems.append("operator.use is required for mode 'learn' (e.g. use: river.tree:HoeffdingTreeClassifier)")
        if op.labels is not None and (mode != "learn" or op.target is None):
            problems.append("operator.labels needs mode 'learn' and operator.target, the field whose values it maps")
        if op.labels is not None and not op.labels:
            problems.append("operator.labels is empty; map at least one target value to a label, or remove it")
        if mode == "learn" and op.target is None and self.input.schema_name != LABEL_SCHEMA:
            problems.append(
                f"operator.target is required for input.schema {self.input.schema_name!r} in mode 'learn': "
                "name the field holding the label (e.g. target: clicked)"
            )
        if mode in FOLLOWING_MODES and (registry is None or registry.follow is None):
            problems.append(
                f"operator.mode {mode!r} needs registry.model and registry.follow, the alias to serve "
                f"(got registry: {_show(registry.model_dump() if registry else None)}); "
                "e.g. registry: {model: demo, follow: champion}"
            )
        if registry is not None and mode not in FOLLOWING_MODES and registry.follow is not None:
            problems.append(
                f"registry.follow is only used in modes 'serve' and 'recommend' (got mode {mode!r}); "
                "remove it or set operator.mode: serve"
            )
        if registry is not None and mode in FOLLOWING_MODES and "publish_every_events" in registry.model_fields_set:
            problems.append(
                "registry.publish_every_events is only used in mode 'learn'; serving pipelines publish nothing"
            )
        if mode == "agent" and op.use is None:
            problems.append("operator.use is required for mode 'agent' (e.g. use: learners.streamx:StreamQ)")
        if mode == "agent" and self.input.schema_name != AGENT_SCHEMA:
            problems.append(
                f"mode 'agent' reads {AGENT_SCHEMA} (got input.schema {self.input.schema_name!r}); "
                "point it at an env runner's observations topic"
            )
        if mode == "agent" and (registry is not None or self.monitor is not None):
            problems.append("registry and monitor are not used in mode 'agent'; remove them")
        if mode == "sequence" and op.use is None:
            problems.append("operator.use is required for mode 'sequence' (e.g. use: learners.tpp:ContinualTPP)")
        if mode == "sequence" and self.input.schema_name != SEQUENCE_SCHEMA:
            problems.append(
                f"mode 'sequence' reads {SEQUENCE_SCHEMA} (got input.schema {self.input.schema_name!r}); "
                "point it at an interactions topic such as live.interactions"
            )
        if mode == "sequence" and "n_types" in op.params:
            problems.append("operator.params.n_types is set by mode 'sequence' from sequence.kinds; remove it")
        if mode != "sequence" and self.sequence is not None:
            problems.append(f"sequence is only used in mode 'sequence' (got mode {mode!r}); remove it")
        if mode == "frames":
            problems.extend(self._frames_problems())
        if mode != "frames" and self.frames is not None:
            problems.append(f"frames is only used in mode 'frames' (got mode {mode!r}); remove it")
        if mode == "recommend":
            problems.extend(self._recommend_problems())
        if mode != "recommend" and self.recommend is not None:
            problems.append(f"recommend is only used in mode 'recommend' (got mode {mode!r}); remove it")
        if mode == "allocate":
            problems.extend(self._allocate_problems())
        if mode != "allocate" and self.allocate is not None:
            problems.append(f"allocate is only used in mode 'allocate' (got mode {mode!r}); remove it")
        if mode == "relay" and registry is not None:
            problems.append("registry is not used in mode 'relay'; remove it")
        if mode == "relay" and self.monitor is not None:
            problems.append("monitor is not used in mode 'relay' (a relay predicts nothing); remove it")
        for key, topic in self.outputs.items():
            if topic in self.input.topics:
                problems.append(
                    f"outputs.{key} {topic!r} is also an input topic; a pipeline must not consume its own output"
                )
            if topic == self.dlq_topic:
                problems.append(f"outputs.{key} {topic!r} is the dead-letter topic; choose another topic")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _frames_problems(self) -> list[str]:
        problems: list[str] = []
        frames = self.frames or FramesSpec()
        if self.input.schema_name != FRAMES_SCHEMA:
            problems.append(
                f"mode 'frames' reads {FRAMES_SCHEMA} (got input.schema {self.input.schema_name!r}); "
                "point it at a cameras' frames topic (eddy frames TOPIC publishes synthetic ones)"
            )
        if "in_channels" in self.operator.params:
            problems.append("operator.params.in_channels is set by mode 'frames' from frames.channels; remove it")
        if self.operator.target is not None:
            problems.append("operator.target is not used in mode 'frames' (frames carry no label); remove it")
        if self.registry is not None or self.monitor is not None:
            problems.append("registry and monitor are not used in mode 'frames'; remove them")
        pixel_bytes = frames.height * frames.width * frames.channels
        if pixel_bytes > self.limits.max_message_bytes:
            problems.append(
                f"frames of {frames.height}x{frames.width}x{frames.channels} hold {pixel_bytes} bytes, more than "
                f"limits.max_message_bytes {self.limits.max_message_bytes}, so every frame would be a dead letter; "
                f"raise limits.max_message_bytes above {pixel_bytes}"
            )
        return problems

    def _own_operator_problems(self, mode: str, schema: str, topic: str, operator: str, scores: str) -> list[str]:
        """The checks shared by the modes whose operator the mode itself builds: the input ``schema`` (read from a
        topic such as ``topic``), no operator.use/params/target (``operator`` says where the model comes from) and
        no monitor (``scores`` says what the mode scores itself)."""
        problems: list[str] = []
        if self.input.schema_name != schema:
            problems.append(
                f"mode {mode!r} reads {schema} (got input.schema {self.input.schema_name!r}); point it at {topic}"
            )
        op = self.operator
        if op.use is not None or op.params or op.target is not None:
            problems.append(f"operator.use, params and target are not used in mode {mode!r} ({operator}); remove them")
        if self.monitor is not None:
            problems.append(f"monitor is not used in mode {mode!r} (it scores {scores} itself); remove it")
        return problems

    def _allocate_problems(self) -> list[str]:
        problems = self._own_operator_problems(
            "allocate",
            ALLOCATE_SCHEMA,
            "the feed's requests topic such as live.requests",
            "the agent is learners.allocation.AllocationAgent, configured by the allocate section",
            "allocation rate and watch time",
        )
        if self.allocate is None:
            problems.append(
                "mode 'allocate' needs an allocate section with the platform's sizes, e.g. "
                "allocate: {groups: 3, streamers: 1000}"
            )
        return problems

    def _recommend_problems(self) -> list[str]:
        problems = self._own_operator_problems(
            "recommend",
            SEQUENCE_SCHEMA,
            "an interactions topic such as live.interactions",
            "the model comes from the registry: train one with 'eddy recommender train'",
            "hit-rate@k",
        )
        rooms = (self.recommend or RecommendSpec()).rooms_topic
        if rooms in self.input.topics:
            problems.append(f"recommend.rooms_topic {rooms!r} is also an input topic; rooms are read on the side")
        return problems

    @property
    def primary_output(self) -> str:
        """The output each record's answer goes to (see :func:`primary_output`)."""
        return primary_output(self.operator.mode)

    @property
    def dlq_topic(self) -> str:
        """Where records that fail to decode or validate go: ``<name>.dlq``."""
        return f"{self.name}.dlq"

    @property
    def output_topics(self) -> list[str]:
        """Every topic the pipeline writes records to (not counting the dead-letter topic)."""
        return list(self.outputs.values())

    @property
    def followed_model_uri(self) -> str | None:
        """``models:/<model>@<alias>`` for a serving or recommend pipeline, None otherwise."""
        if self.registry is None or self.registry.follow is None:
            return None
        return f"models:/{self.registry.model}@{self.registry.follow}"


# -- pydantic errors -> house-style lines ---------------------------------------------------------------------


def _path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (found := _model_in(arg)) is not None:
                return found
    return None


def _allowed_fields(loc: Sequence[int | str]) -> list[str]:
    """Field names (as written in YAML) of the section at ``loc``."""
    model: type[BaseModel] | None = PipelineSpec
    for part in loc:
        if model is None:
            return []
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _describe(error: Any) -> list[str]:
    """One or more lines for one pydantic error."""
    loc: tuple[int | str, ...] = tuple(error["loc"])
    path, kind, ctx, value = _path(loc), error["type"], error.get("ctx", {}), error.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_fields(loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
        return [f"unknown field {path!r} ({hint})"]
    if kind == "missing":
        where = f"under {_path(loc[:-1])!r}" if len(loc) > 1 else "at the top level"
        return [f"{path} is required (add '{loc[-1]}:' {where})"]
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
        return message.splitlines() if not loc else [f"{path} {message}"]
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        bound = ctx[key]
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return [f"{path} must be {op} {bound} (got {_show(value)})"]
    if kind == "literal_error":
        return [f"{path} must be one of {ctx['expected']} (got {_show(value)})"]
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return [f"{path} must be a mapping of fields (got {_show(value)})"]
    expected = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "string_type": "a string (quote it in YAML)",
        "list_type": "a list, e.g. [a, b]",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
    }
    if kind in expected:
        return [f"{path} must be {expected[kind]} (got {_show(value)})"]
    return [f"{path or 'spec'}: {error['msg']} (got {_show(value)})"]


def _source_label(data: Any, source: str) -> str:
    name = data.get("name") if isinstance(data, Mapping) else None
    if isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) and len(name) <= NAME_MAX:
        return f"pipeline {name!r}"
    return source


def parse_spec(data: Mapping[str, Any], source: str = "<spec>") -> PipelineSpec:
    """Validate a spec given as a mapping (what ``yaml.safe_load`` returns).

    ``source`` names the spec in errors when its ``name`` is missing or invalid (load_spec passes the file).

    >>> spec = parse_spec({
    ...     "name": "demo",
    ...     "input": {"topics": ["demo.events"], "schema": "event/v1"},
    ...     "operator": {"use": "river.tree:HoeffdingTreeClassifier", "params": {"grace_period": 100}},
    ... })
    >>> spec.operator.mode, spec.batch.max, spec.outputs, spec.dlq_topic
    ('learn', 256, {'predictions': 'demo.predictions'}, 'demo.dlq')
    >>> parse_spec({**spec.model_dump(by_alias=True), "batch": {"max": 0}})
    Traceback (most recent call last):
    ...
    pipelines.spec.SpecError: pipeline 'demo': batch.max must be >= 1 (got 0)
    """
    label = _source_label(data, source)
    if not isinstance(data, Mapping):
        raise SpecError(label, [f"a spec must be a mapping of fields (got {type(data).__name__})"])
    try:
        return PipelineSpec.model_validate(dict(data))
    except ValidationError as exc:
        problems = [line for error in exc.errors() for line in _describe(error)]
        raise SpecError(label, problems) from None


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate one YAML spec file."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, [f"spec file not found (looked for {path.absolute()})"]) from None
    except IsADirectoryError:
        raise SpecError(source, ["is a directory; pass a .yaml spec file (load_specs takes directories)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(source, [f"cannot read the spec file: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise SpecError(source, [f"invalid YAML{where}: {problem} (check indentation, colons and quoting)"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"invalid YAML: {exc}"]) from None
    if data is None:
        raise SpecError(source, ["spec file is empty; a spec needs at least name, input and operator"])
    if not isinstance(data, Mapping):
        raise SpecError(
            source,
            [f"the top level must be a mapping of fields (name, input, operator, ...), got a {type(data).__name__}"],
        )
    return parse_spec(data, source)


def _spec_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"}))
        else:
            files.append(path)
    return files


def load_specs(paths: Iterable[str | Path]) -> list[PipelineSpec]:
    """Load several specs (files, or directories of ``*.yaml``) that run together.

    Reports the problems of every file at once, and rejects two pipelines with the same name or writing the
    same topic.
    """
    loaded: list[tuple[Path, PipelineSpec]] = []
    problems: list[str] = []
    for path in _spec_files(paths):
        try:
            loaded.append((path, load_spec(path)))
        except SpecError as exc:
            problems.extend(str(exc).splitlines())
    names: dict[str, Path] = {}
    writers: dict[str, str] = {}
    for path, spec in loaded:
        if spec.name in names:
            problems.append(
                f"pipeline {spec.name!r}: name used by both {names[spec.name]} and {path}; "
                "pipeline names must be unique"
            )
            continue
        names[spec.name] = path
        for topic, field in [*((t, f"outputs.{k}") for k, t in spec.outputs.items()), (spec.dlq_topic, "dead letters")]:
            writer = f"pipeline {spec.name!r} ({field})"
            if topic in writers:
                problems.append(
                    f"pipeline {spec.name!r}: topic {topic!r} is written by {writers[topic]} and {writer}; "
                    "give each pipeline its own output topics"
                )
            else:
                writers[topic] = writer
    if problems:
        raise SpecError(None, problems)
    return [spec for _, spec in loaded]


def resolve_operator(spec: PipelineSpec | str) -> Callable[..., Any]:
    """Import what ``operator.use`` names (``'package.module:Attr'``) and check its ``params`` fit it."""
    label, use, params = (
        ("<spec>", spec, {})
        if isinstance(spec, str)
        else (f"pipeline {spec.name!r}", spec.operator.use, spec.operator.params)
    )
    if use is None:
        raise SpecError(label, ["operator.use is not set; name the operator as 'package.module:Attr'"])
    if not re.fullmatch(OPERATOR_PATTERN, use):
        raise SpecError(label, [f"operator.use must be 'package.module:Attr' (got {_show(use)})"])
    module_name, attr_path = use.split(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if module_name == missing or module_name.startswith(f"{missing}."):
            problem = (
                f"operator.use {use!r}: module {module_name!r} not found (check the spelling and that it is installed)"
            )
        else:
            problem = f"operator.use {use!r}: importing {module_name!r} needs {missing!r}, which is not installed"
        raise SpecError(label, [problem]) from None
    except Exception as exc:
        raise SpecError(
            label, [f"operator.use {use!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"]
        ) from exc
    where = module_name
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            names = [n for n in dir(target) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(label, [f"operator.use {use!r}: {where!r} has no attribute {attr!r}{hint}"])
        target = getattr(target, attr)
        where = f"{where}:{attr}" if where == module_name else f"{where}.{attr}"
    if not callable(target):
        raise SpecError(label, [f"operator.use {use!r} is a {type(target).__name__}, not a class or factory"])
    _check_params(label, use, target, params)
    return typing.cast(Callable[..., Any], target)


def _check_params(label: str, use: str, target: Callable[..., Any], params: Mapping[str, Any]) -> None:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    accepted = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted):
        return
    names = [p.name for p in accepted if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    problems = []
    for key in params:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"accepted: {', '.join(names) or 'none'}"
            problems.append(f"operator.params.{key} is not a parameter of {use!r} ({hint})")
    if problems:
        raise SpecError(label, problems)


def spec_json_schema() -> dict[str, Any]:
    """The JSON schema of a pipeline spec, for editors (e.g. a ``# yaml-language-server: $schema=`` comment)."""
    schema = PipelineSpec.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "Eddy pipeline spec",
    }
