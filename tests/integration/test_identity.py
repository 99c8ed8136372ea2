"""The trust boundary's identities (DESIGN.md "Trust boundary"): tokens verified against their issuer's JWKS, and
every method of every service admitting only its own kind of caller, each customer only to their own account."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import symbol_database
from hypothesis import given, settings
from hypothesis import strategies as st

from brokerage.domain.errors import Unauthenticated
from brokerage.proto import execution_pb2, operations_pb2, orders_pb2, orders_pb2_grpc
from brokerage.rpc.identity import CACHED_TOKENS, Issuer, Keys, Kind, Verifier
from devtools.token import DevIdentity
from execution_service.main import ExecutionApp
from execution_service.main import start as start_execution
from operations_service.main import start as start_operations
from order_service.main import OrderServiceApp
from tests.identity import TEST_IDENTITY, customer_channel
from tests.integration.conftest import running_service, snapshot
from tests.integration.test_place_order import place

pytestmark = pytest.mark.integration

CUSTOMERS = TEST_IDENTITY.customers
OPERATORS = TEST_IDENTITY.operators


def verifier(identity: DevIdentity = TEST_IDENTITY) -> Verifier:
    return Verifier(
        [
            Issuer(
                Kind.CUSTOMER,
                CUSTOMERS.issuer,
                CUSTOMERS.audience,
                str(identity.customers.jwks_path),
                timedelta(minutes=15),
            ),
            Issuer(
                Kind.OPERATOR,
                OPERATORS.issuer,
                OPERATORS.audience,
                str(identity.operators.jwks_path),
                timedelta(hours=8),
            ),
        ]
    )


VERIFIER = verifier()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": CUSTOMERS.issuer, "aud": CUSTOMERS.audience, "sub": "7", "iat": now, "exp": now + 300}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(body: dict[str, Any], *, key: Any = None, algorithm: str = "RS256", kid: str | None = None) -> str:
    """A token signed with the customers' dev key (its kid), or with the key and kid given."""
    from devtools.token import _signing_key

    dev_key, dev_kid = _signing_key(CUSTOMERS.key_path)
    return jwt.encode(body, key or dev_key, algorithm=algorithm, headers={"kid": kid or dev_kid})


async def test_a_customer_token_gives_the_customer_and_its_scopes() -> None:
    principal = await verifier().verify(TEST_IDENTITY.customer_token("7"))

    assert (principal.kind, principal.subject, principal.scopes) == (
        Kind.CUSTOMER,
        "7",
        frozenset({"orders:read", "orders:write"}),
    )


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (signed(claims(), algorithm="HS256", key="a-shared-secret-that-is-long-enough-for-hs256"), "signed with"),
        (jwt.encode(claims(), None, algorithm="none"), "signed with"),
        (signed(claims(exp=int(time.time()) - 61)), "expired"),
        (signed(claims(iat=int(time.time()), exp=int(time.time()) + 16 * 60)), "at most 900 s"),
        (signed(claims(aud="urn:someone-else")), "audience"),
        (signed(claims(iss="https://evil.example")), "known issuer"),
        (signed(claims(sub=None)), "sub"),
        (signed(claims(exp=None)), "exp"),
        (signed(claims(sub="7\x00")), "subject is no id"),
        (signed(claims(), kid="a-kid-nobody-published"), "key is not one"),
        (signed(claims(pad="x" * 5000)), "at most 4096 bytes"),
        ("not.a.jwt", "not a JWT"),
    ],
)
async def test_a_token_that_is_not_right_in_every_way_proves_no_one(token: str, why: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await verifier().verify(token)
    assert why.lower() in str(refused.value).lower()


async def test_a_key_of_another_kind_than_its_token_claims_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    forged = signed(claims(), key=other, algorithm="ES256")  # the right kid, a key nobody published

    with pytest.raises(Unauthenticated):
        await verifier().verify(forged)


async def test_within_the_leeway_an_expired_token_still_counts() -> None:
    principal = await verifier().verify(signed(claims(exp=int(time.time()) - 30)))
    assert principal.subject == "7"


async def test_scopes_count_only_from_their_own_issuer() -> None:
    from devtools.token import _signing_key

    key, kid = _signing_key(OPERATORS.key_path)
    now = int(time.time())
    body = {"iss": OPERATORS.issuer, "aud": OPERATORS.audience, "sub": "ada", "iat": now, "exp": now + 60}
    token = jwt.encode({**body, "scope": "ops:read orders:write"}, key, algorithm="RS256", headers={"kid": kid})

    principal = await verifier().verify(token)

    assert (principal.kind, principal.scopes) == (Kind.OPERATOR, frozenset({"ops:read"}))


async def test_an_unknown_kid_rereads_the_jwks_at_most_every_30_seconds(tmp_path: Path) -> None:
    rotated = DevIdentity(tmp_path / "rotated").ensure()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(TEST_IDENTITY.customers.jwks_path.read_text())
    clock = [0.0]
    keys = Keys(str(jwks), clock=lambda: clock[0])
    await keys.refresh()
    new_kid = json.loads(rotated.customers.jwks_path.read_text())["keys"][0]["kid"]
    both = {
        "keys": [*json.loads(jwks.read_text())["keys"], *json.loads(rotated.customers.jwks_path.read_text())["keys"]]
    }
    jwks.write_text(json.dumps(both))

    clock[0] = 10.0
    too_soon = await keys.get(new_kid)
    clock[0] = 31.0
    after = await keys.get(new_kid)

    assert too_soon is None and after is not None


async def test_a_verified_token_is_kept_and_the_cache_is_bounded() -> None:
    checker = verifier()
    token = TEST_IDENTITY.customer_token("7")
    first = await checker.verify(token)
    again = await checker.verify(token)

    assert first is again
    assert CACHED_TOKENS >= 10_000


# ------------------------------------------------------------------------------------------------------ the services

ORDER_METHODS = orders_pb2.DESCRIPTOR.services_by_name["OrderService"].methods


def _request_class(method: Any) -> Any:
    return symbol_database.Default().GetSymbol(method.input_type.full_name)


async def _call(channel: grpc.aio.Channel, method: Any, request: Any, metadata: tuple[tuple[str, str], ...]) -> None:
    response_class = symbol_database.Default().GetSymbol(method.output_type.full_name)
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:
        call = channel.unary_stream(path, request.__class__.SerializeToString, response_class.FromString)
        await call(request, metadata=metadata, timeout=5).read()
    else:
        call = channel.unary_unary(path, request.__class__.SerializeToString, response_class.FromString)
        await call(request, metadata=metadata, timeout=5)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def plain_channel(app: OrderServiceApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.running.port}") as channel:
        yield channel


@pytest.mark.parametrize("method", list(ORDER_METHODS), ids=lambda m: m.name)
async def test_every_order_method_refuses_no_token_another_customers_body_and_an_operator(
    plain_channel: grpc.aio.Channel, db: psycopg.Connection, method: Any
) -> None:
    request = _request_class(method)(customer_id="8")
    if method.name in ("GetOrder", "CancelOrder"):
        request.order_id = "01JAAAAAAAAAAAAAAAAAAAAAAA"
    if method.name == "PlaceOrder":
        request.CopyFrom(place(customer="8"))
    before = snapshot(db)
    codes = []
    for metadata in (
        (),
        _bearer("garbage"),
        _bearer(TEST_IDENTITY.customer_token("7")),  # customer 7 for customer 8
        _bearer(TEST_IDENTITY.operator_token("ada")),  # an operator never trades for a customer: not its issuer
        _bearer(
            TEST_IDENTITY.customer_token(
                "8", scopes=["orders:read"] if method.name in ("PlaceOrder", "CancelOrder") else []
            )
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _call(plain_channel, method, request, metadata)
        codes.append(refused.value.code())

    assert codes == [
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,  # the operators' issuer is not one OrderService trusts
        grpc.StatusCode.PERMISSION_DENIED,  # lacking the scope
    ]
    assert snapshot(db) == before


async def test_another_customers_order_is_not_found(app: OrderServiceApp, db: psycopg.Connection) -> None:
    async with customer_channel(f"127.0.0.1:{app.running.port}") as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        theirs = await stub.PlaceOrder(place(customer="8", key="theirs"), timeout=5)
        codes = []
        for call in (
            stub.GetOrder(orders_pb2.GetOrderRequest(customer_id="7", order_id=theirs.order_id), timeout=5),
            stub.CancelOrder(orders_pb2.CancelOrderRequest(customer_id="7", order_id=theirs.order_id), timeout=5),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            codes.append(refused.value.code())
        mine = await stub.GetOrder(
            orders_pb2.GetOrderRequest(order_id=theirs.order_id),
            metadata=_bearer(TEST_IDENTITY.customer_token("8")),
            timeout=5,
        )

    assert codes == [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND]
    assert mine.status != 0 and db.execute("SELECT status FROM orders").fetchone() == ("PLACED",)


async def test_a_watch_ends_unauthenticated_when_its_token_expires(app: OrderServiceApp) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.running.port}") as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        token = TEST_IDENTITY.customer_token("1", ttl=2)
        started = time.monotonic()
        stream = stub.WatchOrders(orders_pb2.WatchOrdersRequest(), metadata=_bearer(token))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(10):
                async for _ in stream:
                    pass

    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in (ended.value.details() or "")
    assert 1 <= time.monotonic() - started < 8


@pytest.fixture
async def worker(execution_settings: Any) -> AsyncIterator[ExecutionApp]:
    async with running_service(start_execution, execution_settings) as app:
        yield app


@pytest.mark.parametrize(
    ("method", "request_", "scope"),
    [
        ("/broker.v1.ExecutionService/ListShards", execution_pb2.ListShardsRequest(), "ops:read"),
        ("/broker.v1.ExecutionService/PauseShard", execution_pb2.PauseShardRequest(shard=3), "ops:write"),
        ("/broker.v1.ExecutionService/ResumeShard", execution_pb2.ResumeShardRequest(shard=3), "ops:write"),
    ],
)
async def test_the_shard_levers_take_an_operator_with_the_scope_and_no_customer(
    worker: ExecutionApp, db: psycopg.Connection, method: str, request_: Any, scope: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.running.port}") as channel:
        call = channel.unary_unary(method, request_.__class__.SerializeToString, lambda b: b)
        codes = []
        for token in (
            TEST_IDENTITY.customer_token("1"),
            TEST_IDENTITY.operator_token("ada", scopes=[s for s in ("ops:read", "ops:write") if s != scope]),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(request_, metadata=_bearer(token), timeout=5)
            codes.append(refused.value.code())
        await call(request_, metadata=_bearer(TEST_IDENTITY.operator_token("ada", scopes=[scope])), timeout=5)

    # A customer's token is of an issuer the workers do not trust; an operator's without the scope is known, and
    # may not.
    assert codes == [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED]
    if "PauseShard" in method:
        paused_by = db.execute("SELECT paused_by FROM paused_shards WHERE shard = 3").fetchone()
        assert paused_by == (f"ada ({OPERATORS.issuer})",)


def test_every_method_of_every_protected_service_has_a_rule() -> None:
    from execution_service.servicer import POLICY as EXECUTION
    from operations_service.main import POLICY as OPERATIONS  # OperationsService and RiskService
    from order_service.servicer import POLICY as ORDERS

    for policy, file in ((ORDERS, orders_pb2), (EXECUTION, execution_pb2), (OPERATIONS, operations_pb2)):
        services = file.DESCRIPTOR.services_by_name.values()
        methods = {f"/{service.full_name}/{m.name}" for service in services for m in service.methods}
        assert set(policy.rules) == methods, file.DESCRIPTOR.name


async def test_a_service_refuses_to_start_without_its_issuer(settings: Any) -> None:
    from order_service.main import start

    with pytest.raises(ValueError, match="BROKER_CUSTOMER_JWKS"):
        await start(settings.model_copy(update={"customer_jwks": ""}))
    with pytest.raises(ValueError, match="BROKER_OPERATOR_ISSUER"):
        await start_operations(settings.model_copy(update={"operator_issuer": ""}))


async def test_during_a_rotation_the_callback_service_takes_the_new_secret_and_the_one_it_replaces(
    settings: Any,
) -> None:
    from pydantic import SecretStr

    from brokerage.proto import callback_pb2, callback_pb2_grpc
    from callback_service.main import start as start_callback

    rotating = settings.model_copy(
        update={"callback_token": SecretStr("new-secret"), "callback_token_previous": SecretStr("old-secret")}
    )
    report = callback_pb2.ExecutionReport(exec_id="E-rotation", order_id="nobody's")
    async with (
        running_service(start_callback, rotating) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.running.port}") as channel,
    ):
        stub = callback_pb2_grpc.CallbackServiceStub(channel)
        answers = []
        for secret in ("new-secret", "old-secret", "older-secret"):
            try:
                await stub.ReportExecution(report, metadata=_bearer(secret), timeout=5)
                answers.append("taken")
            except grpc.aio.AioRpcError as error:
                answers.append(error.code().name)

    assert answers == ["taken", "taken", "UNAUTHENTICATED"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(st.text(alphabet='abcXYZ019-_=+/{}":', max_size=60), min_size=1, max_size=4).map(".".join),
        st.sampled_from(["e30.e30.", "eyJhbGciOiJub25lIn0.e30.", "W10.e30.x", "bnVsbA.e30.x", "eyJhbGciOiJSUzI1NiJ9"]),
    )
)
async def test_any_string_presented_as_a_token_is_unauthenticated_and_nothing_else(token: str) -> None:
    with pytest.raises(Unauthenticated):
        await VERIFIER.verify(token)
