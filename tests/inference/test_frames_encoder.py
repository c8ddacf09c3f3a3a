"""The streaming convolutional encoder: cached steps equal full recompute, from the first frame to far past it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from inference.frame_encoder import StreamingConvEncoder

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ATOL = 1e-5


def clips(cameras: int, frames: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Random frames in [-1, 1], ``[cameras, frames, 3, size, size]``."""
    return torch.rand(cameras, frames, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def small_encoder(seed: int = 0, device: str = "cpu", dilations: tuple[int, ...] = (1, 2, 4)) -> StreamingConvEncoder:
    return StreamingConvEncoder(width=16, embedding_dim=8, dilations=dilations, seed=seed).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("kernel_size", "dilations"), [(3, (1, 2, 4)), (2, (1,)), (4, (3, 1))])
def test_cached_steps_equal_full_recompute_over_the_window_far_past_it(
    device: str, kernel_size: int, dilations: tuple[int, ...]
) -> None:
    encoder = StreamingConvEncoder(width=16, embedding_dim=8, kernel_size=kernel_size, dilations=dilations).to(device)
    window = encoder.window
    assert window == 1 + (kernel_size - 1) * sum(dilations)
    video = clips(3, 4 * window + 5).to(device)
    state = encoder.new_state(slots=3)
    slots = torch.tensor([2, 0, 1], device=device)
    with torch.no_grad():
        from_start = encoder(video)  # every frame's embedding, recomputed from the stream's first frame
        for t in range(video.shape[1]):
            cached = encoder.step(video[:, t], state, slots)
            torch.testing.assert_close(cached, from_start[:, t], atol=ATOL, rtol=0)
            recomputed = encoder(video[:, max(0, t + 1 - window) : t + 1])[:, -1]  # the last window only
            torch.testing.assert_close(cached, recomputed, atol=ATOL, rtol=0)


def test_the_window_is_tight_its_oldest_frame_matters_and_the_one_before_does_not() -> None:
    encoder = small_encoder()
    video = clips(1, 3 * encoder.window)
    oldest = video.shape[1] - encoder.window

    def last_embedding_with(frame: int, value: float) -> torch.Tensor:
        changed = video.clone()
        changed[:, frame] = value
        with torch.no_grad():
            embedding: torch.Tensor = encoder(changed)[0, -1]
        return embedding

    assert (last_embedding_with(oldest, 1.0) - last_embedding_with(oldest, -1.0)).abs().max() > 100 * ATOL
    torch.testing.assert_close(last_embedding_with(oldest - 1, 1.0), last_embedding_with(oldest - 1, -1.0))


def test_cameras_advance_independently_in_any_order_and_subset() -> None:
    encoder = small_encoder()
    video = clips(3, 20, seed=1)
    state = encoder.new_state(slots=5)
    slot_of = [4, 1, 3]  # camera -> slot
    done = [0, 0, 0]  # frames stepped per camera
    outputs: list[list[torch.Tensor]] = [[], [], []]
    schedule = torch.Generator().manual_seed(2)
    with torch.no_grad():
        while min(done) < video.shape[1]:
            pending = [c for c in range(3) if done[c] < video.shape[1]]
            chosen = [c for c in pending if torch.rand(1, generator=schedule).item() < 0.6] or pending[:1]
            chosen = [chosen[i] for i in torch.randperm(len(chosen), generator=schedule).tolist()]
            frames = torch.stack([video[c, done[c]] for c in chosen])
            out = encoder.step(frames, state, torch.tensor([slot_of[c] for c in chosen]))
            for row, camera in enumerate(chosen):
                outputs[camera].append(out[row])
                done[camera] += 1
        expected = encoder(video)
    for camera in range(3):
        torch.testing.assert_close(torch.stack(outputs[camera]), expected[camera], atol=ATOL, rtol=0)


def test_reset_starts_a_slot_over_as_a_new_stream() -> None:
    encoder = small_encoder()
    old, new = clips(1, 12, seed=3), clips(1, 6, seed=4)
    state = encoder.new_state(slots=2)
    slot = torch.tensor([1])
    with torch.no_grad():
        for t in range(old.shape[1]):
            encoder.step(old[:, t], state, slot)
        state.reset(slot)
        after = torch.cat([encoder.step(new[:, t], state, slot) for t in range(new.shape[1])])
        torch.testing.assert_close(after, encoder(new)[0], atol=ATOL, rtol=0)


def test_state_memory_is_the_cached_inputs_of_each_temporal_layer() -> None:
    encoder = StreamingConvEncoder(width=64, kernel_size=3, dilations=(1, 2, 4))
    state = encoder.new_state(slots=7)
    assert state.slots == 7
    assert [tuple(h.shape) for h in state.history] == [(7, 64, 2), (7, 64, 4), (7, 64, 8)]
    assert state.bytes_per_slot == 4 * 64 * 2 * (1 + 2 + 4) == 3584


def test_initialisation_is_seeded_and_leaves_the_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    a, b, c = small_encoder(seed=5), small_encoder(seed=5), small_encoder(seed=6)
    assert torch.equal(torch.random.get_rng_state(), before)
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
        assert name.endswith("bias") or not torch.equal(x, z), name  # convolution biases start at zero


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, r"width must be >= 1 \(got 0\)"),
        ({"kernel_size": 0}, r"kernel_size must be >= 1 \(got 0\)"),
        ({"dilations": ()}, r"dilations must be one or more integers >= 1 \(got \(\)\)"),
        ({"dilations": (1, 0)}, r"dilations must be one or more integers >= 1 \(got \(1, 0\)\)"),
    ],
)
def test_bad_parameters_say_what_is_wrong(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StreamingConvEncoder(**kwargs)


def test_bad_calls_say_what_is_wrong() -> None:
    encoder = small_encoder()
    state = encoder.new_state(slots=2)
    frames = clips(1, 2)[0]
    with pytest.raises(ValueError, match=r"slots must be distinct \(got \[1, 1\]\)"):
        encoder.step(frames, state, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"one slot per frame \(got frames \(2, 3, 16, 16\), slots \(1,\)\)"):
        encoder.step(frames, state, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"clips \[B, T, C, H, W\] \(got shape \(2, 3, 16, 16\)\)"):
        encoder(frames)
    with pytest.raises(ValueError, match=r"slots must be >= 1 \(got 0\)"):
        encoder.new_state(0)
