"""The group-commit batcher, with a fake batch runner: no I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from brokerage.storage.batching import MicroBatcher


class Recorder:
    def __init__(self, delay: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay

    async def run(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_a_lone_call_goes_out_at_once_alone() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder.run, max_batch=10, max_in_flight=2)

    assert await batcher.submit(4) == 40
    assert recorder.batches == [[4]]


async def test_calls_that_arrive_while_the_flushers_are_busy_share_a_batch_in_arrival_order() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder.run, max_batch=3, max_in_flight=1)

    results = await asyncio.gather(*(batcher.submit(i) for i in (0, 2, 4, 6, 8)), return_exceptions=True)

    assert results == [0, 20, 40, 60, 80]
    assert recorder.batches == [[0, 2, 4], [6, 8]]  # calls of the same moment share the first batch


async def test_items_submitted_together_share_batches_with_other_callers_and_come_back_in_order() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder.run, max_batch=3, max_in_flight=2)

    together = [batcher.enqueue(i) for i in (0, 2, 4, 6)]
    alone = batcher.enqueue(8)

    assert (await asyncio.gather(*together), await alone) == ([0, 20, 40, 60], 80)
    assert recorder.batches == [[0, 2, 4], [6, 8]]  # two flushers at once, the second shared with the lone call


async def test_items_submitted_together_raise_the_first_failure() -> None:
    batcher = MicroBatcher(Recorder().run, max_batch=10, max_in_flight=1)

    with pytest.raises(ValueError, match="odd 3"):
        await asyncio.gather(*(batcher.enqueue(i) for i in (2, 3, 4)))


async def test_each_caller_gets_its_own_outcome() -> None:
    batcher = MicroBatcher(Recorder().run, max_batch=10, max_in_flight=1)

    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)

    assert results[0] == 0 and results[2] == 20
    assert isinstance(results[1], ValueError) and isinstance(results[3], ValueError)


async def test_a_batch_that_fails_whole_fails_each_of_its_callers() -> None:
    async def broken(items: Sequence[int]) -> list[int | BaseException]:
        raise ConnectionError("database gone")

    batcher = MicroBatcher(broken, max_batch=10, max_in_flight=1)

    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(r, ConnectionError) for r in results)


async def test_no_more_than_max_in_flight_batches_run_at_once() -> None:
    running = peak = 0

    async def run(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return list(items)

    batcher = MicroBatcher(run, max_batch=2, max_in_flight=3)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(20))) == list(range(20))
    assert peak == 3


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    recorder = Recorder(delay=0.05)
    batcher = MicroBatcher(recorder.run, max_batch=10, max_in_flight=1)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)
    gone, kept = asyncio.create_task(batcher.submit(2)), asyncio.create_task(batcher.submit(4))
    await asyncio.sleep(0.01)
    gone.cancel()

    assert await first == 0 and await kept == 40
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_callers_of_a_cancelled_batch_are_cancelled_too() -> None:
    started = asyncio.Event()

    async def never_finishes(items: Sequence[int]) -> list[int | BaseException]:
        started.set()
        await asyncio.sleep(3600)
        return list(items)

    batcher = MicroBatcher(never_finishes, max_batch=10, max_in_flight=1)
    callers = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await started.wait()
    for flusher in list(batcher._flushers):
        flusher.cancel()

    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


async def test_a_caller_that_gave_up_while_queued_is_never_run() -> None:
    recorder = Recorder(delay=0.05)
    batcher = MicroBatcher(recorder.run, max_batch=10, max_in_flight=1)
    first = asyncio.create_task(batcher.submit(0))  # takes the only flusher
    await asyncio.sleep(0)
    queued = [asyncio.create_task(batcher.submit(i)) for i in (2, 4, 6)]
    await asyncio.sleep(0.01)
    queued[1].cancel()  # its deadline passed while it waited

    assert await first == 0 and await queued[0] == 20 and await queued[2] == 60
    assert recorder.batches == [[0], [2, 6]]


async def test_a_call_made_the_moment_the_last_batch_ends_is_not_stranded() -> None:
    """The flusher ends when it finds the queue empty; a call made before the loop has noticed that (here, by the
    caller its last batch just answered) must start a flusher of its own, not wait for some later call."""
    batcher = MicroBatcher(Recorder(delay=0).run, max_batch=10, max_in_flight=1)

    async def claim_then_record() -> int:
        await batcher.submit(2)
        return await batcher.submit(4)

    assert await asyncio.wait_for(claim_then_record(), timeout=2) == 40
