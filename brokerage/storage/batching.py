"""Group commit for a hot write: calls that arrive while earlier ones are in the database share one
transaction, one round trip and one WAL flush.

No timer: a lone call goes out at once. Only when `max_in_flight` batches are already in the database do
new calls queue, and the next free flusher takes up to `max_batch` of them together, leaving out the calls
whose callers have given up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar

import psycopg
from prometheus_client import Counter

from brokerage.storage.queries import refused

Item = TypeVar("Item")
Result = TypeVar("Result")

# Runs one batch and returns, per item and in order, its result or the exception that item alone met.
RunBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]

BUSY_CALLS = Counter(
    "storage_busy_customer_calls_total",
    "Calls a group commit left out because another transaction held their customer; run again in one that waits.",
    ("statement",),
)


class MicroBatcher(Generic[Item, Result]):
    def __init__(self, run_batch: RunBatch[Item, Result], *, max_batch: int, max_in_flight: int) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushers: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references

    async def submit(self, item: Item) -> Result:
        return await self.enqueue(item)

    def enqueue(self, item: Item) -> asyncio.Future[Result]:
        """The item's result to come, as a future: a caller with many items gathers them without a task each."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if len(self._flushers) < self._max_in_flight:
            self._flushers.add(asyncio.create_task(self._flush()))  # ends by itself once the queue is empty
        return future

    async def _flush(self) -> None:
        try:
            while self._queue:
                # A caller that gave up (its deadline passed) is not waited for: under overload, work nobody
                # awaits would only delay the callers still waiting. What a batch has started, it finishes.
                waiting = [(item, future) for item, future in self._queue if not future.done()]
                batch, self._queue = waiting[: self._max_batch], waiting[self._max_batch :]
                if batch:
                    await self._settle(batch)
        finally:
            # Leaves the count in the very step that found the queue empty. A done callback would run a step
            # later, and a call made in between would see no free flusher and wait for the next caller.
            self._flushers.discard(asyncio.current_task())

    async def _settle(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results: Sequence[Result | BaseException] = await self._run_batch([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:  # never leave a caller waiting on a batch that will not finish
                future.cancel()
            raise
        except Exception as error:  # the whole batch failed: every caller hears why
            results = [error] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller gave up (cancelled); the work is done regardless
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def isolating_refusals(run_batch: RunBatch[Item, Result]) -> RunBatch[Item, Result]:
    """The batch transaction, except that when the database refuses it (a constraint, a bad value, our own RAISE:
    queries.refused) each item is run again alone, so only the item at fault fails. Anything else (a database that
    cannot be reached, a serialization failure) fails the whole batch, for its callers to try again."""

    async def run(batch: Sequence[Item]) -> Sequence[Result | BaseException]:
        try:
            return await run_batch(batch)
        except psycopg.Error as error:
            if len(batch) == 1 or not refused(error):
                raise
            return [await _alone(run_batch, item) for item in batch]

    return run


async def _alone(run_batch: RunBatch[Item, Result], item: Item) -> Result | BaseException:
    try:
        return (await run_batch([item]))[0]
    except Exception as error:
        return error


async def again_if_busy(
    statement: str,
    items: Sequence[Item],
    first: Iterable[Awaitable[Result | None]],
    waiting: MicroBatcher[Item, Result | None],
) -> list[Result]:
    """The items' results from `first` (each item's in a batch that does not wait on a customer another transaction
    holds); an item found busy there (None) goes again through `waiting`, whose batches do wait. Migration 0010."""
    results = list(await asyncio.gather(*first))
    if busy := [i for i, result in enumerate(results) if result is None]:
        BUSY_CALLS.labels(statement).inc(len(busy))
        again = await asyncio.gather(*(waiting.enqueue(items[i]) for i in busy))
        for i, result in zip(busy, again, strict=True):
            results[i] = result
    return [_not_busy(result) for result in results]


def _not_busy(result: Result | None) -> Result:
    if result is None:
        raise AssertionError("a batch that waits for its customers found one busy")
    return result
