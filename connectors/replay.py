"""Record topics to files and replay files onto topics (``eddy record`` / ``eddy replay``, the test harness).

Replay keeps what consumers depend on: every message goes to the partition it was recorded from (so the key ->
partition mapping holds), messages of one partition keep their order, and inter-arrival times are reproduced at a
chosen speed. Every file is read and checked before the first message is produced, so a bad file changes nothing.

With ``dedupe`` each message carries the header ``eddy-replay-id: <topic>:<partition>:<offset>`` of its recorded
position. A consumer that honours it (the pipeline runtime does, through :class:`ReplayDeduper`) drops a message
whose recorded position it has already seen, so an interrupted replay can simply be started again.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from connectors.bus import BusError, KafkaBus, check_topic_name
from connectors.recording import BadLine, RecordedMessage, RecordingWriter, read_recording

DEDUPE_HEADER = "eddy-replay-id"
Progress = Callable[[int], None]
Headers = Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None


# -- planning -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """One message to produce: the recorded message, where it goes, and its send time relative to the first."""

    message: RecordedMessage
    topic: str
    partition: int
    at_ms: float


@dataclass
class ReplayPlan:
    """Everything a replay will produce, in send order, and what reading the files found."""

    messages: list[PlannedMessage]
    bad_lines: list[BadLine]
    filtered: int
    files: list[str]

    def partitions_needed(self) -> dict[str, int]:
        """Per target topic, the number of partitions it needs (highest recorded partition + 1)."""
        needed: dict[str, int] = {}
        for planned in self.messages:
            needed[planned.topic] = max(needed.get(planned.topic, 0), planned.partition + 1)
        return needed

    def into_one_partition(self) -> ReplayPlan:
        """The same plan sending everything to partition 0, in send order.

        Each recorded partition keeps its order, and the order across partitions becomes the recorded time order
        instead of whatever fetch timing gives: what a deterministic test of a pipeline needs.
        """
        merged = [dataclasses.replace(planned, partition=0) for planned in self.messages]
        return dataclasses.replace(self, messages=merged)


def parse_topic_map(text: str | None) -> dict[str, str]:
    """``"old=new,a=b"`` -> ``{"old": "new", "a": "b"}``.

    >>> parse_topic_map("live.clicks=test.clicks, live.rooms=test.rooms")
    {'live.clicks': 'test.clicks', 'live.rooms': 'test.rooms'}
    """
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        old, sep, new = (part.strip() for part in item.partition("="))
        if not sep or not old or not new:
            raise ValueError(
                f"topic map entry {item.strip()!r} must look like 'old=new' (e.g. live.clicks=test.clicks)"
            )
        mapping[check_topic_name(old)] = check_topic_name(new)
    return mapping


def plan_replay(
    paths: Sequence[str | Path],
    *,
    topic_map: Mapping[str, str] | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    keys: Iterable[str] | None = None,
    skip_bad: bool = False,
) -> ReplayPlan:
    """Read and check every file, keep the messages the filters select, and order them for sending.

    Send order is by timestamp across partitions and files; within one recorded partition the file order is kept
    even where timestamps go backwards (such a message is sent right after its predecessor). Raises
    :class:`~connectors.recording.BadLineError` on the first bad line unless ``skip_bad``.
    """
    if not paths:
        raise ValueError("replay needs at least one recording file")
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        raise ValueError(f"--until ({until_ms}) is before --since ({since_ms}); swap them or widen the window")
    mapping = dict(topic_map or {})
    wanted = {k.encode() for k in keys} if keys is not None else None
    bad: list[BadLine] | None = [] if skip_bad else None
    selected: list[tuple[int, int, RecordedMessage]] = []
    latest: dict[tuple[str, int], int] = {}
    filtered = 0
    for path in paths:
        for message in read_recording(path, bad):
            in_window = (since_ms is None or message.ts >= since_ms) and (until_ms is None or message.ts <= until_ms)
            if not in_window or (wanted is not None and message.key not in wanted):
                filtered += 1
                continue
            where = (message.topic, message.partition)
            effective = max(message.ts, latest.get(where, message.ts))
            latest[where] = effective
            selected.append((effective, len(selected), message))
    selected.sort(key=lambda item: (item[0], item[1]))
    first = selected[0][0] if selected else 0
    planned = [
        PlannedMessage(m, mapping.get(m.topic, m.topic), m.partition, float(ts - first)) for ts, _, m in selected
    ]
    return ReplayPlan(planned, bad or [], filtered, [str(p) for p in paths])


# -- replaying ------------------------------------------------------------------------------------------------------


@dataclass
class ReplaySummary:
    """What a replay did; ``lateness_ms`` holds |actual - intended| send time of each paced message."""

    planned: int
    produced: int
    failed: int
    bad_lines: list[BadLine]
    filtered: int
    interrupted: bool
    elapsed_s: float
    per_topic: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    lateness_ms: list[float] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every planned message was acknowledged by the broker."""
        return not self.interrupted and self.failed == 0 and self.produced == self.planned

    def lateness_p99_ms(self) -> float:
        """p99 of |actual - intended| send time (0 for a max-speed replay)."""
        if not self.lateness_ms:
            return 0.0
        ordered = sorted(self.lateness_ms)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

    def describe(self) -> str:
        """A one-paragraph human summary."""
        state = "interrupted" if self.interrupted else ("complete" if self.complete else "INCOMPLETE")
        lines = [
            f"replay {state}: produced {self.produced} of {self.planned} messages in {self.elapsed_s:.1f}s"
            + (f" ({self.produced / self.elapsed_s:,.0f}/s)" if self.elapsed_s > 0 else "")
        ]
        if self.per_topic:
            lines.append("  " + ", ".join(f"{topic}: {n}" for topic, n in sorted(self.per_topic.items())))
        if self.filtered:
            lines.append(f"  {self.filtered} messages left out by --since/--until/--keys")
        if self.bad_lines:
            lines.append(f"  {len(self.bad_lines)} bad lines skipped, first: {self.bad_lines[0]}")
        if self.failed:
            lines.append(f"  {self.failed} messages were not acknowledged; first error: {self.first_error}")
        if self.interrupted:
            lines.append(
                f"  the first {self.produced} messages in send order are on the topics, none partially; "
                "run the same command with --dedupe to resume without duplicates for consumers that honour it"
            )
        if self.lateness_ms:
            lines.append(f"  timing: p99 |actual - intended| send time {self.lateness_p99_ms():.2f} ms")
        return "\n".join(lines)


def check_targets(bus: KafkaBus, plan: ReplayPlan) -> None:
    """Every target topic exists and has the partitions the recording uses; else :class:`BusError` says the fix."""
    existing = set(bus.list_topics())
    for topic, needed in sorted(plan.partitions_needed().items()):
        if topic not in existing:
            raise BusError(
                f"topic {topic!r} does not exist; create it with 'eddy topics create {topic} --partitions {needed}' "
                f"or map it to another topic with --topic-map {topic}=OTHER"
            )
        have = bus.partitions(topic)
        if have < needed:
            raise BusError(
                f"topic {topic!r} has {have} partitions but the recording holds partition {needed - 1}; replay keeps "
                f"each message's partition, so map it to a topic with at least {needed} partitions "
                "(or replay into one partition in recorded time order, as the test harness does)"
            )


def replay_plan(
    bus: KafkaBus,
    plan: ReplayPlan,
    *,
    speed: float | None = 1.0,
    dedupe: bool = False,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Produce ``plan`` at ``speed`` times the recorded pace (``None``: as fast as possible).

    Checks the target topics first. Setting ``stop`` ends the replay between two messages: what was sent is flushed
    and acknowledged, and the summary says how far it got.
    """
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive number (got {speed}); use max speed for 'as fast as possible'")
    check_targets(bus, plan)
    stop = stop or threading.Event()
    # paced sends go out at once; at max speed a short linger batches them
    producer = bus.producer(linger_ms=5 if speed is None else 0)
    acked = [0]
    errors: list[str] = []
    per_topic: dict[str, int] = {}
    lateness: list[float] = []

    def on_error(exc: BaseException) -> None:
        errors.append(f"{type(exc).__name__}: {exc}")

    def on_ok(_: Any) -> None:
        acked[0] += 1

    started = time.monotonic()
    sent = 0
    try:
        for planned in plan.messages:
            if stop.is_set():
                break
            if speed is not None:
                intended = started + planned.at_ms / 1000.0 / speed
                delay = intended - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                lateness.append(abs(time.monotonic() - intended) * 1000.0)
            message = planned.message
            headers = list(message.headers)
            if dedupe:
                stamp = f"{message.topic}:{message.partition}:{message.offset}".encode()
                headers = [(n, v) for n, v in headers if n != DEDUPE_HEADER] + [(DEDUPE_HEADER, stamp)]
            future = producer.send(
                planned.topic,
                value=message.payload,
                key=message.key,
                partition=planned.partition,
                headers=headers or None,
            )
            future.add_callback(on_ok)
            future.add_errback(on_error)
            sent += 1
            per_topic[planned.topic] = per_topic.get(planned.topic, 0) + 1
            if progress is not None and sent % 256 == 0:
                progress(sent)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    if progress is not None:
        progress(sent)
    return ReplaySummary(
        planned=len(plan.messages),
        produced=acked[0],
        failed=sent - acked[0],
        bad_lines=plan.bad_lines,
        filtered=plan.filtered,
        interrupted=sent < len(plan.messages),
        elapsed_s=time.monotonic() - started,
        per_topic=per_topic,
        first_error=errors[0] if errors else None,
        lateness_ms=lateness,
    )


class ReplayDeduper:
    """Recognises replayed messages already seen, by their ``eddy-replay-id`` header.

    Replay keeps each recorded partition's order on one target partition, so the highest recorded offset seen per
    recorded partition is all there is to remember: a message at or below it is a duplicate. Messages without the
    header are never duplicates. ``marks`` is what a consumer checkpoints.
    """

    def __init__(self, marks: Mapping[str, int] | None = None) -> None:
        self.marks: dict[str, int] = dict(marks or {})

    def is_duplicate(self, headers: Headers) -> bool:
        """True if this message was replayed before; otherwise remember it and return False."""
        if not headers:
            return False
        items = headers.items() if isinstance(headers, Mapping) else headers
        stamp = next((value for name, value in items if name == DEDUPE_HEADER), None)
        if not stamp:
            return False
        where, _, offset_text = stamp.decode("utf-8", "replace").rpartition(":")
        try:
            offset = int(offset_text)
        except ValueError:
            return False
        if offset <= self.marks.get(where, -1):
            return True
        self.marks[where] = offset
        return False


# -- recording ------------------------------------------------------------------------------------------------------


@dataclass
class RecordSummary:
    """What a recording run wrote."""

    path: str
    written: int
    per_topic: dict[str, int]
    interrupted: bool
    elapsed_s: float

    def describe(self) -> str:
        """A one-line human summary."""
        topics = ", ".join(f"{t}: {n}" for t, n in sorted(self.per_topic.items())) or "nothing"
        end = " (interrupted)" if self.interrupted else ""
        return f"recorded {self.written} messages to {self.path} in {self.elapsed_s:.1f}s{end} ({topics})"


def record_topics(
    bus: KafkaBus,
    topics: Sequence[str],
    out: str | Path,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> RecordSummary:
    """Write the messages of ``topics`` with timestamps in ``[since_ms, until_ms]`` to ``out``.

    ``since_ms=None`` records from the start of the topics. Stops after ``limit`` messages, once every partition is
    caught up past ``until_ms`` (a future ``until_ms`` keeps recording live until then), or when ``stop`` is set.
    Topics are read from their first offset and filtered by timestamp, which works the same on Kafka and on the
    embedded broker (whose offset-for-time lookups are not reliable).
    """
    if not topics:
        raise ValueError("record needs at least one topic")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1 (got {limit})")
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        raise ValueError(f"--until ({until_ms}) is before --since ({since_ms})")
    counts = {topic: bus.partitions(topic) for topic in topics}  # raises for a topic that does not exist
    stop = stop or threading.Event()
    partitions = [TopicPartition(topic, p) for topic, n in counts.items() for p in range(n)]
    consumer = bus.consumer(enable_auto_commit=False)
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    per_topic = {topic: 0 for topic in topics}
    written = 0
    started = time.monotonic()
    finished: set[TopicPartition] = set()
    try:
        with RecordingWriter(out) as writer:
            while not stop.is_set() and (limit is None or written < limit) and len(finished) < len(partitions):
                batch = consumer.poll(200, max_records=500)
                for tp, records in batch.items():
                    for record in records:
                        if (limit is not None and written >= limit) or tp in finished:
                            break
                        if until_ms is not None and record.timestamp > until_ms:
                            finished.add(tp)
                            break
                        if since_ms is not None and record.timestamp < since_ms:
                            continue
                        writer.write(_recorded(record))
                        written += 1
                        per_topic[record.topic] += 1
                if until_ms is not None and time.time() * 1000 > until_ms:
                    finished.update(tp for tp in partitions if _caught_up(consumer, tp))
                if progress is not None:
                    progress(written)
    finally:
        consumer.close()
    interrupted = stop.is_set()
    return RecordSummary(str(out), written, per_topic, interrupted, time.monotonic() - started)


def _caught_up(consumer: Any, tp: TopicPartition) -> bool:
    highwater = consumer.highwater(tp)
    return highwater is not None and consumer.position(tp) >= highwater


def _recorded(record: Any) -> RecordedMessage:
    return RecordedMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        ts=int(record.timestamp),
        key=record.key,
        payload=record.value,
        headers=tuple((name, value) for name, value in (record.headers or [])),
        tstype="logappend" if record.timestamp_type == 1 else "create",
    )


__all__ = [
    "DEDUPE_HEADER",
    "PlannedMessage",
    "RecordSummary",
    "ReplayDeduper",
    "ReplayPlan",
    "ReplaySummary",
    "check_targets",
    "parse_topic_map",
    "plan_replay",
    "record_topics",
    "replay_plan",
]
