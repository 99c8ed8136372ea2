"""The streaming delivery's at-least-once bookkeeping, without a network: the report queue alone, and the delivery over
fake streams that the test acknowledges, breaks or leaves hanging."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from brokerage.background import Backoff
from brokerage.domain.executions import ExecutionReport
from exchange_simulator.chaos import Chaos
from exchange_simulator.delivery import DeliveryFailed
from exchange_simulator.report_queue import ReportQueue
from exchange_simulator.settings import SimulatorSettings
from exchange_simulator.stream_delivery import ENDED, StreamDelivery
from tests.factories import execution_report


def report(exec_id: str) -> ExecutionReport:
    return execution_report(exec_id, venue_order_id="v-1", transact_time=datetime(2026, 1, 5, 15, 0, tzinfo=UTC))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def delivered() -> float:
    return metric("exchange_reports_delivered_total")


def awaiting() -> float:
    return metric("exchange_reports_awaiting_delivery")


def failures(reason: str) -> float:
    return metric("exchange_report_delivery_failures_total", reason=reason)


# The report queue alone


def exec_ids(reports: list[ExecutionReport]) -> list[str]:
    return [r.exec_id for r in reports]


def test_the_window_bounds_what_is_in_flight() -> None:
    queue = ReportQueue(window=2)
    for exec_id in "abc":
        queue.add(report(exec_id))
    assert exec_ids(queue.take(10)) == ["a", "b"]
    assert queue.take(10) == [] and (queue.in_flight, len(queue)) == (2, 3)
    assert queue.acknowledge("a")
    assert exec_ids(queue.take(10)) == ["c"]


def test_a_batch_takes_at_most_its_limit_oldest_first() -> None:
    queue = ReportQueue(window=10)
    for exec_id in "abcde":
        queue.add(report(exec_id))
    assert [exec_ids(queue.take(2)) for _ in range(4)] == [["a", "b"], ["c", "d"], ["e"], []]
    assert queue.in_flight == 5


def test_an_acknowledgement_of_nothing_in_flight_changes_nothing() -> None:
    queue = ReportQueue(window=4)
    queue.add(report("a"))
    assert not queue.acknowledge("a")  # waiting, not yet sent: it still has to go
    queue.take(1)
    assert not queue.acknowledge("zzz")
    assert queue.acknowledge("a") and not queue.acknowledge("a")
    assert len(queue) == 0


def test_two_copies_in_flight_need_two_acknowledgements() -> None:
    queue = ReportQueue(window=4)
    queue.add(report("a"))
    queue.add(report("a"))
    queue.take(2)
    assert queue.acknowledge("a") and queue.in_flight == 1
    assert queue.acknowledge("a") and queue.in_flight == 0


def test_a_broken_stream_puts_what_was_in_flight_back_first() -> None:
    queue = ReportQueue(window=3)
    for exec_id in "abcde":
        queue.add(report(exec_id))
    queue.take(3)
    queue.acknowledge("b")
    assert queue.requeue() == 2 and queue.in_flight == 0
    assert exec_ids(queue.take(10)) == ["a", "c", "d"]  # the window again; "e" still waits


# The delivery over fake streams


class FakeStream:
    """Records the batches written; reads the batches of acknowledgements the test sends; ends when the test breaks
    it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.cancelled = False
        self._acks: asyncio.Queue[list[str] | DeliveryFailed] = asyncio.Queue()

    @property
    def sent(self) -> list[str]:
        return [exec_id for batch in self.batches for exec_id in batch]

    async def write(self, reports: Sequence[ExecutionReport]) -> None:
        self.batches.append(exec_ids([*reports]))
        await asyncio.sleep(0)  # a write gives way, as a real one does, while more reports may come

    async def read(self) -> list[str]:
        acks = await self._acks.get()
        if isinstance(acks, DeliveryFailed):
            raise acks
        return acks

    def cancel(self) -> None:
        self.cancelled = True

    def ack(self, *exec_ids: str) -> None:
        """One batch of acknowledgements."""
        self._acks.put_nowait([*exec_ids])

    def end(self, reason: str) -> None:
        self._acks.put_nowait(DeliveryFailed(reason, "broken by the test"))


class Callback:
    """Opens fake streams; refuses to open while `refusing` is set."""

    def __init__(self) -> None:
        self.streams: list[FakeStream] = []
        self.refusing = 0

    def open(self) -> FakeStream:
        if self.refusing:
            self.refusing -= 1
            raise ConnectionError("no route")
        self.streams.append(FakeStream())
        return self.streams[-1]

    @property
    def current(self) -> FakeStream:
        return self.streams[-1]


class ScriptedChaos(Chaos):
    """Chaos told what to do: copies of every report, and each report's delay by exec_id."""

    def __init__(self, copies: int = 1, delays: dict[str, float] | None = None) -> None:
        super().__init__(rate=0.0, max_delay_seconds=0.0)
        self._copies = copies
        self._delays = delays or {}
        self._next_delay = 0.0

    def copies(self) -> int:
        return self._copies

    def delivery_delay(self) -> float:
        return self._next_delay

    def hold(self, exec_id: str) -> None:
        self._next_delay = self._delays.get(exec_id, 0.0)


def delivery(
    callback: Callback,
    *,
    window: int = 8,
    batches_in_flight: int = 8,
    batch_max: int = 100,
    ack_timeout: float = 5.0,
    chaos: Chaos | None = None,
) -> StreamDelivery:
    return StreamDelivery(
        callback.open,
        window=window,
        batches_in_flight=batches_in_flight,
        batch_max=batch_max,
        ack_timeout=ack_timeout,
        backoff=Backoff(0.001, 0.002),
        chaos=chaos or Chaos(0.0, 0.0),
        rng=random.Random(1),
    )


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def test_reports_go_out_on_one_stream_and_are_retired_by_their_acknowledgements() -> None:
    callback, (delivered_before, awaiting_before) = Callback(), (delivered(), awaiting())
    sink = delivery(callback)
    try:
        for exec_id in "abc":
            sink.enqueue(report(exec_id))
        await until(lambda: bool(callback.streams) and callback.current.sent == ["a", "b", "c"])
        assert awaiting() == awaiting_before + 3
        callback.current.ack("c", "a")  # in any order
        assert await sink.wait_delivered(["a", "c"], timeout=1)
        assert not await sink.wait_delivered(["b"], timeout=0.01)
        callback.current.ack("b")
        assert await sink.wait_delivered(["a", "b", "c"], timeout=1)
        assert (delivered(), awaiting()) == (delivered_before + 3, awaiting_before)
        assert len(callback.streams) == 1
    finally:
        await sink.close()


async def test_what_waits_goes_in_batches_within_their_limit_and_the_window_and_a_lone_report_at_once() -> None:
    callback = Callback()
    sink = delivery(callback, window=4, batch_max=3)
    try:
        for exec_id in "abcde":
            sink.enqueue(report(exec_id))
        await until(lambda: bool(callback.streams) and callback.current.batches == [["a", "b", "c"], ["d"]])
        callback.current.ack("a", "b")  # room in the window again
        await until(lambda: callback.current.batches[2:] == [["e"]])
        callback.current.ack("c", "d", "e")
        sink.enqueue(report("f"))
        await until(lambda: callback.current.batches[3:] == [["f"]])
        callback.current.ack("f")
        assert await sink.wait_delivered("abcdef", timeout=1)
    finally:
        await sink.close()


async def test_while_enough_batches_are_out_new_reports_wait_to_go_together() -> None:
    callback = Callback()
    sink = delivery(callback, batches_in_flight=2)
    try:
        sink.enqueue(report("a"))
        await until(lambda: bool(callback.streams) and callback.current.batches == [["a"]])
        sink.enqueue(report("b"))
        await until(lambda: callback.current.batches == [["a"], ["b"]])  # a second batch may go at once
        for exec_id in "cde":
            sink.enqueue(report(exec_id))
            await asyncio.sleep(0.005)
        assert callback.current.batches == [["a"], ["b"]]  # two are out: c, d and e wait
        callback.current.ack("a")
        await until(lambda: callback.current.batches == [["a"], ["b"], ["c", "d", "e"]])
        callback.current.ack("b")
        callback.current.ack("c", "d", "e")
        assert await sink.wait_delivered("abcde", timeout=1)
    finally:
        await sink.close()


async def test_a_broken_stream_is_reopened_and_its_unacknowledged_reports_sent_first() -> None:
    callback, failures_before = Callback(), failures("UNAVAILABLE")
    sink = delivery(callback)
    try:
        for exec_id in "abc":
            sink.enqueue(report(exec_id))
        await until(lambda: bool(callback.streams) and len(callback.current.sent) == 3)
        first = callback.current
        first.ack("b")
        first.end("UNAVAILABLE")
        await until(lambda: len(callback.streams) == 2 and len(callback.current.sent) == 2)
        assert first.cancelled and callback.current.sent == ["a", "c"]
        sink.enqueue(report("d"))  # then new ones continue on the new stream
        await until(lambda: callback.current.sent == ["a", "c", "d"])
        callback.current.ack("a", "c", "d")
        assert await sink.wait_delivered("abcd", timeout=1)
        assert failures("UNAVAILABLE") == failures_before + 1
    finally:
        await sink.close()


async def test_streams_that_cannot_open_are_retried_with_backoff() -> None:
    callback = Callback()
    callback.refusing = 3
    sink = delivery(callback)
    try:
        sink.enqueue(report("a"))
        await until(lambda: bool(callback.streams) and callback.current.sent == ["a"])
        callback.current.ack("a")
        assert await sink.wait_delivered(["a"], timeout=1)
    finally:
        await sink.close()


async def test_acknowledgements_of_what_is_not_in_flight_are_ignored() -> None:
    callback, delivered_before = Callback(), delivered()
    sink = delivery(callback)
    try:
        sink.enqueue(report("a"))
        sink.enqueue(report("b"))
        await until(lambda: bool(callback.streams) and len(callback.current.sent) == 2)
        callback.current.ack("nope", "a", "a")  # unknown, then "a" twice: only one copy of it was sent
        assert await sink.wait_delivered(["a"], timeout=1)
        await asyncio.sleep(0.01)
        assert delivered() == delivered_before + 1
        callback.current.end("UNAVAILABLE")  # "b" was not acknowledged: it goes again
        await until(lambda: len(callback.streams) == 2 and callback.current.sent == ["b"])
    finally:
        await sink.close()


async def test_a_duplicated_report_is_two_copies_each_acknowledged() -> None:
    callback, (delivered_before, awaiting_before) = Callback(), (delivered(), awaiting())
    sink = delivery(callback, chaos=ScriptedChaos(copies=2))
    try:
        sink.enqueue(report("a"))
        await until(lambda: bool(callback.streams) and callback.current.sent == ["a", "a"])
        callback.current.ack("a")
        assert await sink.wait_delivered(["a"], timeout=1)  # the first copy's acknowledgement is enough to wait
        assert (delivered(), awaiting()) == (delivered_before + 1, awaiting_before + 1)
        callback.current.end("UNAVAILABLE")  # the second copy's acknowledgement never came: it goes again
        await until(lambda: len(callback.streams) == 2 and callback.current.sent == ["a"])
        callback.current.ack("a")
        await until(lambda: awaiting() == awaiting_before)
        assert delivered() == delivered_before + 2
    finally:
        await sink.close()


async def test_a_held_report_is_overtaken() -> None:
    callback = Callback()
    chaos = ScriptedChaos(delays={"a": 0.02})
    sink = delivery(callback, chaos=chaos)
    try:
        for exec_id in "ab":
            chaos.hold(exec_id)
            sink.enqueue(report(exec_id))
        await until(lambda: bool(callback.streams) and callback.current.sent == ["b", "a"])
    finally:
        await sink.close()


async def test_the_window_holds_back_the_rest_until_acknowledgements_come() -> None:
    callback = Callback()
    sink = delivery(callback, window=2)
    try:
        for exec_id in "abcd":
            sink.enqueue(report(exec_id))
        await until(lambda: bool(callback.streams) and len(callback.current.sent) == 2)
        await asyncio.sleep(0.01)
        assert callback.current.sent == ["a", "b"]
        callback.current.ack("b")
        await until(lambda: callback.current.sent == ["a", "b", "c"])
    finally:
        await sink.close()


async def test_a_stream_that_stops_acknowledging_is_given_up() -> None:
    callback, failures_before = Callback(), failures("DEADLINE_EXCEEDED")
    sink = delivery(callback, ack_timeout=0.02)
    try:
        sink.enqueue(report("a"))
        await until(lambda: len(callback.streams) == 2 and callback.current.sent == ["a"])
        assert callback.streams[0].cancelled
        assert failures("DEADLINE_EXCEEDED") >= failures_before + 1
    finally:
        await sink.close()


async def test_a_stream_closed_owing_nothing_is_no_failure_and_reopens_on_demand() -> None:
    callback, failures_before = Callback(), failures(ENDED)
    sink = delivery(callback)
    try:
        sink.enqueue(report("a"))
        await until(lambda: bool(callback.streams) and callback.current.sent == ["a"])
        callback.current.ack("a")
        callback.current.end(ENDED)
        await asyncio.sleep(0.01)
        assert len(callback.streams) == 1  # nothing to send: no new stream yet
        sink.enqueue(report("b"))
        await until(lambda: len(callback.streams) == 2 and callback.current.sent == ["b"])
        assert failures(ENDED) == failures_before
    finally:
        await sink.close()


async def test_close_cancels_the_stream_and_forgets_what_waits() -> None:
    callback, awaiting_before = Callback(), awaiting()
    chaos = ScriptedChaos(delays={"b": 10.0})
    sink = delivery(callback, chaos=chaos)
    for exec_id in "ab":
        chaos.hold(exec_id)
        sink.enqueue(report(exec_id))
    await until(lambda: bool(callback.streams) and callback.current.sent == ["a"])
    await sink.close()
    assert callback.current.cancelled and awaiting() == awaiting_before
    sink.enqueue(report("c"))  # after close: ignored
    assert awaiting() == awaiting_before


@pytest.mark.parametrize("reason", ["UNAUTHENTICATED", "INVALID_ARGUMENT", ENDED])
async def test_any_ending_owing_reports_sends_them_again(reason: str) -> None:
    callback = Callback()
    sink = delivery(callback)
    try:
        sink.enqueue(report("a"))
        await until(lambda: bool(callback.streams) and callback.current.sent == ["a"])
        callback.current.end(reason)
        await until(lambda: len(callback.streams) == 2 and callback.current.sent == ["a"])
        callback.current.ack("a")
        assert await sink.wait_delivered(["a"], timeout=1)
    finally:
        await sink.close()


def test_reports_travel_over_a_stream_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXCHANGE_CALLBACK_STREAM", raising=False)
    assert SimulatorSettings().callback_stream
    monkeypatch.setenv("EXCHANGE_CALLBACK_STREAM", "false")
    monkeypatch.setenv("EXCHANGE_CALLBACK_STREAM_WINDOW", "16")
    settings = SimulatorSettings()
    assert (settings.callback_stream, settings.callback_stream_window) == (False, 16)


async def test_a_replayed_report_goes_again_long_after_its_first_copy() -> None:
    callback = Callback()
    chaos = Chaos(0.0, 0.0, replay_rate=1.0, replay_delay_seconds=0.05)
    sink = delivery(callback, chaos=chaos)
    try:
        sink.enqueue(report("a"))
        await until(lambda: bool(callback.streams) and callback.current.sent == ["a"])
        callback.current.ack("a")
        sink.enqueue(report("b"))
        await until(lambda: callback.current.sent == ["a", "b"])  # the replay is held back
        await until(lambda: callback.current.sent[-2:] == ["a", "b"] and len(callback.current.sent) == 4)
    finally:
        await sink.close()


def test_chaos_replays_only_at_its_rate() -> None:
    never, always = Chaos(0.0, 0.0), Chaos(0.0, 0.0, replay_rate=1.0, replay_delay_seconds=120.0)
    assert never.delays() == [0.0]
    assert always.delays() == [0.0, 120.0]
