"""The PostgreSQL connection pool every service opens: autocommit, a statement timeout, checked at start."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from brokerage.settings import Settings


async def open_pool(settings: Settings, *, timeout: float = 30.0) -> AsyncConnectionPool:
    """Opens the pool and waits until its minimum connections are up, or raises PoolTimeout."""
    pool = AsyncConnectionPool(
        settings.dsn,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        # Each server-side function is its own transaction; multi-statement work opens one explicitly.
        kwargs={"autocommit": True, "options": f"-c statement_timeout={settings.statement_timeout_ms}"},
        # A caller waits for a free connection no longer than a statement may run.
        timeout=settings.statement_timeout_ms / 1000,
        open=False,
        name="brokerage",
    )
    await pool.open(wait=True, timeout=timeout)
    return pool
