"""broker.v1.RiskService on the operations service: the levers over gRPC as an operator pulls them, in force at the
next PlaceOrder, audited with the operator's identity, and refusing bad input and callers without ops:write."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psycopg
import pytest

from brokerage.proto import operations_pb2, operations_pb2_grpc, orders_pb2, orders_pb2_grpc
from operations_service.main import OperationsApp
from tests.identity import TEST_IDENTITY, as_operator
from tests.integration.test_repairs import brokerctl, operations  # noqa: F401  (the fixture)
from tests.integration.test_risk_controls import PLACED, REJECTED, place

pytestmark = pytest.mark.integration

AS_OPERATOR = as_operator("ada")
FIRM, SYMBOL, CUSTOMER = (
    operations_pb2.HALT_SCOPE_FIRM,
    operations_pb2.HALT_SCOPE_SYMBOL,
    operations_pb2.HALT_SCOPE_CUSTOMER,
)


@pytest.fixture
async def risk(operations: OperationsApp) -> AsyncIterator[operations_pb2_grpc.RiskServiceStub]:  # noqa: F811
    async with grpc.aio.insecure_channel(f"127.0.0.1:{operations.running.port}") as channel:
        yield operations_pb2_grpc.RiskServiceStub(channel)


async def set_halt(
    risk: operations_pb2_grpc.RiskServiceStub, **fields: object
) -> operations_pb2.SetTradingHaltResponse:
    request = operations_pb2.SetTradingHaltRequest(reason="test", **fields)  # type: ignore[arg-type]
    return await risk.SetTradingHalt(request, metadata=AS_OPERATOR, timeout=5)


async def refused(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code()


async def test_a_firm_halt_through_the_service_rejects_the_next_order_and_clearing_it_lets_orders_through(
    risk: operations_pb2_grpc.RiskServiceStub, stub: orders_pb2_grpc.OrderServiceStub
) -> None:
    set_ = await set_halt(risk, scope=FIRM)
    again = await set_halt(risk, scope=FIRM)
    halted = await stub.PlaceOrder(place(key="a"), timeout=5)
    listed = await risk.ListTradingHalts(operations_pb2.ListTradingHaltsRequest(), metadata=AS_OPERATOR, timeout=5)
    cleared = await risk.ClearTradingHalt(
        operations_pb2.ClearTradingHaltRequest(halt_id=set_.halt.halt_id, reason="over"),
        metadata=AS_OPERATOR,
        timeout=5,
    )
    after = await stub.PlaceOrder(place(key="b"), timeout=5)

    assert not set_.already_in_force and again.already_in_force and again.halt.halt_id == set_.halt.halt_id
    assert halted.status == REJECTED and halted.reject_code == orders_pb2.REJECT_CODE_TRADING_HALTED
    assert "test" not in halted.status_reason  # the operator's reason is never the customer's
    assert [h.halt_id for h in listed.halts] == [set_.halt.halt_id]
    assert set_.halt.set_by == "ada" and cleared.cleared_by == "ada" and cleared.HasField("cleared_at")
    assert after.status == PLACED


async def test_account_status_and_limits_through_the_service(
    risk: operations_pb2_grpc.RiskServiceStub, stub: orders_pb2_grpc.OrderServiceStub
) -> None:
    await risk.SetAccountStatus(
        operations_pb2.SetAccountStatusRequest(
            customer_id="2", status=operations_pb2.ACCOUNT_STATUS_CLOSING_ONLY, reason="margin call"
        ),
        metadata=AS_OPERATOR,
        timeout=5,
    )
    set_ = await risk.SetLimits(
        operations_pb2.SetLimitsRequest(customer_id="1", max_order_quantity=5, reason="new account"),
        metadata=AS_OPERATOR,
        timeout=5,
    )
    firm = await risk.SetLimits(
        operations_pb2.SetLimitsRequest(max_order_notional="500000", reason="tighter"), metadata=AS_OPERATOR, timeout=5
    )
    got = await risk.GetLimits(operations_pb2.GetLimitsRequest(customer_id="1"), metadata=AS_OPERATOR, timeout=5)

    closing = await stub.PlaceOrder(place(customer="2"), timeout=5)
    too_many = await stub.PlaceOrder(place(customer="1", quantity=6), timeout=5)

    assert closing.reject_code == orders_pb2.REJECT_CODE_ACCOUNT_CLOSING_ONLY
    assert too_many.reject_code == orders_pb2.REJECT_CODE_QUANTITY_LIMIT
    assert (set_.max_order_quantity, set_.max_order_notional) == (5, "1000000.00")  # the rest: the firm's
    assert (firm.customer_id, firm.max_order_notional, firm.max_order_quantity) == ("", "500000.00", 100000)
    assert (got.max_order_quantity, got.max_order_notional, got.max_orders_per_minute) == (5, "500000.00", 600)

    reverted = await risk.SetLimits(
        operations_pb2.SetLimitsRequest(customer_id="1", reason="back to the firm's"), metadata=AS_OPERATOR, timeout=5
    )
    assert reverted.max_order_quantity == 100000


async def test_every_change_is_audited_with_the_operator_and_listed_newest_first_page_by_page(
    risk: operations_pb2_grpc.RiskServiceStub, db: psycopg.Connection
) -> None:
    halt = await set_halt(risk, scope=SYMBOL, symbol="GOOGL")
    await risk.ClearTradingHalt(
        operations_pb2.ClearTradingHaltRequest(halt_id=halt.halt.halt_id, reason="news out"),
        metadata=AS_OPERATOR,
        timeout=5,
    )
    await set_halt(risk, scope=CUSTOMER, customer_id="3")

    pages, request = [], operations_pb2.ListRiskEventsRequest(page_size=2)
    while True:
        page = await risk.ListRiskEvents(request, metadata=AS_OPERATOR, timeout=5)
        pages.append([(e.action, e.symbol or e.customer_id) for e in page.events])
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    [newest] = (
        await risk.ListRiskEvents(operations_pb2.ListRiskEventsRequest(page_size=1), metadata=AS_OPERATOR)
    ).events

    assert pages == [[("halt_set", "3"), ("halt_cleared", "GOOGL")], [("halt_set", "GOOGL")]]
    assert (newest.operator, newest.operator_issuer) == ("ada", TEST_IDENTITY.operators.issuer)
    assert newest.operator_peer.startswith("ipv4:127.0.0.1:")  # no certificate without TLS: the peer's address
    assert json.loads(newest.detail) == {"scope": "CUSTOMER", "cancel_open_orders": False}
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM risk_events")


async def test_bad_requests_unknown_targets_and_callers_without_ops_write_are_refused_and_change_nothing(
    risk: operations_pb2_grpc.RiskServiceStub, db: psycopg.Connection
) -> None:
    reader = (("authorization", f"Bearer {TEST_IDENTITY.operator_token('ada', scopes=['ops:read'])}"),)
    customer = (("authorization", f"Bearer {TEST_IDENTITY.customer_token('1')}"),)
    halt = operations_pb2.SetTradingHaltRequest
    codes = [
        await refused(risk.SetTradingHalt(halt(reason="x"), metadata=AS_OPERATOR, timeout=5)),
        await refused(risk.SetTradingHalt(halt(scope=FIRM, symbol="AAPL", reason="x"), metadata=AS_OPERATOR)),
        await refused(risk.SetTradingHalt(halt(scope=SYMBOL, reason="x"), metadata=AS_OPERATOR)),
        await refused(risk.SetTradingHalt(halt(scope=FIRM, reason=" "), metadata=AS_OPERATOR)),
        await refused(risk.SetTradingHalt(halt(scope=SYMBOL, symbol="NOPE", reason="x"), metadata=AS_OPERATOR)),
        await refused(risk.SetTradingHalt(halt(scope=FIRM, reason="x"), metadata=reader)),
        await refused(risk.SetTradingHalt(halt(scope=FIRM, reason="x"), metadata=customer)),
        await refused(
            risk.ClearTradingHalt(operations_pb2.ClearTradingHaltRequest(halt_id=99, reason="x"), metadata=AS_OPERATOR)
        ),
        await refused(
            risk.SetAccountStatus(
                operations_pb2.SetAccountStatusRequest(customer_id="1", reason="x"), metadata=AS_OPERATOR
            )
        ),
        await refused(
            risk.SetAccountStatus(
                operations_pb2.SetAccountStatusRequest(
                    customer_id="nobody", status=operations_pb2.ACCOUNT_STATUS_BLOCKED, reason="x"
                ),
                metadata=AS_OPERATOR,
            )
        ),
        await refused(
            risk.SetLimits(
                operations_pb2.SetLimitsRequest(max_order_notional="1.23456", reason="x"), metadata=AS_OPERATOR
            )
        ),
        await refused(
            risk.SetLimits(operations_pb2.SetLimitsRequest(max_orders_per_minute=0, reason="x"), metadata=AS_OPERATOR)
        ),
        await refused(risk.ListRiskEvents(operations_pb2.ListRiskEventsRequest(page_token="x'--"), metadata=reader)),
    ]

    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    assert codes == [
        *[invalid] * 4,
        not_found,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        not_found,
        invalid,
        not_found,
        invalid,
        invalid,
        invalid,
    ]
    assert db.execute("SELECT count(*) FROM risk_events").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM trading_halts").fetchone() == (0,)


async def test_brokerctl_halts_resumes_sets_statuses_and_limits_and_shows_the_audit(
    operations: OperationsApp,  # noqa: F811
    stub: orders_pb2_grpc.OrderServiceStub,
    tmp_path: Path,
) -> None:
    halted = await brokerctl(operations, tmp_path, "halt", "symbol", "GOOGL", "--reason", "pending news")
    listed = await brokerctl(operations, tmp_path, "halt", "list")
    rejected = await stub.PlaceOrder(place(key="g", symbol="GOOGL"), timeout=5)
    halt_id = halted.stdout.split()[1]
    resumed = await brokerctl(operations, tmp_path, "resume", halt_id, "--reason", "news out")
    status = await brokerctl(operations, tmp_path, "account", "4", "closing-only", "--reason", "margin call")
    limits = await brokerctl(
        operations, tmp_path, "limits", "set", "4", "--max-order-notional", "2500.50", "--reason", "new"
    )
    firm = await brokerctl(operations, tmp_path, "limits", "get")
    events = await brokerctl(operations, tmp_path, "risk-events")
    refused = await brokerctl(operations, tmp_path, "account", "nobody", "blocked", "--reason", "x")

    assert halted.returncode == 0 and halted.stdout.startswith(f"halt {halt_id} set: symbol GOOGL"), halted
    assert "symbol GOOGL" in listed.stdout and "pending news" in listed.stdout and "in force" in listed.stdout
    assert rejected.reject_code == orders_pb2.REJECT_CODE_TRADING_HALTED
    assert resumed.returncode == 0 and f"halt {halt_id} cleared" in resumed.stdout
    assert status.stdout.strip() == "customer 4: CLOSING_ONLY"
    assert "max order notional      2500.50" in limits.stdout and "max daily buy notional  10000000.00" in limits.stdout
    assert "the firm's defaults" in firm.stdout
    lines = events.stdout.splitlines()
    assert [line.split()[3] for line in lines[2:]] == ["limits_set", "account_status_set", "halt_cleared", "halt_set"]
    assert "ada (" in events.stdout and "margin call" in events.stdout
    assert refused.returncode == 2 and "NOT_FOUND" in refused.stderr


async def test_blocking_an_account_ends_its_watch_streams_and_refuses_new_ones(
    risk: operations_pb2_grpc.RiskServiceStub, stub: orders_pb2_grpc.OrderServiceStub
) -> None:
    watch = stub.WatchOrders(orders_pb2.WatchOrdersRequest(customer_id="5"), timeout=20)
    await watch.initial_metadata()  # the stream is open
    await risk.SetAccountStatus(
        operations_pb2.SetAccountStatusRequest(
            customer_id="5", status=operations_pb2.ACCOUNT_STATUS_BLOCKED, reason="fraud review"
        ),
        metadata=AS_OPERATOR,
        timeout=5,
    )

    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for _ in watch:
            pass
    again = stub.WatchOrders(orders_pb2.WatchOrdersRequest(customer_id="5"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as refused_again:
        async for _ in again:
            pass

    assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "blocked" in (ended.value.details() or "")
    assert refused_again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
