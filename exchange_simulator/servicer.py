"""broker.v1.ExchangeService over gRPC: translates each call for the exchange and the answer back, nothing else."""

from __future__ import annotations

from grpc import aio

from brokerage.proto import exchange_pb2, exchange_pb2_grpc
from brokerage.telemetry import log_context
from exchange_simulator import translate
from exchange_simulator.exchange import Exchange
from exchange_simulator.tickets import required_id
from exchange_simulator.venue import parse_trading_day


class ExchangeServicer(exchange_pb2_grpc.ExchangeServiceServicer):
    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def SubmitOrder(
        self, request: exchange_pb2.SubmitOrderRequest, context: aio.ServicerContext
    ) -> exchange_pb2.SubmitOrderResponse:
        with log_context(order_id=request.order_id, customer_id=request.customer_id):
            ack = await self._exchange.submit(translate.ticket(request))
        return translate.acknowledgement(ack)

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
