"""The PostgreSQL connection pool every service opens: autocommit, a statement timeout, checked at start."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from brokerage.settings import Settings
from brokerage.storage.queries import query


async def open_pool(settings: Settings, *, timeout: float = 30.0) -> AsyncConnectionPool:
    """Opens the pool and waits until its minimum connections are up, or raises PoolTimeout."""
    pool = AsyncConnectionPool(
        settings.dsn,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        # Each server-side function is its own transaction; multi-statement work opens one explicitly. JIT compiles
        # for milliseconds what these short statements run in microseconds, so it is off.
        kwargs={
            "autocommit": True,
            # synchronous_commit=on, whatever the cluster, database or role says: a commit returns once the
            # synchronous standby has flushed it, so an OK answer never rests on a commit a failover can lose.
            "options": f"-c statement_timeout={settings.statement_timeout_ms} -c jit=off -c synchronous_commit=on",
            # The statement timeout needs a server to enforce it. A primary that vanished (a failover) answers
            # nothing, and without these a caller would wait for the kernel's TCP timeout, some 15 minutes.
            "connect_timeout": 5,
            "tcp_user_timeout": 2 * settings.statement_timeout_ms,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        },
        # A caller waits for a free connection no longer than a statement may run.
        timeout=settings.statement_timeout_ms / 1000,
        open=False,
        name="brokerage",
    )
    await pool.open(wait=True, timeout=timeout)
    return pool


async def ping(pool: AsyncConnectionPool) -> None:
    """Raises unless the database answers: the readiness check of every service that needs it."""
    async with pool.connection() as conn:
        await conn.execute(query("ping"))
