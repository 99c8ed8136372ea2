"""The order desk: takes a customer's order through the placement rules into the record.

It knows the domain and the stores, not gRPC: the servicer translates, the desk decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from prometheus_client import Counter
from ulid import ULID

from brokerage.domain.errors import FailedPrecondition, IdempotencyConflict, OrderNotFound
from brokerage.domain.orders import Order, OrderRequest, OrderStatus
from brokerage.domain.placement import PlacementPolicy, Pricing, Rejection
from brokerage.domain.sharding import shard_for, subject_for_shard
from brokerage.messaging.doorbell import Doorbell
from brokerage.messaging.messages import MessageType, encode_cancel_requested, encode_order_placed
from brokerage.messaging.publishing import Publication
from brokerage.storage.orders import NewOrder, OrderStore
from brokerage.storage.reference import ReferenceData
from brokerage.telemetry import get_logger

log = get_logger(__name__)

ORDERS_PLACED = Counter("orders_placed_total", "Orders accepted and reserved", ("side",))
ORDERS_REJECTED = Counter("orders_rejected_total", "Orders stored REJECTED at placement", ("reason",))


class OrderDesk:
    def __init__(
        self,
        store: OrderStore,
        reference: ReferenceData,
        policy: PlacementPolicy,
        shard_count: int,
        doorbell: Doorbell,
        on_placed: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._reference = reference
        self._policy = policy
        self._shard_count = shard_count
        self._doorbell = doorbell
        self._on_placed = on_placed
        self._now = now

    async def place(self, request: OrderRequest) -> Order:
        """Stores the order PLACED (reserved) or REJECTED with its code; a retry of the same request returns the
        first. Past the customer's orders per minute, LimitReached: nothing is stored."""
        snapshot = self._reference.snapshot
        self._policy.validate(request, snapshot.symbols)
        decision = self._policy.price(
            request, snapshot.instruments[request.symbol], snapshot.quotes.get(request.symbol), self._now()
        )
        new = self._new_order(request, decision)
        order = await self._store.place(new)
        if order.order_id != new.order_id:
            return self._retried(order, request)
        self._count(order)
        await self._doorbell.ring([order.customer_id])
        return order

    async def get(self, customer_id: str, order_id: str) -> Order:
        order = await self._store.get(customer_id, order_id)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    async def cancel(self, customer_id: str, order_id: str) -> Order:
        """Cancels an order no worker has taken yet at once; asks the exchange to cancel one it has (or is about
        to have), and the order shows cancel_requested until the exchange's reports end it (a fill may still win).
        A retried cancel returns the order as it stands."""
        shard = shard_for(customer_id, self._shard_count)
        request = Publication(
            subject_for_shard(shard),
            encode_cancel_requested(order_id=order_id, customer_id=customer_id, shard=shard),
            dedupe_id=f"{order_id}:cancel",
            message_type=MessageType.CANCEL_REQUESTED,
        )
        order = await self._store.cancel(customer_id, order_id, request)
        if order is None:
            raise OrderNotFound(order_id)
        if order.status in (OrderStatus.FILLED, OrderStatus.REJECTED):
            raise FailedPrecondition(
                f"order/{order_id}", "ORDER_NOT_CANCELABLE", f"order {order_id} is already {order.status.value}"
            )
        self._on_placed()  # a cancel request waits in the outbox
        await self._doorbell.ring([customer_id])
        log.info(
            "order canceled" if order.status is OrderStatus.CANCELED else "order cancel requested",
            order_id=order_id,
            customer_id=customer_id,
        )
        return order

    def _new_order(self, request: OrderRequest, decision: Pricing | Rejection) -> NewOrder:
        assert request.side is not None  # validated
        shard = shard_for(request.customer_id, self._shard_count)
        unpriced = NewOrder(
            order_id=str(ULID()),
            customer_id=request.customer_id,
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            quantity=request.quantity,
            protection_price=None,
            reference_price=None,
            reject_code=None,
            reject_reason=None,
            subject=subject_for_shard(shard),
            payload=b"",
        )
        if isinstance(decision, Rejection):
            return replace(unpriced, reject_code=decision.code, reject_reason=decision.reason)
        payload = encode_order_placed(
            order_id=unpriced.order_id,
            customer_id=request.customer_id,
            symbol=request.symbol,
            side=request.side,
            quantity=request.quantity,
            protection_price=decision.protection_price,
            shard=shard,
        )
        return replace(
            unpriced,
            protection_price=decision.protection_price,
            reference_price=decision.reference_price,
            payload=payload,
            expires_at=self._policy.expires_at(self._now()),
        )

    def _retried(self, order: Order, request: OrderRequest) -> Order:
        if not order.same_request_as(request):
            raise IdempotencyConflict(
                f"client_order_id {request.client_order_id!r} was already used for order {order.order_id} "
                f"({order.side.value} {order.quantity} {order.symbol})"
            )
        log.info("order placement retried", order_id=order.order_id, customer_id=order.customer_id)
        return order

    def _count(self, order: Order) -> None:
        ids = {"order_id": order.order_id, "customer_id": order.customer_id}
        if order.status is OrderStatus.PLACED:
            ORDERS_PLACED.labels(order.side.value).inc()
            self._on_placed()
            log.info("order placed", **ids, sequence=order.sequence, symbol=order.symbol, side=order.side.value)
            return
        code = order.reject_code.label if order.reject_code else "unknown"
        ORDERS_REJECTED.labels(code).inc()
        log.info("order rejected", **ids, reject_code=code, reason=order.status_reason)
