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
from connectors.sources.sea import SEA_VARIANTS, drifting_sea

__all__ = [
    "SEA_VARIANTS",
    "EventSequence",
    "HawkesParams",
    "Period",
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
]
