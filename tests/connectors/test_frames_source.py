"""The synthetic multi-camera video: its ground truth of static frames, determinism, and the Frame messages."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from connectors.messages import Frame, decode, encode
from connectors.sources import Video, frame_messages, synthetic_videos


def runs(mask: np.ndarray) -> list[tuple[bool, int]]:
    """(value, length) of each run of equal values."""
    return [(bool(value), len(list(group))) for value, group in itertools.groupby(mask.tolist())]


@pytest.fixture(scope="module")
def noiseless() -> list[Video]:
    return synthetic_videos(cameras=3, n_frames=200, seed=5, height=40, width=56, noise=0.0)


def test_videos_have_the_asked_shape_and_are_read_only(noiseless: list[Video]) -> None:
    assert [video.camera for video in noiseless] == ["cam0", "cam1", "cam2"]
    for video in noiseless:
        assert len(video) == 200
        assert video.frames.shape == (200, 40, 56, 3) and video.frames.dtype == np.uint8
        assert video.static.shape == (200,) and video.static.dtype == np.bool_
        assert not video.frames.flags.writeable and not video.static.flags.writeable


def test_without_noise_static_frames_equal_the_previous_frame_and_moving_ones_differ(noiseless: list[Video]) -> None:
    for video in noiseless:
        unchanged = np.all(video.frames[1:] == video.frames[:-1], axis=(1, 2, 3))
        np.testing.assert_array_equal(unchanged, video.static[1:])
        assert not video.static[0]


def test_segments_alternate_moving_first_with_lengths_in_range() -> None:
    for video in synthetic_videos(cameras=4, n_frames=300, seed=1, height=16, width=16, min_segment=5, max_segment=9):
        segments = runs(~video.static)  # True runs: moving segments (frame 0 included), False runs: static ones
        assert segments[0][0] is True
        assert all(a[0] != b[0] for a, b in itertools.pairwise(segments))
        assert all(5 <= length <= 9 for _, length in segments[:-1])  # the last one is cut at n_frames
        assert 1 <= segments[-1][1] <= 9


def test_static_and_moving_frames_are_both_common() -> None:
    videos = synthetic_videos(cameras=8, n_frames=300, seed=0)
    share = np.mean([video.static.mean() for video in videos])
    assert 0.35 < share < 0.65


def test_sensor_noise_is_all_that_changes_in_static_frames() -> None:
    (video,) = synthetic_videos(cameras=1, n_frames=120, seed=2, noise=2.0)
    change = np.abs(video.frames[1:].astype(np.int16) - video.frames[:-1].astype(np.int16))
    static, moving = change[video.static[1:]], change[~video.static[1:]]
    assert static.size and moving.size
    # the difference of two N(0, 2) noises has mean |.| 2 * 2 / sqrt(pi) = 2.26 (a little less after rounding)
    assert 1.9 < static.mean() < 2.5
    assert static.max() <= 20  # 5 standard deviations of that difference plus rounding
    assert (moving.reshape(len(moving), -1).max(axis=1) > 50).all()  # a disc moved: big changes somewhere


def test_videos_are_deterministic_per_seed_and_differ_across_cameras_and_seeds() -> None:
    first = synthetic_videos(cameras=2, n_frames=30, seed=9, height=16, width=16)
    again = synthetic_videos(cameras=2, n_frames=30, seed=9, height=16, width=16)
    other = synthetic_videos(cameras=2, n_frames=30, seed=10, height=16, width=16)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.static, b.static)
    assert not np.array_equal(first[0].frames, first[1].frames)
    assert not np.array_equal(first[0].frames, other[0].frames)


def test_frame_messages_interleave_cameras_in_time_order_and_round_trip() -> None:
    long, short = synthetic_videos(cameras=2, n_frames=4, seed=3, height=8, width=12)
    short = Video(short.camera, short.frames[:2], short.static[:2])
    messages = list(frame_messages([long, short], fps=10.0, t0=100.0))
    assert [(m.stream, m.seq) for m in messages] == [
        ("cam0", 0),
        ("cam1", 0),
        ("cam0", 1),
        ("cam1", 1),
        ("cam0", 2),
        ("cam0", 3),
    ]
    assert [m.ts for m in messages if m.stream == "cam0"] == pytest.approx([100.0, 100.1, 100.2, 100.3])
    for message in messages:
        back = decode(encode(message), "frame/v1")
        assert isinstance(back, Frame) and back.shape == (8, 12, 3) and back.dtype == "|u1"
        video = long if message.stream == "cam0" else short
        np.testing.assert_array_equal(back.to_numpy(), video.frames[message.seq])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"cameras": 0}, r"cameras must be >= 1 \(got 0\)"),
        ({"height": 4}, r"height must be >= 8 \(got 4\)"),
        ({"objects": 0}, r"objects must be >= 1 \(got 0\)"),
        ({"min_segment": 6, "max_segment": 5}, r"max_segment must be >= min_segment \(got 5 < 6\)"),
        ({"noise": float("nan")}, r"noise must be finite and >= 0 \(got nan\)"),
    ],
)
def test_bad_parameters_say_what_is_wrong(changes: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"cameras": 1, "n_frames": 4, "seed": 0} | changes
    with pytest.raises(ValueError, match=match):
        synthetic_videos(**arguments)


def test_frame_messages_need_a_positive_rate() -> None:
    with pytest.raises(ValueError, match=r"fps must be finite and > 0 \(got 0.0\)"):
        next(frame_messages(synthetic_videos(cameras=1, n_frames=1, seed=0, height=8, width=8), fps=0.0))
