"""The named queries of queries.sql and how every store runs them: SQL stays in SQL files, Python refers to it
by name; whole transactions are retried where that is safe, and driver errors become ours at this boundary."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.pq import ExecStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from brokerage.domain.errors import Unavailable

T = TypeVar("T")
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_ATTEMPTS = 3
# The server going away; a client-side failure (a connection lost or refused) has no SQLSTATE at all.
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})  # admin_shutdown, crash_shutdown, cannot_connect_now
# What says the statement itself is refused, and always would be: a data exception (class 22), an integrity
# constraint (23), a RAISE of our own functions (P0001), an object not in the state the statement needs (55: a paused
# shard). Anything else (a connection, a read-only standby, serialization, resources, a shutdown) may pass next time.
_REFUSAL_CLASSES = ("22", "23", "55")
_RAISE_EXCEPTION = "P0001"
# What says the database cannot answer now: resources (53), an operator's or a timeout's intervention (57), a
# serialization failure or deadlock (40), a standby's read-only transaction (25006).
_TRANSIENT_CLASSES = ("40", "53", "57")
_READ_ONLY_TRANSACTION = "25006"


@cache
def _load() -> dict[str, str]:
    text = (Path(__file__).parent / "queries.sql").read_text()
    parts = _NAME.split(text)[1:]
    return {name: _without_trailing_comments(body) for name, body in zip(parts[::2], parts[1::2], strict=True)}


def _without_trailing_comments(body: str) -> str:
    """Comments after a query's last statement introduce what follows (a section, the next query): not its SQL."""
    lines = body.strip().splitlines()
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("--")):
        lines.pop()
    return "\n".join(lines)


def query(name: str) -> str:
    return _load()[name]


async def fetch_all(pool: AsyncConnectionPool, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Runs a named query as its own transaction and returns its rows as dicts.

    Only for idempotent work: it runs again on serialization failure, deadlock or a lost connection. A database
    that cannot be reached is Unavailable.
    """

    async def run() -> list[dict[str, Any]]:
        async with pool.connection() as conn, conn.cursor(row_factory=_dict_rows) as cur:
            await cur.execute(query(name), params)
            return await cur.fetchall() if _has_rows(cur) else []

    return await run_idempotent(run)


def _dict_rows(cursor: psycopg.AsyncCursor[Any]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """Rows as dicts by column name. psycopg's dict_row reads the names from `description`, which builds a Column
    (type lookups included) for every column of every result: some 40 µs of CPU a statement on a row of orders."""
    result = cursor.pgresult
    names = [(result.fname(i) or b"").decode() for i in range(result.nfields)] if result is not None else []
    return lambda values: dict(zip(names, values, strict=True))


def _has_rows(cursor: psycopg.AsyncCursor[Any]) -> bool:
    """Whether the statement returned rows (a SELECT, a RETURNING), asked of the result, not of `description`."""
    return cursor.pgresult is not None and cursor.pgresult.status == ExecStatus.TUPLES_OK


async def run_idempotent(transaction: Callable[[], Awaitable[T]]) -> T:
    """Runs an idempotent transaction with_retries; a database that cannot be reached is Unavailable."""
    try:
        return await with_retries(transaction)
    except psycopg.Error as error:
        if (outage := as_unavailable(error)) is not None:
            raise outage from error
        raise


def as_unavailable(error: psycopg.Error) -> Unavailable | None:
    """Unavailable when the database could not be asked, timed out, ran out of something, or is a standby that cannot
    write (a failover under way): the caller may retry. None for an answer the database gave (a paused shard, a
    refused value), which is the caller's to interpret."""
    transient = error.sqlstate is not None and (
        error.sqlstate[:2] in _TRANSIENT_CLASSES or error.sqlstate == _READ_ONLY_TRANSACTION
    )
    if (isinstance(error, psycopg.OperationalError) and unreachable(error)) or transient:
        return Unavailable(f"database unavailable: {error.__class__.__name__}")
    return None


async def with_retries(operation: Callable[[], Awaitable[T]]) -> T:
    """Runs a whole transaction again on serialization failure, deadlock or a lost connection.

    A connection lost during COMMIT leaves the outcome unknown; the operations passed here are idempotent,
    so running them again looks the result up rather than doing the work twice.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await operation()
        except psycopg.OperationalError as error:
            if attempt == _ATTEMPTS or not _worth_retrying(error):
                raise
    raise AssertionError("unreachable")


def refused(error: BaseException) -> bool:
    """Whether the database refused the statement for what it was asked (see _REFUSAL_CLASSES): the same call
    would be refused again, so it is the call's own outcome, never a reason to retry or to fail its neighbours."""
    if not isinstance(error, psycopg.Error):
        return False
    if error.sqlstate is None:
        return isinstance(error, psycopg.DataError)  # refused before it was sent: a NUL in a text, say
    return error.sqlstate[:2] in _REFUSAL_CLASSES or error.sqlstate == _RAISE_EXCEPTION


def unreachable(error: psycopg.OperationalError) -> bool:
    """Whether the database could not be asked at all (a connection lost or refused, the server going away), as
    opposed to having answered with an error."""
    return error.sqlstate is None or error.sqlstate.startswith("08") or error.sqlstate in _SERVER_GONE


def _worth_retrying(error: psycopg.OperationalError) -> bool:
    if isinstance(error, (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)):
        return True
    # No free connection means overload (and a statement timeout is not unreachable): again would only add to it.
    return unreachable(error) and not isinstance(error, PoolTimeout)
