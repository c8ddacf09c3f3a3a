"""stream-x: deep RL that learns from one transition at a time (Elsayed, Vasan & Mahmood, 2024)."""

from learners.streamx.ac import StreamAC
from learners.streamx.init import sparse_init_, sparse_init_module_
from learners.streamx.networks import LayerNormMLP
from learners.streamx.normalizers import ObservationNormalizer, RewardScaler, Welford
from learners.streamx.obgd import ObGD, foreach_obgd_update, obgd_step_size
from learners.streamx.q import StreamQ, StreamSARSA, StreamValueAgent

__all__ = [
    "LayerNormMLP",
    "ObGD",
    "ObservationNormalizer",
    "RewardScaler",
    "StreamAC",
    "StreamQ",
    "StreamSARSA",
    "StreamValueAgent",
    "Welford",
    "foreach_obgd_update",
    "obgd_step_size",
    "sparse_init_",
    "sparse_init_module_",
]
