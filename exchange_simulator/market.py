"""The venue's prices: a seeded random walk per listed symbol, rounded to the tick, and trading halts.

Each symbol walks with its own generator seeded by (seed, symbol), so the same seed gives the same price at the
same step index whatever the other symbols do. The walk's draws are floats (randomness only); prices are Decimal.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.listings import Listing

FACTOR_PRECISION = Decimal("0.000001")


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: Decimal
    quoted_at: datetime
    halted: bool


class RandomWalk:
    """One symbol's price path: each step multiplies the price by 1 + N(0, volatility), then rounds to the tick."""

    def __init__(self, listing: Listing, seed: int, volatility: Decimal) -> None:
        self.tick = listing.tick_size
        self.price = self._on_tick(listing.reference_price)
        self.steps = 0
        self._volatility = float(volatility)
        self._rng = random.Random(f"{seed}/{listing.symbol}")

    def step(self) -> Decimal:
        move = Decimal(self._rng.gauss(0.0, self._volatility)).quantize(FACTOR_PRECISION)
        self.move_to(self.price * (1 + move))
        self.steps += 1
        return self.price

    def move_to(self, price: Decimal) -> None:
        self.price = self._on_tick(price)

    def _on_tick(self, price: Decimal) -> Decimal:
        ticks = (price / self.tick).to_integral_value(rounding=ROUND_HALF_EVEN)
        return max(ticks, Decimal(1)) * self.tick  # a price never falls below one tick


class Market:
    """Every listed symbol's current price, when it was quoted, and whether it is halted."""

    def __init__(
        self,
        listings: Sequence[Listing],
        *,
        seed: int,
        volatility: Decimal,
        opened_at: datetime,
        halted: Iterable[str] = (),
    ) -> None:
        self._walks = {listing.symbol: RandomWalk(listing, seed, volatility) for listing in listings}
        self._halted = set(halted) & self._walks.keys()
        self._quoted_at = opened_at

    @property
    def symbols(self) -> list[str]:
        return list(self._walks)

    def is_listed(self, symbol: str) -> bool:
        return symbol in self._walks

    def is_halted(self, symbol: str) -> bool:
        return symbol in self._halted

    def price(self, symbol: str) -> Decimal:
        return self._walks[symbol].price

    def step(self, now: datetime) -> None:
        """Moves every symbol one step; halted symbols keep their price (nothing trades) but keep their path."""
        for symbol, walk in self._walks.items():
            before = walk.price
            walk.step()
            if symbol in self._halted:
                walk.move_to(before)
        self._quoted_at = now

    def halt(self, symbol: str) -> None:
        if symbol not in self._walks:
            raise KeyError(symbol)
        self._halted.add(symbol)

    def resume(self, symbol: str) -> None:
        self._halted.discard(symbol)

    def reprice(self, symbol: str, price: Decimal) -> None:
        """An operator's lever (tests, demos): the walk continues from this price."""
        self._walks[symbol].move_to(price)

    def quotes(self, symbols: Sequence[str] = ()) -> list[Quote]:
        """Quotes for the symbols asked, or for every listed symbol; an unlisted symbol is a malformed request."""
        unknown = [s for s in symbols if s not in self._walks]
        if unknown:
            raise InvalidRequest([FieldViolation("symbols", f"not listed: {s!r}") for s in unknown])
        return [self._quote(s) for s in symbols or self._walks]

    def _quote(self, symbol: str) -> Quote:
        return Quote(symbol, self._walks[symbol].price, self._quoted_at, symbol in self._halted)
