"""The shard count, recorded once when the system is first set up; customers never move between shards."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from brokerage.messaging.streams import ShardCountMismatch
from brokerage.storage.queries import query


async def check_shard_count(pool: AsyncConnectionPool, configured: int) -> None:
    """Records the configured count if none is recorded yet; raises ShardCountMismatch if another is."""
    async with pool.connection() as conn:
        await conn.execute(query("record_shard_count"), {"shard_count": configured})
        row = await (await conn.execute(query("recorded_shard_count"))).fetchone()
    assert row is not None  # recorded by this process or an earlier one
    if row[0] != configured:
        raise ShardCountMismatch("the database", row[0], configured)
