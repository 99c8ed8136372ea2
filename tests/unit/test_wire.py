"""Execution reports from the wire: a batch is taken whole or refused whole, naming each malformed field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from brokerage.domain.errors import InvalidRequest
from brokerage.proto import callback_pb2, common_pb2
from brokerage.wire import REPORT_BATCH_MAX, reports_from_proto, timestamp


def fill(exec_id: str, price: str = "10.00") -> callback_pb2.ExecutionReport:
    return callback_pb2.ExecutionReport(
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


def test_a_batch_comes_back_report_by_report_in_order() -> None:
    reports = reports_from_proto(callback_pb2.ExecutionReportBatch(reports=[fill("a"), fill("b", "11.50")]))
    assert [(r.exec_id, str(r.last_price)) for r in reports] == [("a", "10.00"), ("b", "11.50")]


def test_every_malformed_report_of_a_batch_is_named_by_its_place() -> None:
    batch = callback_pb2.ExecutionReportBatch(reports=[fill("a"), fill("", "x"), fill("c", "-1")])
    with pytest.raises(InvalidRequest) as refused:
        reports_from_proto(batch)
    assert [v.field for v in refused.value.violations] == [
        "reports[1].exec_id",
        "reports[1].last_price",
        "reports[2].last_price",
    ]


def test_a_batch_over_the_limit_is_refused() -> None:
    batch = callback_pb2.ExecutionReportBatch(reports=[fill(str(i)) for i in range(REPORT_BATCH_MAX + 1)])
    with pytest.raises(InvalidRequest, match="at most 1,000"):
        reports_from_proto(batch)
