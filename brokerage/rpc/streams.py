"""Serving a stream whose requests are each answered on their own: they are handled concurrently as they arrive, and
each answer goes back once it is ready, so a slow one holds up no other.

A handler written for a unary call can answer a stream's requests through RequestContext: its abort ends that
request alone, as the status the unary call would have ended with (`status_of`), not the whole stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from brokerage.domain.errors import DomainError
from brokerage.rpc.errors import to_status
from brokerage.telemetry import get_logger

log = get_logger(__name__)

Request = TypeVar("Request")
Answer = TypeVar("Answer")
_END = object()  # the last answer has been queued


async def answer_each(
    requests: AsyncIterator[Request], answer: Callable[[Request], Awaitable[Answer]]
) -> AsyncIterator[Answer]:
    """Each request's answer, in the order they are ready. An answer that fails, or a stream that breaks, ends the
    stream with that error; the requests still being answered are cancelled."""
    async for ready in answer_as_ready(requests, answer):
        for one in ready:
            yield one


async def answer_as_ready(
    requests: AsyncIterator[Request], answer: Callable[[Request], Awaitable[Answer]]
) -> AsyncIterator[list[Answer]]:
    """As answer_each, but the answers ready at the same moment come together: a stream message can carry them all.
    The requests are taken up in the order they arrive."""
    answers: asyncio.Queue[object] = asyncio.Queue()
    answering: set[asyncio.Task[None]] = set()

    async def one(request: Request) -> None:
        try:
            answers.put_nowait(await answer(request))
        except Exception as error:
            answers.put_nowait(error)

    async def read() -> None:
        try:
            async for request in requests:
                task = asyncio.create_task(one(request))
                answering.add(task)
                task.add_done_callback(answering.discard)
            await asyncio.gather(*answering)
            answers.put_nowait(_END)
        except Exception as error:  # the stream broke
            answers.put_nowait(error)

    reader = asyncio.create_task(read())
    try:
        while True:
            ready = [await answers.get()]
            while not answers.empty():
                ready.append(answers.get_nowait())
            last = next((i for i, item in enumerate(ready) if item is _END or isinstance(item, BaseException)), None)
            if last != 0:
                yield ready[:last]  # type: ignore[misc]  # the queue holds answers, failures and the end marker
            if last is not None:
                if ready[last] is _END:
                    return
                raise ready[last]  # type: ignore[misc]
    finally:
        reader.cancel()
        for task in answering:
            task.cancel()


class Aborted(Exception):
    """A request of a stream aborted by its handler, with the status a unary call would have ended with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class RequestContext:
    """One stream request's context for a handler written for unary calls: abort ends the request, not the stream."""

    async def abort(self, code: grpc.StatusCode, details: str = "", *_: Any) -> None:
        raise Aborted(code, details)


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status a unary call failing with this error would have ended with."""
    if isinstance(error, Aborted):
        return error.code, error.details
    if isinstance(error, DomainError):
        status = to_status(error)
        return status.code, status.details
    log.error("unhandled error answering a stream request", error=repr(error))
    return grpc.StatusCode.INTERNAL, "internal error"
