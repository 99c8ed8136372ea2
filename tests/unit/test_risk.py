"""The risk controls' domain: what a refusal is called (one list, in the checks' order, the proto's and the
database's), which halt covers an order, and what a well-formed halt or limit is."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokerage.domain.errors import InvalidRequest
from brokerage.domain.risk import (
    Halt,
    HaltScope,
    HaltsInForce,
    Limits,
    RejectCode,
    halt_request,
    parse_limits,
)
from brokerage.proto import orders_pb2

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)


def test_the_reject_codes_are_the_protos_in_the_checks_order() -> None:
    names = [n.removeprefix("REJECT_CODE_") for n in orders_pb2.RejectCode.keys() if n != "REJECT_CODE_UNSPECIFIED"]
    assert names == [code.value for code in RejectCode]
    assert [orders_pb2.RejectCode.Value(f"REJECT_CODE_{c.value}") for c in RejectCode] == list(range(1, 13))


def halt(scope: HaltScope, symbol: str | None = None, customer_id: str | None = None, halt_id: int = 1) -> Halt:
    return Halt(halt_id, scope, symbol, customer_id, "why", False, NOW, "ada")


def test_a_halt_covers_its_scope_and_the_widest_is_found_first() -> None:
    halts = HaltsInForce(
        (halt(HaltScope.SYMBOL, symbol="AAPL", halt_id=2), halt(HaltScope.CUSTOMER, customer_id="7")), 0
    )
    firm = HaltsInForce((halt(HaltScope.FIRM, halt_id=3), *halts.halts), 0)

    assert halts.covering("1", "AAPL") == halts.halts[0]
    assert halts.covering("7", "MSFT") == halts.halts[1]
    assert halts.covering("1", "MSFT") is None
    assert firm.firm_halted and not halts.firm_halted
    assert firm.covering("1", "MSFT") is not None


@pytest.mark.parametrize(
    ("scope", "symbol", "customer", "reason", "fields"),
    [
        (HaltScope.FIRM, "AAPL", "", "x", {"symbol"}),
        (HaltScope.SYMBOL, "", "", "x", {"symbol"}),
        (HaltScope.CUSTOMER, "", "7", " ", {"reason"}),
        (HaltScope.CUSTOMER, "AAPL", "", "x", {"symbol", "customer_id"}),
        (HaltScope.FIRM, "", "", "two\nlines", {"reason"}),
        (HaltScope.FIRM, "", "", "x" * 501, {"reason"}),
    ],
)
def test_a_malformed_halt_names_each_field_at_fault(
    scope: HaltScope, symbol: str, customer: str, reason: str, fields: set[str]
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        halt_request(scope, symbol, customer, reason, False)
    assert {v.field for v in refused.value.violations} == fields


def test_a_well_formed_halt_keeps_only_its_target() -> None:
    wanted = halt_request(HaltScope.SYMBOL, "AAPL", "", "news pending", True)
    assert (wanted.symbol, wanted.customer_id, wanted.cancel_open_orders) == ("AAPL", None, True)


def test_limits_are_positive_and_exact() -> None:
    parsed = parse_limits(
        max_order_notional="2500.5", max_order_quantity=10, max_daily_buy_notional=None, max_orders_per_minute=20
    )
    assert parsed == Limits(Decimal("2500.5"), 10, None, 20)
    with pytest.raises(InvalidRequest) as refused:
        parse_limits(
            max_order_notional="1.23456", max_order_quantity=0, max_daily_buy_notional="NaN", max_orders_per_minute=-1
        )
    assert {v.field for v in refused.value.violations} == {
        "max_order_notional",
        "max_order_quantity",
        "max_daily_buy_notional",
        "max_orders_per_minute",
    }


@given(st.text(max_size=40))
def test_any_text_as_a_money_limit_is_a_decimal_the_books_can_hold_or_a_field_violation(text: str) -> None:
    try:
        parsed = parse_limits(
            max_order_notional=text, max_order_quantity=None, max_daily_buy_notional=None, max_orders_per_minute=None
        )
    except InvalidRequest as refused:
        assert [v.field for v in refused.violations] == ["max_order_notional"]
        return
    value = parsed.max_order_notional
    assert value is not None and 0 < value < Decimal("1e15") and value == value.quantize(Decimal("0.0001"))
