"""Platform-core benchmark: a raw kafka-python loop vs. an Eddy relay vs. Eddy hosting River's Hoeffding tree.

All three run as their own process against one embedded Tansu (and Redis for Eddy's checkpoints):

(a) ``bench.raw_loop``: a kafka-python consumer that produces every record it reads to the output topic;
(b) ``eddy run`` with a ``relay`` pipeline (decode + validate + no-op operator + produce + checkpoints);
(c) ``eddy run`` with a prequential ``river.tree:HoeffdingTreeClassifier`` pipeline.

Throughput: the input topic is filled first; events/s is computed from the output records' broker timestamps
(first to last), so start-up (consumer-group join) is not counted for anyone. Latency: a producer offers events at
a fixed rate; event-to-output latency is the output record's timestamp minus the input event's send time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kafka.consumer.fetcher import ConsumerRecord
from rich.progress import Progress

from bench.report import write_section
from connectors.bus import KafkaBus
from connectors.embedded import REDIS, TANSU, ServiceProcess, free_port
from connectors.messages import Event, encode
from connectors.sources import drifting_sea

PARTITIONS = 4
RATE = 2000.0
REPEATS = 3  # throughput runs per contender; the table shows the median and the range


@dataclass
class Scenario:
    """One contender: how to start it for an input and output topic."""

    label: str
    command: Callable[[str, str, Path], list[str]]


def _raw_command(broker: str) -> Callable[[str, str, Path], list[str]]:
    return lambda src, dst, _: [sys.executable, "-m", "bench.raw_loop", broker, src, dst]


def _eddy_command(name: str, operator: dict[str, Any]) -> Callable[[str, str, Path], list[str]]:
    def command(src: str, dst: str, workdir: Path) -> list[str]:
        spec = {
            "name": f"{name}-{dst.rsplit('.', 1)[-1]}",
            "input": {"topics": [src], "schema": "event/v1"},
            "operator": operator,
            "batch": {"max": 500, "within_ms": 5},
            "outputs": {"predictions": dst},
            "checkpoint": {"every_events": 10000, "every_s": 5},
        }
        path = workdir / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return [str(Path(sys.executable).parent / "eddy"), "run", str(path), "--port", str(free_port())]

    return command


def _events(count: int, seed: int) -> list[bytes]:
    stream = drifting_sea(seed=seed)
    return [encode(next(stream)) for _ in range(count)]


def _send_at_rate(bus: KafkaBus, topic: str, count: int, rate: float, sent: dict[tuple[int, int], float]) -> None:
    """Offer ``count`` events at ``rate``/s, each stamped with its send time; record (partition, offset) -> time."""
    producer = bus.producer(linger_ms=0)
    stream = drifting_sea(seed=7)
    started = time.monotonic()
    futures = []
    for i in range(count):
        event = next(stream)
        now = time.time()
        stamped = Event(key=event.key, ts=now, features=event.features, label=event.label)
        futures.append((producer.send(topic, key=(event.key or "").encode(), value=encode(stamped)), now))
        delay = (i + 1) / rate - (time.monotonic() - started)
        if delay > 0:
            time.sleep(delay)
    producer.flush()
    for future, ts in futures:
        meta = future.get(timeout=30)
        sent[(meta.partition, meta.offset)] = ts
    producer.close()


def _input_time(record: ConsumerRecord, sent: dict[tuple[int, int], float]) -> float | None:
    """When the input behind an output was sent; None for the warm-up event and unmatched outputs."""
    body = json.loads(record.value)
    if body.get("key") == "warm":
        return None
    if body.get("schema") == "prediction/v1":
        return sent.get((body["source_partition"], body["source_offset"]))
    return float(body["ts"])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class CoreBench:
    """Runs the scenarios on one broker and formats the table."""

    def __init__(self, events: int, latency_seconds: float) -> None:
        self.events = events
        self.latency_events = int(RATE * latency_seconds)
        self.workdir = Path(tempfile.mkdtemp(prefix="eddy-bench-"))
        self.broker = ServiceProcess(TANSU, self.workdir / "broker", free_port()).start()
        self.redis = ServiceProcess(REDIS, self.workdir / "redis", free_port()).start()
        self.bus = KafkaBus(self.broker.url)
        self.env = {
            **os.environ,
            "EDDY_BROKER": self.broker.url,
            "EDDY_STATE": self.redis.url,
            "EDDY_HOME": str(self.workdir / "home"),
            "EDDY_SECRET": "bench",
        }
        self._run_id = 0

    def close(self) -> None:
        """Stop the services."""
        self.broker.stop()
        self.redis.stop()

    def _topics(self) -> tuple[str, str]:
        self._run_id += 1
        src, dst = f"bench.in.{self._run_id}", f"bench.out.{self._run_id}"
        self.bus.create_topics([src, dst], PARTITIONS)
        return src, dst

    def _run(self, scenario: Scenario, fill: Callable[[str], object], expected: int) -> list[ConsumerRecord]:
        src, dst = self._topics()
        fill(src)
        proc = subprocess.Popen(
            scenario.command(src, dst, self.workdir),
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"{self._run_id}.log", "wb"),  # noqa: SIM115
        )
        try:
            records = self.bus.read(dst, expected, timeout_s=120)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        if len(records) < expected:
            raise RuntimeError(f"{scenario.label}: got {len(records)} of {expected} outputs; see {self.workdir}")
        return records

    def throughput(self, scenario: Scenario) -> tuple[float, float]:
        """Events/s over the whole drain of a pre-filled input, and over its middle 80% (no start or tail)."""
        payloads = _events(self.events, seed=1)
        records = self._run(scenario, lambda src: self.bus.produce(src, payloads), self.events)
        stamps = sorted(r.timestamp for r in records)
        n = len(stamps)
        whole = (n - 1) / max(1e-3, (stamps[-1] - stamps[0]) / 1000.0)
        low, high = n // 10, n - n // 10 - 1
        middle = (high - low) / max(1e-3, (stamps[high] - stamps[low]) / 1000.0)
        return whole, middle

    def latency(self, scenario: Scenario) -> tuple[float, float]:
        """p50 and p99 event-to-output latency (ms) at the offered rate."""
        sent: dict[tuple[int, int], float] = {}
        src, dst = self._topics()
        proc = subprocess.Popen(
            scenario.command(src, dst, self.workdir),
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"{self._run_id}.lat.log", "wb"),  # noqa: SIM115
        )
        try:
            self._wait_ready(src, dst)
            # nothing else runs in this process while offering load; outputs carry their own timestamps
            _send_at_rate(self.bus, src, self.latency_events, RATE, sent)
            records = self.bus.read(dst, self.latency_events + 1, timeout_s=60)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        latencies = []
        for record in records:
            sent_at = _input_time(record, sent)
            if sent_at is not None:
                latencies.append(record.timestamp - 1000.0 * sent_at)
        return _percentile(latencies, 0.5), _percentile(latencies, 0.99)

    def _wait_ready(self, src: str, dst: str) -> None:
        """Send one warm-up event until it comes out, so that start-up is not measured as latency."""
        warm = encode(Event(key="warm", ts=time.time(), features={"x0": 0.0, "x1": 0.0, "x2": 0.0}, label=False))
        self.bus.produce(src, [warm], keys=[b"warm"])
        if not self.bus.read(dst, 1, timeout_s=120):
            raise RuntimeError(f"no output on {dst} within 120 s; see logs in {self.workdir}")


def run(events: int = 30_000, latency_seconds: float = 10.0) -> str:
    """Run all scenarios and write the table into docs/benchmarks.md; returns the table."""
    bench = CoreBench(events, latency_seconds)
    scenarios = [
        Scenario("(a) raw kafka-python consume→produce loop", _raw_command(bench.broker.url)),
        Scenario(
            "(b) Eddy pipeline, relay (no-op operator)",
            _eddy_command("relay", {"mode": "relay"}),
        ),
        Scenario(
            "(c) Eddy pipeline, River Hoeffding tree",
            _eddy_command("hoeffding", {"use": "river.tree:HoeffdingTreeClassifier", "params": {"grace_period": 100}}),
        ),
    ]
    rows: list[tuple[str, list[tuple[float, float]], float, float]] = []
    try:
        with Progress() as progress:
            task = progress.add_task("core benchmark", total=(REPEATS + 1) * len(scenarios))
            for scenario in scenarios:
                rates = []
                for attempt in range(REPEATS):
                    progress.update(task, description=f"{scenario.label}: throughput {attempt + 1}/{REPEATS}")
                    rates.append(bench.throughput(scenario))
                    progress.advance(task)
                progress.update(task, description=f"{scenario.label}: latency at {RATE:,.0f} ev/s")
                p50, p99 = bench.latency(scenario)
                progress.advance(task)
                rows.append((scenario.label, sorted(rates), p50, p99))
    finally:
        bench.close()
    raw_whole, raw_middle = rows[0][1][REPEATS // 2]
    lines = [
        f"Input: {events:,} pre-filled `event/v1` JSON events on {PARTITIONS} partitions for throughput "
        f"(median of {REPEATS} runs by whole-drain rate, range in brackets; the middle 80% leaves out the start and "
        "the tail of the drain); "
        f"{bench.latency_events:,} events offered at {RATE:,.0f} events/s for latency. Embedded Tansu broker "
        "(memory storage) and redis-server on the same machine; every consumer uses a 20 ms fetch wait.",
        "",
        "| contender | events/s, whole drain | vs (a) | events/s, middle 80% | vs (a) | p50 latency (ms) "
        "| p99 latency (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rates, p50, p99 in rows:
        whole, middle = rates[REPEATS // 2]
        spread = f"[{rates[0][0]:,.0f} to {rates[-1][0]:,.0f}]"
        lines.append(
            f"| {label} | {whole:,.0f} {spread} | {whole / raw_whole:.0%} | {middle:,.0f} | {middle / raw_middle:.0%} "
            f"| {p50:.1f} | {p99:.1f} |"
        )
    lines += ["", "Targets (issue #3): (b) ≥ 50% of (a); p99 ≤ 50 ms at 2,000 events/s."]
    table = "\n".join(lines)
    write_section("core", "Platform core: relay and learner pipelines vs. a raw kafka-python loop", table, "make bench")
    return table
