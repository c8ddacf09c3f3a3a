"""StreamDiffusion's stochastic similarity filter over many cameras at once: skip frames that repeat the last one.

For each camera the filter keeps a *reference*: the last frame it let through. A new frame with cosine similarity
``cos`` to the reference is skipped with probability ``max(0, 1 - (1 - cos) / (1 - threshold))``: a frame with
``cos <= threshold`` always passes, and above it the chance of a skip grows linearly to certainty at ``cos = 1``.
A camera's first frame always passes, and after ``max_skips`` skips in a row the next frame passes whatever its
similarity, so a slowly drifting scene is refreshed at least every ``max_skips + 1`` frames. A frame
that passes becomes the reference; a skipped one does not (the filter compares with what was last processed).

The cosine is taken on the pixels centred at 127.5, which equals StreamDiffusion's cosine on images scaled to
[-1, 1]. The random draws come from :func:`frame_draws`: a hash of (seed, camera, sequence number), so a frame's
fate depends on the frame, not on how frames were batched, and a replay repeats it.

References
----------
Kodaira, A., Xu, C. et al. (2023). StreamDiffusion: A Pipeline-level Solution for Real-time Interactive
Generation (stochastic similarity filter). arXiv:2312.12491.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

PIXEL_CENTRE = 127.5
"""Mid-grey of uint8 pixels: the cosine is taken on ``pixels - PIXEL_CENTRE`` (images in [-1, 1], up to scale)."""

_DRAW_BITS = 24  # a float32 holds every multiple of 2**-24 in [0, 1) exactly


def frame_draws(seed: int, cameras: Sequence[str], seqs: Sequence[int]) -> torch.Tensor:
    """One uniform draw in [0, 1) per frame, from a hash of ``(seed, camera, seq)`` (float32, on the CPU).

    >>> together = frame_draws(0, ["cam0", "cam1"], [5, 5])
    >>> together.tolist() == [frame_draws(0, ["cam0"], [5]).item(), frame_draws(0, ["cam1"], [5]).item()]
    True
    """
    values = [
        int.from_bytes(hashlib.blake2b(f"{seed}|{camera}|{seq}".encode(), digest_size=8).digest()) >> (64 - _DRAW_BITS)
        for camera, seq in zip(cameras, seqs, strict=True)
    ]
    return torch.tensor(values, dtype=torch.float32) / 2**_DRAW_BITS


class SimilarityFilter:
    """Per-camera stochastic similarity filter (StreamDiffusion) in preallocated tensors of ``slots`` rows.

    Call it with a batch of frames of distinct cameras (their slots), uint8 pixels ``[B, *frame_shape]``, and one
    uniform draw per frame (:func:`frame_draws`); it returns which frames to skip and updates each camera's reference
    frame and skip counter. Memory per camera: the reference frame (``prod(frame_shape)`` bytes) plus 9 bytes.

    Parameters
    ----------
    slots
        How many cameras the filter holds.
    frame_shape
        Shape of one frame, e.g. ``(height, width, channels)``.
    threshold
        ``η``: frames with cosine similarity above it may be skipped (0.98 in StreamDiffusion).
    max_skips
        Most skips in a row per camera (10 in StreamDiffusion); 0 lets every frame through.
    device
        Where the state lives (the frames are moved there).

    Examples
    --------
    >>> sift = SimilarityFilter(slots=2, frame_shape=(4, 4))
    >>> scene = torch.randint(0, 256, (4, 4), dtype=torch.uint8)
    >>> slots, draws = torch.tensor([0]), torch.tensor([0.5])
    >>> [sift(slots, scene[None], draws).item() for _ in range(13)]  # the first passes, then 10 skips at most
    [False, True, True, True, True, True, True, True, True, True, True, False, True]
    """

    def __init__(
        self,
        slots: int,
        frame_shape: tuple[int, ...],
        threshold: float = 0.98,
        max_skips: int = 10,
        device: torch.device | str | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"SimilarityFilter: slots must be >= 1 (got {slots})")
        if not (math.isfinite(threshold) and 0.0 <= threshold < 1.0):
            raise ValueError(f"SimilarityFilter: threshold must be in [0, 1) (got {threshold}); 0.98 is the usual")
        if max_skips < 0:
            raise ValueError(f"SimilarityFilter: max_skips must be >= 0 (got {max_skips})")
        if not frame_shape or min(frame_shape) < 1:
            raise ValueError(f"SimilarityFilter: frame_shape must be one or more sizes >= 1 (got {frame_shape})")
        self.frame_shape = tuple(frame_shape)
        self.threshold = threshold
        self.max_skips = max_skips
        self.reference = torch.zeros(slots, *self.frame_shape, dtype=torch.uint8, device=device)
        self.has_reference = torch.zeros(slots, dtype=torch.bool, device=device)
        self.skips = torch.zeros(slots, dtype=torch.int64, device=device)

    @property
    def bytes_per_slot(self) -> int:
        """Bytes of state per camera."""
        state = (self.reference, self.has_reference, self.skips)
        return sum(t[0].numel() * t.element_size() for t in state)

    def skip_probability(self, slots: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``max(0, 1 - (1 - cos) / (1 - threshold))`` of each frame against its camera's reference (``[B]``, 0
        for a camera without one); changes nothing."""
        reference = self.reference[slots].flatten(1).float() - PIXEL_CENTRE
        current = frames.flatten(1).float() - PIXEL_CENTRE
        cosine = F.cosine_similarity(current, reference, dim=1, eps=1e-6)
        probability = torch.clamp(1.0 - (1.0 - cosine) / (1.0 - self.threshold), min=0.0)
        return torch.where(self.has_reference[slots], probability, torch.zeros_like(probability))

    def __call__(self, slots: torch.Tensor, frames: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Which frames to skip (``[B]`` bool): those whose draw falls below their skip probability, unless their
        camera has no reference yet or has skipped ``max_skips`` frames in a row. Updates the state in place."""
        if frames.shape[1:] != self.frame_shape or frames.dtype != torch.uint8:
            raise ValueError(
                f"SimilarityFilter takes uint8 frames [B, {', '.join(map(str, self.frame_shape))}] "
                f"(got {frames.dtype} {tuple(frames.shape)})"
            )
        if slots.shape != frames.shape[:1] or draws.shape != slots.shape:
            raise ValueError(
                f"SimilarityFilter needs one slot and one draw per frame (got {slots.numel()} slots, "
                f"{draws.numel()} draws, {frames.shape[0]} frames)"
            )
        frames = frames.to(self.reference.device)
        draws = draws.to(self.reference.device, torch.float32)
        skip = (draws < self.skip_probability(slots, frames)) & (self.skips[slots] < self.max_skips)
        self.skips[slots] = torch.where(skip, self.skips[slots] + 1, torch.zeros_like(self.skips[slots]))
        kept = slots[~skip]
        self.reference[kept] = frames[~skip]
        self.has_reference[kept] = True
        return skip

    def reset(self, slots: torch.Tensor) -> None:
        """Forget the cameras in ``slots``: their next frame passes and becomes the reference."""
        self.has_reference[slots] = False
        self.skips[slots] = 0
