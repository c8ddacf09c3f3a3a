"""Per-key state of an operator (e.g. each user's recent events) kept in Redis and cached in the worker.

An operator that keeps something per stream key cannot put it all in its checkpoint blob: with a million users the
blob would be rewritten in full at every checkpoint. :class:`KeyedEntries` keeps the entries the worker has touched
in memory and hands the changed ones to the runtime, which writes them in the checkpoint's own transaction
(:meth:`connectors.state.StateStore.write_checkpoint`), so per-key state always matches the offsets the checkpoint
covers: after a crash, a restarted worker reads both back and neither runs ahead of the other. Entries the worker
has not seen yet are read from Redis in one round trip per batch; clean entries beyond ``capacity`` are dropped
from memory, least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

Loader = Callable[[list[str]], Mapping[str, bytes | None]]


class KeyedEntries:
    """An LRU cache of per-key byte values over the state store, with the changes since the last checkpoint.

    >>> stored = {"u1": b"old"}
    >>> entries = KeyedEntries(capacity=2)
    >>> entries.bind(lambda keys: {k: stored.get(k) for k in keys})
    >>> entries.prefetch(["u1", "u2"])
    >>> entries.get("u1"), entries.get("u2")
    (b'old', None)
    >>> entries.put("u2", b"new")
    >>> changes = entries.pending()
    >>> changes
    {'u2': b'new'}
    >>> entries.written(changes)
    >>> entries.pending()
    {}
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 entry (got {capacity})")
        self.capacity = capacity
        self._cache: OrderedDict[str, bytes | None] = OrderedDict()
        self._changed: set[str] = set()
        self._load: Loader | None = None

    def bind(self, load: Loader) -> None:
        """Read missing entries with ``load`` (the runtime binds the state store's ``get_many``)."""
        self._load = load

    def prefetch(self, keys: Iterable[str]) -> None:
        """Bring the entries of ``keys`` into memory, reading the missing ones in one call."""
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if not missing:
            return
        if self._load is None:
            raise RuntimeError("KeyedEntries.bind(loader) must be called before entries are read")
        loaded = self._load(missing)
        for key in missing:
            self._cache[key] = loaded.get(key)
        self._evict()

    def get(self, key: str) -> bytes | None:
        """The entry of ``key`` (``None`` when it has none); call :meth:`prefetch` first."""
        if key not in self._cache:
            self.prefetch([key])
        self._cache.move_to_end(key)
        return self._cache[key]

    def put(self, key: str, value: bytes) -> None:
        """Set the entry of ``key``; it is written with the next checkpoint."""
        self._cache[key] = value
        self._cache.move_to_end(key)
        self._changed.add(key)
        self._evict()

    def pending(self) -> dict[str, bytes]:
        """The entries changed since the last checkpoint, for the one being written."""
        return {key: value for key in self._changed if (value := self._cache[key]) is not None}

    def written(self, entries: Iterable[str]) -> None:
        """Mark ``entries`` as stored (the checkpoint that held them committed); they may now leave memory."""
        self._changed.difference_update(entries)
        self._evict()

    def forget(self) -> None:
        """Drop everything held in memory: after a checkpoint is restored, Redis holds the matching entries."""
        self._cache.clear()
        self._changed.clear()

    def __len__(self) -> int:
        return len(self._cache)

    def _evict(self) -> None:
        """Drop least recently used entries that are already in Redis while over capacity (changed entries stay
        until the next checkpoint stores them, so memory may exceed ``capacity`` by the keys changed meanwhile)."""
        excess = len(self._cache) - self.capacity
        if excess <= 0:
            return
        for key in [k for k in self._cache if k not in self._changed][:excess]:
            del self._cache[key]
