"""One customer the venue fails, against its shard's throughput: `make bench-poison`.

`python -m benchmarks.poison [--rounds 3] [--customers 200] [--orders-per-customer 25] [--backlog-per-customer 100]
[--failing-customer 7]`

Each run starts what `make run` starts (devtools.mesh.plan_mesh) on a fresh private PostgreSQL and NATS, the
simulator's chaos at 30% and 1% of its reports malformed, as tests/e2e/test_poison_mesh.py does; in a run "with the
failing customer" the simulator also fails every SubmitOrder of that customer with INTERNAL
(EXCHANGE_FAILING_CUSTOMERS). Every run retries a failed send sooner than the defaults do (from 0.25 s, at most 1 s
apart) and parks it only after 8 unknown outcomes, so that the failing customer keeps failing through most of its
shard's drain, as a harsher neighbour than the defaults make; and the sweeper asks about a silent order after 5 s.

The failing customer's shard is paused (ExecutionService.PauseShard, the operators' lever) while the orders are
placed (--orders-per-customer for each customer, --backlog-per-customer for each of that shard's, interleaved
across customers, 1 to 3 shares of a few symbols) and every other shard drains and settles; then it is resumed,
and its backlog drains with nothing else to do. The shard's throughput is its orders reaching the venue per second,
between the first and the last of them (each order's first event after `placed`, from the record). Every order of
the shard that reached the venue counts, the failing customer's too in a run where it does not fail (they are work
the shard did): what is compared is how fast the shard works, and so what the failing customer's failures cost the
rest of it. Runs alternate between the two kinds (ABBA...), so a drift of the machine's speed falls on both; the
medians of each kind, their ratio and the calibration measured in the same run go to benchmarks/results/poison.md
and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg

from benchmarks.mesh import start_mesh
from benchmarks.phases import Calibration, calibrate, on_sigterm
from benchmarks.place_order import ROOT, Stack, log, prepare_database
from benchmarks.report import commit, machine
from brokerage.domain.sharding import shard_for
from brokerage.proto import common_pb2, execution_pb2, execution_pb2_grpc, orders_pb2, orders_pb2_grpc
from devtools.mesh import SHARD_COUNT
from devtools.stack import wait_until
from devtools.token import DevIdentity, bearer, customer_tokens

NAME = "poison"
WITHOUT, WITH = "without the failing customer", "with the failing customer"
CHAOS = {
    "EXCHANGE_CHAOS_RATE": "0.3",
    "EXCHANGE_CHAOS_MAX_DELAY_MS": "300",
    "EXCHANGE_CHAOS_MALFORMED_RATE": "0.01",
    "EXCHANGE_SEED": "13",
    # A fill whose report came malformed is booked from the copy the venue resends when asked: asked after 5 s, not
    # the default 60, so the other shards drain sooner (it changes nothing of the paused shard's measurement).
    "BROKER_STATUS_QUERY_AFTER_SECONDS": "5",
}
HARSH_RETRIES = {
    "BROKER_SUBMIT_RETRY_INITIAL_SECONDS": "0.25",
    "BROKER_SUBMIT_RETRY_MAX_SECONDS": "1",
    "BROKER_SUBMIT_UNKNOWN_ATTEMPTS": "8",
}
SYMBOLS = ("AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "JPM")
IN_FLIGHT = 48  # PlaceOrder calls at once
MAX_QUANTITY = 3  # shares per order: 100 orders of a customer stay within its funding
DEADLINE_SECONDS = 10.0
DRAIN_TIMEOUT_SECONDS = 600.0
REACHED = ("submitted", "partially_filled", "filled", "rejected")  # an order's events once the venue has it
WITHIN = 0.10  # the bound on what the failing customer may cost its shard


@dataclass(frozen=True)
class Options:
    rounds: int
    customers: int
    orders_per_customer: int
    backlog_per_customer: int  # for each customer of the failing customer's shard
    failing_customer: str
    results_dir: Path


@dataclass(frozen=True)
class ShardRun:
    kind: str
    shard: int
    orders: int  # the shard's orders that reached the venue (the failing customer's too, when it does not fail)
    seconds: float  # from the first of them reaching the venue to the last
    per_second: float
    parked: int  # open 'parked' breaks once the shard drained (the failing customer's oldest order, given up on)
    failing_attempts: int  # SubmitOrder calls that failed for the failing customer's orders


def run_once(kind: str, options: Options) -> ShardRun:
    stack = Stack(prefix="bench-poison-")
    try:
        cluster, nats = stack.postgres(), stack.nats()
        database_url, _ = prepare_database(cluster, options.customers)
        failing = {"EXCHANGE_FAILING_CUSTOMERS": options.failing_customer} if kind == WITH else {}
        settings = {**CHAOS, **HARSH_RETRIES, **failing}
        mesh = start_mesh(stack, database_url, nats.url, SHARD_COUNT, settlement=True, settings=settings)
        shard = shard_for(options.failing_customer, SHARD_COUNT)
        lever = mesh.workers[0].address
        operator = bearer(stack.identity.operator_token("bench-poison"))
        _shard_lever(lever, "PauseShard", execution_pb2.PauseShardRequest(shard=shard, reason="bench-poison"), operator)
        asyncio.run(_place(mesh.order_service.address, _orders(options, shard), stack.identity))
        log(f"{kind}: placed; the other shards draining")
        _wait_ended(database_url, f"shard <> {shard}")
        _shard_lever(lever, "ResumeShard", execution_pb2.ResumeShardRequest(shard=shard), operator)
        log(f"{kind}: shard {shard} resumed")
        held = options.failing_customer if kind == WITH else ""  # its orders never reach the venue
        _wait_reached(database_url, shard, held)
        return _measured(kind, database_url, shard, options.failing_customer)
    finally:
        stack.close()


def _orders(options: Options, shard: int) -> list[orders_pb2.PlaceOrderRequest]:
    rng = random.Random(13)
    customers = [str(c) for c in range(1, options.customers + 1)]
    count = {
        c: options.backlog_per_customer if shard_for(c, SHARD_COUNT) == shard else options.orders_per_customer
        for c in customers
    }
    return [
        orders_pb2.PlaceOrderRequest(
            customer_id=c,
            client_order_id=f"poison-{i}",
            symbol=rng.choice(SYMBOLS),
            side=common_pb2.SIDE_BUY,
            quantity=rng.randint(1, MAX_QUANTITY),
        )
        for i in range(max(count.values()))
        for c in customers
        if i < count[c]
    ]


async def _place(target: str, requests: Sequence[orders_pb2.PlaceOrderRequest], identity: DevIdentity) -> None:
    async with grpc.aio.insecure_channel(target, interceptors=customer_tokens(identity).interceptors()) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def place(request: orders_pb2.PlaceOrderRequest) -> orders_pb2.Order:
            async with slots:
                return await stub.PlaceOrder(request, timeout=DEADLINE_SECONDS, wait_for_ready=True)

        placed = await asyncio.gather(*map(place, requests))
    refused = {o.status_reason for o in placed if o.status != common_pb2.ORDER_STATUS_PLACED}
    if refused:
        raise RuntimeError(f"not every order was PLACED: {sorted(refused)[:5]}")


def _shard_lever(target: str, method: str, request: object, operator: tuple[tuple[str, str]]) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        getattr(stub, method)(request, timeout=DEADLINE_SECONDS, metadata=operator)


def _count(database_url: str, sql: str, *params: object) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def _wait_ended(database_url: str, where: str) -> None:
    sql = f"SELECT count(*) FROM orders WHERE {where} AND status IN ('PLACED', 'SUBMITTED', 'PARTIALLY_FILLED')"
    wait_until(lambda: _count(database_url, sql) == 0, DRAIN_TIMEOUT_SECONDS, f"orders ended where {where}")


def _wait_reached(database_url: str, shard: int, held: str) -> None:
    sql = "SELECT count(*) FROM orders WHERE shard = %s AND customer_id <> %s AND status = 'PLACED'"
    wait_until(lambda: _count(database_url, sql, shard, held) == 0, DRAIN_TIMEOUT_SECONDS, "the shard drained")


def _measured(kind: str, database_url: str, shard: int, failing: str) -> ShardRun:
    with psycopg.connect(database_url) as conn:
        reached = conn.execute(
            """SELECT min(reached), max(reached), count(*) FROM (
                 SELECT min(e.occurred_at) AS reached FROM orders o JOIN order_events e USING (order_id)
                  WHERE o.shard = %s AND e.event_type = ANY(%s)
                  GROUP BY o.order_id) r""",
            (shard, list(REACHED)),
        ).fetchone()
    assert reached is not None
    first, last, orders = reached
    parked = _count(database_url, "SELECT count(*) FROM breaks WHERE kind = 'parked' AND resolved_at IS NULL")
    failing_attempts = _count(
        database_url, "SELECT coalesce(sum(submit_attempts), 0) FROM orders WHERE customer_id = %s", failing
    )
    seconds = (last - first).total_seconds()
    run = ShardRun(kind, shard, orders, seconds, (orders - 1) / seconds, parked, failing_attempts)
    log(f"{kind}: {run.orders} orders of shard {shard} reached the venue in {seconds:.2f} s: {run.per_second:.1f}/s")
    return run


def benchmark(options: Options) -> tuple[Calibration, list[ShardRun]]:
    calibration_stack = Stack(prefix="bench-poison-calibration-")
    try:
        calibration = calibrate(calibration_stack)
    finally:
        calibration_stack.close()
    log(calibration.describe())
    kinds = [kind for r in range(options.rounds) for kind in ((WITHOUT, WITH) if r % 2 == 0 else (WITH, WITHOUT))]
    return calibration, [run_once(kind, options) for kind in kinds]


def summary(runs: Sequence[ShardRun]) -> dict[str, object]:
    median = {kind: statistics.median(r.per_second for r in runs if r.kind == kind) for kind in (WITHOUT, WITH)}
    ratio = median[WITH] / median[WITHOUT]
    return {"median_per_second": median, "ratio": ratio, "within_bound": ratio >= 1 - WITHIN}


def write(options: Options, calibration: Calibration, runs: Sequence[ShardRun], took: float) -> list[Path]:
    result = summary(runs)
    median, ratio = result["median_per_second"], float(result["ratio"])  # type: ignore[arg-type]
    assert isinstance(median, dict)
    shard = runs[0].shard
    lines = [
        f"# One failing customer against its shard's throughput ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- **Command:** `python -m benchmarks.poison --rounds {options.rounds} --customers {options.customers} "
        f"--orders-per-customer {options.orders_per_customer} --backlog-per-customer {options.backlog_per_customer} "
        f"--failing-customer {options.failing_customer}` "
        f"(`make bench-poison` runs the defaults). Took {took / 60:.1f} min. Commit {commit()[:12]}.",
        f"- **Machine:** {_machine()}. Its speed: {calibration.describe()}.",
        f"- **Each run:** the mesh of `make run` on a fresh private PostgreSQL and NATS, the simulator's chaos at 30% "
        f"and 1% of its reports malformed; {options.customers} customers x {options.orders_per_customer} buys, "
        f"{options.backlog_per_customer} for each customer of shard {shard} (customer {options.failing_customer}'s, "
        f"of {SHARD_COUNT}), which is paused while the orders are placed and the other shards drain, then resumed: "
        "its orders reaching the venue per second, first to last (the failing customer's too when it does not fail: "
        "work the shard did). With the failing customer, the simulator answers its every SubmitOrder INTERNAL. A "
        "failed send is retried from 0.25 s, at most 1 s apart, and parked after 8 unknown outcomes (harsher than "
        "the defaults: 1 s to 60 s, 5), so the failing customer keeps failing through most of the drain; the "
        "sweeper asks about a silent order after 5 s. Runs alternate between the two kinds.",
        "",
        "## Result",
        "",
        f"- Median {median[WITHOUT]:.1f} orders/s {WITHOUT}, {median[WITH]:.1f} {WITH}: **{ratio:.2f}** times the "
        f"throughput ({'within' if result['within_bound'] else 'NOT within'} {WITHIN:.0%}).",
        "",
        "| run | kind | orders | seconds | orders/s | parked breaks | its failed SubmitOrder calls |",
        "|---:|---|---:|---:|---:|---:|---:|",
        *(
            f"| {n} | {r.kind} | {r.orders} | {r.seconds:.2f} | {r.per_second:.1f} | {r.parked} | "
            f"{r.failing_attempts} |"
            for n, r in enumerate(runs, 1)
        ),
        "",
    ]
    options.results_dir.mkdir(parents=True, exist_ok=True)
    md, js = options.results_dir / f"{NAME}.md", options.results_dir / f"{NAME}.json"
    md.write_text("\n".join(lines))
    document = {
        "options": {k: str(v) for k, v in asdict(options).items()},
        "calibration": calibration.as_json(),
        "runs": [asdict(r) for r in runs],
        "summary": result,
        "machine": machine(),
        "commit": commit(),
    }
    js.write_text(json.dumps(document, indent=2) + "\n")
    return [md, js]


def _machine() -> str:
    host = machine()
    return f"nproc={host['nproc']}, {host['cpu']}, {host['memory_gib']} GiB, Linux {host['kernel']}"


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.poison", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each kind (default 3)")
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--orders-per-customer", type=int, default=25)
    parser.add_argument("--backlog-per-customer", type=int, default=100, help="for the failing customer's shard")
    parser.add_argument("--failing-customer", default="7")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.customers < 2 or min(args.orders_per_customer, args.backlog_per_customer) < 2:
        parser.error("at least 1 round, 2 customers and 2 orders each")
    if args.failing_customer not in {str(c) for c in range(1, args.customers + 1)}:
        parser.error("--failing-customer must be one of the funded customers, 1 to --customers")
    return Options(
        args.rounds,
        args.customers,
        args.orders_per_customer,
        args.backlog_per_customer,
        args.failing_customer,
        args.results_dir,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)  # stops every process started, as Ctrl-C does
    started = time.monotonic()
    calibration, runs = benchmark(options)
    for path in write(options, calibration, runs, time.monotonic() - started):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
