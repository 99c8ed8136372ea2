"""Bounded resources (brokerage.rpc.limits): client-facing servers take 64 KiB requests, the internal streams their
largest legal batch and no more; a customer holds a bounded number of WatchOrders streams per replica and anyone a
bounded number of unauthenticated streams; every refusal is RESOURCE_EXHAUSTED, counted apart from errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from brokerage.proto import callback_pb2, callback_pb2_grpc, common_pb2, exchange_pb2, orders_pb2, orders_pb2_grpc
from brokerage.rpc.limits import ServerLimits
from brokerage.rpc.server import create_server
from brokerage.settings import Settings
from brokerage.wire import REPORT_BATCH_MAX, SUBMIT_BATCH_MAX
from order_service.main import OrderServiceApp
from tests.identity import customer_channel
from tests.integration.conftest import running_app
from tests.integration.test_exchange_simulator import Harness
from tests.integration.test_exchange_simulator import sim as sim
from tests.integration.test_settlement import AUTH

pytestmark = pytest.mark.integration

LONGEST_ID = "i" * 64
LONGEST_REASON = "\U0001f642" * 1000  # the longest reason, of four-byte characters


def limited(limit: str) -> float:
    return REGISTRY.get_sample_value("requests_limited_total", {"limit": limit}) or 0.0


def largest_report(n: int) -> bytes:
    report = callback_pb2.ExecutionReport(
        exec_id=f"{n:064d}",
        order_id=LONGEST_ID,
        venue_order_id=LONGEST_ID,
        exec_type=common_pb2.EXEC_TYPE_PARTIAL_FILL,
        last_quantity=2**62,
        last_price="999999999999.9999",
        cumulative_quantity=2**62,
        reason=LONGEST_REASON,
        symbol="S" * 64,
        side=common_pb2.SIDE_SELL,
        order_quantity=2**62,
    )
    report.transact_time.GetCurrentTime()
    return report.SerializeToString()


async def test_callback_service_takes_its_largest_legal_batch(
    reporter: callback_pb2_grpc.CallbackServiceStub,
) -> None:
    batch = callback_pb2.ExecutionReportBatch(reports=[largest_report(n) for n in range(REPORT_BATCH_MAX)], batch_id=1)

    async def once() -> AsyncIterator[callback_pb2.ExecutionReportBatch]:
        yield batch

    answered = [a async for a in reporter.StreamExecutions(once(), metadata=AUTH, timeout=60)]

    assert len(answered[0].acks) == REPORT_BATCH_MAX  # each kept as a break (no such order), none refused
    assert batch.ByteSize() > 4 * 1024 * 1024  # past gRPC's default limit: the bound had to be raised for it


async def test_the_simulator_takes_its_largest_legal_batch(sim: Harness) -> None:
    order = exchange_pb2.SubmitOrderRequest(
        customer_id=LONGEST_ID, symbol="AAPL", side=common_pb2.SIDE_BUY, quantity=1, protection_price="9" * 20
    )
    order.expires_at.GetCurrentTime()
    order.expires_at.seconds += 3600
    orders = [exchange_pb2.SubmitOrderRequest(order_id=f"{n:064d}") for n in range(SUBMIT_BATCH_MAX)]
    for each in orders:
        each.MergeFrom(order)
    batch = exchange_pb2.SubmitOrderBatch(orders=orders)

    async def once() -> AsyncIterator[exchange_pb2.SubmitOrderBatch]:
        yield batch

    results = [r async for answer in sim.stub.SubmitOrders(once(), timeout=60) for r in answer.results]

    assert len(results) == SUBMIT_BATCH_MAX


async def test_a_request_past_64_kib_is_refused_before_any_servicer(app: OrderServiceApp) -> None:
    before = limited("max_receive_bytes")
    async with customer_channel(f"127.0.0.1:{app.running.port}") as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PlaceOrder(
                orders_pb2.PlaceOrderRequest(customer_id="7", client_order_id="x" * (65 * 1024)), timeout=5
            )

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limited("max_receive_bytes") == before + 1


async def test_a_customer_holds_a_bounded_number_of_watches_and_others_keep_theirs(settings: Settings) -> None:
    async with (
        running_app(settings.model_copy(update={"watches_per_customer": 2})) as app,
        customer_channel(f"127.0.0.1:{app.running.port}") as channel,
    ):
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        before = limited("watches_per_customer")
        open_watches = [stub.WatchOrders(orders_pb2.WatchOrdersRequest(customer_id="7"), timeout=30) for _ in range(2)]
        for watch in open_watches:
            await watch.wait_for_connection()
        await asyncio.sleep(0.2)

        third = stub.WatchOrders(orders_pb2.WatchOrdersRequest(customer_id="7"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await third.read()
        other = stub.WatchOrders(orders_pb2.WatchOrdersRequest(customer_id="8"), timeout=5)
        await other.wait_for_connection()
        await asyncio.sleep(0.2)

        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(refused.value)
        assert status is not None
        failure = error_details_pb2.QuotaFailure()
        assert status.details[0].Unpack(failure)
        assert failure.violations[0].subject == "watches_per_customer"
        assert limited("watches_per_customer") == before + 1
        assert not other.done()  # another customer's watch is open

        open_watches[0].cancel()
        await asyncio.sleep(0.2)
        again = stub.WatchOrders(orders_pb2.WatchOrdersRequest(customer_id="7"), timeout=5)
        await asyncio.sleep(0.3)
        assert not again.done()  # a place freed is a place to take
        for call in (open_watches[1], other, again):
            call.cancel()


async def test_unauthenticated_streams_have_their_own_small_bound() -> None:
    running = await create_server("127.0.0.1:0", [], limits=ServerLimits(max_unauthenticated_streams=2))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=10) for _ in range(2)]
            answers = await asyncio.gather(*(w.read() for w in watches))  # both held from here on
            watches.append(health.Watch(health_pb2.HealthCheckRequest(), timeout=10))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await watches[2].read()
            check = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # unary calls are apart

            assert [a.status for a in answers] == [health_pb2.HealthCheckResponse.SERVING] * 2
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            for watch in watches:
                watch.cancel()
    finally:
        await running.server.stop(0)
