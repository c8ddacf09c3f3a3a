"""DriftMoE: a drift-aware mixture of Hoeffding-tree experts with an online neural router (spec: driftmoe.md)."""

from learners.driftmoe.moe import MoEData, MoETask

__all__ = ["MoEData", "MoETask"]
