"""A per-stream attention-sink + sliding-window KV cache in preallocated tensors, with LRU slot allocation.

Streams never end, so each stream keeps a fixed-size cache: the keys and values of its first ``sinks`` tokens and of
its last ``window`` tokens, one row of ``data[slots, layers, 2, heads, sinks + window, head_dim]``. Keys are stored
before the rotary embedding: when the window rolls, every token's place in the cache changes, and the attention
kernel (:mod:`kernels.sink_window_attention`) rotates each key at its current place. The window part of a row is a
ring (see :func:`kernels.sink_window_attention.cache_positions`), so appending a token writes one entry per layer.

More streams may be live than there are slots: :meth:`RollingKVCache.assign` maps stream keys to slots and, when
all slots are taken, gives the least recently used stream's slot to the new one and reports the evicted key. The
caller rebuilds a returning stream with one prefill from its token ids (:class:`~inference.sequence_recommender.\
SequenceRecommender` does); this package does no I/O, so the pipeline keeps those ids (in Redis) and hands them over.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SlotAssignment:
    """Where a stream's cache lives for this step.

    ``fresh`` is true when the stream had no slot: its row is empty and the caller rebuilds it (prefill from the
    stream's ids, if it has any). ``evicted`` is the stream whose slot it took, if any.
    """

    key: Hashable
    slot: int
    fresh: bool
    evicted: Hashable | None = None


class SlotAllocator:
    """Maps stream keys to a fixed number of slots, evicting the least recently used stream when all are taken.

    Parameters
    ----------
    slots
        Number of slots (at least 1).

    Examples
    --------
    >>> slots = SlotAllocator(2)
    >>> [a.slot for a in slots.assign(["ann", "bob"])]
    [0, 1]
    >>> slots.assign(["ann"])[0].fresh
    False
    >>> slots.assign(["cyd"])[0]  # bob was used least recently
    SlotAssignment(key='cyd', slot=1, fresh=True, evicted='bob')
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"SlotAllocator: slots must be >= 1 (got {slots})")
        self.slots = slots
        self._slot_of: OrderedDict[Hashable, int] = OrderedDict()  # least recently used first
        self._free = list(range(slots - 1, -1, -1))

    def assign(self, keys: Sequence[Hashable]) -> list[SlotAssignment]:
        """The slot of each key (distinct keys, at most ``slots`` of them), marking them most recently used."""
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"SlotAllocator: keys must be distinct (got {len(keys)} keys, {len(set(keys))} distinct); a batch "
                "holds one step per stream, so split it"
            )
        if len(keys) > self.slots:
            raise ValueError(
                f"SlotAllocator: {len(keys)} streams in one batch but only {self.slots} slots; use a batch of at most "
                f"{self.slots} streams or more slots"
            )
        present = set()
        for key in keys:  # the batch's own streams become the most recent, so none of them is evicted below
            if key in self._slot_of:
                self._slot_of.move_to_end(key)
                present.add(key)
        assignments = []
        for key in keys:
            if key in present:
                assignments.append(SlotAssignment(key, self._slot_of[key], fresh=False))
                continue
            evicted = None
            if self._free:
                slot = self._free.pop()
            else:
                evicted, slot = self._slot_of.popitem(last=False)
            self._slot_of[key] = slot
            assignments.append(SlotAssignment(key, slot, fresh=True, evicted=evicted))
        return assignments

    def __contains__(self, key: Hashable) -> bool:
        return key in self._slot_of

    def __len__(self) -> int:
        return len(self._slot_of)


class RollingKVCache:
    """Sink + window KV caches of many streams in one preallocated tensor, with LRU slot allocation.

    Parameters
    ----------
    slots
        Streams the cache holds at once.
    layers, heads, head_dim
        The attention shape of the model using it.
    window
        Recent tokens kept per stream (at least 1).
    sinks
        First tokens kept per stream forever (the attention sinks; 0 makes a plain sliding window).
    dtype, device
        Of the cache tensors.

    Attributes
    ----------
    data : torch.Tensor
        ``[slots, layers, 2, heads, sinks + window, head_dim]``: keys (before RoPE) at index 0, values at 1.
    seen : torch.Tensor
        ``[slots]`` int64: tokens each slot's stream has appended (0 for an empty slot).

    Examples
    --------
    >>> cache = RollingKVCache(slots=2, layers=1, heads=1, head_dim=2, window=2, sinks=1)
    >>> slot = torch.tensor([cache.assign(["ann"])[0].slot])
    >>> for token in range(5):  # append tokens 0..4, their key is (token, 0)
    ...     seen = cache.advance(slot)
    ...     cache.store(slot, 0, torch.tensor([[[token, 0.0]]]), torch.zeros(1, 1, 2))
    >>> cache.layer(0)[0][slot, 0, :, 0]  # sink 0, then the window's ring: 3 overwrote 1, 4 overwrote 2
    tensor([[0., 3., 4.]])
    >>> cache.valid(slot), cache.bytes_per_stream
    (tensor([3]), 56)
    """

    def __init__(
        self,
        slots: int,
        layers: int,
        heads: int,
        head_dim: int,
        *,
        window: int,
        sinks: int = 4,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if window < 1 or sinks < 0:
            raise ValueError(f"RollingKVCache: window must be >= 1 and sinks >= 0 (got window={window}, sinks={sinks})")
        for name, value in (("layers", layers), ("heads", heads), ("head_dim", head_dim)):
            if value < 1:
                raise ValueError(f"RollingKVCache: {name} must be >= 1 (got {value})")
        self.sinks, self.window, self.capacity = sinks, window, sinks + window
        self.allocator = SlotAllocator(slots)
        # zeros, not empty: the torch reference weighs entries past the valid length by 0, and 0 * NaN is NaN
        self.data = torch.zeros((slots, layers, 2, heads, self.capacity, head_dim), dtype=dtype, device=device)
        self.seen = torch.zeros(slots, dtype=torch.int64, device=device)

    @property
    def bytes_per_stream(self) -> int:
        """Bytes one stream occupies: its row of keys and values plus its token count."""
        return self.data[0].numel() * self.data.element_size() + self.seen.element_size()

    def assign(self, keys: Sequence[Hashable]) -> list[SlotAssignment]:
        """Slots for a batch of streams (see :meth:`SlotAllocator.assign`); the rows of fresh ones are emptied."""
        assignments = self.allocator.assign(keys)
        fresh = [a.slot for a in assignments if a.fresh]
        if fresh:
            self.seen[torch.tensor(fresh, device=self.seen.device)] = 0
        return assignments

    def advance(self, slots: torch.Tensor) -> torch.Tensor:
        """Count one new token in each of ``slots`` (distinct) and return their ``seen``, the new token included.

        Call it once per token, then :meth:`store` the token's key and value in every layer before attending: the
        attention kernel takes the returned counts and treats the newest entry as the query's own.
        """
        self.seen[slots] += 1
        return self.seen[slots]

    def store(self, slots: torch.Tensor, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write the newest token's key and value (``[len(slots), heads, head_dim]``, key before RoPE) of ``layer``.

        The entry is the token's own when it is among the first ``sinks`` or the cache is not full yet, else the
        window's oldest entry, which the token replaces.
        """
        token = self.seen[slots] - 1
        index = torch.where(token < self.sinks, token, self.sinks + (token - self.sinks) % self.window)
        self.data[slots, layer, :, :, index] = torch.stack((keys, values), dim=1).to(self.data.dtype)

    def fill(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Set ``slot`` to hold a stream whose every token's keys and values are given (a prefill).

        ``keys`` and ``values`` are ``[layers, heads, tokens, head_dim]``, keys before RoPE, in stream order; the
        slot keeps the first ``sinks`` tokens and the last ``window``, where appending them one by one would have
        put them.
        """
        expected = (*self.data.shape[1:2], *self.data.shape[3:4])
        if keys.shape != values.shape or keys.dim() != 4 or (keys.shape[0], keys.shape[1]) != expected:
            raise ValueError(
                f"RollingKVCache.fill: keys and values must be [layers={expected[0]}, heads={expected[1]}, tokens, "
                f"head_dim={self.data.shape[-1]}] (got {tuple(keys.shape)} and {tuple(values.shape)})"
            )
        tokens = keys.shape[2]
        kept = torch.arange(tokens, device=keys.device)
        kept = kept[(kept < self.sinks) | (kept >= tokens - self.window)]
        index = torch.where(kept < self.sinks, kept, self.sinks + (kept - self.sinks) % self.window)
        index = index.to(self.data.device)
        self.data[slot, :, 0].index_copy_(2, index, keys[:, :, kept].to(self.data))
        self.data[slot, :, 1].index_copy_(2, index, values[:, :, kept].to(self.data))
        self.seen[slot] = tokens

    def layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of one layer's keys and values, ``[slots, heads, sinks + window, head_dim]`` each (no copy)."""
        return self.data[:, layer, 0], self.data[:, layer, 1]

    def valid(self, slots: torch.Tensor) -> torch.Tensor:
        """Entries in use in each of ``slots``: ``min(seen, sinks + window)``."""
        return self.seen[slots].clamp(max=self.capacity)
