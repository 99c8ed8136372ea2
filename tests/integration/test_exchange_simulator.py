"""The exchange simulator over real gRPC, in-process on a free port, reporting to an in-process fake
CallbackService that records what it receives. Needs neither PostgreSQL nor NATS."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from brokerage.domain.executions import ExecType, ExecutionReport
from brokerage.domain.market_hours import trading_day
from brokerage.domain.orders import Side
from brokerage.proto import callback_pb2, callback_pb2_grpc, common_pb2, exchange_pb2, exchange_pb2_grpc
from devtools.stack import free_port
from exchange_simulator.journal import JournalError, JournalFile, read_journal
from exchange_simulator.main import SimulatorApp, start
from exchange_simulator.settings import SimulatorSettings
from exchange_simulator.tickets import OrderTicket
from exchange_simulator.venue import Acknowledgement, Arrival
from tests.factories import execution_report
from tests.integration.conftest import running_service

pytestmark = pytest.mark.integration

TOKEN = "s3cret"
NEW, PARTIAL, FILL, CANCELED, REJECTED = (
    common_pb2.EXEC_TYPE_NEW,
    common_pb2.EXEC_TYPE_PARTIAL_FILL,
    common_pb2.EXEC_TYPE_FILL,
    common_pb2.EXEC_TYPE_CANCELED,
    common_pb2.EXEC_TYPE_REJECTED,
)


class FakeCallback(callback_pb2_grpc.CallbackServiceServicer):
    """Records every report it receives and acknowledges. Unary: refuses the first `failures` calls, alternating
    two codes. Stream: refuses the first `refused_streams` streams the same way, and aborts each of the next
    `aborted_streams` with `abort_code` (OK: ends it) once it has received `abort_after` reports, the last of them
    recorded (as if booked) but not acknowledged."""

    def __init__(
        self,
        failures: int = 0,
        *,
        refused_streams: int = 0,
        aborted_streams: int = 0,
        abort_after: int = 1,
        abort_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
    ) -> None:
        self.failures = failures
        self.refused_streams = refused_streams
        self.aborted_streams = aborted_streams
        self.abort_after = abort_after
        self.abort_code = abort_code
        self.calls = 0
        self.streams = 0
        self.received: list[callback_pb2.ExecutionReport] = []
        self.authorizations: set[str] = set()

    async def ReportExecution(
        self, request: callback_pb2.ExecutionReport, context: aio.ServicerContext
    ) -> callback_pb2.ReportExecutionResponse:
        self.calls += 1
        self.authorizations.add(dict(context.invocation_metadata() or ()).get("authorization", ""))
        if self.calls <= self.failures:
            await context.abort(_alternating(self.calls), "not now")
        return callback_pb2.ReportExecutionResponse(duplicate=self._book(request))

    async def StreamExecutions(
        self, request_iterator: AsyncIterator[callback_pb2.ExecutionReportBatch], context: aio.ServicerContext
    ) -> AsyncIterator[callback_pb2.ExecutionAckBatch]:
        self.streams += 1
        stream = self.streams
        self.authorizations.add(dict(context.invocation_metadata() or ()).get("authorization", ""))
        if stream <= self.refused_streams:
            await context.abort(_alternating(stream), "not now")
        aborting = stream <= self.refused_streams + self.aborted_streams
        count = 0
        async for batch in request_iterator:
            acks = []
            for raw in batch.reports:
                request = callback_pb2.ExecutionReport.FromString(raw)
                count += 1
                duplicate = self._book(request)
                if aborting and count >= self.abort_after:
                    if self.abort_code == grpc.StatusCode.OK:
                        return  # ends the stream, owing its batch's acknowledgements
                    await context.abort(self.abort_code, "stream broken")
                acks.append(callback_pb2.ExecutionAck(exec_id=request.exec_id, duplicate=duplicate))
            yield callback_pb2.ExecutionAckBatch(acks=acks, batch_id=batch.batch_id)

    def _book(self, request: callback_pb2.ExecutionReport) -> bool:
        duplicate = any(r.exec_id == request.exec_id for r in self.received)
        self.received.append(request)
        return duplicate

    def of(self, order_id: str) -> list[callback_pb2.ExecutionReport]:
        return [r for r in self.received if r.order_id == order_id]

    def exec_ids(self) -> set[str]:
        return {r.exec_id for r in self.received}


def _alternating(attempt: int) -> grpc.StatusCode:
    return grpc.StatusCode.UNAVAILABLE if attempt % 2 else grpc.StatusCode.UNAUTHENTICATED


class CallbackServer:
    """The fake CallbackService served on a port it keeps across a stop and a start (a restart)."""

    def __init__(self, callback: FakeCallback, port: int = 0) -> None:
        self.callback = callback
        self.port = port
        self._server: aio.Server | None = None

    async def start(self) -> None:
        server = aio.server()
        callback_pb2_grpc.add_CallbackServiceServicer_to_server(self.callback, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None


class Harness:
    """A simulator and its fake CallbackService, and a stub to call the simulator with."""

    def __init__(self, app: SimulatorApp, server: CallbackServer, stub: exchange_pb2_grpc.ExchangeServiceStub) -> None:
        self.app = app
        self.server = server
        self.callback = server.callback
        self.stub = stub

    async def submit(self, order_id: str, **fields: object) -> exchange_pb2.SubmitOrderResponse:
        return await self.stub.SubmitOrder(submit_request(order_id, **fields), timeout=5)

    def venue_exec_ids(self) -> set[str]:
        return {r.exec_id for r in self.app.venue.all_reports()}

    def all_delivered(self) -> bool:
        return self.callback.exec_ids() == self.venue_exec_ids()


def submit_request(order_id: str, **fields: object) -> exchange_pb2.SubmitOrderRequest:
    values: dict[str, object] = {
        "order_id": order_id,
        "customer_id": "c-1",
        "symbol": "AAPL",
        "side": common_pb2.SIDE_BUY,
        "quantity": 100,
        "protection_price": "100000.00",
    }
    values.update(fields)
    return exchange_pb2.SubmitOrderRequest(**values)  # type: ignore[arg-type]


def simulator_settings(callback_port: int | None, **overrides: object) -> SimulatorSettings:
    values: dict[str, object] = {
        "grpc_port": 0,
        "seed": 11,
        "fill_delay_ms": 5,
        "partial_fill_probability": 1.0,
        "max_fills": 3,
        "price_step_ms": 10,
        "price_volatility": Decimal("0.001"),
        "callback_target": f"127.0.0.1:{callback_port}" if callback_port else "",
        "callback_token": TOKEN if callback_port else "",
        "callback_deadline_seconds": 1,
        "redelivery_backoff_initial_seconds": 0.01,
        "redelivery_backoff_max_seconds": 0.05,
        "shutdown_grace_seconds": 1,
    }
    values.update(overrides)
    return SimulatorSettings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running(
    callback: FakeCallback | None = None, *, deliver: bool = True, callback_up: bool = True, **overrides: object
) -> AsyncIterator[Harness]:
    """A fake CallbackService (not yet started unless callback_up) and a simulator with its background work;
    both stopped on exit. Delivery is over a stream unless callback_stream=False."""
    server = CallbackServer(callback or FakeCallback(), 0 if callback_up else free_port())
    if callback_up:
        await server.start()
    try:
        settings = simulator_settings(server.port if deliver else None, **overrides)
        async with running_service(start, settings) as app, aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Harness(app, server, exchange_pb2_grpc.ExchangeServiceStub(channel))
    finally:
        await server.stop()


@pytest.fixture
async def sim() -> AsyncIterator[Harness]:
    async with running() as harness:
        yield harness


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


FAILURES = "exchange_report_delivery_failures_total"
AWAITING = "exchange_reports_awaiting_delivery"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def failures() -> float:
    """Delivery failures for any reason."""
    (family,) = (m for m in REGISTRY.collect() if m.name == FAILURES.removesuffix("_total"))
    return sum(s.value for s in family.samples if s.name == FAILURES)


def field_violations(error: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    fields = set()
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields |= {v.field for v in bad_request.field_violations}
    return fields


MODES = pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])


@MODES
async def test_new_then_fills_reach_callback_service_with_the_bearer_token(stream: bool) -> None:
    async with running(callback_stream=stream) as sim:
        await _new_then_fills_arrive(sim)
        # over the one mode chosen only
        assert (sim.callback.streams > 0, sim.callback.calls > 0) == (stream, not stream)
        assert sim.callback.streams <= 1  # nothing broke: one stream carried everything


async def _new_then_fills_arrive(sim: Harness) -> None:
    ack = await sim.submit("o-1", customer_id="c-7", quantity=90)
    assert ack.accepted and not ack.duplicate and ack.arrival_sequence == 1
    assert ack.venue_order_id.startswith(sim.app.venue.session_id)

    await eventually(lambda: any(r.exec_type == FILL for r in sim.callback.of("o-1")))
    reports = sorted(sim.callback.of("o-1"), key=lambda r: (r.cumulative_quantity, r.exec_type != NEW))
    assert [r.exec_type for r in reports] == [NEW] + [PARTIAL] * (len(reports) - 2) + [FILL]
    assert len(reports) >= 3  # partial fill probability 1
    assert sim.callback.authorizations == {f"Bearer {TOKEN}"}
    assert reports[-1].cumulative_quantity == 90 == sum(r.last_quantity for r in reports)
    for report in reports:
        assert (report.venue_order_id, report.symbol, report.side, report.order_quantity) == (
            ack.venue_order_id,
            "AAPL",
            common_pb2.SIDE_BUY,
            90,
        )
        assert report.transact_time.seconds > 0
        assert (report.last_price != "") == (report.exec_type in (PARTIAL, FILL))
    assert all(Decimal(r.last_price) > 0 for r in reports[1:])
    order = sim.app.venue.order("o-1")
    assert (order.submissions, order.arrival_sequence, order.ticket.customer_id) == (1, 1, "c-7")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"order_id": ""}, "order_id"),
        ({"customer_id": ""}, "customer_id"),
        ({"side": common_pb2.SIDE_UNSPECIFIED}, "side"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": -3}, "quantity"),
        ({"protection_price": ""}, "protection_price"),
        ({"protection_price": "abc"}, "protection_price"),
        ({"protection_price": "-1"}, "protection_price"),
    ],
)
async def test_malformed_submissions_are_invalid_argument(sim: Harness, fields: dict[str, object], field: str) -> None:
    request = submit_request("o-1")
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(aio.AioRpcError) as raised:
        await sim.stub.SubmitOrder(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(raised.value)
    assert sim.app.venue.find("o-1") is None


async def test_a_repeated_submit_is_a_duplicate_and_other_fields_already_exist(sim: Harness) -> None:
    duplicates_before = metric("exchange_duplicate_submits_total")
    first = await sim.submit("o-1")
    second = await sim.submit("o-2")
    again = await sim.submit("o-1")
    assert again.duplicate and (again.venue_order_id, again.arrival_sequence) == (first.venue_order_id, 1)
    assert second.arrival_sequence == 2
    assert sim.app.venue.order("o-1").submissions == 2
    assert metric("exchange_duplicate_submits_total") == duplicates_before + 1
    with pytest.raises(aio.AioRpcError) as raised:
        await sim.submit("o-1", quantity=5)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (await sim.submit("o-3")).arrival_sequence == 3


@MODES
async def test_every_report_arrives_although_callback_service_fails_at_first(stream: bool) -> None:
    # Unary: the first 12 calls are refused; stream: the first 6 streams, before reading a report. Alternately
    # UNAVAILABLE and UNAUTHENTICATED: both are retried like any other failure.
    failures_before = {code: metric(FAILURES, reason=code) for code in ("UNAVAILABLE", "UNAUTHENTICATED")}
    all_failures_before = failures()
    callback = FakeCallback(refused_streams=6) if stream else FakeCallback(failures=12)
    async with running(callback, callback_stream=stream) as sim:
        for i in range(4):
            await sim.submit(f"o-{i}", quantity=10)
        await eventually(lambda: all(sim.app.venue.order(f"o-{i}").status.is_terminal for i in range(4)))
        await eventually(sim.all_delivered)
        if stream:  # a write racing the refusal may turn its status into INTERNAL (grpc/grpc#36066)
            assert sim.callback.streams > 6 and failures() >= all_failures_before + 6
        else:
            assert sim.callback.calls > 12
            for code, before in failures_before.items():
                assert metric(FAILURES, reason=code) >= before + 6
        await eventually(lambda: metric(AWAITING) == 0)


@pytest.mark.parametrize(
    "code",
    [getattr(grpc.StatusCode, name) for name in ("UNAVAILABLE", "INVALID_ARGUMENT", "UNAUTHENTICATED", "OK")],
    ids=lambda code: code.name,
)
async def test_a_stream_broken_midway_loses_nothing(code: grpc.StatusCode) -> None:
    # The first two streams end (aborted with the code; OK: closed) on their 3rd report, booked but unacknowledged.
    failures_before = failures()
    async with running(FakeCallback(aborted_streams=2, abort_after=3, abort_code=code)) as sim:
        for i in range(4):
            await sim.submit(f"o-{i}", quantity=10)
        await eventually(lambda: all(sim.app.venue.order(f"o-{i}").status.is_terminal for i in range(4)))
        await eventually(sim.all_delivered)
        assert sim.callback.streams >= 3
        copies = Counter(r.exec_id for r in sim.callback.received)
        assert max(copies.values()) >= 2, "the report booked but not acknowledged was sent again"
        assert failures() >= failures_before + 2  # by the code's name, or INTERNAL (grpc/grpc#36066)
        await eventually(lambda: metric(AWAITING) == 0)


@MODES
async def test_callback_service_down_at_start_and_restarted_midway_gets_everything(stream: bool) -> None:
    async with running(callback_up=False, callback_stream=stream) as sim:
        await sim.submit("o-1", quantity=10)
        await eventually(lambda: metric(AWAITING) > 0 and not sim.callback.received)
        await sim.server.start()
        await eventually(lambda: sim.app.venue.order("o-1").status.is_terminal and sim.all_delivered())

        await sim.server.stop()  # and while it is away, more reports wait
        await sim.submit("o-2", quantity=10)
        await eventually(lambda: sim.app.venue.order("o-2").status.is_terminal)
        await sim.server.start()
        await eventually(sim.all_delivered)
        await eventually(lambda: metric(AWAITING) == 0)


@MODES
async def test_chaos_delivers_twice_out_of_order_and_fills_before_the_acknowledgement(stream: bool) -> None:
    # Fills are due only after 2 s: only chaos can have filled an order by the time SubmitOrder answers.
    async with running(callback_stream=stream, chaos_rate=1.0, chaos_max_delay_ms=30, fill_delay_ms=2000) as sim:
        for i in range(3):
            ack = await sim.submit(f"o-{i}")
            assert ack.accepted
            arrived = {r.exec_type for r in sim.callback.of(f"o-{i}")}
            assert NEW in arrived and arrived & {PARTIAL, FILL}, "the first fill reached CallbackService first"
        await eventually(lambda: len(sim.callback.exec_ids()) == 6 and len(sim.callback.received) == 12)
        assert set(Counter(r.exec_id for r in sim.callback.received).values()) == {2}
        produced = {r.exec_id: i for i, r in enumerate(sim.app.venue.all_reports())}
        arrivals = [produced[r.exec_id] for r in sim.callback.received]
        assert arrivals != sorted(arrivals), "held copies were overtaken"
        assert (sim.callback.streams > 0, sim.callback.calls > 0) == (stream, not stream)
        await eventually(lambda: metric(AWAITING) == 0)


@MODES
async def test_get_order_status_resends_the_same_reports(stream: bool) -> None:
    async with running(callback_stream=stream) as sim:
        await _reports_resent(sim)


async def _reports_resent(sim: Harness) -> None:
    unknown = await sim.stub.GetOrderStatus(exchange_pb2.GetOrderStatusRequest(order_id="nope"), timeout=5)
    assert not unknown.known and unknown.order_id == "nope"

    ack = await sim.submit("o-1", quantity=30)
    await eventually(lambda: any(r.exec_type == FILL for r in sim.callback.of("o-1")))
    await eventually(lambda: sim.callback.exec_ids() == sim.venue_exec_ids())
    first_delivery = sim.callback.exec_ids()
    sim.callback.received.clear()

    status = await sim.stub.GetOrderStatus(
        exchange_pb2.GetOrderStatusRequest(order_id="o-1", resend_reports=True), timeout=5
    )
    assert status.known and status.venue_order_id == ack.venue_order_id
    assert (status.status, status.cumulative_quantity) == (common_pb2.ORDER_STATUS_FILLED, 30)
    assert {r.exec_id for r in status.reports} == first_delivery
    assert status.reports[0].exec_type == NEW and status.reports[-1].exec_type == FILL
    await eventually(lambda: sim.callback.exec_ids() == first_delivery)


async def test_a_working_order_is_canceled_and_reported() -> None:
    async with running(fill_delay_ms=5000) as sim:
        await sim.submit("o-1", quantity=40)
        canceled = await sim.stub.CancelOrder(exchange_pb2.ExchangeCancelRequest(order_id="o-1"), timeout=5)
        assert canceled.accepted and canceled.reason == ""
        await eventually(lambda: any(r.exec_type == CANCELED for r in sim.callback.of("o-1")))
        report = next(r for r in sim.callback.of("o-1") if r.exec_type == CANCELED)
        assert report.cumulative_quantity == 0 and report.reason and report.last_price == ""
        status = await sim.stub.GetOrderStatus(exchange_pb2.GetOrderStatusRequest(order_id="o-1"), timeout=5)
        assert status.status == common_pb2.ORDER_STATUS_CANCELED

        again = await sim.stub.CancelOrder(exchange_pb2.ExchangeCancelRequest(order_id="o-1"), timeout=5)
        unknown = await sim.stub.CancelOrder(exchange_pb2.ExchangeCancelRequest(order_id="nope"), timeout=5)
        assert (again.accepted, again.reason) == (False, "already canceled")
        assert (unknown.accepted, unknown.never_received) == (False, True)  # and a tombstone refuses it
        with pytest.raises(aio.AioRpcError) as raised:
            await sim.stub.CancelOrder(exchange_pb2.ExchangeCancelRequest(order_id=""), timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_slow_venue_has_the_order_before_its_caller_hears_so() -> None:
    async with running(ack_delay_ms=400) as sim:
        with pytest.raises(aio.AioRpcError) as gave_up:
            await sim.stub.SubmitOrder(submit_request("o-1"), timeout=0.1)
        assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert sim.app.venue.order("o-1").submissions == 1  # taken, though the caller never heard

        again = await sim.submit("o-1")
        assert again.duplicate and again.accepted and sim.app.venue.order("o-1").submissions == 2
        assert metric("exchange_orders_received_total", outcome="accepted") >= 1


async def test_a_filled_order_cannot_be_canceled(sim: Harness) -> None:
    await sim.submit("o-1", quantity=3)
    await eventually(lambda: sim.app.venue.order("o-1").status.is_terminal)
    refused = await sim.stub.CancelOrder(exchange_pb2.ExchangeCancelRequest(order_id="o-1"), timeout=5)
    assert (refused.accepted, refused.reason) == (False, "already filled")


async def test_quotes_and_halts() -> None:
    async with running(halted="TSLA", price_step_ms=60_000) as sim:  # no step between a quote and its check
        quotes = (await sim.stub.GetQuotes(exchange_pb2.GetQuotesRequest(), timeout=5)).quotes
        assert len(quotes) == 8 and {q.symbol for q in quotes} >= {"AAPL", "TSLA"}
        assert all(Decimal(q.price) > 0 and q.quoted_at.seconds > 0 for q in quotes)
        assert [q.symbol for q in quotes if q.halted] == ["TSLA"]
        (aapl,) = (await sim.stub.GetQuotes(exchange_pb2.GetQuotesRequest(symbols=["aapl"]), timeout=5)).quotes
        assert aapl.symbol == "AAPL" and Decimal(aapl.price) == sim.app.market.price("AAPL")

        with pytest.raises(aio.AioRpcError) as raised:
            await sim.stub.GetQuotes(exchange_pb2.GetQuotesRequest(symbols=["AAPL", "ZZZZ"]), timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "symbols" in field_violations(raised.value)

        for order_id, symbol, reason in (("o-1", "TSLA", "halted"), ("o-2", "ZZZZ", "unknown symbol")):
            ack = await sim.submit(order_id, symbol=symbol)
            assert not ack.accepted and reason in ack.reject_reason
            await eventually(partial(_only_rejected, sim.callback, order_id))


async def test_the_drop_copy_lists_every_order_in_arrival_order(sim: Harness) -> None:
    order_ids = [f"o-{i}" for i in range(6)]
    for i, order_id in enumerate(order_ids):
        await sim.submit(order_id, customer_id=f"c-{i % 3}", quantity=5 + i)
    await eventually(lambda: all(sim.app.venue.order(o).status.is_terminal for o in order_ids))

    today = datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    for day in ("", today):
        entries = (await sim.stub.GetDropCopy(exchange_pb2.GetDropCopyRequest(trading_day=day), timeout=5)).executions
        assert {e.report.exec_id for e in entries} == sim.venue_exec_ids()
        sequences = {e.report.order_id: e.arrival_sequence for e in entries}
        assert [sequences[o] for o in order_ids] == [1, 2, 3, 4, 5, 6]
        assert all(e.customer_id == f"c-{order_ids.index(e.report.order_id) % 3}" for e in entries)
        news = [e.report.order_id for e in entries if e.report.exec_type == NEW]
        assert news == order_ids  # in the order the venue produced them
    earlier = await sim.stub.GetDropCopy(exchange_pb2.GetDropCopyRequest(trading_day="2020-01-02"), timeout=5)
    assert list(earlier.executions) == []
    with pytest.raises(aio.AioRpcError) as raised:
        await sim.stub.GetDropCopy(exchange_pb2.GetDropCopyRequest(trading_day="02/01/2020"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_drop_copy_comes_in_pages_that_add_up_to_the_whole_day(sim: Harness) -> None:
    order_ids = [f"o-{i}" for i in range(5)]
    for order_id in order_ids:
        await sim.submit(order_id, quantity=3)
    await eventually(lambda: all(sim.app.venue.order(o).status.is_terminal for o in order_ids))
    whole = (await sim.stub.GetDropCopy(exchange_pb2.GetDropCopyRequest(), timeout=5)).executions
    assert len(whole) >= 10  # a NEW and at least one fill each: no page of 3 holds the day

    paged, request = [], exchange_pb2.GetDropCopyRequest(page_size=3)
    while True:
        page = await sim.stub.GetDropCopy(request, timeout=5)
        assert len(page.executions) <= 3
        paged += page.executions
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert paged == list(whole)

    for bad in (exchange_pb2.GetDropCopyRequest(page_size=10_001), exchange_pb2.GetDropCopyRequest(page_token="x")):
        with pytest.raises(aio.AioRpcError) as raised:
            await sim.stub.GetDropCopy(bad, timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_without_a_callback_target_reports_are_kept_for_status() -> None:
    async with running(deliver=False) as sim:
        await sim.submit("o-1", quantity=4)
        await eventually(lambda: sim.app.venue.order("o-1").status.is_terminal)
        status = await sim.stub.GetOrderStatus(
            exchange_pb2.GetOrderStatusRequest(order_id="o-1", resend_reports=True), timeout=5
        )
        assert status.status == common_pb2.ORDER_STATUS_FILLED and status.reports[-1].exec_type == FILL
        assert sim.callback.calls == sim.callback.streams == 0


async def test_a_simulator_restarted_on_its_journal_remembers_its_orders_and_its_day(tmp_path: Path) -> None:
    journals = tmp_path / "exchange" / "journals"
    journal = journals / f"{trading_day(datetime.now(UTC)).isoformat()}.jsonl"  # today's, of a file per day
    async with running(journal_dir=journals) as sim:
        first = await sim.submit("o-1", quantity=5)
        refused = await sim.submit("o-2", symbol="ZZZZ")
        await eventually(lambda: sim.app.venue.order("o-1").status.is_terminal)
        day = await sim.stub.GetDropCopy(exchange_pb2.GetDropCopyRequest(), timeout=5)
        history = sim.app.venue.all_reports()
    assert not refused.accepted and len(day.executions) == len(history) > 2
    assert [e for e in read_journal(journal) if isinstance(e, ExecutionReport)] == history

    async with running(journal_dir=journals) as sim:
        assert (await sim.stub.GetDropCopy(exchange_pb2.GetDropCopyRequest(), timeout=5)) == day
        again = await sim.submit("o-1", quantity=5)  # a worker resubmits after the restart: no second order
        assert again.duplicate and again.venue_order_id == first.venue_order_id
        assert (await sim.submit("o-3")).arrival_sequence == 3
        assert sim.app.venue.order("o-1").status.is_terminal and sim.app.venue.all_reports()[: len(history)] == history


def test_a_journal_cuts_off_a_torn_last_line_but_refuses_damage_before_it(tmp_path: Path) -> None:
    assert read_journal(tmp_path / "none-yet.jsonl") == []
    journal = tmp_path / "journal.jsonl"
    arrival = '{"arrival":{"order":{"order_id":"o-1","customer_id":"c-1","symbol":"AAPL","side":"SIDE_BUY",'
    arrival += '"quantity":3,"protection_price":"240.5"},'
    arrival += '"acknowledgement":{"venue_order_id":"S-O1","accepted":true,"arrival_sequence":1}}}'
    journal.write_text(arrival + "\n" + '{"report":{"exec_id":"S-E1","order_id"')  # killed mid-write
    (entry,) = read_journal(journal)
    assert isinstance(entry, Arrival) and entry.ticket.protection_price == Decimal("240.5")

    writer = JournalFile(journal)  # a restarted venue writes on: its first line must not join the torn one
    report = execution_report(
        "S2-E1",
        venue_order_id="S-O1",
        exec_type=ExecType.FILL,
        last_quantity=3,
        last_price=Decimal("227.1234"),
        cumulative_quantity=3,
        order_quantity=3,
    )
    writer.reported(report)
    writer.close()
    assert read_journal(journal) == [entry, report]

    journal.write_text("not json\n" + arrival + "\n")
    with pytest.raises(JournalError, match="line 1"):
        read_journal(journal)


async def test_reflection_lists_the_service_and_readiness_is_serving(sim: Harness) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{sim.app.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in stub.ServerReflectionInfo(iter([request]), timeout=5):
            names = {s.name for s in answer.list_services_response.service}
        assert {"broker.v1.ExchangeService", "grpc.health.v1.Health"} <= names

        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "readiness", "broker.v1.ExchangeService"):
            await eventually(partial(_serving, sim, name))
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def _only_rejected(callback: FakeCallback, order_id: str) -> bool:
    return [r.exec_type for r in callback.of(order_id)] == [REJECTED]


def _serving(sim: Harness, name: str) -> bool:
    return sim.app.running.health.servicer._server_status.get(name) == health_pb2.HealthCheckResponse.SERVING


async def test_a_restart_reads_only_todays_journal_and_an_earlier_day_is_read_from_its_own(tmp_path: Path) -> None:
    journals = tmp_path / "journals"
    earlier = date(2026, 11, 24)
    writer = JournalFile(journals / f"{earlier.isoformat()}.jsonl")  # a day long gone, as the venue kept it
    old = execution_report(
        "OLD-E1",
        "old-1",
        exec_type=ExecType.NEW,
        last_quantity=0,
        last_price=None,
        cumulative_quantity=0,
        order_quantity=3,
        transact_time=datetime(2026, 11, 24, 15, tzinfo=UTC),
    )
    writer.arrived(
        Arrival(OrderTicket("old-1", "c-1", "AAPL", Side.BUY, 3, Decimal("240")), Acknowledgement("S-O1", True, "", 1))
    )
    writer.reported(old)
    writer.close()

    async with running(journal_dir=journals) as sim:
        assert sim.app.venue.find("old-1") is None  # not replayed: its day is over
        past = await sim.stub.GetDropCopy(exchange_pb2.GetDropCopyRequest(trading_day=earlier.isoformat()), timeout=5)
        today = await sim.stub.GetDropCopy(exchange_pb2.GetDropCopyRequest(), timeout=5)

    assert [e.report.exec_id for e in past.executions] == ["OLD-E1"] and today.executions == []
