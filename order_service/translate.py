"""Protobuf to domain and back: the only module of the service that knows both."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, TypeVar

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.money import format_decimal
from brokerage.domain.orders import Account, Order, OrderEvent, OrderRequest, OrderStatus, Position, Side
from brokerage.domain.risk import RejectCode
from brokerage.proto import common_pb2, orders_pb2
from brokerage.wire import SIDE_FROM_PROTO, SIDE_TO_PROTO, STATUS_FROM_PROTO, STATUS_TO_PROTO, timestamp

T = TypeVar("T")
PAGE_TOKEN = "v1"  # a ListOrders page token: the last order sequence seen
RESUME_TOKEN = "events-v1"  # a WatchOrders resume token: the last event sequence seen
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_POSITION = 2**63 - 1  # sequences are PostgreSQL bigints: a token past one names no position


def order_request(customer_id: str, request: orders_pb2.PlaceOrderRequest) -> OrderRequest:
    return OrderRequest(
        customer_id=customer_id,
        client_order_id=request.client_order_id,
        symbol=request.symbol.strip().upper(),
        side=SIDE_FROM_PROTO.get(request.side),
        quantity=request.quantity,
    )


def order(o: Order) -> orders_pb2.Order:
    return orders_pb2.Order(
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        customer_id=o.customer_id,
        symbol=o.symbol,
        side=SIDE_TO_PROTO[o.side],
        quantity=o.quantity,
        status=STATUS_TO_PROTO[o.status],
        status_reason=o.status_reason,
        filled_quantity=o.filled_quantity,
        average_fill_price=format_decimal(o.average_fill_price),
        created_at=timestamp(o.created_at),
        updated_at=timestamp(o.updated_at),
        sequence=o.sequence,
        protection_price=format_decimal(o.protection_price),
        reserved_amount=format_decimal(o.reserved_cash) if o.side is Side.BUY else str(o.reserved_shares),
        cancel_requested=o.cancel_requested,
        reject_code=reject_code(o.reject_code),
    )


def reject_code(code: RejectCode | None) -> orders_pb2.RejectCode:
    if code is None:
        return orders_pb2.REJECT_CODE_UNSPECIFIED
    return orders_pb2.RejectCode.Value(f"REJECT_CODE_{code.value}")  # type: ignore[return-value]


def account(a: Account) -> orders_pb2.Account:
    return orders_pb2.Account(
        customer_id=a.customer_id,
        available=format_decimal(a.available),
        reserved=format_decimal(a.reserved),
        updated_at=timestamp(a.updated_at),
    )


def position(p: Position) -> orders_pb2.Position:
    return orders_pb2.Position(
        symbol=p.symbol, quantity=p.quantity, reserved=p.reserved, average_cost=format_decimal(p.average_cost)
    )


def side_filter(side: int) -> Side | None:
    return None if side == common_pb2.SIDE_UNSPECIFIED else _known(SIDE_FROM_PROTO, side, "side")


def status_filter(status: int) -> OrderStatus | None:
    return None if status == common_pb2.ORDER_STATUS_UNSPECIFIED else _known(STATUS_FROM_PROTO, status, "status")


def page_size(requested: int) -> int:
    """0 means the default; above the maximum is coerced down to it (AIP-158)."""
    if requested < 0:
        raise InvalidRequest([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(last_sequence: int) -> str:
    return _encode_position(PAGE_TOKEN, last_sequence)


def decode_page_token(token: str) -> int | None:
    """The sequence the next page starts below; None for the first page."""
    return _decode_position(PAGE_TOKEN, token, "page_token") if token else None


def encode_resume_token(event_sequence: int) -> str:
    return _encode_position(RESUME_TOKEN, event_sequence)


def decode_resume_token(token: str) -> int:
    """The event sequence a watch resumes after; 0 (from the start) for no token."""
    return _decode_position(RESUME_TOKEN, token, "resume_token") if token else 0


def order_event(event: OrderEvent) -> orders_pb2.OrderEvent:
    snapshot = order(event.order)
    snapshot.ClearField("reserved_amount")  # not kept per event
    return orders_pb2.OrderEvent(
        resume_token=encode_resume_token(event.sequence),
        order=snapshot,
        occurred_at=timestamp(event.occurred_at),
        event_type=event.event_type,
    )


def _encode_position(kind: str, number: int) -> str:
    """An opaque token for a position in a sequence: clients pass it back, never build it."""
    return base64.urlsafe_b64encode(f"{kind}:{number}".encode()).decode()


def _decode_position(kind: str, token: str, field: str) -> int:
    try:
        found, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if found == kind and number.isascii() and number.isdigit() and int(number) <= MAX_POSITION:
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidRequest([FieldViolation(field, "not a token this service issued")])


def _known(mapping: Mapping[Any, T], value: int, field: str) -> T:
    if value not in mapping:
        raise InvalidRequest([FieldViolation(field, f"unknown value {value}")])
    return mapping[value]
