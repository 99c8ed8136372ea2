"""Money and prices: Decimal end to end, rounded only where a rule says so."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

CENT = Decimal("0.01")


class MoneyFormatError(ValueError):
    """A decimal string that is not a finite number."""


def parse_decimal(text: str) -> Decimal:
    """Parses a decimal string from the wire; rejects NaN, infinities and garbage."""
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise MoneyFormatError(f"not a decimal number: {text!r}") from error
    if not value.is_finite():
        raise MoneyFormatError(f"not a finite number: {text!r}")
    return value


def round_up_to_tick(price: Decimal, tick: Decimal) -> Decimal:
    """The smallest multiple of tick at or above price (a buy's protection price)."""
    return (price / tick).to_integral_value(rounding=ROUND_CEILING) * tick


def round_down_to_tick(price: Decimal, tick: Decimal) -> Decimal:
    """The largest multiple of tick at or below price (a sell's protection price)."""
    return (price / tick).to_integral_value(rounding=ROUND_FLOOR) * tick


def format_decimal(value: Decimal | None) -> str:
    """Full precision, but no noise: at least two decimals, trailing zeros beyond them dropped."""
    if value is None:
        return ""
    normalized = value.normalize()
    if normalized.as_tuple().exponent > -2:  # type: ignore[operator]
        normalized = normalized.quantize(CENT)
    return f"{normalized:f}"
