"""The holding a sequence of fills leaves, as settlement books it and reconciliation recomputes it (the SQL aggregate
holding_from_fills, folding holding_after_fill), for any sequence of buys and sells a customer could make: the
quantity is what was bought less what was sold, the cost basis never goes negative nor above what was paid, the
average cost stays between the lowest and highest price paid since the holding last went to zero, and selling
everything leaves nothing."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

TICK = Decimal("0.0001")
PRICES = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("5000"), places=2)
Fill = tuple[str, int, Decimal]


@st.composite
def fills(draw: st.DrawFn) -> list[Fill]:
    """Buys and sells in any order, never selling more than is held (a sell's shares are reserved first)."""
    held, made = 0, []
    for _ in range(draw(st.integers(1, 25))):
        if held and draw(st.booleans()):
            quantity = draw(st.integers(1, held))
            made.append(("SELL", quantity, draw(PRICES)))
            held -= quantity
        else:
            quantity = draw(st.integers(1, 10_000))
            made.append(("BUY", quantity, draw(PRICES)))
            held += quantity
    return made


def folded(conn: psycopg.Connection, made: list[Fill]) -> tuple[int, Decimal]:
    row = conn.execute(
        """SELECT (h).quantity, (h).cost_basis FROM (
             SELECT holding_from_fills(side, quantity, price ORDER BY n) AS h
               FROM unnest(%s::text[], %s::bigint[], %s::numeric[])
                    WITH ORDINALITY AS f(side, quantity, price, n)) x""",
        ([s for s, _, _ in made], [q for _, q, _ in made], [p for _, _, p in made]),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fills())
def test_a_holding_folded_from_any_fills_keeps_its_quantity_and_a_cost_within_what_was_paid(
    db: psycopg.Connection, made: list[Fill]
) -> None:
    """(db: one database for every example; the functions are immutable and touch no table.)"""
    quantity, cost_basis = folded(db, made)

    held = sum(q if side == "BUY" else -q for side, q, _ in made)
    since_flat = made[max((i + 1 for i in range(len(made)) if _flat_after(made, i)), default=0) :]
    bought = [(q, p) for side, q, p in since_flat if side == "BUY"]
    assert quantity == held
    if held == 0:
        assert cost_basis == 0
        return
    assert 0 <= cost_basis <= sum(q * p for q, p in bought)
    average = cost_basis / quantity
    slack = TICK * len(since_flat)  # each sell rounds its relief of the cost basis to the tick
    assert min(p for _, p in bought) - slack <= average <= max(p for _, p in bought) + slack


def _flat_after(made: list[Fill], index: int) -> bool:
    return sum(q if side == "BUY" else -q for side, q, _ in made[: index + 1]) == 0
