"""How the venue will fill an order: how many fills, of how many shares, after what delays.

The plan comes from a generator seeded by (seed, order_id), so the same order on the same seed is always filled
the same way; only the prices depend on when the fills happen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class FillRules:
    seed: int
    fill_delay: timedelta  # the typical wait before each fill
    partial_fill_probability: float
    max_fills: int


@dataclass(frozen=True)
class PlannedFill:
    quantity: int
    delay: timedelta  # after the previous fill (or the acknowledgement)


def plan_fills(order_id: str, quantity: int, rules: FillRules) -> tuple[PlannedFill, ...]:
    """Positive quantities summing to the order's quantity: one fill, or 2..max_fills partial fills."""
    rng = random.Random(f"{rules.seed}/{order_id}")
    parts = _split(quantity, rng, rules)
    # Delays vary around the typical one so that orders interleave as they would at a real venue.
    return tuple(PlannedFill(part, rules.fill_delay * rng.uniform(0.5, 1.5)) for part in parts)


def _split(quantity: int, rng: random.Random, rules: FillRules) -> list[int]:
    most = min(rules.max_fills, quantity)
    if most < 2 or rng.random() >= rules.partial_fill_probability:
        return [quantity]
    count = rng.randint(2, most)
    cuts = sorted(rng.sample(range(1, quantity), count - 1))
    return [high - low for low, high in zip([0, *cuts], [*cuts, quantity], strict=True)]
