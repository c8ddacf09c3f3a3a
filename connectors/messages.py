"""Message schemas for everything that crosses a topic, and their wire forms (DESIGN.md §3).

Every message is a pydantic v2 model with a versioned schema name (``Event.schema_name == "event/v1"``), unknown
fields are rejected and every number must be finite (NaN and infinity are refused, also inside feature dicts).

Wire forms:

* records travel as compact UTF-8 JSON whose first field is ``"schema"``;
* frames travel as ``b"EDF1"``, a 4-byte big-endian header length, a small JSON header (schema, stream, seq, ts,
  dtype, shape), then the raw C-order array bytes.

:func:`decode` is on the hot path of every event. A record in our own encoding (or plain JSON without a ``"schema"``
field) is parsed and validated in one ``model_validate_json`` call; anything that fails, or that names its schema
in another way, goes through the careful path (``json.loads`` then ``model_validate``) which also classifies the
failure. :class:`DecodeError` carries a low-cardinality ``reason`` (a metric label, one of :data:`DECODE_REASONS`)
and a human ``detail``.

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
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, get_args

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

Scalar = float | int | str | bool
"""A feature or label value: JSON's scalar types (``None`` is not a feature value: drop missing features)."""

DecodeReason = Literal["oversized", "invalid_json", "wrong_schema", "validation", "non_finite", "bad_frame"]
DECODE_REASONS: tuple[DecodeReason, ...] = get_args(DecodeReason)
"""Every :attr:`DecodeError.reason`; a closed set so it can label metrics."""

DEFAULT_MAX_BYTES = 1_048_576
FRAME_MAGIC = b"EDF1"
FRAME_DTYPE_KINDS = "biufc"
"""Numpy dtype kinds a frame may hold: bool, signed/unsigned integers, floats, complex."""

_HEADER_LENGTH = struct.Struct(">I")
_MAX_PROBLEMS = 3
_FINITE_HINT = "send finite numbers (drop or impute missing values)"
_SHOWN_CHARS = 60


class DecodeError(ValueError):
    """A record that cannot become a message.

    ``reason`` is one of :data:`DECODE_REASONS` (use it as a metric label); ``detail`` says what was wrong, the value
    seen and how to fix it (put it in logs and dead letters). Construction only stores the two strings.
    """

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class UnknownSchemaError(ValueError):
    """A schema name no message class has (a configuration error, not a bad record)."""


class Message(BaseModel):
    """Base of every message: a versioned ``schema_name``, no unknown fields, only finite numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, ser_json_inf_nan="constants")
    schema_name: ClassVar[str] = ""


class Event(Message):
    """A generic feature record with an optional label: what online learners eat."""

    schema_name: ClassVar[str] = "event/v1"
    key: str | None = None
    ts: float = Field(default_factory=time.time, description="Event time, epoch seconds.")
    features: dict[str, Scalar]
    label: Scalar | None = None


class Observation(Message):
    """One RL environment step as the env runner publishes it."""

    schema_name: ClassVar[str] = "observation/v1"
    env: str
    step: int
    episode: int = 0
    obs: list[float]
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    ts: float = Field(default_factory=time.time)


class Action(Message):
    """An agent's action for one environment step: a discrete index or a continuous vector."""

    schema_name: ClassVar[str] = "action/v1"
    env: str
    step: int
    action: int | list[float]
    ts: float = Field(default_factory=time.time)


class Reward(Message):
    """A reward arriving separately from its observation (delayed feedback)."""

    schema_name: ClassVar[str] = "reward/v1"
    env: str
    step: int
    reward: float
    ts: float = Field(default_factory=time.time)


class Interaction(Message):
    """One live-platform log line: a user's action on a streamer's room."""

    schema_name: ClassVar[str] = "interaction/v1"
    user: str
    streamer: str
    room: str | None = None
    ts: float = Field(default_factory=time.time)
    kind: Literal["impression", "click", "like", "comment", "gift", "follow", "leave"]
    value: float = 0.0
    context: dict[str, Scalar] = Field(default_factory=dict)


class Frame(Message):
    """A video frame (or any numeric array) of one stream; travels in the binary form, not JSON.

    ``dtype`` is normalised to numpy's explicit form (``"float32"`` becomes ``"<f4"``) so the byte order travels
    with the data; ``data`` is the C-order array bytes and must match ``shape`` and ``dtype``.

    >>> frame = Frame.from_numpy("cam0", 7, np.arange(6, dtype=np.uint8).reshape(2, 3), ts=1.0)
    >>> frame.dtype, frame.shape
    ('|u1', (2, 3))
    >>> decode(encode(frame), "frame/v1").to_numpy().tolist()
    [[0, 1, 2], [3, 4, 5]]
    """

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
    schema_name: ClassVar[str] = "frame/v1"
    stream: str
    seq: int
    ts: float = Field(default_factory=time.time)
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @field_validator("dtype")
    @classmethod
    def _numeric_dtype(cls, value: str) -> str:
        try:
            dtype = np.dtype(value)
        except (TypeError, ValueError):
            dtype = None
        if dtype is None or dtype.kind not in FRAME_DTYPE_KINDS or dtype.fields is not None:
            raise ValueError(f"must be a numeric numpy dtype such as 'uint8' or '<f4' (got {value!r})")
        return dtype.str

    @field_validator("shape")
    @classmethod
    def _non_negative_shape(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(dim < 0 for dim in value):
            raise ValueError(f"dimensions must be >= 0 (got {value})")
        return value

    @model_validator(mode="after")
    def _data_matches_shape(self) -> Frame:
        expected = math.prod(self.shape) * np.dtype(self.dtype).itemsize
        if len(self.data) != expected:
            raise ValueError(
                f"data has {len(self.data)} bytes but dtype {self.dtype} and shape {self.shape} need {expected}; "
                "build frames with Frame.from_numpy"
            )
        return self

    @classmethod
    def from_numpy(cls, stream: str, seq: int, array: npt.NDArray[Any], ts: float | None = None) -> Frame:
        """A frame holding a copy of ``array``'s values in C order (any memory layout is accepted)."""
        return cls(
            stream=stream,
            seq=seq,
            ts=time.time() if ts is None else ts,
            dtype=array.dtype.str,
            shape=array.shape,
            data=array.tobytes(order="C"),
        )

    def to_numpy(self) -> npt.NDArray[Any]:
        """The array as a read-only view of ``data`` (no copy); ``.copy()`` it to write."""
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype)).reshape(self.shape)


class FrameEmbedding(Message):
    """A frame operator's embedding of one camera frame, with where that frame came from (for joins and replays).

    A similarity filter skips near-duplicate frames: then ``skipped`` is true and ``embedding`` is the one computed
    for the camera's earlier frame ``source_seq`` (the last one the encoder ran on); otherwise ``source_seq == seq``.

    >>> out = FrameEmbedding(pipeline="cams", stream="cam0", seq=8, ts=1.0, source_topic="video.frames",
    ...                      source_partition=0, source_offset=41, embedding=[0.5, -1.0], skipped=True, source_seq=6)
    >>> decode(encode(out), "frame-embedding/v1").source_seq
    6
    """

    schema_name: ClassVar[str] = "frame-embedding/v1"
    pipeline: str
    stream: str
    seq: int
    ts: float = Field(description="Event time of the frame answered (so replays reproduce it).")
    source_topic: str
    source_partition: int
    source_offset: int
    embedding: list[float] = Field(min_length=1)
    skipped: bool
    source_seq: int = Field(description="The frame whose embedding this is: seq itself unless skipped.")
    model_version: str | None = None

    @model_validator(mode="after")
    def _source_matches_skipped(self) -> FrameEmbedding:
        if self.skipped and self.source_seq >= self.seq:
            raise ValueError(
                f"a skipped frame carries an earlier frame's embedding, so source_seq must be < seq "
                f"(got source_seq {self.source_seq}, seq {self.seq})"
            )
        if not self.skipped and self.source_seq != self.seq:
            raise ValueError(
                f"a frame that was not skipped is its own source, so source_seq must equal seq "
                f"(got source_seq {self.source_seq}, seq {self.seq}); set skipped=True if it reuses frame "
                f"{self.source_seq}'s embedding"
            )
        return self


class Prediction(Message):
    """An operator's answer for one input record, with where that record came from (for joins and replays)."""

    schema_name: ClassVar[str] = "prediction/v1"
    pipeline: str
    key: str | None = None
    ts: float = Field(
        default_factory=time.time, description="Event time of the input record answered (so replays reproduce it)."
    )
    source_topic: str
    source_partition: int
    source_offset: int
    prediction: Scalar | None = None
    proba: dict[str, float] | None = None
    label: Scalar | None = None
    model_version: str | None = None


class NextEventPrediction(Message):
    """A sequence pipeline's forecast of one user's next interaction, made when one of theirs arrived."""

    schema_name: ClassVar[str] = "next-event/v1"
    pipeline: str
    user: str
    ts: float = Field(description="Event time of the interaction answered (so replays reproduce it).")
    source_topic: str
    source_partition: int
    source_offset: int
    next_ts: float = Field(description="Expected time of the user's next interaction.")
    next_kind: str = Field(description="Most likely kind of that interaction.")
    kind_probs: dict[str, float] = Field(description="Probability of each kind for that interaction.")
    model_version: str | None = None


class AllocationOutcome(BaseModel):
    """What followed one allocation decision until the session's next decision (or its end), as the feed saw it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    request: str = Field(min_length=1, description="The request whose decision this is the outcome of.")
    inserted: bool = Field(
        description="The action the feed applied: the answer's, or not inserted when the answer came too late."
    )
    clicked: bool = Field(description="The user clicked the inserted live card.")
    live_seconds: float = Field(ge=0.0, description="Seconds watched in the live room after the click.")
    video_seconds: float = Field(ge=0.0, description="Seconds of short videos until the next decision or the exit.")
    exited: bool = Field(description="The session ended after this step.")


class FeedRequest(Message):
    """A feed request to the allocation pipeline (``live.requests``), keyed by user: insert the top live room or not?

    It also carries the outcome of the user's previous decision in the session, because the feed server knows it
    when the user comes back for the next page; a session that ends sends one last request with ``streamer`` None,
    which asks nothing and only reports the last outcome. ``fatigue`` in ``[0, 1]`` grows with the allocations made
    so far in the session; ``live`` the streamers live now; ``streamer`` the top candidate; ``ctr`` its click
    probability before fatigue.

    >>> decode(b'{"request": "r1", "user": 3, "session": 0, "group": 1, "fatigue": 0.0, "live": [2, 5], '
    ...        b'"streamer": 5, "ctr": 0.2}', "feed-request/v1").streamer
    5
    """

    schema_name: ClassVar[str] = "feed-request/v1"
    request: str = Field(min_length=1, description="Request id, unique; the allocation answering it repeats it.")
    user: int = Field(ge=0)
    session: int = Field(ge=0)
    group: int = Field(ge=0, description="The user's activity group.")
    ts: float = Field(default_factory=time.time)
    fatigue: float = Field(0.0, ge=0.0, le=1.0)
    live: list[int] = Field(default_factory=list, description="Streamers live now.")
    streamer: int | None = Field(None, ge=0, description="The top live candidate; None when the session ended.")
    ctr: float = Field(0.0, ge=0.0, le=1.0, description="The candidate's click probability before fatigue.")
    outcome: AllocationOutcome | None = Field(None, description="The outcome of the previous decision, if any.")

    @model_validator(mode="after")
    def _candidate_is_live(self) -> FeedRequest:
        if self.streamer is not None and self.streamer not in self.live:
            raise ValueError(
                f"the candidate streamer {self.streamer} must be one of the live streamers {self.live[:10]}; send "
                "the top live candidate, or streamer None at a session's end"
            )
        if self.streamer is None and self.outcome is None:
            raise ValueError("a request without a candidate streamer must carry the outcome of the session's last step")
        return self


class Allocation(Message):
    """Traffic shares per candidate (live-stream allocation).

    The allocation pipeline answers each :class:`FeedRequest` with one: ``allocations`` gives the top candidate a
    share of 1 when it is inserted and 0 when not, ``request`` repeats the request id and ``propensity`` is the
    probability the policy gave the action taken (what off-policy evaluation of the logs needs).
    """

    schema_name: ClassVar[str] = "allocation/v1"
    key: str | None = None
    ts: float = Field(default_factory=time.time)
    allocations: dict[str, float]
    request: str | None = None
    inserted: bool | None = None
    propensity: float | None = Field(None, gt=0.0, le=1.0)
    model_version: str | None = None


class ModelUpdate(Message):
    """A model version announced on ``eddy.models`` (published, promoted or rolled back)."""

    schema_name: ClassVar[str] = "model-update/v1"
    model: str
    version: str
    alias: str | None = None
    uri: str
    ts: float = Field(default_factory=time.time)


class DeadLetter(Message):
    """A record a pipeline could not use: the reason, and enough to find and replay it (raw bytes in base64)."""

    schema_name: ClassVar[str] = "dead-letter/v1"
    pipeline: str
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    raw_b64: str
    ts: float = Field(default_factory=time.time)


class Room(Message):
    """A live room starting or ending, as ``live.rooms`` carries it (one KuaiLive ``room.csv`` row makes two).

    Only rooms live at a request can be recommended, so consumers keep the live set from these events. A start does
    not say when the room will end (a replay would leak the future); the end arrives as its own event.

    >>> decode(b'{"room": "7", "streamer": "3", "ts": 5.0, "kind": "start", "category": "shop"}', "room/v1").kind
    'start'
    """

    schema_name: ClassVar[str] = "room/v1"
    room: str
    streamer: str
    ts: float = Field(default_factory=time.time)
    kind: Literal["start", "end"]
    category: str | None = None
    context: dict[str, Scalar] = Field(default_factory=dict)


class Recommendation(Message):
    """A recommend pipeline's top-k streamers for one user, made when one of their interactions arrived.

    ``items`` are streamer ids, best first, each with its score in ``scores`` (same length; a dot product, higher is
    better); only streamers live at ``ts`` are among them.

    >>> Recommendation(pipeline="p", user="7", ts=1.0, source_topic="t", source_partition=0, source_offset=3,
    ...                items=["4", "9"], scores=[0.5, 0.25], candidates=5).items
    ['4', '9']
    """

    schema_name: ClassVar[str] = "recommendation/v1"
    pipeline: str
    user: str
    ts: float = Field(description="Event time of the interaction answered (so replays reproduce it).")
    source_topic: str
    source_partition: int
    source_offset: int
    items: list[str] = Field(description="Recommended streamer ids, best first.")
    scores: list[float] = Field(description="The score of each item, in the same order.")
    candidates: int = Field(0, ge=0, description="Live streamers the model could score at ts.")
    model_version: str | None = None

    @model_validator(mode="after")
    def _aligned(self) -> Recommendation:
        if len(self.items) != len(self.scores):
            raise ValueError(
                f"items and scores must have the same length (got {len(self.items)} items and {len(self.scores)} "
                "scores)"
            )
        return self


SCHEMAS: dict[str, type[Message]] = {
    cls.schema_name: cls
    for cls in (
        Event,
        Observation,
        Action,
        Reward,
        Interaction,
        Frame,
        FrameEmbedding,
        Prediction,
        NextEventPrediction,
        FeedRequest,
        Allocation,
        ModelUpdate,
        DeadLetter,
        Room,
        Recommendation,
    )
}
"""Every message class by its schema name."""


def schema_for(name: str) -> type[Message]:
    """The message class of a schema name such as ``event/v1``; raises :class:`UnknownSchemaError`."""
    cls = SCHEMAS.get(name)
    if cls is None:
        raise UnknownSchemaError(f"unknown schema {name!r}; use one of: {', '.join(SCHEMAS)}")
    return cls


class _NonFiniteLiteral(ValueError):
    """Raised by the careful parser at a ``NaN``/``Infinity``/``-Infinity`` literal (Python's json accepts them)."""


def _refuse_constant(literal: str) -> Any:
    raise _NonFiniteLiteral(literal)


_careful_json = json.JSONDecoder(parse_constant=_refuse_constant).decode


class _Codec(NamedTuple):
    """What decode and encode precompute per schema."""

    cls: type[Message]
    prefix: bytes  # how our encoding of this schema starts: b'{"schema":"event/v1",'
    validate_json: Callable[[bytes], Any]
    validate_python: Callable[[Any], Any]


def _codec(cls: type[Message]) -> _Codec:
    if not cls.schema_name:
        raise ValueError(f"{cls.__name__} has no schema_name; encode a concrete message such as Event")
    prefix = b'{"schema":' + json.dumps(cls.schema_name).encode() + b","
    validator = cls.__pydantic_validator__
    return _Codec(cls, prefix, validator.validate_json, validator.validate_python)


_CODECS: dict[str, _Codec] = {name: _codec(cls) for name, cls in SCHEMAS.items()}
_ENCODE_PREFIX: dict[type[Message], bytes] = {codec.cls: codec.prefix for codec in _CODECS.values()}
_SCHEMA_KEY = b'"schema"'


def encode(message: Message) -> bytes:
    """The wire form of a message: binary for :class:`Frame`, compact UTF-8 JSON led by ``"schema"`` otherwise.

    Raises ``ValueError`` when a message was mutated after validation to hold NaN or infinity.
    """
    if isinstance(message, Frame):
        return _encode_frame(message)
    cls = type(message)
    prefix = _ENCODE_PREFIX.get(cls) or _codec(cls).prefix
    body: bytes = cls.__pydantic_serializer__.to_json(message)
    if (b"NaN" in body or b"Infinity" in body) and _has_non_finite(body):
        raise ValueError(f"{cls.schema_name} message holds NaN or infinity; only finite numbers can be encoded")
    return prefix + body[1:] if len(body) > 2 else prefix[:-1] + b"}"


def _has_non_finite(body: bytes) -> bool:
    """Whether ``body`` has a NaN/Infinity literal (not just those letters inside a string)."""
    try:
        _careful_json(body.decode())
    except _NonFiniteLiteral:
        return True
    return False


def _encode_frame(frame: Frame) -> bytes:
    header = {
        "schema": Frame.schema_name,
        "stream": frame.stream,
        "seq": frame.seq,
        "ts": frame.ts,
        "dtype": frame.dtype,
        "shape": list(frame.shape),
    }
    encoded = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return FRAME_MAGIC + _HEADER_LENGTH.pack(len(encoded)) + encoded + frame.data


def decode(raw: bytes, schema: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Message:
    """Parse and validate one record as ``schema``.

    Raises :class:`UnknownSchemaError` for a schema name no class has, and :class:`DecodeError` for a record that
    is too large, not JSON (or not a frame), of another schema, not valid, or holding NaN/infinity. A JSON record
    without a ``"schema"`` field is read as ``schema`` (plain JSON from other tools).

    >>> decode(b'{"user": "u1", "streamer": "s9", "kind": "gift", "value": 5, "ts": 0}', "interaction/v1").value
    5.0
    """
    codec = _CODECS.get(schema) or _codec(schema_for(schema))
    if len(raw) > max_bytes:
        raise DecodeError(
            "oversized",
            f"record is {len(raw):,} bytes, above the limit of {max_bytes:,}; "
            "raise limits.max_message_bytes in the pipeline spec or send smaller records",
        )
    if codec.cls is Frame:
        return _decode_frame(raw)
    prefix = codec.prefix
    try:
        if raw.startswith(prefix) and raw[len(prefix) : len(prefix) + 1] == b'"':
            # Our own encoding: drop the schema field, which already matches, and validate in one pass.
            message: Message = codec.validate_json(b"{" + raw[len(prefix) :])
            return message
        if _SCHEMA_KEY not in raw:
            message = codec.validate_json(raw)
            return message
    except ValidationError:
        pass  # the careful path below says precisely what is wrong
    return _decode_carefully(raw, codec)


def _decode_carefully(raw: bytes, codec: _Codec) -> Message:
    """``json.loads`` then ``model_validate``, classifying every failure into a :class:`DecodeError`."""
    schema = codec.cls.schema_name
    if raw.startswith(FRAME_MAGIC):
        raise DecodeError(
            "wrong_schema", f"record is a frame (starts with {FRAME_MAGIC!r}) but this topic carries {schema!r}"
        )
    try:
        body = _careful_json(raw.decode("utf-8"))
    except _NonFiniteLiteral as exc:
        raise DecodeError("non_finite", f"record holds the JSON literal {exc}; " + _FINITE_HINT) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(
            "invalid_json", f"record is not UTF-8 JSON ({exc}; got {_shown(raw)}); send one JSON object per message"
        ) from None
    if not isinstance(body, dict):
        raise DecodeError("invalid_json", f"record is a JSON {type(body).__name__}, not an object (got {_shown(body)})")
    seen = body.pop("schema", schema)
    if seen != schema:
        raise DecodeError(
            "wrong_schema",
            f"record says schema {seen!r} but this topic carries {schema!r}; "
            "send it to a topic of its own schema or fix input.schema in the pipeline spec",
        )
    try:
        message: Message = codec.validate_python(body)
    except ValidationError as exc:
        raise _decode_error(exc, codec.cls) from None
    return message


def _decode_frame(raw: bytes) -> Frame:
    """Read the binary frame form; every structural problem is ``bad_frame``."""
    if not raw.startswith(FRAME_MAGIC):
        raise DecodeError(
            "bad_frame", f"record does not start with {FRAME_MAGIC!r} (got {_shown(raw[:8])}); write frames with encode"
        )
    if len(raw) < 8:
        raise DecodeError(
            "bad_frame", f"record is {len(raw)} bytes, too short for a frame header; write frames with encode"
        )
    (length,) = _HEADER_LENGTH.unpack_from(raw, 4)
    if 8 + length > len(raw):
        raise DecodeError("bad_frame", f"frame header length is {length:,} but only {len(raw) - 8:,} bytes follow")
    try:
        header = _careful_json(raw[8 : 8 + length].decode("utf-8"))
    except _NonFiniteLiteral as exc:
        raise DecodeError("non_finite", f"frame header holds the JSON literal {exc}; send a finite ts") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError("bad_frame", f"frame header is not UTF-8 JSON ({exc}); write frames with encode") from None
    if not isinstance(header, dict) or "data" in header:
        raise DecodeError("bad_frame", f"frame header must be a JSON object without 'data' (got {_shown(header)})")
    seen = header.pop("schema", Frame.schema_name)
    if seen != Frame.schema_name:
        raise DecodeError("wrong_schema", f"frame header says schema {seen!r} but this topic carries 'frame/v1'")
    try:
        return Frame.model_validate({**header, "data": raw[8 + length :]})
    except ValidationError as exc:
        error = _decode_error(exc, Frame)
        if error.reason == "validation":
            error.reason = "bad_frame"
        raise error from None


_UNION_TAGS = frozenset({"float", "int", "str", "bool", "list[float]"})
"""Location parts pydantic adds for the member of a union (``features.x.float``): not fields, so not shown."""


def _decode_error(exc: ValidationError, cls: type[Message]) -> DecodeError:
    """One readable line from a ValidationError: the fields, what was expected and the values seen."""
    errors = exc.errors(include_url=False)
    groups: dict[tuple[int | str, ...], list[ErrorDetails]] = {}
    for error in errors:
        groups.setdefault(tuple(part for part in error["loc"] if part not in _UNION_TAGS), []).append(error)
    for where, group in groups.items():
        for error in group:
            if error["type"] == "finite_number":
                return DecodeError(
                    "non_finite",
                    f"field {_dotted(where)!r} is {error['input']!r}; " + _FINITE_HINT,
                )
    problems = [_problem(where, group, cls) for where, group in groups.items()]
    if len(problems) > _MAX_PROBLEMS:
        problems[_MAX_PROBLEMS:] = [f"and {len(problems) - _MAX_PROBLEMS} more"]
    return DecodeError("validation", f"{cls.schema_name}: " + "; ".join(problems))


def _problem(where: tuple[int | str, ...], group: Sequence[ErrorDetails], cls: type[Message]) -> str:
    if len(group) > 1:  # one value tried against every member of a union
        tags = [str(part) for error in group for part in error["loc"] if part in _UNION_TAGS]
        expected = ", ".join(dict.fromkeys(tags))
        return f"field {_dotted(where)!r} must be one of {expected} (got {_shown(group[0]['input'])})"
    error = group[0]
    name = _dotted(error["loc"])
    if error["type"] == "missing":
        return f"field {name!r} is missing"
    if error["type"] == "extra_forbidden":
        return f"field {name!r} is not part of {cls.schema_name} (fields: {', '.join(cls.model_fields)})"
    text = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a check across fields: the input is the whole record, not worth showing
        return text
    return f"field {name!r}: {text} (got {_shown(error['input'])})"


def _dotted(loc: Sequence[int | str]) -> str:
    return ".".join(map(str, loc)) or "record"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
