"""The simulator's prices: a seeded random walk on the tick, halts, quotes; and the settings that shape them."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from brokerage.domain.errors import InvalidRequest
from brokerage.listings import DEMO_LISTINGS, Listing
from exchange_simulator.market import Market
from exchange_simulator.settings import SimulatorSettings

OPEN = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
TICK = Decimal("0.01")


def market(seed: int = 1, volatility: str = "0.01", **kwargs: object) -> Market:
    return Market(DEMO_LISTINGS, seed=seed, volatility=Decimal(volatility), opened_at=OPEN, **kwargs)  # type: ignore[arg-type]


def path(m: Market, steps: int) -> list[dict[str, Decimal]]:
    prices = []
    for step in range(steps):
        m.step(OPEN + timedelta(seconds=step))
        prices.append({s: m.price(s) for s in m.symbols})
    return prices


def test_the_walk_starts_from_the_reference_prices() -> None:
    m = market()
    assert {s: m.price(s) for s in m.symbols} == {x.symbol: x.reference_price for x in DEMO_LISTINGS}


def test_the_same_seed_gives_the_same_prices_at_each_step() -> None:
    assert path(market(seed=7), 200) == path(market(seed=7), 200)


def test_another_seed_gives_another_path() -> None:
    assert path(market(seed=7), 50) != path(market(seed=8), 50)


def test_a_symbols_path_does_not_depend_on_the_other_listings() -> None:
    alone = Market(DEMO_LISTINGS[:1], seed=3, volatility=Decimal("0.01"), opened_at=OPEN)
    symbol = DEMO_LISTINGS[0].symbol
    assert [p[symbol] for p in path(alone, 100)] == [p[symbol] for p in path(market(seed=3), 100)]


def test_prices_move_and_stay_on_the_tick() -> None:
    prices = path(market(), 100)
    assert len({p["AAPL"] for p in prices}) > 10
    assert all(price % TICK == 0 for p in prices for price in p.values())


def test_a_price_never_falls_below_one_tick() -> None:
    # With 50% volatility a step often multiplies by a negative factor: only the floor keeps the price positive.
    penny = Market([Listing("PENNY", "Penny Co.", Decimal("0.05"))], seed=1, volatility=Decimal("0.5"), opened_at=OPEN)
    prices = [p["PENNY"] for p in path(penny, 500)]
    assert min(prices) == TICK
    assert all(price >= TICK for price in prices)


def test_halted_symbols_are_quoted_halted_and_do_not_move() -> None:
    m = market(halted={"TSLA"})
    before = m.price("TSLA")
    path(m, 20)
    quote = m.quotes(["TSLA"])[0]
    assert quote.halted and quote.price == before
    m.resume("TSLA")
    path(m, 20)
    assert not m.quotes(["TSLA"])[0].halted
    assert m.price("TSLA") != before


def test_quotes_for_all_listed_symbols_when_none_are_asked() -> None:
    m = market()
    m.step(OPEN + timedelta(seconds=5))
    quotes = m.quotes()
    assert [q.symbol for q in quotes] == [x.symbol for x in DEMO_LISTINGS]
    assert all(q.quoted_at == OPEN + timedelta(seconds=5) and not q.halted for q in quotes)


def test_an_unlisted_symbol_is_a_malformed_quote_request() -> None:
    with pytest.raises(InvalidRequest) as raised:
        market().quotes(["AAPL", "ZZZZ"])
    assert [v.field for v in raised.value.violations] == ["symbols"]
    assert "ZZZZ" in raised.value.violations[0].description


def test_halted_symbols_come_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_HALTED", "tsla, META")
    assert SimulatorSettings().halted == {"TSLA", "META"}


@pytest.mark.parametrize(
    "values",
    [
        {"halted": "TSLA,ZZZZ"},
        {"partial_fill_probability": 1.5},
        {"max_fills": 0},
        {"chaos_rate": -0.1},
        {"redelivery_backoff_initial_seconds": 3, "redelivery_backoff_max_seconds": 2},
        {"callback_target": "no-port"},
        {"callback_target": "127.0.0.1:50070"},  # without the token every report would be refused forever
        {"log_level": "LOUD"},
    ],
)
def test_settings_refuse_values_out_of_bounds(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SimulatorSettings(**values)  # type: ignore[arg-type]


def test_settings_defaults() -> None:
    settings = SimulatorSettings()
    assert (settings.grpc_host, settings.grpc_port, settings.metrics_port) == ("127.0.0.1", 50060, 9470)
    assert settings.callback_target == "" and settings.chaos_rate == 0
