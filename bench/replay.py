"""Replay benchmark: ``eddy replay`` at max speed beside ``eddy produce`` and a raw kafka-python producer, and the
timing fidelity of a paced replay.

Throughput contenders, each sending the same ``N`` recorded ``event/v1`` messages (keyed, 4 partitions) to a fresh
topic of one embedded Tansu, median of 3 runs:

(a) raw kafka-python producer: the values already in memory, ``send`` in a loop, ``flush`` (the floor);
(b) ``replay_plan`` in-process at max speed: reading and checking the .jsonl.gz recording included;
(c) ``eddy replay --max-speed`` and (d) ``eddy produce --key`` as users run them (process start included).

Fidelity: a recording with exponential inter-arrival times (mean 5 ms, 2,000 messages) replayed at speed 1.0;
|actual - intended| send time per message, p50/p99/max.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.report import percentile, write_section
from connectors.bus import KafkaBus
from connectors.embedded import TANSU, ServiceProcess, free_port
from connectors.messages import encode
from connectors.recording import RecordedMessage, write_recording
from connectors.replay import plan_replay, replay_plan
from connectors.sources import drifting_sea

PARTITIONS = 4
REPEATS = 3
EDDY = str(Path(sys.executable).parent / "eddy")


class ReplayBench:
    """One broker and one recording shared by every contender; each run writes to a topic of its own."""

    def __init__(self, events: int, workdir: Path) -> None:
        self.events = events
        self.workdir = workdir
        self.broker = ServiceProcess(TANSU, workdir / "broker", free_port()).start()
        self.bus = KafkaBus(self.broker.url)
        self.runs = 0
        source = drifting_sea(seed=7)
        self.messages = []
        for i in range(events):
            event = next(source)
            key = (event.key or "").encode()
            self.messages.append(RecordedMessage("bench.src", i % PARTITIONS, i // PARTITIONS, i, key, encode(event)))
        self.recording = workdir / "events.jsonl.gz"
        write_recording(self.recording, self.messages)
        self.jsonl = workdir / "events.jsonl"
        self.jsonl.write_bytes(b"\n".join(m.payload or b"" for m in self.messages) + b"\n")

    def topic(self) -> str:
        """A fresh destination topic."""
        self.runs += 1
        name = f"bench.replay.{self.runs}"
        self.bus.create_topics([name], PARTITIONS)
        return name

    def timed(self, send: Callable[[str], None]) -> float:
        """Events/s of one run of ``send`` into a fresh topic."""
        topic = self.topic()
        started = time.perf_counter()
        send(topic)
        return self.events / (time.perf_counter() - started)

    def raw_producer(self, topic: str) -> None:
        producer = self.bus.producer()
        for message in self.messages:
            producer.send(topic, value=message.payload, key=message.key, partition=message.partition)
        producer.flush()
        producer.close()

    def replay_in_process(self, topic: str) -> None:
        plan = plan_replay([self.recording], topic_map={"bench.src": topic})
        summary = replay_plan(self.bus, plan, speed=None)
        if not summary.complete:
            raise RuntimeError(summary.describe())

    def _cli(self, *args: str) -> None:
        env = {**os.environ, "EDDY_BROKER": self.broker.url, "EDDY_HOME": str(self.workdir / "home")}
        subprocess.run([EDDY, *args], env=env, check=True, capture_output=True)

    def replay_cli(self, topic: str) -> None:
        self._cli("replay", str(self.recording), "--max-speed", "--topic-map", f"bench.src={topic}")

    def produce_cli(self, topic: str) -> None:
        self._cli("produce", topic, str(self.jsonl), "--key", "key")

    def fidelity(self, n: int = 2000, mean_gap_ms: float = 5.0) -> list[float]:
        """|actual - intended| send times (ms) of a paced replay at speed 1.0."""
        rng = random.Random(3)
        ts = 1_700_000_000_000.0
        messages = []
        for i in range(n):
            ts += rng.expovariate(1.0 / mean_gap_ms)
            messages.append(RecordedMessage("bench.paced", i % PARTITIONS, i // PARTITIONS, int(ts), None, b"{}"))
        path = self.workdir / "paced.jsonl"
        write_recording(path, messages)
        plan = plan_replay([path], topic_map={"bench.paced": self.topic()})
        return replay_plan(self.bus, plan, speed=1.0).lateness_ms

    def close(self) -> None:
        """Stop the broker."""
        self.broker.stop()


def run(events: int = 50_000) -> str:
    """Run every contender and the fidelity check; write the table into docs/benchmarks.md and return it."""
    with tempfile.TemporaryDirectory(prefix="eddy-bench-replay-") as tmp:
        bench = ReplayBench(events, Path(tmp))
        try:
            contenders = [
                ("(a) raw kafka-python producer (values in memory)", bench.raw_producer),
                ("(b) replay, in-process, max speed (reads the .jsonl.gz)", bench.replay_in_process),
                ("(c) `eddy replay --max-speed` (CLI, process start included)", bench.replay_cli),
                ("(d) `eddy produce --key` (CLI, process start included)", bench.produce_cli),
            ]
            rows = []
            for label, send in contenders:
                rates = sorted(bench.timed(send) for _ in range(REPEATS))
                rows.append((label, rates))
                print(f"{label}: {rates[REPEATS // 2]:,.0f} events/s", file=sys.stderr)
            lateness = bench.fidelity()
            mean_bytes = statistics.mean(len(m.payload or b"") for m in bench.messages)
        finally:
            bench.close()
    floor = rows[0][1][REPEATS // 2]
    lines = [
        f"{events:,} `event/v1` JSON messages (mean {mean_bytes:.0f} bytes), keyed, {PARTITIONS} partitions, "
        f"embedded Tansu on the same machine; median of {REPEATS} runs (range in brackets).",
        "",
        "| contender | events/s | vs (a) |",
        "|---|---:|---:|",
    ]
    for label, rates in rows:
        median = rates[REPEATS // 2]
        lines.append(f"| {label} | {median:,.0f} [{rates[0]:,.0f}-{rates[-1]:,.0f}] | {median / floor:.0%} |")
    lines += [
        "",
        f"Timing fidelity at speed 1.0 ({len(lateness):,} messages, exponential gaps with a 5 ms mean): "
        f"|actual - intended| send time p50 {percentile(lateness, 0.5):.2f} ms, "
        f"p99 {percentile(lateness, 0.99):.2f} ms, max {max(lateness):.2f} ms.",
    ]
    body = "\n".join(lines)
    write_section("replay", "Replay throughput and timing fidelity", body, "python -m bench.replay")
    return body


def main() -> None:
    """``python -m bench.replay [--events N]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000, help="messages per throughput run (default 50,000)")
    print(run(parser.parse_args().events))


if __name__ == "__main__":
    main()
