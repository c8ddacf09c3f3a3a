"""Live-stream allocation as a constrained MDP (spec livestream.md §3): SL-MGAC, its learned baselines, and NCIS
off-policy evaluation. Pure algorithms: the simulator that trains and scores them lives in connectors/sources."""

from learners.allocation.agent import AllocationAgent, AllocationConfig
from learners.allocation.distributional import expected_value, two_hot
from learners.allocation.features import FeatureLayout, Request, RequestFeaturizer
from learners.allocation.lagrange import LagrangeMultiplier
from learners.allocation.network import AllocationNetwork, StudentPolicy
from learners.allocation.ope import NCISEstimate, ncis
from learners.allocation.transitions import Transition, session_transitions

__all__ = [
    "AllocationAgent",
    "AllocationConfig",
    "AllocationNetwork",
    "FeatureLayout",
    "LagrangeMultiplier",
    "NCISEstimate",
    "Request",
    "RequestFeaturizer",
    "StudentPolicy",
    "Transition",
    "expected_value",
    "ncis",
    "session_transitions",
    "two_hot",
]
