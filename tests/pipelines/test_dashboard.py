"""The dashboard: history workers write to Redis, the HTTP API and page that read it, and the token rule."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.bus import KafkaBus
from connectors.messages import encode
from connectors.state import StateStore
from pipelines.cli import main
from pipelines.dashboard import DashboardError, build_app, check_binding
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
