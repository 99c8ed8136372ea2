import datetime

from . import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RejectCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_CODE_UNSPECIFIED: _ClassVar[RejectCode]
    REJECT_CODE_TRADING_HALTED: _ClassVar[RejectCode]
    REJECT_CODE_ACCOUNT_BLOCKED: _ClassVar[RejectCode]
    REJECT_CODE_ACCOUNT_CLOSING_ONLY: _ClassVar[RejectCode]
    REJECT_CODE_QUANTITY_LIMIT: _ClassVar[RejectCode]
    REJECT_CODE_MARKET_CLOSED: _ClassVar[RejectCode]
    REJECT_CODE_NO_QUOTE: _ClassVar[RejectCode]
    REJECT_CODE_STALE_QUOTE: _ClassVar[RejectCode]
    REJECT_CODE_NOTIONAL_LIMIT: _ClassVar[RejectCode]
    REJECT_CODE_DAILY_NOTIONAL_LIMIT: _ClassVar[RejectCode]
    REJECT_CODE_INSUFFICIENT_BUYING_POWER: _ClassVar[RejectCode]
    REJECT_CODE_INSUFFICIENT_SHARES: _ClassVar[RejectCode]
    REJECT_CODE_EXCHANGE_REJECTED: _ClassVar[RejectCode]
REJECT_CODE_UNSPECIFIED: RejectCode
REJECT_CODE_TRADING_HALTED: RejectCode
REJECT_CODE_ACCOUNT_BLOCKED: RejectCode
REJECT_CODE_ACCOUNT_CLOSING_ONLY: RejectCode
REJECT_CODE_QUANTITY_LIMIT: RejectCode
REJECT_CODE_MARKET_CLOSED: RejectCode
REJECT_CODE_NO_QUOTE: RejectCode
REJECT_CODE_STALE_QUOTE: RejectCode
REJECT_CODE_NOTIONAL_LIMIT: RejectCode
REJECT_CODE_DAILY_NOTIONAL_LIMIT: RejectCode
REJECT_CODE_INSUFFICIENT_BUYING_POWER: RejectCode
REJECT_CODE_INSUFFICIENT_SHARES: RejectCode
REJECT_CODE_EXCHANGE_REJECTED: RejectCode

class PlaceOrderRequest(_message.Message):
    __slots__ = ("customer_id", "client_order_id", "symbol", "side", "quantity")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    client_order_id: str
    symbol: str
    side: _common_pb2.Side
    quantity: int
    def __init__(self, customer_id: _Optional[str] = ..., client_order_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., quantity: _Optional[int] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("customer_id", "order_id")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    order_id: str
    def __init__(self, customer_id: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("customer_id", "order_id")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    order_id: str
    def __init__(self, customer_id: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("customer_id", "side", "status", "page_size", "page_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    side: _common_pb2.Side
    status: _common_pb2.OrderStatus
    page_size: int
    page_token: str
    def __init__(self, customer_id: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., status: _Optional[_Union[_common_pb2.OrderStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[Order]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("customer_id",)
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    def __init__(self, customer_id: _Optional[str] = ...) -> None: ...

class ListPositionsRequest(_message.Message):
    __slots__ = ("customer_id",)
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    def __init__(self, customer_id: _Optional[str] = ...) -> None: ...

class ListPositionsResponse(_message.Message):
    __slots__ = ("positions",)
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.RepeatedCompositeFieldContainer[Position]
    def __init__(self, positions: _Optional[_Iterable[_Union[Position, _Mapping]]] = ...) -> None: ...

class WatchOrdersRequest(_message.Message):
    __slots__ = ("customer_id", "resume_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    resume_token: str
    def __init__(self, customer_id: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("order_id", "client_order_id", "customer_id", "symbol", "side", "quantity", "status", "status_reason", "filled_quantity", "average_fill_price", "created_at", "updated_at", "sequence", "protection_price", "reserved_amount", "cancel_requested", "reject_code")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_FILL_PRICE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_PRICE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    REJECT_CODE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    client_order_id: str
    customer_id: str
    symbol: str
    side: _common_pb2.Side
    quantity: int
    status: _common_pb2.OrderStatus
    status_reason: str
    filled_quantity: int
    average_fill_price: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    sequence: int
    protection_price: str
    reserved_amount: str
    cancel_requested: bool
    reject_code: RejectCode
    def __init__(self, order_id: _Optional[str] = ..., client_order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., quantity: _Optional[int] = ..., status: _Optional[_Union[_common_pb2.OrderStatus, str]] = ..., status_reason: _Optional[str] = ..., filled_quantity: _Optional[int] = ..., average_fill_price: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ..., protection_price: _Optional[str] = ..., reserved_amount: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., reject_code: _Optional[_Union[RejectCode, str]] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("customer_id", "available", "reserved", "updated_at")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    available: str
    reserved: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, customer_id: _Optional[str] = ..., available: _Optional[str] = ..., reserved: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("symbol", "quantity", "reserved", "average_cost")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_COST_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    quantity: int
    reserved: int
    average_cost: str
    def __init__(self, symbol: _Optional[str] = ..., quantity: _Optional[int] = ..., reserved: _Optional[int] = ..., average_cost: _Optional[str] = ...) -> None: ...

class OrderEvent(_message.Message):
    __slots__ = ("resume_token", "order", "occurred_at", "event_type")
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    resume_token: str
    order: Order
    occurred_at: _timestamp_pb2.Timestamp
    event_type: str
    def __init__(self, resume_token: _Optional[str] = ..., order: _Optional[_Union[Order, _Mapping]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_type: _Optional[str] = ...) -> None: ...
