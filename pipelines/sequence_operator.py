"""``mode: sequence``: next-interaction forecasts per user from a temporal point process trained on the stream.

Each user's recent interactions (times and kinds, the newest ``sequence.history`` of them) are one event sequence.
They live in the state store, one entry per user (:class:`~pipelines.keyed.KeyedEntries`), written with each
checkpoint so that they always match the offsets it covers. For each interaction, in order:

1. the forecast made at the user's previous interaction is scored against it (kind accuracy with the drift
   monitor on its errors, and the RMSE of the forecast time in seconds);
2. the interaction joins the user's sequence and the learner forecasts the next one (``next-event/v1`` on the
   primary output, keyed by user);
3. every ``sequence.train_every_events`` interactions, the learner trains on the sequences of the users seen since
   the last training (``fit_period``): one period of the streaming protocol. Training happens inline, at a
   position in the stream fixed by the counts, so a replay or a restart from a checkpoint learns exactly the same.

The learner (``operator.use``) is anything with ``predict_next(times, types)`` → an object with ``time``, ``type``
and ``type_probs``, ``fit_period(sequences, epochs=...)`` and ``state_dict``/``load_state_dict``, built with
``n_types = len(sequence.kinds)`` plus ``operator.params`` (e.g. :class:`learners.tpp.ContinualTPP`). Times given to
it start at 0 at the oldest kept event of the sequence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from connectors.messages import Interaction, Message, NextEventPrediction, encode
from pipelines.keyed import KeyedEntries
from pipelines.records import BatchResult, Output, Record, RecordRejected, Rejection
from pipelines.scoring import Scoreboard
from pipelines.spec import PipelineSpec, SequenceSpec, resolve_operator


@dataclass(frozen=True)
class UserSequence:
    """A user's kept events (epoch seconds, type indices) and the forecast made at the last of them."""

    ts: tuple[float, ...] = ()
    types: tuple[int, ...] = ()
    forecast: tuple[float, int] | None = None

    def to_bytes(self) -> bytes:
        """The state-store entry."""
        return json.dumps({"ts": self.ts, "types": self.types, "forecast": self.forecast}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserSequence:
        """An entry read back (an empty sequence for a user never seen)."""
        if raw is None:
            return cls()
        data = json.loads(raw)
        forecast = data["forecast"]
        return cls(tuple(data["ts"]), tuple(data["types"]), (forecast[0], forecast[1]) if forecast else None)

    def appended(self, ts: float, kind: int, keep: int) -> UserSequence:
        """This sequence with one more event, trimmed to the newest ``keep`` (the forecast is dropped)."""
        return UserSequence((*self.ts, ts)[-keep:], (*self.types, kind)[-keep:], None)


@dataclass(frozen=True)
class Window:
    """One user's sequence as the learner takes it: times from 0 at its first event, and types."""

    times: np.ndarray
    types: np.ndarray
    t_end: float

    @classmethod
    def of(cls, sequence: UserSequence) -> Window:
        """The learner's view of ``sequence`` (which is not empty)."""
        times = np.asarray(sequence.ts, dtype=np.float64) - sequence.ts[0]
        return cls(times, np.asarray(sequence.types, dtype=np.int64), float(times[-1]))


@dataclass
class SequenceOperator:
    """Hosts a temporal point process over each user's interaction sequence (module docstring)."""

    spec: PipelineSpec
    settings: SequenceSpec
    learner: Any
    scoreboard: Scoreboard
    entries: KeyedEntries = field(default_factory=KeyedEntries)
    squared_time_error: float = 0.0
    scored: int = 0
    learned: int = 0
    trainings: int = 0
    since_training: int = 0
    seen: set[str] = field(default_factory=set)
    version: str | None = None

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> SequenceOperator:
        """The learner ``operator.use`` names, sized for ``sequence.kinds``."""
        settings = spec.sequence or SequenceSpec()
        factory: Callable[..., Any] = resolve_operator(spec)
        learner = factory(n_types=len(settings.kinds), **spec.operator.params)
        return cls(spec, settings, learner, Scoreboard.from_spec(spec))

    def validate(self, message: Message) -> None:
        """Interactions of the configured kinds only (their order per user is checked in :meth:`process`)."""
        if not isinstance(message, Interaction):
            raise RecordRejected("wrong_schema", f"mode sequence takes interaction/v1 (got {message.schema_name})")
        if message.kind not in self.settings.kinds:
            raise RecordRejected(
                "unknown_kind",
                f"kind {message.kind!r} is not an event type of this pipeline ({', '.join(self.settings.kinds)}); "
                "add it to sequence.kinds",
            )

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Score, extend and forecast each user's sequence in order; train when a period is complete."""
        self.entries.prefetch(_user(record) for record in records)
        result = BatchResult()
        for record in records:
            message = record.message
            assert isinstance(message, Interaction)
            user = _user(record)
            kept = UserSequence.from_bytes(self.entries.get(user))
            if kept.ts and message.ts < kept.ts[-1]:
                detail = f"user {user!r}: ts {message.ts} is before their previous interaction at {kept.ts[-1]}"
                result.rejected.append(Rejection(record.source, "out_of_order", detail))
                continue
            kind = self.settings.kinds.index(message.kind)
            extended = kept.appended(message.ts, kind, self.settings.history)
            try:
                forecast = self.learner.predict_next(*_relative(extended))
            except Exception as exc:  # a sequence the learner cannot take must not stop the worker
                result.rejected.append(Rejection(record.source, "operator_error", f"{type(exc).__name__}: {exc}"))
                continue
            if kept.forecast is not None:
                self._score(kept.forecast, message.ts, kind)
            next_ts = extended.ts[0] + float(forecast.time)
            self.entries.put(user, UserSequence(extended.ts, extended.types, (next_ts, int(forecast.type))).to_bytes())
            result.outputs.append(self._output(record, user, next_ts, forecast))
            self.learned += 1
            self.since_training += 1
            self.seen.add(user)
            if self.since_training >= self.settings.train_every_events:
                self._train()
        return result

    def _score(self, forecast: tuple[float, int], ts: float, kind: int) -> None:
        expected_ts, expected_kind = forecast
        names = self.settings.kinds
        self.scoreboard.update(names[kind], names[expected_kind], None)
        self.squared_time_error += (ts - expected_ts) ** 2
        self.scored += 1

    def _output(self, record: Record, user: str, next_ts: float, forecast: Any) -> Output:
        message = record.message
        assert isinstance(message, Interaction)
        probs = {kind: float(p) for kind, p in zip(self.settings.kinds, forecast.type_probs, strict=True)}
        prediction = NextEventPrediction(
            pipeline=self.spec.name,
            user=user,
            ts=message.ts,
            source_topic=record.source.topic,
            source_partition=record.source.partition,
            source_offset=record.source.offset,
            next_ts=next_ts,
            next_kind=self.settings.kinds[int(forecast.type)],
            kind_probs=probs,
            model_version=self.version,
        )
        return Output("predictions", user.encode(), encode(prediction), record.source.timestamp_ms)

    def _train(self) -> None:
        """One period: fit on the sequences of the users seen since the last training (two events at least)."""
        sequences = [UserSequence.from_bytes(self.entries.get(user)) for user in sorted(self.seen)]
        windows = [Window.of(s) for s in sequences if len(s.ts) >= 2]
        if windows:
            self.learner.fit_period(windows, epochs=self.settings.epochs)
            self.trainings += 1
        self.seen.clear()
        self.since_training = 0

    def published_model(self) -> Any:
        """What a registry version holds: the learner."""
        return self.learner

    def state(self) -> Any:
        """The learner's state_dict, the scores and the training position (per-user sequences are entries)."""
        return {
            "learner": self.learner.state_dict(),
            "scoreboard": self.scoreboard,
            "squared_time_error": self.squared_time_error,
            "scored": self.scored,
            "learned": self.learned,
            "trainings": self.trainings,
            "since_training": self.since_training,
            "seen": sorted(self.seen),
        }

    def load_state(self, state: Any) -> None:
        """Resume from a checkpoint."""
        self.learner.load_state_dict(state["learner"])
        self.scoreboard = state["scoreboard"]
        self.squared_time_error = state["squared_time_error"]
        self.scored = state["scored"]
        self.learned = state["learned"]
        self.trainings = state["trainings"]
        self.since_training = state["since_training"]
        self.seen = set(state["seen"])

    def scores(self) -> dict[str, float]:
        """Kind accuracy (and the other monitor metrics), the forecast time's RMSE in seconds, and trainings."""
        rmse = math.sqrt(self.squared_time_error / self.scored) if self.scored else 0.0
        return {**self.scoreboard.values(), "next_time_rmse_s": rmse, "trainings": float(self.trainings)}


def _user(record: Record) -> str:
    message = record.message
    assert isinstance(message, Interaction)
    return message.user


def _relative(sequence: UserSequence) -> tuple[np.ndarray, np.ndarray]:
    window = Window.of(sequence)
    return window.times, window.types
