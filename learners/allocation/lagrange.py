"""The Lagrange multiplier of the platform constraint: app time per session must not fall below a floor."""

from __future__ import annotations

import math
from typing import TypeVar

import torch

from learners._state import require

Value = TypeVar("Value", float, "torch.Tensor")

__all__ = ["LagrangeMultiplier"]


class LagrangeMultiplier:
    """``lambda >= 0`` for the constraint ``E[app seconds per session] >= floor``, learned by dual gradient steps.

    After each session, ``lambda <- clip(lambda + lr (floor - app_seconds) / scale, 0, max_value)``: it rises while
    sessions
    fall short of the floor and falls back while they clear it. The agent maximises the Lagrangian reward
    :meth:`mix`, ``(reward + lambda app_seconds) / (1 + lambda)``, a convex combination that keeps the
    return's scale (so the
    critic's bins still cover it) while weighing app time more as ``lambda`` grows. ``floor=None`` switches it off
    (``lambda`` stays 0).

    >>> multiplier = LagrangeMultiplier(floor=300.0, lr=0.5, scale=100.0)
    >>> multiplier.update(200.0); multiplier.value  # a session 100 s short of the floor
    0.5
    >>> multiplier.update(400.0); multiplier.value  # one 100 s above it
    0.0
    >>> multiplier.mix(reward=50.0, app_seconds=80.0)
    50.0
    """

    def __init__(self, floor: float | None, *, lr: float = 0.01, scale: float = 100.0, max_value: float = 10.0) -> None:
        require(
            floor is None or math.isfinite(floor),
            f"LagrangeMultiplier: floor must be finite seconds or None (got {floor})",
        )
        require(lr > 0 and scale > 0, f"LagrangeMultiplier: lr and scale must be > 0 (got {lr}, {scale})")
        require(max_value > 0, f"LagrangeMultiplier: max_value must be > 0 (got {max_value})")
        self.floor, self.lr, self.scale, self.max_value = floor, float(lr), float(scale), float(max_value)
        self.value = 0.0

    def update(self, app_seconds: float) -> None:
        """One dual step from a finished session's app time (seconds)."""
        if self.floor is not None:
            step = self.lr * (self.floor - float(app_seconds)) / self.scale
            self.value = min(max(self.value + step, 0.0), self.max_value)

    def mix(self, reward: Value, app_seconds: Value) -> Value:
        """The Lagrangian reward of one step (floats, or tensors of steps)."""
        return (reward + self.value * app_seconds) / (1.0 + self.value)
