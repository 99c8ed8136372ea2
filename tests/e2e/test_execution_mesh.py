"""The whole mesh as processes, as `make run` starts it: the exchange simulator, OrderService, and two worker
clusters (shards 0-7 and 8-15) of two replicas each, on a private PostgreSQL and NATS. Orders are placed over
gRPC; what reached the exchange, and in which order, is read from the exchange's drop copy."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator

import psycopg
import pytest

from brokerage.domain.sharding import shard_for
from brokerage.proto import orders_pb2
from devtools.mesh import LOCAL_CALLBACK_TOKEN, SHARD_COUNT
from devtools.stack import NatsServer, PostgresCluster
from tests.e2e.conftest import grpcurl
from tests.e2e.mesh import (
    Mesh,
    arrivals,
    assert_each_customer_arrived_in_sequence_order,
    buys,
    place_all,
    running_mesh,
    wait_all_at_exchange,
)
from tests.identity import TEST_IDENTITY

OPERATOR = TEST_IDENTITY.operator_token
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CUSTOMERS = 100


@pytest.fixture(scope="module")
def mesh(
    postgres_cluster: PostgresCluster,
    migrated_template: str,
    nats_server: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    with running_mesh(
        postgres_cluster, migrated_template, nats_server, tmp_path_factory.mktemp("mesh"), CUSTOMERS, EXCHANGE_SEED="7"
    ) as running:
        yield running


def submission_gaps(database_url: str, shards: range, since: float) -> float:
    """The longest pause, in seconds, between two orders of these shards leaving PLACED since then (the first
    event after placement: the worker's SUBMITTED, or a report that came before it)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """SELECT extract(epoch FROM min(e.occurred_at)) FROM order_events e JOIN orders o USING (order_id)
                WHERE e.event_type <> 'placed' AND o.shard = ANY(%s) AND e.occurred_at >= to_timestamp(%s)
                GROUP BY e.order_id ORDER BY 1""",
            (list(shards), since),
        ).fetchall()
    moments = [float(t) for (t,) in rows]
    return max((b - a for a, b in itertools.pairwise(moments)), default=0.0)


def test_2000_orders_from_100_customers_reach_the_exchange_once_each_in_order_though_a_replica_is_killed(
    mesh: Mesh,
) -> None:
    victim = mesh.worker("execution-0-7-1")
    requests = buys("load", range(1, CUSTOMERS + 1), per_customer=20)

    async def place_and_kill() -> list[orders_pb2.Order]:
        first = await place_all(mesh.plan.order_service.target, requests[:700])
        mesh.processes[victim.name].process.send_signal(signal.SIGKILL)  # mid-run: orders of 0-7 in flight
        return first + await place_all(mesh.plan.order_service.target, requests[700:])

    killed_at = time.time()
    orders = asyncio.run(place_and_kill())
    wait_all_at_exchange(mesh.database_url, orders)

    arrived = arrivals(mesh.plan.exchange.target)
    assert set(arrived) == {o.order_id for o in orders}  # every order reached the exchange ...
    assert mesh.exchange_metric("exchange_orders_received_total") == len(orders)  # ... as one exchange order
    assert_each_customer_arrived_in_sequence_order(orders, arrived)
    # The surviving replica took the dead one's shards over within seconds (AckWait is 2 s here).
    assert submission_gaps(mesh.database_url, range(0, 8), since=killed_at) < 15
    assert mesh.processes[victim.name].process.wait(timeout=5) == -signal.SIGKILL
    mesh.start(victim)


def test_nats_killed_and_restarted_mid_run_loses_no_order_and_keeps_each_customers_order(mesh: Mesh) -> None:
    received_before = mesh.exchange_metric("exchange_orders_received_total")
    requests = buys("nats", range(1, 31), per_customer=20)

    async def place_through_an_outage() -> list[orders_pb2.Order]:
        first = await place_all(mesh.plan.order_service.target, requests[:200])
        mesh.nats.kill()
        during = await place_all(mesh.plan.order_service.target, requests[200:400])  # placement needs no NATS
        await asyncio.sleep(2)
        mesh.nats.start()
        return first + during + await place_all(mesh.plan.order_service.target, requests[400:])

    orders = asyncio.run(place_through_an_outage())
    wait_all_at_exchange(mesh.database_url, orders)

    arrived = arrivals(mesh.plan.exchange.target)
    assert {o.order_id for o in orders} <= set(arrived)
    assert mesh.exchange_metric("exchange_orders_received_total") - received_before == len(orders)
    assert_each_customer_arrived_in_sequence_order(orders, arrived)


def test_a_worker_stopped_with_sigterm_under_load_finishes_its_order_and_exits_cleanly(mesh: Mesh) -> None:
    replica = mesh.worker("execution-8-15-1")
    requests = buys("term", range(1, 41), per_customer=10)

    async def place_and_stop() -> tuple[list[orders_pb2.Order], int]:
        first = await place_all(mesh.plan.order_service.target, requests[:150])
        process = mesh.processes[replica.name].process
        process.send_signal(signal.SIGTERM)
        rest = await place_all(mesh.plan.order_service.target, requests[150:])
        return first + rest, await asyncio.to_thread(process.wait, 15)

    orders, exit_code = asyncio.run(place_and_stop())
    wait_all_at_exchange(mesh.database_url, orders)

    assert exit_code == 0
    logs = mesh.processes[replica.name].logs()
    assert any(line.get("event") == "stopped" for line in logs)
    assert not [line for line in logs if line.get("event") == "background task ignored cancellation"]
    mesh.start(replica)


def test_operators_see_and_pause_shards_with_grpcurl(mesh: Mesh) -> None:
    worker = mesh.worker("execution-8-15-2").target
    listed = grpcurl(worker, "list")
    assert "broker.v1.ExecutionService" in listed.stdout.split()
    described = grpcurl(worker, "describe", "broker.v1.ExecutionService.PauseShard")
    assert described.returncode == 0 and "PauseShardRequest" in described.stdout

    shards = grpcurl(worker, "broker.v1.ExecutionService/ListShards", token=OPERATOR())
    assert shards.returncode == 0 and '"shardCount": 16' in shards.stdout.replace("shard_count", "shardCount")
    customer = next(c for c in range(1, CUSTOMERS + 1) if shard_for(str(c), SHARD_COUNT) >= 8)
    shard = shard_for(str(customer), SHARD_COUNT)

    as_customer = grpcurl(
        worker, "broker.v1.ExecutionService/PauseShard", data={"shard": shard}, token=TEST_IDENTITY.customer_token("1")
    )
    assert "Code: Unauthenticated" in as_customer.stdout + as_customer.stderr  # no customer pulls a lever
    paused = grpcurl(
        worker, "broker.v1.ExecutionService/PauseShard", data={"shard": shard, "reason": "e2e"}, token=OPERATOR()
    )
    assert paused.returncode == 0 and '"paused": true' in paused.stdout, paused.stderr
    try:
        (order,) = asyncio.run(
            place_all(mesh.plan.order_service.target, buys("paused", range(customer, customer + 1), 1))
        )
        time.sleep(2)
        with psycopg.connect(mesh.database_url) as conn:
            status = conn.execute("SELECT status FROM orders WHERE order_id = %s", (order.order_id,)).fetchone()
        assert status == ("PLACED",)
        looked_at = grpcurl(worker, "broker.v1.ExecutionService/GetShard", data={"shard": shard}, token=OPERATOR())
        assert order.order_id not in looked_at.stdout and '"oldestPlacedAt"' in looked_at.stdout.replace(
            "oldest_placed_at", "oldestPlacedAt"
        )
    finally:
        resumed = grpcurl(worker, "broker.v1.ExecutionService/ResumeShard", data={"shard": shard}, token=OPERATOR())
        assert resumed.returncode == 0, resumed.stderr
    wait_all_at_exchange(mesh.database_url, [order], timeout=30)

    refused = grpcurl(worker, "broker.v1.ExecutionService/GetShard", data={"shard": 99}, token=OPERATOR())
    assert refused.returncode != 0 and "InvalidArgument" in refused.stderr


def test_the_exchange_simulator_answers_grpcurl_and_its_quotes_price_our_orders(mesh: Mesh) -> None:
    exchange = mesh.plan.exchange.target
    quotes = grpcurl(exchange, "broker.v1.ExchangeService/GetQuotes", data={"symbols": ["AAPL"]})
    assert quotes.returncode == 0 and '"symbol": "AAPL"' in quotes.stdout, quotes.stderr

    with psycopg.connect(mesh.database_url) as conn:
        age = conn.execute("SELECT now() - quoted_at FROM quotes WHERE symbol = 'AAPL'").fetchone()
    assert age is not None and age[0].total_seconds() < 5  # the workers' quote feed keeps it fresh


def test_no_log_of_the_mesh_carries_a_token_or_a_secret(mesh: Mesh) -> None:
    """Last in the module: every line every process wrote while the tests above placed orders with customer tokens,
    pulled levers with operator tokens and reported executions with the callback secret."""
    logs = {path.name: path.read_text() for path in mesh.log_dir.glob("*.log")}
    forbidden = {"the callback secret": LOCAL_CALLBACK_TOKEN, "a JWT": "eyJ", "a bearer credential": "Bearer "}

    assert sum(text.count("\n") for text in logs.values()) > 100  # the services did write
    found = [(name, what) for name, text in logs.items() for what, secret in forbidden.items() if secret in text]
    assert found == []
