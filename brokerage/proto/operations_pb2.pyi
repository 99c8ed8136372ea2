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

class HaltScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HALT_SCOPE_UNSPECIFIED: _ClassVar[HaltScope]
    HALT_SCOPE_FIRM: _ClassVar[HaltScope]
    HALT_SCOPE_SYMBOL: _ClassVar[HaltScope]
    HALT_SCOPE_CUSTOMER: _ClassVar[HaltScope]

class AccountStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_STATUS_UNSPECIFIED: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_ACTIVE: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_CLOSING_ONLY: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_BLOCKED: _ClassVar[AccountStatus]
BREAK_RESOLUTION_UNSPECIFIED: BreakResolution
BREAK_RESOLUTION_ACCEPT_VENUE: BreakResolution
BREAK_RESOLUTION_WRITE_OFF: BreakResolution
HALT_SCOPE_UNSPECIFIED: HaltScope
HALT_SCOPE_FIRM: HaltScope
HALT_SCOPE_SYMBOL: HaltScope
HALT_SCOPE_CUSTOMER: HaltScope
ACCOUNT_STATUS_UNSPECIFIED: AccountStatus
ACCOUNT_STATUS_ACTIVE: AccountStatus
ACCOUNT_STATUS_CLOSING_ONLY: AccountStatus
ACCOUNT_STATUS_BLOCKED: AccountStatus

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

class TradingHalt(_message.Message):
    __slots__ = ("halt_id", "scope", "symbol", "customer_id", "reason", "cancel_open_orders", "set_at", "set_by", "cleared_at", "cleared_by")
    HALT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANCEL_OPEN_ORDERS_FIELD_NUMBER: _ClassVar[int]
    SET_AT_FIELD_NUMBER: _ClassVar[int]
    SET_BY_FIELD_NUMBER: _ClassVar[int]
    CLEARED_AT_FIELD_NUMBER: _ClassVar[int]
    CLEARED_BY_FIELD_NUMBER: _ClassVar[int]
    halt_id: int
    scope: HaltScope
    symbol: str
    customer_id: str
    reason: str
    cancel_open_orders: bool
    set_at: _timestamp_pb2.Timestamp
    set_by: str
    cleared_at: _timestamp_pb2.Timestamp
    cleared_by: str
    def __init__(self, halt_id: _Optional[int] = ..., scope: _Optional[_Union[HaltScope, str]] = ..., symbol: _Optional[str] = ..., customer_id: _Optional[str] = ..., reason: _Optional[str] = ..., cancel_open_orders: _Optional[bool] = ..., set_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., set_by: _Optional[str] = ..., cleared_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cleared_by: _Optional[str] = ...) -> None: ...

class SetTradingHaltRequest(_message.Message):
    __slots__ = ("scope", "symbol", "customer_id", "reason", "cancel_open_orders")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANCEL_OPEN_ORDERS_FIELD_NUMBER: _ClassVar[int]
    scope: HaltScope
    symbol: str
    customer_id: str
    reason: str
    cancel_open_orders: bool
    def __init__(self, scope: _Optional[_Union[HaltScope, str]] = ..., symbol: _Optional[str] = ..., customer_id: _Optional[str] = ..., reason: _Optional[str] = ..., cancel_open_orders: _Optional[bool] = ...) -> None: ...

class SetTradingHaltResponse(_message.Message):
    __slots__ = ("halt", "already_in_force")
    HALT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    halt: TradingHalt
    already_in_force: bool
    def __init__(self, halt: _Optional[_Union[TradingHalt, _Mapping]] = ..., already_in_force: _Optional[bool] = ...) -> None: ...

class ClearTradingHaltRequest(_message.Message):
    __slots__ = ("halt_id", "reason")
    HALT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    halt_id: int
    reason: str
    def __init__(self, halt_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ListTradingHaltsRequest(_message.Message):
    __slots__ = ("include_cleared",)
    INCLUDE_CLEARED_FIELD_NUMBER: _ClassVar[int]
    include_cleared: bool
    def __init__(self, include_cleared: _Optional[bool] = ...) -> None: ...

class ListTradingHaltsResponse(_message.Message):
    __slots__ = ("halts",)
    HALTS_FIELD_NUMBER: _ClassVar[int]
    halts: _containers.RepeatedCompositeFieldContainer[TradingHalt]
    def __init__(self, halts: _Optional[_Iterable[_Union[TradingHalt, _Mapping]]] = ...) -> None: ...

class SetAccountStatusRequest(_message.Message):
    __slots__ = ("customer_id", "status", "reason")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    status: AccountStatus
    reason: str
    def __init__(self, customer_id: _Optional[str] = ..., status: _Optional[_Union[AccountStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class SetAccountStatusResponse(_message.Message):
    __slots__ = ("customer_id", "status")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    status: AccountStatus
    def __init__(self, customer_id: _Optional[str] = ..., status: _Optional[_Union[AccountStatus, str]] = ...) -> None: ...

class SetLimitsRequest(_message.Message):
    __slots__ = ("customer_id", "max_order_notional", "max_order_quantity", "max_daily_buy_notional", "max_orders_per_minute", "reason")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MAX_DAILY_BUY_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDERS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    max_order_notional: str
    max_order_quantity: int
    max_daily_buy_notional: str
    max_orders_per_minute: int
    reason: str
    def __init__(self, customer_id: _Optional[str] = ..., max_order_notional: _Optional[str] = ..., max_order_quantity: _Optional[int] = ..., max_daily_buy_notional: _Optional[str] = ..., max_orders_per_minute: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class GetLimitsRequest(_message.Message):
    __slots__ = ("customer_id",)
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    def __init__(self, customer_id: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("customer_id", "max_order_notional", "max_order_quantity", "max_daily_buy_notional", "max_orders_per_minute")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MAX_DAILY_BUY_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDERS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    max_order_notional: str
    max_order_quantity: int
    max_daily_buy_notional: str
    max_orders_per_minute: int
    def __init__(self, customer_id: _Optional[str] = ..., max_order_notional: _Optional[str] = ..., max_order_quantity: _Optional[int] = ..., max_daily_buy_notional: _Optional[str] = ..., max_orders_per_minute: _Optional[int] = ...) -> None: ...

class RiskEvent(_message.Message):
    __slots__ = ("event_id", "occurred_at", "action", "customer_id", "symbol", "halt_id", "detail", "reason", "operator_issuer", "operator", "operator_peer")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    HALT_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ISSUER_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_PEER_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    occurred_at: _timestamp_pb2.Timestamp
    action: str
    customer_id: str
    symbol: str
    halt_id: int
    detail: str
    reason: str
    operator_issuer: str
    operator: str
    operator_peer: str
    def __init__(self, event_id: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[str] = ..., customer_id: _Optional[str] = ..., symbol: _Optional[str] = ..., halt_id: _Optional[int] = ..., detail: _Optional[str] = ..., reason: _Optional[str] = ..., operator_issuer: _Optional[str] = ..., operator: _Optional[str] = ..., operator_peer: _Optional[str] = ...) -> None: ...

class ListRiskEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRiskEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RiskEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[RiskEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
