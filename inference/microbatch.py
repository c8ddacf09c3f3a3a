"""Batch requests from many streams into one operator call: up to a batch size or a latency budget, bounded queue.

An inference operator is fastest on big batches (one decode step for many streams), but a request must not wait
long for others to arrive. :class:`MicroBatcher` closes a batch when it holds ``max_batch`` requests or when its
oldest request has waited ``latency_budget_s``, whichever comes first, runs the operator on it off the event loop
(the operator is synchronous and CPU/GPU-heavy; DESIGN.md §2), and hands each caller its own result.

Backpressure: requests wait in a queue of at most ``max_queue``; when it is full, :meth:`MicroBatcher.submit`
*blocks* (awaits a free place) rather than rejecting, so a slow operator slows its producers (a Faust agent stops
pulling from Kafka) and memory stays bounded by ``max_queue + max_batch`` requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


class MicroBatcher(Generic[Request, Result]):
    """Collects requests across streams into batches for ``process``, under a size cap and a latency budget.

    Parameters
    ----------
    process
        Called with each batch (a list of requests, in arrival order), in a worker thread; returns one result per
        request, in the same order. If it raises, every request of the batch gets the exception.
    max_batch
        Most requests per batch.
    latency_budget_s
        Longest a batch waits for more requests after its first one arrived.
    max_queue
        Most requests waiting for a batch; :meth:`submit` blocks while it is full.

    Examples
    --------
    >>> async def main() -> list[int]:
    ...     batcher = MicroBatcher(lambda xs: [x * 10 for x in xs], max_batch=8, latency_budget_s=0.01, max_queue=64)
    ...     runner = asyncio.create_task(batcher.run())
    ...     results = await asyncio.gather(*(batcher.submit(x) for x in range(3)))
    ...     runner.cancel()
    ...     return results
    >>> asyncio.run(main())
    [0, 10, 20]
    """

    def __init__(
        self,
        process: Callable[[list[Request]], Sequence[Result]],
        *,
        max_batch: int,
        latency_budget_s: float,
        max_queue: int,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or latency_budget_s < 0:
            raise ValueError(
                f"MicroBatcher: need max_batch >= 1, max_queue >= 1 and latency_budget_s >= 0 (got {max_batch}, "
                f"{max_queue}, {latency_budget_s})"
            )
        self.process = process
        self.max_batch, self.latency_budget_s = max_batch, latency_budget_s
        self._queue: asyncio.Queue[_Pending[Request, Result]] = asyncio.Queue(max_queue)

    @property
    def waiting(self) -> int:
        """Requests in the queue, not yet in a batch."""
        return self._queue.qsize()

    async def submit(self, request: Request) -> Result:
        """Queue ``request`` (waiting for a free place while the queue is full) and return its result."""
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future(), loop.time())
        await self._queue.put(pending)
        return await pending.future

    async def run(self) -> None:
        """Form batches and process them, one at a time, until cancelled; then every request not answered yet
        (in the batch being processed or still queued) is cancelled, so no caller waits forever."""
        batch: list[_Pending[Request, Result]] = []
        try:
            while True:
                batch = await self._next_batch()
                requests = [p.request for p in batch]
                try:
                    results = await asyncio.to_thread(self.process, requests)
                    if len(results) != len(requests):
                        raise ValueError(
                            f"MicroBatcher: process returned {len(results)} results for {len(requests)} requests; "
                            "it must return one per request, in order"
                        )
                except Exception as error:
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(error)
                    continue
                for p, result in zip(batch, results, strict=True):
                    if not p.future.done():  # its caller may have given up (cancelled)
                        p.future.set_result(result)
        finally:
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            for p in batch:
                p.future.cancel()

    async def _next_batch(self) -> list[_Pending[Request, Result]]:
        """Wait for a first request, then take more until the batch is full or the first request's budget is spent
        (a backlog fills the batch at once, however late)."""
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = batch[0].arrived + self.latency_budget_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch


@dataclass(frozen=True)
class _Pending(Generic[Request, Result]):
    """A queued request, the future its caller awaits, and when it arrived (event-loop time)."""

    request: Request
    future: asyncio.Future[Result]
    arrived: float
