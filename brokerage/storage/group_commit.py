"""Group commit of named-query calls: calls that arrive while a transaction is in the database share the next one,
sent through one pipeline (one round trip, one commit and one WAL flush for them all), taken customer by customer
so that concurrent groups lock customers in one order and cannot deadlock. For idempotent per-customer
transactions that many tasks of a process make at once, such as the workers' claims and records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from brokerage.storage.batching import MicroBatcher, isolating_refusals
from brokerage.storage.queries import query, run_idempotent

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Call:
    name: str  # a named query
    params: dict[str, Any]
    customer_id: str  # whose rows it locks: the group's lock order


class GroupCommit:
    def __init__(self, pool: AsyncConnectionPool, *, max_batch: int, flushers: int) -> None:
        self._pool = pool
        self._batcher: MicroBatcher[Call, Rows] = MicroBatcher(
            isolating_refusals(self._run), max_batch=max_batch, max_in_flight=flushers
        )

    async def fetch(self, call: Call) -> Rows:
        """The call's rows, once the transaction it shared has committed. A database that cannot be reached is
        Unavailable; a refusal of this call alone raises its own error (the others of its group are run again)."""
        return await self._batcher.submit(call)

    async def _run(self, calls: Sequence[Call]) -> list[Rows | BaseException]:
        in_lock_order = sorted(range(len(calls)), key=lambda i: calls[i].customer_id)  # stable: FIFO per customer

        async def transaction() -> list[Rows | BaseException]:
            results: list[Rows | BaseException] = [[] for _ in calls]
            async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
                cursors = []
                for i in in_lock_order:
                    cursor = conn.cursor(row_factory=dict_row)
                    await cursor.execute(query(calls[i].name), calls[i].params)
                    cursors.append((i, cursor))
                for i, cursor in cursors:
                    results[i] = await cursor.fetchall()
            return results

        return await run_idempotent(transaction)
