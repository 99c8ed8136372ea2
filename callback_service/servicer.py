"""broker.v1.CallbackService over gRPC: execution reports in, each booked once, each acknowledged.

Only the exchange gets here (RequireBearerToken refuses anyone else before this runs). Every report is parsed from
its own bytes: a single report gRPC would refuse to parse (bad UTF-8 in a string, say) is a break to keep, not a
call or a batch to fail. A duplicate, a break and an applied report are all acknowledged: the exchange must stop
sending them; only a failure to book (the database away) is an error, and the report is sent again. Reports come
one call each (ReportExecution) or in batches on a stream (StreamExecutions), where batches are booked concurrently,
sharing settlement transactions, and each is acknowledged, report by report in its order, once all are booked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
from grpc import aio
from prometheus_client import Counter

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.executions import ExecutionReport, Received, Settled, SettlementOutcome
from brokerage.messaging.doorbell import Doorbell
from brokerage.proto import callback_pb2, callback_pb2_grpc
from brokerage.rpc.streams import answer_each
from brokerage.storage.settlements import SettlementStore
from brokerage.telemetry import get_logger
from brokerage.wire import REPORT_BATCH_MAX, received

log = get_logger(__name__)

SERVICE_NAME = "broker.v1.CallbackService"
REPORTS = Counter(
    "settlement_reports_total",
    "Execution reports received, by type and what settlement made of them.",
    ("exec_type", "outcome"),
)
OUTCOME_TO_PROTO = {
    SettlementOutcome.APPLIED: callback_pb2.REPORT_OUTCOME_BOOKED,
    SettlementOutcome.DUPLICATE: callback_pb2.REPORT_OUTCOME_DUPLICATE,
    SettlementOutcome.BREAK: callback_pb2.REPORT_OUTCOME_BREAK,
}


class CallbackServicer(callback_pb2_grpc.CallbackServiceServicer):
    def __init__(self, store: SettlementStore, doorbell: Doorbell, on_booked: Callable[[], None]) -> None:
        self._store = store
        self._doorbell = doorbell
        self._on_booked = on_booked  # the post-trade feed's relay: a fill booked waits in its outbox

    async def ReportExecution(  # type: ignore[override]  # the report's bytes: see add_to_server
        self, request: bytes, context: aio.ServicerContext
    ) -> callback_pb2.ReportExecutionResponse:
        [settled] = await self._book([received(request)])
        return callback_pb2.ReportExecutionResponse(
            duplicate=settled.outcome is SettlementOutcome.DUPLICATE, outcome=OUTCOME_TO_PROTO[settled.outcome]
        )

    async def StreamExecutions(
        self, request_iterator: AsyncIterator[callback_pb2.ExecutionReportBatch], context: aio.ServicerContext
    ) -> AsyncIterator[callback_pb2.ExecutionAckBatch]:
        """Books the batches concurrently as they arrive; only the database away (or a batch beyond the contract's
        size) ends the stream, and the exchange sends again whatever it did not see acknowledged."""
        async for acks in answer_each(request_iterator, self._book_batch):
            yield acks

    async def _book_batch(self, batch: callback_pb2.ExecutionReportBatch) -> callback_pb2.ExecutionAckBatch:
        if len(batch.reports) > REPORT_BATCH_MAX:
            raise InvalidRequest([FieldViolation("reports", f"at most {REPORT_BATCH_MAX:,} in a batch")])
        reports = [received(raw) for raw in batch.reports]
        outcomes = await self._book(reports)
        return callback_pb2.ExecutionAckBatch(
            batch_id=batch.batch_id,
            acks=[
                callback_pb2.ExecutionAck(
                    exec_id=report.exec_id,
                    duplicate=settled.outcome is SettlementOutcome.DUPLICATE,
                    outcome=OUTCOME_TO_PROTO[settled.outcome],
                )
                for report, settled in zip(reports, outcomes, strict=True)
            ],
        )

    async def _book(self, reports: list[Received]) -> list[Settled]:
        """Books the reports, then wakes the feed's relay and rings once for every customer whose orders changed."""
        outcomes = await self._store.apply(reports)
        for report, settled in zip(reports, outcomes, strict=True):
            _count_and_log(report, settled)
        changed = [s.customer_id for s in outcomes if s.events_through is not None and s.customer_id is not None]
        if changed:
            self._on_booked()
            await self._doorbell.ring(changed)
        return outcomes


def add_to_server(servicer: CallbackServicer, server: aio.Server) -> None:
    """As the generated add_CallbackServiceServicer_to_server, except that ReportExecution takes its request's bytes
    and parses them itself: a report gRPC could not deserialize is a break to keep, not a call that fails before it
    reaches us (and is sent again for ever)."""
    handlers = {
        "ReportExecution": grpc.unary_unary_rpc_method_handler(
            servicer.ReportExecution,
            request_deserializer=None,  # the bytes as they came
            response_serializer=callback_pb2.ReportExecutionResponse.SerializeToString,
        ),
        "StreamExecutions": grpc.stream_stream_rpc_method_handler(
            servicer.StreamExecutions,
            request_deserializer=callback_pb2.ExecutionReportBatch.FromString,
            response_serializer=callback_pb2.ExecutionAckBatch.SerializeToString,
        ),
    }
    assert set(handlers) == set(callback_pb2.DESCRIPTOR.services_by_name["CallbackService"].methods_by_name)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _count_and_log(report: Received, settled: Settled) -> None:
    parsed = report.parsed
    exec_type = parsed.exec_type.value if isinstance(parsed, ExecutionReport) else "MALFORMED"
    REPORTS.labels(exec_type, settled.outcome.value).inc()
    ids = {"order_id": parsed.order_id, "exec_id": parsed.exec_id, "customer_id": settled.customer_id}
    if settled.outcome is SettlementOutcome.BREAK:
        detail = parsed.detail if not isinstance(parsed, ExecutionReport) else None
        log.error("execution report cannot be applied; kept as a break", **ids, exec_type=exec_type, detail=detail)
    else:
        log.info(
            "execution report",
            **ids,
            exec_type=exec_type,
            last_quantity=parsed.last_quantity if isinstance(parsed, ExecutionReport) else None,
            outcome=settled.outcome.value,
        )
