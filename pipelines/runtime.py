"""The pipeline runtime: one Faust app per worker, one agent per pipeline spec.

Each agent takes micro-batches (``stream.take_events(batch.max, batch.within_ms)``), decodes and validates them
(bad records go to ``<pipeline>.dlq``), runs the operator on an executor thread so that fetching, heartbeats and
producing go on, sends the outputs, then checkpoints and publishes by policy.

Exactly-once learning: a checkpoint is the operator state plus the next offset of every input partition the worker
holds (and the per-key state changed since the last one), written in one Redis transaction after the outputs it
covers were flushed. On partition assignment the runner seeks each partition to the offset its last checkpoint
recorded; records below those offsets that still arrive (a re-delivery) are skipped. A worker killed at any instant
therefore re-learns nothing and skips nothing, and when several workers share a pipeline's partitions, a partition
that moves resumes exactly where its previous owner's last checkpoint left it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter, deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from connectors.bus import KafkaBus
from connectors.messages import DeadLetter, DecodeError, ModelUpdate, decode, encode
from connectors.registry import ModelRegistry
from connectors.replay import ReplayDeduper
from connectors.state import Checkpoint, CheckpointError, StateStore, offset_key, parse_offset_key
from pipelines.follower import MODELS_TOPIC, ModelFollower, update_key
from pipelines.keyed import KeyedEntries
from pipelines.metrics import WorkerMetrics
from pipelines.operators import (
    AllocateOperator,
    LearnerOperator,
    Output,
    RecommendOperator,
    Record,
    RecordRejected,
    Rejection,
    SequenceOperator,
    ServingOperator,
    Source,
    build_operator,
)
from pipelines.records import LearnsAfterAnswering
from pipelines.serialization import dump_state, load_state
from pipelines.spec import PipelineSpec

log = logging.getLogger(__name__)
PUBLISHING = (
    LearnerOperator,
    SequenceOperator,
    AllocateOperator,
)  # operators that learn and publish versions by policy
FOLLOWING = (ServingOperator, RecommendOperator)  # operators that serve the version a registry alias points to
LATENCY_WINDOW = 2048  # recent event-to-output latencies kept for the dashboard's p99


@dataclass
class PipelineStatus:
    """A snapshot for status lines, ``/status`` and tests."""

    pipeline: str
    events_in: int
    learned: int
    dead_letters: int
    outputs: int
    lag: int
    scores: dict[str, float]
    model_version: str | None
    checkpoints: int
    published: int
    drifts: int
    max_stall_s: float
    partitions: list[str] = field(default_factory=list)
    outputs_by_name: dict[str, int] = field(default_factory=dict)


class PipelineRunner:
    """Runs one pipeline spec inside a worker's Faust app."""

    def __init__(
        self,
        spec: PipelineSpec,
        app: faust.App,
        *,
        store: StateStore,
        registry: ModelRegistry | None,
        bus: KafkaBus,
        metrics: WorkerMetrics,
        secret: bytes,
    ) -> None:
        self.spec = spec
        self.app = app
        self.store = store
        self.registry = registry
        self.bus = bus
        self.metrics = metrics
        self.secret = secret
        self.operator = build_operator(spec)
        # operators with per-key state (KeyedEntries) read it from this pipeline's namespace in the state store
        self.keyed: KeyedEntries | None = getattr(self.operator, "entries", None)
        if self.keyed is not None:
            self.keyed.bind(lambda keys: store.get_many(spec.name, keys))
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"eddy-{spec.name}")
        self.lock = asyncio.Lock()
        self.next_offsets: dict[TP, int] = {}
        self.done_offsets: dict[TP, int] = {}
        self.last_progress: dict[TP, float] = {}
        self.assigned: set[TP] = set()
        self.counts = {"in": 0, "out": 0, "dead": 0, "checkpoints": 0, "published": 0}
        self.outputs_by_name: Counter[str] = Counter()
        self.recent_latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_point = (time.time(), 0)
        self.since_checkpoint = 0
        self.last_checkpoint_at = time.monotonic()
        self.last_published_learned = 0
        self.stopping = False
        self.restored = False  # the operator took the newest checkpoint's state (first assignment only)
        self.follower: ModelFollower | None = None
        self.lags: dict[TP, int] = {}
        self.stalls: dict[TP, float] = {}
        self.input_topics = set(spec.input.topics)
        self.deduper = ReplayDeduper()
        topic = app.topic(*spec.input.topics, value_serializer="raw", key_serializer="raw")
        app.agent(topic, name=f"eddy.{spec.name}")(self._agent)
        if isinstance(self.operator, FOLLOWING):
            self.follower = self._make_follower()

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def _make_follower(self) -> ModelFollower:
        registry_spec = self.spec.registry
        if self.registry is None or registry_spec is None or registry_spec.follow is None:
            raise ValueError(
                f"pipeline {self.spec.name!r}: mode {self.spec.operator.mode} needs registry.model and registry.follow"
            )
        return ModelFollower(
            self.bus,
            self.registry,
            registry_spec.model,
            registry_spec.follow,
            lambda payload: load_state(payload, self.secret),
        )

    def start(self) -> None:
        """Start following the model alias (serve and recommend modes) and whatever side input the operator reads
        (an operator with ``start(bus)``, e.g. recommend mode's live rooms)."""
        if self.follower is not None:
            self.follower.start()
        start = getattr(self.operator, "start", None)
        if callable(start):
            start(self.bus)

    async def stop(self) -> None:
        """Stop taking batches and write a final checkpoint."""
        self.stopping = True
        async with self.lock:
            if self.since_checkpoint:
                await self._checkpoint()
        if self.follower is not None:
            self.follower.stop()
        close = getattr(self.operator, "close", None)
        if callable(close):
            close()
        self.executor.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- rebalancing ----------------------------------------------------------------------------------------------

    async def on_assigned(self, assigned: Iterable[TP]) -> None:
        """Take over the assigned input partitions: restore the operator on the first assignment, then seek every
        assigned partition to the offset its last checkpoint recorded, whichever worker wrote it.

        Rebalances are eager (every partition is revoked first, and :meth:`on_revoked` checkpointed it), so the
        partitions this worker kept resume where it left them, and those it takes over from another worker resume
        where that worker's last checkpoint left them, with the per-key state written in the same transaction.
        """
        mine = {tp for tp in assigned if tp.topic in self.input_topics}
        self._release((set(self.next_offsets) | self.assigned) - mine)
        self.assigned = mine
        now = time.monotonic()
        self.last_progress.update({tp: now for tp in mine})
        if not mine:
            return
        if self.keyed is not None:
            self.keyed.forget()  # what Redis holds matches the offsets about to be restored
        if not self.restored:
            self._restore_operator()
        offsets = {parse_offset_key(k): v for k, v in self.store.read_offsets(self.spec.name).items()}
        for tp in mine:
            offset = offsets.get((tp.topic, tp.partition))
            if offset is None and self.spec.input.start == "latest":  # Faust's committed offset, else the end
                self.next_offsets.pop(tp, None)
                self.done_offsets.pop(tp, None)
                continue
            # no checkpoint covers it yet: from the beginning, not from an offset Faust committed for events whose
            # learning no checkpoint holds (a worker killed before its first checkpoint)
            offset = offset or 0
            self.next_offsets[tp] = self.done_offsets[tp] = offset
            # Faust seeks to the committed offsets once the rebalance completes; EddyApp.positions (our next
            # offsets) brings every partition back here then (pipelines/transport.py)
            await self.app.consumer.seek(tp, offset)
        log.info(
            "pipeline %s: partitions %s, seeking %s",
            self.spec.name,
            ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(mine)),
            {f"{tp.topic}:{tp.partition}": self.next_offsets.get(tp) for tp in sorted(mine)},
        )

    def _restore_operator(self) -> None:
        """Load the newest checkpoint's operator state into this worker's fresh operator (once per process); raise
        :class:`CheckpointError` when it cannot be.

        With one worker that is its own last state. With several, each keeps the operator it has through later
        rebalances (a global model learns from the partitions each worker holds); a worker that joins starts from
        the newest state any of them checkpointed. Offsets are per partition either way (see :meth:`on_assigned`).
        """
        self.restored = True
        checkpoint = self.store.read_checkpoint(self.spec.name)
        if checkpoint is None:
            log.info("pipeline %s: no checkpoint; starting from committed offsets", self.spec.name)
            return
        try:
            self.operator.load_state(load_state(checkpoint.state, self.secret))
        except Exception as exc:  # unpickling runs the learners' own code: any error means "cannot restore"
            self.stopping = True  # no batch is handled, so no checkpoint replaces the one that failed
            written = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(checkpoint.created_at))
            raise CheckpointError(
                f"pipeline {self.spec.name!r}: its checkpoint ({checkpoint.events} events, written {written}) cannot "
                f"be restored: {exc}. Either run the worker with what wrote it (the same EDDY_SECRET, the same "
                f"Eddy version), or delete it with `eddy checkpoints delete {self.spec.name}`: the pipeline then "
                "starts afresh from the beginning of its input topics"
            ) from exc
        self.counts["in"] = checkpoint.events
        self.deduper = ReplayDeduper(checkpoint.replayed)
        self.since_checkpoint = 0
        log.info("pipeline %s: restored a checkpoint of %d events", self.spec.name, checkpoint.events)

    async def on_revoked(self, revoked: Iterable[TP]) -> None:
        """Checkpoint before partitions move to another worker, then stop tracking them."""
        mine = {tp for tp in revoked if tp.topic in self.input_topics}
        if not mine:
            return
        async with self.lock:
            if self.since_checkpoint:
                await self._checkpoint()
            self._release(mine)

    def _release(self, partitions: set[TP]) -> None:
        """Forget partitions this worker no longer holds, so that its checkpoints never write their offsets."""
        for tracked in (self.next_offsets, self.done_offsets, self.last_progress, self.lags, self.stalls):
            for tp in partitions:
                tracked.pop(tp, None)
        self.assigned -= partitions

    # -- the agent ------------------------------------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:  # faust's StreamT stubs lack take_events
        spec = self.spec
        async for events in stream.take_events(spec.batch.max, within=spec.batch.within_ms / 1000.0):
            async with self.lock:
                if not self.stopping:
                    await self._swap_model()
                if self.stopping:  # (perhaps while waiting for a first model) the batch stays unprocessed: the
                    continue  # checkpoint's offsets, not Faust's, say where a restart begins
                await self._handle_batch(events)
                if self._checkpoint_due():
                    await self._checkpoint()
                if self._publish_due():
                    await self._publish()

    async def _handle_batch(self, events: list[Any]) -> None:
        spec = self.spec
        name = spec.name
        records: list[Record] = []
        rejected: list[Rejection] = []
        batch_offsets: dict[TP, int] = {}
        for event in events:
            msg = event.message
            tp = msg.tp
            if tp not in self.assigned:
                continue  # fetched before a rebalance moved its partition: the new owner processes it
            expected = self.next_offsets.get(tp)
            if expected is not None and msg.offset < expected:
                self.metrics.duplicates.labels(name).inc()
                continue
            self.done_offsets.setdefault(tp, msg.offset)
            self.next_offsets[tp] = batch_offsets[tp] = msg.offset + 1
            if self.deduper.is_duplicate(msg.headers):
                self.metrics.replay_duplicates.labels(name).inc()
                continue
            raw = msg.value if msg.value is not None else b""
            source = Source(raw, msg.key, msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000))
            try:
                message = decode(raw, spec.input.schema_name, max_bytes=spec.limits.max_message_bytes)
                self.operator.validate(message)
            except (DecodeError, RecordRejected) as exc:
                rejected.append(Rejection(source, exc.reason, exc.detail))
                continue
            records.append(Record(message, source))
        accepted = len(records) + len(rejected)
        self.counts["in"] += accepted
        self.since_checkpoint += accepted
        self.metrics.events_in.labels(name).inc(accepted)
        self.metrics.batch_size.labels(name).observe(accepted)
        if records:
            started = time.perf_counter()
            result = await self._run(self.operator.process, records)
            seconds = time.perf_counter() - started
            rejected.extend(result.rejected)
            await self._send_outputs(result.outputs)
            if isinstance(self.operator, LearnsAfterAnswering):
                started = time.perf_counter()
                await self._run(self.operator.learn_deferred)
                seconds += time.perf_counter() - started
            self.metrics.operator_seconds.labels(name).observe(seconds)
        if rejected:
            await self._send_dead_letters(rejected)
        self.done_offsets.update(batch_offsets)
        now = time.monotonic()
        self.last_progress.update({tp: now for tp in batch_offsets})

    async def _send_outputs(self, outputs: list[Output]) -> None:
        producer = self.app.producer
        topics = self.spec.outputs
        name = self.spec.name
        for output in outputs:
            await producer.send(topics[output.output], output.key, output.value, None, None, None)
        now_ms = time.time() * 1000.0
        latency = self.metrics.latency.labels(name)
        for output in outputs:
            seconds = max(0.0, now_ms - output.source_timestamp_ms) / 1000.0
            latency.observe(seconds)
            self.recent_latencies.append(seconds)
        self.counts["out"] += len(outputs)
        for output_name, count in Counter(o.output for o in outputs).items():
            self.metrics.events_out.labels(name, output_name).inc(count)
            self.outputs_by_name[output_name] += count

    async def _send_dead_letters(self, rejected: list[Rejection]) -> None:
        producer = self.app.producer
        for item in rejected:
            record = item.source
            letter = DeadLetter(
                pipeline=self.spec.name,
                reason=item.reason,
                detail=item.detail,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key_b64=base64.b64encode(record.key).decode() if record.key is not None else None,
                raw_b64=base64.b64encode(record.raw).decode(),
                ts=time.time(),
            )
            await producer.send(self.spec.dlq_topic, record.key, encode(letter), None, None, None)
            self.metrics.dead_letters.labels(self.spec.name, item.reason).inc()
            log.warning(
                "pipeline %s: dead letter (%s) from %s:%d@%d: %s",
                self.spec.name,
                item.reason,
                record.topic,
                record.partition,
                record.offset,
                item.detail,
            )
        self.counts["dead"] += len(rejected)

    # -- checkpoints, publishing, swapping ------------------------------------------------------------------------

    async def checkpoint_if_due(self) -> None:
        """Time-based checkpoint between batches (the worker's watchdog calls it every second)."""
        if self._checkpoint_due() and not self.lock.locked():
            async with self.lock:
                await self._checkpoint()

    def _offsets(self) -> dict[str, int]:
        """The next offset to read per input partition, keyed ``topic:partition`` (what checkpoints cover)."""
        return {offset_key(tp.topic, tp.partition): offset for tp, offset in self.next_offsets.items()}

    def _checkpoint_due(self) -> bool:
        policy = self.spec.checkpoint
        return self.since_checkpoint >= policy.every_events or (
            self.since_checkpoint > 0 and time.monotonic() - self.last_checkpoint_at >= policy.every_s
        )

    async def _checkpoint(self) -> None:
        """Flush outputs, then write state + offsets in one transaction (caller holds ``self.lock``)."""
        await self.app.producer.flush()
        offsets = self._offsets()
        started = time.perf_counter()
        await self._run(self._write_checkpoint, offsets)
        self.metrics.checkpoint_seconds.labels(self.spec.name).observe(time.perf_counter() - started)
        self.metrics.checkpoints.labels(self.spec.name).inc()
        self.metrics.state_retries.labels(self.spec.name).set(self.store.retries)
        self.counts["checkpoints"] += 1
        self.since_checkpoint = 0
        self.last_checkpoint_at = time.monotonic()

    def _write_checkpoint(self, offsets: dict[str, int]) -> None:
        version = getattr(self.operator, "version", None)
        entries = self.keyed.pending() if self.keyed is not None else {}
        self.store.write_checkpoint(
            Checkpoint(
                pipeline=self.spec.name,
                state=dump_state(self.operator.state(), self.secret),
                offsets=offsets,
                events=self.counts["in"],
                created_at=time.time(),
                meta={"model_version": version or ""},
                replayed=dict(self.deduper.marks),
            ),
            entries,
        )
        if self.keyed is not None:
            self.keyed.written(entries)

    def _publish_due(self) -> bool:
        policy = self.spec.registry
        if policy is None or self.registry is None or not isinstance(self.operator, PUBLISHING):
            return False
        return self.operator.learned - self.last_published_learned >= policy.publish_every_events

    async def _publish(self) -> None:
        assert isinstance(self.operator, PUBLISHING) and self.spec.registry is not None
        offsets = self._offsets()
        info = await self._run(self._publish_version, offsets)
        self.operator.version = info.version
        self.last_published_learned = self.operator.learned
        self.counts["published"] += 1
        self.metrics.published.labels(self.spec.name).inc()
        self.metrics.model_version.labels(self.spec.name).set(float(info.version))
        update = ModelUpdate(model=info.model, version=info.version, alias=self.spec.registry.alias, uri=info.uri)
        await self.app.producer.send(MODELS_TOPIC, update_key(update), encode(update), None, None, None)
        log.info("pipeline %s: published %s (%d events learned)", self.spec.name, info.uri, self.operator.learned)

    def _publish_version(self, offsets: dict[str, int]) -> Any:
        assert isinstance(self.operator, PUBLISHING) and self.spec.registry is not None and self.registry
        params = {k: v for k, v in self.spec.operator.params.items() if isinstance(v, str | int | float | bool)}
        return self.registry.publish(
            self.spec.registry.model,
            dump_state(self.operator.published_model(), self.secret),
            params={"operator": self.spec.operator.use or "", **params},
            metrics=self.operator.scores(),
            offsets=offsets,
            events=self.operator.learned,
            alias=self.spec.registry.alias,
            pipeline=self.spec.name,
        )

    async def _swap_model(self) -> None:
        """Serve and recommend modes: take the newest followed model (waiting for the first one) between batches."""
        if self.follower is None or not isinstance(self.operator, FOLLOWING):
            return
        if self.operator.model is None:
            while not self.follower.available.is_set() and not self.stopping:
                await asyncio.sleep(0.1)
        pending = self.follower.take()
        if pending is not None:
            model, version = pending
            self.operator.swap(model, version)
            self.metrics.swaps.labels(self.spec.name).inc()
            self.metrics.model_version.labels(self.spec.name).set(float(version))

    # -- observability --------------------------------------------------------------------------------------------

    def refresh_gauges(self, stall_threshold_s: float) -> None:
        """Lag per partition (high-water mark minus the offset below which all is done), the stall watchdog, scores.

        A partition is stalled when it has lag and no batch of it completed for longer than the threshold: a
        frozen operator, a consumer that stopped fetching, or a state store that does not come back.
        """
        name = self.spec.name
        now = time.monotonic()
        consumer = self.app.consumer
        for tp in self.assigned:
            highwater = consumer.highwater(tp)
            position = self.done_offsets.get(tp)
            if highwater is None or position is None:
                continue
            lag = max(0, highwater - position)
            self.lags[tp] = lag
            stalled = now - self.last_progress.get(tp, now) if lag > 0 else 0.0
            self.stalls[tp] = stalled
            self.metrics.lag.labels(name, tp.topic, str(tp.partition)).set(lag)
            self.metrics.stall.labels(name, tp.topic, str(tp.partition)).set(stalled)
            if stalled > stall_threshold_s:
                log.error(
                    "pipeline %s: no progress on %s:%d for %.0fs while %d records wait",
                    name,
                    tp.topic,
                    tp.partition,
                    stalled,
                    lag,
                )
        for metric, value in self.operator.scores().items():
            self.metrics.prequential.labels(name, metric).set(value)
        scoreboard = getattr(self.operator, "scoreboard", None)
        if scoreboard is not None:
            self.metrics.drift_alarms.labels(name).set(scoreboard.drifts)
            if scoreboard.monitor is not None:
                for statistic, value in scoreboard.monitor.statistics().items():
                    self.metrics.drift_statistic.labels(name, statistic).set(value)
        for expert, share in (self.expert_shares() or {}).items():
            self.metrics.expert_share.labels(name, expert).set(share)

    def expert_shares(self) -> dict[str, float] | None:
        """The router's recent share per expert when the learner is a mixture of experts, else ``None``."""
        shares = getattr(getattr(self.operator, "learner", None), "expert_shares", None)
        return {str(k): v for k, v in shares().items()} if callable(shares) else None

    def history_point(self, now: float) -> dict[str, Any]:
        """One point of the dashboard's history: rates, lag, p99 latency, scores, alarms, version, expert shares."""
        status = self.status()
        then, events_then = self._last_point
        self._last_point = (now, status.events_in)
        latencies = sorted(self.recent_latencies)
        scoreboard = getattr(self.operator, "scoreboard", None)
        monitor = scoreboard.monitor if scoreboard is not None else None
        return {
            "t": now,
            "events_in": status.events_in,
            "rate": (status.events_in - events_then) / (now - then) if now > then else 0.0,
            "lag": status.lag,
            "p99_ms": 1000.0 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
            "scores": status.scores,
            "drifts": status.drifts,
            "alarms": monitor.alarms[-20:] if monitor is not None else [],
            "labelled": scoreboard.labelled if scoreboard is not None else 0,
            "dead_letters": status.dead_letters,
            "model_version": status.model_version,
            "expert_shares": self.expert_shares(),
        }

    def status(self) -> PipelineStatus:
        """Counters and gauges of this pipeline right now."""
        scoreboard = getattr(self.operator, "scoreboard", None)
        return PipelineStatus(
            pipeline=self.spec.name,
            events_in=self.counts["in"],
            learned=getattr(self.operator, "learned", 0),
            dead_letters=self.counts["dead"],
            outputs=self.counts["out"],
            lag=sum(self.lags.values()),
            scores=self.operator.scores(),
            model_version=getattr(self.operator, "version", None),
            checkpoints=self.counts["checkpoints"],
            published=self.counts["published"],
            drifts=scoreboard.drifts if scoreboard is not None else 0,
            max_stall_s=max(self.stalls.values(), default=0.0),
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in self.assigned),
            outputs_by_name=dict(self.outputs_by_name),
        )
