"""Reconciliation (DESIGN.md rule 8): `python -m brokerage.reconcile [--day YYYY-MM-DD] [--stuck-after-seconds N]
[--without-exchange]`.

Proves from the tables alone, in one consistent snapshot, that balances equal the ledger (funding included), no
cash is negative, reservations equal the open orders', positions equal the ledger and the fills, every order's
filled quantity equals its executions and every fill moved exactly its money; lists orders stuck past a limit and
open breaks; then compares our fills of the day with the exchange's drop copy. Prints a report and exits 0 when
clean, 1 on any discrepancy, 2 when it cannot run.
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
from brokerage.domain.orders import Side
from brokerage.domain.reconciliation import Fill, Finding, compare_fills, drop_copy_fills
from brokerage.exchange_client import ExchangeClient
from brokerage.settings import Settings, load_settings
from brokerage.storage.queries import query
from brokerage.telemetry import configure_logging

SHOWN_PER_CHECK = 10
# What each check proves, and the named query that lists its discrepancies.
TABLE_CHECKS = (
    ("balances equal the ledger", "reconcile_balances_vs_ledger"),
    ("no cash is negative", "reconcile_negative_cash"),
    ("reserved cash equals the open orders' reservations", "reconcile_reserved_cash_vs_open_orders"),
    ("reserved shares equal the open sells' reservations", "reconcile_reserved_shares_vs_open_orders"),
    ("positions equal the ledger", "reconcile_positions_vs_ledger"),
    ("positions equal the fills", "reconcile_positions_vs_fills"),
    ("each order's filled quantity equals its executions", "reconcile_filled_vs_executions"),
    ("each fill moved exactly its money and shares", "reconcile_fills_vs_ledger"),
    ("no order is stuck", "reconcile_stuck_orders"),
    ("no break is open", "reconcile_open_breaks"),
)
DROP_COPY_CHECK = "our fills equal the exchange's drop copy"


@dataclass(frozen=True)
class CheckResult:
    name: str
    findings: list[Finding] = field(default_factory=list)
    skipped: str = ""  # why it did not run


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
            ours = await _our_fills(conn, day)
    if exchange is None:
        return [*results, CheckResult(DROP_COPY_CHECK, skipped="--without-exchange")]
    theirs = drop_copy_fills(await exchange.drop_copy(day))
    return [*results, CheckResult(DROP_COPY_CHECK, compare_fills(ours, theirs))]


async def _findings(conn: psycopg.AsyncConnection, name: str, params: dict[str, Any]) -> list[Finding]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        return [Finding(row["subject"], row["detail"]) for row in await cur.fetchall()]


async def _our_fills(conn: psycopg.AsyncConnection, day: date) -> dict[str, Fill]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("reconcile_day_fills"), {"day": day})
        rows = await cur.fetchall()
    return {r["exec_id"]: Fill(r["exec_id"], r["order_id"], Side(r["side"]), r["quantity"], r["price"]) for r in rows}


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
    found = sum(len(r.findings) for r in results)
    lines.append("Clean." if not found else f"{found} discrepanc{'y' if found == 1 else 'ies'}.")
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
    exchange = ExchangeClient.connect(settings.exchange_target, settings.exchange_deadline_seconds)
    try:
        return await reconcile(settings.dsn, exchange, day, stuck_after)
    finally:
        await exchange.close()


if __name__ == "__main__":
    main()
