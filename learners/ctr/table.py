"""A collisionless embedding table (Monolith's): raw-id keys, frequency-filtered admission, expiry, and incremental
sync of the rows touched since the last sync.

Keys are the raw ids (any hashable: ``("user", "17")``), never hashed into buckets, so two ids never share a row.
Admission is deterministic: an id gets a row on its ``min_count``-th sighting (Monolith's count filter; its
probabilistic variant ``1 - (1 - p)^count`` admits the same ids in expectation but makes a replay depend on a coin,
so we keep the count). Ids still below ``min_count`` keep only a counter. Rows and counters unused for
``expire_after`` seconds of event time are dropped, so on an endless stream of new ids the table holds at most
the ids seen in the last ``expire_after`` seconds. Rows train with per-coordinate Adagrad.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from learners._state import check_state, require

STATE_FORMAT = 1
_EPS = 1e-8

Vector = npt.NDArray[np.float64]


@dataclass
class _Row:
    """One admitted id: its embedding, its Adagrad accumulator and when (event time) it was last used."""

    weights: Vector
    accum: Vector
    last_used: float


@dataclass(frozen=True)
class TableDelta:
    """What a serving replica needs since the last sync: the weights of the rows touched (admitted or trained)
    and the ids whose rows were dropped (expired)."""

    rows: dict[Hashable, Vector]
    removed: frozenset[Hashable]


class EmbeddingTable:
    """Embeddings keyed by raw id, admitted after ``min_count`` sightings and dropped after ``expire_after`` idle
    seconds; ``delta()`` ships only what changed since the previous ``delta()`` to a replica's ``apply()``.

    Parameters
    ----------
    dim
        Embedding width.
    min_count
        Sightings (:meth:`see`) an id needs before it gets a row (1 admits at first sight).
    expire_after
        Seconds of event time without a sighting after which a row (or a pending counter) is dropped; ``None``
        keeps everything (memory then grows with the number of distinct ids).
    lr
        Adagrad learning rate of the rows.
    init_scale
        Standard deviation of a new row's normal initial weights.
    seed
        Seeds the generator that draws new rows: same seed and stream, same table.

    Examples
    --------
    >>> table = EmbeddingTable(dim=2, min_count=2, expire_after=60.0)
    >>> table.see("alice", t=0.0), table.see("alice", t=1.0), len(table)
    (False, True, 1)
    >>> table.update("alice", np.array([1.0, -1.0]))
    >>> replica = EmbeddingTable(dim=2, min_count=2, expire_after=60.0)
    >>> replica.apply(table.delta())
    >>> bool(np.array_equal(replica.get("alice"), table.get("alice"))), len(table.delta().rows)
    (True, 0)
    >>> table.see("bob", t=100.0), "alice" in table, table.delta().removed
    (False, False, frozenset({'alice'}))

    References
    ----------
    Liu, Z., Zou, L., Zou, X., et al. (2022). Monolith: Real Time Recommendation System With Collisionless
    Embedding Table. ORSUM@RecSys. arXiv:2209.07663.
    """

    def __init__(
        self,
        dim: int = 8,
        *,
        min_count: int = 2,
        expire_after: float | None = None,
        lr: float = 0.05,
        init_scale: float = 0.1,
        seed: int = 0,
    ) -> None:
        require(isinstance(dim, int) and dim >= 1, f"EmbeddingTable: dim must be an int >= 1 (got {dim!r}), e.g. 8")
        require(
            isinstance(min_count, int) and min_count >= 1,
            f"EmbeddingTable: min_count must be an int >= 1 (got {min_count!r}); 1 admits an id at first sight",
        )
        require(
            expire_after is None or (math.isfinite(expire_after) and expire_after > 0),
            f"EmbeddingTable: expire_after must be a positive number of seconds or None (got {expire_after!r}), "
            "e.g. 86400 for a day",
        )
        require(lr > 0.0 and math.isfinite(lr), f"EmbeddingTable: lr must be a positive number (got {lr!r})")
        require(
            init_scale >= 0.0 and math.isfinite(init_scale),
            f"EmbeddingTable: init_scale must be a number >= 0 (got {init_scale!r}), e.g. 0.1",
        )
        require(isinstance(seed, int), f"EmbeddingTable: seed must be an int (got {seed!r})")
        self.params: dict[str, Any] = {
            "dim": dim,
            "min_count": min_count,
            "expire_after": expire_after,
            "lr": lr,
            "init_scale": init_scale,
            "seed": seed,
        }
        self.clock = -math.inf
        self._rows: OrderedDict[Hashable, _Row] = OrderedDict()  # in order of last use: the stalest first
        self._pending: OrderedDict[Hashable, list[float]] = OrderedDict()  # id -> [count, last seen], same order
        self._touched: set[Hashable] = set()
        self._removed: set[Hashable] = set()
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """The number of rows (admitted ids)."""
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    @property
    def n_pending(self) -> int:
        """The number of ids counted but not admitted yet (each holds a counter, not a row)."""
        return len(self._pending)

    def advance(self, t: float) -> None:
        """Move the event-time clock to ``t`` (never backwards: a late event does not rewind it) and drop the rows
        and counters idle for more than ``expire_after`` seconds."""
        require(math.isfinite(t), f"EmbeddingTable: event time t must be finite (got {t!r}); give seconds")
        self.clock = max(self.clock, t)
        expire_after = self.params["expire_after"]
        if expire_after is None:
            return
        horizon = self.clock - expire_after
        while self._rows:
            key, row = next(iter(self._rows.items()))
            if row.last_used >= horizon:
                break
            del self._rows[key]
            self._touched.discard(key)
            self._removed.add(key)
        while self._pending and next(iter(self._pending.values()))[1] < horizon:
            self._pending.popitem(last=False)

    def see(self, key: Hashable, t: float) -> bool:
        """Count one sighting of ``key`` at event time ``t``; admit it on its ``min_count``-th; whether it has a
        row now. A sighting keeps a row (or a counter) from expiring."""
        self.advance(t)
        row = self._rows.get(key)
        if row is not None:
            row.last_used = self.clock
            self._rows.move_to_end(key)
            return True
        counter = self._pending.pop(key, [0.0, 0.0])
        counter[0] += 1.0
        if counter[0] < self.params["min_count"]:
            counter[1] = self.clock
            self._pending[key] = counter
            return False
        dim = self.params["dim"]
        weights = self._rng.normal(0.0, self.params["init_scale"], dim)
        self._rows[key] = _Row(weights, np.zeros(dim), self.clock)
        self._removed.discard(key)
        self._touched.add(key)
        return True

    def get(self, key: Hashable) -> Vector | None:
        """The row of ``key`` (a read-only view), or ``None`` when it has none: not admitted yet, or expired."""
        row = self._rows.get(key)
        if row is None:
            return None
        view = row.weights.view()
        view.flags.writeable = False
        return view

    def update(self, key: Hashable, grad: Vector) -> None:
        """One Adagrad step on the row of ``key`` along the loss gradient ``grad``; the row joins the next delta."""
        row = self._rows.get(key)
        require(row is not None, f"EmbeddingTable: no row for {key!r} to update; update only ids see() admitted")
        assert row is not None  # for mypy: require raised otherwise
        require(
            grad.shape == row.weights.shape,
            f"EmbeddingTable: the gradient of {key!r} has shape {grad.shape} but rows have {row.weights.shape}",
        )
        row.accum += grad * grad
        row.weights -= self.params["lr"] * grad / (np.sqrt(row.accum) + _EPS)
        self._touched.add(key)

    def delta(self) -> TableDelta:
        """The rows touched and the ids dropped since the previous ``delta()`` (copies), and start a new interval."""
        delta = TableDelta({key: self._rows[key].weights.copy() for key in self._touched}, frozenset(self._removed))
        self._touched.clear()
        self._removed.clear()
        return delta

    def apply(self, delta: TableDelta) -> None:
        """Take a trainer's ``delta()``: overwrite or add its rows, drop its removed ids (a serving replica)."""
        for key in delta.removed:
            self._rows.pop(key, None)
        dim = self.params["dim"]
        for key, weights in delta.rows.items():
            require(
                weights.shape == (dim,),
                f"EmbeddingTable: the delta's row {key!r} has shape {weights.shape} but this table has dim={dim}; "
                "sync between tables built with the same parameters",
            )
            self._rows[key] = _Row(weights.copy(), np.zeros(dim), self.clock)
            self._rows.move_to_end(key)

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of rows, counters, the clock, the sync bookkeeping and the generator."""
        return copy.deepcopy(
            {
                "format": STATE_FORMAT,
                "learner": "EmbeddingTable",
                "params": self.params,
                "clock": self.clock,
                "rows": self._rows,
                "pending": self._pending,
                "touched": self._touched,
                "removed": self._removed,
                "rng": self._rng.bit_generator.state,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict`` of a table built with the same parameters."""
        check_state(state, "EmbeddingTable", STATE_FORMAT, self.params)
        state = copy.deepcopy(state)
        self.clock = state["clock"]
        self._rows = state["rows"]
        self._pending = state["pending"]
        self._touched = state["touched"]
        self._removed = state["removed"]
        self._rng.bit_generator.state = state["rng"]
