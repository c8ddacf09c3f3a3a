"""SIGKILL a worker at any point, restart it, and it has learned every event exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from river import linear_model

from connectors.bus import KafkaBus
from connectors.embedded import ServiceProcess, free_port
from connectors.messages import encode
from connectors.services import ResolvedServices
from connectors.state import StateStore
from pipelines.serialization import load_state
from tests.pipelines.test_runtime import events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
TOTAL = 4000


def _status(port: int) -> dict[str, Any] | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2).read()
    except OSError:
        return None
    statuses: list[dict[str, Any]] = json.loads(body)
    return statuses[0]


def _start(spec_path: Path, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    eddy = str(Path(sys.executable).parent / "eddy")
    return subprocess.Popen(
        [eddy, "run", str(spec_path), "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab")
    )


def _wait(proc: subprocess.Popen[bytes], port: int, condition: Any, what: str, timeout_s: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        status = _status(port)
        if status is not None and condition(status):
            return
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last status {status}")
        time.sleep(0.05)


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
    port = free_port()
    log = tmp_path / "worker.log"

    # events keep arriving while the worker runs, so the kill lands mid-stream
    def feed() -> None:
        for start in range(0, TOTAL, 100):
            eddy_bus.produce(topic, [encode(e) for e in stream[start : start + 100]])

    first = _start(spec_path, env, port, log)
    feeder = threading.Thread(target=feed)
    feeder.start()
    _wait(first, port, lambda s: s["learned"] >= kill_after, f"{kill_after} events learned")
    first.send_signal(signal.SIGKILL)
    first.wait()
    feeder.join()

    second = _start(spec_path, env, port, log)
    try:
        _wait(second, port, lambda s: s["learned"] >= TOTAL, "every event learned after the restart")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0

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
