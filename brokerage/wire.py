"""How domain values travel in broker.v1 protobuf messages: sides, statuses, exec types, timestamps and
execution reports, both ways.

Shared by every servicer, client and message codec, so each enum is mapped in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.executions import ExecType, ExecutionReport
from brokerage.domain.money import MoneyFormatError, format_decimal, parse_decimal
from brokerage.domain.orders import OrderStatus, Side
from brokerage.proto import callback_pb2, common_pb2

SIDE_TO_PROTO: dict[Side, Any] = {Side.BUY: common_pb2.SIDE_BUY, Side.SELL: common_pb2.SIDE_SELL}
SIDE_FROM_PROTO: dict[Any, Side] = {v: k for k, v in SIDE_TO_PROTO.items()}
STATUS_TO_PROTO: dict[OrderStatus, Any] = {
    status: common_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.value}") for status in OrderStatus
}
STATUS_FROM_PROTO: dict[Any, OrderStatus] = {v: k for k, v in STATUS_TO_PROTO.items()}
EXEC_TYPE_TO_PROTO: dict[ExecType, Any] = {t: common_pb2.ExecType.Value(f"EXEC_TYPE_{t.value}") for t in ExecType}
EXEC_TYPE_FROM_PROTO: dict[Any, ExecType] = {v: k for k, v in EXEC_TYPE_TO_PROTO.items()}
REPORT_BATCH_MAX = 1_000  # reports in one StreamExecutions message (callback.proto)
SUBMIT_BATCH_MAX = 1_000  # orders in one SubmitOrders message (exchange.proto)


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def report_to_proto(report: ExecutionReport) -> callback_pb2.ExecutionReport:
    return callback_pb2.ExecutionReport(
        exec_id=report.exec_id,
        order_id=report.order_id,
        venue_order_id=report.venue_order_id,
        exec_type=EXEC_TYPE_TO_PROTO[report.exec_type],
        last_quantity=report.last_quantity,
        last_price=format_decimal(report.last_price),
        cumulative_quantity=report.cumulative_quantity,
        reason=report.reason,
        transact_time=timestamp(report.transact_time),
        symbol=report.symbol,
        side=SIDE_TO_PROTO[report.side],
        order_quantity=report.order_quantity,
    )


def report_from_proto(request: callback_pb2.ExecutionReport) -> ExecutionReport:
    """The report, or InvalidRequest naming every malformed field: no exec_id, an unknown exec type, a fill
    without a price. (A well-formed report that cannot be applied is settlement's business, not an error.)"""
    violations = [
        FieldViolation(field, "must not be empty") for field in ("exec_id", "order_id") if not getattr(request, field)
    ]
    exec_type = EXEC_TYPE_FROM_PROTO.get(request.exec_type)
    if exec_type is None:
        violations.append(FieldViolation("exec_type", "must be NEW, PARTIAL_FILL, FILL, CANCELED or REJECTED"))
    side = SIDE_FROM_PROTO.get(request.side)
    if side is None:
        violations.append(FieldViolation("side", "must be SIDE_BUY or SIDE_SELL"))
    for field in ("last_quantity", "cumulative_quantity", "order_quantity"):
        if getattr(request, field) < 0:
            violations.append(FieldViolation(field, "must not be negative"))
    if not request.HasField("transact_time"):
        violations.append(FieldViolation("transact_time", "must be set"))
    price = _price(request.last_price, exec_type, violations)
    if violations or exec_type is None or side is None:
        raise InvalidRequest(violations)
    return ExecutionReport(
        exec_id=request.exec_id,
        order_id=request.order_id,
        venue_order_id=request.venue_order_id,
        exec_type=exec_type,
        last_quantity=request.last_quantity if exec_type.is_fill else 0,
        last_price=price,
        cumulative_quantity=request.cumulative_quantity,
        reason=request.reason,
        transact_time=request.transact_time.ToDatetime(tzinfo=UTC),
        symbol=request.symbol,
        side=side,
        order_quantity=request.order_quantity,
    )


def reports_from_proto(batch: callback_pb2.ExecutionReportBatch) -> list[ExecutionReport]:
    """Every report of the batch, or InvalidRequest naming each malformed field as `reports[i].field`: a batch is
    booked whole or not at all."""
    if len(batch.reports) > REPORT_BATCH_MAX:
        raise InvalidRequest([FieldViolation("reports", f"at most {REPORT_BATCH_MAX:,} in a batch")])
    reports, violations = [], []
    for index, request in enumerate(batch.reports):
        try:
            reports.append(report_from_proto(request))
        except InvalidRequest as error:
            violations += [FieldViolation(f"reports[{index}].{v.field}", v.description) for v in error.violations]
    if violations:
        raise InvalidRequest(violations)
    return reports


def _price(text: str, exec_type: ExecType | None, violations: list[FieldViolation]) -> Decimal | None:
    if exec_type is None or not exec_type.is_fill:
        return None
    try:
        price = parse_decimal(text)
    except MoneyFormatError:
        violations.append(FieldViolation("last_price", f"a fill needs a decimal price, got {text!r}"))
        return None
    if price <= 0:
        violations.append(FieldViolation("last_price", f"must be positive, got {text!r}"))
        return None
    return price
