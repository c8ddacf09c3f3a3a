"""Run one pipeline spec in-process against real services, feed it, and get back what it produced.

>>> # in a test (the fixtures come with the ``eddy`` pytest plugin):
>>> # def test_ctr(pipeline_harness):
>>> #     harness = pipeline_harness("pipelines/examples/demo-driftmoe.yaml")
>>> #     harness.replay("tests/data/clicks.jsonl.gz")
>>> #     result = harness.run()
>>> #     assert result.dead_letters == [] and len(result.outputs["predictions"]) == 1000

The harness waits on the runtime's own progress (the offset below which every record is done), never on a timer,
then flushes the producer and reads each output topic up to the count the runtime reports having sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faust.types import TP

from connectors.bus import KafkaBus
from connectors.messages import DeadLetter, Message, decode, encode
from connectors.replay import ReplaySummary, plan_replay, replay_plan
from connectors.services import ResolvedServices
from connectors.state import StateStore
from pipelines.runtime import PipelineRunner, PipelineStatus
from pipelines.spec import PipelineSpec, load_spec, parse_spec
from pipelines.worker import Worker


class HarnessError(RuntimeError):
    """The pipeline did not get through its input in time, or died; the message carries its status."""


class WorkerThread:
    """A :class:`~pipelines.worker.Worker` on its own event loop in a thread; ``stop()`` shuts it down cleanly."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="eddy-test-worker", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def run() -> None:
            self._stop = asyncio.Event()
            self._started.set()
            await self.worker.run(self._stop)

        try:
            self.loop.run_until_complete(run())
        except BaseException as exc:  # surfaced by stop() and wait_for()
            self.error = exc
            self._started.set()

    def start(self, timeout_s: float = 60.0) -> WorkerThread:
        """Start the worker and wait until it has partitions assigned."""
        self._thread.start()
        self._started.wait(30)
        self.wait_for(self.worker.assigned.is_set, timeout_s, "partition assignment")
        return self

    def call(self, coroutine: Any, timeout_s: float = 30.0) -> Any:
        """Run a coroutine on the worker's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def stop(self) -> None:
        """Stop the worker (final checkpoints) and re-raise anything it died of."""
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self.error is not None:
            raise self.error

    @property
    def running(self) -> bool:
        """The worker thread is alive."""
        return self._thread.is_alive()

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``condition`` until true; raise :class:`HarnessError` naming ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                status = self.worker.status()
                raise HarnessError(f"timed out after {timeout_s:.0f}s waiting for {what}; status: {status}")
            time.sleep(0.02)


@dataclass
class HarnessResult:
    """What a pipeline produced: decoded outputs by output name, dead letters, metric samples and status."""

    outputs: dict[str, list[dict[str, Any]]]
    dead_letters: list[DeadLetter]
    metrics: dict[str, float]
    status: PipelineStatus


class PipelineHarness:
    """One pipeline spec in one in-process worker, against the services given (the plugin's fixtures in tests).

    Feed it with :meth:`send` or :meth:`replay`, then :meth:`run` waits until every record fed so far is processed
    and returns a :class:`HarnessResult` with everything the current worker produced (since :meth:`start` or
    :meth:`restart`). ``fresh=True`` (the default)
    deletes the pipeline's checkpoint first, so two harnesses of one spec in a test start alike.
    """

    def __init__(
        self,
        spec: PipelineSpec | Mapping[str, Any] | str | Path,
        services: ResolvedServices,
        *,
        secret: bytes,
        partitions: int = 1,
        fresh: bool = True,
        timeout_s: float = 120.0,
    ) -> None:
        self.spec = _as_spec(spec)
        self.services = services
        self.secret = secret
        self.partitions = partitions
        self.timeout_s = timeout_s
        self.bus = KafkaBus(services.broker_url)
        if fresh:
            store = StateStore(services.state_url)
            try:
                store.delete_checkpoint(self.spec.name)
            finally:
                store.close()
        self.bus.create_topics(self.spec.input.topics, partitions)
        self.bus.create_topics([*self.spec.outputs.values(), self.spec.dlq_topic], partitions)
        self._starts: dict[str, dict[int, int]] = {}
        self._thread: WorkerThread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    def start(self) -> PipelineHarness:
        """Start the worker and wait for its partitions."""
        if self._thread is None:
            # what is already on the output topics (a previous worker's) is not this worker's
            written = [*self.spec.outputs.values(), self.spec.dlq_topic]
            self._starts = {topic: self.bus.describe(topic).messages for topic in written}
            worker = Worker(
                [self.spec],
                self.services,
                secret=self.secret,
                app_id=f"eddy-harness-{self.spec.name}-{time.monotonic_ns()}",
                partitions=self.partitions,
            )
            self._thread = WorkerThread(worker).start(self.timeout_s)
        return self

    def stop(self) -> None:
        """Stop the worker cleanly (it writes a final checkpoint)."""
        if self._thread is not None:
            thread, self._thread = self._thread, None
            thread.stop()

    def restart(self) -> PipelineHarness:
        """Stop the worker cleanly and start a new one: it resumes from the checkpoint the old one wrote."""
        self.stop()
        return self.start()

    def __enter__(self) -> PipelineHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def runner(self) -> PipelineRunner:
        """The runner of the pipeline (started on first use)."""
        return self.start()._worker_thread.worker.runners[0]

    @property
    def _worker_thread(self) -> WorkerThread:
        assert self._thread is not None
        return self._thread

    # -- input --------------------------------------------------------------------------------------------------------

    def send(self, messages: Iterable[Message | bytes]) -> int:
        """Produce messages to the pipeline's (first) input topic, keyed by their ``key`` field where they have one."""
        topic = self.spec.input.topics[0]
        producer = self.bus.producer(linger_ms=5)
        futures = []
        try:
            for message in messages:
                value = message if isinstance(message, bytes) else encode(message)
                k = getattr(message, "key", None)
                futures.append(producer.send(topic, value=value, key=k.encode() if isinstance(k, str) else None))
            producer.flush()
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close()
        return len(futures)

    def replay(
        self, *paths: str | Path, topic_map: Mapping[str, str] | None = None, dedupe: bool = False
    ) -> ReplaySummary:
        """Replay recordings (at max speed) onto the pipeline's inputs; raises unless every message was produced.

        With one input partition (the default) the recording goes into it in recorded time order, so a run is
        deterministic; with ``partitions=N`` each message keeps its recorded partition.
        """
        plan = plan_replay(paths, topic_map=topic_map)
        missing = sorted(set(plan.partitions_needed()) - set(self.spec.input.topics))
        if missing:
            raise ValueError(
                f"recording(s) hold topics {missing} that pipeline {self.spec.name!r} does not read "
                f"({self.spec.input.topics}); map them with topic_map={{'{missing[0]}': "
                f"'{self.spec.input.topics[0]}'}}"
            )
        if self.partitions == 1:
            plan = plan.into_one_partition()
        summary = replay_plan(self.bus, plan, speed=None, dedupe=dedupe)
        if not summary.complete:
            raise HarnessError(summary.describe())
        return summary

    # -- output -------------------------------------------------------------------------------------------------------

    def run(self, timeout_s: float | None = None) -> HarnessResult:
        """Wait until every record fed so far is processed, then return everything the pipeline produced."""
        thread = self.start()._worker_thread
        runner = self.runner
        ends = self._input_ends()
        limit = timeout_s or self.timeout_s

        def done() -> bool:
            return all(runner.done_offsets.get(TP(topic, partition), 0) >= end for (topic, partition), end in ends)

        thread.wait_for(done, limit, f"pipeline {self.spec.name!r} to process its input up to offsets {ends}")
        thread.call(runner.app.producer.flush())
        return self._collect(runner.status(), limit)

    def _input_ends(self) -> list[tuple[tuple[str, int], int]]:
        """The offset each input partition must reach: its high-water mark as read now."""
        ends = []
        for topic in self.spec.input.topics:
            for partition, highwater in sorted(self.bus.describe(topic).messages.items()):
                ends.append(((topic, partition), highwater))
        return ends

    def _read_new(self, topic: str, expected: int, timeout_s: float) -> list[bytes]:
        """The ``expected`` records this harness's worker sent to ``topic``, in partition order."""
        if not expected:
            return []
        starts = self._starts[topic]
        records = [
            r
            for r in self.bus.read(topic, sum(starts.values()) + expected, timeout_s=timeout_s)
            if r.offset >= starts.get(r.partition, 0)
        ]
        if len(records) < expected:
            raise HarnessError(f"topic {topic!r}: read {len(records)} of the {expected} records the pipeline sent")
        return [r.value for r in sorted(records, key=lambda r: (r.partition, r.offset))]

    def _collect(self, status: PipelineStatus, timeout_s: float) -> HarnessResult:
        raw = {
            name: self._read_new(topic, status.outputs_by_name.get(name, 0), timeout_s)
            for name, topic in self.spec.outputs.items()
        }
        letters = self._read_new(self.spec.dlq_topic, status.dead_letters, timeout_s)
        return HarnessResult(
            outputs={name: [_decoded(v) for v in values] for name, values in raw.items()},
            dead_letters=[_dead_letter(v) for v in letters],
            metrics=self.metrics(),
            status=status,
        )

    def metrics(self) -> dict[str, float]:
        """This pipeline's metric samples, keyed ``name{label="value",...}`` (the pipeline label left out)."""
        samples: dict[str, float] = {}
        for metric in self.runner.metrics.registry.collect():
            for sample in metric.samples:
                if sample.labels.get("pipeline") != self.spec.name:
                    continue
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if k != "pipeline")
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
        return samples


def _dead_letter(value: bytes) -> DeadLetter:
    letter = decode(value, DeadLetter.schema_name)
    assert isinstance(letter, DeadLetter)
    return letter


def _decoded(value: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"raw_hex": value.hex()}
    return decoded if isinstance(decoded, dict) else {"value": decoded}


def _as_spec(spec: PipelineSpec | Mapping[str, Any] | str | Path) -> PipelineSpec:
    if isinstance(spec, PipelineSpec):
        return spec
    if isinstance(spec, str | Path):
        return load_spec(spec)
    return parse_spec(dict(spec))


__all__ = ["HarnessError", "HarnessResult", "PipelineHarness", "WorkerThread"]
