import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListShardsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListShardsResponse(_message.Message):
    __slots__ = ("shard_count", "shards")
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    shard_count: int
    shards: _containers.RepeatedCompositeFieldContainer[Shard]
    def __init__(self, shard_count: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[Shard, _Mapping]]] = ...) -> None: ...

class GetShardRequest(_message.Message):
    __slots__ = ("shard",)
    SHARD_FIELD_NUMBER: _ClassVar[int]
    shard: int
    def __init__(self, shard: _Optional[int] = ...) -> None: ...

class PauseShardRequest(_message.Message):
    __slots__ = ("shard", "reason")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    shard: int
    reason: str
    def __init__(self, shard: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeShardRequest(_message.Message):
    __slots__ = ("shard",)
    SHARD_FIELD_NUMBER: _ClassVar[int]
    shard: int
    def __init__(self, shard: _Optional[int] = ...) -> None: ...

class Shard(_message.Message):
    __slots__ = ("shard", "paused", "pause_reason", "pending", "order_in_flight", "oldest_placed_at")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REASON_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    ORDER_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    OLDEST_PLACED_AT_FIELD_NUMBER: _ClassVar[int]
    shard: int
    paused: bool
    pause_reason: str
    pending: int
    order_in_flight: str
    oldest_placed_at: _timestamp_pb2.Timestamp
    def __init__(self, shard: _Optional[int] = ..., paused: _Optional[bool] = ..., pause_reason: _Optional[str] = ..., pending: _Optional[int] = ..., order_in_flight: _Optional[str] = ..., oldest_placed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
