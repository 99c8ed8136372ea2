from . import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderPlaced(_message.Message):
    __slots__ = ("order_id", "customer_id", "sequence", "symbol", "side", "quantity", "protection_price", "shard")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_PRICE_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    sequence: int
    symbol: str
    side: _common_pb2.Side
    quantity: int
    protection_price: str
    shard: int
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., sequence: _Optional[int] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., quantity: _Optional[int] = ..., protection_price: _Optional[str] = ..., shard: _Optional[int] = ...) -> None: ...

class CancelRequested(_message.Message):
    __slots__ = ("order_id", "customer_id", "shard")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    shard: int
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., shard: _Optional[int] = ...) -> None: ...
