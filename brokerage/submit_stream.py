"""Orders to the exchange over one SubmitOrders stream per process, shared by its shard workers: a submission costs a
share of a message each way instead of a call (a call's set-up was most of what a submission cost the worker and the
venue). Orders submitted while a write is under way go together in the next one, so a claim's orders, and the
orders of shards that claim at the same moment, share a message (one costs each side about a fifth of a
millisecond of CPU here).

Each order waits for its own result, matched by order_id, within its deadline. A stream that breaks fails every
order waiting on it with StreamBroken: their outcome is unknown, so they are submitted again later, and the exchange
dedupes by order_id. The next submission opens a new stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from grpc import aio

from brokerage.proto import exchange_pb2
from brokerage.wire import SUBMIT_BATCH_MAX


class StreamBroken(Exception):
    """The stream ended before the order's result came back."""


class SubmitStream:
    def __init__(self, open_call: Callable[[], aio.StreamStreamCall]) -> None:
        self._open_call = open_call
        self._stream: _OpenStream | None = None

    async def submit(self, request: exchange_pb2.SubmitOrderRequest, timeout: float) -> exchange_pb2.SubmitOrderResult:
        """The exchange's result for the order; raises StreamBroken, or TimeoutError once the deadline passed."""
        stream = self._current()
        future: asyncio.Future[exchange_pb2.SubmitOrderResult] = asyncio.get_running_loop().create_future()
        stream.waiting[request.order_id] = future
        try:
            async with asyncio.timeout(timeout):
                await stream.send(request)
                return await future
        finally:
            if stream.waiting.get(request.order_id) is future:
                del stream.waiting[request.order_id]  # a late result finds nobody waiting, and is dropped

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()

    def _current(self) -> _OpenStream:
        if self._stream is None or self._stream.broken:
            self._stream = _OpenStream(self._open_call())
        return self._stream


class _OpenStream:
    """One SubmitOrders call, with the orders waiting for their results on it."""

    def __init__(self, call: aio.StreamStreamCall) -> None:
        self._call = call
        self.waiting: dict[str, asyncio.Future[exchange_pb2.SubmitOrderResult]] = {}
        self.broken = False
        self._outgoing: list[exchange_pb2.SubmitOrderRequest] = []  # queued, not yet taken to be written
        self._taken = 0  # requests taken to be written since the stream opened
        self._write_lock = asyncio.Lock()  # grpc allows one write at a time on a call
        self._reader = asyncio.create_task(self._read())

    async def send(self, request: exchange_pb2.SubmitOrderRequest) -> None:
        """Returns once the request is written: by this call, with whatever else waits, or by a write before it that
        took it along."""
        self._outgoing.append(request)
        ticket = self._taken + len(self._outgoing)  # written in the order queued: ours is out once this many are
        try:
            async with self._write_lock:
                while self._taken < ticket:
                    batch, self._outgoing = self._outgoing[:SUBMIT_BATCH_MAX], self._outgoing[SUBMIT_BATCH_MAX:]
                    self._taken += len(batch)  # written now, or lost with a write that fails
                    await self._call.write(exchange_pb2.SubmitOrderBatch(orders=batch))
        except (aio.AioRpcError, asyncio.InvalidStateError) as error:  # the call has ended
            broken = StreamBroken(f"SubmitOrders stream ended: {error!r}")
            self._break(broken)
            raise broken from error

    async def close(self) -> None:
        self._call.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for results in self._call:
                for result in results.results:
                    future = self.waiting.pop(result.order_id, None)
                    if future is not None and not future.done():
                        future.set_result(result)
            self._break(StreamBroken("the exchange ended the SubmitOrders stream"))
        except aio.AioRpcError as error:
            self._break(StreamBroken(f"SubmitOrders stream failed: {error.code().name}: {error.details()}"))
        except asyncio.CancelledError:
            self._break(StreamBroken("SubmitOrders stream closed"))
            raise

    def _break(self, error: StreamBroken) -> None:
        self.broken = True
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: the waiter may have given up already
