"""The outbox as the relay sees it: claim a batch of unpublished messages, mark them published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from brokerage.storage.queries import query


@dataclass(frozen=True)
class OutboxMessage:
    message_id: int
    dedupe_id: str
    subject: str
    payload: bytes
    message_type: str


class OutboxBatch:
    def __init__(self, conn: AsyncConnection, messages: list[OutboxMessage]) -> None:
        self._conn = conn
        self.messages = messages

    async def mark_published(self) -> None:
        ids = [m.message_id for m in self.messages]
        await self._conn.execute(query("mark_outbox_published"), {"message_ids": ids})


class Outbox:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        """Locks up to limit unpublished messages for the block; they commit as published only if the block
        marks them and ends without an error, else they return to the outbox for the next claim."""
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(query("claim_outbox_batch"), {"limit": limit})
            rows = await cursor.fetchall()
            yield OutboxBatch(conn, [OutboxMessage(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows])

    async def purge_published(self, retention: timedelta) -> int:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query("purge_published_outbox"), {"retention": retention})
            return cursor.rowcount
