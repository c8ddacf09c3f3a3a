"""MicroBatcher: batches close on size or latency budget, results go back to their callers, a full queue blocks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from inference.microbatch import MicroBatcher

T = TypeVar("T")
HOUR = 3600.0  # a latency budget no test waits for


class Recorder:
    """The operator: records each batch it gets and answers ``-x``; can be held until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(batch)
        self.entered.set()
        self.release.wait()
        return [-x for x in batch]


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(test(), timeout=30))


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (no timing: it yields to the event loop)."""
    while not condition():
        await asyncio.sleep(0)


def test_a_batch_closes_when_full_and_every_caller_gets_its_own_result() -> None:
    async def main() -> None:
        process = Recorder()
        batcher = MicroBatcher(process, max_batch=4, latency_budget_s=HOUR, max_queue=100)
        calls = [asyncio.create_task(batcher.submit(x)) for x in range(12)]
        await until(lambda: batcher.waiting == 12)
        runner = asyncio.create_task(batcher.run())
        assert await asyncio.gather(*calls) == [-x for x in range(12)]
        assert process.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
        runner.cancel()

    run(main)


def test_a_batch_closes_when_its_first_request_has_used_the_latency_budget() -> None:
    async def main() -> None:
        process = Recorder()
        batcher = MicroBatcher(process, max_batch=100, latency_budget_s=0.02, max_queue=100)
        runner = asyncio.create_task(batcher.run())
        assert await asyncio.gather(*(batcher.submit(x) for x in range(3))) == [0, -1, -2]
        assert await batcher.submit(7) == -7
        assert process.batches == [[0, 1, 2], [7]]
        runner.cancel()

    run(main)


def test_a_full_queue_blocks_the_caller_until_there_is_room() -> None:
    async def main() -> None:
        process = Recorder(hold=True)
        batcher = MicroBatcher(process, max_batch=2, latency_budget_s=0.0, max_queue=2)
        runner = asyncio.create_task(batcher.run())
        calls = [asyncio.create_task(batcher.submit(0))]
        await until(process.entered.is_set)  # the operator holds [0]
        calls += [asyncio.create_task(batcher.submit(x)) for x in (1, 2, 3)]
        await until(lambda: batcher.waiting == 2)
        done, _ = await asyncio.wait(calls, timeout=0.05)
        assert not done and batcher.waiting == 2, "the third queued request waits for room, memory stays bounded"
        process.release.set()  # then the backlog is batched at once, up to the size, its budget long spent
        assert await asyncio.gather(*calls) == [0, -1, -2, -3]
        assert process.batches == [[0], [1, 2], [3]]
        runner.cancel()

    run(main)


def test_an_operator_error_goes_to_every_caller_of_the_batch_and_the_batcher_goes_on() -> None:
    def process(batch: list[int]) -> list[int]:
        if 0 in batch:
            raise ZeroDivisionError("no zeros")
        return batch[:1]  # one result for a batch of two

    async def main() -> None:
        batcher = MicroBatcher(process, max_batch=2, latency_budget_s=HOUR, max_queue=10)
        calls = [asyncio.create_task(batcher.submit(x)) for x in (0, 1, 2, 3)]
        await until(lambda: batcher.waiting == 4)
        runner = asyncio.create_task(batcher.run())
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [type(r) for r in results] == [ZeroDivisionError] * 2 + [ValueError] * 2
        assert "process returned 1 results for 2 requests" in str(results[2])
        runner.cancel()

    run(main)


def test_stopping_the_batcher_cancels_the_requests_it_will_not_answer() -> None:
    async def main() -> None:
        process = Recorder(hold=True)
        batcher = MicroBatcher(process, max_batch=1, latency_budget_s=HOUR, max_queue=10)
        runner = asyncio.create_task(batcher.run())
        calls = [asyncio.create_task(batcher.submit(0))]
        await until(process.entered.is_set)
        calls.append(asyncio.create_task(batcher.submit(1)))
        await until(lambda: batcher.waiting == 1)
        runner.cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        process.release.set()

    run(main)


@pytest.mark.parametrize(("max_batch", "latency_budget_s", "max_queue"), [(0, 0.1, 10), (4, -1.0, 10), (4, 0.1, 0)])
def test_bad_settings_are_refused(max_batch: int, latency_budget_s: float, max_queue: int) -> None:
    with pytest.raises(ValueError, match=rf"got {max_batch}, {max_queue}, {latency_budget_s}"):
        MicroBatcher(Recorder(), max_batch=max_batch, latency_budget_s=latency_budget_s, max_queue=max_queue)
