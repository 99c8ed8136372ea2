"""A programmable broker.v1.ExchangeService for the workers' integration tests.

It records every call and can be told to fail calls before they reach it (all of them, or one customer's for ever),
refuse symbols, take an order and then answer only after the caller's deadline (the outcome unknown to the caller),
refuse a resubmission with ALREADY_EXISTS, or run a hook before it answers a submit (as a report reaching
CallbackService before the acknowledgement would); SubmitOrders (the stream the workers use) does all of it per
order, as the simulator's. A cancel of an order it never received leaves a tombstone that refuses the order, as the
simulator's does (rule 9).
The real venue is the exchange simulator; this double makes each failure happen on cue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from grpc import aio

from brokerage.proto import callback_pb2, common_pb2, exchange_pb2, exchange_pb2_grpc
from brokerage.rpc.limits import ServerLimits
from brokerage.rpc.server import RunningServer, Service, create_server
from brokerage.wire import SUBMIT_BATCH_MAX_BYTES, timestamp
from exchange_simulator.servicer import submit_each


@dataclass(frozen=True)
class Submission:
    order_id: str
    customer_id: str
    symbol: str
    quantity: int
    protection_price: str
    duplicate: bool  # the venue already had this order id


@dataclass
class FakeExchange(exchange_pb2_grpc.ExchangeServiceServicer):
    submissions: list[Submission] = field(default_factory=list)  # every submit that reached the venue
    acks: dict[str, exchange_pb2.SubmitOrderResponse] = field(default_factory=dict)  # the first, per order id
    failures: deque[grpc.StatusCode] = field(default_factory=deque)  # the next submits fail with these, unseen
    failing_customers: dict[str, grpc.StatusCode] = field(default_factory=dict)  # their submits always fail so
    outage: grpc.StatusCode | None = None  # while set, every submit, cancel and status query fails so
    tombstones: list[str] = field(default_factory=list)  # order ids canceled before they arrived
    stall_after_taking: int = 0  # the next N new orders are taken, then answered after the caller gave up
    refused_symbols: dict[str, str] = field(default_factory=dict)  # symbol -> reject reason
    refuse_duplicates: bool = False  # ALREADY_EXISTS for a known order id instead of the first ack
    before_ack: Callable[[str], Awaitable[None]] | None = None
    status_queries: list[tuple[str, bool]] = field(default_factory=list)  # (order_id, resend_reports)
    cancels: list[str] = field(default_factory=list)  # order ids, in the order their cancels came
    quotes: dict[str, str] = field(default_factory=lambda: {"AAPL": "230.00", "MSFT": "420.00"})
    drop_copy: list[exchange_pb2.DropCopyEntry] = field(default_factory=list)  # what GetDropCopy answers
    batch_sizes: list[int] = field(default_factory=list)  # orders in each SubmitOrders message received
    target: str = ""  # host:port once served

    async def SubmitOrder(
        self, request: exchange_pb2.SubmitOrderRequest, context: aio.ServicerContext
    ) -> exchange_pb2.SubmitOrderResponse:
        if self.failures:
            await context.abort(self.failures.popleft(), "injected failure")
        if self.outage is not None:
            await context.abort(self.outage, "the venue is away")
        if (code := self.failing_customers.get(request.customer_id)) is not None:
            await context.abort(code, f"customer {request.customer_id} always fails")
        first = self.acks.get(request.order_id)
        if first is None and request.order_id in self.tombstones:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"order {request.order_id} canceled before arrival"
            )
        self.submissions.append(
            Submission(
                request.order_id,
                request.customer_id,
                request.symbol,
                request.quantity,
                request.protection_price,
                duplicate=first is not None,
            )
        )
        if first is not None:
            if self.refuse_duplicates:
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"order {request.order_id} already received")
            return exchange_pb2.SubmitOrderResponse(
                venue_order_id=first.venue_order_id,
                accepted=first.accepted,
                reject_reason=first.reject_reason,
                arrival_sequence=first.arrival_sequence,
                duplicate=True,
            )
        ack = self._take(request)
        if self.before_ack is not None:
            await self.before_ack(request.order_id)
        if self.stall_after_taking > 0:
            self.stall_after_taking -= 1
            await asyncio.sleep(5)  # far beyond the test's deadline: the caller cannot know we took it
        return ack

    async def SubmitOrders(
        self, request_iterator: AsyncIterator[exchange_pb2.SubmitOrderBatch], context: aio.ServicerContext
    ) -> AsyncIterator[exchange_pb2.SubmitOrderResults]:
        async def noted() -> AsyncIterator[exchange_pb2.SubmitOrderBatch]:
            async for batch in request_iterator:
                self.batch_sizes.append(len(batch.orders))
                yield batch

        async for results in submit_each(self.SubmitOrder, noted()):
            yield results

    async def CancelOrder(
        self, request: exchange_pb2.ExchangeCancelRequest, context: aio.ServicerContext
    ) -> exchange_pb2.ExchangeCancelResponse:
        if self.outage is not None:
            await context.abort(self.outage, "the venue is away")
        self.cancels.append(request.order_id)
        ack = self.acks.get(request.order_id)
        if ack is None:
            self.tombstones.append(request.order_id)
            return exchange_pb2.ExchangeCancelResponse(accepted=False, reason="never received", never_received=True)
        if not ack.accepted:
            return exchange_pb2.ExchangeCancelResponse(accepted=False, reason="already rejected")
        return exchange_pb2.ExchangeCancelResponse(accepted=True)

    async def GetOrderStatus(
        self, request: exchange_pb2.GetOrderStatusRequest, context: aio.ServicerContext
    ) -> exchange_pb2.OrderStatusReport:
        if self.outage is not None:
            await context.abort(self.outage, "the venue is away")
        self.status_queries.append((request.order_id, request.resend_reports))
        ack = self.acks.get(request.order_id)
        if ack is None:
            return exchange_pb2.OrderStatusReport(order_id=request.order_id, known=False)
        reports = []
        if not ack.accepted:
            reports.append(
                callback_pb2.ExecutionReport(
                    exec_id=f"{ack.venue_order_id}-1",
                    order_id=request.order_id,
                    exec_type=common_pb2.EXEC_TYPE_REJECTED,
                    reason=ack.reject_reason,
                )
            )
        return exchange_pb2.OrderStatusReport(
            order_id=request.order_id,
            venue_order_id=ack.venue_order_id,
            known=True,
            status=common_pb2.ORDER_STATUS_SUBMITTED if ack.accepted else common_pb2.ORDER_STATUS_REJECTED,
            reports=reports,
        )

    async def GetQuotes(
        self, request: exchange_pb2.GetQuotesRequest, context: aio.ServicerContext
    ) -> exchange_pb2.GetQuotesResponse:
        now = timestamp(datetime.now(UTC))
        return exchange_pb2.GetQuotesResponse(
            quotes=[exchange_pb2.Quote(symbol=s, price=p, quoted_at=now) for s, p in self.quotes.items()]
        )

    async def GetDropCopy(
        self, request: exchange_pb2.GetDropCopyRequest, context: aio.ServicerContext
    ) -> exchange_pb2.GetDropCopyResponse:
        return exchange_pb2.GetDropCopyResponse(executions=self.drop_copy)

    def arrivals(self) -> list[str]:
        """The order ids the venue took, in arrival order (each once)."""
        return list(self.acks)

    def arrivals_of(self, customer_id: str) -> list[str]:
        return [s.order_id for s in self.submissions if s.customer_id == customer_id and not s.duplicate]

    def _take(self, request: exchange_pb2.SubmitOrderRequest) -> exchange_pb2.SubmitOrderResponse:
        sequence = len(self.acks) + 1
        reason = self.refused_symbols.get(request.symbol)
        ack = exchange_pb2.SubmitOrderResponse(
            venue_order_id=f"V{sequence}",
            accepted=reason is None,
            reject_reason=reason or "",
            arrival_sequence=sequence,
        )
        self.acks[request.order_id] = ack
        return ack


async def serve_fake_exchange(exchange: FakeExchange, address: str = "127.0.0.1:0") -> RunningServer:
    running = await create_server(
        address,
        [Service("broker.v1.ExchangeService", exchange, exchange_pb2_grpc.add_ExchangeServiceServicer_to_server)],
        limits=ServerLimits(max_receive_bytes=SUBMIT_BATCH_MAX_BYTES),
    )
    exchange.target = f"127.0.0.1:{running.port}"
    return running
