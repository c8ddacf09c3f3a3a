"""What flows between the runtime and an operator: decoded records in, outputs and rejections out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from connectors.messages import Message

Features = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Source:
    """Where an input record came from, and its bytes (kept for dead letters and relaying)."""

    raw: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded input message and its source."""

    message: Message
    source: Source


@dataclass(frozen=True, slots=True)
class Output:
    """One message for a declared output (by its name in ``spec.outputs``)."""

    output: str
    key: bytes | None
    value: bytes
    source_timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record the operator could not process; it goes to the dead-letter topic with the reason."""

    source: Source
    reason: str
    detail: str


@dataclass
class BatchResult:
    """What one micro-batch produced: outputs in input order, and the records that failed."""

    outputs: list[Output] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class RecordRejected(ValueError):
    """A record that decodes but that this operator cannot use; it goes to the dead-letter topic."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Operator(Protocol):
    """What the runtime needs from an operator."""

    def validate(self, message: Message) -> None:
        """Raise :class:`RecordRejected` for a record this operator cannot process."""

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Handle one micro-batch: outputs in input order; a record that makes the model raise is rejected."""

    def state(self) -> Any:
        """Everything needed to resume exactly where this operator is (checkpointed with the input offsets)."""

    def load_state(self, state: Any) -> None:
        """Resume from :meth:`state`'s value."""

    def scores(self) -> dict[str, float]:
        """Current prequential metrics by name."""


@runtime_checkable
class LearnsAfterAnswering(Protocol):
    """An operator whose learning can wait until a batch's outputs are on their way: the runtime calls
    :meth:`learn_deferred` right after sending them, before the next batch and any checkpoint, so answers never
    wait for the batch's gradient steps."""

    def learn_deferred(self) -> None:
        """Do the learning that :meth:`Operator.process` left for after the batch's outputs were sent."""
