import datetime

from . import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionReport(_message.Message):
    __slots__ = ("exec_id", "order_id", "venue_order_id", "exec_type", "last_quantity", "last_price", "cumulative_quantity", "reason", "transact_time", "symbol", "side", "order_quantity")
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_TYPE_FIELD_NUMBER: _ClassVar[int]
    LAST_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRANSACT_TIME_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    ORDER_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    order_id: str
    venue_order_id: str
    exec_type: _common_pb2.ExecType
    last_quantity: int
    last_price: str
    cumulative_quantity: int
    reason: str
    transact_time: _timestamp_pb2.Timestamp
    symbol: str
    side: _common_pb2.Side
    order_quantity: int
    def __init__(self, exec_id: _Optional[str] = ..., order_id: _Optional[str] = ..., venue_order_id: _Optional[str] = ..., exec_type: _Optional[_Union[_common_pb2.ExecType, str]] = ..., last_quantity: _Optional[int] = ..., last_price: _Optional[str] = ..., cumulative_quantity: _Optional[int] = ..., reason: _Optional[str] = ..., transact_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., order_quantity: _Optional[int] = ...) -> None: ...

class ReportExecutionResponse(_message.Message):
    __slots__ = ("duplicate",)
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    def __init__(self, duplicate: _Optional[bool] = ...) -> None: ...

class ExecutionReportBatch(_message.Message):
    __slots__ = ("reports",)
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[ExecutionReport]
    def __init__(self, reports: _Optional[_Iterable[_Union[ExecutionReport, _Mapping]]] = ...) -> None: ...

class ExecutionAckBatch(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[ExecutionAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[ExecutionAck, _Mapping]]] = ...) -> None: ...

class ExecutionAck(_message.Message):
    __slots__ = ("exec_id", "duplicate")
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    duplicate: bool
    def __init__(self, exec_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...
