"""The Kafka bus against the embedded broker: topics, keyed produce, partitions, reading."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from connectors.bus import BusError, KafkaBus, bootstrap_servers, check_topic_name


def test_keyed_produce_keeps_each_key_on_one_partition(
    eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str]
) -> None:
    topic = eddy_topic_factory("keyed", partitions=4)
    keys = [f"user-{i % 10}".encode() for i in range(200)]
    assert eddy_bus.produce(topic, [str(i).encode() for i in range(200)], keys) == 200
    records = eddy_bus.read(topic, 200, timeout_s=10)
    assert sorted(int(r.value) for r in records) == list(range(200))
    partitions: dict[bytes, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for parts in partitions.values() for p in parts}) > 1  # keys spread over partitions
    for partition in range(4):
        values = [int(r.value) for r in records if r.partition == partition]
        assert values == sorted(values)  # per-partition order is production order


def test_create_list_describe(eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str]) -> None:
    topic = eddy_topic_factory("described", partitions=3)
    assert topic in eddy_bus.list_topics()
    assert eddy_bus.create_topics([topic], 3) == []  # exists: skipped
    with pytest.raises(BusError, match="already exists"):
        eddy_bus.create_topics([topic], 3, exist_ok=False)
    eddy_bus.produce(topic, [b"a", b"b"], [b"k", b"k"])
    info = eddy_bus.describe(topic)
    assert info.partitions == 3 and sum(info.messages.values()) == 2
    assert eddy_bus.partitions(topic) == 3


def test_missing_topic_and_bad_input_say_how_to_fix(eddy_bus: KafkaBus) -> None:
    with pytest.raises(BusError, match="eddy topics create"):
        eddy_bus.partitions("no.such.topic.here")
    with pytest.raises(BusError, match="invalid topic name"):
        check_topic_name("bad topic!")
    with pytest.raises(BusError, match="partitions must be >= 1"):
        eddy_bus.create_topics(["x.y"], 0)
    with pytest.raises(BusError, match="kafka://"):
        bootstrap_servers("localhost:9092")
    with pytest.raises(BusError, match="host:port"):
        bootstrap_servers("kafka://localhost")


def test_follow_reads_every_partition_from_the_beginning_until_stopped(
    eddy_bus: KafkaBus, eddy_topic_factory: Callable[..., str]
) -> None:
    topic = eddy_topic_factory("side", partitions=3)
    eddy_bus.produce(topic, [f"v{i}".encode() for i in range(9)], keys=[f"k{i}".encode() for i in range(9)])
    seen: list[bytes] = []
    stop = threading.Event()

    def handle(value: bytes) -> None:
        seen.append(value)
        if len(seen) == 10:  # the one produced after following started
            stop.set()

    follower = threading.Thread(target=eddy_bus.follow, args=(topic, handle, stop))
    follower.start()
    eddy_bus.produce(topic, [b"late"])
    follower.join(timeout=60)
    assert not follower.is_alive()
    assert sorted(seen) == sorted([f"v{i}".encode() for i in range(9)] + [b"late"])
