"""Running statistics for stream-x: Welford observation normaliser and return-based reward scaler."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "ObservationNormalizer",
    "RewardScaler",
    "StackedObservationNormalizer",
    "StackedRewardScaler",
    "Welford",
    "welford_update",
    "welford_variance",
]

_Stat = TypeVar("_Stat", float, np.ndarray)


def welford_update(count: Any, mean: _Stat, m2: _Stat, x: _Stat) -> tuple[_Stat, _Stat]:
    """Fold ``x`` into ``(mean, m2)``; ``count`` already includes ``x``. Floats or arrays (elementwise, broadcast).

    One formula for every normaliser here, so a stack of N statistics in arrays agrees bit for bit with N
    statistics kept one by one.

    >>> welford_update(2, 1.0, 0.0, 3.0)
    (2.0, 2.0)
    """
    diff = x - mean
    mean = mean + diff / count
    return mean, m2 + diff * (x - mean)


def welford_variance(count: int | np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Sample variance (ddof=1) from ``m2``, or 1 before two samples; ``count`` an int or an array of counts.

    >>> welford_variance(3, np.array(8.0)).tolist(), welford_variance(np.array([1, 3]), np.array([5.0, 8.0])).tolist()
    (4.0, [1.0, 4.0])
    """
    if isinstance(count, np.ndarray):
        return np.where(count >= 2, m2 / np.maximum(count - 1, 1), 1.0)
    return m2 / (count - 1) if count >= 2 else np.ones_like(m2)


class Welford:
    """Running mean and sample variance (ddof=1) of vectors, updated one sample at a time (Welford's algorithm).

    ``var`` is 1 until two samples have been seen.

    >>> w = Welford(shape=(2,))
    >>> for x in [[1.0, 0.0], [3.0, 0.0], [5.0, 3.0]]:
    ...     w.update(np.array(x))
    >>> w.mean.tolist(), w.var.tolist()
    ([3.0, 1.0], [4.0, 3.0])
    """

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.shape = tuple(shape)
        self.count = 0
        self.mean = np.zeros(self.shape, dtype=np.float64)
        self.m2 = np.zeros(self.shape, dtype=np.float64)

    @property
    def var(self) -> np.ndarray:
        """Sample variance (ddof=1), or ones before two samples."""
        return welford_variance(self.count, self.m2)

    def update(self, x: np.ndarray) -> None:
        """Fold one sample into the statistics."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.shape:
            raise ValueError(f"Welford: sample must have shape {self.shape} (got {x.shape})")
        self.count += 1
        self.mean, self.m2 = welford_update(self.count, self.mean, self.m2, x)

    def state_dict(self) -> dict[str, Any]:
        """Count, mean and M2 as tensors (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "count": self.count,
            "mean": torch.from_numpy(np.array(self.mean)),
            "m2": torch.from_numpy(np.array(self.m2)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        mean, m2 = np.asarray(state["mean"], dtype=np.float64), np.asarray(state["m2"], dtype=np.float64)
        if mean.shape != self.shape or m2.shape != self.shape:
            raise ValueError(f"Welford: state has shape {mean.shape}, this normaliser {self.shape}")
        self.count, self.mean, self.m2 = int(state["count"]), mean.copy(), m2.copy()


class ObservationNormalizer(Welford):
    """Normalise observations by running mean and variance.

    Update the statistics with ``x`` first, then return ``(x - mean) / sqrt(var + eps)``.

    >>> norm = ObservationNormalizer(shape=(1,))
    >>> [round(float(norm(np.array([v]))[0]), 4) for v in (1.0, 3.0, 5.0)]
    [0.0, 0.7071, 1.0]

    References
    ----------
    Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
    arXiv:2410.14606.
    """

    def __init__(self, shape: tuple[int, ...], eps: float = 1e-8) -> None:
        super().__init__(shape)
        self.eps = eps

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.update(x)
        return (np.asarray(x, dtype=np.float64) - self.mean) / np.sqrt(self.var + self.eps)


class RewardScaler:
    """Divide rewards by the running standard deviation of the discounted return (no mean subtraction).

    Per step: ``u <- gamma * (1 - done) * u + r``, fold ``u`` into a Welford variance, return ``r / sqrt(var + eps)``.

    >>> scaler = RewardScaler(gamma=0.9)
    >>> [round(scaler(1.0, done=False), 4) for _ in range(3)]
    [1.0, 1.5713, 1.1691]

    References
    ----------
    Elsayed, M., Vasan, G., Mahmood, A. R. (2024). Streaming Deep Reinforcement Learning Finally Works.
    arXiv:2410.14606.
    """

    def __init__(self, gamma: float = 0.99, eps: float = 1e-8) -> None:
        self.gamma = gamma
        self.eps = eps
        self.trace = 0.0
        self.stats = Welford(())

    def __call__(self, reward: float, done: bool) -> float:
        self.trace = self.gamma * (1.0 - float(done)) * self.trace + float(reward)
        self.stats.update(np.asarray(self.trace))
        return float(reward) / float(np.sqrt(self.stats.var + self.eps))

    def state_dict(self) -> dict[str, Any]:
        """Return trace and statistics."""
        return {"trace": self.trace, "stats": self.stats.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.trace = float(state["trace"])
        self.stats.load_state_dict(state["stats"])


def _row_welford_state(count: int, mean: np.ndarray, m2: np.ndarray) -> dict[str, Any]:
    """One row of stacked statistics in :meth:`Welford.state_dict`'s format."""
    return {"count": int(count), "mean": torch.from_numpy(np.array(mean)), "m2": torch.from_numpy(np.array(m2))}


class StackedObservationNormalizer:
    """N :class:`ObservationNormalizer` statistics in arrays ``(N, *shape)``, each row updated on its own.

    Same arithmetic as N separate normalisers (:func:`welford_update`), so the results agree bit for bit.

    >>> norm = StackedObservationNormalizer(3, (1,))
    >>> norm(np.array([[1.0], [3.0]]), np.array([0, 2])).ravel().tolist()  # rows 0 and 2 see one sample each
    [0.0, 0.0]
    >>> norm(np.array([[3.0]]), np.array([0])).round(4).tolist(), norm.count.tolist()
    ([[0.7071]], [2, 0, 1])
    """

    def __init__(self, n: int, shape: tuple[int, ...], eps: float = 1e-8) -> None:
        self.shape, self.eps = tuple(shape), eps
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros((n, *self.shape), dtype=np.float64)
        self.m2 = np.zeros((n, *self.shape), dtype=np.float64)

    def __call__(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Fold ``x[i]`` into row ``rows[i]`` (distinct rows), then return each ``x[i]`` normalised by its row."""
        count = (self.count[rows] + 1).reshape(-1, *([1] * len(self.shape)))
        mean, m2 = welford_update(count, self.mean[rows], self.m2[rows], x)
        self.count[rows], self.mean[rows], self.m2[rows] = count.reshape(-1), mean, m2
        normalized: np.ndarray = (x - mean) / np.sqrt(welford_variance(count, m2) + self.eps)
        return normalized

    def row_state_dict(self, row: int) -> dict[str, Any]:
        """Row ``row`` in :class:`ObservationNormalizer`'s ``state_dict`` format."""
        return _row_welford_state(self.count[row], self.mean[row], self.m2[row])

    def load_row_state_dict(self, row: int, state: dict[str, Any]) -> None:
        """Set row ``row`` from an :class:`ObservationNormalizer` ``state_dict``."""
        single = Welford(self.shape)
        single.load_state_dict(state)
        self.count[row], self.mean[row], self.m2[row] = single.count, single.mean, single.m2

    def state_dict(self) -> dict[str, Any]:
        """Counts, means and M2s as tensors."""
        return {name: torch.from_numpy(getattr(self, name).copy()) for name in ("count", "mean", "m2")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        _load_arrays(self, state, ("count", "mean", "m2"))


class StackedRewardScaler:
    """N :class:`RewardScaler` s in arrays ``(N,)``, all stepped together, bit for bit as N separate ones.

    >>> scaler = StackedRewardScaler(2, gamma=0.9)
    >>> done = np.array([False, False])
    >>> [scaler(np.array(r), done).round(4).tolist() for r in ([1.0, 2.0], [1.0, 0.0])]  # row 0 as RewardScaler's
    [[1.0, 2.0], [1.5713, 0.0]]
    """

    def __init__(self, n: int, gamma: float = 0.99, eps: float = 1e-8) -> None:
        self.gamma, self.eps = gamma, eps
        self.trace = np.zeros(n, dtype=np.float64)
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n, dtype=np.float64)
        self.m2 = np.zeros(n, dtype=np.float64)

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Fold every row's reward into its return trace and statistics; return the scaled rewards."""
        self.trace = self.gamma * (1.0 - done.astype(np.float64)) * self.trace + reward
        self.count += 1
        self.mean, self.m2 = welford_update(self.count, self.mean, self.m2, self.trace)
        scaled: np.ndarray = reward / np.sqrt(welford_variance(self.count, self.m2) + self.eps)
        return scaled

    def row_state_dict(self, row: int) -> dict[str, Any]:
        """Row ``row`` in :class:`RewardScaler`'s ``state_dict`` format."""
        stats = _row_welford_state(self.count[row], self.mean[row], self.m2[row])
        return {"trace": float(self.trace[row]), "stats": stats}

    def load_row_state_dict(self, row: int, state: dict[str, Any]) -> None:
        """Set row ``row`` from a :class:`RewardScaler` ``state_dict``."""
        single = RewardScaler(self.gamma, self.eps)
        single.load_state_dict(state)
        self.trace[row] = single.trace
        self.count[row], self.mean[row], self.m2[row] = single.stats.count, single.stats.mean, single.stats.m2

    def state_dict(self) -> dict[str, Any]:
        """Return traces, counts, means and M2s as tensors."""
        return {name: torch.from_numpy(getattr(self, name).copy()) for name in ("trace", "count", "mean", "m2")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        _load_arrays(self, state, ("trace", "count", "mean", "m2"))


def _load_arrays(target: object, state: dict[str, Any], names: tuple[str, ...]) -> None:
    """Copy ``state[name]`` into the array attribute ``name`` of ``target``, checking shapes first."""
    arrays = {name: np.asarray(state[name]) for name in names}
    for name, value in arrays.items():
        expected = getattr(target, name).shape
        if value.shape != expected:
            raise ValueError(
                f"{type(target).__name__}: state[{name!r}] has shape {value.shape}, expected {expected}; load a "
                f"checkpoint made with the same number of agents and observation size"
            )
    for name, value in arrays.items():
        setattr(target, name, value.astype(getattr(target, name).dtype, copy=True))
