"""The load generator process: a fixed number of PlaceOrder (or echo) calls in flight over one grpc.aio channel.

`python -m benchmarks.loadgen --kind place --target 127.0.0.1:N --concurrency 32 --measure-from T0 --measure-until T1`
calls from start-up (the warm-up) until T1 (time.monotonic(), shared by every process on Linux), then lets the calls
in flight finish and prints one JSON object on stdout: the outcome of every call, and the latency of each call that
completed inside [T0, T1). Each request buys 1 share (with --max-quantity M: 1 to M) of a random symbol for a random
customer "1".."N" with a client_order_id unique to this process; the echo kind sends the same serialized request to
the echo server.

With `--rate R` the load is an open loop instead: a call starts every 1/R seconds whether or not earlier ones have
answered (a slow server does not slow the offered load), at most --concurrency at once (a call due beyond that is
counted SKIPPED, not made), and latency runs from when the call was due.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc import aio

from benchmarks.echo_server import METHOD as ECHO_METHOD
from brokerage.proto import common_pb2, orders_pb2
from devtools.token import DevIdentity

PLACE_METHOD = "/broker.v1.OrderService/PlaceOrder"
SYMBOLS = ("AAPL", "MSFT", "GOOGL", "AMZN", "TSLA")
PLACED = common_pb2.OrderStatus.Name(common_pb2.ORDER_STATUS_PLACED)
ECHOED = "ECHOED"
SKIPPED = "SKIPPED"  # open loop: the call was due while --concurrency calls were in flight
READY_TIMEOUT_SECONDS = 10.0
# Signed PlaceOrder calls go to this many customers, each token reused for the run: as an API layer's signed-in
# customers' tokens are, for their session. Minted before the first call (RS256, ~0.3 ms each).
TOKENS = 5_000


@dataclass
class Tally:
    """Outcomes of all calls; latencies (ms) and outcomes of the calls that completed inside the window."""

    window_start: float
    window_end: float
    outcomes_all: Counter[str] = field(default_factory=Counter)
    outcomes_window: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    first_call_at: float | None = None  # when the first call started: after window_start, the warm-up was short

    def record(self, started: float, ended: float, outcome: str) -> None:
        if self.first_call_at is None or started < self.first_call_at:
            self.first_call_at = started
        self.outcomes_all[outcome] += 1
        if self.window_start <= ended < self.window_end:
            self.outcomes_window[outcome] += 1
            self.latencies_ms.append((ended - started) * 1000.0)

    def skip(self, due: float) -> None:
        """An open loop's call not made (too many in flight): an outcome, but no latency."""
        self.outcomes_all[SKIPPED] += 1
        if self.window_start <= due < self.window_end:
            self.outcomes_window[SKIPPED] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "outcomes_all": dict(self.outcomes_all),
            "outcomes_window": dict(self.outcomes_window),
            "latencies_ms": [round(x, 4) for x in self.latencies_ms],
            "first_call_at": self.first_call_at if self.first_call_at is not None else self.window_end,
        }


class Requests:
    """Buy orders of 1 share (or 1 to max_quantity, uniformly): random customer and symbol, client_order_id unique
    across processes and runs; each with its customer's token when `tokens` has them (customer i+1's at i: the
    customers are then the first len(tokens))."""

    def __init__(
        self, customers: int, seed: int | None, max_quantity: int = 1, tokens: list[str] | None = None
    ) -> None:
        self._customers = min(customers, len(tokens)) if tokens else customers
        self._metadata = [(("authorization", f"Bearer {t}"),) for t in tokens or ()]
        self._max_quantity = max_quantity
        self._random = random.Random(seed)
        self._prefix = f"bench-{uuid.uuid4().hex[:12]}"
        self._count = 0

    def next(self) -> tuple[orders_pb2.PlaceOrderRequest, tuple[tuple[str, str], ...]]:
        self._count += 1
        customer = self._random.randint(1, self._customers)
        request = orders_pb2.PlaceOrderRequest(
            customer_id=str(customer),
            client_order_id=f"{self._prefix}-{self._count}",
            symbol=self._random.choice(SYMBOLS),
            side=common_pb2.SIDE_BUY,
            quantity=self._random.randint(1, self._max_quantity) if self._max_quantity > 1 else 1,
        )
        return request, self._metadata[customer - 1] if self._metadata else ()


def place_outcome(request: orders_pb2.PlaceOrderRequest, response: orders_pb2.Order) -> str:
    """The order's status name: ORDER_STATUS_PLACED is the only success."""
    return common_pb2.OrderStatus.Name(response.status)


def echo_outcome(request: orders_pb2.PlaceOrderRequest, response: orders_pb2.PlaceOrderRequest) -> str:
    """ECHOED when the request came back intact."""
    return ECHOED if response == request else "ECHO_MISMATCH"


def callable_for(channel: aio.Channel, kind: str) -> tuple[aio.UnaryUnaryMultiCallable, Callable[..., str]]:
    """The multicallable and the outcome function of a kind: both serialize a PlaceOrderRequest."""
    serialize = orders_pb2.PlaceOrderRequest.SerializeToString
    if kind == "place":
        call = channel.unary_unary(PLACE_METHOD, serialize, orders_pb2.Order.FromString)
        return call, place_outcome
    call = channel.unary_unary(ECHO_METHOD, serialize, orders_pb2.PlaceOrderRequest.FromString)
    return call, echo_outcome


async def call_once(
    call: aio.UnaryUnaryMultiCallable,
    outcome_of: Callable[..., str],
    requests: Requests,
    tally: Tally,
    deadline: float,
    started: float,
) -> None:
    """One call with a deadline, recorded from `started` (now, or when an open loop had it due)."""
    request, metadata = requests.next()
    try:
        outcome = outcome_of(request, await call(request, timeout=deadline, metadata=metadata))
    except aio.AioRpcError as error:
        outcome = error.code().name
    tally.record(started, time.monotonic(), outcome)


async def caller(
    call: aio.UnaryUnaryMultiCallable,
    outcome_of: Callable[..., str],
    requests: Requests,
    tally: Tally,
    deadline: float,
) -> None:
    """One in-flight slot: calls back to back until the window ends; every call has a deadline."""
    while time.monotonic() < tally.window_end:
        await call_once(call, outcome_of, requests, tally, deadline, time.monotonic())


async def open_loop(
    call: aio.UnaryUnaryMultiCallable,
    outcome_of: Callable[..., str],
    requests: Requests,
    tally: Tally,
    args: argparse.Namespace,
) -> None:
    """A call due every 1/rate seconds until the window ends, at most args.concurrency in flight."""
    in_flight: set[asyncio.Task[None]] = set()
    first_due = time.monotonic()
    for index in itertools.count():
        due = first_due + index / args.rate
        if due >= tally.window_end:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if len(in_flight) >= args.concurrency:
            tally.skip(due)
            continue
        task = asyncio.create_task(call_once(call, outcome_of, requests, tally, args.deadline, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)


async def run(args: argparse.Namespace) -> Tally:
    """Opens the channel, waits until it is ready, and drives `concurrency` callers (or, with --rate, an open loop)
    until the window ends."""
    tally = Tally(args.measure_from, args.measure_until)
    requests = Requests(args.customers, args.seed, args.max_quantity, _tokens(args))
    async with aio.insecure_channel(args.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_SECONDS)
        call, outcome_of = callable_for(channel, args.kind)
        if args.rate:
            await open_loop(call, outcome_of, requests, tally, args)
        else:
            callers = (caller(call, outcome_of, requests, tally, args.deadline) for _ in range(args.concurrency))
            await asyncio.gather(*callers)
    return tally


def _tokens(args: argparse.Namespace) -> list[str] | None:
    """With --identity-dir (PlaceOrder): tokens of the first --tokens customers, minted before the first call, as
    an API layer holds its signed-in customers' tokens for their session."""
    if args.kind != "place" or args.identity_dir is None:
        return None
    identity = DevIdentity(args.identity_dir)
    return [identity.customer_token(str(c)) for c in range(1, min(args.customers, args.tokens) + 1)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=("place", "echo"), required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument(
        "--concurrency", type=int, required=True, help="calls in flight in this process (with --rate: at most)"
    )
    parser.add_argument("--rate", type=float, default=0.0, help="calls per second, an open loop (0: closed loop)")
    parser.add_argument("--measure-from", type=float, required=True, help="time.monotonic() the window opens")
    parser.add_argument("--measure-until", type=float, required=True, help="time.monotonic() the load stops")
    parser.add_argument("--deadline", type=float, default=5.0, help="per-call deadline, seconds")
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers are '1'..N")
    parser.add_argument("--seed", type=int, default=None, help="random seed of customers and symbols")
    parser.add_argument("--max-quantity", type=int, default=1, help="shares per order: 1 to this many, uniformly")
    parser.add_argument("--identity-dir", type=Path, help="development keys to sign PlaceOrder calls with")
    parser.add_argument("--tokens", type=int, default=TOKENS, help="customers with a token (the customers called)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    tally = asyncio.run(run(args))
    json.dump(tally.as_json(), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
