"""The invariants a seed must hold once the system is quiet, each a name and the violations found (none: it holds).

They read the record (PostgreSQL, as its owner) and the venue's drop copy, and compare both with what the load was
told: an order answered OK is never lost or doubled, every fill the venue made is booked once or held by a break,
each customer's cash and shares follow from the drop copy to the cent, each customer's orders reached the venue in
sequence order, and every order has ended or waits behind a named break.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg

from brokerage.proto import common_pb2, exchange_pb2, orders_pb2

LOST = "every order answered OK exists, unchanged"
DOUBLED = "nothing doubled: one order per client_order_id, one transfer per movement"
FIFO = "each customer's orders reached the venue in sequence order"
FEED = "every booked fill is on the EXECUTIONS feed, once"
# Whatever their keys say, one transfer per fill and asset, and one reservation and one release per order and asset.
DOUBLED_TRANSFERS = """
    SELECT coalesce(exec_id, order_id) || ' ' || kind || ' ' || asset, count(*) FROM transfers
     WHERE kind IN ('fill', 'error', 'reserve', 'release')
     GROUP BY coalesce(exec_id, order_id), kind, asset HAVING count(*) > 1
"""
# The breaks venue chaos explains: reports it garbled, and the customer whose every order it fails. Any other kind
# (a fill after we ended the order, an overfill, a final outcome we cannot hold, an order we never had) means the
# books and the venue parted: a bug, even though the error account keeps the fill whole.
EXPLAINED_BREAKS = ("malformed", "refused", "parked")
FILLS = frozenset({common_pb2.EXEC_TYPE_PARTIAL_FILL, common_pb2.EXEC_TYPE_FILL})
TERMINAL = ("FILLED", "CANCELED", "REJECTED")
SIDES = {common_pb2.SIDE_BUY: "BUY", common_pb2.SIDE_SELL: "SELL"}
SHOWN = 5  # violations kept per invariant


@dataclass
class Verdict:
    name: str
    violations: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, violation: str) -> None:
        self.count += 1
        if len(self.violations) < SHOWN:
            self.violations.append(violation)

    @property
    def holds(self) -> bool:
        return self.count == 0


def answered_orders(
    database_url: str, placed: dict[tuple[str, str], orders_pb2.Order], order_ids: dict[tuple[str, str], set[str]]
) -> list[Verdict]:
    """Lost: an order answered OK missing, or stored with other fields. Doubled: two orders for one client_order_id
    (two answers with different ids, or two rows)."""
    lost, doubled = Verdict(LOST), Verdict(DOUBLED)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT order_id, customer_id, client_order_id, symbol, side, quantity, sequence, status FROM orders"
        ).fetchall()
        for customer, key, count in conn.execute(
            "SELECT customer_id, client_order_id, count(*) FROM orders GROUP BY 1, 2 HAVING count(*) > 1"
        ):
            doubled.add(f"customer {customer} {key}: {count} orders")
        for what, count in conn.execute(DOUBLED_TRANSFERS):
            doubled.add(f"{what}: {count} transfers")
    stored = {row[0]: row[1:] for row in rows}
    for (customer, key), ids in order_ids.items():
        if len(ids) > 1:
            doubled.add(f"customer {customer} {key} answered with {sorted(ids)}")
    for order in placed.values():
        row = stored.get(order.order_id)
        expected = (order.customer_id, order.client_order_id, order.symbol, SIDES[order.side], order.quantity)
        if row is None:
            lost.add(f"{order.order_id} ({order.customer_id} {order.client_order_id}) answered OK, not stored")
        elif row[:5] != expected or row[5] != order.sequence:
            lost.add(f"{order.order_id}: answered {expected} #{order.sequence}, stored {row[:6]}")
        elif order.status == common_pb2.ORDER_STATUS_REJECTED and row[6] != "REJECTED":
            lost.add(f"{order.order_id}: answered REJECTED, stored {row[6]}")
    return [lost, doubled]


def fills(database_url: str, entries: list[exchange_pb2.DropCopyEntry]) -> list[Verdict]:
    """Every drop-copy fill booked once or held by a break; no break for an order we never had; each order's fills
    what the venue filled, no more."""
    booked_or_break = Verdict("every drop-copy fill is booked or a break")
    unknown = Verdict("no break but those venue chaos explains (no unknown order, no fill after an end, ...)")
    exact = Verdict("each order's booked fills are the venue's (none twice)")
    with psycopg.connect(database_url) as conn:
        booked = {e for (e,) in conn.execute("SELECT exec_id FROM executions")}
        held = {e for (e,) in conn.execute("SELECT exec_id FROM breaks WHERE exec_id IS NOT NULL")}
        for break_id, detail in conn.execute(
            "SELECT break_id, detail FROM breaks WHERE kind <> ALL(%s)", (list(EXPLAINED_BREAKS),)
        ):
            unknown.add(f"break {break_id}: {detail}")
        filled: dict[str, int] = dict(
            conn.execute("SELECT order_id, filled_quantity FROM orders WHERE filled_quantity > 0").fetchall()
        )
        in_error = {e for (e,) in conn.execute("SELECT DISTINCT exec_id FROM transfers WHERE kind = 'error'")}
    venue_filled: dict[str, int] = defaultdict(int)
    for entry in entries:
        report = entry.report
        if report.exec_type not in FILLS:
            continue
        if report.exec_id not in booked and report.exec_id not in held:
            booked_or_break.add(f"{report.exec_id} ({report.order_id}) booked nowhere")
        if report.exec_id not in in_error:
            venue_filled[report.order_id] += report.last_quantity
    for order_id in set(venue_filled) | set(filled):
        if filled.get(order_id, 0) != venue_filled.get(order_id, 0):
            exact.add(f"{order_id}: booked {filled.get(order_id, 0)}, the venue filled {venue_filled.get(order_id, 0)}")
    return [booked_or_break, unknown, exact]


def settled_or_named(database_url: str, when: str) -> Verdict:
    """Every order has ended, is named by an open break, or waits behind its customer's order that one names."""
    verdict = Verdict(f"every order ended, or is a break, or waits behind a named break ({when})")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """
            SELECT o.order_id, o.status, o.held_by,
                   EXISTS (SELECT 1 FROM breaks b WHERE b.order_id = o.order_id AND b.resolved_at IS NULL),
                   EXISTS (SELECT 1 FROM breaks h WHERE h.order_id = o.held_by AND h.resolved_at IS NULL)
              FROM orders o
             WHERE o.status NOT IN ('FILLED', 'CANCELED', 'REJECTED')
            """
        ).fetchall()
    for order_id, status, held_by, named, behind_named in rows:
        if not (named or behind_named):
            verdict.add(f"{order_id} {status}" + (f", held by {held_by}" if held_by else ", no break names it"))
    return verdict


def books_from_drop_copy(database_url: str, entries: list[exchange_pb2.DropCopyEntry]) -> Verdict:
    """Each customer's cash (available + reserved) and shares equal their funding plus the drop copy's fills of
    their orders, less the fills booked to the error account, to the cent."""
    verdict = Verdict("cash and shares equal a recomputation from the drop copy")
    with psycopg.connect(database_url) as conn:
        orders = {
            o: (c, s, side) for o, c, s, side in conn.execute("SELECT order_id, customer_id, symbol, side FROM orders")
        }
        cash: dict[str, Decimal] = defaultdict(Decimal)
        shares: dict[tuple[str, str], int] = defaultdict(int)
        for customer, asset, amount in conn.execute(
            "SELECT customer_id, asset, sum(amount) FROM fundings GROUP BY 1, 2"
        ):
            if asset == "USD":
                cash[customer] += amount
            else:
                shares[(customer, asset)] += int(amount)
        in_error = {e for (e,) in conn.execute("SELECT DISTINCT exec_id FROM transfers WHERE kind = 'error'")}
        balances = {c: a + r for c, a, r in conn.execute("SELECT customer_id, available, reserved FROM balances")}
        holdings = {(c, s): q for c, s, q in conn.execute("SELECT customer_id, symbol, quantity FROM positions")}
    for entry in entries:
        report = entry.report
        if report.exec_type not in FILLS or report.exec_id in in_error or report.order_id not in orders:
            continue
        customer, symbol, side = orders[report.order_id]
        notional = report.last_quantity * Decimal(report.last_price)
        sign = 1 if side == "BUY" else -1
        cash[customer] -= sign * notional
        shares[(customer, symbol)] += sign * report.last_quantity
    for customer in set(cash) | set(balances):
        if cash.get(customer, Decimal(0)) != balances.get(customer, Decimal(0)):
            verdict.add(f"customer {customer}: cash {balances.get(customer)}, recomputed {cash.get(customer)}")
    for key in set(shares) | set(holdings):
        if shares.get(key, 0) != holdings.get(key, 0):
            verdict.add(f"customer {key[0]} {key[1]}: {holdings.get(key, 0)} shares, recomputed {shares.get(key, 0)}")
    return verdict


def fifo(database_url: str, entries: list[exchange_pb2.DropCopyEntry]) -> Verdict:
    """Each customer's orders reached the venue in their sequence order, by the drop copy's arrival sequences."""
    verdict = Verdict(FIFO)
    arrived: dict[str, int] = {}
    for entry in entries:
        arrived.setdefault(entry.report.order_id, entry.arrival_sequence)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT customer_id, order_id FROM orders ORDER BY customer_id, sequence").fetchall()
    last: dict[str, tuple[str, int]] = {}
    for customer, order_id in rows:
        if order_id not in arrived:
            continue
        before = last.get(customer)
        if before is not None and before[1] > arrived[order_id]:
            verdict.add(f"customer {customer}: {order_id} arrived before the earlier {before[0]}")
        last[customer] = (order_id, arrived[order_id])
    return verdict


def feed(database_url: str, published: list[str]) -> Verdict:
    """The post-trade feed against the books: each booked fill's exec_id on EXECUTIONS exactly once, nothing there
    that was never booked, and nothing left unrelayed."""
    verdict = Verdict(FEED)
    with psycopg.connect(database_url) as conn:
        booked = {row[0] for row in conn.execute("SELECT exec_id FROM executions WHERE quantity > 0")}
        row = conn.execute("SELECT count(*) FROM execution_feed").fetchone()
    times = Counter(published)
    for exec_id, n in sorted(times.items()):
        if n > 1:
            verdict.add(f"{exec_id} is on the feed {n} times")
    for exec_id in sorted(booked - times.keys()):
        verdict.add(f"{exec_id} was booked and is not on the feed")
    for exec_id in sorted(times.keys() - booked):
        verdict.add(f"{exec_id} is on the feed and was never booked")
    if row and row[0]:
        verdict.add(f"{row[0]} booked fills still wait to be relayed")
    return verdict
