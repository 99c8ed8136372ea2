"""At-least-once delivery of execution reports to CallbackService, one unary call per report.

Every report is sent until CallbackService acknowledges it, whatever the error (an unavailable or unauthenticated
answer is retried like any other: nothing is dropped), with exponential backoff and jitter between attempts and a
bounded number of calls in flight. Chaos decides per report whether to hold it back and whether to send it twice.
Reports waiting here are in memory: a stopped simulator delivers them no more (see the package docstring).
The streaming delivery (stream_delivery.py) keeps the same promises over StreamExecutions and shares what is here:
the metrics, DeliveryFailed, the ReportSink protocol and the record of what was delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from prometheus_client import Counter, Gauge

from brokerage.background import Backoff
from brokerage.domain.executions import ExecutionReport
from brokerage.telemetry import get_logger, log_context
from exchange_simulator.chaos import Chaos

log = get_logger(__name__)

DELIVERED = Counter("exchange_reports_delivered_total", "Execution reports CallbackService acknowledged.")
FAILURES = Counter(
    "exchange_report_delivery_failures_total",
    "Failed deliveries, by reason: a call not acknowledged, or a stream that ended owing acknowledgements.",
    ["reason"],
)
WAITING = Gauge("exchange_reports_awaiting_delivery", "Report deliveries not yet acknowledged (held, retrying).")
# DELIVERED and WAITING count copies: a report chaos sends twice is two deliveries, each acknowledged once.

Send = Callable[[ExecutionReport], Awaitable[None]]


class DeliveryFailed(Exception):
    """CallbackService did not acknowledge a report; reason names why (a status code's name)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ReportSink(Protocol):
    def enqueue(self, report: ExecutionReport) -> None: ...
    async def wait_delivered(self, exec_ids: Iterable[str], timeout: float) -> bool: ...
    async def close(self) -> None: ...


class Delivered:
    """The exec ids CallbackService has acknowledged at least once, for chaos to wait on."""

    def __init__(self) -> None:
        self._exec_ids: set[str] = set()
        self._waiters: dict[str, asyncio.Event] = {}

    def mark(self, exec_id: str) -> None:
        self._exec_ids.add(exec_id)
        waiter = self._waiters.pop(exec_id, None)
        if waiter is not None:
            waiter.set()

    async def wait(self, exec_ids: Iterable[str], timeout: float) -> bool:
        """Whether every one of these reports reached CallbackService within the timeout."""
        waiters = [self._waiters.setdefault(i, asyncio.Event()) for i in exec_ids if i not in self._exec_ids]
        try:
            async with asyncio.timeout(timeout):
                for waiter in waiters:
                    await waiter.wait()
        except TimeoutError:
            return False
        return True


class ReportDelivery:
    """Sends each enqueued report in its own task; a semaphore bounds the calls in flight."""

    def __init__(self, send: Send, *, concurrency: int, backoff: Backoff, chaos: Chaos, rng: random.Random) -> None:
        self._send = send
        self._slots = asyncio.Semaphore(concurrency)
        self._backoff = backoff
        self._chaos = chaos
        self._rng = rng
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivered = Delivered()

    def enqueue(self, report: ExecutionReport) -> None:
        """Queues the report (more than once, under chaos) for delivery; returns at once."""
        for delay in self._chaos.delays():
            task = asyncio.get_running_loop().create_task(self._deliver(report, delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            WAITING.inc()

    async def wait_delivered(self, exec_ids: Iterable[str], timeout: float) -> bool:
        """Whether every one of these reports reached CallbackService within the timeout."""
        return await self._delivered.wait(exec_ids, timeout)

    async def close(self) -> None:
        """Stops delivering: what is still waiting is forgotten, like everything else the venue holds."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _deliver(self, report: ExecutionReport, delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            await self._send_until_acknowledged(report)
            DELIVERED.inc()
            self._delivered.mark(report.exec_id)
        finally:
            WAITING.dec()

    async def _send_until_acknowledged(self, report: ExecutionReport) -> None:
        for attempt in itertools.count(1):
            try:
                async with self._slots:
                    await self._send(report)
                return
            except Exception as error:
                reason = error.reason if isinstance(error, DeliveryFailed) else type(error).__name__
                FAILURES.labels(reason).inc()
                if attempt == 1:  # one line per report, not one per retry, while CallbackService is down
                    with log_context(order_id=report.order_id, exec_id=report.exec_id):
                        log.warning("report not acknowledged; retrying until it is", error=str(error))
            await asyncio.sleep(self._backoff.delay(attempt, self._rng))


class KeptOnly:
    """No CallbackService configured: reports stay with the venue (status, drop copy) and go nowhere."""

    def enqueue(self, report: ExecutionReport) -> None:
        pass

    async def wait_delivered(self, exec_ids: Iterable[str], timeout: float) -> bool:
        return True

    async def close(self) -> None:
        pass
