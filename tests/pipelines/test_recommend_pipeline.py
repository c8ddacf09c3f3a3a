"""mode recommend: top-k live streamers per interaction from a transformer trained offline on a simulator run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from connectors.messages import Interaction, Room, encode
from connectors.registry import ModelRegistry
from connectors.sources.live_platform import LivePlatform, LivePlatformConfig, LivePlatformLog, always
from pipelines.follower import MODELS_TOPIC, announce
from pipelines.recommend_operator import RecommendOperator
from pipelines.recommender_training import TrainedRecommender, publish_recommender, train_recommender, user_sequences
from pipelines.testing import PipelineHarness
from pipelines.testing.plugin import TEST_SECRET

pytestmark = pytest.mark.timeout(300)
Harness = Callable[..., PipelineHarness]
MODEL = "live-recs"
KINDS = ["click", "comment", "like", "gift"]
K = 3
# the longest user stream of this run has 86 interactions: within sinks + window, so cache rebuilds are exact
CONFIG = LivePlatformConfig(users=60, streamers=12, hours=24.0, live_hours=3.0, offline_hours=3.0)
SINKS, WINDOW = 4, 96


@pytest.fixture(scope="module")
def platform_log() -> LivePlatformLog:
    return LivePlatform(CONFIG, seed=5).run(always)


@pytest.fixture(scope="module")
def trained(platform_log: LivePlatformLog) -> TrainedRecommender:
    return train_recommender(user_sequences(platform_log.kuailive, KINDS), kinds=KINDS, dim=16, steps=40, length=16)


def interactions(log: LivePlatformLog) -> list[Interaction]:
    return [m.message for m in log.messages() if isinstance(m.message, Interaction)]


def rooms(log: LivePlatformLog) -> list[Room]:
    return [m.message for m in log.messages() if isinstance(m.message, Room)]


def spec(**recommend: Any) -> dict[str, Any]:
    return {
        "name": "recs",
        "input": {"topics": ["live.interactions"], "schema": "interaction/v1"},
        "operator": {"mode": "recommend"},
        "registry": {"model": MODEL, "follow": "champion"},
        "recommend": {"kinds": KINDS, "skip": ["impression"], "k": K, "sinks": SINKS, "window": WINDOW, **recommend},
        "batch": {"max": 64, "within_ms": 5},
        "checkpoint": {"every_events": 200, "every_s": 60},
    }


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def operator(harness: PipelineHarness) -> RecommendOperator:
    op = harness.runner.operator
    assert isinstance(op, RecommendOperator)
    return op


def with_rooms(harness: PipelineHarness, log: LivePlatformLog) -> PipelineHarness:
    """Produce the rooms first and wait until the worker has read them all (no race with the interactions)."""
    all_rooms = rooms(log)
    if not harness.bus.describe("live.rooms").messages.get(0):
        harness.bus.create_topics(["live.rooms"])
        harness.bus.produce("live.rooms", [encode(r) for r in all_rooms], keys=[r.room.encode() for r in all_rooms])
    wait_for(lambda: operator(harness).rooms.read == len(all_rooms), "the rooms to be read")
    return harness


def live_at(log: LivePlatformLog, ts: float) -> set[str]:
    table = log.kuailive.tables["room"]
    return {
        str(s)
        for s, start, end in zip(table["streamer_id"], table["start_timestamp"], table["end_timestamp"], strict=True)
        if start / 1000 <= ts <= end / 1000
    }


def answered(stream: list[Interaction]) -> list[Interaction]:
    return [m for m in stream if m.kind in KINDS]


def test_every_interaction_gets_the_top_k_streamers_live_at_its_time(
    pipeline_harness: Harness,
    eddy_registry: ModelRegistry,
    trained: TrainedRecommender,
    platform_log: LivePlatformLog,
) -> None:
    publish_recommender(eddy_registry, MODEL, trained, TEST_SECRET)
    harness = with_rooms(pipeline_harness(spec()), platform_log)
    stream = interactions(platform_log)
    bad = [
        Interaction(user="1", streamer="2", kind="follow", ts=stream[-1].ts),  # neither answered nor skipped
        Interaction(user="", streamer="2", kind="click", ts=stream[-1].ts),
        b'{"user": "1", "kind": "click"}',
    ]
    harness.send([*stream, *bad])
    result = harness.run()

    expected = answered(stream)
    recommendations = result.outputs["recommendations"]
    assert len(recommendations) == len(expected)
    known = set(trained.bundle.streamers)
    for message, rec in zip(expected, recommendations, strict=True):
        assert (rec["schema"], rec["user"], rec["ts"], rec["model_version"]) == (
            "recommendation/v1",
            message.user,
            message.ts,
            "1",
        )
        live = live_at(platform_log, message.ts) & known
        assert set(rec["items"]) <= live and rec["candidates"] == len(live)
        assert len(rec["items"]) == min(K, len(live))
        assert rec["scores"] == sorted(rec["scores"], reverse=True)
    assert sorted(d.reason for d in result.dead_letters) == ["missing_id", "unknown_kind", "validation"]
    scores = result.status.scores
    assert 0 < scores[f"hit_rate_at_{K}"] <= 1 and scores["recommended"] == len(expected)
    assert operator(harness).skipped == len(stream) - len(expected)


def _items_and_scores(outputs: list[dict[str, Any]]) -> tuple[list[list[str]], list[list[float]]]:
    return [o["items"] for o in outputs], [o["scores"] for o in outputs]


def _assert_same(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    items, scores = _items_and_scores(actual)
    expected_items, expected_scores = _items_and_scores(expected)
    assert items == expected_items
    for mine, theirs in zip(scores, expected_scores, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-4)


def test_a_restarted_worker_rebuilds_caches_from_the_store_and_recommends_the_same(
    pipeline_harness: Harness,
    eddy_registry: ModelRegistry,
    trained: TrainedRecommender,
    platform_log: LivePlatformLog,
) -> None:
    publish_recommender(eddy_registry, MODEL, trained, TEST_SECRET)
    stream = answered(interactions(platform_log))
    whole = with_rooms(pipeline_harness(spec()), platform_log)
    whole.send(stream)
    expected = whole.run().outputs["recommendations"]

    half = len(stream) // 2 + 7
    split = with_rooms(pipeline_harness(spec()), platform_log)
    split.send(stream[:half])
    first = split.run().outputs["recommendations"]
    split.restart()  # a new worker: empty caches, each user's kept streamer ids come back from Redis
    with_rooms(split, platform_log)
    split.send(stream[half:])
    second = split.run().outputs["recommendations"]
    _assert_same(first + second, expected)


def test_more_users_than_slots_evicts_and_rebuilds_to_the_same_recommendations(
    pipeline_harness: Harness,
    eddy_registry: ModelRegistry,
    trained: TrainedRecommender,
    platform_log: LivePlatformLog,
) -> None:
    publish_recommender(eddy_registry, MODEL, trained, TEST_SECRET)
    stream = answered(interactions(platform_log))
    roomy = with_rooms(pipeline_harness(spec(slots=128)), platform_log)
    roomy.send(stream)
    expected = roomy.run()
    tight = with_rooms(pipeline_harness(spec(slots=3)), platform_log)
    tight.send(stream)
    result = tight.run()
    assert expected.status.scores["evictions"] == 0 and result.status.scores["evictions"] > 10
    _assert_same(result.outputs["recommendations"], expected.outputs["recommendations"])


def test_a_newer_published_version_is_picked_up_with_fresh_caches(
    pipeline_harness: Harness,
    eddy_registry: ModelRegistry,
    trained: TrainedRecommender,
    platform_log: LivePlatformLog,
) -> None:
    publish_recommender(eddy_registry, MODEL, trained, TEST_SECRET)
    stream = answered(interactions(platform_log))
    half = len(stream) // 2
    harness = with_rooms(pipeline_harness(spec()), platform_log)
    harness.send(stream[:half])
    first = harness.run().outputs["recommendations"]

    newer = train_recommender(user_sequences(platform_log.kuailive, KINDS), kinds=KINDS, dim=8, steps=10, seed=1)
    _, update = publish_recommender(eddy_registry, MODEL, newer, TEST_SECRET)
    assert update is not None
    announce(harness.bus, update)
    follower = harness.runner.follower
    assert follower is not None
    wait_for(lambda: follower.current_version == "2", "the worker to load version 2")
    harness.send(stream[half:])
    second = harness.run().outputs["recommendations"][len(first) :]  # run() returns all this worker produced
    assert len(second) == len(stream) - half
    assert {r["model_version"] for r in first} == {"1"} and {r["model_version"] for r in second} == {"2"}
    for message, rec in zip(stream[half:], second, strict=True):
        assert set(rec["items"]) <= live_at(platform_log, message.ts)
    assert MODELS_TOPIC in harness.bus.list_topics()
