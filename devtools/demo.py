"""`make demo`: against the mesh of `make run`, a few demo customers buy stocks, then sell part of what they
bought; every order is followed until the exchange has filled it and settlement has booked it, then each
customer's orders, cash and positions are shown. The first customer's order events stream live as they happen.

`python -m devtools.demo [--target 127.0.0.1:15051] [--customers 3]`. Each run places new orders, for the first
customers (of those `make run` funds) with cash enough left: each run spends some, and so does any load test. Every
call carries its customer's token, signed with `make run`'s development keys (.local/identity).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from decimal import Decimal

import grpc

from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from brokerage.rpc.tls import TlsFiles, open_channel
from devtools.mesh import local_ports, plan_mesh
from devtools.run import LOCAL, SEED_CUSTOMERS
from devtools.tls import DevCertificates
from devtools.token import DevIdentity, customer_tokens

BUYS = (("AAPL", 10), ("MSFT", 5), ("NVDA", 20))
SELL_FRACTION = 2  # each customer sells 1/2 of what it bought
ENDED = {common_pb2.ORDER_STATUS_FILLED, common_pb2.ORDER_STATUS_CANCELED, common_pb2.ORDER_STATUS_REJECTED}
STATUS = {v: k.removeprefix("ORDER_STATUS_") for k, v in common_pb2.OrderStatus.items()}
SIDE = {common_pb2.SIDE_BUY: "buy", common_pb2.SIDE_SELL: "sell"}
PATIENCE_SECONDS = 30.0
# A customer takes part while it has this much available: several times what one run's buys cost at the seeded
# prices, so a run never meets "insufficient buying power" however the simulated prices have moved.
BUDGET = Decimal("25000")
LOOKUPS_AT_ONCE = 50


class NoCustomers(Exception):
    """Too few of make run's customers have the demo's budget left."""


async def pick_and_demo(target: str, count: int, tls: TlsFiles | None = None) -> bool:
    # Each call signed as the customer it is for, with make run's development keys; over mutual TLS as the API
    # layer (make run TLS=1's certificate) when tls is given.
    interceptors = customer_tokens(DevIdentity()).interceptors()
    async with open_channel(target, tls, interceptors=interceptors) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        customers = await pick_customers(stub, count)
        print(f"demo customers: {', '.join(customers)} (the first with {BUDGET:,.2f} or more available)")
        return await demo(stub, customers)


async def pick_customers(stub: orders_pb2_grpc.OrderServiceStub, count: int) -> list[str]:
    """The first `count` of customers 1 to SEED_CUSTOMERS with BUDGET or more available, looked up a few at a time."""
    picked: list[str] = []
    for first in range(1, SEED_CUSTOMERS + 1, LOOKUPS_AT_ONCE):
        candidates = [str(c) for c in range(first, min(first + LOOKUPS_AT_ONCE, SEED_CUSTOMERS + 1))]
        accounts = await asyncio.gather(
            *(stub.GetAccount(orders_pb2.GetAccountRequest(customer_id=c), timeout=5) for c in candidates)
        )
        picked += [a.customer_id for a in accounts if Decimal(a.available) >= BUDGET]
        if len(picked) >= count:
            return picked[:count]
    raise NoCustomers(f"only {len(picked)} of customers 1 to {SEED_CUSTOMERS} have {BUDGET} available")


async def demo(stub: orders_pb2_grpc.OrderServiceStub, customers: Sequence[str]) -> bool:
    run = str(int(time.time()))
    watcher = asyncio.create_task(_print_events(stub, customers[0], run))
    try:
        buys = [_order(run, c, symbol, common_pb2.SIDE_BUY, quantity) for c in customers for symbol, quantity in BUYS]
        bought = await _until_ended(stub, await _place_all(stub, buys))
        sells = [
            _order(run, o.customer_id, o.symbol, common_pb2.SIDE_SELL, o.filled_quantity // SELL_FRACTION)
            for o in bought
            if o.filled_quantity >= SELL_FRACTION
        ]
        sold = await _until_ended(stub, await _place_all(stub, sells))
    finally:
        await asyncio.sleep(0.5)  # the last events reach the screen
        watcher.cancel()
        with suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await watcher
    for customer in customers:
        await _show_customer(stub, customer, [o for o in (*bought, *sold) if o.customer_id == customer])
    return all(o.status == common_pb2.ORDER_STATUS_FILLED for o in (*bought, *sold))


def _order(run: str, customer: str, symbol: str, side: common_pb2.Side, quantity: int) -> orders_pb2.PlaceOrderRequest:
    key = f"demo-{run}-{SIDE[side]}-{symbol}"
    return orders_pb2.PlaceOrderRequest(
        customer_id=customer,
        client_order_id=key,
        symbol=symbol,
        side=side,
        quantity=quantity,  # type: ignore[arg-type]
    )


async def _place_all(
    stub: orders_pb2_grpc.OrderServiceStub, requests: Sequence[orders_pb2.PlaceOrderRequest]
) -> list[orders_pb2.Order]:
    placed = await asyncio.gather(*(stub.PlaceOrder(r, timeout=5) for r in requests))
    for order in placed:
        print(
            f"  placed   customer {order.customer_id}: {SIDE[order.side]} {order.quantity} {order.symbol} "
            f"-> {STATUS[order.status]} {order.status_reason}".rstrip()
        )
    return list(placed)


async def _until_ended(
    stub: orders_pb2_grpc.OrderServiceStub, orders: list[orders_pb2.Order]
) -> list[orders_pb2.Order]:
    """Each order as it ended (filled, canceled, rejected), or as it stood when patience ran out."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    current = orders
    while time.monotonic() < deadline:
        current = list(
            await asyncio.gather(
                *(
                    stub.GetOrder(orders_pb2.GetOrderRequest(customer_id=o.customer_id, order_id=o.order_id), timeout=5)
                    for o in orders
                )
            )
        )
        if all(o.status in ENDED for o in current):
            break
        await asyncio.sleep(0.2)
    return current


async def _print_events(stub: orders_pb2_grpc.OrderServiceStub, customer: str, run: str) -> None:
    """The customer's order events of this run, as they are committed (earlier runs' are replayed and skipped)."""
    # The demo cancels it once every order has ended; the deadline only bounds a demo that never gets there.
    watch = stub.WatchOrders(orders_pb2.WatchOrdersRequest(customer_id=customer), timeout=PATIENCE_SECONDS * 3)
    async for event in watch:
        order = event.order
        if not order.client_order_id.startswith(f"demo-{run}-"):
            continue
        filled = (
            f" {order.filled_quantity}/{order.quantity} at {order.average_fill_price}" if order.filled_quantity else ""
        )
        print(f"  event    customer {customer}: {event.event_type:<16} {SIDE[order.side]} {order.symbol}{filled}")


async def _show_customer(stub: orders_pb2_grpc.OrderServiceStub, customer: str, orders: list[orders_pb2.Order]) -> None:
    account = await stub.GetAccount(orders_pb2.GetAccountRequest(customer_id=customer), timeout=5)
    positions = await stub.ListPositions(orders_pb2.ListPositionsRequest(customer_id=customer), timeout=5)
    print(f"\ncustomer {customer}: cash available {account.available}, reserved {account.reserved}")
    for o in orders:
        fill = f"filled {o.filled_quantity}" + (f" at {o.average_fill_price}" if o.average_fill_price else "")
        print(f"  {SIDE[o.side]:<4} {o.quantity:>4} {o.symbol:<6} {STATUS[o.status]:<16} {fill}")
    for p in positions.positions:
        print(f"  holds {p.quantity:>4} {p.symbol:<6} at an average cost of {p.average_cost}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--target", default=plan_mesh(local_ports()).order_service.target, help="OrderService (make run's by default)"
    )
    parser.add_argument("--customers", type=int, default=3, help="how many demo customers")
    parser.add_argument("--tls", action="store_true", help="against `make run TLS=1`: the API layer's certificate")
    args = parser.parse_args()
    tls = DevCertificates(LOCAL / "tls").files("api") if args.tls else None
    try:
        filled = asyncio.run(pick_and_demo(args.target, args.customers, tls))
    except grpc.aio.AioRpcError as error:
        print(f"demo: {error.code().name}: {error.details()} (is `make run` running?)", file=sys.stderr)
        sys.exit(2)
    except NoCustomers as error:
        print(f"demo: {error} (`make clean`, then `make run`, funds them afresh)", file=sys.stderr)
        sys.exit(2)
    print("\nEvery order filled and settled." if filled else "\nSome orders did not fill: see above.")
    sys.exit(0 if filled else 1)


if __name__ == "__main__":
    main()
