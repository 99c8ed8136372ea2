"""At-least-once delivery of execution reports to CallbackService over one StreamExecutions stream at a time.

Reports go out on the stream in batches, as the window allows (at most `window` copies unacknowledged): whatever
waits, up to `batch_max`, once fewer than `batches_in_flight` batches are unacknowledged, so a lone report goes
at once and a busy moment shares a message. CallbackService acknowledges each report by exec_id once booked, a batch
at a time, in any order. Whatever ends a stream (CallbackService away or restarted, any status, including
UNAUTHENTICATED and INVALID_ARGUMENT, or no acknowledgement for `ack_timeout` seconds while reports are in flight),
every copy not yet acknowledged is sent again on the next stream, opened after a backoff that grows while streams
keep failing without an acknowledgement. Chaos works as in unary delivery: a held copy joins the line later (so
later reports overtake it) and a doubled report is two copies, each sent and acknowledged. The metrics are unary
delivery's: DELIVERED and WAITING count copies, FAILURES counts streams that ended owing acknowledgements. The grpc
call itself is behind ReportStream (callback_client.py), so none of this needs a network.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from prometheus_client import Counter, Histogram

from brokerage.background import Backoff, stop_requested
from brokerage.domain.executions import ExecutionReport
from brokerage.telemetry import get_logger
from exchange_simulator.chaos import Chaos
from exchange_simulator.delivery import DELIVERED, FAILURES, WAITING, Delivered, DeliveryFailed
from exchange_simulator.report_queue import ReportQueue

log = get_logger(__name__)

STREAMS = Counter("exchange_report_streams_opened_total", "StreamExecutions streams opened to CallbackService.")
BATCH_SIZE = Histogram(
    "exchange_report_batch_size",
    "Reports (copies) in each StreamExecutions message.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
)
ENDED = "ENDED"  # the reason of a stream CallbackService closed with OK


class ReportStream(Protocol):
    """One open stream. Every way it ends surfaces as DeliveryFailed from write or read (reason ENDED if OK)."""

    async def write(self, reports: Sequence[ExecutionReport]) -> None: ...  # one batch
    async def read(self) -> list[str]: ...  # the exec_ids of the next batch of acknowledgements
    def cancel(self) -> None: ...


class StreamDelivery:
    def __init__(
        self,
        open_stream: Callable[[], ReportStream],
        *,
        window: int,
        batches_in_flight: int,
        batch_max: int,
        ack_timeout: float,
        backoff: Backoff,
        chaos: Chaos,
        rng: random.Random,
    ) -> None:
        self._open_stream = open_stream
        self._queue = ReportQueue(window)
        self._max_batches_in_flight = batches_in_flight
        self._batch_max = batch_max  # at most the contract's REPORT_BATCH_MAX (the setting's bound)
        self._batches_in_flight = 0  # sent on the current stream, their acknowledgements not yet back
        self._ack_timeout = ack_timeout
        self._backoff = backoff
        self._chaos = chaos
        self._rng = rng
        self._delivered = Delivered()
        self._sendable = asyncio.Event()  # a copy may wait and the window may have room
        self._holding: set[asyncio.Task[None]] = set()  # copies chaos holds back
        self._runner: asyncio.Task[None] | None = None  # started by the first report
        self._awaiting = 0  # copies enqueued and not yet acknowledged (WAITING's share of this delivery)
        self._failures = 0  # streams in a row that ended owing acknowledgements, with none received since
        self._last_progress = 0.0  # loop time of the last acknowledgement, or of the first copy in flight
        self._closed = False

    def enqueue(self, report: ExecutionReport) -> None:
        """Queues the report (more than once, under chaos) for the stream; returns at once."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        for delay in self._chaos.delays():
            self._awaiting += 1
            WAITING.inc()
            if delay:
                task = loop.create_task(self._hold(report, delay))
                self._holding.add(task)
                task.add_done_callback(self._holding.discard)
            else:
                self._admit(report)
        if self._runner is None:  # in a context of its own, not the log context of the report that started it
            self._runner = loop.create_task(self._run(), context=contextvars.Context())

    async def wait_delivered(self, exec_ids: Iterable[str], timeout: float) -> bool:
        """Whether every one of these reports reached CallbackService within the timeout."""
        return await self._delivered.wait(exec_ids, timeout)

    async def close(self) -> None:
        """Stops delivering (the stream is cancelled): what is still waiting is forgotten, like unary delivery's."""
        self._closed = True
        tasks = [*self._holding, *([self._runner] if self._runner else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        WAITING.dec(self._awaiting)
        self._awaiting = 0

    async def _hold(self, report: ExecutionReport, delay: float) -> None:
        await asyncio.sleep(delay)
        self._admit(report)

    def _admit(self, report: ExecutionReport) -> None:
        self._queue.add(report)
        self._sendable.set()

    async def _run(self) -> None:
        """Streams while there is something to send; after a stream ends, the next one sends its leftovers first."""
        while not stop_requested():
            if not self._queue:
                self._sendable.clear()
                await self._sendable.wait()
                continue
            ended = await self._stream()
            unacknowledged = self._queue.requeue()
            if not self._queue:
                continue  # ended owing nothing (closed, or broke while idle): the next report opens the next stream
            self._failures += 1
            FAILURES.labels(ended.reason).inc()
            if self._failures == 1:  # one line per outage, not one per stream retried
                log.warning(
                    "report stream ended; sending its unacknowledged reports again on a new one",
                    reason=ended.reason,
                    error=str(ended),
                    unacknowledged=unacknowledged,
                    waiting=len(self._queue),
                )
            await asyncio.sleep(self._backoff.delay(self._failures, self._rng))

    async def _stream(self) -> DeliveryFailed:
        """One stream, from opening to however it ends: copies out as the window allows, acknowledgements back."""
        STREAMS.inc()
        self._last_progress = asyncio.get_running_loop().time()
        try:
            stream = self._open_stream()
        except Exception as error:
            return DeliveryFailed(type(error).__name__, str(error))
        tasks = [asyncio.create_task(work) for work in (self._send(stream), self._receive(stream), self._watch())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            stream.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        first = next(task for task in tasks if task in done)
        failure = None if first.cancelled() else first.exception()  # cancelled: grpc cancelled the call (closing)
        if isinstance(failure, DeliveryFailed):
            return failure
        return DeliveryFailed(type(failure).__name__ if failure else "CANCELLED", str(failure or ""))

    async def _send(self, stream: ReportStream) -> None:
        """Sends what waits as one batch, unless enough batches are out already: then what comes meanwhile waits,
        to go together once an acknowledgement comes back (no timer: a lone report goes at once)."""
        self._batches_in_flight = 0
        while True:
            reports = (
                [] if self._batches_in_flight >= self._max_batches_in_flight else self._queue.take(self._batch_max)
            )
            if not reports:
                self._sendable.clear()
                await self._sendable.wait()
                continue
            if self._queue.in_flight == len(reports):
                self._last_progress = asyncio.get_running_loop().time()  # the watch starts with the first in flight
            self._batches_in_flight += 1
            BATCH_SIZE.observe(len(reports))
            await stream.write(reports)

    async def _receive(self, stream: ReportStream) -> None:
        while True:
            acknowledged = await stream.read()
            self._batches_in_flight = max(self._batches_in_flight - 1, 0)  # CallbackService answers batch by batch
            self._sendable.set()
            for exec_id in acknowledged:
                self._retire(exec_id)

    def _retire(self, exec_id: str) -> None:
        if not self._queue.acknowledge(exec_id):
            return  # not in flight: nothing to retire (a stray, or one we stopped waiting for)
        self._last_progress = asyncio.get_running_loop().time()
        self._awaiting -= 1
        WAITING.dec()
        DELIVERED.inc()
        self._delivered.mark(exec_id)
        self._sendable.set()  # the window has room
        if self._failures:
            log.info("report stream restored", failed_streams=self._failures)
            self._failures = 0

    async def _watch(self) -> None:
        """Ends a stream that leaves reports in flight unacknowledged for ack_timeout (a hung CallbackService)."""
        loop = asyncio.get_running_loop()
        while True:
            quiet = loop.time() - self._last_progress
            if self._queue.in_flight and quiet >= self._ack_timeout:
                raise DeliveryFailed("DEADLINE_EXCEEDED", f"no acknowledgement for {quiet:.1f} s")
            await asyncio.sleep(self._ack_timeout - quiet if self._queue.in_flight else self._ack_timeout)
