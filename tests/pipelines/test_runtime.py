"""The pipeline runtime against a real broker, Redis and MLflow store, in-process."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from connectors.bus import KafkaBus
from connectors.embedded import ServiceProcess, free_port
from connectors.messages import Event, ModelUpdate, encode
from connectors.registry import ModelRegistry
from connectors.services import ResolvedServices
from connectors.state import Checkpoint, CheckpointError, StateStore
from pipelines.follower import MODELS_TOPIC, announce
from pipelines.serialization import dump_state, load_state
from tests.fixtures.worker import SECRET, WorkerThread
from tests.pipelines import support

pytestmark = pytest.mark.timeout(180)


def events(n: int, start: int = 0) -> list[Event]:
    """Deterministic labelled events keyed over 8 streams."""
    return [
        Event(
            key=f"k{i % 8}",
            features={"x0": math.sin(i), "x1": math.cos(i * 0.7), "x2": (i % 13) / 13},
            label=math.sin(i) + 0.3 * math.cos(i * 0.7) > 0,
        )
        for i in range(start, start + n)
    ]


def produce(bus: KafkaBus, topic: str, items: list[Event]) -> None:
    bus.produce(topic, [encode(e) for e in items], keys=[(e.key or "").encode() for e in items])


def learn_spec(name: str, topic: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "input": {"topics": [topic], "schema": "event/v1"},
        "operator": {"use": "river.linear_model:LogisticRegression", "mode": "learn"},
        "batch": {"max": 64, "within_ms": 10},
        "checkpoint": {"every_events": 200, "every_s": 60},
    }
    spec.update(extra)
    return spec


def test_learner_pipeline_predicts_prequentially_and_exports_metrics(
    eddy_bus: KafkaBus,
    eddy_topic_factory: Callable[..., str],
    run_worker: Callable[..., WorkerThread],
    eddy_services: ResolvedServices,
) -> None:
    topic = eddy_topic_factory("events", partitions=3)
    produce(eddy_bus, topic, events(600))
    port = free_port()
    worker = run_worker([learn_spec("prequential", topic)], port=port)
    worker.wait_for(lambda: worker.worker.status()[0].learned == 600, 60, "600 events learned")

    outputs = [json.loads(r.value) for r in eddy_bus.read("prequential.predictions", 600, timeout_s=20)]
    assert len(outputs) == 600
    by_partition: dict[int, list[int]] = {}
    for out in outputs:
        by_partition.setdefault(out["source_partition"], []).append(out["source_offset"])
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())
    assert sum(len(v) for v in by_partition.values()) == 600

    # prequential: each event was scored before the learner learned it, and the learner learns the concept
    worker.wait_for(lambda: worker.worker.status()[0].scores["accuracy"] > 0.8, 10, "accuracy above 0.8")

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'eddy_events_in_total{pipeline="prequential"} 600.0' in body
    assert 'eddy_prequential{metric="accuracy",pipeline="prequential"}' in body
    assert "eddy_consumer_lag" in body and "eddy_event_latency_seconds_bucket" in body
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200


def test_bad_records_go_to_the_dead_letter_topic_and_the_worker_goes_on(
    eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str], run_worker: Callable[..., WorkerThread]
) -> None:
    topic = eddy_topic_factory("events")
    good = [encode(e) for e in events(20)]
    bad = {
        "invalid_json": b"{not json",
        "wrong_schema": json.dumps({"schema": "interaction/v1", "features": {}}).encode(),
        "missing_label": json.dumps({"schema": "event/v1", "features": {"x0": 1.0}}).encode(),
        "non_finite": b'{"schema": "event/v1", "features": {"x0": NaN}, "label": true}',
        "oversized": json.dumps({"schema": "event/v1", "features": {"pad": "x" * 5000}, "label": True}).encode(),
        "operator_error": encode(Event(key="bad", features={"poison": 1.0}, label=True)),
    }
    eddy_bus.produce(topic, [*good[:10], *bad.values(), *good[10:]])
    spec = learn_spec(
        "dlq",
        topic,
        operator={"use": "tests.pipelines.support:PickyLearner", "mode": "learn"},
        limits={"max_message_bytes": 4096},
    )
    worker = run_worker([spec])
    worker.wait_for(lambda: worker.worker.status()[0].dead_letters == len(bad), 60, "all dead letters")
    worker.wait_for(lambda: worker.worker.status()[0].learned == 20, 30, "the good records learned after the bad")

    letters = [json.loads(r.value) for r in eddy_bus.read("dlq.dlq", len(bad), timeout_s=20)]
    assert sorted(letter["reason"] for letter in letters) == sorted(bad)
    for letter in letters:
        assert letter["topic"] == topic and letter["partition"] == 0
        assert letter["detail"]
    by_reason = {letter["reason"]: letter for letter in letters}
    assert by_reason["invalid_json"]["offset"] == 10
    import base64

    assert base64.b64decode(by_reason["invalid_json"]["raw_b64"]) == b"{not json"
    samples = worker.worker.metrics.registry.get_sample_value
    for reason in bad:
        assert samples("eddy_dead_letters_total", {"pipeline": "dlq", "reason": reason}) == 1.0


def test_checkpoint_restores_state_and_offsets_on_restart(
    eddy_bus: KafkaBus,
    eddy_topic_factory: Callable[..., str],
    run_worker: Callable[..., WorkerThread],
    eddy_services: ResolvedServices,
) -> None:
    topic = eddy_topic_factory("events", partitions=2)
    first, second = events(300), events(300, start=300)
    produce(eddy_bus, topic, first)
    worker = run_worker([learn_spec("restart", topic)])
    worker.wait_for(lambda: worker.worker.status()[0].learned == 300, 60, "first half learned")
    worker.stop()

    store = StateStore(eddy_services.state_url)
    checkpoint = store.read_checkpoint("restart")
    assert checkpoint is not None and checkpoint.events == 300
    assert sum(checkpoint.offsets.values()) == 300

    produce(eddy_bus, topic, second)
    again = run_worker([learn_spec("restart", topic)])
    again.wait_for(lambda: again.worker.status()[0].learned == 600, 60, "second half learned after restart")
    again.stop()
    final = store.read_checkpoint("restart")
    assert final is not None and load_state(final.state, SECRET)["learned"] == 600
    assert len(eddy_bus.read("restart.predictions", 700, timeout_s=5)) == 600


def test_redis_outage_mid_run_loses_nothing(
    eddy_bus: KafkaBus,
    eddy_topic_factory: Callable[..., str],
    run_worker: Callable[..., WorkerThread],
    eddy_services: ResolvedServices,
    eddy_redis_factory: Callable[[], ServiceProcess],
) -> None:
    redis_server = eddy_redis_factory()
    svc = ResolvedServices(
        eddy_services.broker_url, redis_server.url, eddy_services.registry_uri, eddy_services.artifacts_dir
    )
    topic = eddy_topic_factory("events")
    produce(eddy_bus, topic, events(300))
    worker = run_worker([learn_spec("outage", topic)], svc=svc)
    worker.wait_for(lambda: worker.worker.status()[0].checkpoints >= 1, 60, "a first checkpoint")
    worker.wait_for(lambda: worker.worker.status()[0].learned == 300, 60, "300 learned")

    redis_server.stop()
    produce(eddy_bus, topic, events(300, start=300))
    worker.wait_for(lambda: worker.worker.store.retries > 0, 60, "the worker retrying the state store")
    redis_server.start()
    worker.wait_for(lambda: worker.worker.status()[0].learned == 600, 60, "all 600 learned after Redis returned")
    worker.stop()

    checkpoint = StateStore(redis_server.url).read_checkpoint("outage")
    assert checkpoint is not None
    assert load_state(checkpoint.state, SECRET)["learned"] == 600
    assert checkpoint.offsets == {f"{topic}:0": 600}
    assert len(eddy_bus.read("outage.predictions", 700, timeout_s=5)) == 600


def test_models_are_published_by_policy_and_announced(
    eddy_bus: KafkaBus,
    eddy_topic_factory: Callable[..., str],
    run_worker: Callable[..., WorkerThread],
    eddy_services: ResolvedServices,
) -> None:
    topic = eddy_topic_factory("events")
    # batches of up to 64 put the first version at 300..363 learned events, so the second comes by 663 at the latest
    produce(eddy_bus, topic, events(700))
    spec = learn_spec(
        "publisher", topic, registry={"model": "publisher", "publish_every_events": 300, "alias": "champion"}
    )
    worker = run_worker([spec])
    worker.wait_for(lambda: worker.worker.status()[0].published == 2, 60, "two versions published")

    registry = ModelRegistry(eddy_services.registry_uri, None)
    versions = registry.list_versions("publisher")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    champion = registry.load("publisher", alias="champion")
    assert champion.info.version == "2"
    # published at the first batch boundary past each 300 learned events; the offsets cover exactly those events
    assert 600 <= champion.info.events <= 700
    assert champion.info.offsets == {f"{topic}:0": champion.info.events}
    assert load_state(champion.payload, SECRET).predict_one({"x0": 1.0, "x1": 0.0, "x2": 0.5}) in (True, False)
    announced = [json.loads(r.value) for r in eddy_bus.read(MODELS_TOPIC, 50, timeout_s=3)]
    assert {"model": "publisher", "version": "2", "alias": "champion"}.items() <= next(
        a for a in announced if a["model"] == "publisher" and a["version"] == "2"
    ).items()


def test_serving_pipeline_swaps_models_between_batches_under_load(
    eddy_bus: KafkaBus,
    eddy_topic_factory: Callable[..., str],
    run_worker: Callable[..., WorkerThread],
    eddy_services: ResolvedServices,
) -> None:
    registry = ModelRegistry(eddy_services.registry_uri, None)
    model = f"swap-{time.monotonic_ns()}"

    def publish(value: str) -> None:
        info = registry.publish(
            model, dump_state(support.ConstantModel(value), SECRET), params={}, metrics={}, offsets={}, events=0
        )
        info = registry.promote(model, info.version, alias="champion")
        announce(eddy_bus, ModelUpdate(model=model, version=info.version, alias="champion", uri=info.uri))

    publish("A")
    topic = eddy_topic_factory("requests", partitions=2)
    spec = {
        "name": "swapper",
        "input": {"topics": [topic], "schema": "event/v1"},
        "operator": {"use": "tests.pipelines.support:ConstantModel", "mode": "serve"},
        "batch": {"max": 32, "within_ms": 5},
        "registry": {"model": model, "follow": "champion"},
    }
    worker = run_worker([spec])
    total = 3000

    def load() -> None:
        for start in range(0, total, 100):
            produce(eddy_bus, topic, events(100, start=start))
            if start == 1000:  # promote while requests keep coming, once A has answered some of them
                worker.wait_for(lambda: worker.worker.status()[0].outputs >= 500, 60, "A answering")
                publish("B")

    loader = threading.Thread(target=load)
    loader.start()
    worker.wait_for(lambda: worker.worker.status()[0].outputs >= total, 120, "every request answered")
    loader.join()
    outputs = [json.loads(r.value) for r in eddy_bus.read("swapper.predictions", total + 10, timeout_s=5)]
    assert len(outputs) == total
    for partition in (0, 1):
        answered = [o for o in outputs if o["source_partition"] == partition]
        assert [o["source_offset"] for o in answered] == list(range(len(answered)))  # none lost, none reordered
        values = [o["prediction"] for o in answered]
        switch = values.index("B") if "B" in values else len(values)
        assert values == ["A"] * switch + ["B"] * (len(values) - switch)  # swapped once, between batches
    assert {o["prediction"] for o in outputs} == {"A", "B"}
    assert {o["model_version"] for o in outputs} == {"1", "2"}


def test_watchdog_reports_a_frozen_operator(
    eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str], run_worker: Callable[..., WorkerThread]
) -> None:
    topic = eddy_topic_factory("events")
    port = free_port()
    spec = learn_spec("frozen", topic, operator={"use": "tests.pipelines.support:GatedLearner", "mode": "learn"})
    worker = run_worker([spec], port=port, stall_threshold_s=0.5)
    support.GATE.clear()
    try:
        produce(eddy_bus, topic, events(50))
        worker.wait_for(lambda: _readyz(port) == 503, 30, "/readyz to turn red")
        stall = worker.worker.metrics.registry.get_sample_value(
            "eddy_stall_seconds", {"pipeline": "frozen", "topic": topic, "partition": "0"}
        )
        assert stall is not None and stall > 0.5
    finally:
        support.GATE.set()
    worker.wait_for(lambda: _readyz(port) == 200, 30, "/readyz to recover once the operator moves again")


def _readyz(port: int) -> int:
    try:
        return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_checkpoint_that_cannot_be_restored_stops_the_worker_with_the_fix(
    eddy_topic_factory: Callable[..., str],
    run_worker: Callable[..., WorkerThread],
    eddy_services: ResolvedServices,
) -> None:
    topic = eddy_topic_factory("events")
    store = StateStore(eddy_services.state_url)
    foreign = dump_state({"learned": 5}, b"the secret of another deployment")
    store.write_checkpoint(Checkpoint(pipeline="stale", state=foreign, events=5, offsets={f"{topic}:0": 5}))

    with pytest.raises(CheckpointError) as failed:
        run_worker([learn_spec("stale", topic)])

    message = str(failed.value)
    assert "pipeline 'stale'" in message and "5 events" in message
    assert "another EDDY_SECRET" in message  # the reason
    assert "eddy checkpoints delete stale" in message  # the fix
    assert store.read_checkpoint("stale") is not None  # left for the user to decide
