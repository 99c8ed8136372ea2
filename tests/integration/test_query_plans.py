"""The transactions on the money path stay cheap to plan: no statement inside them (triggers included) is planned
expensively enough for PostgreSQL to JIT-compile it. Under `enable_seqscan = off`, which the functions the services
call set (their helpers inherit it), a statement that cannot use an index is costed at 1e10, and JIT then spends
milliseconds on every call (it did: the shard trigger's read of shard_config cost about 7 ms per placement). Checked
with JIT on, as a connection that does not turn it off would run, by auto_explain reporting every nested statement's
plan."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from brokerage.storage.queries import query
from tests.integration.conftest import CUSTOMERS

pytestmark = pytest.mark.integration


def explained(db: psycopg.Connection, statements: list[str]) -> list[str]:
    """auto_explain's report of every statement run, nested ones included, as notices."""
    notices: list[str] = []
    db.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary or ""))
    for setting in (
        "LOAD 'auto_explain'",
        "SET jit = on",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_level = notice",
        "SET client_min_messages = notice",
    ):
        db.execute(setting)
    for statement in statements:
        db.execute(statement)
    return [n for n in notices if "plan:" in n]


def test_no_statement_of_placement_submission_settlement_or_cancel_is_jit_compiled(db: psycopg.Connection) -> None:
    plans = explained(
        db,
        [
            "SELECT place_order_v2('o1', '1', 'k1', 'AAPL', 'BUY', 10, 240.00, NULL, 'orders.1', '', NULL)",
            "SELECT place_order_v2('o2', '1', 'k2', 'AAPL', 'BUY', 1, 240.00, NULL, 'orders.1', '', NULL)",
            "SELECT * FROM claim_for_submissions(ARRAY['o1'], ARRAY[32])",
            "SELECT * FROM record_submissions(ARRAY['o1'], ARRAY['V1'], ARRAY['1'], false)",
            """SELECT * FROM apply_execution_reports(ARRAY['e0', 'e1', 'e2'], ARRAY['o1', 'o1', 'o1'],
                   ARRAY['V1', 'V1', 'V1'], ARRAY['NEW', 'PARTIAL_FILL', 'FILL'], ARRAY[0, 4, 6]::bigint[],
                   ARRAY[NULL, 230.00, 231.00], ARRAY[0, 4, 10]::bigint[], ARRAY['', '', ''],
                   ARRAY[now(), now(), now()], ARRAY['AAPL', '', ''], ARRAY['BUY', '', ''],
                   ARRAY[10, 0, 0]::bigint[], false)""",
            "SELECT * FROM cancel_order('1', 'o2', 'orders.1', '')",
        ],
    )

    assert len(plans) > 20  # auto_explain saw the nested statements
    assert [p.split("\n")[1] for p in plans if "JIT:" in p] == []
    assert db.execute("SELECT filled_quantity, average_fill_price FROM orders WHERE order_id = 'o1'").fetchone() == (
        10,
        Decimal("230.6000"),
    )


def orders_rows_read(db: psycopg.Connection, statement: str, params: dict[str, object] | None = None) -> int:
    """Rows of orders the statement read, by any scan: the change in the backend's counters not yet reported."""
    counter = (
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
        " WHERE relname = 'orders'"
    )
    with db.transaction():
        (before,) = db.execute(counter).fetchone() or (0,)
        db.execute(statement, params).fetchall()
        (after,) = db.execute(counter).fetchone() or (0,)
    return int(after) - int(before)


def place_a_thousand(db: psycopg.Connection, prefix: str) -> None:
    """Orders <prefix>0 to <prefix>999, each a buy of one AAPL share, over the customers in turn: all PLACED."""
    db.execute(
        """SELECT place_order_v2(%(prefix)s::text || g, (g %% %(customers)s + 1)::text, %(prefix)s::text || g,
                                 'AAPL', 'BUY', 1, 240.00, NULL, 'orders.1', '', NULL)
             FROM generate_series(0, 999) AS g""",
        {"prefix": prefix, "customers": CUSTOMERS},
    )


def reading_over_100(db: psycopg.Connection, statements: list[str]) -> dict[str, int]:
    """Those of the statements (named by their function) that read over 100 rows of orders, with how many."""
    read = {statement.split("(")[0]: orders_rows_read(db, statement) for statement in statements}
    return {name: rows for name, rows in read.items() if rows > 100}


def test_the_batched_claims_records_and_settlements_read_orders_by_key_whatever_the_tables_size(
    db: psycopg.Connection,
) -> None:
    # A batch once put its calls in lock order through a join the planner could not key: it read every order, on
    # every batch, and settlement slowed as the day went on. A claim reads about its batch of the shard's waiting
    # orders (8 each here), whatever else waits. (Analyzed, as autovacuum keeps a table: without statistics the planner
    # may read one customer's orders through any index of them; the next test has it misled on purpose.)
    place_a_thousand(db, "o")
    db.execute("ANALYZE orders")
    statements = [
        "SELECT * FROM claim_for_submissions(ARRAY['o0', 'o1'], ARRAY[8, 8])",
        "SELECT * FROM record_submissions(ARRAY['o0', 'o1'], ARRAY['V0', 'V1'], ARRAY['1', '2'], false)",
        "SELECT * FROM record_venue_rejections(ARRAY['o2'], ARRAY['halted'], ARRAY['3'], false)",
        """SELECT * FROM apply_execution_reports(ARRAY['e1', 'e2'], ARRAY['o0', 'o1'], ARRAY['V0', 'V1'],
               ARRAY['FILL', 'FILL'], ARRAY[1, 1]::bigint[], ARRAY[239.00, 239.00], ARRAY[1, 1]::bigint[],
               ARRAY['', ''], ARRAY[now(), now()], ARRAY['AAPL', 'AAPL'], ARRAY['BUY', 'BUY'],
               ARRAY[1, 1]::bigint[], false)""",
    ]

    assert reading_over_100(db, statements) == {}  # of 1,000 orders


async def test_the_services_connections_have_jit_off(seeded_database: str) -> None:
    from brokerage.storage.pool import open_pool
    from tests.integration.conftest import make_settings

    pool = await open_pool(make_settings(seeded_database, "nats://unused"))
    try:
        async with pool.connection() as conn:
            assert await (await conn.execute("SHOW jit")).fetchone() == ("off",)
    finally:
        await pool.close()


def test_one_orders_record_and_one_customers_claim_read_by_key_though_the_statistics_say_hardly_any_order_waits(
    db: psycopg.Connection,
) -> None:
    # Between two ANALYZEs the statistics may say that almost no order is PLACED while hundreds are. The planner then
    # took the open orders' index (status first) for a statement about one order or one customer's waiting orders,
    # and read every waiting order on every call: under load a record of SUBMITTED cost three times a fill's update.
    place_a_thousand(db, "ended")
    db.execute("UPDATE orders SET status = 'FILLED', filled_quantity = 1, reserved_cash = 0")  # a day's, all ended
    db.execute("ANALYZE orders")
    place_a_thousand(db, "w")  # then 1,000 waiting, which the statistics miss
    statements = [
        "SELECT * FROM claim_for_submissions(ARRAY['w0'], ARRAY[1])",
        "SELECT * FROM record_submissions(ARRAY['w0', 'w1'], ARRAY['V0', 'V1'], ARRAY['1', '2'], false)",
        "SELECT * FROM record_venue_rejections(ARRAY['w2'], ARRAY['halted'], ARRAY['3'], false)",
        "SELECT * FROM cancel_order('4', 'w3', 'orders.1', '')",
    ]

    assert reading_over_100(db, statements) == {}  # of 1,000 waiting


def test_a_cancel_to_send_is_read_by_key_though_the_statistics_say_no_order_is_at_the_exchange(
    db: psycopg.Connection,
) -> None:
    # The worker's question before it sends a customer's cancel names the order, and also the statuses of the orders
    # at the exchange, which an index of those orders holds: stale statistics must not make that index the way in.
    place_a_thousand(db, "x")
    db.execute("ANALYZE orders")  # all PLACED: none at the exchange, say the statistics
    db.execute("UPDATE orders SET status = 'SUBMITTED'")  # all at the exchange, then one cancel asked for
    db.execute("UPDATE orders SET cancel_requested_at = now() WHERE order_id = 'x7'")

    assert orders_rows_read(db, query("pending_cancel"), {"order_id": "x7"}) == 1
