"""The whole mesh over mutual TLS, as `make run TLS=1` runs it: orders placed by the API layer's certificate are
taken to the venue, filled and settled, and reconcile (with its own certificate) proves the books; a plaintext
client, one without a certificate and one with another service's are refused; certificates renewed mid-run (the
venue's and OrderService's) cost no order."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brokerage.proto import (
    callback_pb2,
    callback_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
    orders_pb2,
    orders_pb2_grpc,
)
from brokerage.rpc.tls import open_channel
from devtools.mesh import LOCAL_CALLBACK_TOKEN
from devtools.stack import NatsServer, PostgresCluster
from devtools.tls import DevCertificates
from tests.e2e.conftest import grpcurl
from tests.e2e.mesh import Mesh, buys, place_all, running_mesh, wait_all_settled
from tests.identity import TEST_IDENTITY, as_operator

pytestmark = pytest.mark.e2e

CUSTOMERS = 20


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return DevCertificates(tmp_path_factory.mktemp("tls")).ensure()


@pytest.fixture(scope="module")
def mesh(
    postgres_cluster: PostgresCluster,
    migrated_template: str,
    nats_server: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
    certificates: DevCertificates,
) -> Iterator[Mesh]:
    log_dir = tmp_path_factory.mktemp("tls-mesh")
    with running_mesh(postgres_cluster, migrated_template, nats_server, log_dir, CUSTOMERS, tls=certificates) as mesh:
        yield mesh


def reconcile_over_tls(mesh: Mesh, certificates: DevCertificates) -> subprocess.CompletedProcess[str]:
    env = {
        **mesh.env,
        **certificates.broker_env("reconcile", ()),
        "BROKER_EXCHANGE_TARGET": mesh.plan.exchange.target,
    }
    command = [sys.executable, "-m", "brokerage.reconcile", "--stuck-after-seconds", "60"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_orders_placed_over_mutual_tls_are_filled_and_the_books_reconcile(
    mesh: Mesh, certificates: DevCertificates
) -> None:
    orders = asyncio.run(
        place_all(
            mesh.plan.order_service.target, buys("tls", range(1, CUSTOMERS + 1), 5), tls=certificates.files("api")
        )
    )
    wait_all_settled(mesh.database_url, orders)
    checked = reconcile_over_tls(mesh, certificates)

    assert checked.returncode == 0, checked.stdout + checked.stderr


async def _status_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_clients_without_the_right_certificate_are_refused(mesh: Mesh, certificates: DevCertificates) -> None:
    orders, callback = mesh.plan.order_service.target, mesh.plan.callback_service.target
    worker = mesh.plan.workers[0].target
    request = orders_pb2.GetAccountRequest(customer_id="1")
    customer = (("authorization", f"Bearer {TEST_IDENTITY.customer_token('1')}"),)
    no_certificate = grpc.ssl_channel_credentials(root_certificates=certificates.ca().read_bytes())

    async def attempts() -> dict[str, grpc.StatusCode]:
        async with (
            grpc.aio.insecure_channel(orders) as plaintext,
            grpc.aio.secure_channel(orders, no_certificate) as anonymous,
            open_channel(orders, certificates.files("execution-service")) as worker_at_orders,
            open_channel(callback, certificates.files("execution-service")) as worker_at_callback,
            open_channel(worker, certificates.files("api")) as api_at_worker,
            open_channel(orders, certificates.files("api")) as api,
        ):

            def account(channel: grpc.aio.Channel) -> object:
                return orders_pb2_grpc.OrderServiceStub(channel).GetAccount(request, metadata=customer, timeout=5)

            report = callback_pb2_grpc.CallbackServiceStub(worker_at_callback).ReportExecution
            return {
                "plaintext": await _status_of(account(plaintext)),
                "no certificate": await _status_of(account(anonymous)),
                "a worker's at OrderService": await _status_of(account(worker_at_orders)),
                "a worker's at CallbackService": await _status_of(
                    report(
                        callback_pb2.ExecutionReport(),
                        metadata=(("authorization", f"Bearer {LOCAL_CALLBACK_TOKEN}"),),
                        timeout=5,
                    )
                ),
                "the API layer's at a worker": await _status_of(
                    execution_pb2_grpc.ExecutionServiceStub(api_at_worker).ListShards(
                        execution_pb2.ListShardsRequest(), metadata=as_operator(), timeout=5
                    )
                ),
                "the API layer's": await _status_of(account(api)),
            }

    assert asyncio.run(attempts()) == {
        "plaintext": grpc.StatusCode.UNAVAILABLE,
        "no certificate": grpc.StatusCode.UNAVAILABLE,
        "a worker's at OrderService": grpc.StatusCode.PERMISSION_DENIED,
        "a worker's at CallbackService": grpc.StatusCode.UNAVAILABLE,  # not from the venue's CA: no handshake
        "the API layer's at a worker": grpc.StatusCode.PERMISSION_DENIED,
        "the API layer's": grpc.StatusCode.OK,
    }


def test_kubelet_probes_health_in_plaintext_and_engineers_use_grpcurl_with_certificates(
    mesh: Mesh, certificates: DevCertificates
) -> None:
    async def probe(target: str) -> int:
        async with grpc.aio.insecure_channel(target) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(answer.status)

    statuses = [asyncio.run(probe(s.health_target)) for s in mesh.plan.services]
    listed = grpcurl(mesh.plan.order_service.target, "list", tls=certificates.files("api"))

    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * len(mesh.plan.services)
    assert listed.returncode == 0 and "broker.v1.OrderService" in listed.stdout, listed.stderr


def test_certificates_renewed_mid_run_cost_no_order(mesh: Mesh, certificates: DevCertificates) -> None:
    async def place_while_renewing() -> list[orders_pb2.Order]:
        placing = asyncio.create_task(
            place_all(
                mesh.plan.order_service.target,
                buys("renewal", range(1, CUSTOMERS + 1), 10),
                in_flight=4,
                tls=certificates.files("api"),
            )
        )
        await asyncio.sleep(0.5)
        for name in ("exchange", "order-service", "callback-service"):
            certificates.issue(name)
        return await placing

    orders = asyncio.run(place_while_renewing())
    wait_all_settled(mesh.database_url, orders)
    checked = reconcile_over_tls(mesh, certificates)

    assert len(orders) == CUSTOMERS * 10
    assert checked.returncode == 0, checked.stdout + checked.stderr
