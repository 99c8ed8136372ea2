"""What travels on the ORDERS stream, encoded as broker.v1 protobuf messages."""

from __future__ import annotations

from decimal import Decimal

from brokerage.domain.money import format_decimal
from brokerage.domain.orders import Side
from brokerage.proto import common_pb2, messages_pb2

_SIDES = {Side.BUY: common_pb2.SIDE_BUY, Side.SELL: common_pb2.SIDE_SELL}


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
        side=_SIDES[side],
        quantity=quantity,
        protection_price=format_decimal(protection_price),
        shard=shard,
    ).SerializeToString()


def decode_order_placed(payload: bytes) -> messages_pb2.OrderPlaced:
    """Raises google.protobuf.message.DecodeError for a payload that is not an OrderPlaced."""
    return messages_pb2.OrderPlaced.FromString(payload)
