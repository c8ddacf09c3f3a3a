"""mode frames: per-camera frame embeddings (similarity filter + streaming encoder) on synthetic multi-camera video."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from connectors.messages import Frame
from connectors.sources import Video, frame_messages, synthetic_videos
from pipelines.operators import FramesOperator, build_operator
from pipelines.spec import SpecError, parse_spec
from pipelines.testing import PipelineHarness

pytestmark = pytest.mark.timeout(240)
Harness = Callable[..., PipelineHarness]
SIZE = 16
CAMERAS = 3
WINDOW = 7  # the encoder's receptive field with kernel 3 and dilations (1, 2): 1 + 2 * (1 + 2)
ATOL = 1e-5


@pytest.fixture(scope="module")
def videos() -> list[Video]:
    return synthetic_videos(
        cameras=CAMERAS, n_frames=60, seed=2, height=SIZE, width=SIZE, min_segment=6, max_segment=14
    )


def spec(*, frames: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "cams",
        "input": {"topics": ["cams.frames"], "schema": "frame/v1"},
        "operator": {"mode": "frames", "params": {"width": 8, "embedding_dim": 4, "dilations": [1, 2], "seed": 0}},
        "frames": {"height": SIZE, "width": SIZE, "max_cameras": 8, "device": "cpu", **(frames or {})},
        "batch": {"max": 64, "within_ms": 5},
        "checkpoint": {"every_events": 50, "every_s": 60},
        **extra,
    }


def by_camera(outputs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    cameras: dict[str, list[dict[str, Any]]] = {}
    for output in outputs:
        cameras.setdefault(output["stream"], []).append(output)
    return cameras


def assert_same(outputs: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same frames, skips and sources; embeddings equal to float rounding."""
    keys = ("stream", "seq", "skipped", "source_seq", "source_offset")
    assert [tuple(o[k] for k in keys) for o in outputs] == [tuple(e[k] for k in keys) for e in expected]
    np.testing.assert_allclose([o["embedding"] for o in outputs], [e["embedding"] for e in expected], atol=ATOL)


def test_every_frame_gets_an_embedding_static_frames_are_skipped_and_bad_frames_are_dead_letters(
    pipeline_harness: Harness, videos: list[Video]
) -> None:
    messages = list(frame_messages(videos))
    half = len(messages) // 2
    small = Frame.from_numpy("cam0", 1000, np.zeros((8, 8, 3), dtype=np.uint8), ts=0.0)
    floats = Frame.from_numpy("cam1", 1000, np.zeros((SIZE, SIZE, 3), dtype=np.float32), ts=0.0)
    harness = pipeline_harness(spec())
    harness.send([*messages[:half], small, floats, *messages[half:], messages[0]])  # messages[0] again: too late
    result = harness.run()

    embeddings = result.outputs["embeddings"]
    assert [(e["stream"], e["seq"], e["ts"]) for e in embeddings] == [(m.stream, m.seq, m.ts) for m in messages]
    assert all(e["schema"] == "frame-embedding/v1" and len(e["embedding"]) == 4 for e in embeddings)
    assert [d.reason for d in result.dead_letters] == ["wrong_shape", "wrong_dtype", "out_of_order"]
    assert "(8, 8, 3)" in result.dead_letters[0].detail and "frames.height" in result.dead_letters[0].detail

    cameras = by_camera(embeddings)
    skipped = np.concatenate([[e["skipped"] for e in cameras[v.camera]] for v in videos])
    static = np.concatenate([v.static for v in videos])
    assert static.mean() > 0.3
    assert skipped[static].mean() > 0.6  # a run of skips is capped at max_skips (10)
    assert not skipped[~static].any()  # a moving scene is never skipped
    for outputs in cameras.values():
        for output in outputs:  # a skipped frame carries the embedding of the frame its camera last encoded
            source = outputs[output["source_seq"]]
            assert not source["skipped"] and source["embedding"] == output["embedding"]
    scores = result.status.scores
    assert scores["frames"] == len(messages) and scores["skip_rate"] == pytest.approx(skipped.mean())


def test_embeddings_do_not_depend_on_the_batch_size(pipeline_harness: Harness, videos: list[Video]) -> None:
    messages = list(frame_messages(videos))
    outputs = []
    for batch in (1, 64):
        harness = pipeline_harness(spec(batch={"max": batch, "within_ms": 5}))
        harness.send(messages)
        outputs.append(harness.run().outputs["embeddings"])
    one, many = outputs
    assert len(one) == len(messages) and any(e["skipped"] for e in one)
    assert_same(many, one)


def test_a_restarted_worker_keeps_its_encoder_and_counters_and_each_camera_starts_cold(
    pipeline_harness: Harness, videos: list[Video]
) -> None:
    """The documented restart: caches are soft state. Without the filter, a camera's first WINDOW - 1 frames after
    the restart differ from an uninterrupted run's (the encoder sees zeros before them), and the rest are equal."""
    messages = list(frame_messages(videos))
    half = len(messages) // 2 + 1  # not on a checkpoint boundary, nor on a frame boundary
    unfiltered = spec(frames={"threshold": None})
    whole = pipeline_harness(unfiltered)
    whole.send(messages)
    expected = whole.run().outputs["embeddings"]

    split = pipeline_harness(unfiltered)
    split.send(messages[:half])
    first = split.run().outputs["embeddings"]
    split.restart()
    split.send(messages[half:])
    second = split.run()
    assert second.status.scores["frames"] == len(messages)  # the counters came back with the checkpoint
    assert_same(first, expected[:half])
    after = by_camera(second.outputs["embeddings"])
    expected_after = by_camera(expected[half:])
    for camera, outputs in after.items():
        cold, warm = outputs[: WINDOW - 1], outputs[WINDOW - 1 :]
        for output, reference in zip(cold, expected_after[camera], strict=False):
            assert not np.allclose(output["embedding"], reference["embedding"], atol=ATOL)
        assert_same(warm, expected_after[camera][WINDOW - 1 :])


def test_after_a_restart_each_cameras_first_frame_passes_the_filter(
    pipeline_harness: Harness, videos: list[Video]
) -> None:
    messages = list(frame_messages(videos))
    static_run = next(  # restart in a static segment of cam0, where the filter skips most frames
        t for t in range(WINDOW, len(videos[0])) if videos[0].static[t - 3 : t + 3].all()
    )
    half = static_run * CAMERAS
    harness = pipeline_harness(spec())
    harness.send(messages[:half])
    harness.run()
    harness.restart()
    harness.send(messages[half:])
    result = harness.run()
    firsts = {camera: outputs[0] for camera, outputs in by_camera(result.outputs["embeddings"]).items()}
    assert sorted(firsts) == [v.camera for v in videos]
    assert all(not first["skipped"] and first["seq"] == static_run for first in firsts.values())
    assert result.status.scores["frames"] == len(messages)


# -- the spec and the adapter -------------------------------------------------------------------------------------


def test_defaults_give_the_streaming_encoder_and_an_embeddings_output() -> None:
    parsed = parse_spec(
        {"name": "cams", "input": {"topics": ["c.frames"], "schema": "frame/v1"}, "operator": {"mode": "frames"}}
    )
    assert parsed.operator.use == "inference.frame_encoder:StreamingConvEncoder"
    assert parsed.outputs == {"embeddings": "cams.embeddings"} and parsed.primary_output == "embeddings"
    operator = build_operator(parse_spec(spec()))
    assert isinstance(operator, FramesOperator)
    assert operator.engine.encoder.in_channels == 3 and operator.engine.frame_shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"input": {"topics": ["x"], "schema": "event/v1"}},
            "mode 'frames' reads frame/v1 (got input.schema 'event/v1')",
        ),
        ({"outputs": {"predictions": "cams.p"}}, "outputs must name an 'embeddings' topic, the primary output of mode"),
        ({"frames": {"threshold": 1.0}}, "frames.threshold must be in [0, 1)"),
        ({"frames": {"max_cameras": 0}}, "frames.max_cameras must be >= 1 (got 0)"),
        ({"frames": {"height": 1024, "width": 1024}}, "raise limits.max_message_bytes above 3145728"),
        ({"operator": {"mode": "frames", "params": {"in_channels": 1}}}, "in_channels is set by mode 'frames'"),
        ({"registry": {"model": "cams"}}, "registry and monitor are not used in mode 'frames'"),
        (
            {
                "operator": {"use": "learners.tpp:ContinualTPP", "mode": "sequence"},
                "input": {"topics": ["x"], "schema": "interaction/v1"},
            },
            "frames is only used in mode 'frames' (got mode 'sequence')",
        ),
    ],
)
def test_spec_mistakes_say_what_to_change(changes: dict[str, Any], expected: str) -> None:
    data = spec()
    for key, value in changes.items():
        data[key] = {**data[key], **value} if key == "frames" else value
    with pytest.raises(SpecError) as error:
        parse_spec(data)
    assert expected in str(error.value)


def test_an_operator_that_is_not_the_streaming_encoder_is_refused() -> None:
    data = spec(operator={"use": "torch.nn:Identity", "mode": "frames"})
    with pytest.raises(SpecError, match="made a 'Identity', not a StreamingConvEncoder"):
        build_operator(parse_spec(data))
    bad_params = spec(operator={"mode": "frames", "params": {"widht": 8}})
    with pytest.raises(SpecError, match="did you mean 'width'"):
        build_operator(parse_spec(bad_params))
