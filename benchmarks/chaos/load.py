"""The seed's load, sent as the platform's API layer sends it: over one channel balanced across both OrderService
replicas, each call signed as its customer, a PlaceOrder that fails UNAVAILABLE or past its deadline sent again as
it was (its client_order_id makes that safe). Every attempt is kept (when sent, when answered, how), and every OK
answer, for the invariants and the recovery figures. The load goes on past the seed's orders, the same mix at ten
steps a second, for as long as faults last, so every fault meets it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from benchmarks.chaos.plan import Action, Step
from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from devtools.token import DevIdentity, customer_tokens

ATTEMPT_TIMEOUT = 5.0
GIVE_UP_AFTER = 120.0  # a call unanswered this long is left unanswered (recorded), never a lost order
IN_FLIGHT = 64
CONTINUE_EVERY = 0.1  # past the seed's orders, one step every this many seconds while faults last
RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# A REJECTED answer for these reasons means the service could not price the order (a fault kept the quotes from
# being refreshed): unavailability, not a business outcome.
UNPRICED = ("stale", "quote")


@dataclass(frozen=True)
class Attempt:
    sent: float  # time.monotonic()
    answered: float
    action: Action
    outcome: str  # OK, a gRPC code's name, or UNPRICED for a REJECTED for want of a fresh quote


@dataclass
class Load:
    target: str  # "ipv4:host:port,host:port": round-robin over the replicas, as a load balancer would
    identity: DevIdentity
    note: Callable[[str, dict[str, object]], None]
    attempts: list[Attempt] = field(default_factory=list)
    requests: dict[tuple[str, str], orders_pb2.PlaceOrderRequest] = field(default_factory=dict)
    placed: dict[tuple[str, str], orders_pb2.Order] = field(default_factory=dict)  # OK answers, by (customer, key)
    order_ids: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # every order id an OK answer gave
    unanswered: list[tuple[str, str]] = field(default_factory=list)
    cancels: dict[str, int] = field(default_factory=dict)  # outcome -> count
    sent: int = 0  # steps sent: the seed's orders and those sent while faults lasted

    async def run(self, steps: Iterator[Step], count: int, keep_going: Callable[[], bool]) -> None:
        """The first `count` steps, each at its time, then more for as long as keep_going() says."""
        options = [("grpc.lb_policy_name", "round_robin")]
        interceptors = customer_tokens(self.identity).interceptors()
        async with grpc.aio.insecure_channel(self.target, options=options, interceptors=interceptors) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            slots = asyncio.Semaphore(IN_FLIGHT)
            tasks: list[asyncio.Task[None]] = []
            start = time.monotonic()
            last = 0.0
            for n, step in enumerate(steps):
                if n >= count and not keep_going():
                    break
                at = step.at if n < count else last + (n - count + 1) * CONTINUE_EVERY
                last = step.at if n < count else last
                await asyncio.sleep(max(0.0, start + at - time.monotonic()))
                await slots.acquire()
                tasks.append(asyncio.create_task(self._do(stub, step, slots)))
            self.sent = len(tasks)
            await asyncio.gather(*tasks)

    async def replay(self, keys: list[tuple[str, str]]) -> list[str]:
        """PlaceOrder sent again for these answered orders: each must return the same order. What differed."""
        differences = []
        async with grpc.aio.insecure_channel(
            self.target,
            options=[("grpc.lb_policy_name", "round_robin")],
            interceptors=customer_tokens(self.identity).interceptors(),
        ) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            for key in keys:
                again = await stub.PlaceOrder(self.requests[key], timeout=10, wait_for_ready=True)
                first = self.placed[key]
                if (again.order_id, again.sequence, again.quantity) != (first.order_id, first.sequence, first.quantity):
                    differences.append(f"{key}: first {first.order_id}, replayed {again.order_id}")
        return differences

    async def _do(self, stub: orders_pb2_grpc.OrderServiceStub, step: Step, slots: asyncio.Semaphore) -> None:
        try:
            if step.action is Action.CANCEL:
                await self._cancel(stub, step)
            else:
                await self._place(stub, step)
        finally:
            slots.release()

    async def _place(self, stub: orders_pb2_grpc.OrderServiceStub, step: Step) -> None:
        side = common_pb2.SIDE_BUY if step.action is Action.BUY else common_pb2.SIDE_SELL
        request = orders_pb2.PlaceOrderRequest(
            customer_id=step.customer_id,
            client_order_id=step.client_order_id,
            symbol=step.symbol,
            side=side,
            quantity=step.quantity,
        )
        key = (step.customer_id, step.client_order_id)
        self.requests[key] = request
        deadline = time.monotonic() + GIVE_UP_AFTER
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                order = await stub.PlaceOrder(request, timeout=ATTEMPT_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                self.attempts.append(Attempt(sent, time.monotonic(), step.action, error.code().name))
                self.note("place-failed", {"key": key, "code": error.code().name})
                if error.code() not in RETRIED:
                    self.note("place-refused", {"key": key, "code": error.code().name, "details": error.details()})
                    return
                await asyncio.sleep(0.1)
                continue
            unpriced = order.status == common_pb2.ORDER_STATUS_REJECTED and _unpriced(order.status_reason)
            self.attempts.append(Attempt(sent, time.monotonic(), step.action, "UNPRICED" if unpriced else "OK"))
            self.placed[key] = order
            self.order_ids.setdefault(key, set()).add(order.order_id)
            self.note(
                "placed", {"key": key, "order_id": order.order_id, "status": common_pb2.OrderStatus.Name(order.status)}
            )
            return
        self.unanswered.append(key)
        self.note("place-unanswered", {"key": key})

    async def _cancel(self, stub: orders_pb2_grpc.OrderServiceStub, step: Step) -> None:
        order = self.placed.get((step.customer_id, step.client_order_id))
        if order is None:
            self.cancels["skipped: not placed"] = self.cancels.get("skipped: not placed", 0) + 1
            return
        request = orders_pb2.CancelOrderRequest(customer_id=step.customer_id, order_id=order.order_id)
        outcome = "unanswered"
        deadline = time.monotonic() + GIVE_UP_AFTER
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                await stub.CancelOrder(request, timeout=ATTEMPT_TIMEOUT)
                outcome = "OK"
            except grpc.aio.AioRpcError as error:
                outcome = error.code().name
                if error.code() in RETRIED:
                    self.attempts.append(Attempt(sent, time.monotonic(), step.action, outcome))
                    await asyncio.sleep(0.1)
                    continue
            self.attempts.append(Attempt(sent, time.monotonic(), step.action, outcome))
            break
        self.cancels[outcome] = self.cancels.get(outcome, 0) + 1
        self.note("cancel", {"order_id": order.order_id, "outcome": outcome})


def _unpriced(reason: str) -> bool:
    return any(word in reason.lower() for word in UNPRICED)
