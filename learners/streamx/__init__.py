"""stream-x: deep RL that learns from one transition at a time (Elsayed, Vasan & Mahmood, 2024)."""

from learners.streamx.ac import StreamAC
from learners.streamx.batched import BatchedStreamQ
from learners.streamx.init import sparse_init_, sparse_init_module_
from learners.streamx.networks import LayerNormMLP
from learners.streamx.normalizers import (
    ObservationNormalizer,
    RewardScaler,
    StackedObservationNormalizer,
    StackedRewardScaler,
    Welford,
)
from learners.streamx.obgd import ObGD, foreach_obgd_update, obgd_step_size, stacked_obgd_update
from learners.streamx.q import StreamQ, StreamSARSA, StreamValueAgent
from learners.streamx.stack import ForwardPass, LayerNormMLPStack

__all__ = [
    "BatchedStreamQ",
    "ForwardPass",
    "LayerNormMLP",
    "LayerNormMLPStack",
    "ObGD",
    "ObservationNormalizer",
    "RewardScaler",
    "StackedObservationNormalizer",
    "StackedRewardScaler",
    "StreamAC",
    "StreamQ",
    "StreamSARSA",
    "StreamValueAgent",
    "Welford",
    "foreach_obgd_update",
    "obgd_step_size",
    "sparse_init_",
    "sparse_init_module_",
    "stacked_obgd_update",
]
