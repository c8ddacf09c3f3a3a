"""A worker: one Faust app hosting one or more pipelines, its HTTP endpoints and its watchdog.

Used by ``eddy run``, ``eddy demo``, the benchmarks and the tests (in-process). Endpoints on ``--port``:
``/metrics`` (Prometheus), ``/healthz`` (the process is up), ``/readyz`` (partitions assigned and no partition
stalled past the threshold) and ``/status`` (JSON of :class:`~pipelines.runtime.PipelineStatus` per pipeline).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.bus import KafkaBus
from connectors.registry import ModelRegistry
from connectors.services import ResolvedServices
from connectors.state import CheckpointError, StateStore, StateUnavailableError
from pipelines.follower import MODELS_TOPIC
from pipelines.metrics import WorkerMetrics
from pipelines.runtime import PipelineRunner, PipelineStatus
from pipelines.spec import PipelineSpec
from pipelines.transport import EddyApp

log = logging.getLogger(__name__)

DEFAULT_STALL_THRESHOLD_S = 60.0
HISTORY_POINTS = 3600  # one point per pipeline per second: the dashboard's last hour


def ensure_topics(bus: KafkaBus, specs: Sequence[PipelineSpec], partitions: int) -> None:
    """Create the input, output and dead-letter topics the specs need, and the compacted ``eddy.models``."""
    existing = set(bus.list_topics())
    for spec in specs:
        missing_inputs = [t for t in spec.input.topics if t not in existing]
        if missing_inputs:
            log.warning("creating missing input topics %s with %d partitions", missing_inputs, partitions)
        bus.create_topics([*missing_inputs, *spec.outputs.values(), spec.dlq_topic], partitions)
    bus.create_topics([MODELS_TOPIC], compacted=True)


class Worker:
    """Hosts pipelines in one Faust app; ``await run(stop)`` until ``stop`` is set, then shuts down cleanly."""

    def __init__(
        self,
        specs: Sequence[PipelineSpec],
        services: ResolvedServices,
        *,
        secret: bytes,
        app_id: str | None = None,
        port: int | None = None,
        partitions: int = 1,
        stall_threshold_s: float = DEFAULT_STALL_THRESHOLD_S,
        torch_threads: int = 1,
    ) -> None:
        if not specs:
            raise ValueError("a worker needs at least one pipeline spec")
        if torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 (got {torch_threads}); set EDDY_TORCH_THREADS")
        # Operators run one event or one small batch at a time: torch's intra-op threads only add overhead there
        # (up to ~100x on tiny ops when workers share cores), so a worker uses one thread unless told otherwise.
        torch.set_num_threads(torch_threads)
        self.specs = list(specs)
        self.services = services
        self.port = port
        self.stall_threshold_s = stall_threshold_s
        self.bus = KafkaBus(services.broker_url)
        self.metrics = WorkerMetrics()
        self.store = StateStore(services.state_url)
        # the dashboard's history is best effort: one attempt per point, never a stall while Redis is away
        self.history = StateStore(services.state_url, retry_timeout_s=0)
        needs_registry = any(s.registry is not None for s in specs)
        self.registry = ModelRegistry(services.registry_uri, Path(services.artifacts_dir)) if needs_registry else None
        ensure_topics(self.bus, self.specs, partitions)
        faust_dir = Path(services.artifacts_dir).parent / "faust"
        faust_dir.mkdir(parents=True, exist_ok=True)
        self.app = EddyApp(
            app_id or "eddy-" + "-".join(s.name for s in self.specs),
            broker=services.broker_url,
            store="memory://",
            web_enabled=False,
            topic_disable_leader=True,
            topic_allow_declare=False,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=6,
            broker_heartbeat_interval=1,
            broker_commit_interval=1.0,
            producer_linger_ms=1,
            # Faust would wait at shutdown and rebalance for every event it handed out, including those still
            # buffered for an agent that stopped (a topic two pipelines share): the runners' lock makes a rebalance
            # wait for the batch in hand, and their checkpoints, not Faust's acks, say where a restart begins
            stream_wait_empty=False,
            stream_buffer_maxsize=max(4096, 4 * max(s.batch.max for s in self.specs)),
            fetch_max_wait_ms=min(s.input.fetch_wait_ms for s in self.specs),
            datadir=str(faust_dir),
        )
        self.runners = [
            PipelineRunner(
                spec,
                self.app,
                store=self.store,
                registry=self.registry,
                bus=self.bus,
                metrics=self.metrics,
                secret=secret,
            )
            for spec in self.specs
        ]
        self.app.positions = lambda: {tp: o for runner in self.runners for tp, o in runner.next_offsets.items()}
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]  # stub union
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]  # stub union
        self.assigned = asyncio.Event()
        self.failure: CheckpointError | None = None
        self._stop: asyncio.Event | None = None
        self.started_at = time.time()
        self._site: web.TCPSite | None = None

    async def _on_assigned(self, sender: Any, *args: Any, **_: Any) -> None:
        """Faust signal ``on_partitions_assigned(app, assigned)``: ready once every pipeline has restored. A
        checkpoint that cannot be restored stops the worker (:meth:`run` raises it) instead of Faust's rebalance."""
        assigned = args[0]
        try:
            for runner in self.runners:
                await runner.on_assigned(assigned)
        except CheckpointError as exc:
            log.error("%s", exc)
            self.failure = exc
            if self._stop is not None:
                self._stop.set()
            return
        if assigned:
            self.assigned.set()

    async def _on_revoked(self, sender: Any, *args: Any, **_: Any) -> None:
        """Faust signal ``on_partitions_revoked(app, revoked)``: a rebalance starts; not ready until the new
        assignment is restored (checkpoints read, partitions sought)."""
        revoked = args[0]
        self.assigned.clear()
        for runner in self.runners:
            await runner.on_revoked(revoked)

    def status(self) -> list[PipelineStatus]:
        """Status of every pipeline of this worker."""
        return [runner.status() for runner in self.runners]

    def ready(self) -> tuple[bool, str]:
        """Ready when partitions are assigned and none is stalled past the threshold."""
        if not self.assigned.is_set():
            return False, "waiting for partition assignment"
        for status in self.status():
            if status.max_stall_s > self.stall_threshold_s:
                return False, f"pipeline {status.pipeline} stalled for {status.max_stall_s:.0f}s with lag"
        return True, "ok"

    async def _serve_http(self) -> None:
        async def metrics(_: web.Request) -> web.Response:
            body = generate_latest(self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def readyz(_: web.Request) -> web.Response:
            ok, why = self.ready()
            return web.Response(text=why, status=200 if ok else 503)

        async def status(_: web.Request) -> web.Response:
            payload = [dataclasses.asdict(s) for s in self.status()]
            return web.Response(text=json.dumps(payload), content_type="application/json")

        http = web.Application()
        http.add_routes(
            [
                web.get("/metrics", metrics),
                web.get("/healthz", healthz),
                web.get("/readyz", readyz),
                web.get("/status", status),
            ]
        )
        runner = web.AppRunner(http, access_log=None)
        await runner.setup()
        self._site = web.TCPSite(runner, "0.0.0.0", self.port)
        await self._site.start()
        log.info("metrics on http://127.0.0.1:%d/metrics", self.port)

    def _write_history(self, points: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            for pipeline, point in points:
                self.history.append_point(pipeline, point, HISTORY_POINTS)
        except StateUnavailableError as exc:
            log.debug("dashboard history point skipped: %s", exc)

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for runner in self.runners:
                runner.refresh_gauges(self.stall_threshold_s)
            now = time.time()
            await asyncio.to_thread(self._write_history, [(r.spec.name, r.history_point(now)) for r in self.runners])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            for runner in self.runners:
                await runner.checkpoint_if_due()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then write final checkpoints and stop the Faust app. Raises the
        :class:`~connectors.state.CheckpointError` of a pipeline whose checkpoint could not be restored, after
        stopping."""
        self._stop = stop
        for runner in self.runners:
            runner.start()
        if self.port is not None:
            await self._serve_http()
        await self.app.start()
        watcher = asyncio.create_task(self._watch(stop))
        try:
            await stop.wait()
        finally:
            await watcher
            for runner in self.runners:
                await runner.stop()
            await self.app.stop()
            if self._site is not None:
                await self._site.stop()
            self.store.close()
            self.history.close()
        if self.failure is not None:
            raise self.failure
