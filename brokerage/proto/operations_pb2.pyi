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

class BreakResolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAK_RESOLUTION_UNSPECIFIED: _ClassVar[BreakResolution]
    BREAK_RESOLUTION_ACCEPT_VENUE: _ClassVar[BreakResolution]
    BREAK_RESOLUTION_WRITE_OFF: _ClassVar[BreakResolution]
BREAK_RESOLUTION_UNSPECIFIED: BreakResolution
BREAK_RESOLUTION_ACCEPT_VENUE: BreakResolution
BREAK_RESOLUTION_WRITE_OFF: BreakResolution

class Break(_message.Message):
    __slots__ = ("break_id", "kind", "exec_id", "order_id", "detail", "recorded_at", "booked_to_error_account", "resolved_at", "resolution", "resolved_by", "resolution_note")
    BREAK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    BOOKED_TO_ERROR_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_BY_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_NOTE_FIELD_NUMBER: _ClassVar[int]
    break_id: int
    kind: str
    exec_id: str
    order_id: str
    detail: str
    recorded_at: _timestamp_pb2.Timestamp
    booked_to_error_account: bool
    resolved_at: _timestamp_pb2.Timestamp
    resolution: str
    resolved_by: str
    resolution_note: str
    def __init__(self, break_id: _Optional[int] = ..., kind: _Optional[str] = ..., exec_id: _Optional[str] = ..., order_id: _Optional[str] = ..., detail: _Optional[str] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., booked_to_error_account: _Optional[bool] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolution: _Optional[str] = ..., resolved_by: _Optional[str] = ..., resolution_note: _Optional[str] = ...) -> None: ...

class ListBreaksRequest(_message.Message):
    __slots__ = ("kind", "include_resolved", "page_size", "page_token")
    KIND_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESOLVED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kind: str
    include_resolved: bool
    page_size: int
    page_token: str
    def __init__(self, kind: _Optional[str] = ..., include_resolved: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBreaksResponse(_message.Message):
    __slots__ = ("breaks", "next_page_token")
    BREAKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    breaks: _containers.RepeatedCompositeFieldContainer[Break]
    next_page_token: str
    def __init__(self, breaks: _Optional[_Iterable[_Union[Break, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ResolveBreakRequest(_message.Message):
    __slots__ = ("break_id", "resolution", "note", "exec_id")
    BREAK_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    break_id: int
    resolution: BreakResolution
    note: str
    exec_id: str
    def __init__(self, break_id: _Optional[int] = ..., resolution: _Optional[_Union[BreakResolution, str]] = ..., note: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class ResolveBreakResponse(_message.Message):
    __slots__ = ("outcome",)
    BREAK_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    outcome: str
    def __init__(self, outcome: _Optional[str] = ..., **kwargs) -> None: ...

class ResolveBreaksRequest(_message.Message):
    __slots__ = ("kind", "resolution", "note")
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    resolution: BreakResolution
    note: str
    def __init__(self, kind: _Optional[str] = ..., resolution: _Optional[_Union[BreakResolution, str]] = ..., note: _Optional[str] = ...) -> None: ...

class ResolveBreaksResponse(_message.Message):
    __slots__ = ("resolved",)
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    resolved: _containers.RepeatedCompositeFieldContainer[ResolveBreakResponse]
    def __init__(self, resolved: _Optional[_Iterable[_Union[ResolveBreakResponse, _Mapping]]] = ...) -> None: ...

class RedriveOrderRequest(_message.Message):
    __slots__ = ("order_id", "note")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    note: str
    def __init__(self, order_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class RedriveOrderResponse(_message.Message):
    __slots__ = ("order_id", "status", "outcome")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    status: _common_pb2.OrderStatus
    outcome: str
    def __init__(self, order_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.OrderStatus, str]] = ..., outcome: _Optional[str] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("trading_day",)
    TRADING_DAY_FIELD_NUMBER: _ClassVar[int]
    trading_day: str
    def __init__(self, trading_day: _Optional[str] = ...) -> None: ...

class ReconcileReport(_message.Message):
    __slots__ = ("clean", "text", "checks")
    CLEAN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    clean: bool
    text: str
    checks: _containers.RepeatedCompositeFieldContainer[ReconcileCheck]
    def __init__(self, clean: _Optional[bool] = ..., text: _Optional[str] = ..., checks: _Optional[_Iterable[_Union[ReconcileCheck, _Mapping]]] = ...) -> None: ...

class ReconcileCheck(_message.Message):
    __slots__ = ("name", "findings", "skipped")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    name: str
    findings: int
    skipped: bool
    def __init__(self, name: _Optional[str] = ..., findings: _Optional[int] = ..., skipped: _Optional[bool] = ...) -> None: ...
