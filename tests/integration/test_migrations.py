"""Migrations safe in a rolling update (expand/contract) and on data already there.

While a release rolls out, pods of the previous release run their SQL against the schema the new release's
migrations made: every statement of the previous release must still prepare after each migration that is not a
contract step, with the same parameters and the result columns it read. And the books a previous release kept must
come through the migrations whole: reconciliation is clean before and after.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from brokerage.domain.market_hours import trading_day
from brokerage.reconcile import TABLE_CHECKS, reconcile
from brokerage.storage.migrate import MIGRATIONS, apply
from devtools.stack import PostgresCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The last landing of the previous release: its queries are what its pods run during the rollout of this one.
PREVIOUS_RELEASE = "d334cf2"
CONTRACT_MARK = "-- Contract step"  # the first line of a migration that drops what the previous release used
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PARAMETER = re.compile(r"%\((\w+)\)s")
# What psycopg sends for parameters whose type PostgreSQL cannot infer from the statement: timedeltas.
_PARAMETER_TYPES = {"after": "interval", "busy_after": "interval", "stuck_after": "interval"}


def previous_release(path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{PREVIOUS_RELEASE}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def previous_migrations() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", PREVIOUS_RELEASE, "brokerage/storage/migrations/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(Path(name).stem for name in listed if name.endswith(".sql"))


def later_migrations() -> list[Path]:
    released = set(previous_migrations())
    return sorted(p for p in MIGRATIONS.glob("*.sql") if p.stem not in released)


def prepared_statements(queries_sql: str) -> dict[str, tuple[str, str]]:
    """Each named query as a statement PostgreSQL can prepare (psycopg's parameters as $n), and the same with the
    types psycopg would send for the parameters whose type the statement leaves open."""
    parts = _NAME.split(queries_sql)[1:]
    return {
        name: (_numbered(body, typed=False), _numbered(body, typed=True))
        for name, body in zip(parts[::2], parts[1::2], strict=True)
    }


def _numbered(body: str, *, typed: bool) -> str:
    names: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        cast = _PARAMETER_TYPES.get(match.group(1)) if typed else None
        return f"${names.index(match.group(1)) + 1}" + (f"::{cast}" if cast else "")

    return _PARAMETER.sub(placeholder, body).replace("%%", "%")


def described(conn: psycopg.Connection, statements: dict[str, tuple[str, str]]) -> dict[str, object]:
    """What each statement takes and gives back: its parameter types and result columns, or why it cannot be
    prepared."""
    found: dict[str, object] = {}
    for name, (untyped, typed) in statements.items():
        try:
            try:
                conn.execute(f"PREPARE q AS {untyped}")
            except psycopg.errors.UndefinedFunction:  # an operator for a parameter whose type only psycopg knows
                conn.execute(f"PREPARE q AS {typed}")
        except psycopg.Error as error:
            found[name] = f"{type(error).__name__}: {error.diag.message_primary}"
            continue
        result = conn.pgconn.describe_prepared(b"q")
        found[name] = (
            [result.param_type(i) for i in range(result.nparams)],
            {(result.fname(i), result.ftype(i)) for i in range(result.nfields)},
        )
        conn.execute("DEALLOCATE q")
    return found


@pytest.fixture
def empty_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    postgres_cluster.create_database(name)
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


def test_every_statement_of_the_previous_release_survives_each_later_migration_but_a_contract(
    empty_database: str,
) -> None:
    statements = prepared_statements(previous_release("brokerage/storage/queries.sql"))
    apply(empty_database, through=previous_migrations()[-1])
    with psycopg.connect(empty_database, autocommit=True) as conn:
        before = described(conn, statements)
    assert not [name for name, d in before.items() if isinstance(d, str)], before  # all of it prepares
    assert later_migrations(), "no migration since the previous release"

    for migration in later_migrations():
        apply(empty_database, through=migration.stem)
        if migration.read_text().startswith(CONTRACT_MARK):
            continue
        with psycopg.connect(empty_database, autocommit=True) as conn:
            after = described(conn, statements)
        broken = {}
        for name, (parameters, columns) in before.items():  # type: ignore[misc]
            now = after[name]
            if isinstance(now, str) or now[0] != parameters or not columns <= now[1]:  # type: ignore[index]
                broken[name] = now
        assert broken == {}, f"{migration.name} breaks the previous release's {sorted(broken)}: {broken}"


# The previous release's writes, as its pods made them: its seed's funding, its placement (the caller's reservation),
# a worker's record of SUBMITTED, its settlement of fills and its cancel.
PREVIOUS_FUNDING = """
WITH funded AS (
    INSERT INTO balances (customer_id, available) SELECT c, 10000 FROM unnest(ARRAY['1', '2']) AS c RETURNING *
)
INSERT INTO ledger_entries (customer_id, asset, kind, available_delta)
SELECT customer_id, 'USD', 'funding', available FROM funded
"""
PREVIOUS_PLACEMENT = """
SELECT * FROM place_orders(ARRAY[%(order_id)s], ARRAY[%(customer)s], ARRAY['k-' || %(order_id)s], ARRAY['AAPL'],
                           ARRAY[%(side)s], ARRAY[%(quantity)s]::bigint[], ARRAY[100.00], ARRAY[%(reserve)s]::numeric[],
                           ARRAY[NULL::text], ARRAY['orders.1'], ARRAY[''::bytea])
"""
PREVIOUS_FILL = """
SELECT * FROM apply_execution_reports(ARRAY[%(exec_id)s], ARRAY[%(order_id)s], ARRAY['V-' || %(order_id)s],
                                      ARRAY[%(exec_type)s], ARRAY[%(quantity)s]::bigint[], ARRAY[%(price)s]::numeric[],
                                      ARRAY[%(cumulative)s]::bigint[], ARRAY[''], ARRAY[now()], ARRAY['AAPL'],
                                      ARRAY[%(side)s], ARRAY[0]::bigint[], true)
"""


def previous_release_activity(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO instruments (symbol, name, tick_size) VALUES ('AAPL', 'Apple', 0.01)")
    conn.execute("INSERT INTO shard_config (shard_count) VALUES (16)")
    conn.execute(PREVIOUS_FUNDING)
    for order_id, customer, side, quantity in [
        ("b1", "1", "BUY", 10),
        ("b2", "1", "BUY", 3),
        ("s1", "1", "SELL", 7),
        ("b3", "2", "BUY", 5),
        ("b4", "1", "BUY", 1),
    ]:
        reserve = quantity * Decimal("100.00") if side == "BUY" else 0
        if order_id == "s1":
            for fill in previous_fills("b1", "b2"):
                conn.execute(PREVIOUS_FILL, fill)  # the shares it sells are bought first
        conn.execute(
            PREVIOUS_PLACEMENT,
            {"order_id": order_id, "customer": customer, "side": side, "quantity": quantity, "reserve": reserve},
        )
        if order_id != "b4":  # the last one is canceled before a worker takes it
            conn.execute("UPDATE orders SET claimed_at = now() WHERE order_id = %s", (order_id,))
            conn.execute("SELECT record_submitted(%s, 'V-' || %s)", (order_id, order_id))
    for fill in previous_fills("s1", "b3"):
        conn.execute(PREVIOUS_FILL, fill)
    conn.execute("SELECT * FROM cancel_order('1', 'b4', 'orders.1', '')")


FILLS = {  # exec_id, order, side, quantity, price, cumulative, final
    "b1": [("e1", "BUY", 4, "98.10", 4, False), ("e2", "BUY", 6, "99.35", 10, True)],
    "b2": [("e3", "BUY", 3, "97.05", 3, True)],
    "s1": [("e4", "SELL", 7, "101.00", 7, True)],
    "b3": [("e5", "BUY", 2, "99.99", 2, False)],  # still open when the migrations run
}


def previous_fills(*order_ids: str) -> list[dict[str, object]]:
    return [
        {
            "exec_id": e,
            "order_id": o,
            "side": side,
            "quantity": q,
            "price": p,
            "cumulative": c,
            "exec_type": "FILL" if final else "PARTIAL_FILL",
        }
        for o in order_ids
        for e, side, q, p, c, final in FILLS[o]
    ]


async def clean(database_url: str) -> dict[str, object]:
    results = await reconcile(database_url, None, trading_day(datetime.now(UTC)), timedelta(days=1))
    assert len([r for r in results if not r.skipped]) == len(TABLE_CHECKS)
    return {r.name: r.findings for r in results if r.findings}


async def test_the_books_of_the_previous_release_come_through_the_migrations_whole(empty_database: str) -> None:
    apply(empty_database, through=previous_migrations()[-1])
    with psycopg.connect(empty_database, autocommit=True) as conn:
        previous_release_activity(conn)
        held = conn.execute("SELECT customer_id, available, reserved FROM balances ORDER BY 1").fetchall()

    apply(empty_database)

    assert await clean(empty_database) == {}
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert conn.execute("SELECT customer_id, available, reserved FROM balances ORDER BY 1").fetchall() == held
        # 13 bought for 1,279.65; the 7 sold take round(1,279.65 x 7 / 13, 4) = 689.0423 of the basis.
        position = conn.execute("SELECT quantity, cost_basis, average_cost FROM positions WHERE customer_id = '1'")
        assert position.fetchone() == (6, Decimal("590.6077"), Decimal("98.4346"))
        # The open order goes on under the new functions, called as the previous release calls them.
        conn.execute(
            PREVIOUS_FILL,
            {
                "exec_id": "e6",
                "order_id": "b3",
                "exec_type": "FILL",
                "quantity": 3,
                "price": "99.00",
                "cumulative": 5,
                "side": "BUY",
            },
        )
        assert conn.execute("SELECT status, reserved_cash FROM orders WHERE order_id = 'b3'").fetchone() == (
            "FILLED",
            0,
        )
    assert await clean(empty_database) == {}
