"""The Kafka bus against the embedded broker: topics, keyed produce, partitions, reading."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from connectors.bus import BusError, KafkaBus, bootstrap_servers, check_topic_name


def test_keyed_produce_keeps_each_key_on_one_partition(bus: KafkaBus, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("keyed", partitions=4)
    keys = [f"user-{i % 10}".encode() for i in range(200)]
    assert bus.produce(topic, [str(i).encode() for i in range(200)], keys) == 200
    records = bus.read(topic, 200, timeout_s=10)
    assert sorted(int(r.value) for r in records) == list(range(200))
    partitions: dict[bytes, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for parts in partitions.values() for p in parts}) > 1  # keys spread over partitions
    for partition in range(4):
        values = [int(r.value) for r in records if r.partition == partition]
        assert values == sorted(values)  # per-partition order is production order


def test_create_list_describe(bus: KafkaBus, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("described", partitions=3)
    assert topic in bus.list_topics()
    assert bus.create_topics([topic], 3) == []  # exists: skipped
    with pytest.raises(BusError, match="already exists"):
        bus.create_topics([topic], 3, exist_ok=False)
    bus.produce(topic, [b"a", b"b"], [b"k", b"k"])
    info = bus.describe(topic)
    assert info.partitions == 3 and sum(info.messages.values()) == 2
    assert bus.partitions(topic) == 3


def test_missing_topic_and_bad_input_say_how_to_fix(bus: KafkaBus) -> None:
    with pytest.raises(BusError, match="eddy topics create"):
        bus.partitions("no.such.topic.here")
    with pytest.raises(BusError, match="invalid topic name"):
        check_topic_name("bad topic!")
    with pytest.raises(BusError, match="partitions must be >= 1"):
        bus.create_topics(["x.y"], 0)
    with pytest.raises(BusError, match="kafka://"):
        bootstrap_servers("localhost:9092")
    with pytest.raises(BusError, match="host:port"):
        bootstrap_servers("kafka://localhost")
