"""broker.v1.CallbackService over gRPC: execution reports in, each booked once, each acknowledged.

Only the exchange gets here (RequireBearerToken refuses anyone else before this runs). A duplicate, a break and
an applied report are all acknowledged: the exchange must stop sending them; only an error is retried. Reports come
one call each (ReportExecution) or in batches on a stream (StreamExecutions), where batches are booked concurrently,
sharing settlement transactions, and each is acknowledged once all its reports are booked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio
from prometheus_client import Counter

from brokerage.domain.executions import ExecutionReport, Settled, SettlementOutcome
from brokerage.messaging.doorbell import Doorbell
from brokerage.proto import callback_pb2, callback_pb2_grpc
from brokerage.rpc.streams import answer_each
from brokerage.storage.settlements import SettlementStore
from brokerage.telemetry import get_logger
from brokerage.wire import report_from_proto, reports_from_proto

log = get_logger(__name__)

REPORTS = Counter(
    "settlement_reports_total",
    "Execution reports received, by type and what settlement made of them.",
    ("exec_type", "outcome"),
)


class CallbackServicer(callback_pb2_grpc.CallbackServiceServicer):
    def __init__(self, store: SettlementStore, doorbell: Doorbell) -> None:
        self._store = store
        self._doorbell = doorbell

    async def ReportExecution(
        self, request: callback_pb2.ExecutionReport, context: aio.ServicerContext
    ) -> callback_pb2.ReportExecutionResponse:
        [settled] = await self._book([report_from_proto(request)])
        return callback_pb2.ReportExecutionResponse(duplicate=settled.outcome is SettlementOutcome.DUPLICATE)

    async def StreamExecutions(
        self, request_iterator: AsyncIterator[callback_pb2.ExecutionReportBatch], context: aio.ServicerContext
    ) -> AsyncIterator[callback_pb2.ExecutionAckBatch]:
        """Books the batches concurrently as they arrive; a malformed report, or the database away, ends the stream
        (the exchange sends again whatever it did not see acknowledged)."""
        async for acks in answer_each(request_iterator, self._book_batch):
            yield acks

    async def _book_batch(self, batch: callback_pb2.ExecutionReportBatch) -> callback_pb2.ExecutionAckBatch:
        reports = reports_from_proto(batch)
        outcomes = await self._book(reports)
        return callback_pb2.ExecutionAckBatch(
            acks=[
                callback_pb2.ExecutionAck(
                    exec_id=report.exec_id, duplicate=settled.outcome is SettlementOutcome.DUPLICATE
                )
                for report, settled in zip(reports, outcomes, strict=True)
            ]
        )

    async def _book(self, reports: list[ExecutionReport]) -> list[Settled]:
        """Books the reports, then rings once for every customer whose orders changed."""
        outcomes = await self._store.apply(reports)
        for report, settled in zip(reports, outcomes, strict=True):
            REPORTS.labels(report.exec_type.value, settled.outcome.value).inc()
            _log_outcome(report, settled)
        changed = [s.customer_id for s in outcomes if s.events_through is not None and s.customer_id is not None]
        if changed:
            await self._doorbell.ring(changed)
        return outcomes


def _log_outcome(report: ExecutionReport, settled: Settled) -> None:
    ids = {"order_id": report.order_id, "exec_id": report.exec_id, "customer_id": settled.customer_id}
    if settled.outcome is SettlementOutcome.BREAK:
        log.error("execution report cannot be applied; kept as a break", **ids)
    else:
        log.info(
            "execution report",
            **ids,
            exec_type=report.exec_type.value,
            last_quantity=report.last_quantity,
            outcome=settled.outcome.value,
        )
