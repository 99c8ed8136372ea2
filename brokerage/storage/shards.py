"""Shards as the record knows them: persisted pauses, and each shard's oldest waiting order and order in flight."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from brokerage.storage.queries import fetch_all


@dataclass(frozen=True)
class ShardRecord:
    shard: int
    paused: bool
    pause_reason: str
    oldest_placed_at: datetime | None  # the oldest order still PLACED
    order_in_flight: str | None  # claimed by a worker, not yet acknowledged by the exchange


class ShardStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def records(self, shards: tuple[int, ...]) -> list[ShardRecord]:
        rows = await fetch_all(self._pool, "shard_states", {"shards": list(shards)})
        return [ShardRecord(**row) for row in rows]

    async def paused(self) -> frozenset[int]:
        return frozenset(row["shard"] for row in await fetch_all(self._pool, "paused_shards"))

    async def pause(self, shard: int, reason: str, paused_by: str) -> None:
        await fetch_all(self._pool, "pause_shard", {"shard": shard, "reason": reason, "paused_by": paused_by})

    async def resume(self, shard: int) -> None:
        await fetch_all(self._pool, "resume_shard", {"shard": shard})
