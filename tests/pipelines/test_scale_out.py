"""Scaling a pipeline out: two, then three worker processes in one consumer group share a 6-partition topic; one
is stopped mid-stream and hands its partitions over; per-key state follows each partition through its checkpoint.

The pipeline forecasts each user's next interaction from that user's recent interactions (mode sequence, kept per
user in Redis). Training is off, so a forecast is a function of the user's sequence alone: a lost, repeated or
stale interaction in any user's sequence after a handover would change that user's later forecasts. The forecasts
of the scaled-out run are therefore compared one by one with those of a single worker that never stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.bus import KafkaBus
from connectors.embedded import ServiceProcess
from connectors.messages import Interaction, encode
from connectors.state import StateStore
from pipelines.testing import PipelineHarness
from tests.fixtures.worker_process import Status, WorkerProcess, wait_for_all
from tests.pipelines.test_sequence_pipeline import KINDS, interactions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]
PARTITIONS = 6
HISTORY = 12


def spec(name: str, topic: str) -> dict[str, Any]:
    return {
        "name": name,
        "input": {"topics": [topic], "schema": "interaction/v1"},
        "operator": {
            "use": "learners.tpp:ContinualTPP",
            "params": {"strategy": "prompt", "d_model": 16, "seed": 0},
            "mode": "sequence",
        },
        "sequence": {"kinds": KINDS, "history": HISTORY, "train_every_events": 10**9},
        "batch": {"max": 64, "within_ms": 5},
        "checkpoint": {"every_events": 200, "every_s": 60},
    }


def spread(sizes: list[int]) -> Callable[[list[Status]], bool]:
    """The workers hold these many input partitions each (in order), all six between them, none twice."""

    def holds(statuses: list[Status]) -> bool:
        held = [p for s in statuses for p in s["partitions"]]
        return [len(s["partitions"]) for s in statuses] == sizes and len(set(held)) == len(held) == PARTITIONS

    return holds


def forecasts(decoded: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, Any]]:
    """Forecasts by (user, interaction time); fails on a second forecast for the same interaction."""
    by_event: dict[tuple[str, float], dict[str, Any]] = {}
    for forecast in decoded:
        key = (forecast["user"], forecast["ts"])
        assert key not in by_event, f"two forecasts for the interaction {key}"
        by_event[key] = forecast
    return by_event


def test_workers_share_partitions_and_a_stopped_worker_hands_over_its_users(
    eddy_bus: KafkaBus,
    eddy_broker: ServiceProcess,
    eddy_redis: ServiceProcess,
    eddy_topic_factory: Any,
    pipeline_harness: Callable[..., PipelineHarness],
    tmp_path: Path,
) -> None:
    stream = interactions(users=48, t_end=15.0)
    third = len(stream) // 3
    phases = [stream[:third], stream[third : 2 * third], stream[2 * third :]]
    topic = eddy_topic_factory("interactions", partitions=PARTITIONS)
    name = "scale-out"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec(name, topic)))
    sink = f"{name}.predictions"
    env = {
        **os.environ,
        "EDDY_BROKER": eddy_broker.url,
        "EDDY_STATE": eddy_redis.url,
        "EDDY_HOME": str(tmp_path / "home"),
        "EDDY_SECRET": "scale-out",
    }
    log = tmp_path / "workers.log"

    def produce(messages: list[Interaction]) -> None:
        eddy_bus.produce(topic, [encode(m) for m in messages], keys=[m.user.encode() for m in messages])

    def answered(n: int) -> None:
        assert len(eddy_bus.read(sink, n, timeout_s=120)) == n, f"fewer than {n} forecasts; see {log}"

    produce(phases[0])
    first, second = WorkerProcess(spec_path, env, log), WorkerProcess(spec_path, env, log)
    workers = [first, second]
    try:
        wait_for_all(workers, spread([3, 3]), "two workers holding three partitions each")
        answered(len(phases[0]))

        third_worker = WorkerProcess(spec_path, env, log)
        workers.append(third_worker)
        wait_for_all(workers, spread([2, 2, 2]), "three workers holding two partitions each")
        produce(phases[1])
        answered(2 * third)

        before = third_worker.wait_for(lambda s: True, "the third worker's status")["events_in"]
        produce(phases[2])
        third_worker.wait_for(lambda s: s["events_in"] > before, "the third worker working on the last phase")
        assert third_worker.stop() == 0  # mid-stream: its final checkpoint, then it leaves the group
        workers.remove(third_worker)
        wait_for_all(workers, spread([3, 3]), "the two remaining workers holding three partitions each")
        answered(len(stream))
    finally:
        exits = [worker.stop() for worker in workers]
    assert exits == [0] * len(exits)

    # no interaction lost or answered twice, and every forecast as a single worker that never stopped made it
    assert sum(eddy_bus.describe(sink).messages.values()) == len(stream)
    scaled = forecasts([json.loads(r.value) for r in eddy_bus.read(sink, len(stream), timeout_s=30)])
    reference = pipeline_harness(spec("scale-out-reference", eddy_topic_factory("reference")))
    reference.send(stream)
    alone = forecasts(reference.run().outputs["predictions"])
    assert scaled.keys() == alone.keys() == {(m.user, m.ts) for m in stream}
    for key, forecast in alone.items():
        assert scaled[key]["next_kind"] == forecast["next_kind"], key
        assert scaled[key]["next_ts"] == pytest.approx(forecast["next_ts"], rel=1e-6), key
        assert scaled[key]["kind_probs"] == pytest.approx(forecast["kind_probs"], rel=1e-5), key

    # each user's sequence in Redis is its last interactions, once each, whichever workers wrote it
    store = StateStore(eddy_redis.url)
    try:
        for user in {m.user for m in stream}:
            mine = [m for m in stream if m.user == user][-HISTORY:]
            kept = json.loads(store.get(name, user) or b"{}")
            assert kept["ts"] == [m.ts for m in mine], user
    finally:
        store.close()
