"""How domain values travel in broker.v1 protobuf messages: sides, statuses, exec types, timestamps and
execution reports, both ways.

Shared by every servicer, client and message codec, so each enum is mapped in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.executions import ExecType, ExecutionReport, MalformedReport, Received
from brokerage.domain.identifiers import id_violations, is_id
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
MAX_REASON_LENGTH = 1_000
MONEY_DECIMALS = 4  # the books' numeric(20,4)
MAX_AMOUNT = Decimal(10) ** 16
SUBMIT_BATCH_MAX = 1_000  # orders in one SubmitOrders message (exchange.proto)
# The receive limits of the two internal streams: their largest legal batch (the most items, each with its longest
# fields, a reason of four-byte characters included; tests/unit/test_limits.py builds them) with room to spare.
REPORT_BATCH_MAX_BYTES = 6 * 1024 * 1024
SUBMIT_BATCH_MAX_BYTES = 1024 * 1024


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
    """The report, or InvalidRequest naming every field out of form: an id that is not one, an unknown exec type or
    side, a negative quantity, a fill without a positive quantity or with a price the books cannot hold exactly, a
    reason the database could not store, no transact time. (A well-formed report that cannot be applied is
    settlement's business.)"""
    violations = [*id_violations("exec_id", request.exec_id), *id_violations("order_id", request.order_id)]
    for field in ("venue_order_id", "symbol"):
        if getattr(request, field):
            violations += id_violations(field, getattr(request, field))
    exec_type = EXEC_TYPE_FROM_PROTO.get(request.exec_type)
    if exec_type is None:
        violations.append(FieldViolation("exec_type", "must be NEW, PARTIAL_FILL, FILL, CANCELED or REJECTED"))
    side = SIDE_FROM_PROTO.get(request.side)
    if side is None:
        violations.append(FieldViolation("side", "must be SIDE_BUY or SIDE_SELL"))
    for field in ("last_quantity", "cumulative_quantity", "order_quantity"):
        if getattr(request, field) < 0:
            violations.append(FieldViolation(field, "must not be negative"))
    if len(request.reason) > MAX_REASON_LENGTH or "\x00" in request.reason:
        violations.append(FieldViolation("reason", f"must be at most {MAX_REASON_LENGTH} characters, without NUL"))
    transact_time = _moment(request, violations)
    price = _fill_price(request, exec_type, violations)
    if violations or exec_type is None or side is None or transact_time is None:
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
        transact_time=transact_time,
        symbol=request.symbol,
        side=side,
        order_quantity=request.order_quantity,
    )


def parse_report(raw: bytes) -> ExecutionReport | MalformedReport:
    """One report from its bytes: the report, or what is wrong with it (kept whole, never a refusal of the call)."""
    try:
        message = callback_pb2.ExecutionReport.FromString(raw)
    except DecodeError as error:
        exec_id, order_id = salvaged_ids(raw)
        return MalformedReport(raw, f"malformed: not an ExecutionReport protobuf can read ({error})", exec_id, order_id)
    try:
        return report_from_proto(message)
    except InvalidRequest as error:
        exec_id, order_id = (value if is_id(value) else None for value in (message.exec_id, message.order_id))
        return MalformedReport(raw, f"malformed: {error}", exec_id, order_id)


def salvaged_ids(raw: bytes) -> tuple[str | None, str | None]:
    """The exec_id and order_id (fields 1 and 2) of a report protobuf could not parse, read off its wire format
    where they are whole ids: so that a report broken elsewhere (bad UTF-8 in its reason, say) is still deduped by its
    exec_id, and superseded by a well-formed copy. None for an id that cannot be read."""
    found: dict[int, str] = {}
    position = 0
    try:
        while position < len(raw) and len(found) < 2:
            key, position = _varint(raw, position)
            field, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, position = _varint(raw, position)
            elif wire_type == 2:
                length, position = _varint(raw, position)
                if position + length > len(raw):
                    break  # cut short: no field of it can be trusted
                value, position = raw[position : position + length], position + length
                if field in (1, 2) and value.isascii() and is_id(value.decode("ascii")):
                    found[field] = value.decode("ascii")
            elif wire_type in (1, 5):
                position += 8 if wire_type == 1 else 4
            else:
                break
    except IndexError:
        pass
    return found.get(1), found.get(2)


def _varint(raw: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise IndexError("a varint too long")


def received(raw: bytes) -> Received:
    return Received(raw, parse_report(raw))


def reports_batch(
    reports: Sequence[callback_pb2.ExecutionReport | bytes], batch_id: int = 0
) -> callback_pb2.ExecutionReportBatch:
    """A StreamExecutions batch of these reports, each encoded on its own."""
    encoded = [r if isinstance(r, bytes) else r.SerializeToString() for r in reports]
    return callback_pb2.ExecutionReportBatch(reports=encoded, batch_id=batch_id)


def _moment(request: callback_pb2.ExecutionReport, violations: list[FieldViolation]) -> datetime | None:
    if not request.HasField("transact_time"):
        violations.append(FieldViolation("transact_time", "must be set"))
        return None
    try:
        return request.transact_time.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        violations.append(FieldViolation("transact_time", "is not a moment a calendar can hold"))
        return None


def _fill_price(
    request: callback_pb2.ExecutionReport, exec_type: ExecType | None, violations: list[FieldViolation]
) -> Decimal | None:
    """A fill's price: positive, at most four decimals (as the books keep money), its amount below 10^16."""
    if exec_type is None or not exec_type.is_fill:
        return None
    if request.last_quantity <= 0:
        violations.append(FieldViolation("last_quantity", "a fill needs a positive quantity"))
    price = _price(request.last_price, violations)
    if price is None:
        return None
    exponent = price.normalize().as_tuple().exponent
    if (
        not isinstance(exponent, int)
        or exponent < -MONEY_DECIMALS
        or price * max(request.last_quantity, 1) >= MAX_AMOUNT
    ):
        violations.append(FieldViolation("last_price", f"{request.last_price!r} is not an amount the books can hold"))
        return None
    return price


def _price(text: str, violations: list[FieldViolation]) -> Decimal | None:
    try:
        price = parse_decimal(text)
    except MoneyFormatError:
        violations.append(FieldViolation("last_price", f"a fill needs a decimal price, got {text!r}"))
        return None
    if price <= 0:
        violations.append(FieldViolation("last_price", f"must be positive, got {text!r}"))
        return None
    return price
