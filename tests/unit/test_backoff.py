"""The retry delays every loop uses: growing, bounded, and spread so that what failed together does not retry
together."""

from __future__ import annotations

import random

from brokerage.background import Backoff


def test_each_attempt_waits_about_twice_as_long_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0)
    rng = random.Random(1)

    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    for attempt, ceiling in enumerate(ceilings, start=1):
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling


def test_delays_are_spread_not_identical() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0)
    assert len({round(backoff.delay(3, random.Random(seed)), 6) for seed in range(20)}) > 10


def test_a_huge_attempt_count_stays_at_the_maximum() -> None:
    assert Backoff(initial=0.05, maximum=5.0).delay(10_000, random.Random(2)) <= 5.0
