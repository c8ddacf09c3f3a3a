"""``mode: frames``: per-camera frame embeddings, near-duplicate frames skipped, one encoder step across cameras.

Hosts :class:`~inference.frames.FrameOperator` on ``frame/v1`` records (camera = ``Frame.stream``, frame number =
``Frame.seq``): a similarity filter in front of a streaming convolutional encoder
(:class:`~inference.frame_encoder.StreamingConvEncoder`, whose cached activations give the embeddings a full
recompute over the camera's last frames would). Each micro-batch is **one** ``FrameOperator.process`` call over the
frames of every camera in it (split only if it holds more than ``frames.max_cameras`` cameras), and each frame gets
one ``frame-embedding/v1`` on the primary output ``embeddings``, keyed by camera. A frame the filter skipped carries
the camera's last embedding, ``skipped: true`` and the ``source_seq`` it was computed from. Outputs do not depend on
how frames are batched.

Dead letters: a frame whose shape is not ``(frames.height, frames.width, frames.channels)`` (``wrong_shape``) or
whose pixels are not uint8 (``wrong_dtype``), and a frame whose seq is not after the last one of its camera
(``out_of_order``: a camera's frames must come in the order it took them).

Checkpoints and restarts. A checkpoint holds the encoder's weights and the counters (frames, skipped frames,
evictions). The per-camera caches (the encoder's cached activations, the filter's reference frame and skip run, the
last embedding and seq) are **soft state**: they are not checkpointed (about 16 KB per camera at 64x64 RGB, so
megabytes per checkpoint for a thousand cameras, for state that rebuilds itself in a few frames). A restarted worker
resumes from the checkpoint's offsets with every camera cold, as at the start of its stream or after an eviction:

- its first frame after the restart passes the filter (and becomes the reference); once both runs have encoded a
  same frame, the filter decides as an uninterrupted run would (its draws are a hash of seed, camera and seq);
- the encoder sees zeros for the frames before the restart, so the camera's first ``encoder.window - 1`` frames
  encoded after it differ from an uninterrupted run's; from there on, over the same encoded frames, they are equal.

Frames after the checkpoint are answered again (at-least-once outputs, as in every mode); the order check restarts
too, each camera's first frame being accepted whatever its seq.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from connectors.messages import Frame, FrameEmbedding, Message, encode
from inference.frame_encoder import StreamingConvEncoder
from inference.frames import FrameOperator
from pipelines.records import BatchResult, Output, Record, RecordRejected, Rejection
from pipelines.spec import FramesSpec, PipelineSpec, SpecError, primary_output, resolve_operator

PIXEL_DTYPE = np.dtype(np.uint8).str  # '|u1', as Frame normalises it
OUTPUT = primary_output("frames")


@dataclass
class FramesOperator:
    """Frame embeddings per camera with a similarity filter and a streaming encoder (module docstring)."""

    spec: PipelineSpec
    settings: FramesSpec
    engine: FrameOperator
    frames: int = 0
    skipped: int = 0
    earlier_evictions: int = 0  # counted by the workers before the last restart
    last_seqs: OrderedDict[str, int] = field(default_factory=OrderedDict)

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> FramesOperator:
        """The encoder ``operator.use`` names (a StreamingConvEncoder) with ``frames.channels`` input channels and
        ``operator.params``, on ``frames.device``, behind the filter ``frames`` describes."""
        settings = spec.frames or FramesSpec()
        label = f"pipeline {spec.name!r}"
        factory = resolve_operator(spec)
        try:
            encoder = factory(in_channels=settings.channels, **spec.operator.params)
        except ValueError as exc:
            raise SpecError(label, [f"operator.params do not fit {spec.operator.use!r}: {exc}"]) from None
        if not isinstance(encoder, StreamingConvEncoder):
            raise SpecError(
                label,
                [
                    f"operator.use {spec.operator.use!r} made a {type(encoder).__name__!r}, not a "
                    "StreamingConvEncoder; mode 'frames' runs inference.frame_encoder:StreamingConvEncoder "
                    "(or a subclass): leave operator.use out for the default"
                ],
            )
        engine = FrameOperator(
            encoder.to(_device(spec.name, settings.device)).eval(),
            settings.frame_shape,
            max_cameras=settings.max_cameras,
            threshold=settings.threshold,
            max_skips=settings.max_skips,
            seed=settings.seed,
        )
        return cls(spec, settings, engine)

    def validate(self, message: Message) -> None:
        """Frames of the spec's shape with uint8 pixels only."""
        if not isinstance(message, Frame):
            raise RecordRejected("wrong_schema", f"mode frames takes frame/v1 (got {message.schema_name})")
        shape = self.settings.frame_shape
        if tuple(message.shape) != shape:
            raise RecordRejected(
                "wrong_shape",
                f"camera {message.stream!r} frame {message.seq} has shape {tuple(message.shape)}, not (height, "
                f"width, channels) = {shape}; send frames of that shape or change frames.height/width/channels",
            )
        if message.dtype != PIXEL_DTYPE:
            raise RecordRejected(
                "wrong_dtype",
                f"camera {message.stream!r} frame {message.seq} has dtype {message.dtype}, not uint8; "
                "send 8-bit pixels (0..255)",
            )

    def process(self, records: Sequence[Record]) -> BatchResult:
        """One embedding per frame in order, all cameras of the batch in one FrameOperator call."""
        result = BatchResult()
        accepted: list[Record] = []
        for record in records:
            frame = _frame(record)
            last = self.last_seqs.get(frame.stream)
            if last is not None and frame.seq <= last:
                detail = (
                    f"camera {frame.stream!r}: frame {frame.seq} is not after its previous frame {last}; "
                    "a camera's frames must come in the order it took them"
                )
                result.rejected.append(Rejection(record.source, "out_of_order", detail))
                continue
            self._remember(frame.stream, frame.seq)
            accepted.append(record)
        for chunk in self._chunks(accepted):
            try:
                result.outputs.extend(self._embed(chunk))
            except Exception as exc:  # frames the encoder cannot take must not stop the worker
                detail = f"{type(exc).__name__}: {exc}"
                result.rejected.extend(Rejection(r.source, "operator_error", detail) for r in chunk)
        return result

    def _remember(self, camera: str, seq: int) -> None:
        """Record ``camera``'s last seq, most recently seen last. Twice max_cameras are kept, so every camera the
        FrameOperator still holds is here even though it orders a batch's cameras by rounds, not by position."""
        self.last_seqs[camera] = seq
        self.last_seqs.move_to_end(camera)
        if len(self.last_seqs) > 2 * self.settings.max_cameras:
            self.last_seqs.popitem(last=False)

    def _chunks(self, records: list[Record]) -> list[list[Record]]:
        """``records`` in order, cut where a chunk would hold more cameras than the FrameOperator has slots."""
        chunks: list[list[Record]] = []
        cameras: set[str] = set()
        for record in records:
            camera = _frame(record).stream
            if not chunks or (camera not in cameras and len(cameras) == self.settings.max_cameras):
                chunks.append([])
                cameras = set()
            cameras.add(camera)
            chunks[-1].append(record)
        return chunks

    def _embed(self, records: list[Record]) -> list[Output]:
        frames = [_frame(record) for record in records]
        pixels = torch.from_numpy(np.stack([frame.to_numpy() for frame in frames]))
        answer = self.engine.process([f.stream for f in frames], [f.seq for f in frames], pixels)
        embeddings = answer.embeddings.cpu().tolist()
        skipped = answer.skipped.cpu().tolist()
        source_seqs = answer.source_seqs.cpu().tolist()
        outputs = []
        for record, frame, embedding, skip, source_seq in zip(
            records, frames, embeddings, skipped, source_seqs, strict=True
        ):
            message = FrameEmbedding(
                pipeline=self.spec.name,
                stream=frame.stream,
                seq=frame.seq,
                ts=frame.ts,
                source_topic=record.source.topic,
                source_partition=record.source.partition,
                source_offset=record.source.offset,
                embedding=embedding,
                skipped=skip,
                source_seq=source_seq,
            )
            outputs.append(Output(OUTPUT, frame.stream.encode(), encode(message), record.source.timestamp_ms))
        self.frames += len(frames)
        self.skipped += sum(skipped)
        return outputs

    def state(self) -> Any:
        """The encoder's weights (on the CPU) and the counters; per-camera caches are soft state (not saved)."""
        return {
            "encoder": {name: tensor.detach().cpu() for name, tensor in self.engine.encoder.state_dict().items()},
            "frames": self.frames,
            "skipped": self.skipped,
            "evictions": self.earlier_evictions + self.engine.evictions,
        }

    def load_state(self, state: Any) -> None:
        """Resume the encoder and the counters; every camera starts cold."""
        try:
            self.engine.encoder.load_state_dict(state["encoder"])
        except RuntimeError as exc:
            raise ValueError(
                f"pipeline {self.spec.name!r}: the checkpoint's encoder does not fit operator.params and "
                f"frames.channels as they are now ({exc}); restore the settings it was written with, or give the "
                "pipeline a new name to start afresh"
            ) from None
        self.frames = state["frames"]
        self.skipped = state["skipped"]
        self.earlier_evictions = state["evictions"] - self.engine.evictions

    def scores(self) -> dict[str, float]:
        """Frames answered, the share the filter skipped, and cameras evicted for lack of slots."""
        return {
            "frames": float(self.frames),
            "skip_rate": self.skipped / self.frames if self.frames else 0.0,
            "evictions": float(self.earlier_evictions + self.engine.evictions),
        }


def _frame(record: Record) -> Frame:
    message = record.message
    assert isinstance(message, Frame)
    return message


def _device(pipeline: str, wanted: str) -> torch.device:
    """``frames.device`` as a torch device: auto is cuda when torch sees a GPU."""
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise SpecError(
            f"pipeline {pipeline!r}",
            ["frames.device is 'cuda' but torch sees no GPU here; use device: auto (or cpu), or run on a GPU machine"],
        )
    return torch.device(wanted)
