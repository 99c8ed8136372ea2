"""Who may do what in PostgreSQL, as the services need it: per service role, the functions it may execute, the tables
(and columns) it may read or write, and the named queries of queries.sql it runs.

This is the table the catalog is held to: the migrations grant (0017 onwards; schema.sql restates it), and
tests/integration/test_grants.py proves the catalog's grants equal these, PUBLIC has none, and each role can run its
named queries and nothing that moves money but through its functions. The role that runs the migrations owns the
schema and everything in it; its login goes to the set-up alone (migrations, the demo seed). Each role below is a group
role without a login; `login` is the user of it that make run and the tests make (in Kubernetes, CloudNativePG's
managed role of that name, its password in a Secret of its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

SELECT, INSERT, UPDATE, DELETE = "SELECT", "INSERT", "UPDATE", "DELETE"
# The search_path every SECURITY DEFINER function is fixed to: our schema, then temporary objects last, so no caller's
# object can stand in for one of ours.
DEFINER_SEARCH_PATH = "search_path=public, pg_temp"
# Tables no service role may write but through the functions: the money and the books.
THE_BOOKS = ("balances", "positions", "transfers", "fundings", "repairs", "executions", "ledger_entries")

_RECONCILE_FUNCTIONS = frozenset({"format_money", "average_price", "holding_from_fills"})
_RECONCILE_TABLES: Mapping[str, frozenset[str]] = {
    table: frozenset({SELECT})
    for table in (
        "balances",
        "positions",
        "transfers",
        "account_balances",
        "fundings",
        "repairs",
        "orders",
        "executions",
        "breaks",
    )
}
_RECONCILE_QUERIES = frozenset(
    {
        "reconcile_balances_vs_accounts",
        "reconcile_positions_vs_accounts",
        "reconcile_negative_cash",
        "reconcile_transfers_without_cause",
        "reconcile_fundings_vs_transfers",
        "reconcile_reservations_vs_transfers",
        "reconcile_reserved_cash_vs_open_orders",
        "reconcile_reserved_shares_vs_open_orders",
        "reconcile_filled_vs_executions",
        "reconcile_fills_vs_transfers",
        "reconcile_holdings_vs_fills",
        "reconcile_stuck_orders",
        "reconcile_open_breaks",
        "reconcile_day_clearing",
        "reconcile_break_subjects",
        "reconcile_day_tombstoned",
        "reconcile_orders_of",
    }
)
_SETTLEMENT = frozenset({"apply_execution_reports", "record_malformed_reports"})
# The workers' writing functions, each called by the named query of its name.
_WORKER_CALLS = frozenset(
    {
        "claim_for_submissions",
        "record_submissions",
        "record_venue_rejections",
        "record_submit_failure",
        "end_unsent_order",
        "expire_unclaimed_orders",
        "withhold_halted_claims",
        "cancel_for_halts",
    }
)
# The risk controls' levers: the operations service's alone, each called by the named query of its name.
_RISK_LEVERS = frozenset(
    {"set_trading_halt", "clear_trading_halt", "set_account_status", "set_limits", "engage_firm_threshold_halt"}
)
_RISK_TABLES = ("trading_halts", "risk_limits", "risk_events", "halt_cancel_jobs", "firm_buy_notional")
_SHARD_COUNT_QUERIES = frozenset({"record_shard_count", "recorded_shard_count"})


@dataclass(frozen=True)
class Role:
    name: str
    login: str
    functions: frozenset[str]  # by name (no two of ours share one)
    tables: Mapping[str, frozenset[str]]  # table or view: privileges on all of it
    columns: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)  # table: privilege: columns
    queries: frozenset[str] = frozenset()  # the named queries it runs (and "ping", which every service does)


ROLES: tuple[Role, ...] = (
    Role(
        "broker_orders",
        login="order_service",
        # place_orders_v2 for the previous release's replicas during a rolling update (0019)
        functions=frozenset({"place_orders_v2", "place_orders_v3", "cancel_order"}),
        tables={
            "orders": frozenset({SELECT}),
            "order_events": frozenset({SELECT}),
            "balances": frozenset({SELECT}),
            "positions": frozenset({SELECT}),
            "instruments": frozenset({SELECT}),
            "quotes": frozenset({SELECT}),
            "shard_config": frozenset({SELECT, INSERT}),
            "outbox": frozenset({SELECT, DELETE}),
        },
        # The relay's DELETE locks the rows it takes (FOR UPDATE SKIP LOCKED), and a row lock asks for UPDATE on some
        # column; it updates none.
        columns={"outbox": {UPDATE: frozenset({"message_id"})}},
        queries=frozenset(
            {
                "place_orders",
                "cancel_order",
                "get_order",
                "list_orders",
                "get_account",
                "list_positions",
                "order_events_after",
                "reference_data",
                "take_outbox_batch",
            }
        )
        | _SHARD_COUNT_QUERIES,
    ),
    Role(
        "broker_execution",
        login="execution_service",
        functions=_WORKER_CALLS
        # The sweeper's marks update orders, whose average fill price is generated by it (as the updater).
        | {"average_price"},
        tables={
            "orders": frozenset({SELECT}),
            "instruments": frozenset({SELECT}),
            "quotes": frozenset({SELECT, INSERT, UPDATE}),
            "shard_config": frozenset({SELECT, INSERT}),
            "paused_shards": frozenset({SELECT, INSERT, UPDATE, DELETE}),
            "trading_halts": frozenset({SELECT}),
        },
        # The sweeper's marks; an order's status and money change only through the functions.
        columns={"orders": {UPDATE: frozenset({"swept_at", "cancel_swept_at", "sweep_count", "cancel_sent_at"})}},
        queries=_WORKER_CALLS
        | frozenset(
            {
                "pending_cancel",
                "record_cancel_sent",
                "claim_unsent_placed",
                "claim_unsent_cancels",
                "claim_silent_submitted",
                "claim_due_retries",
                "claim_expired_claimed",
                "record_quotes",
                "shard_states",
                "paused_shards",
                "pause_shard",
                "resume_shard",
                "halts_in_force",
            }
        )
        | _SHARD_COUNT_QUERIES,
    ),
    Role(
        "broker_callback",
        login="callback_service",
        functions=_SETTLEMENT,
        # the post-trade feed's relay, as the orders' relay takes the outbox
        tables={"execution_feed": frozenset({SELECT, DELETE})},
        columns={"execution_feed": {UPDATE: frozenset({"feed_id"})}},
        queries=frozenset({"apply_execution_reports", "record_malformed_reports", "take_feed_batch"}),
    ),
    Role(
        "broker_operations",
        login="operations_service",
        functions=_SETTLEMENT
        | {"resolve_break", "redrive_waiting_order", "end_lost_order"}
        | _RECONCILE_FUNCTIONS
        | _RISK_LEVERS
        | {"limits_in_force"},
        tables={**_RECONCILE_TABLES, **{table: frozenset({SELECT}) for table in _RISK_TABLES}},
        queries=frozenset(
            {
                "list_breaks",
                "order_by_id",
                "resolve_break",
                "redrive_waiting_order",
                "end_lost_order",
                "apply_execution_reports",
                "record_malformed_reports",
                "halts_in_force",
                "list_trading_halts",
                "get_limits",
                "list_risk_events",
            }
        )
        | _RISK_LEVERS
        | _RECONCILE_QUERIES,
    ),
    Role(
        "broker_reconcile",
        login="reconcile",
        functions=_RECONCILE_FUNCTIONS,
        tables=_RECONCILE_TABLES,
        queries=_RECONCILE_QUERIES,
    ),
)
BY_NAME: Mapping[str, Role] = {role.name: role for role in ROLES}
# The module each service runs as, and its role (the set-up, python -m brokerage.storage.migrate and the seed, runs as
# the owner).
SERVICE_ROLES: Mapping[str, str] = {
    "order_service": "broker_orders",
    "execution_service": "broker_execution",
    "callback_service": "broker_callback",
    "operations_service": "broker_operations",
    "brokerage.reconcile": "broker_reconcile",
}
