"""A Faust app whose consumer resumes partitions where Eddy's checkpoints say, and waits at most
``fetch_max_wait_ms`` for data (Faust hard-codes 1,500 ms).

Where to resume: after every rebalance Faust seeks each partition to the consumer group's committed offset. Faust
commits what its streams acknowledged, which can run ahead of the last checkpoint (a stopping worker acknowledges
the batches it no longer processes), so a partition taken over from another worker would skip events. The consumer
seeks again, to the positions the pipelines restored from their checkpoints (``EddyApp.positions``).

Why the fetch wait: a fetch long-poll normally returns as soon as data arrives, but the embedded Tansu broker holds
a fetch for its whole wait even when records arrive meanwhile (measured: p50 delivery 134 ms at 500 ms wait, 3.7 ms
at 50 ms). With Faust's fixed 1.5 s that is a second of latency per event. A short wait costs a real Kafka only a
few idle fetch requests per second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT

from pipelines.spec import DEFAULT_FETCH_WAIT_MS


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        app = cast(EddyApp, self.app)
        consumer._fetch_max_wait_ms = app.eddy_fetch_max_wait_ms  # read by the fetcher created in start()
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """Seek to the committed offsets as Faust does, then to the pipelines' own positions where they have one."""
        await super().perform_seek()
        assignment = self.assignment()
        for tp, offset in cast(EddyApp, self.app).positions().items():
            if tp in assignment:
                await self.seek(tp, offset)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class EddyApp(faust.App):
    """``faust.App`` whose partitions resume at ``positions()`` (next offset to read per partition, set by the worker
    from its pipelines' checkpoints; partitions it leaves out resume at the committed offset), with a configurable
    consumer fetch wait."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = DEFAULT_FETCH_WAIT_MS, **kwargs: Any) -> None:
        if fetch_max_wait_ms < 1:
            raise ValueError(f"fetch_max_wait_ms must be >= 1 (got {fetch_max_wait_ms})")
        self.eddy_fetch_max_wait_ms = fetch_max_wait_ms
        self.positions: Callable[[], Mapping[TP, int]] = dict
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)
