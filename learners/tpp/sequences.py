"""Marked event sequences as the TPP learners take them: the structural type, input checks and padded batches.

A sequence is an object with ``times`` (non-decreasing, >= 0, measured from the sequence's start at 0), ``types``
(ints in ``[0, n_types)``) and ``t_end`` (the end of the observation window, >= the last time). Any object with
these attributes will do (``connectors.sources.hawkes.EventSequence`` is one); the learners never import a source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

__all__ = [
    "EventBatch",
    "EventSequenceLike",
    "ValidSequence",
    "pad_sequences",
    "validate_sequence",
    "validate_sequences",
]


class EventSequenceLike(Protocol):
    """What a learner reads from a sequence: event times, event types and the end of the observation window."""

    @property
    def times(self) -> np.ndarray: ...

    @property
    def types(self) -> np.ndarray: ...

    @property
    def t_end(self) -> float: ...


@dataclass(frozen=True)
class ValidSequence:
    """A sequence that passed :func:`validate_sequence`: float64 times, int64 types, a float end."""

    times: np.ndarray
    types: np.ndarray
    t_end: float

    def __len__(self) -> int:
        return len(self.times)


def validate_sequence(
    times: Any, types: Any, t_end: Any, n_types: int, where: str, end_name: str = "t_end"
) -> ValidSequence:
    """Check one sequence and return it as arrays; ``where`` names the caller and the sequence in messages.

    Times must be finite, >= 0 and non-decreasing (ties are allowed: a zero-length gap adds nothing to the
    integral); types ints in ``[0, n_types)``; ``t_end`` finite and >= the last time, or ``None`` for a history
    that ends at its last event (at 0 when empty). ``end_name`` is what messages call ``t_end``.
    """
    try:
        t = np.asarray(times, dtype=np.float64)
        k_raw = np.asarray(types)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: times and types must be numeric arrays (got {times!r}, {types!r})") from exc
    if t.ndim != 1 or k_raw.ndim != 1 or len(t) != len(k_raw):
        raise ValueError(
            f"{where}: times and types must be 1-D arrays of one length (got shapes {t.shape} and {k_raw.shape}); "
            "pass one sequence's events, one entry per event"
        )
    if len(k_raw) and not np.issubdtype(k_raw.dtype, np.integer):
        raise ValueError(f"{where}: types must be integers (got dtype {k_raw.dtype}); map event kinds to 0..K-1")
    k = k_raw.astype(np.int64)
    if not np.isfinite(t).all():
        raise ValueError(f"{where}: times must be finite (got {t[~np.isfinite(t)][:3].tolist()} among them)")
    if len(t) and t[0] < 0.0:
        raise ValueError(
            f"{where}: times must be >= 0 (got {float(t[0])!r}); measure times from the sequence's start, which is 0"
        )
    decreasing = np.flatnonzero(np.diff(t) < 0.0)
    if len(decreasing):
        i = int(decreasing[0])
        raise ValueError(
            f"{where}: times must be non-decreasing (got {float(t[i])!r} then {float(t[i + 1])!r} at positions "
            f"{i}, {i + 1}); sort the events by time"
        )
    bad = np.flatnonzero((k < 0) | (k >= n_types))
    if len(bad):
        raise ValueError(
            f"{where}: types must be in [0, {n_types}) (got {int(k[bad[0]])} at position {int(bad[0])}); "
            f"the model was built with n_types={n_types}"
        )
    last = float(t[-1]) if len(t) else 0.0
    try:
        end = last if t_end is None else float(t_end)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {end_name} must be a number (got {t_end!r})") from exc
    if not math.isfinite(end) or end < last:
        raise ValueError(
            f"{where}: {end_name} must be finite and >= the last event time {last!r} (got {t_end!r}); it is the "
            "end of the window the events were observed in"
        )
    return ValidSequence(t, k, end)


def validate_sequences(sequences: Sequence[EventSequenceLike], n_types: int, where: str) -> list[ValidSequence]:
    """:func:`validate_sequence` over a non-empty collection of sequence-like objects."""
    if isinstance(sequences, str | bytes) or not isinstance(sequences, Sequence) or not sequences:
        raise ValueError(
            f"{where}: expected a non-empty list of sequences with .times, .types and .t_end "
            f"(got {type(sequences).__name__} {sequences!r:.80})"
        )
    checked = []
    for index, seq in enumerate(sequences):
        missing = [name for name in ("times", "types", "t_end") if not hasattr(seq, name)]
        if missing:
            raise ValueError(
                f"{where}: sequence {index} has no {', '.join(missing)} (got {type(seq).__name__}); pass objects "
                "with .times, .types and .t_end such as connectors.sources.hawkes.EventSequence"
            )
        checked.append(validate_sequence(seq.times, seq.types, seq.t_end, n_types, f"{where}: sequence {index}"))
    return checked


@dataclass(frozen=True)
class EventBatch:
    """Sequences padded to one length, each led by a beginning-of-sequence (BOS) event at time 0.

    Position 0 is BOS (type ``n_types``), positions ``1..count`` the events, later positions padding (``valid`` is
    False there; their times and types are arbitrary and never reach a valid output). Gap ``i`` is
    ``(times[i], times[i+1]]`` for ``i < count`` and the tail ``(times[count], t_end]`` for ``i == count``.
    """

    times: torch.Tensor  # (B, N + 1) float32
    types: torch.Tensor  # (B, N + 1) int64
    valid: torch.Tensor  # (B, N + 1) bool
    counts: torch.Tensor  # (B,) int64, events per sequence (BOS not counted)
    t_end: torch.Tensor  # (B,) float32

    @property
    def n_positions(self) -> int:
        """``N + 1``: the padded length with BOS."""
        return int(self.times.shape[1])


def pad_sequences(sequences: Sequence[ValidSequence], n_types: int) -> EventBatch:
    """Pad checked sequences into an :class:`EventBatch` (padding repeats ``t_end`` and uses the BOS type)."""
    counts = [len(seq) for seq in sequences]
    width = max(counts) + 1
    times = np.empty((len(sequences), width), dtype=np.float32)
    types = np.full((len(sequences), width), n_types, dtype=np.int64)
    for row, seq in enumerate(sequences):
        times[row] = seq.t_end
        times[row, 0] = 0.0
        times[row, 1 : len(seq) + 1] = seq.times
        types[row, 1 : len(seq) + 1] = seq.types
    count_tensor = torch.tensor(counts, dtype=torch.int64)
    return EventBatch(
        times=torch.from_numpy(times),
        types=torch.from_numpy(types),
        valid=torch.arange(width)[None, :] <= count_tensor[:, None],
        counts=count_tensor,
        t_end=torch.tensor([seq.t_end for seq in sequences], dtype=torch.float32),
    )
