"""broker.v1.ExchangeService over gRPC: translates each call for the exchange and the answer back, nothing else.
SubmitOrders answers each order of its stream's batches as SubmitOrder would, in batches of the results ready."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.identifiers import required_id
from brokerage.proto import exchange_pb2, exchange_pb2_grpc
from brokerage.rpc.streams import RequestContext, answer_as_ready, status_of
from brokerage.telemetry import get_logger, log_context
from brokerage.wire import SUBMIT_BATCH_MAX
from exchange_simulator import translate
from exchange_simulator.exchange import Exchange
from exchange_simulator.venue import parse_trading_day

log = get_logger(__name__)


class ExchangeServicer(exchange_pb2_grpc.ExchangeServiceServicer):
    def __init__(self, exchange: Exchange, failing_customers: frozenset[str] = frozenset()) -> None:
        self._exchange = exchange
        self._failing_customers = failing_customers  # a drill: their orders' SubmitOrder fails, every time

    async def SubmitOrder(
        self, request: exchange_pb2.SubmitOrderRequest, context: aio.ServicerContext
    ) -> exchange_pb2.SubmitOrderResponse:
        with log_context(order_id=request.order_id, customer_id=request.customer_id):
            if request.customer_id in self._failing_customers:
                log.warning("drill: failing this customer's order")
                await context.abort(grpc.StatusCode.INTERNAL, "routing failed for this account")
            ack = await self._exchange.submit(translate.ticket(request))
        return translate.acknowledgement(ack)

    async def SubmitOrders(
        self, request_iterator: AsyncIterator[exchange_pb2.SubmitOrderBatch], context: aio.ServicerContext
    ) -> AsyncIterator[exchange_pb2.SubmitOrderResults]:
        async for result in submit_each(self.SubmitOrder, request_iterator):
            yield result

    async def CancelOrder(
        self, request: exchange_pb2.ExchangeCancelRequest, context: aio.ServicerContext
    ) -> exchange_pb2.ExchangeCancelResponse:
        outcome = self._exchange.cancel(required_id("order_id", request.order_id))
        return translate.cancel_outcome(outcome)

    async def GetOrderStatus(
        self, request: exchange_pb2.GetOrderStatusRequest, context: aio.ServicerContext
    ) -> exchange_pb2.OrderStatusReport:
        order_id = required_id("order_id", request.order_id)
        order = self._exchange.status(order_id, resend_reports=request.resend_reports)
        return translate.order_status(order_id, order)

    async def GetQuotes(
        self, request: exchange_pb2.GetQuotesRequest, context: aio.ServicerContext
    ) -> exchange_pb2.GetQuotesResponse:
        quotes = self._exchange.quotes(translate.symbols(request))
        return exchange_pb2.GetQuotesResponse(quotes=[translate.quote(q) for q in quotes])

    async def GetDropCopy(
        self, request: exchange_pb2.GetDropCopyRequest, context: aio.ServicerContext
    ) -> exchange_pb2.GetDropCopyResponse:
        entries = self._exchange.drop_copy(parse_trading_day(request.trading_day))
        return translate.drop_copy_page(request, entries)


async def submit_each(
    submit: Callable[[exchange_pb2.SubmitOrderRequest, Any], Awaitable[exchange_pb2.SubmitOrderResponse]],
    batches: AsyncIterator[exchange_pb2.SubmitOrderBatch],
) -> AsyncIterator[exchange_pb2.SubmitOrderResults]:
    """SubmitOrders over a SubmitOrder handler: the orders taken up as listed, each answered as SubmitOrder would
    answer it, its failure included; the results ready at the same moment go back together."""

    async def result(request: exchange_pb2.SubmitOrderRequest) -> exchange_pb2.SubmitOrderResult:
        try:
            response = await submit(request, RequestContext())
        except Exception as error:
            code, message = status_of(error)
            return exchange_pb2.SubmitOrderResult(
                order_id=request.order_id, error_code=code.value[0], error_message=message
            )
        return exchange_pb2.SubmitOrderResult(order_id=request.order_id, response=response)

    async def orders() -> AsyncIterator[exchange_pb2.SubmitOrderRequest]:
        async for batch in batches:
            if len(batch.orders) > SUBMIT_BATCH_MAX:
                raise InvalidRequest([FieldViolation("orders", f"at most {SUBMIT_BATCH_MAX:,} in a batch")])
            for order in batch.orders:
                yield order

    async for ready in answer_as_ready(orders(), result):
        yield exchange_pb2.SubmitOrderResults(results=ready)
