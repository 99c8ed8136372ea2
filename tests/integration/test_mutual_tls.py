"""Mutual TLS on every link (DESIGN.md "Trust boundary"): each server takes only clients with a certificate from
its CA, admits only the identities its policy names (PERMISSION_DENIED, counted), serves health in plaintext on a
probe port for kubelet, and follows a renewed certificate with no failed call; CallbackService trusts the venue's
CA alone."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from pydantic import SecretStr

from brokerage.proto import common_pb2, exchange_pb2, exchange_pb2_grpc, orders_pb2, orders_pb2_grpc
from brokerage.rpc.tls import RenewingChannel, TlsFiles, open_channel
from brokerage.settings import Settings
from callback_service.main import start as start_callback
from devtools.stack import free_port
from devtools.tls import DevCertificates, identity
from devtools.token import customer_tokens
from exchange_simulator.main import start as start_simulator
from order_service.main import OrderServiceApp
from tests.identity import TEST_IDENTITY
from tests.integration.conftest import CALLBACK_TOKEN, running_app, running_service
from tests.integration.test_exchange_simulator import simulator_settings
from tests.integration.test_place_order import place as order_request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return DevCertificates(tmp_path_factory.mktemp("tls")).ensure()


def tls_settings(certificates: DevCertificates, name: str, peers: tuple[str, ...], **more: object) -> dict[str, object]:
    env = certificates.broker_env(name, peers)
    return {key.removeprefix("BROKER_").lower(): value for key, value in env.items()} | more


@pytest.fixture
async def tls_order_service(settings: Settings, certificates: DevCertificates) -> AsyncIterator[OrderServiceApp]:
    update = tls_settings(certificates, "order-service", ("api",), probe_port=free_port())
    async with running_app(settings.model_copy(update=update)) as app:
        yield app


def customer_channel(app: OrderServiceApp, files: TlsFiles | None) -> grpc.aio.Channel:
    return open_channel(
        f"127.0.0.1:{app.running.port}", files, interceptors=customer_tokens(TEST_IDENTITY).interceptors()
    )


async def place(channel: grpc.aio.Channel, key: str) -> orders_pb2.Order:
    return await orders_pb2_grpc.OrderServiceStub(channel).PlaceOrder(order_request("7", key), timeout=5)  # type: ignore[no-any-return]


def refused(name: str) -> float:
    return REGISTRY.get_sample_value("grpc_server_peers_refused_total", {"grpc_service": name}) or 0.0


async def test_the_api_layer_places_orders_over_mutual_tls(
    tls_order_service: OrderServiceApp, certificates: DevCertificates
) -> None:
    async with customer_channel(tls_order_service, certificates.files("api")) as channel:
        order = await place(channel, "over-tls")

    assert order.status == common_pb2.ORDER_STATUS_PLACED


async def test_a_plaintext_client_and_one_without_a_certificate_are_turned_away(
    tls_order_service: OrderServiceApp, certificates: DevCertificates
) -> None:
    target = f"127.0.0.1:{tls_order_service.running.port}"
    no_certificate = grpc.ssl_channel_credentials(root_certificates=certificates.ca().read_bytes())
    for channel in (
        grpc.aio.insecure_channel(target),
        grpc.aio.secure_channel(target, no_certificate),
    ):
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await place(channel, "never")
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_another_services_certificate_is_not_admitted_and_is_counted(
    tls_order_service: OrderServiceApp, certificates: DevCertificates
) -> None:
    before = refused("broker.v1.OrderService")
    async with customer_channel(tls_order_service, certificates.files("execution-service")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await place(channel, "from-a-worker")

    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused("broker.v1.OrderService") == before + 1


async def test_health_is_served_in_plaintext_on_the_probe_port_and_nothing_else(
    tls_order_service: OrderServiceApp,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_order_service.running.probe_port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await place(channel, "on-the-probe-port")

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED


def served_serial(port: int, certificates: DevCertificates) -> int:
    """The serial of the certificate the server presents to a new connection."""
    context = ssl.create_default_context(cafile=str(certificates.ca()))
    files = certificates.files("api")
    context.load_cert_chain(files.cert, files.key)
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_a_renewed_server_certificate_is_served_without_a_failed_call(
    tls_order_service: OrderServiceApp, certificates: DevCertificates
) -> None:
    port = tls_order_service.running.port
    before = served_serial(port, certificates)
    failures: list[BaseException] = []
    placed = 0

    async def keep_placing(channel: grpc.aio.Channel, stop: asyncio.Event) -> None:
        nonlocal placed
        while not stop.is_set():
            try:
                await place(channel, f"rotation-{placed}")
                placed += 1
            except grpc.aio.AioRpcError as error:
                failures.append(error)

    async with customer_channel(tls_order_service, certificates.files("api")) as channel:
        stop = asyncio.Event()
        placing = asyncio.create_task(keep_placing(channel, stop))
        await asyncio.sleep(0.3)
        certificates.issue("order-service")
        await asyncio.sleep(0.3)
        after = served_serial(port, certificates)  # a new connection sees the renewed certificate
        async with customer_channel(tls_order_service, certificates.files("api")) as fresh:
            await place(fresh, "on-a-fresh-connection")
        await asyncio.sleep(0.3)
        stop.set()
        await placing

    assert after != before
    assert failures == [] and placed > 0


async def test_a_client_channel_moves_to_its_renewed_certificate(certificates: DevCertificates) -> None:
    made: list[grpc.aio.Channel] = []
    files = certificates.files("brokerctl")

    def make() -> grpc.aio.Channel:
        made.append(open_channel("127.0.0.1:1", files))
        return made[-1]

    channels = RenewingChannel(make, files, grace=0.1, check_every=0)
    first = channels.current()
    assert channels.current() is first  # nothing changed: the same channel
    certificates.issue("brokerctl")
    renewed = channels.current()
    await asyncio.sleep(0.3)
    await channels.close()

    assert renewed is not first and made == [first, renewed]


async def test_callback_service_admits_the_venue_alone_by_its_own_ca(
    settings: Settings, certificates: DevCertificates
) -> None:
    update = tls_settings(certificates, "callback-service", ("exchange",), callback_token=SecretStr(CALLBACK_TOKEN))
    update["tls_ca_file"] = str(certificates.ca("venue-ca"))  # its callers' CA: the venue's, not ours
    async with running_service(start_callback, settings.model_copy(update=update)) as app:
        target = f"127.0.0.1:{app.running.port}"
        venue = certificates.files("exchange", trusting="ca")  # checks CallbackService's certificate by our CA
        worker = certificates.files("execution-service")
        metadata = (("authorization", f"Bearer {CALLBACK_TOKEN}"),)
        async with open_channel(target, venue) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        async with open_channel(target, worker) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as turned_away:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5, metadata=metadata
                )

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert turned_away.value.code() == grpc.StatusCode.UNAVAILABLE  # its certificate is from no CA it trusts


async def test_only_the_workers_enter_orders_at_the_venue(certificates: DevCertificates) -> None:
    venue = certificates.files("exchange")
    settings = simulator_settings(
        None,
        tls_cert_file=str(venue.cert),
        tls_key_file=str(venue.key),
        tls_ca_file=str(certificates.ca()),
        tls_order_entry_peers=identity("execution-service"),
        tls_reader_peers=identity("operations-service"),
    )
    order = exchange_pb2.SubmitOrderRequest(
        order_id="o-tls", customer_id="7", symbol="AAPL", side=common_pb2.SIDE_BUY, quantity=1, protection_price="999"
    )
    async with running_service(start_simulator, settings) as app:
        target = f"127.0.0.1:{app.port}"

        def client(name: str) -> grpc.aio.Channel:
            return open_channel(target, certificates.files(name, trusting="venue-ca"))

        async with client("execution-service") as worker, client("operations-service") as operations:
            accepted = await exchange_pb2_grpc.ExchangeServiceStub(worker).SubmitOrder(order, timeout=5)
            quotes = await exchange_pb2_grpc.ExchangeServiceStub(operations).GetQuotes(
                exchange_pb2.GetQuotesRequest(), timeout=5
            )
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await exchange_pb2_grpc.ExchangeServiceStub(operations).SubmitOrder(order, timeout=5)

    assert accepted.accepted and quotes.quotes
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
