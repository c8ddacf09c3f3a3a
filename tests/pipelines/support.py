"""Operators for runtime tests, importable by spec (``tests.pipelines.support:GatedLearner``)."""

from __future__ import annotations

import threading
from typing import Any

GATE = threading.Event()
GATE.set()


class GatedLearner:
    """Learns nothing and predicts False; ``learn_one`` blocks while ``GATE`` is clear (a frozen operator)."""

    def predict_one(self, x: dict[str, Any]) -> bool:
        return False

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        GATE.wait()

    def __getstate__(self) -> dict[str, Any]:
        return {}


class ConstantModel:
    """Predicts one value: lets a test tell which model version answered."""

    def __init__(self, value: str) -> None:
        self.value = value

    def predict_one(self, x: dict[str, Any]) -> str:
        return self.value

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        """A constant learns nothing."""


class PickyLearner:
    """Raises on records with a ``poison`` feature: a model that cannot take some inputs."""

    def __init__(self) -> None:
        self.seen = 0

    def predict_one(self, x: dict[str, Any]) -> bool:
        if "poison" in x:
            raise ValueError(f"cannot score a poisoned record (poison={x['poison']})")
        return True

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        self.seen += 1
