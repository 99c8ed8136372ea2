"""broker.v1.OrderService over gRPC: translates each call for the order desk and the answer back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from grpc import aio

from brokerage.domain.identifiers import required_id
from brokerage.proto import orders_pb2, orders_pb2_grpc
from brokerage.rpc.identity import Kind, Policy, Rule, customer_for
from brokerage.storage.orders import OrderStore
from brokerage.telemetry import log_context
from order_service import translate
from order_service.desk import OrderDesk
from order_service.watch import OrderWatch

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
READ, WRITE = Rule(Kind.CUSTOMER, "orders:read"), Rule(Kind.CUSTOMER, "orders:write")
# Who may call what: customers only (an operator never places or cancels a customer's order), each on their own
# account (customer_for), writes with orders:write.
POLICY = Policy(
    {
        f"/{SERVICE_NAME}/{method}": rule
        for method, rule in {
            "PlaceOrder": WRITE,
            "CancelOrder": WRITE,
            "GetOrder": READ,
            "ListOrders": READ,
            "GetAccount": READ,
            "ListPositions": READ,
            "WatchOrders": READ,
        }.items()
    }
)


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):
    def __init__(self, desk: OrderDesk, store: OrderStore, watch: OrderWatch) -> None:
        self._desk = desk
        self._store = store
        self._watch = watch

    async def PlaceOrder(self, request: orders_pb2.PlaceOrderRequest, context: aio.ServicerContext) -> orders_pb2.Order:
        customer_id = customer_for(request.customer_id)
        with log_context(customer_id=customer_id, client_order_id=request.client_order_id):
            order = await self._desk.place(translate.order_request(customer_id, request))
        return translate.order(order)

    async def GetOrder(self, request: orders_pb2.GetOrderRequest, context: aio.ServicerContext) -> orders_pb2.Order:
        customer_id = customer_for(request.customer_id)
        order_id = required_id("order_id", request.order_id)
        return translate.order(await self._desk.get(customer_id, order_id))

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: aio.ServicerContext
    ) -> orders_pb2.Order:
        customer_id = customer_for(request.customer_id)
        order_id = required_id("order_id", request.order_id)
        with log_context(customer_id=customer_id, order_id=order_id):
            return translate.order(await self._desk.cancel(customer_id, order_id))

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        customer_id = customer_for(request.customer_id)
        limit = translate.page_size(request.page_size)
        await self._store.account(customer_id)  # an unknown customer is NOT_FOUND, not an empty list
        orders = await self._store.list_orders(
            customer_id,
            side=translate.side_filter(request.side),
            status=translate.status_filter(request.status),
            before_sequence=translate.decode_page_token(request.page_token),
            limit=limit + 1,  # one more tells whether another page exists
        )
        page = orders[:limit]
        next_token = translate.encode_page_token(page[-1].sequence) if len(orders) > limit else ""
        return orders_pb2.ListOrdersResponse(orders=[translate.order(o) for o in page], next_page_token=next_token)

    async def GetAccount(
        self, request: orders_pb2.GetAccountRequest, context: aio.ServicerContext
    ) -> orders_pb2.Account:
        customer_id = customer_for(request.customer_id)
        return translate.account(await self._store.account(customer_id))

    async def ListPositions(
        self, request: orders_pb2.ListPositionsRequest, context: aio.ServicerContext
    ) -> orders_pb2.ListPositionsResponse:
        customer_id = customer_for(request.customer_id)
        positions = await self._store.positions(customer_id)
        return orders_pb2.ListPositionsResponse(positions=[translate.position(p) for p in positions])

    async def WatchOrders(
        self, request: orders_pb2.WatchOrdersRequest, context: aio.ServicerContext
    ) -> AsyncIterator[orders_pb2.OrderEvent]:
        customer_id = customer_for(request.customer_id)
        after = translate.decode_resume_token(request.resume_token)
        await self._watch.refuse_if_blocked(customer_id)  # an unknown customer is NOT_FOUND, not a silent stream
        with self._watch.admitted(customer_id):
            await context.send_initial_metadata(())  # the client knows at once that its stream is open
            async with aclosing(self._watch.follow(customer_id, after)) as events:  # its subscription ends with us
                async for event in events:
                    yield translate.order_event(event)
