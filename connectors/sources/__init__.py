"""Sources of synthetic streams with a known answer (DESIGN.md §10): no dataset downloads here."""

from connectors.sources.frames import Video, frame_messages, synthetic_videos
from connectors.sources.hawkes import (
    EventSequence,
    HawkesParams,
    Period,
    compensator,
    drifting_hawkes,
    intensity,
    log_likelihood,
    random_params,
    rescaled_times,
    simulate,
    to_interactions,
)
from connectors.sources.live_platform import (
    ACTIVITY_GROUPS,
    ActivityGroup,
    CategoryTrend,
    LivePlatform,
    LivePlatformConfig,
    LivePlatformLog,
    RequestState,
    StreamerOffline,
    Threshold,
)
from connectors.sources.live_platform_logs import KuaiLiveLogs, KuaiLiveTable, LiveMessage, write_kuailive
from connectors.sources.live_platform_optimal import AllocationMDP, PolicyValue, TabularPolicy
from connectors.sources.sea import SEA_VARIANTS, drifting_sea

__all__ = [
    "ACTIVITY_GROUPS",
    "SEA_VARIANTS",
    "ActivityGroup",
    "AllocationMDP",
    "CategoryTrend",
    "EventSequence",
    "HawkesParams",
    "KuaiLiveLogs",
    "KuaiLiveTable",
    "LiveMessage",
    "LivePlatform",
    "LivePlatformConfig",
    "LivePlatformLog",
    "Period",
    "PolicyValue",
    "RequestState",
    "StreamerOffline",
    "TabularPolicy",
    "Threshold",
    "Video",
    "compensator",
    "drifting_hawkes",
    "drifting_sea",
    "frame_messages",
    "intensity",
    "log_likelihood",
    "random_params",
    "rescaled_times",
    "simulate",
    "synthetic_videos",
    "to_interactions",
    "write_kuailive",
]
