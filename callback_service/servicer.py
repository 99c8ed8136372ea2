"""broker.v1.CallbackService over gRPC: execution reports in, each booked once, each acknowledged.

Only the exchange gets here (RequireBearerToken refuses anyone else before this runs). A duplicate, a break and
an applied report are all acknowledged: the exchange must stop sending them; only an error is retried. Reports come
one call each (ReportExecution) or as a stream (StreamExecutions), where they are booked concurrently, sharing
settlement transactions, and acknowledged as each is booked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc import aio
from prometheus_client import Counter

from brokerage.domain.executions import ExecutionReport, Settled, SettlementOutcome
from brokerage.messaging.doorbell import Doorbell
from brokerage.proto import callback_pb2, callback_pb2_grpc
from brokerage.storage.settlements import SettlementStore
from brokerage.telemetry import get_logger, log_context
from brokerage.wire import report_from_proto

log = get_logger(__name__)

REPORTS = Counter(
    "settlement_reports_total",
    "Execution reports received, by type and what settlement made of them.",
    ("exec_type", "outcome"),
)
_END = object()  # the stream's last acknowledgement has been queued


class CallbackServicer(callback_pb2_grpc.CallbackServiceServicer):
    def __init__(self, store: SettlementStore, doorbell: Doorbell) -> None:
        self._store = store
        self._doorbell = doorbell

    async def ReportExecution(
        self, request: callback_pb2.ExecutionReport, context: aio.ServicerContext
    ) -> callback_pb2.ReportExecutionResponse:
        settled = await self._book(report_from_proto(request))
        return callback_pb2.ReportExecutionResponse(duplicate=settled.outcome is SettlementOutcome.DUPLICATE)

    async def StreamExecutions(
        self, request_iterator: AsyncIterator[callback_pb2.ExecutionReport], context: aio.ServicerContext
    ) -> AsyncIterator[callback_pb2.ExecutionAck]:
        acks: asyncio.Queue[object] = asyncio.Queue()
        reader = asyncio.create_task(self._book_each(request_iterator, acks))
        try:
            while (ack := await acks.get()) is not _END:
                if isinstance(ack, BaseException):
                    raise ack  # a malformed report, or the database away: the stream ends, the rest is resent
                assert isinstance(ack, callback_pb2.ExecutionAck)
                yield ack
        finally:
            reader.cancel()

    async def _book_each(
        self, requests: AsyncIterator[callback_pb2.ExecutionReport], acks: asyncio.Queue[object]
    ) -> None:
        """Books every report of the stream as it arrives, queueing each one's acknowledgement when it is booked."""
        booking: set[asyncio.Task[None]] = set()

        async def book(report: ExecutionReport) -> None:
            try:
                settled = await self._book(report)
            except Exception as error:
                acks.put_nowait(error)
                return
            duplicate = settled.outcome is SettlementOutcome.DUPLICATE
            acks.put_nowait(callback_pb2.ExecutionAck(exec_id=report.exec_id, duplicate=duplicate))

        try:
            async for request in requests:
                task = asyncio.create_task(book(report_from_proto(request)))
                booking.add(task)
                task.add_done_callback(booking.discard)
            await asyncio.gather(*booking)
            acks.put_nowait(_END)
        except Exception as error:  # a malformed report, or the stream broke
            acks.put_nowait(error)
        finally:
            for task in booking:
                task.cancel()

    async def _book(self, report: ExecutionReport) -> Settled:
        with log_context(order_id=report.order_id, exec_id=report.exec_id):
            settled = await self._store.apply(report)
            REPORTS.labels(report.exec_type.value, settled.outcome.value).inc()
            if settled.events_through is not None and settled.customer_id is not None:
                await self._doorbell.ring([settled.customer_id])
            if settled.outcome is SettlementOutcome.BREAK:
                log.error("execution report cannot be applied; kept as a break", customer_id=settled.customer_id)
            else:
                log.info(
                    "execution report",
                    customer_id=settled.customer_id,
                    exec_type=report.exec_type.value,
                    last_quantity=report.last_quantity,
                    outcome=settled.outcome.value,
                )
        return settled
