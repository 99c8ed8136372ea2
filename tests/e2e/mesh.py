"""The whole mesh as processes, as `make run` starts it (devtools.mesh), and what end-to-end tests ask of it:
placing orders over gRPC, waiting for them to reach the exchange, and reading the exchange's drop copy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

import nats
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from brokerage.rpc.tls import TlsFiles, open_channel
from brokerage.storage.grants import BY_NAME, ROLES, SERVICE_ROLES
from brokerage.storage.seed import seed
from devtools.mesh import FAST_TIMINGS, MeshPlan, ServicePlan, database_url_as, plan_mesh, read_drop_copy
from devtools.stack import NatsServer, PostgresCluster, free_port, stop_processes, wait_until
from devtools.tls import DevCertificates
from devtools.token import customer_tokens
from tests.e2e.conftest import ServiceProcess, base_env, start_service, wait_serving
from tests.identity import TEST_IDENTITY

TIMINGS = FAST_TIMINGS


@dataclass
class Mesh:
    plan: MeshPlan
    env: dict[str, str]
    database_url: str
    nats: NatsServer
    log_dir: Path
    processes: dict[str, ServiceProcess]

    def start(self, service: ServicePlan) -> ServiceProcess:
        process = start_service(service, self.env, self.log_dir / f"{service.name}.log", own_database_user=True)
        self.processes[service.name] = process
        wait_serving(process, timeout=30)
        return process

    def worker(self, name: str) -> ServicePlan:
        return next(w for w in self.plan.workers if w.name == name)

    def exchange_metric(self, name: str) -> float:
        with urlopen(f"http://127.0.0.1:{self.plan.exchange.metrics_port}/metrics", timeout=5) as response:
            families = text_string_to_metric_families(response.read().decode())
            return sum(s.value for f in families for s in f.samples if s.name == name)


@contextmanager
def running_mesh(
    postgres_cluster: PostgresCluster,
    migrated_template: str,
    nats_server: NatsServer,
    log_dir: Path,
    customers: int,
    broker_env: Mapping[str, str] | None = None,
    tls: DevCertificates | None = None,
    **exchange_env: str,
) -> Iterator[Mesh]:
    """The mesh of `make run` on free ports, against a fresh database with `customers` funded customers and a
    NATS server emptied of streams; every process stopped, and the database dropped, at the end. The broker's
    services take TIMINGS, then broker_env; the simulator takes exchange_env. With tls, as `make run TLS=1`."""
    database = f"mesh_{uuid.uuid4().hex[:8]}"
    for role in ROLES:  # each service logs in as a member of its role, as in make run and Kubernetes
        postgres_cluster.create_login(role.login, role.name)
    postgres_cluster.create_database(database, template=migrated_template)
    database_url = postgres_cluster.url(database)
    seed(database_url, customers)
    nats_server.start()
    asyncio.run(_delete_streams(nats_server.url))
    plan = plan_mesh(iter(free_port, None), exchange_env=exchange_env, tls=tls, probe_ports=iter(free_port, None))
    env = base_env(database_url, nats_server.url, **{**TIMINGS, **(broker_env or {})})
    try:
        with serving(Mesh(plan, env, database_url, nats_server, log_dir, {})) as mesh:
            yield mesh
    finally:
        nats_server.start()
        postgres_cluster.drop_database(database)


@contextmanager
def serving(mesh: Mesh) -> Iterator[Mesh]:
    """Every service of the mesh's plan started in turn (each once ready); all of them stopped at the end."""
    try:
        for service in mesh.plan.services:
            mesh.start(service)
        yield mesh
    finally:
        stop_processes([p.process for p in mesh.processes.values()], timeout=20)


async def _delete_streams(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
    finally:
        await nc.close()


async def place_all(
    target: str, requests: list[orders_pb2.PlaceOrderRequest], in_flight: int = 48, tls: TlsFiles | None = None
) -> list[orders_pb2.Order]:
    """Places every order over gRPC (over mutual TLS with the API layer's certificate, when given), in_flight at a
    time; all are PLACED (customers are well funded)."""
    interceptors = customer_tokens(TEST_IDENTITY).interceptors()
    async with open_channel(target, tls, interceptors=interceptors) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        slots = asyncio.Semaphore(in_flight)

        async def place(request: orders_pb2.PlaceOrderRequest) -> orders_pb2.Order:
            async with slots:
                return await stub.PlaceOrder(request, timeout=10, wait_for_ready=True)

        orders = await asyncio.gather(*(place(r) for r in requests))
    assert {o.status for o in orders} == {common_pb2.ORDER_STATUS_PLACED}
    return list(orders)


def buys(prefix: str, customers: range, per_customer: int) -> list[orders_pb2.PlaceOrderRequest]:
    """Interleaved across customers, so each customer's orders are placed while others' are in flight."""
    return [
        orders_pb2.PlaceOrderRequest(
            customer_id=str(c), client_order_id=f"{prefix}-{i}", symbol="AAPL", side=common_pb2.SIDE_BUY, quantity=1
        )
        for i in range(per_customer)
        for c in customers
    ]


def wait_all_past(
    statuses: tuple[str, ...], database_url: str, orders: list[orders_pb2.Order], timeout: float = 120
) -> None:
    """Waits until no order is in one of these statuses any more."""
    order_ids = [o.order_id for o in orders]

    def moved_on() -> bool:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM orders WHERE order_id = ANY(%s) AND status = ANY(%s)", (order_ids, list(statuses))
            ).fetchone()
        return row == (0,)

    wait_until(moved_on, timeout, f"{len(order_ids)} orders past {', '.join(statuses)}")


def wait_all_at_exchange(database_url: str, orders: list[orders_pb2.Order], timeout: float = 120) -> None:
    """Until every order is past PLACED: acknowledged by the exchange (a fill may come before the ack)."""
    wait_all_past(("PLACED",), database_url, orders, timeout)


def wait_all_settled(database_url: str, orders: list[orders_pb2.Order], timeout: float = 120) -> None:
    """Until every order has ended: filled, canceled or rejected, its money settled."""
    wait_all_past(("PLACED", "SUBMITTED", "PARTIALLY_FILLED"), database_url, orders, timeout)


def reconcile(mesh: Mesh) -> subprocess.CompletedProcess[str]:
    """`python -m brokerage.reconcile` against the mesh's record and its exchange's drop copy, as its own user."""
    env = {
        **mesh.env,
        "BROKER_DATABASE_URL": database_url_as(mesh.database_url, BY_NAME[SERVICE_ROLES["brokerage.reconcile"]].login),
        "BROKER_EXCHANGE_TARGET": mesh.plan.exchange.target,
    }
    command = [sys.executable, "-m", "brokerage.reconcile", "--stuck-after-seconds", "60"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def arrivals(exchange: str) -> dict[str, int]:
    """Each order id the exchange received, with its arrival sequence there (from the drop copy)."""
    sequences: dict[str, set[int]] = defaultdict(set)
    for entry in read_drop_copy(exchange):
        sequences[entry.report.order_id].add(entry.arrival_sequence)
    assert all(len(s) == 1 for s in sequences.values()), "an order with two arrival sequences"
    return {order_id: s.pop() for order_id, s in sequences.items()}


def assert_each_customer_arrived_in_sequence_order(orders: list[orders_pb2.Order], arrived: dict[str, int]) -> None:
    by_customer: dict[str, list[orders_pb2.Order]] = defaultdict(list)
    for order in orders:
        by_customer[order.customer_id].append(order)
    for customer, placed in by_customer.items():
        in_our_order = [arrived[o.order_id] for o in sorted(placed, key=lambda o: o.sequence)]
        assert in_our_order == sorted(in_our_order), f"customer {customer}'s orders reached the exchange out of order"
