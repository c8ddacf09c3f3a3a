"""SIGKILL a worker at any point, restart it, and it has learned every event exactly once."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from river import linear_model

from connectors.bus import KafkaBus
from connectors.embedded import ServiceProcess
from connectors.messages import encode
from connectors.services import ResolvedServices
from connectors.state import StateStore
from pipelines.serialization import load_state
from tests.fixtures.worker_process import WorkerProcess
from tests.pipelines.test_runtime import events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
TOTAL = 4000


@pytest.mark.parametrize("kill_after", [350, 1700, 3100])
def test_sigkill_and_restart_learns_every_event_exactly_once(
    kill_after: int,
    eddy_bus: KafkaBus,
    eddy_broker: ServiceProcess,
    eddy_redis: ServiceProcess,
    eddy_services: ResolvedServices,
    eddy_topic_factory: Any,
    tmp_path: Path,
) -> None:
    topic = eddy_topic_factory("events")
    name = f"kill-{kill_after}"
    spec = {
        "name": name,
        "input": {"topics": [topic], "schema": "event/v1"},
        "operator": {"use": "river.linear_model:LogisticRegression", "mode": "learn"},
        "batch": {"max": 50, "within_ms": 5},
        "checkpoint": {"every_events": 250, "every_s": 60},
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    env = {
        **os.environ,
        "EDDY_BROKER": eddy_broker.url,
        "EDDY_STATE": eddy_redis.url,
        "EDDY_HOME": str(tmp_path / "home"),
        "EDDY_SECRET": "exactly-once",
    }
    stream = events(TOTAL)
    log = tmp_path / "worker.log"

    # events keep arriving while the worker runs, so the kill lands mid-stream
    def feed() -> None:
        for start in range(0, TOTAL, 100):
            eddy_bus.produce(topic, [encode(e) for e in stream[start : start + 100]])

    first = WorkerProcess(spec_path, env, log)
    feeder = threading.Thread(target=feed)
    feeder.start()
    first.wait_for(lambda s: s["learned"] >= kill_after, f"{kill_after} events learned")
    first.kill()
    feeder.join()

    second = WorkerProcess(spec_path, env, log)
    try:
        second.wait_for(lambda s: s["learned"] >= TOTAL, "every event learned after the restart")
    finally:
        assert second.stop() == 0

    checkpoint = StateStore(eddy_redis.url).read_checkpoint(name)
    assert checkpoint is not None
    state = load_state(checkpoint.state, b"exactly-once")
    assert state["learned"] == TOTAL
    assert checkpoint.offsets == {f"{topic}:0": TOTAL}

    reference = linear_model.LogisticRegression()
    for event in stream:
        reference.learn_one(event.features, event.label)
    assert state["learner"].weights == reference.weights
    assert state["learner"].intercept == reference.intercept
