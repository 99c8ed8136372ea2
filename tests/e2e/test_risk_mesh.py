"""The risk controls across the whole mesh as processes, with two OrderService replicas behind no balancer but the
test: the rate limit is one limit across both (counted in PostgreSQL), a halt set through the operations service
with grpcurl is in force on both at once and lets nothing reach the venue a second after it returned (the drop
copy), and it stays in force across a restart of the three, until it is cleared."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import psycopg
import pytest

from brokerage.proto import common_pb2, orders_pb2, orders_pb2_grpc
from devtools.mesh import ServicePlan, broker_service, read_drop_copy
from devtools.stack import NatsServer, PostgresCluster, free_port, stop_processes
from devtools.token import customer_tokens
from tests.e2e.conftest import grpcurl
from tests.e2e.mesh import Mesh, buys, running_mesh, wait_all_settled
from tests.identity import TEST_IDENTITY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RISK = "broker.v1.RiskService"
SECOND = "order-service-2"
CUSTOMERS = 50


@pytest.fixture(scope="module")
def mesh(
    postgres_cluster: PostgresCluster,
    migrated_template: str,
    nats_server: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    with running_mesh(
        postgres_cluster, migrated_template, nats_server, tmp_path_factory.mktemp("mesh"), CUSTOMERS
    ) as running:
        running.start(broker_service(SECOND, "order_service", free_port(), free_port(), BROKER_SHARD_COUNT="16"))
        yield running


def second_order_service(mesh: Mesh) -> ServicePlan:
    """The second replica's plan, on the ports it was started on."""
    running = mesh.processes[SECOND]
    return broker_service(SECOND, "order_service", running.port, running.metrics_port, BROKER_SHARD_COUNT="16")


def replicas(mesh: Mesh) -> list[str]:
    return [mesh.processes[name].target for name in (mesh.plan.order_service.name, SECOND)]


def risk(mesh: Mesh, method: str, data: dict[str, object]) -> dict[str, object]:
    answer = grpcurl(
        mesh.plan.operations.target, f"{RISK}/{method}", data=data, token=TEST_IDENTITY.operator_token("ada")
    )
    assert answer.returncode == 0, answer.stderr
    return _camel(json.loads(answer.stdout or "{}"))  # type: ignore[no-any-return]


def _camel(value: object) -> object:
    """grpcurl's JSON with every key in lowerCamelCase, whichever it printed."""
    if isinstance(value, dict):
        return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


async def place_on(
    targets: list[str], requests: list[orders_pb2.PlaceOrderRequest]
) -> list[orders_pb2.Order | grpc.aio.AioRpcError]:
    """Each request on the next replica in turn, all at once; an error is returned, not raised."""
    interceptors = customer_tokens(TEST_IDENTITY).interceptors()
    channels = [grpc.aio.insecure_channel(t, interceptors=interceptors) for t in targets]
    try:
        stubs = [orders_pb2_grpc.OrderServiceStub(c) for c in channels]
        calls = [stubs[i % len(stubs)].PlaceOrder(r, timeout=10) for i, r in enumerate(requests)]
        return list(await asyncio.gather(*calls, return_exceptions=True))  # type: ignore[arg-type]
    finally:
        for channel in channels:
            await channel.close()


def test_the_rate_limit_is_one_limit_across_both_replicas(mesh: Mesh) -> None:
    risk(mesh, "SetLimits", {"customer_id": "7", "max_orders_per_minute": 20, "reason": "e2e"})
    requests = buys("rate", range(7, 8), 30)

    answers = asyncio.run(place_on(replicas(mesh), requests))

    placed = [a for a in answers if isinstance(a, orders_pb2.Order)]
    limited = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(placed) == 20 and {e.code() for e in limited} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    with psycopg.connect(mesh.database_url) as conn:
        stored = conn.execute("SELECT count(*) FROM orders WHERE customer_id = '7'").fetchone()
    assert stored == (20,)
    [retried] = asyncio.run(place_on(replicas(mesh)[1:], [requests[answers.index(placed[0])]]))
    assert isinstance(retried, orders_pb2.Order) and retried.order_id == placed[0].order_id  # answered, not limited


def test_a_kill_switch_through_the_operations_service_holds_on_both_replicas_and_across_a_restart(
    mesh: Mesh,
) -> None:
    asyncio.run(place_on(replicas(mesh), buys("before", range(30, 50), 5)))  # in flight as the switch lands
    halt = risk(mesh, "SetTradingHalt", {"scope": "HALT_SCOPE_FIRM", "reason": "e2e kill switch"})
    returned = datetime.now(UTC)
    halt_id = halt["halt"]["haltId"]  # type: ignore[index]

    rejected = asyncio.run(place_on(replicas(mesh), buys("halted", range(21, 23), 1)))
    time.sleep(2)
    late = [
        e.report.order_id
        for e in read_drop_copy(mesh.plan.exchange.target)
        if e.report.exec_type == common_pb2.EXEC_TYPE_NEW
        and e.report.transact_time.ToDatetime(UTC).timestamp() > returned.timestamp() + 1
    ]

    assert [o.reject_code for o in rejected] == [orders_pb2.REJECT_CODE_TRADING_HALTED] * 2  # type: ignore[union-attr]
    assert late == [], "orders reached the venue more than a second after the halt returned"

    restarted = [mesh.plan.operations, mesh.plan.order_service, second_order_service(mesh)]
    stop_processes([mesh.processes[s.name].process for s in restarted], timeout=20)
    for service in restarted:
        mesh.start(service)

    still = asyncio.run(place_on(replicas(mesh), buys("restarted", range(23, 25), 1)))
    assert [o.reject_code for o in still] == [orders_pb2.REJECT_CODE_TRADING_HALTED] * 2  # type: ignore[union-attr]
    listed = risk(mesh, "ListTradingHalts", {})
    assert [h["haltId"] for h in listed["halts"]] == [halt_id]  # type: ignore[index,union-attr]

    risk(mesh, "ClearTradingHalt", {"halt_id": halt_id, "reason": "e2e over"})
    after = asyncio.run(place_on(replicas(mesh), buys("after", range(25, 27), 1)))
    assert {o.status for o in after} == {common_pb2.ORDER_STATUS_PLACED}  # type: ignore[union-attr]
    wait_all_settled(mesh.database_url, after, timeout=60)  # type: ignore[arg-type]
    events = risk(mesh, "ListRiskEvents", {})
    actions = [e["action"] for e in events["events"]]  # type: ignore[index,union-attr]
    assert actions[:2] == ["halt_cleared", "halt_set"] and events["events"][0]["operator"] == "ada"  # type: ignore[index]
