"""What travels on the ORDERS stream: broker.v1 protobuf messages, their kind in a header.

Every message is a wake-up for one order (PostgreSQL is the record): OrderPlaced asks for the order to be taken
to the exchange, CancelRequested for its cancel to be. A message without the header is an OrderPlaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from brokerage.domain.money import format_decimal
from brokerage.domain.orders import Side
from brokerage.proto import messages_pb2
from brokerage.wire import SIDE_TO_PROTO

TYPE_HEADER = "Broker-Message-Type"


class MessageType(StrEnum):
    ORDER_PLACED = "OrderPlaced"
    CANCEL_REQUESTED = "CancelRequested"


@dataclass(frozen=True)
class WakeUp:
    kind: MessageType
    order_id: str
    customer_id: str


def encode_order_placed(
    *,
    order_id: str,
    customer_id: str,
    symbol: str,
    side: Side,
    quantity: int,
    protection_price: Decimal,
    shard: int,
) -> bytes:
    return messages_pb2.OrderPlaced(
        order_id=order_id,
        customer_id=customer_id,
        symbol=symbol,
        side=SIDE_TO_PROTO[side],
        quantity=quantity,
        protection_price=format_decimal(protection_price),
        shard=shard,
    ).SerializeToString()


def encode_cancel_requested(*, order_id: str, customer_id: str, shard: int) -> bytes:
    return messages_pb2.CancelRequested(order_id=order_id, customer_id=customer_id, shard=shard).SerializeToString()


def decode_order_placed(payload: bytes) -> messages_pb2.OrderPlaced:
    """Raises google.protobuf.message.DecodeError for a payload that is not an OrderPlaced."""
    return messages_pb2.OrderPlaced.FromString(payload)


def decode_wake_up(payload: bytes, headers: Mapping[str, str] | None) -> WakeUp:
    """The order a message is about and what it asks; raises ValueError for an unknown kind and
    google.protobuf.message.DecodeError for a payload that is not its kind."""
    kind = MessageType((headers or {}).get(TYPE_HEADER, MessageType.ORDER_PLACED))
    decoded = (
        decode_order_placed(payload)
        if kind is MessageType.ORDER_PLACED
        else messages_pb2.CancelRequested.FromString(payload)
    )
    return WakeUp(kind, decoded.order_id, decoded.customer_id)
