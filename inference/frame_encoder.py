"""A streaming convolutional frame encoder: each step costs one frame and equals recomputing the whole window.

Each frame goes through a small 2-D convolution stack and a global average pool (its *frame features*), then through
causal temporal convolutions over the camera's recent frames: layer ``l`` is ``x <- x + relu(conv_l(x))`` with
kernel ``k`` and dilation ``d_l``, then a linear head gives the embedding. The embedding of frame ``t`` depends on
the last :attr:`StreamingConvEncoder.window` frames (the receptive field ``1 + (k - 1) * sum(d_l)``).

Streaming, consecutive windows share all but one frame, so :meth:`StreamingConvEncoder.step` caches what they share:
per camera and layer, the layer's last ``(k - 1) * d_l`` inputs (:class:`ConvState`). A step runs the 2-D stack on
the new frame only and one output column of each temporal layer: about ``window`` times less work than
:meth:`StreamingConvEncoder.forward` over the window, with the same result (to float rounding). A fresh state holds
zeros, which is what ``forward``'s causal zero padding feeds the first frames of a stream.

References
----------
Kechris, C., Dan, J., Miranda, J., Atienza, D. (2024). Don't Think It Twice: Exploit Shift Invariance for Efficient
Online Streaming Inference of CNNs (StreamiNNC). arXiv:2408.03223.
Kondratyuk, D. et al. (2021). MoViNets: Mobile Video Networks for Efficient Video Recognition (stream buffers for
causal convolutions). arXiv:2103.11511.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SPATIAL_WIDTHS = (16, 32)
"""Channels of the first two 3x3 stride-2 convolutions; the third has ``width`` channels."""


@dataclass(frozen=True)
class ConvState:
    """Per-camera cached activations of the temporal layers, in preallocated tensors.

    ``history[l]`` is ``[slots, width, (k - 1) * d_l]``: the last inputs of temporal layer ``l``, oldest first, one
    row per camera slot. Memory per camera: ``4 * width * (k - 1) * sum(d_l)`` bytes in float32.
    """

    history: tuple[torch.Tensor, ...]

    @property
    def slots(self) -> int:
        """How many cameras the state holds."""
        return int(self.history[0].shape[0])

    @property
    def bytes_per_slot(self) -> int:
        """Bytes of cached activations per camera."""
        return sum(h[0].numel() * h.element_size() for h in self.history)

    def reset(self, slots: torch.Tensor) -> None:
        """Forget the cameras in ``slots`` (their next step starts a stream, as after zero padding)."""
        for history in self.history:
            history[slots] = 0.0


class StreamingConvEncoder(nn.Module):
    """Frame embeddings from a causal temporal convolution over each camera's last ``window`` frames.

    Frames are float tensors ``[..., C, H, W]`` (the operator feeds pixels scaled to [-1, 1]); embeddings have
    ``embedding_dim`` values. ``forward`` recomputes a whole clip; ``step`` advances many cameras by one frame each
    with cached activations and gives the same embeddings.

    Parameters
    ----------
    in_channels
        Channels of a frame (3 for RGB).
    width
        Channels of the frame features and of the temporal layers.
    embedding_dim
        Size of an embedding.
    kernel_size
        Temporal kernel size ``k`` (frames per tap set).
    dilations
        One temporal layer per dilation.
    seed
        Seed of the initialisation (the global torch RNG is left as it was).

    Examples
    --------
    >>> encoder = StreamingConvEncoder(width=8, embedding_dim=4, dilations=(1, 2))
    >>> encoder.window
    7
    >>> clip = torch.rand(2, 9, 3, 16, 16) * 2 - 1  # 2 cameras, 9 frames each
    >>> state = encoder.new_state(slots=2)
    >>> with torch.no_grad():
    ...     steps = [encoder.step(clip[:, t], state, torch.tensor([0, 1])) for t in range(9)]
    ...     full = encoder(clip[:, -encoder.window :])[:, -1]  # recompute the last window
    >>> torch.allclose(steps[-1], full, atol=1e-5)
    True
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 64,
        embedding_dim: int = 64,
        kernel_size: int = 3,
        dilations: Sequence[int] = (1, 2, 4),
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("width", width),
            ("embedding_dim", embedding_dim),
            ("kernel_size", kernel_size),
        ):
            if value < 1:
                raise ValueError(f"StreamingConvEncoder: {name} must be >= 1 (got {value})")
        if not dilations or min(dilations) < 1:
            raise ValueError(f"StreamingConvEncoder: dilations must be one or more integers >= 1 (got {dilations})")
        self.in_channels = in_channels
        self.width = width
        self.spans = tuple((kernel_size - 1) * d for d in dilations)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            channels = (in_channels, *SPATIAL_WIDTHS, width)
            layers: list[nn.Module] = []
            for c_in, c_out in itertools.pairwise(channels):
                layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), nn.ReLU()]
            self.spatial = nn.Sequential(*layers)
            self.temporal = nn.ModuleList(nn.Conv1d(width, width, kernel_size, dilation=d) for d in dilations)
            self.head = nn.Linear(width, embedding_dim)
            for name, parameter in self.named_parameters():  # He init: activations keep their scale through ReLUs
                if name.startswith(("spatial.", "temporal.")):
                    if parameter.dim() > 1:
                        nn.init.kaiming_normal_(parameter, nonlinearity="relu")
                    else:
                        nn.init.zeros_(parameter)

    @property
    def window(self) -> int:
        """Frames an embedding depends on: the receptive field of the temporal layers."""
        return 1 + sum(self.spans)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` frames to ``[B, width]`` features (2-D convolutions, then the mean over the image)."""
        features: torch.Tensor = self.spatial(frames).mean(dim=(-2, -1))
        return features

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Full recompute: ``[B, T, C, H, W]`` clips to ``[B, T, embedding_dim]``, each frame's embedding from the
        frames before it in its clip (causal zero padding, as if each clip started its stream)."""
        if clips.dim() != 5:
            raise ValueError(f"forward takes clips [B, T, C, H, W] (got shape {tuple(clips.shape)})")
        batch, frames = clips.shape[:2]
        x = self.frame_features(clips.flatten(0, 1)).view(batch, frames, self.width).transpose(1, 2)
        for conv, span in zip(self.temporal, self.spans, strict=True):
            x = x + F.relu(conv(F.pad(x, (span, 0))))
        embeddings: torch.Tensor = self.head(x.transpose(1, 2))
        return embeddings

    def new_state(self, slots: int) -> ConvState:
        """Zeroed cached activations for ``slots`` cameras, on the encoder's device and dtype."""
        if slots < 1:
            raise ValueError(f"new_state: slots must be >= 1 (got {slots})")
        weight = self.head.weight
        return ConvState(
            tuple(torch.zeros(slots, self.width, span, device=weight.device, dtype=weight.dtype) for span in self.spans)
        )

    def step(self, frames: torch.Tensor, state: ConvState, slots: torch.Tensor) -> torch.Tensor:
        """One new frame per camera: ``[B, C, H, W]`` frames of the cameras in ``slots`` (``[B]``, distinct) to
        ``[B, embedding_dim]`` embeddings; updates those cameras' rows of ``state`` in place."""
        if frames.dim() != 4 or slots.shape != frames.shape[:1]:
            raise ValueError(
                f"step takes frames [B, C, H, W] and one slot per frame (got frames {tuple(frames.shape)}, "
                f"slots {tuple(slots.shape)})"
            )
        if slots.unique().numel() != slots.numel():
            raise ValueError(
                f"step advances each camera by one frame: slots must be distinct (got {slots.tolist()}); "
                "step again for a camera's next frame"
            )
        x = self.frame_features(frames)
        for conv, history in zip(self.temporal, state.history, strict=True):
            taps = torch.cat([history[slots], x[:, :, None]], dim=2)  # [B, width, span + 1]: past inputs, then now
            history[slots] = taps[:, :, 1:]
            x = x + F.relu(conv(taps)[:, :, 0])
        embeddings: torch.Tensor = self.head(x)
        return embeddings
