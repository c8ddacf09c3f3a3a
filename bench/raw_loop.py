"""Contender (a): the loop a user would write by hand with kafka-python — consume, produce, commit."""

from __future__ import annotations

import signal
import sys

from connectors.bus import KafkaBus


def main(broker: str, source: str, destination: str) -> None:
    """Copy every record of ``source`` to ``destination`` until SIGTERM."""
    bus = KafkaBus(broker)
    consumer = bus.consumer(source, group_id=f"raw-{source}", max_poll_records=500)
    producer = bus.producer(linger_ms=1)
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    while running:
        for records in consumer.poll(100).values():
            for record in records:
                producer.send(destination, key=record.key, value=record.value)
    producer.flush()
    producer.close()
    consumer.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
