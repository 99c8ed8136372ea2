"""Reconciliation (DESIGN.md rule 8): `python -m brokerage.reconcile [--day YYYY-MM-DD] [--stuck-after-seconds N]
[--without-exchange]`.

Proves from the tables alone, in one consistent snapshot, that the books hold: balances and positions equal their
accounts' transfers, no cash is negative, every transfer has its cause (a funding its record, a fill its execution,
an error-account booking its break, a repair its audit row, a reservation its order), each order's reservation
equals its transfers and covers its unfilled rest, fills and holdings (average costs included) follow from the
executions; lists orders stuck past a limit and open breaks. Then, against the exchange's drop copy of the day: that
clearing moved exactly the venue's fills, that the venue's final outcomes are ours, and that every customer's orders
reached the venue in sequence order. Prints a report and exits 0 when clean, 1 naming each failed check, 2 when it
cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from brokerage.domain.market_hours import trading_day
from brokerage.domain.orders import OrderStatus
from brokerage.domain.reconciliation import (
    ClearingMovement,
    Finding,
    OurOrder,
    arrivals,
    check_arrival_order,
    check_tombstones,
    compare_clearing,
    compare_outcomes,
    venue_finals,
    venue_movements,
)
from brokerage.exchange_client import ExchangeClient
from brokerage.rpc.tls import client_tls
from brokerage.settings import Settings, load_settings
from brokerage.storage.queries import query
from brokerage.telemetry import configure_logging

SHOWN_PER_CHECK = 10
# What each check proves, and the named query that lists its discrepancies.
TABLE_CHECKS = (
    ("balances equal their accounts", "reconcile_balances_vs_accounts"),
    ("positions equal their accounts", "reconcile_positions_vs_accounts"),
    ("no cash is negative", "reconcile_negative_cash"),
    ("every transfer has its cause", "reconcile_transfers_without_cause"),
    ("every funding record has its transfer", "reconcile_fundings_vs_transfers"),
    ("each order's reservation equals its transfers and covers its rest", "reconcile_reservations_vs_transfers"),
    ("reserved cash equals the open orders' reservations", "reconcile_reserved_cash_vs_open_orders"),
    ("reserved shares equal the open sells' reservations", "reconcile_reserved_shares_vs_open_orders"),
    ("each order's fills equal its executions", "reconcile_filled_vs_executions"),
    ("each fill moved exactly its money and shares", "reconcile_fills_vs_transfers"),
    ("each holding and its average cost follow from its fills", "reconcile_holdings_vs_fills"),
    ("no order is stuck", "reconcile_stuck_orders"),
    ("no break is open", "reconcile_open_breaks"),
)
CLEARING_CHECK = "clearing moved exactly the exchange's fills"
OUTCOMES_CHECK = "the exchange's final outcomes are ours"
ARRIVALS_CHECK = "each customer's orders reached the exchange in sequence order"
EXCHANGE_CHECKS = (CLEARING_CHECK, OUTCOMES_CHECK, ARRIVALS_CHECK)


@dataclass(frozen=True)
class CheckResult:
    name: str
    findings: list[Finding] = field(default_factory=list)
    skipped: str = ""  # why it did not run


@dataclass(frozen=True)
class OurDay:
    """What the exchange checks compare with the drop copy, read in the tables' snapshot."""

    clearing: dict[str, ClearingMovement]
    open_break_exec_ids: set[str]
    break_order_ids: set[str]
    ended_unsent: set[str]  # the orders we ended on the day after the venue said it never received them


async def reconcile(
    database_url: str, exchange: ExchangeClient | None, day: date, stuck_after: timedelta
) -> list[CheckResult]:
    """Every check's findings; the table checks read one snapshot, so a live system cannot fool them."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            results = [
                CheckResult(name, await _findings(conn, name_of_query, {"stuck_after": stuck_after}))
                for name, name_of_query in TABLE_CHECKS
            ]
            ours = await _our_day(conn, day)
        if exchange is None:
            return [*results, *(CheckResult(name, skipped="--without-exchange") for name in EXCHANGE_CHECKS)]
        venue = await exchange.drop_copy(day)
        entries, arrived = venue.executions, arrivals(venue.executions)
        orders = await _our_orders(conn, sorted({e.report.order_id for e in entries}))
    tombstoned = {t.order_id for t in venue.tombstones}
    return [
        *results,
        CheckResult(
            CLEARING_CHECK, compare_clearing(ours.clearing, venue_movements(entries), ours.open_break_exec_ids)
        ),
        CheckResult(OUTCOMES_CHECK, compare_outcomes(orders, venue_finals(entries), ours.break_order_ids)),
        CheckResult(
            ARRIVALS_CHECK,
            check_arrival_order(orders, arrived) + check_tombstones(ours.ended_unsent, tombstoned, arrived),
        ),
    ]


async def _findings(conn: psycopg.AsyncConnection, name: str, params: dict[str, Any]) -> list[Finding]:
    return [Finding(row["subject"], row["detail"]) for row in await _rows(conn, name, params)]


async def _our_day(conn: psycopg.AsyncConnection, day: date) -> OurDay:
    clearing = {
        r["exec_id"]: ClearingMovement(r["exec_id"], r["order_id"] or "", r["symbol"] or "", r["shares"], r["cash"])
        for r in await _rows(conn, "reconcile_day_clearing", {"day": day})
    }
    breaks = await _rows(conn, "reconcile_break_subjects", {})
    ended_unsent = {r["order_id"] for r in await _rows(conn, "reconcile_day_tombstoned", {"day": day})}
    return OurDay(
        clearing,
        {r["exec_id"] for r in breaks if r["open"] and r["exec_id"]},
        {r["order_id"] for r in breaks if r["order_id"]},
        ended_unsent,
    )


async def _our_orders(conn: psycopg.AsyncConnection, order_ids: list[str]) -> dict[str, OurOrder]:
    rows = await _rows(conn, "reconcile_orders_of", {"order_ids": order_ids})
    return {
        r["order_id"]: OurOrder(r["order_id"], r["customer_id"], r["sequence"], OrderStatus(r["status"])) for r in rows
    }


async def _rows(conn: psycopg.AsyncConnection, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        return await cur.fetchall()


def render(results: list[CheckResult], day: date) -> str:
    """The report an operator reads: one line per check, the first discrepancies of each, and the verdict."""
    lines = [f"Reconciliation of trading day {day.isoformat()}"]
    for result in results:
        if result.skipped:
            lines.append(f"  skip  {result.name} ({result.skipped})")
            continue
        lines.append(f"  {'ok  ' if not result.findings else 'FAIL'}  {result.name}")
        lines += [f"          {f.subject}: {f.detail}" for f in result.findings[:SHOWN_PER_CHECK]]
        if len(result.findings) > SHOWN_PER_CHECK:
            lines.append(f"          ... and {len(result.findings) - SHOWN_PER_CHECK} more")
    failed = [r for r in results if r.findings]
    if not failed:
        lines.append("Clean.")
    else:
        found = sum(len(r.findings) for r in failed)
        named = "; ".join(f"{r.name} ({len(r.findings)})" for r in failed)
        lines.append(f"{found} discrepanc{'y' if found == 1 else 'ies'}, failing: {named}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--day", type=date.fromisoformat, help="YYYY-MM-DD of the drop copy (default: today in NY)")
    parser.add_argument("--stuck-after-seconds", type=float, default=300, help="an open order unchanged this long")
    parser.add_argument("--without-exchange", action="store_true", help="the table checks only")
    args = parser.parse_args()
    settings = load_settings()
    configure_logging(settings.log_level)
    day = args.day or trading_day(datetime.now(UTC))
    stuck_after = timedelta(seconds=args.stuck_after_seconds)
    try:
        results = asyncio.run(_run(settings, day, stuck_after, with_exchange=not args.without_exchange))
    except Exception as error:
        print(f"Reconciliation could not run: {error!r}", file=sys.stderr)
        sys.exit(2)
    print(render(results, day))
    sys.exit(1 if any(r.findings for r in results) else 0)


async def _run(settings: Settings, day: date, stuck_after: timedelta, *, with_exchange: bool) -> list[CheckResult]:
    if not with_exchange:
        return await reconcile(settings.dsn, None, day, stuck_after)
    exchange = ExchangeClient.connect(
        settings.exchange_target,
        settings.exchange_deadline_seconds,
        client_tls(settings, settings.exchange_tls_ca_file),
    )
    try:
        return await reconcile(settings.dsn, exchange, day, stuck_after)
    finally:
        await exchange.close()


if __name__ == "__main__":
    main()
