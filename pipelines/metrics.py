"""Prometheus metrics of one worker (DESIGN.md §6), on a registry of its own so workers can share a process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    """Every metric a worker exports on ``/metrics``; labels always start with ``pipeline``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("eddy_events_in", "Input records consumed", ["pipeline"], registry=r)
        self.events_out = Counter("eddy_events_out", "Records produced", ["pipeline", "output"], registry=r)
        self.dead_letters = Counter(
            "eddy_dead_letters", "Records sent to the dead-letter topic", ["pipeline", "reason"], registry=r
        )
        self.duplicates = Counter(
            "eddy_duplicates_skipped",
            "Re-delivered records already covered by the checkpoint",
            ["pipeline"],
            registry=r,
        )
        self.replay_duplicates = Counter(
            "eddy_replay_duplicates_skipped",
            "Replayed records skipped because their eddy-replay-id was already seen (eddy replay --dedupe)",
            ["pipeline"],
            registry=r,
        )
        self.batch_size = Histogram(
            "eddy_batch_size",
            "Records per micro-batch",
            ["pipeline"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=r,
        )
        self.latency = Histogram(
            "eddy_event_latency_seconds",
            "From the input record's timestamp to its output being sent",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.operator_seconds = Histogram(
            "eddy_operator_seconds",
            "Operator time per micro-batch (its learning after the answers included)",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "eddy_consumer_lag", "High-water mark minus next offset", ["pipeline", "topic", "partition"], registry=r
        )
        self.stall = Gauge(
            "eddy_stall_seconds",
            "Seconds since the last progress on a partition while its lag is > 0",
            ["pipeline", "topic", "partition"],
            registry=r,
        )
        self.model_version = Gauge("eddy_model_version", "Model version in use (0: none)", ["pipeline"], registry=r)
        self.prequential = Gauge("eddy_prequential", "Prequential metric value", ["pipeline", "metric"], registry=r)
        self.drift_alarms = Gauge("eddy_drift_alarms", "Drift alarms raised so far", ["pipeline"], registry=r)
        self.drift_statistic = Gauge(
            "eddy_drift_statistic",
            "The drift detector's statistics: mean error since the last alarm, ADWIN width, KSWIN p-value",
            ["pipeline", "statistic"],
            registry=r,
        )
        self.expert_share = Gauge(
            "eddy_expert_share",
            "Fraction of recent instances the router sent to each expert (mixture-of-experts learners)",
            ["pipeline", "expert"],
            registry=r,
        )
        self.checkpoints = Counter(
            "eddy_checkpoints", "Checkpoints written to the state store", ["pipeline"], registry=r
        )
        self.checkpoint_seconds = Histogram(
            "eddy_checkpoint_seconds", "Time to write one checkpoint", ["pipeline"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.published = Counter("eddy_models_published", "Model versions published", ["pipeline"], registry=r)
        self.swaps = Counter("eddy_model_swaps", "Models swapped in between batches", ["pipeline"], registry=r)
        self.state_retries = Gauge(
            "eddy_state_retries", "State store operations retried while Redis was unreachable", ["pipeline"], registry=r
        )
