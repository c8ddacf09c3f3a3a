"""The Kafka bus: producers, consumers and topic admin for a ``kafka://`` URL (kafka-python clients).

Used by the CLI (``eddy produce``/``consume``/``topics``), sources, tests and benchmarks; the pipeline runtime
itself consumes through Faust. Works the same against the embedded Tansu broker and a real Kafka cluster.

Tansu quirk (DESIGN.md §9): ``end_offsets()`` can lag behind what was written, so :meth:`KafkaBus.read` counts by
reading and consumer lag is computed from the high-water marks that fetch responses carry.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAlreadyExistsError

TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class BusError(ValueError):
    """Bad input to the bus (URL, topic name, partition count); the message says how to fix it."""


def bootstrap_servers(url: str) -> list[str]:
    """``kafka://h1:9092,h2:9092`` -> ``["h1:9092", "h2:9092"]``.

    >>> bootstrap_servers("kafka://127.0.0.1:9092,10.0.0.2:9093")
    ['127.0.0.1:9092', '10.0.0.2:9093']
    """
    if not url.startswith("kafka://"):
        raise BusError(f"broker URL must look like 'kafka://host:port[,host:port]' (got {url!r})")
    hosts = [h.strip() for h in url.removeprefix("kafka://").split(",") if h.strip()]
    if not hosts or any(not re.fullmatch(r"[^:/\s]+:\d+", h) for h in hosts):
        raise BusError(f"broker URL must list host:port pairs, e.g. 'kafka://localhost:9092' (got {url!r})")
    return hosts


def check_topic_name(name: str) -> str:
    """Return ``name`` if Kafka accepts it as a topic name, else raise :class:`BusError`."""
    if not TOPIC_NAME.fullmatch(name):
        raise BusError(
            f"invalid topic name {name!r}: use 1-249 characters from letters, digits, '.', '_' and '-' "
            "(e.g. 'live.interactions')"
        )
    return name


@dataclass(frozen=True)
class TopicInfo:
    """What ``eddy topics describe`` prints for one topic."""

    name: str
    partitions: int
    messages: dict[int, int]


class KafkaBus:
    """Clients for one broker URL. Cheap to create; clients are made on demand and owned by the caller."""

    def __init__(self, url: str, *, client_id: str = "eddy") -> None:
        self.url = url
        self.servers = bootstrap_servers(url)
        self.client_id = client_id

    def producer(self, **config: Any) -> KafkaProducer:
        """A producer with sane streaming defaults (small linger, acks from the leader); ``config`` overrides."""
        settings: dict[str, Any] = {
            "linger_ms": 5,
            "acks": 1,
            "enable_idempotence": False,
            "max_request_size": 8 * 1024 * 1024,
        }
        settings.update(config)
        return KafkaProducer(bootstrap_servers=self.servers, client_id=self.client_id, **settings)

    def consumer(
        self, *topics: str, group_id: str | None = None, from_beginning: bool = True, **config: Any
    ) -> KafkaConsumer:
        """A consumer subscribed to ``topics`` (or unsubscribed when none are given)."""
        settings: dict[str, Any] = {
            "auto_offset_reset": "earliest" if from_beginning else "latest",
            "enable_auto_commit": group_id is not None,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            # Tansu holds a fetch for its whole wait even when data arrives; a short wait keeps latency low
            "fetch_max_wait_ms": 20,
        }
        settings.update(config)
        for topic in topics:
            check_topic_name(topic)
        return KafkaConsumer(
            *topics, bootstrap_servers=self.servers, client_id=self.client_id, group_id=group_id, **settings
        )

    def admin(self) -> KafkaAdminClient:
        """An admin client; close it when done."""
        return KafkaAdminClient(bootstrap_servers=self.servers, client_id=self.client_id)

    def create_topics(
        self, names: Sequence[str], partitions: int = 1, *, compacted: bool = False, exist_ok: bool = True
    ) -> list[str]:
        """Create topics; returns those that were created (existing ones are skipped when ``exist_ok``)."""
        if partitions < 1:
            raise BusError(f"partitions must be >= 1 (got {partitions})")
        config = {"cleanup.policy": "compact"} if compacted else {}
        admin = self.admin()
        created: list[str] = []
        try:
            existing = set(admin.list_topics())
            for name in names:
                check_topic_name(name)
                if name in existing:
                    if exist_ok:
                        continue
                    raise BusError(f"topic {name!r} already exists (use 'eddy topics describe {name}')")
                try:
                    admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
                    created.append(name)
                except TopicAlreadyExistsError:
                    if not exist_ok:
                        raise BusError(f"topic {name!r} already exists") from None
        finally:
            admin.close()
        return created

    def list_topics(self) -> list[str]:
        """Topic names, internal ones (``__consumer_offsets``) left out, sorted."""
        admin = self.admin()
        try:
            return sorted(t for t in admin.list_topics() if not t.startswith("__"))
        finally:
            admin.close()

    def partitions(self, topic: str) -> int:
        """The number of partitions of ``topic``; raises :class:`BusError` if it does not exist."""
        consumer = self.consumer()
        try:
            parts = consumer.partitions_for_topic(check_topic_name(topic))
        finally:
            consumer.close()
        if not parts:
            raise BusError(f"topic {topic!r} does not exist (create it with 'eddy topics create {topic}')")
        return len(parts)

    def describe(self, topic: str) -> TopicInfo:
        """Partition count and messages per partition (counted from the high-water mark after a read)."""
        count = self.partitions(topic)
        consumer = self.consumer(enable_auto_commit=False)
        try:
            tps = [TopicPartition(topic, p) for p in range(count)]
            consumer.assign(tps)
            consumer.seek_to_beginning()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
                consumer.poll(100, max_records=1)
                for tp in tps:
                    consumer.seek_to_beginning(tp)
            return TopicInfo(topic, count, {tp.partition: consumer.highwater(tp) or 0 for tp in tps})
        finally:
            consumer.close()

    def produce(
        self, topic: str, values: Iterable[bytes], keys: Iterable[bytes | None] | None = None, **config: Any
    ) -> int:
        """Send ``values`` (with ``keys`` for key-partitioning) and wait until all are acknowledged."""
        producer = self.producer(**config)
        sent = 0
        try:
            key_iter = iter(keys) if keys is not None else None
            futures = []
            for value in values:
                key = next(key_iter) if key_iter is not None else None
                futures.append(producer.send(check_topic_name(topic), value=value, key=key))
                sent += 1
            producer.flush()
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close()
        return sent

    def read(
        self, topic: str, n: int | None = None, *, timeout_s: float = 10.0, from_beginning: bool = True
    ) -> list[ConsumerRecord]:
        """Read up to ``n`` records of ``topic`` (all partitions, no consumer group) within ``timeout_s``."""
        return list(self.iter_records(topic, n, timeout_s=timeout_s, from_beginning=from_beginning))

    def follow(self, topic: str, handle: Callable[[bytes], None], stop: threading.Event, poll_ms: int = 200) -> None:
        """Call ``handle`` with the value of every record of ``topic``, from the beginning of every partition and
        then as records arrive, until ``stop`` is set (no consumer group: every caller sees every record). For the
        threads that keep a worker's view of a side topic current (model announcements, live rooms)."""
        consumer = self.consumer(enable_auto_commit=False)
        try:
            parts = consumer.partitions_for_topic(check_topic_name(topic)) or {0}
            consumer.assign([TopicPartition(topic, p) for p in parts])
            consumer.seek_to_beginning()
            while not stop.is_set():
                for records in consumer.poll(poll_ms).values():
                    for record in records:
                        handle(record.value)
        finally:
            consumer.close()

    def iter_records(
        self, topic: str, n: int | None = None, *, timeout_s: float | None = 10.0, from_beginning: bool = True
    ) -> Iterator[ConsumerRecord]:
        """Yield records of ``topic`` until ``n`` were read or nothing arrived for ``timeout_s`` (None: forever)."""
        count = self.partitions(topic)
        consumer = self.consumer(enable_auto_commit=False)
        try:
            tps = [TopicPartition(topic, p) for p in range(count)]
            consumer.assign(tps)
            if from_beginning:
                consumer.seek_to_beginning()
            else:
                consumer.seek_to_end()
            seen = 0
            idle_since = time.monotonic()
            while n is None or seen < n:
                batch = consumer.poll(200, max_records=500 if n is None else min(500, n - seen))
                if not batch:
                    if timeout_s is not None and time.monotonic() - idle_since > timeout_s:
                        return
                    continue
                idle_since = time.monotonic()
                for records in batch.values():
                    for record in records:
                        yield record
                        seen += 1
        finally:
            consumer.close()
