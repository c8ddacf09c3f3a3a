"""Running statistics for stream-x: Welford observation normaliser and return-based reward scaler."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["ObservationNormalizer", "RewardScaler", "Welford"]


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
        if self.count < 2:
            return np.ones(self.shape, dtype=np.float64)
        return self.m2 / (self.count - 1)

    def update(self, x: np.ndarray) -> None:
        """Fold one sample into the statistics."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.shape:
            raise ValueError(f"Welford: sample must have shape {self.shape} (got {x.shape})")
        self.count += 1
        diff = x - self.mean
        self.mean = self.mean + diff / self.count
        self.m2 = self.m2 + diff * (x - self.mean)

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
