"""Group commit of one named query: calls that arrive while a statement is in the database share the next one
(one round trip, one commit and one WAL flush for them all). For idempotent per-customer transactions that many
tasks of a process make at once, such as the workers' claims and records.

The query takes each of a call's parameters as an array, an element per call, in the order given here: customer
by customer, so that concurrent groups lock customers in one order and cannot deadlock. Its server-side function
tags every row with the 1-based `ordinal` of its call in the arrays. One statement, rather than a pipelined
transaction of one statement per call, because psycopg's client side is the cost here: about a third for a lone
call, a tenth per call in a group of 16 (measured on this machine).

Besides the calls' parameters, the query gets `customer_id` (each call's, as an array) and `wait`. A group does not
wait on a customer another transaction holds (a settlement of the same order, say): without `wait`, the query marks
such a call's row `busy` and leaves it out, so the others commit at once. The busy calls then go again through a
second batcher whose statements wait for the lock. Else one such customer holds up the whole group, and every call
queued behind it (migration 0010 measures how often). A query without a `busy` column never has a busy call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.storage.batching import MicroBatcher, again_if_busy, isolating_refusals
from brokerage.storage.queries import fetch_all

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Call:
    customer_id: str  # whose rows it locks: the group's lock order
    params: dict[str, Any]  # by name, each to be an element of the query's array of that name


class GroupCommit:
    def __init__(self, pool: AsyncConnectionPool, query_name: str, *, max_batch: int, flushers: int) -> None:
        self._pool = pool
        self._query_name = query_name
        self._first, self._waiting = (
            MicroBatcher[Call, Rows | None](
                isolating_refusals(partial(self._run, wait=wait)), max_batch=max_batch, max_in_flight=flushers
            )
            for wait in (False, True)
        )

    async def fetch(self, call: Call) -> Rows:
        """The call's rows, once the statement it shared has committed. A database that cannot be reached is
        Unavailable; a refusal of this call alone raises its own error (the others of its group are run again)."""
        [rows] = await again_if_busy(self._query_name, [call], [self._first.enqueue(call)], self._waiting)
        return rows

    async def _run(self, calls: Sequence[Call], *, wait: bool) -> list[Rows | BaseException | None]:
        """Each call's rows, or None for a call whose customer was busy (and which did not run)."""
        in_lock_order = sorted(range(len(calls)), key=lambda i: calls[i].customer_id)  # stable: FIFO per customer
        arrays: dict[str, Any] = {name: [calls[i].params[name] for i in in_lock_order] for name in calls[0].params}
        arrays.update(customer_id=[calls[i].customer_id for i in in_lock_order], wait=wait)
        per_call: list[Rows | None] = [[] for _ in calls]
        for row in await fetch_all(self._pool, self._query_name, arrays):
            i = in_lock_order[row.pop("ordinal") - 1]
            if row.pop("busy", False):
                per_call[i] = None
            elif (rows := per_call[i]) is not None:
                rows.append(row)
        return [*per_call]
