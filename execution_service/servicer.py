"""broker.v1.ExecutionService over gRPC: the operator's view of the shards and the pause lever."""

from __future__ import annotations

from grpc import aio

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.sharding import format_shard_set
from brokerage.proto import execution_pb2, execution_pb2_grpc
from brokerage.rpc.identity import Kind, Policy, Rule, operator
from brokerage.wire import timestamp
from execution_service.shards import ShardBoard, ShardView

DEFAULT_PAUSE_REASON = "paused by an operator"
SERVICE_NAME = execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name
READ, WRITE = Rule(Kind.OPERATOR, "ops:read"), Rule(Kind.OPERATOR, "ops:write")
POLICY = Policy(
    {
        f"/{SERVICE_NAME}/{method}": rule
        for method, rule in {"ListShards": READ, "GetShard": READ, "PauseShard": WRITE, "ResumeShard": WRITE}.items()
    }
)


class ExecutionServicer(execution_pb2_grpc.ExecutionServiceServicer):
    def __init__(self, board: ShardBoard, shard_count: int) -> None:
        self._board = board
        self._shard_count = shard_count

    async def ListShards(
        self, request: execution_pb2.ListShardsRequest, context: aio.ServicerContext
    ) -> execution_pb2.ListShardsResponse:
        views = await self._board.views(self._board.owned)
        return execution_pb2.ListShardsResponse(shard_count=self._shard_count, shards=[_shard(v) for v in views])

    async def GetShard(
        self, request: execution_pb2.GetShardRequest, context: aio.ServicerContext
    ) -> execution_pb2.Shard:
        return await self._view(self._valid_shard(request.shard))

    async def PauseShard(
        self, request: execution_pb2.PauseShardRequest, context: aio.ServicerContext
    ) -> execution_pb2.Shard:
        shard = self._valid_shard(request.shard)
        await self._board.pause(shard, request.reason.strip() or DEFAULT_PAUSE_REASON, operator())
        return await self._view(shard)

    async def ResumeShard(
        self, request: execution_pb2.ResumeShardRequest, context: aio.ServicerContext
    ) -> execution_pb2.Shard:
        shard = self._valid_shard(request.shard)
        await self._board.resume(shard, operator())
        return await self._view(shard)

    async def _view(self, shard: int) -> execution_pb2.Shard:
        (view,) = await self._board.views((shard,))
        return _shard(view)

    def _valid_shard(self, shard: int) -> int:
        """Any shard of the system may be viewed and paused from any cluster (a pause is shard-wide, and moving
        shards between clusters starts with pausing one that the other cluster owns)."""
        if not 0 <= shard < self._shard_count:
            owned = format_shard_set(self._board.owned)
            raise InvalidRequest(
                [FieldViolation("shard", f"must be 0 to {self._shard_count - 1} (this cluster owns {owned})")]
            )
        return shard


def _shard(view: ShardView) -> execution_pb2.Shard:
    record = view.record
    shard = execution_pb2.Shard(
        shard=record.shard,
        paused=record.paused,
        pause_reason=record.pause_reason,
        pending=-1 if view.backlog is None else view.backlog,
        order_in_flight=record.order_in_flight or "",
    )
    if record.oldest_placed_at is not None:
        shard.oldest_placed_at.CopyFrom(timestamp(record.oldest_placed_at))
    return shard
