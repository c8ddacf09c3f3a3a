"""Message schemas for everything that crosses a topic, and their wire forms (DESIGN.md §3).

Every message is a pydantic v2 model with a versioned schema name (``event/v1``). Records travel as compact UTF-8
JSON that carries a ``"schema"`` field; frames travel in a compact binary form: ``b"EDF1"``, a 4-byte big-endian
header length, a small JSON header (schema, stream, seq, ts, dtype, shape), then the raw array bytes.

:func:`decode` is on the hot path of every event: one ``json.loads`` and one ``model_validate``. It raises
:class:`DecodeError` with a low-cardinality ``reason`` (a metric label) and a human ``detail``.

>>> raw = encode(Event(key="u1", ts=1.0, features={"x": 0.5}, label=True))
>>> raw
b'{"schema":"event/v1","key":"u1","ts":1.0,"features":{"x":0.5},"label":true}'
>>> decode(raw, "event/v1").features
{'x': 0.5}
>>> try:
...     decode(b'{"features": {"x": NaN}}', "event/v1")
... except DecodeError as exc:
...     print(exc.reason)
non_finite
"""

from __future__ import annotations

import json
import math
import struct
import time
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Scalar = float | int | str | bool
FRAME_MAGIC = b"EDF1"
DECODE_REASONS = ("oversized", "invalid_json", "wrong_schema", "validation", "non_finite", "bad_frame")
DEFAULT_MAX_BYTES = 1_048_576


class DecodeError(ValueError):
    """A record that cannot become a message: ``reason`` is one of :data:`DECODE_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class UnknownSchemaError(ValueError):
    """A schema name that no message class has."""


def _now() -> float:
    return time.time()


def _non_finite_path(value: Any, path: str) -> str | None:
    """The dotted path of the first NaN/inf inside ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite_path(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _non_finite_path(item, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None


class Message(BaseModel):
    """Base of every message: strict about unknown fields and non-finite numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    schema_name: ClassVar[str] = ""

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, dict | list | tuple) and _non_finite_path(value, "") is not None:
            raise ValueError("contains NaN or infinity; send finite numbers")
        return value


class Event(Message):
    """A generic feature record with an optional label (what online learners eat)."""

    schema_name: ClassVar[str] = "event/v1"
    key: str | None = None
    ts: float = Field(default_factory=_now)
    features: dict[str, Scalar]
    label: Scalar | None = None


class Observation(Message):
    """An RL environment step as the env runner publishes it."""

    schema_name: ClassVar[str] = "observation/v1"
    env: str
    step: int
    episode: int = 0
    obs: list[float]
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    ts: float = Field(default_factory=_now)


class Action(Message):
    """An agent's action for one environment step."""

    schema_name: ClassVar[str] = "action/v1"
    env: str
    step: int
    action: int | list[float]
    ts: float = Field(default_factory=_now)


class Reward(Message):
    """A reward arriving separately from its observation (delayed feedback)."""

    schema_name: ClassVar[str] = "reward/v1"
    env: str
    step: int
    reward: float
    ts: float = Field(default_factory=_now)


class Interaction(Message):
    """One live-platform log line: a user's action on a streamer's room."""

    schema_name: ClassVar[str] = "interaction/v1"
    user: str
    streamer: str
    room: str | None = None
    ts: float = Field(default_factory=_now)
    kind: Literal["impression", "click", "like", "comment", "gift", "follow", "leave"]
    value: float = 0.0
    context: dict[str, Scalar] = Field(default_factory=dict)


class Frame(Message):
    """A video frame (or any array) of one stream; travels in the binary form."""

    schema_name: ClassVar[str] = "frame/v1"
    stream: str
    seq: int
    ts: float = Field(default_factory=_now)
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @classmethod
    def from_numpy(cls, stream: str, seq: int, array: np.ndarray, ts: float | None = None) -> Frame:
        """A frame holding ``array``'s bytes (C order)."""
        contiguous = np.ascontiguousarray(array)
        return cls(
            stream=stream,
            seq=seq,
            ts=_now() if ts is None else ts,
            dtype=contiguous.dtype.str,
            shape=tuple(contiguous.shape),
            data=contiguous.tobytes(),
        )

    def to_numpy(self) -> np.ndarray:
        """The array, read-only, without a copy."""
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype)).reshape(self.shape)


class Prediction(Message):
    """An operator's answer for one input record, with where that record came from."""

    schema_name: ClassVar[str] = "prediction/v1"
    pipeline: str
    key: str | None = None
    ts: float = Field(default_factory=_now)
    source_topic: str
    source_partition: int
    source_offset: int
    prediction: Scalar | None = None
    proba: dict[str, float] | None = None
    label: Scalar | None = None
    model_version: str | None = None


class Allocation(Message):
    """Traffic shares per candidate (live-stream allocation)."""

    schema_name: ClassVar[str] = "allocation/v1"
    key: str | None = None
    ts: float = Field(default_factory=_now)
    allocations: dict[str, float]


class ModelUpdate(Message):
    """A model version announced on ``eddy.models`` (published, promoted or rolled back)."""

    schema_name: ClassVar[str] = "model-update/v1"
    model: str
    version: str
    alias: str | None = None
    uri: str
    ts: float = Field(default_factory=_now)


class DeadLetter(Message):
    """A record a pipeline could not use, with the reason and enough to find and replay it."""

    schema_name: ClassVar[str] = "dead-letter/v1"
    pipeline: str
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    raw_b64: str
    ts: float = Field(default_factory=_now)


SCHEMAS: dict[str, type[Message]] = {
    cls.schema_name: cls
    for cls in (Event, Observation, Action, Reward, Interaction, Frame, Prediction, Allocation, ModelUpdate, DeadLetter)
}


def schema_for(name: str) -> type[Message]:
    """The message class of a schema name such as ``event/v1``."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise UnknownSchemaError(f"unknown schema {name!r}; use one of: {', '.join(SCHEMAS)}") from None


def encode(message: Message) -> bytes:
    """The wire form: binary for frames, compact JSON with a ``schema`` field for everything else."""
    if isinstance(message, Frame):
        header = json.dumps(
            {
                "schema": Frame.schema_name,
                "stream": message.stream,
                "seq": message.seq,
                "ts": message.ts,
                "dtype": message.dtype,
                "shape": list(message.shape),
            },
            separators=(",", ":"),
        ).encode()
        return FRAME_MAGIC + struct.pack(">I", len(header)) + header + message.data
    body = {"schema": message.schema_name, **message.model_dump(mode="json")}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _validation_detail(exc: ValidationError) -> tuple[str, str]:
    problems = []
    reason = "validation"
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "record"
        if "finite" in error["msg"] or "NaN" in error["msg"] or "infinity" in error["msg"]:
            reason = "non_finite"
        problems.append(f"field {where!r}: {error['msg']} (got {error.get('input')!r:.60})")
    return reason, "; ".join(problems)


def _decode_frame(raw: bytes) -> Frame:
    try:
        (length,) = struct.unpack(">I", raw[4:8])
        header = json.loads(raw[8 : 8 + length])
        header.pop("schema", None)
        frame = Frame.model_validate({**header, "data": raw[8 + length :]})
        expected = int(np.prod(frame.shape, dtype=np.int64)) * np.dtype(frame.dtype).itemsize
    except (struct.error, ValueError, TypeError, AttributeError) as exc:
        raise DecodeError("bad_frame", f"frame header is unreadable ({exc}); write frames with encode(Frame)") from None
    if expected != len(frame.data):
        raise DecodeError(
            "bad_frame",
            f"frame has {len(frame.data)} data bytes but dtype {frame.dtype} and shape {frame.shape} need {expected}",
        )
    return frame


def decode(raw: bytes, schema: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Message:
    """Parse and validate one record as ``schema``; raises :class:`DecodeError` saying what was wrong."""
    cls = schema_for(schema)
    if len(raw) > max_bytes:
        raise DecodeError(
            "oversized",
            f"record is {len(raw):,} bytes, above the limit of {max_bytes:,} (raise limits.max_message_bytes)",
        )
    if cls is Frame:
        if not raw.startswith(FRAME_MAGIC):
            raise DecodeError("bad_frame", "record does not start with b'EDF1'; write frames with encode(Frame)")
        return _decode_frame(raw)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DecodeError("invalid_json", f"record is not JSON ({exc}); send one JSON object per message") from None
    if not isinstance(body, dict):
        raise DecodeError("invalid_json", f"record is JSON {type(body).__name__}, not an object")
    seen = body.pop("schema", schema)
    if seen != schema:
        raise DecodeError("wrong_schema", f"record says schema {seen!r}, this topic carries {schema!r}")
    found = _non_finite_path(body, "")
    if found is not None:
        raise DecodeError(
            "non_finite", f"field {found!r} is NaN or infinite; send finite numbers (drop or impute missing values)"
        )
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        reason, detail = _validation_detail(exc)
        raise DecodeError(reason, detail) from None
