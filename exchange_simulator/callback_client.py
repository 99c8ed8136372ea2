"""The simulator's outgoing calls to CallbackService, with the bearer secret: ReportExecution (one report, with a
deadline) and StreamExecutions (batches of reports out, of acknowledgements back, for as long as the stream lasts)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from grpc import aio

from brokerage.background import Backoff
from brokerage.domain.executions import ExecutionReport
from brokerage.proto import callback_pb2, callback_pb2_grpc
from brokerage.wire import report_to_proto
from exchange_simulator.delivery import DeliveryFailed
from exchange_simulator.stream_delivery import ENDED


class CallbackClient:
    """Sends one report, or opens a stream; any status but OK is DeliveryFailed, for the delivery to retry."""

    def __init__(self, target: str, token: str, deadline_seconds: float, reconnect: Backoff | None = None) -> None:
        # The channel's own reconnection backoff (up to 2 minutes by default) follows the delivery's, so a
        # CallbackService that is back is reached within the delivery's backoff, not minutes later.
        options = []
        if reconnect is not None:
            options = [
                ("grpc.initial_reconnect_backoff_ms", max(1, round(reconnect.initial * 1000))),
                ("grpc.max_reconnect_backoff_ms", max(1, round(reconnect.maximum * 1000))),
            ]
        self._channel = aio.insecure_channel(target, options=options)
        self._stub = callback_pb2_grpc.CallbackServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._deadline = deadline_seconds

    async def send(self, report: ExecutionReport) -> None:
        try:
            await self._stub.ReportExecution(report_to_proto(report), metadata=self._metadata, timeout=self._deadline)
        except aio.AioRpcError as error:
            raise DeliveryFailed(error.code().name, error.details() or "") from error

    def open_stream(self) -> ExecutionStream:
        """A new StreamExecutions call (no deadline: it lasts until it breaks or is cancelled)."""
        return ExecutionStream(self._stub.StreamExecutions(metadata=self._metadata))

    async def close(self) -> None:
        await self._channel.close()


class ExecutionStream:
    """One StreamExecutions call as a ReportStream: however it ends, write and read raise DeliveryFailed.

    grpcio's asyncio client may report a stream the server ended while a write was under way as INTERNAL
    ("Internal error from Core") instead of the server's status (grpc/grpc#36066): the reason of such a failure
    can be INTERNAL, though the outcome (everything unacknowledged is sent again) is the same.
    """

    def __init__(self, call: aio.StreamStreamCall) -> None:
        self._call = call

    async def write(self, reports: Sequence[ExecutionReport]) -> None:
        batch = callback_pb2.ExecutionReportBatch(reports=[report_to_proto(report) for report in reports])
        try:
            await self._call.write(batch)
        except aio.AioRpcError as error:
            raise DeliveryFailed(error.code().name, error.details() or "") from error
        except asyncio.InvalidStateError as error:  # the call has ended already
            code = await self._call.code()
            reason = ENDED if code == grpc.StatusCode.OK else code.name
            raise DeliveryFailed(reason, await self._call.details() or "") from error

    async def read(self) -> list[str]:
        try:
            batch = await self._call.read()
        except aio.AioRpcError as error:
            raise DeliveryFailed(error.code().name, error.details() or "") from error
        if batch is aio.EOF:
            raise DeliveryFailed(ENDED, "CallbackService ended the stream")
        return [ack.exec_id for ack in batch.acks]

    def cancel(self) -> None:
        self._call.cancel()
