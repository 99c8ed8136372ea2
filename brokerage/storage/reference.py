"""The tradable universe and reference prices: stored as the exchange quotes them, and held in memory by the
order desk, refreshed on a short interval.

Placement reads them on every order; a process-wide snapshot saves a round trip per order, at the cost
of seeing a halt or a new quote up to one refresh interval late.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from brokerage.background import stop_requested
from brokerage.domain.placement import Instrument, Quote
from brokerage.storage.queries import fetch_all, query
from brokerage.telemetry import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class ReferenceSnapshot:
    instruments: dict[str, Instrument] = field(default_factory=dict)
    quotes: dict[str, Quote] = field(default_factory=dict)

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(self.instruments)


async def record_quotes(pool: AsyncConnectionPool, quotes: list[Quote]) -> None:
    """Stores reference prices from the exchange: a newer price replaces an older one, for symbols we list."""
    await fetch_all(
        pool,
        "record_quotes",
        {
            "symbol": [q.symbol for q in quotes],
            "price": [q.price for q in quotes],
            "quoted_at": [q.quoted_at for q in quotes],
        },
    )


class ReferenceData:
    def __init__(self, pool: AsyncConnectionPool, refresh_seconds: float) -> None:
        self._pool = pool
        self._refresh_seconds = refresh_seconds
        self.snapshot = ReferenceSnapshot()

    async def refresh(self) -> None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query("reference_data"))
            rows = await cur.fetchall()
        self.snapshot = ReferenceSnapshot(
            instruments={r["symbol"]: Instrument(r["symbol"], r["tick_size"]) for r in rows},
            quotes={
                r["symbol"]: Quote(r["symbol"], r["price"], r["quoted_at"]) for r in rows if r["price"] is not None
            },
        )

    async def keep_fresh(self) -> None:
        """Refreshes until cancelled; a failed refresh keeps the last snapshot (stale quotes then reject)."""
        while not stop_requested():
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except Exception as error:
                log.warning("reference data refresh failed", error=str(error))
