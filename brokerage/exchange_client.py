"""The exchange as we see it (the workers, the quote feed, reconciliation): a venue adapter that only translates.

Every call has a deadline; orders go on a SubmitOrders stream (submit_stream.py), each with a deadline of its own.
A refusal of the order is data (Refused); an answer that leaves the outcome unknown or says nothing about the order
is a VenueUnavailable of its class (brokerage.domain.submission: transient, unknown outcome, venue-wide), for the
worker to retry, park or stop sending: the exchange dedupes by our order id, so sending again is always safe, and a
customer's order is never rejected for something that may be our own misconfiguration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any, TypeVar

import grpc
from grpc import aio
from prometheus_client import Counter, Histogram

from brokerage.domain.executions import DropCopy, DropCopyEntry, ExecutionReport, Tombstone
from brokerage.domain.money import format_decimal, parse_decimal
from brokerage.domain.orders import Order, OrderStatus
from brokerage.domain.placement import Quote
from brokerage.domain.submission import (
    REFUSAL_CODES,
    Accepted,
    Refused,
    SubmissionOutcome,
    TransientVenueError,
    UnknownOutcome,
    VenueUnavailable,
    venue_error,
)
from brokerage.proto import common_pb2, exchange_pb2, exchange_pb2_grpc
from brokerage.rpc.tls import RenewingChannel, TlsFiles, open_channel
from brokerage.submit_stream import StreamBroken, SubmitStream
from brokerage.wire import SIDE_TO_PROTO, STATUS_FROM_PROTO, parse_report, report_from_proto, timestamp

Response = TypeVar("Response")
DROP_COPY_DEADLINE = 30.0  # a page of up to 10,000 executions: far more than one order's call

EXCHANGE_SECONDS = Histogram(
    "execution_exchange_seconds",
    "Time for the exchange to answer a call, by method.",
    ("method",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EXCHANGE_ERRORS = Counter("execution_exchange_errors_total", "Calls to the exchange that failed.", ("method", "code"))

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
# gRPC's own retries for a venue that is briefly unreachable, within each call's deadline (every method here is
# idempotent: SubmitOrder by our order id).
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "broker.v1.ExchangeService"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


@dataclass(frozen=True)
class VenueOrderStatus:
    """What the exchange says of one of our orders."""

    known: bool  # false: the exchange never received it
    status: OrderStatus | None
    venue_order_id: str
    cumulative_quantity: int
    reject_reason: str  # for a rejected order
    reports: tuple[ExecutionReport, ...] = ()  # every report of the order, as the venue has them (well-formed ones)


@dataclass(frozen=True)
class CancelAnswer:
    accepted: bool  # a cancel is under way; its report follows
    reason: str  # why not: already filled, ...
    never_received: bool = False  # the venue never had the order: it keeps a tombstone and refuses it today


class ExchangeClient:
    def __init__(self, channels: RenewingChannel, deadline: float) -> None:
        self._channels = channels
        self._stubs: tuple[aio.Channel, exchange_pb2_grpc.ExchangeServiceStub] | None = None
        self._deadline = deadline
        self._submissions = SubmitStream(lambda: self._stub.SubmitOrders(wait_for_ready=False))

    @classmethod
    def connect(cls, target: str, deadline: float, tls: TlsFiles | None = None) -> ExchangeClient:
        """A client of the venue at target: over mutual TLS with tls (our certificate, the venue's CA), its
        renewals followed; plaintext without."""
        options: list[tuple[str, object]] = [("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1)]
        return cls(RenewingChannel(lambda: open_channel(target, tls, options), tls), deadline)

    @property
    def _stub(self) -> exchange_pb2_grpc.ExchangeServiceStub:
        """The stub of the current channel (a renewed certificate makes a new one; the submit stream moves to it when
        it opens again)."""
        channel = self._channels.current()
        if self._stubs is None or self._stubs[0] is not channel:
            self._stubs = (channel, exchange_pb2_grpc.ExchangeServiceStub(channel))
        return self._stubs[1]

    async def close(self) -> None:
        await self._submissions.close()
        await self._channels.close()

    async def submit(self, order: Order) -> SubmissionOutcome:
        """Submits a market order with its protection price (and its expiry, a DAY order's), on the process's
        SubmitOrders stream; raises a VenueUnavailable of its class."""
        assert order.protection_price is not None  # only a PLACED order is submitted, and it is priced
        request = exchange_pb2.SubmitOrderRequest(
            order_id=order.order_id,
            customer_id=order.customer_id,
            symbol=order.symbol,
            side=SIDE_TO_PROTO[order.side],
            quantity=order.quantity,
            protection_price=format_decimal(order.protection_price),
            expires_at=timestamp(order.expires_at) if order.expires_at else None,
        )
        started = time.perf_counter()
        try:
            result = await self._submissions.submit(request, self._deadline)
        except (StreamBroken, TimeoutError) as error:
            code = "DEADLINE_EXCEEDED" if isinstance(error, TimeoutError) else "UNAVAILABLE"
            EXCHANGE_ERRORS.labels("SubmitOrders", code).inc()
            raise TransientVenueError(code, f"SubmitOrders: {error!r}") from error
        finally:
            EXCHANGE_SECONDS.labels("SubmitOrders").observe(time.perf_counter() - started)
        if result.error_code:
            code = _STATUS_CODES.get(result.error_code, grpc.StatusCode.UNKNOWN)
            EXCHANGE_ERRORS.labels("SubmitOrders", code.name).inc()
            if code is grpc.StatusCode.ALREADY_EXISTS:  # the venue has it: ask what became of it
                return await self._outcome_of_known_order(order.order_id)
            if code.name in REFUSAL_CODES:
                return Refused(f"refused by the exchange: {result.error_message}")
            raise venue_error(code.name, f"SubmitOrders: {result.error_message}")
        if not result.response.accepted:
            return Refused(result.response.reject_reason or "rejected by the exchange")
        return Accepted(result.response.venue_order_id, duplicate=result.response.duplicate)

    async def outcome_of(self, order_id: str) -> SubmissionOutcome | None:
        """What the venue made of an order whose send left the outcome unknown: its acceptance or refusal, or None
        when it never received it. Raises VenueUnavailable when it cannot say."""
        status = await self.order_status(order_id)
        if not status.known:
            return None
        if status.status is OrderStatus.REJECTED:
            return Refused(status.reject_reason or "rejected by the exchange")
        return Accepted(status.venue_order_id, duplicate=True)

    async def cancel(self, order_id: str) -> CancelAnswer:
        """Asks the exchange to cancel what is unfilled; the outcome arrives as execution reports. An order it never
        received is answered never_received: it keeps a tombstone and will refuse the order today."""
        request = exchange_pb2.ExchangeCancelRequest(order_id=order_id)
        try:
            response = await self._call("CancelOrder", self._stub.CancelOrder, request)
        except aio.AioRpcError as error:
            raise _unavailable("CancelOrder", error) from error
        return CancelAnswer(response.accepted, response.reason, response.never_received)

    async def order_status(self, order_id: str, *, resend_reports: bool = False) -> VenueOrderStatus:
        """The exchange's view of the order; with resend_reports it also sends every report of it again."""
        request = exchange_pb2.GetOrderStatusRequest(order_id=order_id, resend_reports=resend_reports)
        try:
            report = await self._call("GetOrderStatus", self._stub.GetOrderStatus, request)
        except aio.AioRpcError as error:
            raise _unavailable("GetOrderStatus", error) from error
        rejections = [r.reason for r in report.reports if r.exec_type == common_pb2.EXEC_TYPE_REJECTED]
        parsed = (parse_report(r.SerializeToString()) for r in report.reports)
        return VenueOrderStatus(
            known=report.known,
            status=STATUS_FROM_PROTO.get(report.status),
            venue_order_id=report.venue_order_id,
            cumulative_quantity=report.cumulative_quantity,
            reject_reason=rejections[0] if rejections else "",
            reports=tuple(r for r in parsed if isinstance(r, ExecutionReport)),
        )

    async def quotes(self) -> list[Quote]:
        try:
            response = await self._call("GetQuotes", self._stub.GetQuotes, exchange_pb2.GetQuotesRequest())
        except aio.AioRpcError as error:
            raise _unavailable("GetQuotes", error) from error
        return [Quote(q.symbol, parse_decimal(q.price), q.quoted_at.ToDatetime(tzinfo=UTC)) for q in response.quotes]

    async def drop_copy(self, trading_day: date | None = None) -> DropCopy:
        """Every report of the exchange's trading day (None: today there), with each order's arrival sequence, and
        every tombstone, read page by page (each page under its own deadline)."""
        request = exchange_pb2.GetDropCopyRequest(trading_day=trading_day.isoformat() if trading_day else "")
        day = DropCopy([], [])
        while True:
            try:
                page = await self._call("GetDropCopy", self._stub.GetDropCopy, request, deadline=DROP_COPY_DEADLINE)
            except aio.AioRpcError as error:
                raise _unavailable("GetDropCopy", error) from error
            for entry in page.executions:
                if entry.HasField("tombstone"):
                    recorded_at = entry.tombstone.recorded_at.ToDatetime(tzinfo=UTC)
                    day.tombstones.append(Tombstone(entry.tombstone.order_id, recorded_at))
                else:
                    report = report_from_proto(entry.report)
                    day.executions.append(DropCopyEntry(report, entry.customer_id, entry.arrival_sequence))
            if not page.next_page_token:
                return day
            request.page_token = page.next_page_token

    async def _outcome_of_known_order(self, order_id: str) -> SubmissionOutcome:
        outcome = await self.outcome_of(order_id)
        if outcome is None:
            raise UnknownOutcome("ALREADY_EXISTS", "the exchange called the order a duplicate but does not know it")
        return outcome

    async def _call(
        self, method: str, rpc: Callable[..., Awaitable[Response]], request: Any, deadline: float | None = None
    ) -> Response:
        started = time.perf_counter()
        try:
            return await rpc(request, timeout=deadline or self._deadline, wait_for_ready=False)
        except aio.AioRpcError as error:
            EXCHANGE_ERRORS.labels(method, error.code().name).inc()
            raise
        finally:
            EXCHANGE_SECONDS.labels(method).observe(time.perf_counter() - started)


def _unavailable(method: str, error: aio.AioRpcError) -> VenueUnavailable:
    return venue_error(error.code().name, f"{method}: {error.details()}")
