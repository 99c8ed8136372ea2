"""Execution reports from the wire: each parsed from its own bytes, to a report or to what is wrong with it, never
an exception (one bad report must not refuse its batch)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokerage.domain.executions import ExecType, ExecutionReport, MalformedReport
from brokerage.proto import callback_pb2, common_pb2
from brokerage.wire import parse_report, reports_batch, timestamp
from exchange_simulator.chaos import _broken


def fill(exec_id: str = "e-1", price: str = "10.00", **changes: object) -> callback_pb2.ExecutionReport:
    report = callback_pb2.ExecutionReport(
        exec_id=exec_id,
        order_id="o-1",
        exec_type=common_pb2.EXEC_TYPE_FILL,
        last_quantity=1,
        last_price=price,
        cumulative_quantity=1,
        transact_time=timestamp(datetime(2026, 1, 5, 15, 0, tzinfo=UTC)),
        side=common_pb2.SIDE_BUY,
        order_quantity=1,
    )
    for field, value in changes.items():
        setattr(report, field, value)
    return report


def test_a_well_formed_report_parses_to_the_report() -> None:
    parsed = parse_report(fill(price="230.5000").SerializeToString())
    assert isinstance(parsed, ExecutionReport)
    assert (parsed.exec_id, parsed.exec_type, parsed.last_price) == ("e-1", ExecType.FILL, Decimal("230.5000"))


@pytest.mark.parametrize(
    ("report", "field"),
    [
        (fill(price="12,34"), "last_price"),
        (fill(price="-1"), "last_price"),
        (fill(price="230.00005"), "last_price"),  # a fifth decimal: the books keep four
        (fill(price="1e20"), "last_price"),  # beyond what the books can hold
        (fill(last_quantity=0), "last_quantity"),
        (fill(exec_type=99), "exec_type"),  # proto3 keeps an enum value it does not know
        (fill(side=0), "side"),
        (fill(reason="a\x00b"), "reason"),
        (fill(order_id="o 1"), "order_id"),
        (fill(order_id="o-1\n"), "order_id"),  # a trailing newline is no visible character
        (fill(symbol="x" * 65), "symbol"),
    ],
)
def test_a_report_out_of_form_is_malformed_naming_the_field(report: callback_pb2.ExecutionReport, field: str) -> None:
    parsed = parse_report(report.SerializeToString())
    assert isinstance(parsed, MalformedReport) and field in parsed.detail
    assert parsed.kind == "malformed"


def test_a_malformed_report_keeps_its_bytes_and_the_ids_it_could_read() -> None:
    raw = fill(exec_id="e-7", price="x").SerializeToString()
    parsed = parse_report(raw)
    assert isinstance(parsed, MalformedReport)
    assert (parsed.raw, parsed.exec_id, parsed.order_id, parsed.break_key) == (raw, "e-7", "o-1", "malformed:e-7")


def test_bytes_protobuf_cannot_read_keep_the_ids_their_wire_format_still_holds() -> None:
    raw = _broken(fill("e-9"), "utf8")  # bad UTF-8 in the reason, which comes after the ids
    parsed = parse_report(raw)
    assert isinstance(parsed, MalformedReport) and (parsed.exec_id, parsed.order_id) == ("e-9", "o-1")
    assert parsed.break_key == "malformed:e-9" and parsed.raw == raw


def test_bytes_with_no_readable_id_are_kept_under_their_digest() -> None:
    parsed = parse_report(b"\x0a\x05abc")  # the exec_id's length runs past the end
    assert isinstance(parsed, MalformedReport) and parsed.exec_id is None
    assert parsed.break_key.startswith("malformed:sha256:")


@pytest.mark.parametrize("fault", ["price", "utf8", "exec_type", "transact_time"])
def test_every_fault_chaos_makes_is_malformed(fault: str) -> None:
    assert isinstance(parse_report(_broken(fill(), fault)), MalformedReport)


@given(st.binary(max_size=200))
def test_any_bytes_parse_to_a_report_or_a_malformed_one(raw: bytes) -> None:
    assert isinstance(parse_report(raw), ExecutionReport | MalformedReport)


@given(st.text(max_size=30), st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20))
def test_any_field_values_parse_without_raising(exec_id: str, order_id: str, quantity: int, price: str) -> None:
    raw = fill(exec_id=exec_id, last_quantity=quantity, price=price, order_id=order_id).SerializeToString()
    parsed = parse_report(raw)
    if isinstance(parsed, ExecutionReport):
        assert parsed.last_price is not None and parsed.last_price > 0 and parsed.last_quantity > 0


def test_a_batch_carries_each_report_as_bytes_of_its_own_and_its_name() -> None:
    good, bad = fill("a"), _broken(fill("b"), "utf8")
    batch = reports_batch([good, bad], batch_id=7)
    again = callback_pb2.ExecutionReportBatch.FromString(batch.SerializeToString())
    assert again.batch_id == 7 and list(again.reports) == [good.SerializeToString(), bad]
