"""Demo data: the tradable universe with reference prices, and funded customers.

`python -m brokerage.storage.seed --customers 1000`. Idempotent: instruments are upserted, quotes refreshed
to now, and only customers not yet funded are funded (each a transfer from the funding account, with its record).
"""

from __future__ import annotations

import argparse
from decimal import Decimal

import psycopg

from brokerage.listings import DEMO_LISTINGS
from brokerage.settings import load_settings
from brokerage.telemetry import configure_logging, get_logger

log = get_logger(__name__)

DEFAULT_FUNDING = Decimal("100000.00")

_UPSERT_INSTRUMENT = """
INSERT INTO instruments (symbol, name, tick_size) VALUES (%s, %s, %s)
ON CONFLICT (symbol) DO UPDATE SET name = excluded.name
"""
_UPSERT_QUOTE = """
INSERT INTO quotes (symbol, price, quoted_at) VALUES (%s, %s, now())
ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, quoted_at = excluded.quoted_at
"""
# Only customers not yet present are funded, so a re-run never funds twice.
_FUND_CUSTOMERS = "SELECT fund_new_customers(%(customer_ids)s::text[], %(amount)s, %(reason)s, %(funded_by)s)"
DEMO_FUNDING_REASON = "demo opening balance"


def seed(database_url: str, customers: int, amount: Decimal = DEFAULT_FUNDING) -> int:
    """Seeds instruments, quotes and customers "1".."N"; returns how many customers were newly funded."""
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cur:
            cur.executemany(_UPSERT_INSTRUMENT, [(x.symbol, x.name, x.tick_size) for x in DEMO_LISTINGS])
            cur.executemany(_UPSERT_QUOTE, [(x.symbol, x.reference_price) for x in DEMO_LISTINGS])
        return fund_customers(conn, [str(i) for i in range(1, customers + 1)], amount)


def fund_customers(
    conn: psycopg.Connection, customer_ids: list[str], amount: Decimal, funded_by: str = "brokerage.storage.seed"
) -> int:
    """Opens and funds the customers not yet known; returns how many were funded."""
    params = {"amount": amount, "customer_ids": customer_ids, "reason": DEMO_FUNDING_REASON, "funded_by": funded_by}
    row = conn.execute(_FUND_CUSTOMERS, params).fetchone()
    assert row is not None
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1000, help="fund customers 1..N")
    parser.add_argument("--amount", type=Decimal, default=DEFAULT_FUNDING, help="cash per new customer")
    args = parser.parse_args()
    settings = load_settings()
    configure_logging(settings.log_level)
    funded = seed(settings.dsn, args.customers, args.amount)
    log.info("demo data seeded", instruments=len(DEMO_LISTINGS), customers_funded=funded)


if __name__ == "__main__":
    main()
