"""The simulated venue's rules, with a hand-driven clock: no I/O, no sleeping."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from brokerage.domain.errors import FailedPrecondition, IdempotencyConflict, InvalidRequest
from brokerage.domain.executions import DropCopyEntry, ExecType, ExecutionReport, Tombstone
from brokerage.domain.orders import OrderStatus, Side
from brokerage.listings import DEMO_LISTINGS
from exchange_simulator.executions import VenueIds
from exchange_simulator.fill_plan import FillRules, plan_fills
from exchange_simulator.market import Market
from exchange_simulator.tickets import OrderTicket, order_ticket
from exchange_simulator.venue import Arrival, Venue, parse_trading_day

# 10:00 in New York on a Tuesday
START = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
DELAY = timedelta(milliseconds=20)
AAPL = Decimal("227.50")


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta = DELAY * 2) -> datetime:
        self.now += by
        return self.now


class FixedSession:
    def __init__(self, open_: bool) -> None:
        self.open = open_

    def is_open(self, at: datetime) -> bool:
        return self.open


class RecordingJournal:
    """The venue's history as a journal file would keep it."""

    def __init__(self) -> None:
        self.history: list[Arrival | ExecutionReport | Tombstone] = []

    def arrived(self, arrival: Arrival) -> None:
        self.history.append(arrival)

    def reported(self, report: ExecutionReport) -> None:
        self.history.append(report)

    def tombstoned(self, tombstone: Tombstone) -> None:
        self.history.append(tombstone)


def rules(partial: float = 0.0, max_fills: int = 4, seed: int = 1) -> FillRules:
    return FillRules(seed=seed, fill_delay=DELAY, partial_fill_probability=partial, max_fills=max_fills)


def make_venue(
    clock: FakeClock | None = None,
    *,
    partial: float = 0.0,
    max_fills: int = 4,
    halted: tuple[str, ...] = (),
    market_open: bool = True,
    session: str = "S1",
    journal: RecordingJournal | None = None,
) -> tuple[Venue, list[ExecutionReport]]:
    """A venue, and the list its reports are appended to as they are produced."""
    clock = clock or FakeClock()
    market = Market(DEMO_LISTINGS, seed=1, volatility=Decimal(0), opened_at=clock(), halted=halted)
    venue = Venue(
        market,
        rules(partial, max_fills),
        clock=clock,
        market_clock=FixedSession(market_open),
        ids=VenueIds(session),
        journal=journal,
    )
    reports: list[ExecutionReport] = []
    venue.add_listener(reports.append)
    return venue, reports


def ticket(**changes: object) -> OrderTicket:
    fields: dict[str, object] = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "symbol": "AAPL",
        "side": Side.BUY,
        "quantity": 100,
        "protection_price": Decimal("240.00"),
    }
    fields.update(changes)
    return OrderTicket(**fields)  # type: ignore[arg-type]


def run_to_end(venue: Venue, clock: FakeClock, steps: int = 50) -> None:
    for _ in range(steps):
        clock.advance()
        venue.execute_due_fills()


def types(reports: list[ExecutionReport]) -> list[ExecType]:
    return [r.exec_type for r in reports]


# Fill plans


def test_a_fill_plan_is_the_same_for_the_same_seed_and_order() -> None:
    assert plan_fills("o-42", 1000, rules(0.5)) == plan_fills("o-42", 1000, rules(0.5))
    plans = {tuple(f.quantity for f in plan_fills(f"o-{i}", 1000, rules(0.5))) for i in range(50)}
    assert len(plans) > 10  # yet orders differ from each other


def test_another_seed_plans_other_fills() -> None:
    ids = [f"o-{i}" for i in range(20)]
    assert [plan_fills(i, 1000, rules(0.5, seed=1)) for i in ids] != [
        plan_fills(i, 1000, rules(0.5, seed=2)) for i in ids
    ]


@pytest.mark.parametrize("quantity", [1, 2, 3, 7, 100, 1_000_000])
def test_fill_quantities_are_positive_and_sum_to_the_order(quantity: int) -> None:
    for i in range(100):
        plan = plan_fills(f"o-{i}", quantity, rules(1.0, max_fills=4))
        assert sum(f.quantity for f in plan) == quantity
        assert all(f.quantity > 0 for f in plan)
        assert min(2, quantity) <= len(plan) <= min(4, quantity)
        assert all(DELAY / 2 <= f.delay <= DELAY * 1.5 for f in plan)


def test_partial_fills_come_with_the_configured_probability() -> None:
    assert all(len(plan_fills(f"o-{i}", 100, rules(0.0))) == 1 for i in range(100))
    partial = sum(len(plan_fills(f"o-{i}", 100, rules(0.3))) > 1 for i in range(1000))
    assert 200 < partial < 400


# Submission


def test_malformed_submissions_name_every_field() -> None:
    with pytest.raises(InvalidRequest) as raised:
        order_ticket(order_id=" ", customer_id="", symbol="AAPL", side=None, quantity=0, protection_price="abc")
    fields = {v.field for v in raised.value.violations}
    assert fields == {"order_id", "customer_id", "side", "quantity", "protection_price"}


@pytest.mark.parametrize("price", ["", "abc", "0", "-1.00", "NaN", "Infinity"])
def test_the_protection_price_must_be_a_positive_decimal(price: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        order_ticket(order_id="o", customer_id="c", symbol="AAPL", side=Side.SELL, quantity=1, protection_price=price)
    assert [v.field for v in raised.value.violations] == ["protection_price"]


def test_a_well_formed_submission_is_a_ticket() -> None:
    made = order_ticket(
        order_id="o-1", customer_id="c-1", symbol=" aapl", side=Side.BUY, quantity=100, protection_price="240.00"
    )
    assert made == ticket()


def test_an_accepted_order_is_acknowledged_with_a_new_report() -> None:
    venue, reports = make_venue()
    ack = venue.submit(ticket())
    assert ack.accepted and not ack.duplicate and ack.reject_reason == ""
    assert ack.arrival_sequence == 1
    assert ack.venue_order_id.startswith("S1-")
    assert types(reports) == [ExecType.NEW]
    new = reports[0]
    assert (new.order_id, new.venue_order_id, new.last_quantity, new.last_price) == ("o-1", ack.venue_order_id, 0, None)
    assert (new.symbol, new.side, new.order_quantity, new.cumulative_quantity) == ("AAPL", Side.BUY, 100, 0)
    assert venue.order("o-1").status is OrderStatus.SUBMITTED


def test_arrival_sequences_follow_arrival_order() -> None:
    venue, _ = make_venue()
    acks = [venue.submit(ticket(order_id=f"o-{i}")) for i in range(5)]
    assert [a.arrival_sequence for a in acks] == [1, 2, 3, 4, 5]
    assert len({a.venue_order_id for a in acks}) == 5


def test_a_repeated_submit_gets_the_first_acknowledgement_and_creates_nothing() -> None:
    venue, reports = make_venue()
    first = venue.submit(ticket())
    again = venue.submit(ticket())
    assert again.duplicate
    assert (again.venue_order_id, again.arrival_sequence, again.accepted) == (
        first.venue_order_id,
        first.arrival_sequence,
        True,
    )
    assert venue.order("o-1").submissions == 2
    assert types(reports) == [ExecType.NEW]
    assert venue.submit(ticket(order_id="o-2")).arrival_sequence == 2


def test_a_repeated_submit_of_a_rejected_order_is_a_duplicate_too() -> None:
    venue, reports = make_venue()
    first = venue.submit(ticket(symbol="ZZZZ"))
    again = venue.submit(ticket(symbol="ZZZZ"))
    assert again.duplicate and not again.accepted and again.reject_reason == first.reject_reason
    assert types(reports) == [ExecType.REJECTED]


@pytest.mark.parametrize(
    "changes", [{"quantity": 101}, {"side": Side.SELL}, {"protection_price": Decimal("241")}, {"symbol": "MSFT"}]
)
def test_the_same_order_id_with_other_fields_is_refused(changes: dict[str, object]) -> None:
    venue, reports = make_venue()
    venue.submit(ticket())
    with pytest.raises(IdempotencyConflict):
        venue.submit(ticket(**changes))
    assert venue.order("o-1").submissions == 1
    assert len(reports) == 1


@pytest.mark.parametrize(
    ("changes", "venue_options", "reason"),
    [
        ({"symbol": "ZZZZ"}, {}, "unknown symbol 'ZZZZ'"),
        ({"symbol": "TSLA"}, {"halted": ("TSLA",)}, "halted"),
        ({}, {"market_open": False}, "market closed"),
    ],
)
def test_orders_the_venue_cannot_take_are_rejected(
    changes: dict[str, object], venue_options: dict[str, object], reason: str
) -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock, **venue_options)  # type: ignore[arg-type]
    ack = venue.submit(ticket(**changes))
    assert not ack.accepted and reason in ack.reject_reason
    assert ack.arrival_sequence == 1 and ack.venue_order_id
    assert types(reports) == [ExecType.REJECTED]
    assert reports[0].reason == ack.reject_reason and reports[0].cumulative_quantity == 0
    assert venue.order("o-1").status is OrderStatus.REJECTED
    run_to_end(venue, clock)
    assert len(reports) == 1


# Fills


def test_an_order_fills_once_its_delay_has_passed_at_the_current_price() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    venue.submit(ticket())
    assert venue.execute_due_fills() == []
    assert venue.next_fill_due() is not None
    clock.advance(DELAY * 1.5)
    filled = venue.execute_due_fills()
    assert types(filled) == [ExecType.FILL]
    assert (filled[0].last_quantity, filled[0].last_price, filled[0].cumulative_quantity) == (100, AAPL, 100)
    assert venue.order("o-1").status is OrderStatus.FILLED
    assert venue.next_fill_due() is None
    assert reports[-1] == filled[0]


def test_partial_fills_end_with_a_fill_and_cumulative_quantities_climb_to_the_order() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock, partial=1.0, max_fills=4)
    for i in range(20):
        venue.submit(ticket(order_id=f"o-{i}", quantity=10 + i))
    seen_partial = False
    while venue.next_fill_due() is not None:
        clock.advance(timedelta(milliseconds=5))
        for report in venue.execute_due_fills():
            order = venue.order(report.order_id)
            seen_partial |= report.exec_type is ExecType.PARTIAL_FILL and order.status is OrderStatus.PARTIALLY_FILLED
    for i in range(20):
        own = [r for r in reports if r.order_id == f"o-{i}"]
        assert own[0].exec_type is ExecType.NEW
        assert types(own[1:-1]) == [ExecType.PARTIAL_FILL] * (len(own) - 2)
        assert own[-1].exec_type is ExecType.FILL and own[-1].cumulative_quantity == 10 + i
        cumulative = [r.cumulative_quantity for r in own]
        assert cumulative == sorted(cumulative) and max(cumulative) <= 10 + i
        assert [sum(r.last_quantity for r in own[: k + 1]) for k in range(len(own))] == cumulative
    assert seen_partial


def test_a_fill_now_does_not_wait_for_its_delay() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    venue.submit(ticket())
    assert types(venue.fill_now("o-1")) == [ExecType.FILL]
    run_to_end(venue, clock)
    assert types(reports) == [ExecType.NEW, ExecType.FILL]


def test_a_halted_symbol_does_not_fill_until_trading_resumes() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    venue.submit(ticket())
    venue.market.halt("AAPL")
    run_to_end(venue, clock)
    assert types(reports) == [ExecType.NEW]
    venue.market.resume("AAPL")
    run_to_end(venue, clock)
    assert types(reports) == [ExecType.NEW, ExecType.FILL]


# The protection price


def test_a_buy_never_fills_above_its_protection_price_the_rest_is_canceled() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock, partial=1.0)
    venue.submit(ticket(quantity=100, protection_price=Decimal("230.00")))
    clock.advance(DELAY * 1.5)
    (first,) = venue.execute_due_fills()
    assert first.exec_type is ExecType.PARTIAL_FILL
    venue.market.reprice("AAPL", Decimal("230.01"))
    run_to_end(venue, clock)
    canceled = reports[-1]
    assert types(reports) == [ExecType.NEW, ExecType.PARTIAL_FILL, ExecType.CANCELED]
    assert "protection price 230.00" in canceled.reason and "230.01" in canceled.reason
    assert canceled.cumulative_quantity == first.last_quantity and canceled.last_price is None
    venue.market.reprice("AAPL", Decimal("200.00"))
    run_to_end(venue, clock)
    assert len(reports) == 3
    assert venue.order("o-1").status is OrderStatus.CANCELED


def test_a_sell_never_fills_below_its_protection_price() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    venue.submit(ticket(side=Side.SELL, protection_price=Decimal("227.51")))
    run_to_end(venue, clock)
    assert types(reports) == [ExecType.NEW, ExecType.CANCELED]
    assert reports[-1].cumulative_quantity == 0


def test_at_exactly_the_protection_price_an_order_fills() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    venue.submit(ticket(protection_price=AAPL))
    venue.submit(ticket(order_id="o-2", side=Side.SELL, protection_price=AAPL))
    run_to_end(venue, clock)
    assert [r.last_price for r in reports if r.exec_type is ExecType.FILL] == [AAPL, AAPL]


def test_no_fill_is_ever_beyond_the_protection_price_on_a_wild_path() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock, partial=1.0, max_fills=5)
    rng = random.Random(5)
    for i in range(40):
        side = Side.BUY if i % 2 else Side.SELL
        venue.submit(ticket(order_id=f"o-{i}", side=side, quantity=50, protection_price=Decimal("227.50")))
    for _ in range(100):
        venue.market.reprice("AAPL", Decimal("227.50") + Decimal(rng.randint(-30, 30)) / 100)
        clock.advance(timedelta(milliseconds=5))
        venue.execute_due_fills()
    fills = [r for r in reports if r.last_price is not None]
    assert fills and any(r.exec_type is ExecType.CANCELED for r in reports)
    for fill in fills:
        price, limit = fill.last_price or Decimal(0), Decimal("227.50")
        assert price <= limit if fill.side is Side.BUY else price >= limit


# Cancels


def test_a_working_order_is_canceled_and_nothing_fills_after_it() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock, partial=1.0)
    venue.submit(ticket())
    clock.advance(DELAY * 1.5)
    (first,) = venue.execute_due_fills()
    outcome = venue.cancel("o-1")
    assert outcome.accepted and outcome.reason == ""
    canceled = reports[-1]
    assert canceled.exec_type is ExecType.CANCELED and canceled.cumulative_quantity == first.last_quantity
    run_to_end(venue, clock)
    assert reports[-1] == canceled
    assert venue.order("o-1").status is OrderStatus.CANCELED


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("fill", "already filled"),
        ("cancel", "already canceled"),
        ("reject", "already rejected"),
    ],
)
def test_a_cancel_of_an_order_not_working_is_refused(setup: str, reason: str) -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    if setup == "fill":
        venue.submit(ticket())
        run_to_end(venue, clock)
    elif setup == "cancel":
        venue.submit(ticket())
        venue.cancel("o-1")
    elif setup == "reject":
        venue.submit(ticket(symbol="ZZZZ"))
    produced = len(reports)
    outcome = venue.cancel("o-1")
    assert not outcome.accepted and outcome.reason == reason
    assert len(reports) == produced


def test_a_cancel_after_the_last_fill_loses() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    venue.submit(ticket())
    clock.advance()  # the fill is due; it executes first
    venue.execute_due_fills()
    assert venue.cancel("o-1").reason == "already filled"
    assert types(reports) == [ExecType.NEW, ExecType.FILL]


def test_a_cancel_before_a_due_last_fill_executes_wins() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    venue.submit(ticket())
    clock.advance()  # the fill is due, but the cancel comes first
    assert venue.cancel("o-1").accepted
    assert venue.execute_due_fills() == []
    assert types(reports) == [ExecType.NEW, ExecType.CANCELED]
    assert reports[-1].cumulative_quantity == 0


# Reports


def test_exec_ids_are_unique_also_across_sessions() -> None:
    ids: list[str] = []
    for session in ("S1", "S2"):
        clock = FakeClock()
        venue, reports = make_venue(clock, partial=1.0, session=session)
        for i in range(30):
            venue.submit(ticket(order_id=f"o-{i}", symbol="ZZZZ" if i % 7 == 0 else "AAPL"))
        venue.cancel("o-3")
        run_to_end(venue, clock)
        ids += [r.exec_id for r in reports]
    assert len(ids) > 60 and len(set(ids)) == len(ids)


def test_every_report_carries_the_order_and_its_time() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    venue.submit(ticket())
    clock.advance()
    venue.execute_due_fills()
    assert [r.transact_time for r in reports] == [START, START + DELAY * 2]
    assert venue.order("o-1").reports == reports


# The drop copy


def test_the_drop_copy_lists_a_new_york_trading_days_reports_in_production_order() -> None:
    clock = FakeClock(datetime(2026, 11, 24, 3, 0, tzinfo=UTC))  # 22:00 on the 23rd in New York
    venue, reports = make_venue(clock)
    venue.submit(ticket(order_id="late", customer_id="c-9"))
    run_to_end(venue, clock)
    clock.now = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    venue.submit(ticket(order_id="a", customer_id="c-1"))
    venue.submit(ticket(order_id="b", customer_id="c-2", symbol="ZZZZ"))
    run_to_end(venue, clock)

    previous = venue.drop_copy(date(2026, 11, 23))
    assert [(e.report.order_id, e.report.exec_type, e.customer_id, e.arrival_sequence) for e in previous] == [
        ("late", ExecType.NEW, "c-9", 1),
        ("late", ExecType.FILL, "c-9", 1),
    ]
    today = venue.drop_copy(None)
    assert [e.report for e in today] == [r for r in reports if r.order_id != "late"]
    assert [(e.report.order_id, e.customer_id, e.arrival_sequence) for e in today] == [
        ("a", "c-1", 2),
        ("b", "c-2", 3),
        ("a", "c-1", 2),
    ]
    assert venue.drop_copy(date(2026, 11, 25)) == []


def test_trading_days_are_parsed_strictly() -> None:
    assert parse_trading_day("") is None
    assert parse_trading_day("2026-11-24") == date(2026, 11, 24)
    for malformed in ("2026-13-01", "24/11/2026", "20261124", "2026-1-5", "today"):
        with pytest.raises(InvalidRequest):
            parse_trading_day(malformed)


# Restart


def test_the_journal_has_each_arrival_before_its_reports_and_every_report_in_order() -> None:
    clock, journal = FakeClock(), RecordingJournal()
    venue, reports = make_venue(clock, partial=1.0, journal=journal)
    venue.submit(ticket(order_id="o-1"))
    venue.submit(ticket(order_id="o-2", symbol="ZZZZ"))
    run_to_end(venue, clock)
    venue.submit(ticket(order_id="o-1"))  # a duplicate changes nothing

    arrivals = [entry for entry in journal.history if isinstance(entry, Arrival)]
    assert [a.ticket.order_id for a in arrivals] == ["o-1", "o-2"]
    assert [a.acknowledgement.accepted for a in arrivals] == [True, False]
    assert [entry for entry in journal.history if isinstance(entry, ExecutionReport)] == reports
    mentions = [(e.ticket.order_id if isinstance(e, Arrival) else e.order_id, e) for e in journal.history]
    for order_id in ("o-1", "o-2"):
        first = next(entry for mentioned, entry in mentions if mentioned == order_id)
        assert isinstance(first, Arrival)


def test_a_restored_venue_remembers_every_order_and_report_and_fills_the_rest_as_planned() -> None:
    clock, journal = FakeClock(), RecordingJournal()
    venue, _ = make_venue(clock, partial=1.0, journal=journal)
    filled = venue.submit(ticket(order_id="o-filled", quantity=1))
    run_to_end(venue, clock)
    working = venue.submit(ticket(order_id="o-working", quantity=10))
    venue.fill_now("o-working")  # one fill of a plan of several
    venue.submit(ticket(order_id="o-canceled", quantity=10))
    venue.cancel("o-canceled")
    venue.submit(ticket(order_id="o-refused", symbol="ZZZZ"))

    restarted = FakeClock(clock.now + timedelta(minutes=5))
    restored, heard = make_venue(restarted, partial=1.0, session="S2")
    assert restored.restore(journal.history) == 1  # o-working only
    assert heard == []  # nothing is reported again
    assert restored.drop_copy(START.date()) == venue.drop_copy(START.date())
    assert [o.status for o in map(restored.order, ("o-filled", "o-canceled", "o-refused"))] == [
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.REJECTED,
    ]

    again = restored.submit(ticket(order_id="o-working", quantity=10))  # a worker resubmits after the restart
    assert again.duplicate and again.venue_order_id == working.venue_order_id
    assert restored.submit(ticket(order_id="o-filled", quantity=1)).venue_order_id == filled.venue_order_id
    assert restored.submit(ticket(order_id="o-new")).arrival_sequence == 5
    assert not restored.cancel("o-canceled").accepted

    run_to_end(restored, restarted)
    order = restored.order("o-working")
    assert order.status is OrderStatus.FILLED and order.cumulative_quantity == 10
    fills = [r.last_quantity for r in order.reports if r.exec_type.is_fill]
    assert fills == [f.quantity for f in plan_fills("o-working", 10, rules(1.0))]
    assert len({r.exec_id for r in restored.all_reports()}) == len(restored.all_reports())


def test_under_another_seed_a_restored_working_order_fills_its_rest_in_one_fill() -> None:
    clock, journal = FakeClock(), RecordingJournal()
    venue, _ = make_venue(clock, partial=1.0, journal=journal)
    venue.submit(ticket(order_id="o-1", quantity=10))
    venue.fill_now("o-1")
    first = venue.order("o-1").cumulative_quantity

    market = Market(DEMO_LISTINGS, seed=1, volatility=Decimal(0), opened_at=clock(), halted=())
    restored = Venue(market, rules(1.0, seed=99), clock=clock, market_clock=FixedSession(True), ids=VenueIds("S2"))
    restored.restore(journal.history)
    run_to_end(restored, clock)
    fills = [r.last_quantity for r in restored.order("o-1").reports if r.exec_type.is_fill]
    assert fills == [first, 10 - first]


def test_a_cancel_of_an_order_never_received_leaves_a_tombstone_that_refuses_it_for_the_day() -> None:
    clock = FakeClock()
    journal = RecordingJournal()
    venue, reports = make_venue(clock, journal=journal)

    outcome = venue.cancel("o-1")
    with pytest.raises(FailedPrecondition, match="canceled before it arrived"):
        venue.submit(ticket())

    assert (outcome.accepted, outcome.never_received) == (False, True)
    assert reports == [] and venue.find("o-1") is None  # it never arrived
    [tombstone] = venue.drop_copy(None)
    assert tombstone == Tombstone("o-1", START) and journal.history == [tombstone]
    clock.advance(timedelta(days=1))  # a new trading day: the tombstone was for the day
    assert venue.submit(ticket()).accepted


def test_a_restored_venue_keeps_its_tombstones() -> None:
    clock = FakeClock()
    journal = RecordingJournal()
    venue, _ = make_venue(clock, journal=journal)
    venue.cancel("o-1")

    restored, _ = make_venue(clock)
    restored.restore(journal.history)

    with pytest.raises(FailedPrecondition):
        restored.submit(ticket())
    assert restored.drop_copy(None) == venue.drop_copy(None)


def test_a_day_order_past_its_expiry_is_refused_without_arriving() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)

    with pytest.raises(FailedPrecondition, match="expired"):
        venue.submit(ticket(expires_at=START))

    assert reports == [] and venue.find("o-1") is None


def test_a_working_day_order_is_canceled_at_its_expiry() -> None:
    clock = FakeClock()
    venue, reports = make_venue(clock)
    venue.submit(ticket(expires_at=START + timedelta(minutes=5)))
    venue.order("o-1").pending_fills.clear()  # a market that does not fill it in time
    venue.order("o-1").next_fill_due = None

    assert venue.expire_due() == []
    clock.advance(timedelta(minutes=5))
    [expired] = venue.expire_due()

    assert expired.exec_type is ExecType.CANCELED and expired.reason.startswith("expired")
    assert venue.order("o-1").status is OrderStatus.CANCELED and reports[-1] == expired
    assert all(isinstance(e, DropCopyEntry) for e in venue.drop_copy(None))
