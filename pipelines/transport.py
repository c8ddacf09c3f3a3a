"""A Faust app whose Kafka consumer waits at most ``fetch_max_wait_ms`` for data (Faust hard-codes 1,500 ms).

Why: a fetch long-poll normally returns as soon as data arrives, but the embedded Tansu broker holds a fetch for
its whole wait even when records arrive meanwhile (measured: p50 delivery 134 ms at 500 ms wait, 3.7 ms at 50 ms).
With Faust's fixed 1.5 s that is a second of latency per event. A short wait costs a real Kafka only a few idle
fetch requests per second.
"""

from __future__ import annotations

from typing import Any, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

DEFAULT_FETCH_MAX_WAIT_MS = 20


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        app = cast(EddyApp, self.app)
        consumer._fetch_max_wait_ms = app.eddy_fetch_max_wait_ms  # read by the fetcher created in start()
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class EddyApp(faust.App):
    """``faust.App`` with a configurable consumer fetch wait."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS, **kwargs: Any) -> None:
        if fetch_max_wait_ms < 1:
            raise ValueError(f"fetch_max_wait_ms must be >= 1 (got {fetch_max_wait_ms})")
        self.eddy_fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)
