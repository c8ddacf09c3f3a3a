"""The stochastic similarity filter: StreamDiffusion's skip probability, the skip cap, and its hash-based draws."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from inference.similarity_filter import SimilarityFilter, frame_draws

SHAPE = (8, 8, 3)


def frames(count: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def numpy_skip_probability(current: np.ndarray, reference: np.ndarray, threshold: float) -> np.ndarray:
    a = current.reshape(len(current), -1).astype(np.float64) / 127.5 - 1  # StreamDiffusion's images in [-1, 1]
    b = reference.reshape(len(reference), -1).astype(np.float64) / 127.5 - 1
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.maximum(0.0, 1.0 - (1.0 - cos) / (1.0 - threshold))


def blends(reference: torch.Tensor, seed: int) -> torch.Tensor:
    """Frames from near-copies of each reference to about its negative (cosine from 1 to about -0.7): every skip
    chance from 1 down to 0, whatever the threshold."""
    far = (255 - reference.float() + frames(len(reference), seed).float()) / 2
    mix = torch.linspace(0.0, 1.0, len(reference))[:, None, None, None] ** 2
    return (reference * (1 - mix) + far * mix).round().to(torch.uint8)


@pytest.mark.parametrize("threshold", [0.98, 0.9, 0.0])
def test_skip_probability_is_streamdiffusions_formula(threshold: float) -> None:
    sift = SimilarityFilter(slots=64, frame_shape=SHAPE, threshold=threshold)
    slots = torch.arange(64)
    reference = frames(64, seed=1)
    sift(slots, reference, torch.zeros(64))  # first frames: references
    current = blends(reference, seed=2)
    got = sift.skip_probability(slots, current).numpy()
    expected = numpy_skip_probability(current.numpy(), reference.numpy(), threshold)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.max() > 0.9 and got.min() == 0.0  # the blends cover the whole range


def test_a_frame_is_skipped_exactly_when_its_draw_falls_below_its_probability() -> None:
    sift = SimilarityFilter(slots=64, frame_shape=SHAPE)
    slots = torch.arange(64)
    reference = frames(64, seed=3)
    assert not sift(slots, reference, torch.zeros(64)).any()  # no reference yet: everything passes
    current = blends(reference, seed=4)
    probability = sift.skip_probability(slots, current)
    draws = torch.rand(64, generator=torch.Generator().manual_seed(5))
    skipped = sift(slots, current, draws)
    torch.testing.assert_close(skipped, draws < probability)
    assert 0 < int(skipped.sum()) < 64
    # a skipped frame leaves the reference as it was, a frame that passes becomes it
    expected_reference = torch.where(skipped[:, None, None, None], reference, current)
    torch.testing.assert_close(sift.reference, expected_reference)
    torch.testing.assert_close(sift.skips, skipped.long())


@pytest.mark.parametrize("max_skips", [0, 1, 3, 10])
def test_identical_frames_are_skipped_at_most_max_skips_in_a_row(max_skips: int) -> None:
    sift = SimilarityFilter(slots=1, frame_shape=SHAPE, max_skips=max_skips)
    still, slot = frames(1, seed=6), torch.tensor([0])
    pattern = [bool(sift(slot, still, torch.tensor([0.999])).item()) for _ in range(3 * (max_skips + 1) + 1)]
    cycle = [False] + [True] * max_skips  # pass, then skip max_skips times, then the cap forces a pass
    assert pattern == cycle * 3 + [False]


def test_frames_less_similar_than_the_threshold_always_pass() -> None:
    sift = SimilarityFilter(slots=32, frame_shape=SHAPE)
    slots = torch.arange(32)
    sift(slots, frames(32, seed=7), torch.zeros(32))
    unrelated = frames(32, seed=8)
    assert sift.skip_probability(slots, unrelated).max() == 0.0
    assert not sift(slots, unrelated, torch.zeros(32)).any()


def test_reset_forgets_a_camera() -> None:
    sift = SimilarityFilter(slots=2, frame_shape=SHAPE)
    still, slot = frames(1, seed=9), torch.tensor([1])
    sift(slot, still, torch.zeros(1))
    assert sift(slot, still, torch.zeros(1)).item()
    sift.reset(slot)
    assert not sift(slot, still, torch.zeros(1)).item()  # a camera without a reference always passes
    assert sift.skips.tolist() == [0, 0]


def test_the_skip_rate_matches_the_probability_with_frame_draws() -> None:
    """Many cameras at one probability: the share skipped is binomial around it (5 standard errors)."""
    cameras = 4000
    sift = SimilarityFilter(slots=cameras, frame_shape=SHAPE)
    slots = torch.arange(cameras)
    reference = frames(1, seed=10).expand(cameras, *SHAPE)
    sift(slots, reference, torch.zeros(cameras))
    candidates = blends(reference[:64], seed=11)
    chances = sift.skip_probability(slots[:64], candidates)
    pick = int((chances - 0.5).abs().argmin())
    probability = float(chances[pick])
    assert 0.3 < probability < 0.7
    current = candidates[pick : pick + 1].expand(cameras, *SHAPE)
    skipped = sift(slots, current, frame_draws(0, [f"cam{i}" for i in range(cameras)], [1] * cameras))
    error = math.sqrt(probability * (1 - probability) / cameras)
    assert abs(skipped.float().mean().item() - probability) < 5 * error


def test_frame_draws_are_uniform_deterministic_and_independent_of_batching() -> None:
    cameras = [f"cam{i % 50}" for i in range(20_000)]
    seqs = [i // 50 for i in range(20_000)]
    draws = frame_draws(3, cameras, seqs)
    assert draws.dtype == torch.float32 and draws.shape == (20_000,)
    assert draws.min().item() >= 0.0 and draws.max().item() < 1.0
    counts = torch.histc(draws, bins=10, min=0.0, max=1.0)
    assert (counts - 2000).abs().max() < 5 * math.sqrt(2000 * 0.9)  # every decile near 10%
    torch.testing.assert_close(frame_draws(3, cameras[:7], seqs[:7]), draws[:7], rtol=0, atol=0)
    torch.testing.assert_close(frame_draws(3, cameras[7:9], seqs[7:9]), draws[7:9], rtol=0, atol=0)
    assert not torch.equal(frame_draws(4, cameras[:100], seqs[:100]), draws[:100])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 1.0}, r"threshold must be in \[0, 1\) \(got 1.0\)"),
        ({"threshold": float("nan")}, r"threshold must be in \[0, 1\) \(got nan\)"),
        ({"max_skips": -1}, r"max_skips must be >= 0 \(got -1\)"),
        ({"slots": 0}, r"slots must be >= 1 \(got 0\)"),
        ({"frame_shape": (8, 0)}, r"frame_shape must be one or more sizes >= 1 \(got \(8, 0\)\)"),
    ],
)
def test_bad_parameters_say_what_is_wrong(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimilarityFilter(**({"slots": 2, "frame_shape": SHAPE} | kwargs))


def test_bad_calls_say_what_is_wrong() -> None:
    sift = SimilarityFilter(slots=2, frame_shape=SHAPE)
    with pytest.raises(ValueError, match=r"uint8 frames \[B, 8, 8, 3\] \(got torch.float32 \(1, 8, 8, 3\)\)"):
        sift(torch.tensor([0]), torch.zeros(1, *SHAPE), torch.zeros(1))
    with pytest.raises(ValueError, match=r"one slot and one draw per frame \(got 1 slots, 2 draws, 1 frames\)"):
        sift(torch.tensor([0]), frames(1, seed=0), torch.zeros(2))
