"""No bad report holds the money path (DESIGN.md rule 7): CallbackService in-process against real PostgreSQL, fed
malformed, refused and lost-in-flight reports beside good ones. Each report is parsed and booked on its own: a
malformed or refused one is acknowledged and kept whole as a break, the reports around it are booked, the stream
goes on, and only a failure that may pass (the connection lost) leaves reports unacknowledged, never a break."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import psycopg
import pytest

from brokerage.proto import callback_pb2, callback_pb2_grpc, orders_pb2, orders_pb2_grpc
from brokerage.wire import reports_batch
from callback_service.main import CallbackApp
from exchange_simulator.chaos import _broken
from tests.integration.test_settlement import AUTH, FILL, NEW, at_exchange, order_row, report

pytestmark = pytest.mark.integration

BOOKED, DUPLICATE, BREAK = (
    callback_pb2.REPORT_OUTCOME_BOOKED,
    callback_pb2.REPORT_OUTCOME_DUPLICATE,
    callback_pb2.REPORT_OUTCOME_BREAK,
)


class Reporter:
    """One StreamExecutions stream, batch by batch: each batch written, its acknowledgement awaited."""

    def __init__(self, stub: callback_pb2_grpc.CallbackServiceStub) -> None:
        self._call = stub.StreamExecutions(metadata=AUTH)
        self._batch_ids = iter(range(1, 1_000))

    async def send(self, *reports: callback_pb2.ExecutionReport | bytes) -> callback_pb2.ExecutionAckBatch:
        batch = reports_batch(list(reports), next(self._batch_ids))
        await self._call.write(batch)
        answer = await asyncio.wait_for(self._call.read(), timeout=30)
        assert answer.batch_id == batch.batch_id
        return answer

    async def close(self) -> None:
        await self._call.done_writing()
        assert await self._call.code() == grpc.StatusCode.OK


@pytest.fixture
async def stream(reporter: callback_pb2_grpc.CallbackServiceStub) -> AsyncIterator[Reporter]:
    opened = Reporter(reporter)
    yield opened
    await opened.close()


async def placed_at_exchange(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection, count: int
) -> list[orders_pb2.Order]:
    return [await at_exchange(stub, db, key=f"k-{i}", customer=str(1 + i % 20), quantity=1) for i in range(count)]


def breaks(db: psycopg.Connection) -> list[tuple[str, str | None, bytes | None, bool]]:
    rows = db.execute("SELECT kind, exec_id, report_bytes, resolved_at IS NULL FROM breaks ORDER BY break_id")
    return [tuple(row) for row in rows.fetchall()]  # type: ignore[misc]


async def test_a_batch_of_64_with_bad_utf8_and_a_bad_price_books_62_breaks_2_and_the_stream_goes_on(
    stub: orders_pb2_grpc.OrderServiceStub, stream: Reporter, db: psycopg.Connection
) -> None:
    orders = await placed_at_exchange(stub, db, 33)
    good = [r for o in orders[:31] for r in (report(o, NEW), report(o, FILL, last=1, price="230.00", cumulative=1))]
    broken = report(orders[31], FILL, last=1, price="230.00", cumulative=1)
    bad_utf8 = _broken(broken, "utf8")
    bad_price = report(orders[32], FILL, last=1, price="230,00", cumulative=1)
    batch = [*good[:20], bad_utf8, *good[20:40], bad_price, *good[40:]]
    assert len(batch) == 64

    answer = await stream.send(*batch)

    outcomes = [ack.outcome for ack in answer.acks]
    assert outcomes == [BREAK if r in (bad_utf8, bad_price) else BOOKED for r in batch]
    assert [order_row(db, o.order_id)[0] for o in orders] == ["FILLED"] * 31 + ["SUBMITTED"] * 2
    assert [(kind, exec_id, raw) for kind, exec_id, raw, _ in breaks(db)] == [
        ("malformed", broken.exec_id, bad_utf8),  # its ids still read off its bytes
        ("malformed", bad_price.exec_id, bad_price.SerializeToString()),
    ]
    fill = report(orders[31], FILL, last=1, price="231.00", cumulative=1)
    assert [a.outcome for a in (await stream.send(fill)).acks] == [BOOKED]  # the stream goes on


async def test_a_well_formed_copy_of_a_malformed_report_is_booked_and_supersedes_its_break(
    stub: orders_pb2_grpc.OrderServiceStub, stream: Reporter, db: psycopg.Connection
) -> None:
    [order] = await placed_at_exchange(stub, db, 1)
    fill = report(order, FILL, last=1, price="230.00", cumulative=1)
    malformed = callback_pb2.ExecutionReport()
    malformed.CopyFrom(fill)
    malformed.last_price = "two hundred"

    first = await stream.send(malformed, malformed)  # twice: one break, under its exec_id
    second = await stream.send(fill)
    third = await stream.send(malformed)  # late: the fill is booked, the copy is nothing more

    assert [a.outcome for a in (*first.acks, *second.acks, *third.acks)] == [BREAK, DUPLICATE, BOOKED, DUPLICATE]
    assert order_row(db, order.order_id)[:2] == ("FILLED", 1)
    assert [(kind, exec_id, is_open) for kind, exec_id, _, is_open in breaks(db)] == [
        ("malformed", fill.exec_id, False)
    ]
    resolution = db.execute("SELECT resolution, resolved_by FROM breaks").fetchone()
    assert resolution == ("superseded", "settlement")


async def test_a_report_the_database_refuses_is_kept_whole_and_the_reports_beside_it_are_booked(
    stub: orders_pb2_grpc.OrderServiceStub, stream: Reporter, db: psycopg.Connection
) -> None:
    orders = await placed_at_exchange(stub, db, 3)
    db.execute("""CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN IF NEW.exec_id = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$""")
    db.execute("CREATE TRIGGER refuse_poison BEFORE INSERT ON executions FOR EACH ROW EXECUTE FUNCTION refuse_poison()")
    fills = [report(o, FILL, last=1, price="230.00", cumulative=1) for o in orders]
    fills[1].exec_id = "poison"

    answer = await stream.send(*fills)

    assert [a.outcome for a in answer.acks] == [BOOKED, BREAK, BOOKED]
    assert [order_row(db, o.order_id)[0] for o in orders] == ["FILLED", "SUBMITTED", "FILLED"]
    [(kind, exec_id, raw, is_open)] = breaks(db)
    assert (kind, exec_id, raw, is_open) == ("refused", "poison", fills[1].SerializeToString(), True)


async def test_a_connection_lost_mid_batch_makes_no_break_and_the_report_is_booked_once_sent_again(
    stub: orders_pb2_grpc.OrderServiceStub,
    reporter: callback_pb2_grpc.CallbackServiceStub,
    db: psycopg.Connection,
    seeded_database: str,
) -> None:
    [order] = await placed_at_exchange(stub, db, 1)
    fill = report(order, FILL, last=1, price="230.00", cumulative=1)
    stream = Reporter(reporter)
    with psycopg.connect(seeded_database) as holder:  # the customer held: the booking waits on its lock
        holder.execute("SELECT 1 FROM balances WHERE customer_id = %s FOR UPDATE", (order.customer_id,))
        sending = asyncio.create_task(stream.send(fill))
        while not sending.done():  # every attempt's connection lost, mid-transaction, until the booking gives up
            if (waiting := await _backend_waiting_on_a_lock(db, sending)) is not None:
                db.execute("SELECT pg_terminate_backend(%s)", (waiting,))
        holder.rollback()

    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await sending
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE  # unacknowledged: the exchange sends it again
    assert breaks(db) == [] and order_row(db, order.order_id)[:2] == ("SUBMITTED", 0)

    again = Reporter(reporter)
    assert [a.outcome for a in (await again.send(fill)).acks] == [BOOKED]
    await again.close()
    assert order_row(db, order.order_id)[:2] == ("FILLED", 1)
    assert breaks(db) == []


async def test_bytes_no_protobuf_can_read_are_acknowledged_once_and_kept_whole(
    reporter: callback_pb2_grpc.CallbackServiceStub, callback: CallbackApp, db: psycopg.Connection
) -> None:
    raw = b"\x0a\x05abc"  # the exec_id's length runs past the end: no id to read
    async with grpc.aio.insecure_channel(f"127.0.0.1:{callback.running.port}") as channel:
        call = channel.unary_unary(
            "/broker.v1.CallbackService/ReportExecution",
            request_serializer=None,
            response_deserializer=callback_pb2.ReportExecutionResponse.FromString,
        )
        answers = [await call(raw, metadata=AUTH, timeout=5) for _ in range(2)]

    assert [a.outcome for a in answers] == [BREAK, DUPLICATE]
    assert [(kind, exec_id, kept) for kind, exec_id, kept, _ in breaks(db)] == [("malformed", None, raw)]


async def _backend_waiting_on_a_lock(db: psycopg.Connection, sending: asyncio.Task[object]) -> int | None:
    """The backend waiting on the customer's lock once there is one; None if the sending ended meanwhile."""
    query = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    for _ in range(400):
        if sending.done():
            return None
        if row := db.execute(query).fetchone():
            return int(row[0])
        await asyncio.sleep(0.025)
    raise AssertionError("no backend waited on the customer's lock")


def _malformed_copy(db: psycopg.Connection, exec_id: str, order_id: str) -> list[tuple[int, str]]:
    rows = db.execute(
        "SELECT * FROM record_malformed_reports(%s, %s, %s, %s, %s, %s)",
        ([f"malformed:{exec_id}"], ["malformed"], [exec_id], [order_id], ["a bad copy"], [b"\xff"]),
    )
    return [tuple(row) for row in rows.fetchall()]  # type: ignore[misc]


def _good_copy(db: psycopg.Connection, exec_id: str, order_id: str) -> str:
    row = db.execute(
        "SELECT outcome FROM apply_execution_report(%s, %s, %s, 'FILL', 1, 230.00, 1, '', now(), 'AAPL', 'BUY', 1)",
        (exec_id, order_id, "V-" + order_id),
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("first", ["good", "malformed"])
async def test_a_malformed_copy_and_a_good_one_settled_at_once_leave_no_open_break(
    stub: orders_pb2_grpc.OrderServiceStub, db: psycopg.Connection, seeded_database: str, first: str
) -> None:
    """Two transactions, neither committed when the other looks: the second waits for the first, then sees it."""
    (order,) = await placed_at_exchange(stub, db, 1)
    exec_id = f"race-{first}"
    with psycopg.connect(seeded_database) as one, psycopg.connect(seeded_database) as other:
        if first == "good":
            assert _good_copy(one, exec_id, order.order_id) == "applied"
            second = asyncio.create_task(asyncio.to_thread(_malformed_copy, other, exec_id, order.order_id))
        else:
            assert _malformed_copy(one, exec_id, order.order_id) == [(1, "break")]
            second = asyncio.create_task(asyncio.to_thread(_good_copy, other, exec_id, order.order_id))
        await asyncio.sleep(0.5)
        assert not second.done()  # it waits for the first to commit, rather than looking past it
        one.commit()
        answer = await asyncio.wait_for(second, timeout=10)
        other.commit()

    open_breaks = db.execute("SELECT count(*) FROM breaks WHERE exec_id = %s AND resolved_at IS NULL", (exec_id,))
    booked = db.execute("SELECT count(*) FROM executions WHERE exec_id = %s", (exec_id,))
    assert answer == ([(1, "duplicate")] if first == "good" else "applied")
    assert (open_breaks.fetchone(), booked.fetchone()) == ((0,), (1,))
