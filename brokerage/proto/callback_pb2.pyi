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

class ReportOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_OUTCOME_UNSPECIFIED: _ClassVar[ReportOutcome]
    REPORT_OUTCOME_BOOKED: _ClassVar[ReportOutcome]
    REPORT_OUTCOME_DUPLICATE: _ClassVar[ReportOutcome]
    REPORT_OUTCOME_BREAK: _ClassVar[ReportOutcome]
REPORT_OUTCOME_UNSPECIFIED: ReportOutcome
REPORT_OUTCOME_BOOKED: ReportOutcome
REPORT_OUTCOME_DUPLICATE: ReportOutcome
REPORT_OUTCOME_BREAK: ReportOutcome

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
    __slots__ = ("duplicate", "outcome")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    outcome: ReportOutcome
    def __init__(self, duplicate: _Optional[bool] = ..., outcome: _Optional[_Union[ReportOutcome, str]] = ...) -> None: ...

class ExecutionReportBatch(_message.Message):
    __slots__ = ("reports", "batch_id")
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedScalarFieldContainer[bytes]
    batch_id: int
    def __init__(self, reports: _Optional[_Iterable[bytes]] = ..., batch_id: _Optional[int] = ...) -> None: ...

class ExecutionAckBatch(_message.Message):
    __slots__ = ("acks", "batch_id")
    ACKS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[ExecutionAck]
    batch_id: int
    def __init__(self, acks: _Optional[_Iterable[_Union[ExecutionAck, _Mapping]]] = ..., batch_id: _Optional[int] = ...) -> None: ...

class ExecutionAck(_message.Message):
    __slots__ = ("exec_id", "duplicate", "outcome")
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    duplicate: bool
    outcome: ReportOutcome
    def __init__(self, exec_id: _Optional[str] = ..., duplicate: _Optional[bool] = ..., outcome: _Optional[_Union[ReportOutcome, str]] = ...) -> None: ...
