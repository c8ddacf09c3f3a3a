"""FrameOperator: embeddings equal the encoder's on the frames it kept, skips follow the video's static segments, one
batched encoder step per round, outputs independent of batching, LRU slots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from connectors.sources import Video, synthetic_videos
from inference.frame_encoder import StreamingConvEncoder
from inference.frames import FrameEmbeddings, FrameOperator
from inference.similarity_filter import PIXEL_CENTRE

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SIZE = 24
ATOL = 1e-5


def encoder(device: str = "cpu") -> StreamingConvEncoder:
    return StreamingConvEncoder(width=16, embedding_dim=8, dilations=(1, 2), seed=0).to(device)


def operator(device: str = "cpu", **kwargs: Any) -> FrameOperator:
    return FrameOperator(encoder(device), (SIZE, SIZE, 3), **kwargs)


@pytest.fixture(scope="module")
def videos() -> list[Video]:
    return synthetic_videos(cameras=4, n_frames=90, seed=0, height=SIZE, width=SIZE, min_segment=6, max_segment=16)


def run(op: FrameOperator, videos: Sequence[Video], batch: int) -> FrameEmbeddings:
    """All frames in publishing order (frame t of every camera, then t + 1), ``batch`` at a time; outputs joined."""
    order = [(v, t) for t in range(len(videos[0])) for v in videos]
    parts = []
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        pixels = torch.from_numpy(np.stack([v.frames[t] for v, t in chunk]))
        parts.append(op.process([v.camera for v, _ in chunk], [t for _, t in chunk], pixels))
    return FrameEmbeddings(
        *(torch.cat([getattr(p, f) for p in parts]) for f in ("embeddings", "skipped", "source_seqs"))
    )


def per_camera(out: FrameEmbeddings, cameras: int) -> list[FrameEmbeddings]:
    """The joined outputs of :func:`run`, split by camera (rows are frame-major)."""
    return [
        FrameEmbeddings(out.embeddings[c::cameras], out.skipped[c::cameras], out.source_seqs[c::cameras])
        for c in range(cameras)
    ]


def clip(video: Video, keep: torch.Tensor) -> torch.Tensor:
    """The frames a camera processed, as the encoder's ``[1, T, C, H, W]`` input in [-1, 1]."""
    pixels = torch.from_numpy(video.frames[keep.cpu().numpy()].copy())
    return (pixels.permute(0, 3, 1, 2).float() / PIXEL_CENTRE - 1.0)[None]


@pytest.mark.parametrize("device", DEVICES)
def test_without_the_filter_embeddings_equal_the_encoder_over_each_cameras_video(
    device: str, videos: list[Video]
) -> None:
    op = operator(device, threshold=None)
    out = per_camera(run(op, videos, batch=len(videos)), len(videos))
    for video, camera in zip(videos, out, strict=True):
        assert not camera.skipped.any()
        assert camera.source_seqs.tolist() == list(range(len(video)))
        with torch.no_grad():
            expected = op.encoder(clip(video, torch.ones(len(video), dtype=torch.bool)).to(device))[0]
        torch.testing.assert_close(camera.embeddings, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_with_the_filter_skipped_frames_reuse_the_last_embedding_and_the_rest_equal_the_encoder(
    device: str, videos: list[Video]
) -> None:
    op = operator(device)
    out = per_camera(run(op, videos, batch=len(videos)), len(videos))
    for video, camera in zip(videos, out, strict=True):
        kept = ~camera.skipped
        assert kept[0] and 0 < int(camera.skipped.sum()) < len(video)
        with torch.no_grad():
            expected = op.encoder(clip(video, kept).to(device))[0]  # the encoder over the processed frames only
        torch.testing.assert_close(camera.embeddings[kept], expected, atol=ATOL, rtol=0)
        last_kept = torch.cummax(torch.where(kept, torch.arange(len(video), device=device), -1), dim=0).values
        assert torch.equal(camera.source_seqs, last_kept)
        assert torch.equal(camera.embeddings, camera.embeddings[last_kept])  # skipped: the source's embedding


def test_the_filter_skips_static_frames_and_keeps_moving_ones() -> None:
    """Against the video's ground truth: most static frames skipped (a skip run is capped at 10), no moving one."""
    videos = synthetic_videos(cameras=6, n_frames=160, seed=1, height=SIZE, width=SIZE)
    out = per_camera(run(operator(), videos, batch=6), 6)
    skipped = torch.cat([camera.skipped for camera in out]).numpy()
    static = np.concatenate([video.static for video in videos])
    assert static.mean() > 0.3
    assert skipped[static].mean() > 0.6
    assert skipped[~static].mean() < 0.01


@pytest.mark.parametrize("batch", [1, 3, 7, 4 * 90])
def test_outputs_do_not_depend_on_how_frames_are_batched(videos: list[Video], batch: int) -> None:
    reference = run(operator(), videos, batch=len(videos))
    other = run(operator(), videos, batch=batch)  # 4 * 90: one batch holding every frame of every camera
    assert torch.equal(other.skipped, reference.skipped)
    assert torch.equal(other.source_seqs, reference.source_seqs)
    torch.testing.assert_close(other.embeddings, reference.embeddings, atol=ATOL, rtol=0)


def test_one_batched_encoder_step_per_round_over_the_frames_that_pass(videos: list[Video]) -> None:
    op = operator()
    batches: list[int] = []
    op.encoder.spatial.register_forward_hook(lambda _module, inputs, _output: batches.append(inputs[0].shape[0]))
    pixels = torch.from_numpy(np.stack([v.frames[0] for v in videos]))
    op.process([v.camera for v in videos], [0] * len(videos), pixels)
    assert batches == [4]  # first frames always pass: one step for the 4 cameras
    still = videos[0].frames[0]
    op.process(["cam0", "cam0", "cam1", "cam0"], [1, 2, 1, 3], torch.from_numpy(np.stack([still, still, still, still])))
    # round 1: cam0 repeats its reference (skipped), cam1 sees another camera's scene (passes): one step of 1 frame;
    # rounds 2 and 3: cam0's frames 2 and 3, skipped: no step at all
    assert batches == [4, 1]


def test_least_recently_seen_cameras_are_evicted_and_come_back_cold() -> None:
    op = operator(max_cameras=2, threshold=None)
    scenes = torch.from_numpy(synthetic_videos(cameras=1, n_frames=6, seed=2, height=SIZE, width=SIZE)[0].frames.copy())
    fresh = operator(threshold=None).process(["x"] * 3, [0, 1, 2], scenes[:3]).embeddings
    op.process(["a", "b"], [0, 0], scenes[:2])
    op.process(["a"], [1], scenes[2:3])
    op.process(["c"], [0], scenes[3:4])  # b is the least recently seen: c takes its slot
    assert op.evictions == 1
    back = op.process(["b", "b", "b"], [1, 2, 3], scenes[:3])  # evicts a; b starts over
    assert op.evictions == 2
    torch.testing.assert_close(back.embeddings, fresh, atol=ATOL, rtol=0)


def test_memory_per_camera_adds_up() -> None:
    op = FrameOperator(StreamingConvEncoder(), (64, 64, 3))
    assert op.bytes_per_camera == 3584 + (64 * 64 * 3 + 1 + 8) + (64 * 4 + 8) == 16_145
    assert FrameOperator(StreamingConvEncoder(), (64, 64, 3), threshold=None).bytes_per_camera == 16_145 - 12_297


def test_bad_inputs_say_what_is_wrong() -> None:
    op = operator(max_cameras=2)
    good = torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"uint8 frames \[B, 24, 24, 3\] \(got torch.float32 \(1, 24, 24, 3\)\)"):
        op.process(["a"], [0], good.float())
    with pytest.raises(ValueError, match=r"one camera and one seq per frame \(got 2 cameras, 1 seqs, 1 frames\)"):
        op.process(["a", "b"], [0], good)
    with pytest.raises(ValueError, match="frames of 3 cameras but the operator holds max_cameras=2"):
        op.process(["a", "b", "c"], [0, 0, 0], good.expand(3, -1, -1, -1))
    with pytest.raises(ValueError, match=r"in_channels 3 \(got \(24, 24, 1\)\)"):
        FrameOperator(encoder(), (SIZE, SIZE, 1))
    with pytest.raises(ValueError, match=r"max_cameras must be >= 1 \(got 0\)"):
        operator(max_cameras=0)
