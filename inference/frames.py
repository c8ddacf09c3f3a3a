"""``FrameOperator``: camera frames to embeddings, near-duplicates skipped, one batched encoder step across cameras.

A batch holds frames of many cameras (uint8 ``[B, H, W, C]``, as ``Frame.to_numpy()`` gives them). Per camera, the
operator keeps, in preallocated tensors of ``max_cameras`` rows (a *slot* per camera):

- the :class:`~inference.frame_encoder.StreamingConvEncoder`'s cached activations (:class:`ConvState`);
- the :class:`~inference.similarity_filter.SimilarityFilter`'s reference frame and skip counter;
- the camera's last embedding and the sequence number of the frame it came from.

For each batch it runs the filter on every frame, then **one** ``encoder.step`` over the frames that pass, all
cameras together. A skipped frame costs no encoder work: its output is the camera's last embedding, marked
``skipped``, with ``source_seq`` the frame that embedding came from. The encoder's temporal window therefore runs
over the frames a camera *processed*; skipped frames are near-copies of the last processed one.

A batch may hold several frames of one camera: they go in order, in *rounds* (the first frame of each camera, then
the second...), one batched step per round. Outputs do not depend on how frames are batched: the filter's draws
are a hash of (seed, camera, seq), and each camera's frames are processed in the order given.

When more than ``max_cameras`` cameras are live, a new camera takes the slot of the least recently seen one (counted
in :attr:`FrameOperator.evictions`); a camera evicted and back later starts cold, as a new stream. Memory per camera
(:attr:`FrameOperator.bytes_per_camera`), with the default encoder and 64x64 RGB frames: 3,584 bytes of cached
activations, 12,297 bytes of filter state (the reference frame), 264 bytes of last embedding and seq: about 16 KB.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from inference.frame_encoder import ConvState, StreamingConvEncoder
from inference.similarity_filter import PIXEL_CENTRE, SimilarityFilter, frame_draws


@dataclass(frozen=True)
class FrameEmbeddings:
    """The operator's answer for a batch, in the batch's order, on the operator's device.

    ``embeddings`` ``[B, embedding_dim]``; ``skipped`` ``[B]`` bool, true where the filter skipped the frame and
    the embedding is the camera's last one; ``source_seqs`` ``[B]`` int64, the frame each embedding was computed
    from (the frame's own seq unless skipped).
    """

    embeddings: torch.Tensor
    skipped: torch.Tensor
    source_seqs: torch.Tensor


class FrameOperator:
    """Per-camera frame embeddings with a streaming convolutional encoder and a stochastic similarity filter.

    Parameters
    ----------
    encoder
        The encoder; the operator runs where its parameters are (CPU or CUDA) and keeps its state there.
    frame_shape
        ``(height, width, channels)`` of every frame; ``channels`` must be the encoder's ``in_channels``.
    max_cameras
        Slots of per-camera state; more live cameras than this evict the least recently seen.
    threshold
        The similarity filter's ``η`` (StreamDiffusion: 0.98); ``None`` encodes every frame (no filter).
    max_skips
        Most frames the filter skips in a row per camera.
    seed
        Seed of the filter's draws.

    Examples
    --------
    >>> encoder = StreamingConvEncoder(width=8, embedding_dim=4, dilations=(1, 2))
    >>> operator = FrameOperator(encoder, frame_shape=(16, 16, 3), max_cameras=4)
    >>> still = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    >>> first = operator.process(["cam0", "cam1"], [0, 0], torch.stack([still, still]))
    >>> again = operator.process(["cam0", "cam1"], [1, 1], torch.stack([still, 255 - still]))  # cam1 changed
    >>> again.skipped.tolist(), again.source_seqs.tolist()
    ([True, False], [0, 1])
    >>> torch.equal(again.embeddings[0], first.embeddings[0])
    True
    """

    def __init__(
        self,
        encoder: StreamingConvEncoder,
        frame_shape: tuple[int, int, int],
        *,
        max_cameras: int = 1024,
        threshold: float | None = 0.98,
        max_skips: int = 10,
        seed: int = 0,
    ) -> None:
        if len(frame_shape) != 3 or frame_shape[2] != encoder.in_channels:
            raise ValueError(
                f"FrameOperator: frame_shape must be (height, width, channels) with channels = the encoder's "
                f"in_channels {encoder.in_channels} (got {frame_shape})"
            )
        if max_cameras < 1:
            raise ValueError(f"FrameOperator: max_cameras must be >= 1 (got {max_cameras})")
        weight = encoder.head.weight
        self.encoder = encoder
        self.frame_shape = tuple(frame_shape)
        self.max_cameras = max_cameras
        self.seed = seed
        self.device = weight.device
        self.state: ConvState = encoder.new_state(max_cameras)
        self.filter = (
            None
            if threshold is None
            else SimilarityFilter(max_cameras, self.frame_shape, threshold, max_skips, device=self.device)
        )
        self.last_embedding = torch.zeros(max_cameras, weight.shape[0], device=self.device, dtype=weight.dtype)
        self.last_seq = torch.full((max_cameras,), -1, dtype=torch.int64, device=self.device)
        self.evictions = 0
        self._slots: OrderedDict[str, int] = OrderedDict()  # camera -> slot, least recently seen first

    @property
    def bytes_per_camera(self) -> int:
        """Bytes of state per camera slot: cached activations, filter state, last embedding and seq."""
        filter_bytes = 0 if self.filter is None else self.filter.bytes_per_slot
        last = self.last_embedding[0].numel() * self.last_embedding.element_size() + self.last_seq.element_size()
        return self.state.bytes_per_slot + filter_bytes + last

    def process(self, cameras: Sequence[str], seqs: Sequence[int], frames: torch.Tensor) -> FrameEmbeddings:
        """Embeddings of a batch of frames: ``cameras[i]``'s frame number ``seqs[i]`` is ``frames[i]`` (uint8
        ``[B, *frame_shape]``); a camera's frames must come in the order it took them."""
        if frames.dim() != 4 or tuple(frames.shape[1:]) != self.frame_shape or frames.dtype != torch.uint8:
            raise ValueError(
                f"FrameOperator takes uint8 frames [B, {', '.join(map(str, self.frame_shape))}] "
                f"(got {frames.dtype} {tuple(frames.shape)}); stack Frame.to_numpy() arrays with torch.from_numpy"
            )
        if not len(cameras) == len(seqs) == frames.shape[0]:
            raise ValueError(
                f"FrameOperator needs one camera and one seq per frame (got {len(cameras)} cameras, {len(seqs)} seqs, "
                f"{frames.shape[0]} frames)"
            )
        rounds = self._rounds(cameras)
        frames = frames.to(self.device)
        batch = frames.shape[0]
        out = FrameEmbeddings(
            torch.empty(batch, self.last_embedding.shape[1], device=self.device, dtype=self.last_embedding.dtype),
            torch.empty(batch, dtype=torch.bool, device=self.device),
            torch.empty(batch, dtype=torch.int64, device=self.device),
        )
        with torch.no_grad():
            for positions in rounds:
                self._process_round(positions, cameras, seqs, frames, out)
        return out

    def _rounds(self, cameras: Sequence[str]) -> list[list[int]]:
        """Batch positions split so that each round holds at most one frame per camera, in order."""
        seen: dict[str, int] = {}
        rounds: list[list[int]] = []
        for position, camera in enumerate(cameras):
            occurrence = seen.get(camera, 0)
            seen[camera] = occurrence + 1
            if occurrence == len(rounds):
                rounds.append([])
            rounds[occurrence].append(position)
        if len(seen) > self.max_cameras:
            raise ValueError(
                f"the batch has frames of {len(seen)} cameras but the operator holds max_cameras={self.max_cameras}; "
                "raise max_cameras or send smaller batches"
            )
        return rounds

    def _process_round(
        self,
        positions: list[int],
        cameras: Sequence[str],
        seqs: Sequence[int],
        frames: torch.Tensor,
        out: FrameEmbeddings,
    ) -> None:
        names = [cameras[p] for p in positions]
        numbers = [seqs[p] for p in positions]
        slots = torch.tensor([self._slot(name) for name in names], device=self.device)
        # the usual batch, one frame per camera, is one round over the whole batch in order: no gather then
        index: torch.Tensor | slice = (
            slice(None) if len(positions) == frames.shape[0] else torch.tensor(positions, device=self.device)
        )
        round_frames = frames[index]
        if self.filter is None:
            skip = torch.zeros(len(positions), dtype=torch.bool, device=self.device)
        else:
            skip = self.filter(slots, round_frames, frame_draws(self.seed, names, numbers))
        kept = (~skip).nonzero().squeeze(1)
        if kept.numel():
            kept_slots, kept_frames = slots, round_frames
            kept_seqs = torch.tensor(numbers, device=self.device)
            if kept.numel() < len(positions):
                kept_slots, kept_frames, kept_seqs = slots[kept], round_frames[kept], kept_seqs[kept]
            pixels = kept_frames.permute(0, 3, 1, 2).to(self.last_embedding.dtype) / PIXEL_CENTRE - 1.0
            self.last_embedding[kept_slots] = self.encoder.step(pixels, self.state, kept_slots)
            self.last_seq[kept_slots] = kept_seqs
        out.embeddings[index] = self.last_embedding[slots]
        out.skipped[index] = skip
        out.source_seqs[index] = self.last_seq[slots]

    def _slot(self, camera: str) -> int:
        """The camera's slot, marked most recently seen; a new camera takes a free slot or the least recently seen
        camera's (reset)."""
        slot = self._slots.get(camera)
        if slot is not None:
            self._slots.move_to_end(camera)
            return slot
        if len(self._slots) < self.max_cameras:
            slot = len(self._slots)
        else:
            _, slot = self._slots.popitem(last=False)
            self.evictions += 1
            evicted = torch.tensor([slot], device=self.device)
            self.state.reset(evicted)
            if self.filter is not None:
                self.filter.reset(evicted)
            self.last_embedding[slot] = 0.0
            self.last_seq[slot] = -1
        self._slots[camera] = slot
        return slot
