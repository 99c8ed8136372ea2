from decimal import Decimal

import pytest

from brokerage.domain.money import (
    MoneyFormatError,
    format_decimal,
    parse_decimal,
    round_down_to_tick,
    round_up_to_tick,
)


@pytest.mark.parametrize(
    ("price", "tick", "up", "down"),
    [
        ("238.875", "0.01", "238.88", "238.87"),
        ("238.88", "0.01", "238.88", "238.88"),
        ("0.12345", "0.0001", "0.1235", "0.1234"),
        ("10.01", "0.05", "10.05", "10.00"),
    ],
)
def test_rounds_to_the_tick_in_the_safe_direction(price: str, tick: str, up: str, down: str) -> None:
    assert round_up_to_tick(Decimal(price), Decimal(tick)) == Decimal(up)
    assert round_down_to_tick(Decimal(price), Decimal(tick)) == Decimal(down)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("100000.0000", "100000.00"),
        ("187.4200", "187.42"),
        ("0.1234", "0.1234"),
        ("5", "5.00"),
        ("1E+3", "1000.00"),
    ],
)
def test_formats_full_precision_without_noise(value: str, text: str) -> None:
    assert format_decimal(Decimal(value)) == text


def test_formats_none_as_empty() -> None:
    assert format_decimal(None) == ""


@pytest.mark.parametrize("text", ["", "abc", "NaN", "Infinity", "1.2.3"])
def test_refuses_what_is_not_a_finite_decimal(text: str) -> None:
    with pytest.raises(MoneyFormatError):
        parse_decimal(text)
