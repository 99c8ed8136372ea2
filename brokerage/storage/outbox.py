"""An outbox as its relay sees it: batches of messages, gone from it once JetStream has them. The orders' outbox
(take_outbox_batch) and the post-trade feed's (take_feed_batch) are read alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from brokerage.storage.queries import query


@dataclass(frozen=True)
class OutboxMessage:
    message_id: int
    dedupe_id: str
    subject: str
    payload: bytes
    message_type: str


class Outbox:
    def __init__(self, pool: AsyncConnectionPool, take: str = "take_outbox_batch") -> None:
        self._pool = pool
        self._take = take

    @asynccontextmanager
    async def publishing(self, limit: int) -> AsyncIterator[list[OutboxMessage]]:
        """Takes up to limit messages, oldest first, for the block to publish. They leave the outbox only if the
        block ends without an error, else they return to it for the next take."""
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(query(self._take), {"limit": limit})
            rows = sorted(await cursor.fetchall(), key=lambda row: row[0])  # RETURNING keeps no order
            yield [OutboxMessage(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]
