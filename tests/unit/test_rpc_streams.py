"""Streams answered request by request (brokerage.rpc.streams), without a network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.rpc.streams import Aborted, RequestContext, answer_as_ready, answer_each, status_of


async def requests(*delays: float) -> AsyncIterator[float]:
    for delay in delays:
        yield delay


async def test_each_request_is_answered_as_soon_as_it_is_ready() -> None:
    async def answer(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    assert [a async for a in answer_each(requests(0.05, 0.0, 0.02), answer)] == [0.0, 0.02, 0.05]


async def test_a_failed_answer_ends_the_stream_with_its_error() -> None:
    async def answer(delay: float) -> float:
        if delay < 0:
            raise ValueError("malformed")
        await asyncio.sleep(delay)
        return delay

    answered = []
    with pytest.raises(ValueError, match="malformed"):
        async for a in answer_each(requests(1.0, -1.0), answer):
            answered.append(a)
    assert answered == []  # the slow one was cancelled, not awaited


async def test_answers_ready_at_the_same_moment_come_together_and_a_failure_after_those_before_it() -> None:
    async def answer(delay: float) -> float:
        await asyncio.sleep(abs(delay))
        if delay < 0:
            raise ValueError("malformed")
        return delay

    answered = []
    with pytest.raises(ValueError, match="malformed"):
        async for ready in answer_as_ready(requests(0.0, 0.0, 0.0, 0.03, -0.06, 0.5), answer):
            answered.append(ready)
    assert answered == [[0.0, 0.0, 0.0], [0.03]]


async def test_an_abort_ends_the_request_alone_with_the_status_a_unary_call_would_have() -> None:
    with pytest.raises(Aborted) as aborted:
        await RequestContext().abort(grpc.StatusCode.ALREADY_EXISTS, "order o-1 already received")
    assert status_of(aborted.value) == (grpc.StatusCode.ALREADY_EXISTS, "order o-1 already received")


def test_a_domain_error_maps_as_the_call_boundary_maps_it_and_anything_else_is_internal() -> None:
    invalid = InvalidRequest([FieldViolation("quantity", "must be positive")])
    assert status_of(invalid) == (grpc.StatusCode.INVALID_ARGUMENT, "quantity: must be positive")
    assert status_of(RuntimeError("bug")) == (grpc.StatusCode.INTERNAL, "internal error")
