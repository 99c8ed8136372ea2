"""The demo universe: the stocks the demo trades, with realistic reference prices.

Our seed stores them as instruments and quotes; the exchange simulator lists the same stocks by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

TICK = Decimal("0.01")


@dataclass(frozen=True)
class Listing:
    symbol: str
    name: str
    reference_price: Decimal  # late 2026 levels are unknowable; these are realistic magnitudes
    tick_size: Decimal = TICK


DEMO_LISTINGS: tuple[Listing, ...] = (
    Listing("AAPL", "Apple Inc.", Decimal("227.50")),
    Listing("MSFT", "Microsoft Corporation", Decimal("418.20")),
    Listing("GOOGL", "Alphabet Inc. Class A", Decimal("172.35")),
    Listing("AMZN", "Amazon.com, Inc.", Decimal("186.90")),
    Listing("TSLA", "Tesla, Inc.", Decimal("248.75")),
    Listing("NVDA", "NVIDIA Corporation", Decimal("131.40")),
    Listing("META", "Meta Platforms, Inc. Class A", Decimal("562.10")),
    Listing("JPM", "JPMorgan Chase & Co.", Decimal("221.05")),
)
