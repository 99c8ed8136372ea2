from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from brokerage.domain.errors import InvalidRequest
from brokerage.domain.market_hours import AlwaysOpen, NyseRegularSession
from brokerage.domain.orders import OrderRequest, Side
from brokerage.domain.placement import (
    Instrument,
    PlacementPolicy,
    Pricing,
    Quote,
    Rejection,
)
from brokerage.domain.risk import RejectCode

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
AAPL = Instrument("AAPL", tick_size=Decimal("0.01"))
QUOTE = Quote("AAPL", Decimal("227.50"), NOW - timedelta(seconds=1))
POLICY = PlacementPolicy(
    price_collar=Decimal("0.05"), max_quantity=1000, quote_max_age=timedelta(seconds=10), clock=AlwaysOpen()
)


def request(**changes: object) -> OrderRequest:
    fields: dict[str, object] = {
        "customer_id": "1",
        "client_order_id": "c-1",
        "symbol": "AAPL",
        "side": Side.BUY,
        "quantity": 10,
    }
    fields.update(changes)
    return OrderRequest(**fields)  # type: ignore[arg-type]


def violations(order: OrderRequest) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as raised:
        POLICY.validate(order, {"AAPL"})
    return {v.field: v.description for v in raised.value.violations}


def test_a_well_formed_request_passes() -> None:
    POLICY.validate(request(), {"AAPL"})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"client_order_id": ""}, "client_order_id"),
        ({"client_order_id": "x" * 65}, "client_order_id"),
        ({"client_order_id": "has space"}, "client_order_id"),
        ({"symbol": ""}, "symbol"),
        ({"symbol": "ZZZZ"}, "symbol"),
        ({"side": None}, "side"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": -5}, "quantity"),
        ({"quantity": 1001}, "quantity"),
    ],
)
def test_each_malformed_field_is_named(changes: dict[str, object], field: str) -> None:
    assert field in violations(request(**changes))


def test_every_violation_is_reported_at_once() -> None:
    assert set(violations(request(customer_id="", quantity=0, symbol="ZZZZ"))) == {
        "customer_id",
        "quantity",
        "symbol",
    }


def test_a_buy_is_protected_at_the_collared_price_rounded_up_to_the_tick() -> None:
    decision = POLICY.price(request(quantity=10), AAPL, QUOTE, NOW)
    # 227.50 x 1.05 = 238.875 -> 238.88
    assert decision == Pricing(protection_price=Decimal("238.88"), reference_price=Decimal("227.50"))


def test_a_sell_is_protected_at_a_floor_rounded_down() -> None:
    decision = POLICY.price(request(side=Side.SELL, quantity=7), AAPL, QUOTE, NOW)
    # 227.50 x 0.95 = 216.125 -> 216.12
    assert decision == Pricing(protection_price=Decimal("216.12"), reference_price=Decimal("227.50"))


def test_money_stays_decimal() -> None:
    decision = POLICY.price(request(), AAPL, QUOTE, NOW)
    assert isinstance(decision, Pricing)
    assert isinstance(decision.protection_price, Decimal)


@pytest.mark.parametrize(
    ("instrument", "quote", "code"),
    [
        (AAPL, None, RejectCode.NO_QUOTE),
        (AAPL, Quote("AAPL", Decimal("227.50"), NOW - timedelta(seconds=11)), RejectCode.STALE_QUOTE),
    ],
)
def test_unpriced_orders_are_rejected(instrument: Instrument, quote: Quote | None, code: RejectCode) -> None:
    decision = POLICY.price(request(), instrument, quote, NOW)
    assert isinstance(decision, Rejection) and decision.code is code and decision.reason


def test_outside_the_nyse_session_the_market_is_closed() -> None:
    nyse = PlacementPolicy(Decimal("0.05"), 1000, timedelta(seconds=10), NyseRegularSession())
    saturday = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    decision = nyse.price(request(), AAPL, Quote("AAPL", Decimal("227.50"), saturday), saturday)
    assert decision == Rejection(RejectCode.MARKET_CLOSED, "market closed")


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        ("2026-11-24T14:29:00+00:00", False),  # 09:29 New York
        ("2026-11-24T14:30:00+00:00", True),  # 09:30
        ("2026-11-24T20:59:00+00:00", True),  # 15:59
        ("2026-11-24T21:00:00+00:00", False),  # 16:00
        ("2026-11-26T15:00:00+00:00", False),  # Thanksgiving
        ("2026-11-27T18:30:00+00:00", False),  # the early close after it, 13:00
        ("2026-11-28T15:00:00+00:00", False),  # Saturday
    ],
)
def test_nyse_regular_session(moment: str, is_open: bool) -> None:
    assert NyseRegularSession().is_open(datetime.fromisoformat(moment)) is is_open
