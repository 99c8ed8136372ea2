"""The whole mesh on the engines as production runs them (the first step of issue 18's proof under faults): a
PostgreSQL primary with a synchronous standby, reached through a multi-host URL, and three NATS servers with the
ORDERS stream R3. While customers place orders, the primary is SIGKILLed and the standby promoted (the old primary
back, rewound, as its standby), and then the NATS server leading the stream is SIGKILLed and restarted. Every
PlaceOrder answered OK exists with its fields, every order ends, each customer's reached the venue in sequence, and
the books reconcile against the drop copy."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
import nats
import psycopg
import pytest

from brokerage.messaging.streams import ORDERS_STREAM
from brokerage.proto import orders_pb2, orders_pb2_grpc
from brokerage.storage.grants import ROLES
from brokerage.storage.migrate import load_snapshot
from brokerage.storage.seed import seed
from devtools.mesh import plan_mesh
from devtools.stack import NatsCluster, ReplicatedPostgres, free_port
from devtools.token import customer_tokens
from tests.e2e.conftest import base_env
from tests.e2e.mesh import (
    TIMINGS,
    Mesh,
    arrivals,
    assert_each_customer_arrived_in_sequence_order,
    buys,
    reconcile,
    serving,
    wait_all_settled,
)
from tests.identity import TEST_IDENTITY

pytestmark = pytest.mark.e2e

CUSTOMERS = 40
PER_CUSTOMER = 10
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReplicatedPostgres, NatsCluster]]:
    base = tmp_path_factory.mktemp("clustered")
    database, messaging = ReplicatedPostgres(base / "pg"), NatsCluster(base / "nats")
    database.start()
    messaging.start()
    try:
        yield database, messaging
    finally:
        messaging.stop()
        database.stop()


@pytest.fixture(scope="module")
def mesh(engines: tuple[ReplicatedPostgres, NatsCluster], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    database, messaging = engines
    primary = database.nodes[database.primary]
    primary.create_database("brokerage")
    load_snapshot(primary.url("brokerage"))  # the schema, its roles included
    for role in ROLES:  # each service logs in as a member of its role
        primary.create_login(role.login, role.name)
    url = database.url("brokerage")
    seed(url, CUSTOMERS)
    plan = plan_mesh(iter(free_port, None))
    env = base_env(url, messaging.url, **TIMINGS, BROKER_STREAM_REPLICAS="3")
    with serving(Mesh(plan, env, url, messaging.nodes["n1"], tmp_path_factory.mktemp("clustered-logs"), {})) as mesh:
        yield mesh


async def place_retrying(target: str, requests: list[orders_pb2.PlaceOrderRequest]) -> list[orders_pb2.Order]:
    """Every order placed, a few at a time; a call that fails UNAVAILABLE (a failover) is sent again as it was,
    which PlaceOrder's idempotency makes safe. The orders answered OK."""
    answered: list[orders_pb2.Order] = []
    slots = asyncio.Semaphore(8)
    async with grpc.aio.insecure_channel(target, interceptors=customer_tokens(TEST_IDENTITY).interceptors()) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)

        async def place(request: orders_pb2.PlaceOrderRequest) -> None:
            async with slots:
                for _ in range(200):
                    try:
                        answered.append(await stub.PlaceOrder(request, timeout=5))
                        return
                    except grpc.aio.AioRpcError as error:
                        if error.code() not in RETRIED:
                            raise
                        await asyncio.sleep(0.1)
                raise AssertionError(f"{request.client_order_id} was never answered")

        await asyncio.gather(*(place(r) for r in requests))
    return answered


def stream_leader(url: str) -> str:
    async def ask() -> str:
        client = await nats.connect(url.split(","))
        try:
            info = await client.jetstream().stream_info(ORDERS_STREAM)
        finally:
            await client.close()
        assert info.cluster is not None and info.cluster.leader is not None
        return info.cluster.leader

    return asyncio.run(ask())


def faults(database: ReplicatedPostgres, messaging: NatsCluster, done: list[str]) -> None:
    time.sleep(1.0)
    database.fail_over()
    done.append(f"primary killed, standby promoted at {time.monotonic():.3f}")
    time.sleep(1.0)
    database.rejoin()
    done.append("old primary rewound, back as standby")
    leader = stream_leader(messaging.url)
    messaging.nodes[leader].kill()
    done.append(f"NATS stream leader {leader} killed")
    time.sleep(2.0)
    messaging.nodes[leader].start()
    done.append(f"NATS {leader} back")


def test_no_acknowledged_order_is_lost_when_the_primary_and_the_stream_leader_die(
    mesh: Mesh, engines: tuple[ReplicatedPostgres, NatsCluster]
) -> None:
    database, messaging = engines
    requests = buys("clustered", range(1, CUSTOMERS + 1), PER_CUSTOMER)
    done: list[str] = []
    injector = threading.Thread(target=faults, args=(database, messaging, done))
    injector.start()
    orders = asyncio.run(place_retrying(mesh.plan.order_service.target, requests))
    placed_until = time.monotonic()
    injector.join(timeout=120)

    wait_all_settled(mesh.database_url, orders, timeout=180)
    with psycopg.connect(mesh.database_url) as conn:
        stored = {
            row[0]: row[1:]
            for row in conn.execute("SELECT order_id, customer_id, client_order_id, symbol, quantity FROM orders")
        }
    checked = reconcile(mesh)

    assert len(done) == 4, done  # every fault happened
    assert float(done[0].rpartition(" ")[2]) < placed_until  # the failover came while orders were being placed
    assert len({o.order_id for o in orders}) == len(requests)  # one order per client_order_id
    assert all(stored[o.order_id] == (o.customer_id, o.client_order_id, o.symbol, o.quantity) for o in orders)
    assert len(stored) == len(requests)  # nothing doubled
    assert_each_customer_arrived_in_sequence_order(orders, arrivals(mesh.plan.exchange.target))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    exited = [name for name, p in mesh.processes.items() if p.process.poll() is not None]
    assert exited == []  # a failover makes services unready for a moment; it kills none
