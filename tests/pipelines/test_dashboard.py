"""The dashboard: history workers write to Redis, the HTTP API and page that read it, and the token rule."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.bus import KafkaBus
from connectors.embedded import free_port
from connectors.messages import encode
from connectors.state import StateStore
from pipelines.cli import main
from pipelines.dashboard import DashboardError, build_app, check_binding
from tests.fixtures.browser import INSTALL_HINT, find_chromium, headless_chromium
from tests.pipelines.test_runtime import events, learn_spec

pytestmark = pytest.mark.timeout(120)


def test_series_are_bounded_and_read_oldest_first(eddy_state: StateStore) -> None:
    for i in range(7):
        eddy_state.append_point("demo", {"t": float(i)}, keep=5)
    assert [p["t"] for p in eddy_state.points("demo")] == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert [p["t"] for p in eddy_state.points("demo", limit=2)] == [5.0, 6.0]
    eddy_state.put("demo", "x:series", b"not a series")  # a kv key that merely ends like one
    assert eddy_state.series_names() == ["demo"]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        eddy_state.append_point("demo", {}, keep=0)


def _serve(store: StateStore, token: str | None, check: Callable[[TestClient], Any]) -> None:
    async def run() -> None:
        async with TestClient(TestServer(build_app(store, token))) as client:
            await check(client)

    asyncio.run(run())


def test_page_assets_and_api_serve_the_history(eddy_state: StateStore) -> None:
    eddy_state.append_point("live-ctr", {"t": 1.0, "drifts": 0, "scores": {"accuracy": 0.8}}, keep=10)
    eddy_state.append_point("live-ctr", {"t": 2.0, "drifts": 1, "scores": {"accuracy": 0.6}}, keep=10)

    async def check(client: TestClient) -> None:
        page = await client.get("/")
        assert page.status == 200 and 'src="static/dashboard.js"' in await page.text()
        script = await client.get("/static/dashboard.js")
        assert script.status == 200 and "alarmTimes" in await script.text()
        assert (await client.get("/static/secrets.txt")).status == 404
        assert await (await client.get("/api/pipelines")).json() == {"pipelines": ["live-ctr"]}
        series = await (await client.get("/api/series/live-ctr?limit=1")).json()
        assert series["points"] == [{"t": 2.0, "drifts": 1, "scores": {"accuracy": 0.6}}]
        assert (await client.get("/api/series/live-ctr?limit=zero")).status == 400
        assert (await client.get("/api/series/bad:name")).status == 400

    _serve(eddy_state, None, check)


def test_a_token_is_required_when_one_is_set(eddy_state: StateStore) -> None:
    async def check(client: TestClient) -> None:
        assert (await client.get("/api/pipelines")).status == 401
        assert (await client.get("/", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await client.get("/api/pipelines", headers={"Authorization": "Bearer s3cret"})).status == 200
        assert (await client.get("/?token=s3cret")).status == 200

    _serve(eddy_state, "s3cret", check)


def test_listening_beyond_loopback_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    check_binding("::1", None)
    check_binding("10.0.0.5", "token")
    with pytest.raises(DashboardError, match="set EDDY_DASHBOARD_TOKEN"):
        check_binding("dashboard.example.com", None)
    monkeypatch.delenv("EDDY_DASHBOARD_TOKEN", raising=False)
    assert main(["dashboard", "--host", "0.0.0.0"]) == 2


def test_workers_write_one_history_point_per_pipeline_each_second(
    eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str], eddy_state: StateStore, run_worker: Any
) -> None:
    topic = eddy_topic_factory("events")
    eddy_bus.produce(topic, [encode(e) for e in events(300)])
    spec = learn_spec("history", topic, monitor={"detector": "adwin", "metrics": ["accuracy"]})
    worker = run_worker([spec])
    worker.wait_for(lambda: worker.worker.status()[0].events_in >= 300, 60, "300 events")
    worker.wait_for(lambda: any(p["events_in"] >= 300 for p in eddy_state.points("history")), 30, "a history point")
    point = eddy_state.points("history")[-1]
    assert {"t", "rate", "lag", "p99_ms", "scores", "drifts", "alarms", "model_version", "expert_shares"} <= set(point)
    assert point["scores"]["accuracy"] > 0 and point["p99_ms"] is not None and point["drifts"] == len(point["alarms"])


def test_a_mixture_of_experts_pipeline_exports_its_expert_shares(
    eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str], eddy_state: StateStore, run_worker: Any
) -> None:
    topic = eddy_topic_factory("events")
    eddy_bus.produce(topic, [encode(e) for e in events(400)])
    moe = {"use": "learners.driftmoe:MoEData", "params": {"n_experts": 4, "top_k": 2}, "mode": "learn"}
    worker = run_worker([learn_spec("moe", topic, operator=moe)])
    worker.wait_for(lambda: any(p["events_in"] >= 400 for p in eddy_state.points("moe")), 60, "a history point")
    shares = eddy_state.points("moe")[-1]["expert_shares"]
    assert set(shares) == {"0", "1", "2", "3"} and abs(sum(shares.values()) - 1.0) < 1e-9
    registry = worker.worker.metrics.registry
    exported = [registry.get_sample_value("eddy_expert_share", {"pipeline": "moe", "expert": e}) for e in shares]
    assert None not in exported and abs(sum(v or 0.0 for v in exported) - 1.0) < 1e-9


EDDY = str(Path(sys.executable).parent / "eddy")
# drifting_sea's defaults, which the demo uses: the first concept change is centred on event 19,000 of the stream
FIRST_DRIFT = 19_000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dashboard_in_headless_chromium_marks_a_drift_alarm_while_the_demo_runs(
    tmp_path: Path, artifacts: Path
) -> None:
    """DESIGN §6: with ``eddy demo`` running, the page loads without console errors and shows a drift alarm that
    fell after the stream's first drift point; the screenshot is left in the test's artifacts."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(f"needs a headless browser: {INSTALL_HINT}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDDY_")}
    env["EDDY_HOME"] = str(tmp_path / "home")
    log_path = artifacts / "demo.log"
    with log_path.open("w") as log:
        demo = subprocess.Popen(
            [EDDY, "demo", "--port", "0", "--dashboard-port", str(free_port())],  # at make run's rate
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        url = _dashboard_url(log_path, demo)
        with headless_chromium(chromium, tmp_path) as page:
            page.open(url)
            positions = page.wait_for(
                f"""(() => {{
                  const node = document.querySelector('[data-alarm-positions]');
                  const after = (node?.dataset.alarmPositions || '').split(',').filter((p) => +p > {FIRST_DRIFT});
                  return after.length ? node.dataset.alarmPositions : '';
                }})()""",
                timeout_s=200,
            )
            live_charts = page.wait_for(
                """(() => {
                  const wanted = [['live-allocation', 'allocation'], ['live-allocation', 'session'],
                                  ['live-ctr', 'auc'], ['live-recommender', 'hit']];
                  return wanted.every(([p, f]) => document.querySelector(`#pipeline-${p} canvas[data-family="${f}"]`))
                    ? 'yes' : '';
                })()""",
                timeout_s=120,
            )
            versions = page.evaluate("document.querySelector('[data-versions]').textContent")
            drawn = page.evaluate(
                "[...document.querySelectorAll('canvas')].map((c) => c.width > 0 && "
                "c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v) => v !== 0))"
            )
            page.screenshot(artifacts / "dashboard.png")
            assert page.console_errors() == []
        assert any(int(p) > FIRST_DRIFT for p in positions.split(","))
        assert live_charts == "yes"  # allocation rate, live and app time vs the floor, AUC, hit rate
        assert versions != "none"  # the demo publishes a version every 10,000 events
        assert drawn and all(drawn), drawn  # every chart has something on it
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, log_path.read_text()[-3000:]


def _dashboard_url(log_path: Path, demo: subprocess.Popen[bytes], timeout_s: float = 120) -> str:
    """The dashboard URL the demo prints, once the page answers there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            raise AssertionError(f"the demo exited with {demo.returncode}: {log_path.read_text()[-3000:]}")
        found = re.search(r"dashboard: (http://\S+)", log_path.read_text())
        if found:
            try:
                with urllib.request.urlopen(found.group(1), timeout=5) as response:
                    if response.status == 200:
                        return found.group(1)
            except OSError:
                pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(timeout=0.2)
    raise AssertionError(f"no dashboard answered within {timeout_s:.0f}s: {log_path.read_text()[-3000:]}")
