"""Protobuf to the venue's types and back: the only module of the simulator that knows both."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.executions import DropCopyEntry, Tombstone
from brokerage.domain.money import format_decimal
from brokerage.proto import exchange_pb2
from brokerage.wire import SIDE_FROM_PROTO, SIDE_TO_PROTO, STATUS_TO_PROTO, report_to_proto, timestamp
from exchange_simulator.market import Quote
from exchange_simulator.tickets import OrderTicket, order_ticket
from exchange_simulator.venue import Acknowledgement, CancelOutcome, VenueOrder


def ticket(request: exchange_pb2.SubmitOrderRequest) -> OrderTicket:
    return order_ticket(
        order_id=request.order_id,
        customer_id=request.customer_id,
        symbol=request.symbol,
        side=SIDE_FROM_PROTO.get(request.side),
        quantity=request.quantity,
        protection_price=request.protection_price,
        expires_at=request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None,
    )


def submit_request(ticket: OrderTicket) -> exchange_pb2.SubmitOrderRequest:
    """The SubmitOrder request the ticket came from (the inverse of `ticket`)."""
    return exchange_pb2.SubmitOrderRequest(
        order_id=ticket.order_id,
        customer_id=ticket.customer_id,
        symbol=ticket.symbol,
        side=SIDE_TO_PROTO[ticket.side],
        quantity=ticket.quantity,
        protection_price=format_decimal(ticket.protection_price),
        expires_at=timestamp(ticket.expires_at) if ticket.expires_at else None,
    )


def acknowledgement_from(response: exchange_pb2.SubmitOrderResponse) -> Acknowledgement:
    """The acknowledgement an answer carries (the inverse of `acknowledgement`)."""
    return Acknowledgement(
        venue_order_id=response.venue_order_id,
        accepted=response.accepted,
        reject_reason=response.reject_reason,
        arrival_sequence=response.arrival_sequence,
        duplicate=response.duplicate,
    )


def acknowledgement(ack: Acknowledgement) -> exchange_pb2.SubmitOrderResponse:
    return exchange_pb2.SubmitOrderResponse(
        venue_order_id=ack.venue_order_id,
        accepted=ack.accepted,
        reject_reason=ack.reject_reason,
        arrival_sequence=ack.arrival_sequence,
        duplicate=ack.duplicate,
    )


def cancel_outcome(outcome: CancelOutcome) -> exchange_pb2.ExchangeCancelResponse:
    return exchange_pb2.ExchangeCancelResponse(
        accepted=outcome.accepted, reason=outcome.reason, never_received=outcome.never_received
    )


def order_status(order_id: str, order: VenueOrder | None) -> exchange_pb2.OrderStatusReport:
    if order is None:
        return exchange_pb2.OrderStatusReport(order_id=order_id, known=False)
    return exchange_pb2.OrderStatusReport(
        order_id=order_id,
        venue_order_id=order.venue_order_id,
        known=True,
        status=STATUS_TO_PROTO[order.status],
        cumulative_quantity=order.cumulative_quantity,
        reports=[report_to_proto(r) for r in order.reports],
    )


def quote(q: Quote) -> exchange_pb2.Quote:
    return exchange_pb2.Quote(
        symbol=q.symbol, price=format_decimal(q.price), quoted_at=timestamp(q.quoted_at), halted=q.halted
    )


DROP_COPY_PAGE_SIZE = 5_000  # about 2 MB: well inside gRPC's default 4 MB message limit
DROP_COPY_MAX_PAGE_SIZE = 10_000


def drop_copy_page(
    request: exchange_pb2.GetDropCopyRequest, entries: Sequence[DropCopyEntry | Tombstone]
) -> exchange_pb2.GetDropCopyResponse:
    """The page the request asks for. The token is the position of the page's first entry: a day's drop copy
    only grows at its end, so a position stays valid while the caller pages on."""
    size = request.page_size or DROP_COPY_PAGE_SIZE
    if not 0 < size <= DROP_COPY_MAX_PAGE_SIZE:
        raise InvalidRequest([FieldViolation("page_size", f"must be 0 to {DROP_COPY_MAX_PAGE_SIZE}, got {size}")])
    token = request.page_token
    if token and not token.isdigit():
        raise InvalidRequest([FieldViolation("page_token", "not a token this venue gave out")])
    start = int(token or 0)
    end = start + size
    return exchange_pb2.GetDropCopyResponse(
        executions=[_drop_copy_entry(e) for e in entries[start:end]],
        next_page_token=str(end) if end < len(entries) else "",
    )


def _drop_copy_entry(entry: DropCopyEntry | Tombstone) -> exchange_pb2.DropCopyEntry:
    if isinstance(entry, Tombstone):
        return exchange_pb2.DropCopyEntry(tombstone=tombstone(entry))
    return exchange_pb2.DropCopyEntry(
        report=report_to_proto(entry.report), customer_id=entry.customer_id, arrival_sequence=entry.arrival_sequence
    )


def tombstone(entry: Tombstone) -> exchange_pb2.Tombstone:
    return exchange_pb2.Tombstone(order_id=entry.order_id, recorded_at=timestamp(entry.recorded_at))


def tombstone_from(message: exchange_pb2.Tombstone) -> Tombstone:
    return Tombstone(message.order_id, message.recorded_at.ToDatetime(tzinfo=UTC))


def symbols(request: exchange_pb2.GetQuotesRequest) -> list[str]:
    return [s.strip().upper() for s in request.symbols]
