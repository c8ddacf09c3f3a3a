"""Message schemas and their wire forms: round trips, frames byte for byte, and every way a record is refused."""

from __future__ import annotations

import json
import pickle
import re
import struct
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from connectors.messages import (
    DECODE_REASONS,
    FRAME_MAGIC,
    SCHEMAS,
    Action,
    Allocation,
    AllocationOutcome,
    DeadLetter,
    DecodeError,
    Event,
    FeedRequest,
    Frame,
    FrameEmbedding,
    Interaction,
    Message,
    ModelUpdate,
    NextEventPrediction,
    Observation,
    Prediction,
    Recommendation,
    Reward,
    Room,
    UnknownSchemaError,
    decode,
    encode,
    schema_for,
)

NON_FINITE = [float("nan"), float("inf"), float("-inf")]

# One message of every schema, with values that stress types (ints vs floats vs bools, unicode, nested dicts).
EXAMPLES: list[Message] = [
    Event(key="u1", ts=1.5, features={"f": 0.25, "i": 3, "s": "ünï", "b": True, "z": 0.0}, label=1),
    Event(features={}, label=None),
    Observation(env="cartpole", step=4, obs=[0.1, -2.0, 3.5e-7, 1e20], reward=1.0, terminated=True, episode=2),
    Action(env="cartpole", step=4, action=1, ts=2.0),
    Action(env="pendulum", step=0, action=[-0.5, 0.25]),
    Reward(env="cartpole", step=4, reward=-1.25),
    Interaction(user="u1", streamer="s9", room="r3", kind="gift", value=5, context={"device": "ios", "hour": 21}),
    Interaction(user="u2", streamer="s9", kind="leave"),
    Frame.from_numpy("cam0", 3, np.arange(12, dtype=np.float32).reshape(3, 4), ts=9.0),
    FrameEmbedding(
        pipeline="cams",
        stream="cam0",
        seq=3,
        ts=9.0,
        source_topic="video.frames",
        source_partition=1,
        source_offset=17,
        embedding=[0.25, -1.5, 3e-8],
        skipped=False,
        source_seq=3,
        model_version="1",
    ),
    Prediction(
        pipeline="ctr",
        key="u1",
        source_topic="live.interactions",
        source_partition=2,
        source_offset=41,
        prediction=0.75,
        proba={"click": 0.75, "skip": 0.25},
        label=True,
        model_version="7",
    ),
    Prediction(pipeline="ctr", key=None, source_topic="t", source_partition=0, source_offset=0, prediction="gift"),
    NextEventPrediction(
        pipeline="next",
        user="u1",
        ts=100.0,
        source_topic="live.interactions",
        source_partition=0,
        source_offset=3,
        next_ts=104.5,
        next_kind="gift",
        kind_probs={"click": 0.25, "gift": 0.75},
        model_version="2",
    ),
    Recommendation(
        pipeline="recs",
        user="u1",
        ts=100.0,
        source_topic="live.interactions",
        source_partition=0,
        source_offset=3,
        items=["17", "4"],
        scores=[2.5, -0.125],
        candidates=9,
        model_version="3",
    ),
    FeedRequest(
        request="r7",
        user=3,
        session=12,
        group=1,
        ts=100.0,
        fatigue=0.25,
        live=[2, 5],
        streamer=5,
        ctr=0.125,
        outcome=AllocationOutcome(
            request="r6", inserted=True, clicked=True, live_seconds=40.5, video_seconds=12.0, exited=False
        ),
    ),
    Allocation(key="slot-1", allocations={"s1": 0.5, "s2": 0.5}),
    Allocation(
        key="3", ts=100.0, allocations={"5": 1.0}, request="r7", inserted=True, propensity=0.95, model_version="2"
    ),
    ModelUpdate(model="ctr", version="7", alias="champion", uri="runs:/abc/model"),
    DeadLetter(
        pipeline="ctr",
        reason="validation",
        detail="field 'kind' ...",
        topic="live.interactions",
        partition=1,
        offset=9,
        key_b64=None,
        raw_b64="e30=",
    ),
    Room(room="7336601", streamer="252634", ts=1748131180.878, kind="start", category="shop", context={"live_type": 1}),
]


def example_id(message: Message) -> str:
    return message.schema_name


# -- schemas and the registry ----------------------------------------------------------------------------------------


def test_every_schema_is_registered_under_a_versioned_name() -> None:
    assert {type(m) for m in EXAMPLES} == set(SCHEMAS.values())
    for name, cls in SCHEMAS.items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*/v[0-9]+", name), name
        assert cls.schema_name == name
        assert schema_for(name) is cls
    assert Event.schema_name == "event/v1"


@pytest.mark.parametrize("name", ["event", "event/v2", "Event/v1", ""])
def test_unknown_schema_names_list_the_known_ones(name: str) -> None:
    with pytest.raises(UnknownSchemaError, match="use one of: event/v1, observation/v1") as info:
        schema_for(name)
    assert isinstance(info.value, ValueError)
    assert repr(name) in str(info.value)
    with pytest.raises(UnknownSchemaError, match="interaction/v1"):
        decode(b"{}", name)


@pytest.mark.parametrize("cls", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_unknown_fields_are_refused(cls: type[Message]) -> None:
    example = next(m for m in EXAMPLES if type(m) is cls)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        cls.model_validate({**example.model_dump(), "surprise": 1})


# -- round trips -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", EXAMPLES, ids=example_id)
def test_round_trip(message: Message) -> None:
    raw = encode(message)
    back = decode(raw, message.schema_name)
    assert type(back) is type(message)
    assert back == message
    assert encode(back) == raw


JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


@pytest.mark.parametrize("message", [m for m in EXAMPLES if not isinstance(m, Frame)], ids=example_id)
def test_records_are_compact_utf8_json_carrying_their_schema(message: Message) -> None:
    raw = encode(message)
    assert raw.startswith(b'{"schema":"' + message.schema_name.encode() + b'",')
    body = json.loads(raw.decode("utf-8"))
    assert body == {"schema": message.schema_name, **message.model_dump(mode="json")}
    assert not re.search(r"\s", JSON_STRING.sub("", raw.decode("utf-8")))  # no whitespace outside strings


def test_text_travels_as_utf8_not_escapes() -> None:
    assert '"s":"ünï"'.encode() in encode(Event(features={"s": "ünï"}))


@pytest.mark.parametrize("message", [m for m in EXAMPLES if not isinstance(m, Frame)], ids=example_id)
def test_plain_and_reformatted_json_decode_like_our_own(message: Message) -> None:
    """Other tools write JSON without a schema field, or with spaces: both read the same as ours."""
    body = message.model_dump(mode="json")
    plain = json.dumps(body).encode()
    spaced = json.dumps({"schema": message.schema_name, **body}, indent=2).encode()
    last = json.dumps({**body, "schema": message.schema_name}).encode()
    for raw in (plain, spaced, last):
        assert decode(raw, message.schema_name) == message


@pytest.mark.parametrize(
    "raw",
    [
        b'{"features": {"schema": "a feature named schema"}}',
        b'{"schema":"event/v1","features":{"schema":1}}',
        b'{"schema":"event/v1","features":{},"schema":"event/v1"}',
        b' \n{"features": {"NaN": "Infinity"}}\n',
    ],
    ids=["schema-as-feature", "schema-twice-ours", "schema-key-twice", "whitespace"],
)
def test_unusual_but_valid_records_decode(raw: bytes) -> None:
    assert isinstance(decode(raw, "event/v1"), Event)


def test_scalar_types_survive_the_round_trip() -> None:
    event = decode(encode(Event(features={"f": 1.0, "i": 1, "b": True, "s": "1"}, label=False)), "event/v1")
    assert isinstance(event, Event)
    assert [type(v) for v in event.features.values()] == [float, int, bool, str]
    assert event.label is False


def test_defaults_fill_in_time_and_optional_fields() -> None:
    event = decode(b'{"features": {"x": 1}}', "event/v1")
    assert isinstance(event, Event)
    assert event.key is None and event.label is None and event.ts > 1_600_000_000


# -- frames ----------------------------------------------------------------------------------------------------------

FRAME_ARRAYS = {
    "uint8-image": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
    "float16": np.linspace(-1, 1, 10, dtype=np.float16),
    "empty": np.zeros((0, 4), dtype=np.float32),
    "zero-d": np.array(3.5, dtype=np.float64),
    "non-contiguous": np.arange(40, dtype=np.int32).reshape(5, 8)[::2, 1::3],
    "fortran-order": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
    "big-endian": np.arange(4, dtype=">f4"),
    "bool": np.array([True, False, True]),
    "complex": np.array([1 + 2j, -3j], dtype=np.complex64),
}


@pytest.mark.parametrize("array", FRAME_ARRAYS.values(), ids=FRAME_ARRAYS.keys())
def test_frames_round_trip_byte_for_byte(array: np.ndarray) -> None:
    frame = Frame.from_numpy("cam0", 12, array, ts=1700000000.123456)
    raw = encode(frame)
    assert raw.startswith(FRAME_MAGIC)
    (length,) = struct.unpack(">I", raw[4:8])
    assert json.loads(raw[8 : 8 + length]) == {
        "schema": "frame/v1",
        "stream": "cam0",
        "seq": 12,
        "ts": 1700000000.123456,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
    }
    assert raw[8 + length :] == array.tobytes(order="C")
    back = decode(raw, "frame/v1")
    assert isinstance(back, Frame)
    assert back == frame
    assert encode(back) == raw
    out = back.to_numpy()
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    assert not out.flags.writeable  # a view of the record bytes


def test_frame_dtype_names_are_normalised_and_checked() -> None:
    assert Frame(stream="s", seq=0, dtype="float32", shape=(1,), data=b"\0" * 4).dtype == np.dtype("float32").str
    for dtype in ["O", "object", "i4,f4", "not-a-dtype", "U3"]:
        with pytest.raises(ValidationError, match="numeric numpy dtype"):
            Frame(stream="s", seq=0, dtype=dtype, shape=(1,), data=b"\0" * 12)
    with pytest.raises(ValidationError, match="numeric numpy dtype"):
        Frame.from_numpy("s", 0, np.array(["a", None], dtype=object))


@pytest.mark.parametrize(
    ("shape", "data", "match"),
    [((2, 2), b"\0" * 3, "need 4"), ((-1,), b"", ">= 0"), ((2,), b"\0" * 3, "need 2")],
)
def test_frame_data_must_match_shape(shape: tuple[int, ...], data: bytes, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Frame(stream="s", seq=0, dtype="uint8", shape=shape, data=data)


def frame_record(header: Any, payload: bytes = b"", length: int | None = None) -> bytes:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return FRAME_MAGIC + struct.pack(">I", len(encoded) if length is None else length) + encoded + payload


GOOD_HEADER = {"schema": "frame/v1", "stream": "s", "seq": 1, "ts": 1.0, "dtype": "|u1", "shape": [2]}


def test_a_frame_header_without_schema_is_accepted() -> None:
    header = {k: v for k, v in GOOD_HEADER.items() if k != "schema"}
    frame = decode(frame_record(header, b"ab"), "frame/v1")
    assert isinstance(frame, Frame) and frame.data == b"ab"


# -- refusals: every DecodeError reason ------------------------------------------------------------------------------

REFUSALS: list[tuple[str, bytes, str, str]] = [
    # (schema, raw, reason, a piece of the detail)
    ("event/v1", b'{"features": {"x": 1}}' + b" " * 2000, "oversized", "2,022 bytes, above the limit of 1,000"),
    ("event/v1", b'{"features": {"x": 1}', "invalid_json", "not UTF-8 JSON"),
    ("event/v1", b"\xff\xfe{}", "invalid_json", "not UTF-8 JSON"),
    ("event/v1", '{"features": {}}'.encode("utf-16"), "invalid_json", "not UTF-8 JSON"),
    ("event/v1", b"", "invalid_json", "not UTF-8 JSON"),
    ("event/v1", b'{"schema":"event/v1",}', "invalid_json", "not UTF-8 JSON"),
    ("event/v1", b"[1, 2]", "invalid_json", "JSON list, not an object"),
    ("event/v1", b'"text"', "invalid_json", "JSON str, not an object"),
    ("event/v1", b'{"schema": "interaction/v1", "features": {}}', "wrong_schema", "says schema 'interaction/v1'"),
    ("event/v1", b'{"schema":"event/v2","features":{}}', "wrong_schema", "this topic carries 'event/v1'"),
    ("event/v1", b'{"features":{},"schema":null}', "wrong_schema", "says schema None"),
    ("event/v1", frame_record(GOOD_HEADER, b"ab"), "wrong_schema", "record is a frame"),
    ("event/v1", b'{"features": {"x": [1, 2]}}', "validation", "field 'features.x' must be one of float, int"),
    ("event/v1", b'{"features": {"x": null}}', "validation", "field 'features.x'"),
    ("event/v1", b'{"key": "k"}', "validation", "field 'features' is missing"),
    ("event/v1", b'{"features": {}, "lable": 1}', "validation", "field 'lable' is not part of event/v1 (fields: key"),
    ("event/v1", b'{"schema":"event/v1","features":{},"ts":"noon"}', "validation", "field 'ts'"),
    ("interaction/v1", b'{"user":"u","streamer":"s","kind":"poke"}', "validation", "(got 'poke')"),
    ("action/v1", b'{"env":"e","step":1,"action":"left"}', "validation", "must be one of int, list[float]"),
    ("event/v1", b'{"features": {"x": NaN}}', "non_finite", "JSON literal NaN"),
    ("event/v1", b'{"schema":"event/v1","features":{"x":Infinity}}', "non_finite", "JSON literal Infinity"),
    ("event/v1", b'{"features": {}, "key": -Infinity}', "non_finite", "JSON literal -Infinity"),
    ("event/v1", b'{"features": {"x": 1e999}}', "non_finite", "field 'features.x' is inf"),
    ("event/v1", b'{"features": {}, "label": -1e999}', "non_finite", "field 'label' is -inf"),
    ("observation/v1", b'{"env":"e","step":0,"obs":[0.5,1e400]}', "non_finite", "field 'obs.1' is inf"),
    ("action/v1", b'{"env":"e","step":0,"action":[1e999]}', "non_finite", "field 'action.0' is inf"),
    (
        "prediction/v1",
        b'{"pipeline":"p","source_topic":"t","source_partition":0,"source_offset":0,"proba":{"a":NaN}}',
        "non_finite",
        "NaN",
    ),
    ("frame/v1", b'{"stream": "s"}', "bad_frame", "does not start with b'EDF1'"),
    ("frame/v1", b"EDF1\x00", "bad_frame", "too short"),
    ("frame/v1", frame_record(GOOD_HEADER, length=999), "bad_frame", "header length is 999"),
    ("frame/v1", frame_record(b"{not json", b"ab"), "bad_frame", "not UTF-8 JSON"),
    ("frame/v1", frame_record([1, 2]), "bad_frame", "JSON object"),
    ("frame/v1", frame_record({**GOOD_HEADER, "data": "YWI="}), "bad_frame", "without 'data'"),
    ("frame/v1", frame_record(GOOD_HEADER, b"abc"), "bad_frame", "data has 3 bytes"),
    ("frame/v1", frame_record({**GOOD_HEADER, "dtype": "O"}, b"ab"), "bad_frame", "numeric numpy dtype"),
    ("frame/v1", frame_record({**GOOD_HEADER, "shape": "2"}, b"ab"), "bad_frame", "field 'shape'"),
    ("frame/v1", frame_record({**GOOD_HEADER, "schema": "image/v1"}, b"ab"), "wrong_schema", "'image/v1'"),
    ("frame/v1", frame_record({**GOOD_HEADER, "ts": float("nan")}, b"ab"), "non_finite", "NaN"),
]


@pytest.mark.parametrize(
    ("schema", "raw", "reason", "detail"), REFUSALS, ids=[f"{r[2]}-{i}" for i, r in enumerate(REFUSALS)]
)
def test_refusals_say_why(schema: str, raw: bytes, reason: str, detail: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(raw, schema, max_bytes=1000)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.reason == reason, error.detail
    assert detail in error.detail
    assert "\n" not in error.detail
    assert str(error) == f"{reason}: {error.detail}"


def test_every_reason_is_exercised() -> None:
    assert {reason for _, _, reason, _ in REFUSALS} == set(DECODE_REASONS)


def test_size_is_checked_before_anything_else() -> None:
    huge = b"\xff" * 11
    for schema in ("event/v1", "frame/v1"):
        with pytest.raises(DecodeError) as info:
            decode(huge, schema, max_bytes=10)
        assert info.value.reason == "oversized"
    assert isinstance(decode(b'{"features":{}}', "event/v1", max_bytes=15), Event)  # the limit is inclusive


def test_validation_details_stay_short_when_much_is_wrong() -> None:
    with pytest.raises(DecodeError) as info:
        decode(json.dumps({f"extra{i}": i for i in range(10)}).encode(), "event/v1")
    assert info.value.reason == "validation"
    assert info.value.detail.endswith("and 8 more")


def test_decode_errors_are_small_and_picklable() -> None:
    error = DecodeError("validation", "field 'x' is missing")
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason, again.detail, str(again)) == ("validation", "field 'x' is missing", str(error))


# -- non-finite numbers, at construction and on the way out ----------------------------------------------------------


@pytest.mark.parametrize("bad", NON_FINITE, ids=str)
@pytest.mark.parametrize(
    "build",
    [
        lambda bad: Event(features={"x": bad}),
        lambda bad: Event(features={}, label=bad),
        lambda bad: Event(features={}, ts=bad),
        lambda bad: Interaction(user="u", streamer="s", kind="click", context={"c": bad}),
        lambda bad: Interaction(user="u", streamer="s", kind="click", value=bad),
        lambda bad: Observation(env="e", step=0, obs=[0.0, bad]),
        lambda bad: Action(env="e", step=0, action=[bad]),
        lambda bad: Reward(env="e", step=0, reward=bad),
        lambda bad: Allocation(allocations={"a": bad}),
        lambda bad: Prediction(pipeline="p", source_topic="t", source_partition=0, source_offset=0, proba={"a": bad}),
        lambda bad: Frame(stream="s", seq=0, ts=bad, dtype="uint8", shape=(0,), data=b""),
    ],
    ids=["feature", "label", "ts", "context", "value", "obs", "action", "reward", "allocation", "proba", "frame-ts"],
)
def test_non_finite_numbers_are_refused_at_construction(build: Any, bad: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        build(bad)


@pytest.mark.parametrize("bad", NON_FINITE, ids=str)
def test_a_message_mutated_to_hold_nan_cannot_be_encoded(bad: float) -> None:
    event = Event(features={"x": 1.0, "NaN": "Infinity"})
    assert decode(encode(event), "event/v1") == event  # the words alone are fine
    event.features["x"] = bad
    with pytest.raises(ValueError, match="finite"):
        encode(event)


def test_the_base_message_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="no schema_name"):
        encode(Message())


# -- frame embeddings ------------------------------------------------------------------------------------------------


def frame_embedding(**changes: Any) -> FrameEmbedding:
    fields: dict[str, Any] = {
        "pipeline": "cams",
        "stream": "cam0",
        "seq": 8,
        "ts": 1.0,
        "source_topic": "video.frames",
        "source_partition": 0,
        "source_offset": 41,
        "embedding": [0.5, -1.0],
        "skipped": True,
        "source_seq": 6,
    }
    return FrameEmbedding(**(fields | changes))


def test_a_skipped_frame_embedding_round_trips_with_its_source() -> None:
    skipped = frame_embedding()
    back = decode(encode(skipped), "frame-embedding/v1")
    assert isinstance(back, FrameEmbedding)
    assert (back.skipped, back.seq, back.source_seq, back.embedding) == (True, 8, 6, [0.5, -1.0])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"skipped": True, "source_seq": 8}, r"source_seq must be < seq \(got source_seq 8, seq 8\)"),
        ({"skipped": False, "source_seq": 6}, r"source_seq must equal seq \(got source_seq 6, seq 8\); set skipped"),
        ({"embedding": []}, "at least 1 item"),
    ],
    ids=["skipped-from-itself", "not-skipped-from-another", "empty"],
)
def test_frame_embeddings_say_what_is_inconsistent(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        frame_embedding(**changes)


@pytest.mark.parametrize("bad", NON_FINITE, ids=str)
def test_frame_embeddings_refuse_non_finite_values(bad: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        frame_embedding(embedding=[0.0, bad])


def test_a_frame_embedding_record_holding_nan_is_refused_as_non_finite() -> None:
    raw = encode(frame_embedding()).replace(b"[0.5,", b"[NaN,")
    with pytest.raises(DecodeError) as info:
        decode(raw, "frame-embedding/v1")
    assert info.value.reason == "non_finite"
