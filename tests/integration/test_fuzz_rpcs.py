"""No input makes a server fail (DESIGN.md "Trust boundary", Input): every RPC of every service, fed what hypothesis
makes of its request type (hostile strings, integers at their edges, unknown enums, undecodable bytes) by a caller
with valid credentials, answers only documented status codes, never INTERNAL or UNKNOWN, and a refused call changes
no state. `make fuzz` runs the same suite with 10,000 examples (FUZZ_EXAMPLES); here it runs a few hundred, with a
fixed derandomized sequence so CI never finds something new by chance (make fuzz does the exploring).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import psycopg
import pytest
from google.protobuf import descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokerage.proto import callback_pb2, exchange_pb2, execution_pb2, operations_pb2, orders_pb2
from brokerage.settings import Settings
from callback_service.main import CallbackApp
from exchange_simulator.main import start as start_simulator
from execution_service.main import ExecutionApp
from operations_service.main import OperationsApp
from order_service.main import OrderServiceApp
from tests.identity import TEST_IDENTITY, as_operator
from tests.integration.conftest import CALLBACK_TOKEN, outbox_written, running_service
from tests.integration.test_exchange_simulator import simulator_settings
from tests.integration.test_repairs import operations  # noqa: F401  (the fixture)
from tests.rpc_fuzz import request_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(os.environ.get("FUZZ_TIMEOUT", "300")))]

TOTAL_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
EXPLORE = "FUZZ_EXAMPLES" in os.environ  # make fuzz explores; the test suite replays a fixed sequence
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
KNOWN_TEXT = ["7", "8", "1", "AAPL", "MSFT", "msft", "BUY", "2026-12-07"]
SERVICES = {  # each service's share of the examples follows its number of methods
    "OrderService": orders_pb2,
    "ExecutionService": execution_pb2,
    "OperationsService": operations_pb2,
    "RiskService": operations_pb2,
    "CallbackService": callback_pb2,
    "ExchangeService": exchange_pb2,
}
METHOD_COUNT = sum(len(m.DESCRIPTOR.services_by_name[s].methods) for s, m in SERVICES.items())


def fuzz_settings(service: str) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    methods = len(SERVICES[service].DESCRIPTOR.services_by_name[service].methods)
    return settings(
        max_examples=max(10, TOTAL_EXAMPLES * methods // METHOD_COUNT),
        deadline=None,
        derandomize=not EXPLORE,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@dataclass
class Target:
    """A running service as the fuzzer calls it: its address, the caller's credentials, and a digest of every state
    a call could change (to prove a refused call changed nothing)."""

    service: descriptor.ServiceDescriptor
    address: str
    metadata: Sequence[tuple[str, str]]
    state: Callable[[], Awaitable[object]]

    async def call(self, method: descriptor.MethodDescriptor, payload: bytes) -> grpc.StatusCode:
        """The method's status for this one request: a stream's first answer, or OK while it is still open."""
        path = f"/{self.service.full_name}/{method.name}"
        async with grpc.aio.insecure_channel(self.address) as channel:
            kind = (method.client_streaming, method.server_streaming)
            try:
                if kind == (False, False):
                    await channel.unary_unary(path)(payload, metadata=self.metadata, timeout=10)
                    return grpc.StatusCode.OK
                if kind == (False, True):
                    stream = channel.unary_stream(path)(payload, metadata=self.metadata, timeout=10)
                else:
                    stream = channel.stream_stream(path)(iter([payload]), metadata=self.metadata, timeout=10)
                return await _first_answer(stream)
            except grpc.aio.AioRpcError as error:
                return error.code()


async def _first_answer(stream: grpc.aio.Call) -> grpc.StatusCode:
    try:
        await asyncio.wait_for(stream.read(), timeout=0.5)  # type: ignore[attr-defined]
    except TimeoutError:
        return grpc.StatusCode.OK  # still open, waiting for events (the timeout cancelled the call)
    code = await stream.code() if stream.done() else grpc.StatusCode.OK
    stream.cancel()
    return code


async def fuzz_one(target: Target, data: st.DataObject) -> None:
    methods = list(target.service.methods)
    method = data.draw(st.sampled_from(methods), label="method")
    payload = data.draw(request_bytes(method.input_type, KNOWN_TEXT), label="request")
    before = await target.state()
    code = await target.call(method, payload)
    assert code in DOCUMENTED, f"{method.name} answered {code.name}"
    if code is not grpc.StatusCode.OK:
        assert await target.state() == before, f"{method.name} refused with {code.name} but changed state"
    await _still_serving(target.address)


async def _still_serving(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def database_state(url: str) -> Callable[[], Awaitable[object]]:
    """A digest of every table but the outbox (whose rows leave as the relay publishes them: what counts there is how
    many were ever written) and the quotes (market data, which the workers' quote feed keeps fresh)."""

    async def state() -> object:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            tables = await conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename NOT IN ('outbox', 'quotes') ORDER BY 1"
            )
            digests = {}
            for (table,) in await tables.fetchall():
                rows = f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
                row = await (await conn.execute(rows)).fetchone()
                digests[table] = row[0] if row else None
        with psycopg.connect(url, autocommit=True) as sync:
            digests["outbox written"] = str(outbox_written(sync))
        return digests

    return state


def service_of(module: object, name: str) -> descriptor.ServiceDescriptor:
    return module.DESCRIPTOR.services_by_name[name]  # type: ignore[attr-defined,no-any-return]


def on(service: str, port: int, metadata: Sequence[tuple[str, str]], database_url: object) -> Target:
    """The named service of SERVICES, listening on the port, called with this metadata, its state in the database."""
    state = database_state(str(database_url))
    return Target(service_of(SERVICES[service], service), f"127.0.0.1:{port}", metadata, state)


def customer_seven() -> Sequence[tuple[str, str]]:
    return (("authorization", f"Bearer {TEST_IDENTITY.customer_token('7')}"),)


@fuzz_settings("OrderService")
@given(data=st.data())
async def test_order_service_answers_any_request_with_a_documented_code(
    app: OrderServiceApp, settings: Settings, data: st.DataObject
) -> None:
    await fuzz_one(on("OrderService", app.running.port, customer_seven(), settings.database_url), data)


@fuzz_settings("ExecutionService")
@given(data=st.data())
async def test_execution_service_answers_any_request_with_a_documented_code(
    execution: ExecutionApp, execution_settings: Settings, data: st.DataObject
) -> None:
    await fuzz_one(on("ExecutionService", execution.running.port, as_operator(), execution_settings.database_url), data)


@fuzz_settings("OperationsService")
@given(data=st.data())
async def test_operations_service_answers_any_request_with_a_documented_code(
    operations: OperationsApp,  # noqa: F811
    settings: Settings,
    data: st.DataObject,
) -> None:
    await fuzz_one(
        on("OperationsService", operations.running.port, as_operator(), settings.database_url),
        data,
    )


@fuzz_settings("RiskService")
@given(data=st.data())
async def test_risk_service_answers_any_request_with_a_documented_code(
    operations: OperationsApp,  # noqa: F811
    settings: Settings,
    data: st.DataObject,
) -> None:
    await fuzz_one(on("RiskService", operations.running.port, as_operator(), settings.database_url), data)


@fuzz_settings("CallbackService")
@given(data=st.data())
async def test_callback_service_answers_any_request_with_a_documented_code(
    callback: CallbackApp, settings: Settings, data: st.DataObject
) -> None:
    exchange = (("authorization", f"Bearer {CALLBACK_TOKEN}"),)
    await fuzz_one(on("CallbackService", callback.running.port, exchange, settings.database_url), data)


@pytest.fixture
async def simulator() -> AsyncIterator[object]:
    async with running_service(start_simulator, simulator_settings(None)) as app:
        yield app


@fuzz_settings("ExchangeService")
@given(data=st.data())
async def test_the_exchange_simulator_answers_any_request_with_a_documented_code(
    simulator: object, data: st.DataObject
) -> None:
    app = simulator

    async def venue_state() -> object:
        return sorted((r.exec_id, r.order_id) for r in app.venue.all_reports())  # type: ignore[attr-defined]

    target = Target(
        service_of(exchange_pb2, "ExchangeService"),
        f"127.0.0.1:{app.port}",  # type: ignore[attr-defined]
        (),
        venue_state,
    )
    await fuzz_one(target, data)
