"""mode sequence: per-user next-interaction forecasts from a temporal point process, on simulated Hawkes users."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis

from connectors.messages import Interaction
from connectors.registry import ModelRegistry
from connectors.sources import drifting_hawkes, to_interactions
from connectors.state import StateStore
from pipelines.serialization import load_state
from pipelines.testing import PipelineHarness
from pipelines.testing.plugin import TEST_SECRET

pytestmark = pytest.mark.timeout(240)
Harness = Callable[..., PipelineHarness]
KINDS = ["click", "like", "comment"]
T0 = 1_700_000_000.0  # interactions carry epoch seconds


def interactions(users: int = 10, t_end: float = 20.0, seed: int = 3) -> list[Interaction]:
    """Every simulated user's interactions, merged in time order (a 3-kind Hawkes process per user)."""
    [period] = drifting_hawkes(len(KINDS), 1, users, t_end, seed)
    merged = [m for i, seq in enumerate(period.sequences) for m in to_interactions(seq, f"u{i}", KINDS, t0=T0)]
    return sorted(merged, key=lambda m: m.ts)


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "name": "next",
        "input": {"topics": ["live.interactions"], "schema": "interaction/v1"},
        "operator": {
            "use": "learners.tpp:ContinualTPP",
            "params": {"strategy": "prompt", "d_model": 16, "batch_size": 8, "seed": 0},
            "mode": "sequence",
        },
        "sequence": {"kinds": KINDS, "history": 12, "train_every_events": 150},
        "batch": {"max": 64, "within_ms": 5},
        "checkpoint": {"every_events": 100, "every_s": 60},
        **extra,
    }


def test_every_interaction_gets_a_forecast_and_each_user_keeps_a_bounded_sequence(pipeline_harness: Harness) -> None:
    stream = interactions()
    harness = pipeline_harness(spec())
    bad_kind = Interaction(user="u0", streamer="s", kind="gift", ts=T0 + 1e6)
    late = Interaction(user="u0", streamer="s", kind="click", ts=T0)  # before u0's last interaction
    harness.send([*stream, bad_kind, late])
    result = harness.run()

    forecasts = result.outputs["predictions"]
    assert len(forecasts) == len(stream)
    for message, forecast in zip(stream, forecasts, strict=True):
        assert (forecast["schema"], forecast["user"], forecast["ts"]) == ("next-event/v1", message.user, message.ts)
        assert forecast["next_ts"] >= message.ts and forecast["next_kind"] in KINDS
        assert sorted(forecast["kind_probs"]) == sorted(KINDS)
        assert sum(forecast["kind_probs"].values()) == pytest.approx(1)
    assert sorted(d.reason for d in result.dead_letters) == ["out_of_order", "unknown_kind"]
    scores = result.status.scores
    assert scores["trainings"] == len(stream) // 150 and scores["next_time_rmse_s"] > 0 and 0 < scores["accuracy"] < 1

    harness.stop()  # the final checkpoint writes every user's sequence with it
    store = StateStore(harness.services.state_url)
    try:
        for user in {m.user for m in stream}:
            mine = [m for m in stream if m.user == user][-12:]
            kept = json.loads(store.get("next", user) or b"{}")
            assert kept["ts"] == [m.ts for m in mine] and kept["types"] == [KINDS.index(m.kind) for m in mine]
    finally:
        store.close()


def test_a_restarted_worker_forecasts_exactly_as_one_that_never_stopped(pipeline_harness: Harness) -> None:
    stream = interactions()
    half = len(stream) // 2 + 7  # not on a checkpoint or training boundary
    whole = pipeline_harness(spec())
    whole.send(stream)
    expected = whole.run().outputs["predictions"]

    split = pipeline_harness(spec())
    split.send(stream[:half])
    first = split.run().outputs["predictions"]
    split.restart()  # a new worker: model, scores and per-user sequences come back from the checkpoint
    split.send(stream[half:])
    second = split.run().outputs["predictions"]
    assert first + second == expected


def test_versions_published_to_the_registry_forecast_like_the_pipeline(
    pipeline_harness: Harness, eddy_registry: ModelRegistry
) -> None:
    stream = interactions()
    harness = pipeline_harness(spec(registry={"model": "next", "publish_every_events": 200}))
    harness.send(stream)
    harness.run()
    versions = eddy_registry.list_versions("next")
    assert 1 <= len(versions) <= len(stream) // 200  # at most one per batch, each after 200 more interactions
    model = load_state(eddy_registry.load("next", alias="champion").payload, TEST_SECRET)
    forecast = model.predict_next(np.array([0.0, 1.0, 2.5]), np.array([0, 2, 1]))
    assert forecast.time > 2.5 and len(forecast.type_probs) == len(KINDS)


def test_redis_holds_nothing_for_a_user_until_a_checkpoint_covers_them(pipeline_harness: Harness) -> None:
    """Per-user sequences are written in the checkpoint's transaction, never ahead of the offsets."""
    harness = pipeline_harness(spec(checkpoint={"every_events": 10_000, "every_s": 3600}))
    harness.send(interactions(users=3, t_end=10.0))
    harness.run()
    with redis.Redis.from_url(harness.services.state_url) as client:
        assert client.keys("eddy:next:kv:*") == []
    harness.stop()
    with redis.Redis.from_url(harness.services.state_url) as client:
        assert len(client.keys("eddy:next:kv:*")) == 3
