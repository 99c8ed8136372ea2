import datetime

from . import callback_pb2 as _callback_pb2
from . import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitOrderRequest(_message.Message):
    __slots__ = ("order_id", "customer_id", "symbol", "side", "quantity", "protection_price", "expires_at")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_PRICE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    symbol: str
    side: _common_pb2.Side
    quantity: int
    protection_price: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., quantity: _Optional[int] = ..., protection_price: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitOrderResponse(_message.Message):
    __slots__ = ("venue_order_id", "accepted", "reject_reason", "arrival_sequence", "duplicate")
    VENUE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECT_REASON_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    venue_order_id: str
    accepted: bool
    reject_reason: str
    arrival_sequence: int
    duplicate: bool
    def __init__(self, venue_order_id: _Optional[str] = ..., accepted: _Optional[bool] = ..., reject_reason: _Optional[str] = ..., arrival_sequence: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SubmitOrderBatch(_message.Message):
    __slots__ = ("orders",)
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[SubmitOrderRequest]
    def __init__(self, orders: _Optional[_Iterable[_Union[SubmitOrderRequest, _Mapping]]] = ...) -> None: ...

class SubmitOrderResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitOrderResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitOrderResult, _Mapping]]] = ...) -> None: ...

class SubmitOrderResult(_message.Message):
    __slots__ = ("order_id", "response", "error_code", "error_message")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    response: SubmitOrderResponse
    error_code: int
    error_message: str
    def __init__(self, order_id: _Optional[str] = ..., response: _Optional[_Union[SubmitOrderResponse, _Mapping]] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...

class ExchangeCancelRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class ExchangeCancelResponse(_message.Message):
    __slots__ = ("accepted", "reason", "never_received")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NEVER_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    never_received: bool
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., never_received: _Optional[bool] = ...) -> None: ...

class GetOrderStatusRequest(_message.Message):
    __slots__ = ("order_id", "resend_reports")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESEND_REPORTS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    resend_reports: bool
    def __init__(self, order_id: _Optional[str] = ..., resend_reports: _Optional[bool] = ...) -> None: ...

class OrderStatusReport(_message.Message):
    __slots__ = ("order_id", "venue_order_id", "known", "status", "cumulative_quantity", "reports")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    venue_order_id: str
    known: bool
    status: _common_pb2.OrderStatus
    cumulative_quantity: int
    reports: _containers.RepeatedCompositeFieldContainer[_callback_pb2.ExecutionReport]
    def __init__(self, order_id: _Optional[str] = ..., venue_order_id: _Optional[str] = ..., known: _Optional[bool] = ..., status: _Optional[_Union[_common_pb2.OrderStatus, str]] = ..., cumulative_quantity: _Optional[int] = ..., reports: _Optional[_Iterable[_Union[_callback_pb2.ExecutionReport, _Mapping]]] = ...) -> None: ...

class GetQuotesRequest(_message.Message):
    __slots__ = ("symbols",)
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class GetQuotesResponse(_message.Message):
    __slots__ = ("quotes",)
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    quotes: _containers.RepeatedCompositeFieldContainer[Quote]
    def __init__(self, quotes: _Optional[_Iterable[_Union[Quote, _Mapping]]] = ...) -> None: ...

class Quote(_message.Message):
    __slots__ = ("symbol", "price", "quoted_at", "halted")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    QUOTED_AT_FIELD_NUMBER: _ClassVar[int]
    HALTED_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    price: str
    quoted_at: _timestamp_pb2.Timestamp
    halted: bool
    def __init__(self, symbol: _Optional[str] = ..., price: _Optional[str] = ..., quoted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., halted: _Optional[bool] = ...) -> None: ...

class GetDropCopyRequest(_message.Message):
    __slots__ = ("trading_day", "page_size", "page_token")
    TRADING_DAY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    trading_day: str
    page_size: int
    page_token: str
    def __init__(self, trading_day: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetDropCopyResponse(_message.Message):
    __slots__ = ("executions", "next_page_token")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[DropCopyEntry]
    next_page_token: str
    def __init__(self, executions: _Optional[_Iterable[_Union[DropCopyEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DropCopyEntry(_message.Message):
    __slots__ = ("report", "customer_id", "arrival_sequence", "tombstone")
    REPORT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    report: _callback_pb2.ExecutionReport
    customer_id: str
    arrival_sequence: int
    tombstone: Tombstone
    def __init__(self, report: _Optional[_Union[_callback_pb2.ExecutionReport, _Mapping]] = ..., customer_id: _Optional[str] = ..., arrival_sequence: _Optional[int] = ..., tombstone: _Optional[_Union[Tombstone, _Mapping]] = ...) -> None: ...

class Tombstone(_message.Message):
    __slots__ = ("order_id", "recorded_at")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    recorded_at: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
