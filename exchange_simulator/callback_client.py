"""The simulator's outgoing calls to CallbackService, with the bearer secret: ReportExecution (one report, with a
deadline) and StreamExecutions (batches of reports out, of acknowledgements back, for as long as the stream lasts).

Each report goes as the bytes `encode` makes of it (chaos may break some, as a faulty venue would): ReportExecution
is called with those bytes as they are, and a batch carries each report's bytes on its own."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence

import grpc
from grpc import aio

from brokerage.background import Backoff
from brokerage.domain.executions import ExecutionReport
from brokerage.proto import callback_pb2, callback_pb2_grpc
from brokerage.rpc.tls import RenewingChannel, TlsFiles, open_channel
from brokerage.wire import report_to_proto, reports_batch
from exchange_simulator.delivery import DeliveryFailed
from exchange_simulator.stream_delivery import ENDED

Encode = Callable[[ExecutionReport], bytes]
REPORT_EXECUTION = "/broker.v1.CallbackService/ReportExecution"


def encode_report(report: ExecutionReport) -> bytes:
    return report_to_proto(report).SerializeToString()


class CallbackClient:
    """Sends one report, or opens a stream; any status but OK is DeliveryFailed, for the delivery to retry."""

    def __init__(
        self,
        target: str,
        token: str,
        deadline_seconds: float,
        reconnect: Backoff | None = None,
        encode: Encode = encode_report,
        tls: TlsFiles | None = None,
    ) -> None:
        # The channel's own reconnection backoff (up to 2 minutes by default) follows the delivery's, so a
        # CallbackService that is back is reached within the delivery's backoff, not minutes later.
        options: list[tuple[str, object]] = []
        if reconnect is not None:
            options = [
                ("grpc.initial_reconnect_backoff_ms", max(1, round(reconnect.initial * 1000))),
                ("grpc.max_reconnect_backoff_ms", max(1, round(reconnect.maximum * 1000))),
            ]
        self._channels = RenewingChannel(lambda: open_channel(target, tls, options), tls)
        self._calls: tuple[aio.Channel, callback_pb2_grpc.CallbackServiceStub, aio.UnaryUnaryMultiCallable] | None = (
            None
        )
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._deadline = deadline_seconds
        self._encode = encode

    def _current(self) -> tuple[callback_pb2_grpc.CallbackServiceStub, aio.UnaryUnaryMultiCallable]:
        """The stub and the raw ReportExecution of the current channel (a renewed certificate makes a new one)."""
        channel = self._channels.current()
        if self._calls is None or self._calls[0] is not channel:
            report_execution = channel.unary_unary(
                REPORT_EXECUTION,
                request_serializer=None,  # the report's bytes, as encode made them
                response_deserializer=callback_pb2.ReportExecutionResponse.FromString,
            )
            self._calls = (channel, callback_pb2_grpc.CallbackServiceStub(channel), report_execution)
        return self._calls[1], self._calls[2]

    async def send(self, report: ExecutionReport) -> None:
        _, report_execution = self._current()
        try:
            await report_execution(self._encode(report), metadata=self._metadata, timeout=self._deadline)
        except aio.AioRpcError as error:
            raise DeliveryFailed(error.code().name, error.details() or "") from error

    def open_stream(self) -> ExecutionStream:
        """A new StreamExecutions call (no deadline: it lasts until it breaks or is cancelled)."""
        stub, _ = self._current()
        return ExecutionStream(stub.StreamExecutions(metadata=self._metadata), self._encode)

    async def close(self) -> None:
        await self._channels.close()


class ExecutionStream:
    """One StreamExecutions call as a ReportStream: however it ends, write and read raise DeliveryFailed.

    grpcio's asyncio client may report a stream the server ended while a write was under way as INTERNAL
    ("Internal error from Core") instead of the server's status (grpc/grpc#36066): the reason of such a failure
    can be INTERNAL, though the outcome (everything unacknowledged is sent again) is the same.
    """

    def __init__(self, call: aio.StreamStreamCall, encode: Encode = encode_report) -> None:
        self._call = call
        self._encode = encode
        self._batch_ids = itertools.count(1)
        self._unanswered: dict[int, list[str]] = {}  # each batch sent, by id: the exec_ids of its reports in order

    async def write(self, reports: Sequence[ExecutionReport]) -> None:
        batch_id = next(self._batch_ids)
        self._unanswered[batch_id] = [report.exec_id for report in reports]
        batch = reports_batch([self._encode(report) for report in reports], batch_id)
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
        sent = self._unanswered.pop(batch.batch_id, None)
        if sent is None or len(sent) != len(batch.acks):  # acknowledgements are by position in the batch answered
            raise DeliveryFailed("MISMATCHED", f"an acknowledgement of {len(batch.acks)} for batch {batch.batch_id}")
        return sent

    def cancel(self) -> None:
        self._call.cancel()
