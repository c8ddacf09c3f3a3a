"""``eddy demo`` (what ``make run`` starts): the live platform and its learners, on embedded services.

Two sources feed one worker:

- the **live platform**: the simulator's feed (:class:`connectors.sources.live_feed.LiveFeed`) plays simulated days
  of a live-streaming app in closed loop, paced in event time (``live_speed`` event seconds per wall second), with a
  drift event each day (the most popular streamer goes offline, then a category trends). The ``live-allocation``
  pipeline answers its feed requests (SL-MGAC, learning online under the app-time constraint of never inserting,
  less 1%), ``live-ctr`` learns a CTR from the interactions it writes (EmbeddingCTR, AUC, ADWIN) and
  ``live-recommender`` recommends live streamers per interaction (a sequence transformer trained on a simulated
  past day as the demo starts);
- a drifting SEA stream on ``demo.events`` at a steady rate for the ``demo`` pipeline (DriftMoE's MoE-Data, ADWIN).

The pipelines checkpoint to Redis and publish model versions to MLflow; a status line shows each pipeline's events,
score, alarms and versions, and the dashboard (``eddy dashboard``) serves their live charts: scores (accuracy, AUC,
allocation rate, live and app time per session against the constraint) with the drift alarms marked, expert shares,
events/s, lag and p99 latency. Ctrl-C stops everything cleanly; ``--events N`` stops after the ``demo`` pipeline
has N events and exits 0.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import itertools
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from connectors.bus import KafkaBus
from connectors.messages import encode
from connectors.registry import ModelRegistry
from connectors.services import ResolvedServices
from connectors.sources import drifting_sea
from connectors.sources.live_feed import LiveFeed
from connectors.sources.live_platform import (
    CategoryTrend,
    LivePlatform,
    LivePlatformConfig,
    StreamerOffline,
    always,
    never,
)
from pipelines.dashboard import dashboard_url, serve_dashboard
from pipelines.follower import announce
from pipelines.recommender_training import publish_recommender, train_recommender, user_sequences
from pipelines.runtime import PipelineStatus
from pipelines.spec import PipelineSpec, load_spec
from pipelines.worker import Worker

DEMO_TOPIC = "demo.events"
DEMO_PARTITIONS = 4
LIVE_TOPICS = ("live.requests", "live.allocations", "live.interactions", "live.rooms")
RECOMMENDER = "live-recommender"  # the model the live-recommender example follows
log = logging.getLogger(__name__)
CONSTRAINT_MARGIN = 0.01  # app time per session may fall at most 1% below never inserting's


def _example(name: str) -> PipelineSpec:
    resource = importlib.resources.files("pipelines") / "examples" / name
    with importlib.resources.as_file(resource) as path:
        return load_spec(path)


def demo_spec() -> PipelineSpec:
    """The demo pipeline shipped in ``pipelines/examples/demo-driftmoe.yaml``."""
    return _example("demo-driftmoe.yaml")


def platform_config(users: int, day: int) -> LivePlatformConfig:
    """Day ``day`` of the demo's live platform: ``users`` users, and its drift events (the most popular streamer
    goes offline at 08:00, a category trends from 16:00)."""
    return LivePlatformConfig(
        users=users,
        drift=(StreamerOffline(hour=8.0), CategoryTrend(hour=16.0, category=day % LivePlatformConfig.categories)),
        start_ms=LivePlatformConfig.start_ms + day * 86_400_000,
    )


def live_specs(users: int, seed: int) -> list[PipelineSpec]:
    """The live pipelines sized for the demo's platform, the allocation constraint taken from a simulated day
    without live insertions."""
    config = platform_config(users, 0)
    sessions = LivePlatform(config, seed).run(never).sessions
    floor = float((sessions.live_seconds + sessions.video_seconds).mean()) * (1.0 - CONSTRAINT_MARGIN)
    allocation = _example("live-allocation.yaml")
    assert allocation.allocate is not None
    sizes = {"groups": len(config.groups), "streamers": config.streamers, "seed": seed}
    settings = {**allocation.allocate.config, "app_floor": round(floor, 1)}
    allocate = allocation.allocate.model_copy(update={**sizes, "config": settings})
    return [
        allocation.model_copy(update={"allocate": allocate}),
        _example("live-ctr.yaml"),
        _example("live-recommender.yaml"),
    ]


class _Stopped(Exception):
    """The demo stopped while the recommender was training."""


def publish_demo_recommender(
    services: ResolvedServices, options: DemoOptions, secret: bytes, stop: threading.Event
) -> None:
    """Train the streamer recommender on a simulated past day of the demo's platform and publish it as
    ``live-recommender@champion``: the live-recommender pipeline waits for it, then recommends live streamers.
    Training gives up at ``stop`` (torch must not be mid-step when the process exits)."""

    def check(step: int, loss: float) -> None:
        if stop.is_set():
            raise _Stopped

    try:
        past = LivePlatform(platform_config(options.users, 0), options.seed + 10_000).run(always)
        trained = train_recommender(user_sequences(past.kuailive), seed=options.seed, on_step=check)
        registry = ModelRegistry(services.registry_uri, Path(services.artifacts_dir))
        _, update = publish_recommender(registry, RECOMMENDER, trained, secret)
        assert update is not None  # published under an alias
        announce(KafkaBus(services.broker_url), update)
    except _Stopped:
        return
    except Exception:  # the other pipelines go on without recommendations
        log.exception("the demo's recommender could not be trained and published")


@dataclass
class DemoOptions:
    """What ``eddy demo`` was asked for."""

    events: int | None = None
    rate: float = 500.0
    users: int = 500
    live_speed: float = 300.0
    port: int = 9400
    dashboard_port: int = 9500
    seed: int = 42
    torch_threads: int = 1


def _produce(bus: KafkaBus, options: DemoOptions, stop: threading.Event) -> None:
    """Write the drifting stream at ``options.rate`` events/s until ``options.events`` or ``stop``."""
    producer = bus.producer()
    stream = drifting_sea(seed=options.seed)
    if options.events is not None:
        stream = itertools.islice(stream, options.events)
    started = time.monotonic()
    try:
        for i, event in enumerate(stream):
            if stop.is_set():
                break
            producer.send(DEMO_TOPIC, key=(event.key or "").encode(), value=encode(event))
            ahead = (i + 1) / options.rate - (time.monotonic() - started)
            if ahead > 0 and stop.wait(ahead):
                break
        producer.flush()
    finally:
        producer.close()


class LiveFeedLoop:
    """The live platform's feed, one simulated day after another (day ``d`` seeded ``seed + d``) until stopped."""

    def __init__(self, bus: KafkaBus, options: DemoOptions) -> None:
        self.bus, self.options = bus, options
        self.day = 0
        self.feed: LiveFeed | None = None

    def run(self, stop: threading.Event) -> None:
        """Play days until ``stop``."""
        while not stop.is_set():
            platform = LivePlatform(platform_config(self.options.users, self.day), self.options.seed + self.day)
            self.feed = LiveFeed(self.bus, platform, speed=self.options.live_speed, max_in_flight=256)
            self.feed.run(stop)
            self.day += 1

    def summary(self) -> str:
        """``live day 1, 04:12 │ 3,210 requests │ 12% inserted``."""
        if self.feed is None:
            return "live platform starting"
        status = self.feed.status()
        clock = "--:--"
        if status.event_time is not None:
            seconds = status.event_time - self.feed.platform.config.start_ms / 1000.0
            clock = f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"
        return (
            f"live day {self.day + 1}, {clock} │ {status.requests:,} requests │ "
            f"{100 * status.allocation_rate:.0f}% inserted │ {status.timeouts:,} timeouts"
        )


def status_line(status: PipelineStatus, rate: float | None = None) -> str:
    """``demo 12,000 events (1,990 ev/s), accuracy 0.873, lag 3, model v2, 1 drift alarm``."""
    version = f"v{status.model_version}" if status.model_version else "none yet"
    score = next(iter(status.scores.items()), None)
    speed = f" ({rate:,.0f} ev/s)" if rate is not None else ""
    return (
        f"[bold]{status.pipeline}[/] {status.events_in:,} events{speed}"
        + (f", {score[0]} {score[1]:.3f}" if score else "")
        + f", lag {status.lag:,}, model {version}, {status.drifts} drift alarms, {status.dead_letters} dead letters"
    )


async def run_demo(services: ResolvedServices, options: DemoOptions, secret: bytes, console: Console) -> int:
    """Run the demo until Ctrl-C or until the ``demo`` pipeline has ``options.events``; returns the exit code."""
    if options.events is not None and options.events < 1:
        raise ValueError(f"--events must be >= 1 (got {options.events})")
    if options.rate <= 0:
        raise ValueError(f"--rate must be > 0 events/s (got {options.rate})")
    if options.users < 1 or options.live_speed <= 0:
        raise ValueError(f"--users must be >= 1 and --live-speed > 0 (got {options.users} and {options.live_speed})")
    specs = [demo_spec(), *live_specs(options.users, options.seed)]
    bus = KafkaBus(services.broker_url)
    bus.create_topics([DEMO_TOPIC, *LIVE_TOPICS], DEMO_PARTITIONS)
    worker = Worker(
        specs,
        services,
        secret=secret,
        port=options.port,
        partitions=DEMO_PARTITIONS,
        torch_threads=options.torch_threads,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sources_stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(bus, options, sources_stop), daemon=True)
    live = LiveFeedLoop(bus, options)
    feed = threading.Thread(target=live.run, args=(sources_stop,), daemon=True)
    url = f"http://127.0.0.1:{options.port}/metrics"
    console.print(
        f"Eddy demo: broker {services.broker_url}, state {services.state_url}, registry {services.registry_uri}"
    )
    console.print(f"pipelines: {', '.join(s.name for s in specs)}; metrics: {url}")
    console.print(f"dashboard: {dashboard_url('127.0.0.1', options.dashboard_port)}  (Ctrl-C to stop)")
    dashboard = asyncio.create_task(
        serve_dashboard(services.state_url, "127.0.0.1", options.dashboard_port, None, stop)
    )
    run = asyncio.create_task(worker.run(stop))
    producer.start()
    feed.start()
    recommender = threading.Thread(
        target=publish_demo_recommender, args=(services, options, secret, sources_stop), daemon=True
    )
    recommender.start()
    last_count, last_time = 0, time.monotonic()
    with console.status("starting…") as status_view:
        while not stop.is_set() and not run.done():
            await asyncio.sleep(0.5)
            statuses = worker.status()
            now = time.monotonic()
            rate = (statuses[0].events_in - last_count) / (now - last_time)
            last_count, last_time = statuses[0].events_in, now
            lines = [status_line(statuses[0], rate), *map(status_line, statuses[1:]), live.summary()]
            status_view.update("\n".join(lines))
            if options.events is not None and statuses[0].events_in >= options.events:
                stop.set()
    sources_stop.set()
    stop.set()
    try:
        await run  # raises what stopped the worker, e.g. a checkpoint it cannot restore
    finally:  # the sources' threads end before the interpreter does, also when the worker failed
        await dashboard
        producer.join(timeout=10)
        feed.join(timeout=30)
        recommender.join(timeout=60)
    for status in worker.status():
        scores = ", ".join(f"{name} {value:.3f}" for name, value in status.scores.items())
        console.print(
            f"stopped: {status.events_in:,} events, {scores}, {status.drifts} drift alarms, "
            f"{status.checkpoints} checkpoints, {status.published} model versions published, "
            f"{status.dead_letters} dead letters ({status.pipeline})"
        )
    return 0
