"""The named queries: what the code asks for exists, and a query's text is only its SQL."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from brokerage.storage.queries import _load, _without_trailing_comments, _worth_retrying, unreachable

ROOT = Path(__file__).resolve().parents[2]
# query("name"), fetch_all(pool, "name", ...), a store's self._fetch("name") or self._one("name"), and the
# reconciliation's table of checks
USED = re.compile(r'(?:query\(|fetch_all\([^,]+,\s*|self\._(?:fetch|one)\(\s*)"(\w+)"|"(reconcile_\w+)"')


def test_every_query_the_code_names_exists() -> None:
    sources = [
        p
        for d in ("brokerage", "order_service", "execution_service", "callback_service")
        for p in (ROOT / d).rglob("*.py")
    ]
    used = {name for path in sources for match in USED.findall(path.read_text()) for name in match if name}
    assert used - set(_load()) == set() and len(used) > 20


def test_comments_that_introduce_the_next_query_are_not_part_of_this_one() -> None:
    body = "SELECT 1;\n\n-- Reconciliation: a 100% clean section\n-- about what follows\n"
    assert _without_trailing_comments(body) == "SELECT 1;"
    assert not any(sql.rstrip().splitlines()[-1].lstrip().startswith("--") for sql in _load().values())


@pytest.mark.parametrize(
    ("error", "retried", "unreachable_"),
    [
        (psycopg.OperationalError("connection lost"), True, True),  # client side: no SQLSTATE
        (psycopg.errors.AdminShutdown("terminating connection"), True, True),
        (psycopg.errors.SerializationFailure("could not serialize"), True, False),
        (psycopg.errors.DeadlockDetected("deadlock"), True, False),
        (psycopg.errors.ObjectNotInPrerequisiteState("shard 3 is paused"), False, False),  # an answer, not a failure
        (psycopg.errors.QueryCanceled("statement timeout"), False, False),
        (PoolTimeout("no free connection"), False, True),
    ],
)
def test_only_failures_to_reach_the_database_and_conflicts_are_retried(
    error: psycopg.OperationalError, retried: bool, unreachable_: bool
) -> None:
    assert (_worth_retrying(error), unreachable(error)) == (retried, unreachable_)
