"""``eddy demo`` (what ``make run`` starts): an online learner on a drifting stream, on embedded services.

A producer thread writes a drifting SEA stream to ``demo.events`` at a steady rate; the ``demo`` pipeline (DriftMoE's
MoE-Data, prequential, ADWIN on its error) consumes it, publishes predictions to ``demo.predictions``, checkpoints to
Redis and publishes model versions to MLflow; a one-line status shows events/s, prequential accuracy, lag and
the model version and drift alarms, and the dashboard (``eddy dashboard``) serves its live charts: accuracy with the
alarms marked, the router's expert shares, events/s, lag, p99 latency and model versions. Ctrl-C stops everything
cleanly; ``--events N`` stops after N events and exits 0.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import itertools
import signal
import threading
import time
from dataclasses import dataclass

from rich.console import Console

from connectors.bus import KafkaBus
from connectors.messages import encode
from connectors.services import ResolvedServices
from connectors.sources import drifting_sea
from pipelines.dashboard import dashboard_url, serve_dashboard
from pipelines.runtime import PipelineStatus
from pipelines.spec import PipelineSpec, load_spec
from pipelines.worker import Worker

DEMO_TOPIC = "demo.events"
DEMO_PARTITIONS = 4


def demo_spec() -> PipelineSpec:
    """The demo pipeline shipped in ``pipelines/examples/demo-driftmoe.yaml``."""
    resource = importlib.resources.files("pipelines") / "examples" / "demo-driftmoe.yaml"
    with importlib.resources.as_file(resource) as path:
        return load_spec(path)


@dataclass
class DemoOptions:
    """What ``eddy demo`` was asked for."""

    events: int | None = None
    rate: float = 2000.0
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


def status_line(status: PipelineStatus, rate: float, url: str) -> str:
    """``demo │ 12,000 events │ 1,990 ev/s │ accuracy 0.873 │ lag 3 │ model v2 │ drifts 1 │ URL``."""
    accuracy = status.scores.get("accuracy", 0.0)
    version = f"v{status.model_version}" if status.model_version else "none yet"
    return (
        f"[bold]{status.pipeline}[/] │ {status.events_in:,} events │ {rate:,.0f} ev/s │ accuracy {accuracy:.3f} │ "
        f"lag {status.lag:,} │ model {version} │ drifts {status.drifts} │ dead letters {status.dead_letters} │ {url}"
    )


async def run_demo(services: ResolvedServices, options: DemoOptions, secret: bytes, console: Console) -> int:
    """Run the demo until Ctrl-C or ``options.events`` were learned; returns the exit code."""
    if options.events is not None and options.events < 1:
        raise ValueError(f"--events must be >= 1 (got {options.events})")
    if options.rate <= 0:
        raise ValueError(f"--rate must be > 0 events/s (got {options.rate})")
    spec = demo_spec()
    bus = KafkaBus(services.broker_url)
    bus.create_topics([DEMO_TOPIC], DEMO_PARTITIONS)
    worker = Worker(
        [spec],
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
    producer_stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(bus, options, producer_stop), daemon=True)
    url = f"http://127.0.0.1:{options.port}/metrics"
    console.print(
        f"Eddy demo: broker {services.broker_url}, state {services.state_url}, registry {services.registry_uri}"
    )
    console.print(f"metrics: {url}")
    console.print(f"dashboard: {dashboard_url('127.0.0.1', options.dashboard_port)}  (Ctrl-C to stop)")
    dashboard = asyncio.create_task(
        serve_dashboard(services.state_url, "127.0.0.1", options.dashboard_port, None, stop)
    )
    run = asyncio.create_task(worker.run(stop))
    producer.start()
    last_count, last_time = 0, time.monotonic()
    status = worker.status()[0]
    with console.status("starting…") as live:
        while not stop.is_set() and not run.done():
            await asyncio.sleep(0.5)
            status = worker.status()[0]
            now = time.monotonic()
            rate = (status.events_in - last_count) / (now - last_time)
            last_count, last_time = status.events_in, now
            live.update(status_line(status, rate, url))
            if options.events is not None and status.events_in >= options.events:
                stop.set()
    producer_stop.set()
    stop.set()
    await run
    await dashboard
    producer.join(timeout=10)
    status = worker.status()[0]
    scores = ", ".join(f"{name} {value:.3f}" for name, value in status.scores.items())
    console.print(
        f"stopped: {status.events_in:,} events, {scores}, {status.drifts} drift alarms, "
        f"{status.checkpoints} checkpoints, {status.published} model versions published, "
        f"{status.dead_letters} dead letters"
    )
    return 0
