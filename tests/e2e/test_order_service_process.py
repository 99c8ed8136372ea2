"""The OrderService process driven as its users drive it: grpcurl with reflection, health, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import psycopg
import pytest

from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from devtools.stack import PostgresCluster, stop_processes, wait_until
from tests.e2e.conftest import ServiceProcess, grpcurl, start_order_service, wait_serving
from tests.identity import TEST_IDENTITY, customer_channel

pytestmark = pytest.mark.e2e

ORDER_SERVICE = "broker.v1.OrderService"
BUY_10_AAPL = {"customer_id": "1", "client_order_id": "demo-1", "symbol": "AAPL", "side": "SIDE_BUY", "quantity": 10}


def customer(customer_id: str) -> str:
    return TEST_IDENTITY.customer_token(customer_id)


def test_grpcurl_without_a_token_another_customers_or_an_operators_is_refused_and_stores_nothing(
    order_service: ServiceProcess, e2e_database: str
) -> None:
    """As a new user tries it: no token, customer 7's token for customer 8, an operator's token; then 7's own."""
    buy = {**BUY_10_AAPL, "customer_id": "8", "client_order_id": "trust-1"}
    anonymous = grpcurl(order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data=buy)
    someone_else = grpcurl(order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data=buy, token=customer("7"))
    operator = grpcurl(
        order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data=buy, token=TEST_IDENTITY.operator_token()
    )
    with psycopg.connect(e2e_database) as conn:
        stored = conn.execute("SELECT count(*) FROM orders WHERE client_order_id = 'trust-1'").fetchone()
    own = grpcurl(
        order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data={**buy, "customer_id": "7"}, token=customer("7")
    )

    assert "Code: Unauthenticated" in anonymous.stdout + anonymous.stderr
    assert "Code: PermissionDenied" in someone_else.stdout + someone_else.stderr
    assert "Code: Unauthenticated" in operator.stdout + operator.stderr
    assert stored == (0,)
    assert json.loads(own.stdout)["status"] == "ORDER_STATUS_PLACED", own.stderr


def test_reflection_lists_and_describes_the_services(order_service: ServiceProcess) -> None:
    listed = grpcurl(order_service.target, "list")
    described = grpcurl(order_service.target, "describe", f"{ORDER_SERVICE}.PlaceOrder")

    assert listed.returncode == 0, listed.stderr
    assert {ORDER_SERVICE, "grpc.health.v1.Health"} <= set(listed.stdout.split())
    assert described.returncode == 0 and "rpc PlaceOrder ( .broker.v1.PlaceOrderRequest )" in described.stdout


def test_with_reflection_off_grpcurl_takes_the_contract_from_the_protoset_the_image_ships(
    e2e_database: str, fresh_nats: str, tmp_path: Path
) -> None:
    service = start_order_service(e2e_database, fresh_nats, tmp_path / "order-service.log", BROKER_GRPC_REFLECTION="0")
    try:
        wait_serving(service)
        protoset = tmp_path / "broker.protoset"
        subprocess.run([sys.executable, "-m", "brokerage.rpc.protoset", str(protoset)], check=True, timeout=30)
        browsed = grpcurl(service.target, "list")
        listed = grpcurl(service.target, "list", protoset=protoset)
        placed = grpcurl(
            service.target, f"{ORDER_SERVICE}/PlaceOrder", data=BUY_10_AAPL, token=customer("1"), protoset=protoset
        )
    finally:
        stop_processes([service.process], timeout=10)

    assert browsed.returncode != 0 and "reflection" in browsed.stderr.lower()
    assert listed.returncode == 0 and ORDER_SERVICE in listed.stdout.split()
    assert placed.returncode == 0 and '"status": "ORDER_STATUS_PLACED"' in placed.stdout, placed.stderr


def test_grpcurl_places_an_order_idempotently_and_shows_the_reservation(order_service: ServiceProcess) -> None:
    first = grpcurl(order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data=BUY_10_AAPL, token=customer("1"))
    again = grpcurl(order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data=BUY_10_AAPL, token=customer("1"))
    too_big = grpcurl(
        order_service.target,
        f"{ORDER_SERVICE}/PlaceOrder",
        data={**BUY_10_AAPL, "client_order_id": "big", "quantity": 1000},
        token=customer("1"),
    )
    account = grpcurl(
        order_service.target, f"{ORDER_SERVICE}/GetAccount", data={"customer_id": "1"}, token=customer("1")
    )

    placed = json.loads(first.stdout)
    assert placed["status"] == "ORDER_STATUS_PLACED"
    assert json.loads(again.stdout)["order_id"] == placed["order_id"]
    rejected = json.loads(too_big.stdout)
    assert rejected["status"] == "ORDER_STATUS_REJECTED"
    assert rejected["status_reason"] == ("insufficient buying power: requires 238880.00, available 97611.20")
    assert rejected["reject_code"] == "REJECT_CODE_INSUFFICIENT_BUYING_POWER"
    assert json.loads(account.stdout)["reserved"] == placed["reserved_amount"] == "2388.80"


def test_grpcurl_shows_a_clear_error_for_a_malformed_request(order_service: ServiceProcess) -> None:
    result = grpcurl(
        order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data={**BUY_10_AAPL, "quantity": 0}, token=customer("1")
    )

    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stdout + result.stderr
    assert "quantity: must be a positive number of shares" in result.stdout + result.stderr


def test_logs_are_json_lines_carrying_order_and_customer_ids(order_service: ServiceProcess) -> None:
    placed = json.loads(
        grpcurl(order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data=BUY_10_AAPL, token=customer("1")).stdout
    )

    placed_logs = [line for line in order_service.logs() if line.get("event") == "order placed"]
    assert placed_logs and placed_logs[-1]["order_id"] == placed["order_id"]
    assert placed_logs[-1]["customer_id"] == "1"


def test_readiness_follows_the_database_and_liveness_does_not(
    order_service: ServiceProcess, postgres_cluster: PostgresCluster
) -> None:
    postgres_cluster.kill()
    try:
        wait_until(lambda: order_service.health("readiness") == "NOT_SERVING", 10, "readiness NOT_SERVING")
        assert order_service.health(ORDER_SERVICE) == "NOT_SERVING"
        assert order_service.health("") == "SERVING"  # a database failover restarts nothing
        refused = grpcurl(
            order_service.target, f"{ORDER_SERVICE}/GetAccount", data={"customer_id": "1"}, token=customer("1")
        )
        assert "Code: Unavailable" in refused.stdout + refused.stderr
    finally:
        postgres_cluster.start()
    wait_serving(order_service)
    placed = grpcurl(order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data=BUY_10_AAPL, token=customer("1"))
    assert json.loads(placed.stdout)["status"] == "ORDER_STATUS_PLACED"


def test_metrics_count_calls_and_orders(order_service: ServiceProcess) -> None:
    import urllib.request

    grpcurl(order_service.target, f"{ORDER_SERVICE}/PlaceOrder", data=BUY_10_AAPL, token=customer("1"))
    with urllib.request.urlopen(f"http://127.0.0.1:{order_service.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()

    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="PlaceOrder",' in text
    assert "grpc_server_handling_seconds_bucket{" in text
    assert 'orders_placed_total{side="BUY"} 1.0' in text


async def test_sigterm_stops_serving_drains_and_loses_no_accepted_order(
    e2e_database: str, fresh_nats: str, tmp_path: Path
) -> None:
    service = start_order_service(
        e2e_database, fresh_nats, tmp_path / "order-service.log", BROKER_SHUTDOWN_READINESS_DELAY_SECONDS="1"
    )
    wait_serving(service)
    accepted: list[orders_pb2.Order] = []
    async with customer_channel(service.target) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)

        async def keep_placing(customer: int) -> None:
            for i in range(10_000):
                request = orders_pb2.PlaceOrderRequest(
                    customer_id=str(customer),
                    client_order_id=f"t-{i}",
                    symbol="MSFT",
                    side=common_pb2.SIDE_BUY,
                    quantity=1,
                )
                try:
                    accepted.append(await stub.PlaceOrder(request, timeout=2))
                except grpc.aio.AioRpcError:
                    return  # the server has gone

        load = [asyncio.create_task(keep_placing(c)) for c in range(1, 9)]
        await asyncio.sleep(1)
        service.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert service.health("readiness") == "NOT_SERVING"  # load balancers stop sending while it drains
        assert service.health("") == "NOT_SERVING"
        await asyncio.wait_for(asyncio.gather(*load), 30)
    assert await asyncio.to_thread(service.process.wait, 15) == 0

    stored = psycopg.connect(e2e_database).execute("SELECT order_id FROM orders").fetchall()
    assert accepted and {o.order_id for o in accepted} <= {order_id for (order_id,) in stored}
    events = [line["event"] for line in service.logs()]
    assert events.index("shutting down") < events.index("stopped")


def test_a_process_with_another_shard_count_refuses_to_start(
    order_service: ServiceProcess, e2e_database: str, fresh_nats: str, tmp_path: Path
) -> None:
    other = start_order_service(e2e_database, fresh_nats, tmp_path / "other.log", BROKER_SHARD_COUNT="8")

    assert other.process.wait(timeout=20) == 1
    failure = [line for line in other.logs() if line.get("level") == "critical"]
    assert failure and "records 16 shards but BROKER_SHARD_COUNT is 8" in str(failure[0]["error"])


def test_invalid_settings_stop_the_process_before_it_serves(tmp_path: Path) -> None:
    bad = start_order_service(
        "postgresql://x@127.0.0.1:1/x", "nats://127.0.0.1:1", tmp_path / "bad.log", BROKER_PRICE_COLLAR="lots"
    )

    assert bad.process.wait(timeout=20) == 2
    assert "BROKER_PRICE_COLLAR" in (tmp_path / "bad.log").read_text()
