"""Reference prices from the exchange: its quotes, pulled on a short interval and stored as ours, where the order
desk prices every order from them. Any number of replicas may run it; an older quote never replaces a newer."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from brokerage.background import stop_requested
from brokerage.exchange_client import ExchangeClient
from brokerage.storage.reference import record_quotes
from brokerage.telemetry import get_logger

log = get_logger(__name__)

QUOTE_REFRESH_FAILURES = Counter("execution_quote_refresh_failures_total", "Quote refreshes that failed.")


class QuoteFeed:
    def __init__(self, exchange: ExchangeClient, pool: AsyncConnectionPool, interval: float) -> None:
        self._exchange = exchange
        self._pool = pool
        self._interval = interval

    async def run(self) -> None:
        """Refreshes until cancelled. While it fails, quotes age, and orders are rejected as priced on stale ones."""
        while not stop_requested():
            try:
                await self.refresh()
            except Exception as error:
                QUOTE_REFRESH_FAILURES.inc()
                log.warning("quote refresh failed", error=repr(error))
            await asyncio.sleep(self._interval)

    async def refresh(self) -> None:
        await record_quotes(self._pool, await self._exchange.quotes())
