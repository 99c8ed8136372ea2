"""Least privilege in PostgreSQL (0017): the catalog grants exactly what brokerage/storage/grants.py lists, PUBLIC
nothing (new functions included), each service role can run its named queries, and none can move money or write the
books but through its functions: OrderService's cannot settle, nor touch a balance."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from brokerage.storage.grants import BY_NAME, DEFINER_SEARCH_PATH, ROLES, THE_BOOKS
from brokerage.storage.queries import fetch_all
from devtools.mesh import database_url_as
from tests.integration import test_migrations

pytestmark = pytest.mark.integration

QUERIES_SQL = Path(__file__).resolve().parents[2] / "brokerage" / "storage" / "queries.sql"
SERVICE_ROLES = sorted(BY_NAME)
EVERY_SERVICE_RUNS = {"ping"}  # readiness


def prepared_statements(queries_sql: str) -> dict[str, tuple[str, str]]:
    """test_migrations' statements, with the types psycopg sends for every interval parameter (a grace too)."""
    types = test_migrations._PARAMETER_TYPES
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(test_migrations, "_PARAMETER_TYPES", {**types, "grace": "interval"})
        return test_migrations.prepared_statements(queries_sql)


def granted(conn: psycopg.Connection) -> dict[str, object]:
    """The catalog's grants to the service roles, in grants.py's shape: per role, function names, table privileges,
    column privileges."""
    functions: dict[str, set[str]] = defaultdict(set)
    tables: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    columns: dict[str, dict[str, dict[str, set[str]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(set)))
    for role, name in conn.execute(
        """SELECT a.grantee::regrole::text, p.proname
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
            WHERE n.nspname = 'public' AND a.grantee::regrole::text = ANY(%s)""",
        (SERVICE_ROLES,),
    ).fetchall():
        functions[role].add(name)
    for role, table, privilege in conn.execute(
        """SELECT a.grantee::regrole::text, c.relname, a.privilege_type
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
            WHERE n.nspname = 'public' AND a.grantee::regrole::text = ANY(%s)""",
        (SERVICE_ROLES,),
    ).fetchall():
        tables[role][table].add(privilege)
    for role, table, column, privilege in conn.execute(
        """SELECT a.grantee::regrole::text, c.relname, t.attname, a.privilege_type
             FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace,
                  aclexplode(t.attacl) a
            WHERE n.nspname = 'public' AND a.grantee::regrole::text = ANY(%s)""",
        (SERVICE_ROLES,),
    ).fetchall():
        columns[role][table][privilege].add(column)
    return {
        role: (
            functions[role],
            {table: privileges for table, privileges in tables[role].items()},
            {table: {p: cs for p, cs in by_privilege.items()} for table, by_privilege in columns[role].items()},
        )
        for role in SERVICE_ROLES
    }


def test_the_catalog_grants_the_service_roles_exactly_what_grants_py_lists(db: psycopg.Connection) -> None:
    listed = {
        role.name: (
            set(role.functions),
            {table: set(privileges) for table, privileges in role.tables.items()},
            {table: {p: set(cs) for p, cs in by_privilege.items()} for table, by_privilege in role.columns.items()},
        )
        for role in ROLES
    }
    assert granted(db) == listed
    roles = db.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1", (SERVICE_ROLES,)
    ).fetchall()
    assert roles == [(name, False) for name in SERVICE_ROLES]  # group roles: their members log in


def test_no_one_but_the_owner_and_the_service_roles_has_any_privilege(db: psycopg.Connection) -> None:
    others = db.execute(
        """SELECT kind, name, grantee FROM (
               SELECT 'function' AS kind, p.oid::regprocedure::text AS name, a.grantee, p.proowner AS owner
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
                WHERE n.nspname = 'public'
               UNION ALL
               SELECT 'relation', c.relname, a.grantee, c.relowner
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
                WHERE n.nspname = 'public'
               UNION ALL
               SELECT 'column', c.relname || '.' || t.attname, a.grantee, c.relowner
                 FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(t.attacl) a
                WHERE n.nspname = 'public') g
            WHERE grantee <> owner AND (grantee = 0 OR grantee::regrole::text <> ALL(%s))""",
        (SERVICE_ROLES,),
    ).fetchall()
    assert others == []  # grantee 0 is PUBLIC
    # A function without an ACL has the default one, which lets PUBLIC execute it.
    defaults = db.execute(
        """SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public' AND p.proacl IS NULL"""
    ).fetchall()
    assert defaults == []


def test_a_function_a_later_migration_makes_is_not_executable_by_public(db: psycopg.Connection) -> None:
    """The default privileges (0017) of the role that runs the migrations: a new versioned function is executable by
    the roles it is granted to, and by no one else."""
    db.execute("CREATE FUNCTION place_orders_v9() RETURNS integer LANGUAGE sql AS 'SELECT 1'")
    acl = db.execute("SELECT proacl::text[] FROM pg_proc WHERE proname = 'place_orders_v9'").fetchone()
    assert acl is not None and acl[0] is not None and not any(item.startswith("=") for item in acl[0])
    for role in SERVICE_ROLES:
        assert not _may(db, "has_function_privilege(%s, 'place_orders_v9()', 'EXECUTE')", role)


def test_the_functions_the_services_call_that_write_run_as_their_owner_with_a_fixed_search_path(
    db: psycopg.Connection,
) -> None:
    granted_functions = sorted({f for role in ROLES for f in role.functions})
    rows = db.execute(
        """SELECT p.proname, p.provolatile = 'v', p.prosecdef, coalesce(p.proconfig, '{}')
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public' AND (p.proname = ANY(%s) OR p.prosecdef)""",
        (granted_functions,),
    ).fetchall()
    assert {name for name, *_ in rows} >= set(granted_functions)
    for name, writes, definer, config in rows:
        if writes or definer:
            assert definer and DEFINER_SEARCH_PATH in config, name
        else:
            assert not definer, name  # the reading ones (reconciliation's helpers) run as their caller


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_no_service_role_may_write_the_books_or_an_order_s_status(db: psycopg.Connection, role: str) -> None:
    for table in THE_BOOKS:
        for privilege in ("INSERT", "UPDATE"):
            assert not _may(db, "has_any_column_privilege(%s, %s, %s)", role, table, privilege), (table, privilege)
        for privilege in ("DELETE", "TRUNCATE"):
            assert not _may(db, "has_table_privilege(%s, %s, %s)", role, table, privilege), (table, privilege)
    for column in ("status", "reserved_cash", "reserved_shares", "filled_quantity", "customer_id"):
        assert not _may(db, "has_column_privilege(%s, 'orders', %s, 'UPDATE')", role, column), column
    assert not _may(db, "has_table_privilege(%s, 'orders', 'INSERT')", role)


def test_each_role_can_run_its_named_queries_and_each_query_belongs_to_a_role(db: psycopg.Connection) -> None:
    """Each query planned and started (EXPLAIN checks every privilege it needs) as the role that runs it."""
    statements = prepared_statements(QUERIES_SQL.read_text())
    assert set(statements) == {q for role in ROLES for q in role.queries} | EVERY_SERVICE_RUNS
    refused: dict[tuple[str, str], str] = {}
    for role in ROLES:
        for name in sorted(role.queries | EVERY_SERVICE_RUNS):
            error = _explained_as(db, role.name, statements[name])
            if error is not None:
                refused[(role.name, name)] = error
    assert refused == {}, "\n".join(f"{role} {name}: {error}" for (role, name), error in sorted(refused.items()))


def test_order_service_s_role_cannot_settle_nor_move_a_balance(db: psycopg.Connection) -> None:
    statements = prepared_statements(QUERIES_SQL.read_text())
    error = _explained_as(db, "broker_orders", statements["apply_execution_reports"])
    assert error is not None and "permission denied for function apply_execution_reports" in error
    for forbidden in (
        "UPDATE balances SET available = available + 1000000",
        "UPDATE positions SET quantity = quantity + 1000",
        "INSERT INTO transfers (transfer_key) VALUES ('mine')",
        "DELETE FROM transfers",
        "UPDATE orders SET status = 'FILLED'",
    ):
        with db.transaction(force_rollback=True):
            db.execute("SET LOCAL ROLE broker_orders")
            with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
                db.execute(forbidden)  # type: ignore[arg-type]


async def test_a_member_of_order_service_s_role_places_through_its_function_and_cannot_settle(
    seeded_database: str, service_logins: dict[str, str]
) -> None:
    """As OrderService logs in: placing reserves the customer's cash (the function runs as its owner), settling is
    refused."""
    from psycopg_pool import AsyncConnectionPool

    url = database_url_as(seeded_database, service_logins["broker_orders"])
    async with AsyncConnectionPool(url, kwargs={"autocommit": True}, open=False) as pool:
        order_id = f"grants-{uuid.uuid4().hex[:8]}"
        [placed] = await fetch_all(
            pool,
            "place_orders",
            {
                "order_id": [order_id],
                "customer_id": ["1"],
                "client_order_id": [order_id],
                "symbol": ["AAPL"],
                "side": ["BUY"],
                "quantity": [10],
                "protection_price": [Decimal("100.00")],
                "reference_price": [None],
                "reject_code": [None],
                "reject_reason": [None],
                "subject": ["orders.test"],
                "payload": [b""],
                "expires_at": [None],
            },
        )
        assert placed["status"] == "PLACED", placed
        [account] = await fetch_all(pool, "get_account", {"customer_id": "1"})
        assert account["reserved"] == Decimal("1000.00")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with pool.connection() as conn:
                await conn.execute(
                    "SELECT * FROM apply_execution_reports(NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                    " NULL, NULL, NULL, NULL, NULL, true)"
                )


def _may(db: psycopg.Connection, check: str, *args: str) -> bool:
    row = db.execute(f"SELECT {check}", args).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return bool(row[0])


def _explained_as(db: psycopg.Connection, role: str, statement: tuple[str, str]) -> str | None:
    """None when the role may run the statement (EXPLAIN of it with null parameters, which checks the privileges of
    every table and function it names), else the database's refusal."""
    untyped, typed = statement
    with db.transaction(force_rollback=True):
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        try:
            with db.transaction():
                try:
                    with db.transaction():
                        db.execute(f"PREPARE q AS {untyped}")  # type: ignore[arg-type]
                except psycopg.errors.UndefinedFunction:  # an operator for a parameter only psycopg knows the type of
                    db.execute(f"PREPARE q AS {typed}")  # type: ignore[arg-type]
                parameters = db.pgconn.describe_prepared(b"q").nparams
                arguments = f"({', '.join(['NULL'] * parameters)})" if parameters else ""
                db.execute(f"EXPLAIN EXECUTE q{arguments}")  # type: ignore[arg-type]
        except psycopg.Error as error:
            return f"{type(error).__name__}: {error.diag.message_primary}"
        finally:
            db.execute("DEALLOCATE ALL")
    return None


@pytest.mark.parametrize("role", ["broker_orders", "broker_execution", "broker_callback", "broker_reconcile"])
def test_only_the_operations_service_may_change_halts_statuses_and_limits(
    seeded_database: str, service_logins: dict[str, str], role: str
) -> None:
    url = database_url_as(seeded_database, service_logins[role])
    changes = [
        "SELECT set_trading_halt('FIRM', NULL, NULL, 'x', false, 'i', 'o', 'p')",
        "SELECT clear_trading_halt(1, 'x', 'i', 'o', 'p')",
        "SELECT set_account_status('1', 'BLOCKED', 'x', 'i', 'o', 'p')",
        "SELECT set_limits('', 1, 1, 1, 1, 'x', 'i', 'o', 'p')",
        "SELECT engage_firm_threshold_halt(1)",
        "INSERT INTO trading_halts (scope, reason, set_by) VALUES ('FIRM', 'x', 'o')",
        "UPDATE trading_halts SET cleared_at = now(), cleared_by = 'o'",
        "UPDATE risk_limits SET max_order_notional = 1",
        "UPDATE balances SET account_status = 'BLOCKED'",
        "INSERT INTO risk_events (action, detail, reason, operator_issuer, operator, operator_peer)"
        " VALUES ('halt_set', '{}', 'x', 'i', 'o', 'p')",
    ]
    for statement in changes:
        with psycopg.connect(url, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
