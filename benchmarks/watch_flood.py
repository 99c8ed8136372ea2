"""Other customers' PlaceOrder while one customer floods OrderService with WatchOrders streams (`make bench-watch`).

`python -m benchmarks.watch_flood [--streams 500] [--level 16] [--duration 15] [--reps 3] [--customers 100000]`

Starts its own PostgreSQL, NATS and one OrderService (as `make bench` does, its default limits: at most
BROKER_WATCHES_PER_CUSTOMER streams of one customer per replica), and, to show what the limit is for, a second
OrderService whose limit is above the flood. Each repetition measures PlaceOrder at a fixed number of calls in flight
(random customers) without a flood, then while a separate process holds `--streams` WatchOrders streams of customer
1 open on the same OrderService, on each of the two services; the flooder counts the streams opened and those
refused (RESOURCE_EXHAUSTED). The echo server's calls/s in the same run are the machine's calibration. Results:
benchmarks/results/watch_flood.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from benchmarks.place_order import (
    RESULTS_DIR,
    ROOT,
    Options,
    Stack,
    Target,
    log,
    measure,
    place_target,
    prepare_database,
    server_groups,
    settle_database,
    start_echo_server,
    start_order_service,
)
from benchmarks.stats import Measurement
from brokerage.proto import orders_pb2, orders_pb2_grpc
from devtools.stack import spawn, stop_processes
from devtools.token import DevIdentity

FLOODER = "1"
UNBOUNDED = 100_000  # the second service's limit: above any flood


@dataclass
class Arm:
    name: str  # what is measured: "quiet", "flooded" (the limit in force), "flooded, no limit"
    target: Target
    flood: bool


def flood(address: str, streams: int, identity_dir: Path, hold: float) -> dict[str, int]:
    """Opens the streams as customer 1, holds them for `hold` seconds, and counts how each ended or stood."""

    async def run() -> dict[str, int]:
        token = DevIdentity(identity_dir).customer_token(FLOODER)
        metadata = (("authorization", f"Bearer {token}"),)
        outcomes: Counter[str] = Counter()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            calls = [
                stub.WatchOrders(orders_pb2.WatchOrdersRequest(), metadata=metadata, timeout=hold + 30)
                for _ in range(streams)
            ]

            async def outcome(call: Any) -> str:
                try:
                    await asyncio.wait_for(call.initial_metadata(), timeout=10)
                    await asyncio.sleep(0.5)
                    return "open" if not call.done() else (await call.code()).name
                except grpc.aio.AioRpcError as error:
                    return str(error.code().name)
                except TimeoutError:
                    return "no answer"

            outcomes.update(await asyncio.gather(*(outcome(c) for c in calls)))
            print(json.dumps({"ready": dict(outcomes)}), flush=True)
            await asyncio.sleep(hold)
            for call in calls:
                call.cancel()
        return dict(outcomes)

    return asyncio.run(run())


def start_flooder(address: str, streams: int, identity_dir: Path, hold: float) -> tuple[subprocess.Popen[bytes], dict]:
    flags = ["--flood", address, "--streams", str(streams), "--identity-dir", str(identity_dir), "--hold", str(hold)]
    child = spawn(
        [sys.executable, "-m", "benchmarks.watch_flood", *flags],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        raise RuntimeError("the flooder exited before opening its streams")
    return child, json.loads(line)["ready"]


def run_arms(arms: Sequence[Arm], args: argparse.Namespace, options: Options, identity_dir: Path) -> dict:
    results: dict[str, list[Measurement]] = {arm.name: [] for arm in arms}
    floods: dict[str, list[dict[str, int]]] = {arm.name: [] for arm in arms if arm.flood}
    hold = options.warmup + options.duration + 20
    for rep in range(1, args.reps + 1):
        for arm in arms:
            flooder = None
            if arm.flood:
                flooder, opened = start_flooder(arm.target.address, args.streams, identity_dir, hold)
                floods[arm.name].append(opened)
                log(f"{arm.name}: streams {opened}")
            try:
                results[arm.name].append(
                    measure(arm.target, args.level, options, rep, warmup=options.warmup, duration=options.duration)
                )
            finally:
                if flooder is not None:
                    stop_processes([flooder], timeout=5)
    return {"measurements": results, "floods": floods}


def summary(measured: dict[str, list[Measurement]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "orders_per_second": statistics.median(m.per_second for m in runs),
            "p50_ms": statistics.median(m.p50_ms for m in runs),
            "p99_ms": statistics.median(m.p99_ms for m in runs),
            "failed": sum(m.failed_all for m in runs),
        }
        for name, runs in measured.items()
    }


def write_results(args: argparse.Namespace, run: dict, echo: list[Measurement], started: float) -> list[Path]:
    medians = summary(run["measurements"])
    quiet = medians["quiet"]
    echo_per_second = statistics.median(m.per_second for m in echo)
    document = {
        "command": args.command,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "streams": args.streams,
        "level": args.level,
        "reps": args.reps,
        "medians": medians,
        "p99_ratio_to_quiet": {name: m["p99_ms"] / quiet["p99_ms"] for name, m in medians.items()},
        "throughput_ratio_to_quiet": {
            name: m["orders_per_second"] / quiet["orders_per_second"] for name, m in medians.items()
        },
        "floods": run["floods"],
        "echo_calls_per_second": echo_per_second,
        "per_run": {name: [m.per_second for m in runs] for name, runs in run["measurements"].items()},
        "per_run_p99_ms": {name: [m.p99_ms for m in runs] for name, runs in run["measurements"].items()},
    }
    lines = [
        f"# WatchOrders flood ({document['started']})",
        "",
        f"- **Command:** `{args.command}`; took {(time.time() - started) / 60:.1f} min.",
        f"- **Load:** PlaceOrder from random customers, {args.level} calls in flight, {args.duration:g} s measured "
        f"after {args.warmup:g} s of warm-up, {args.reps} repetitions alternating the arms (medians shown). "
        f"Flooded: a separate process holds {args.streams} WatchOrders streams of customer {FLOODER} open on the "
        "same OrderService during the window.",
        f"- **Calibration:** the bare grpc.aio echo server, {echo_per_second:,.0f} calls/s in this run.",
        "",
        "| arm | orders/s | p50 ms | p99 ms | p99 ÷ quiet | orders/s ÷ quiet | streams of the flood |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, m in medians.items():
        streams = ", ".join(f"{k} {v}" for k, v in (run["floods"].get(name) or [{}])[0].items()) or "none"
        lines.append(
            f"| {name} | {m['orders_per_second']:,.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
            f"{document['p99_ratio_to_quiet'][name]:.2f} | {document['throughput_ratio_to_quiet'][name]:.2f} | "
            f"{streams} |"
        )
    lines += ["", "Per run (orders/s; p99 ms):", ""]
    for name in medians:
        runs = zip(document["per_run"][name], document["per_run_p99_ms"][name], strict=True)
        lines.append(f"- {name}: " + "; ".join(f"{rate:,.0f}/s, {p99:.1f} ms" for rate, p99 in runs))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    md, js = args.results_dir / "watch_flood.md", args.results_dir / "watch_flood.json"
    md.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps(document, indent=2) + "\n")
    return [md, js]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--level", type=int, default=16, help="PlaceOrder calls in flight")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--flood", metavar="ADDRESS", help=argparse.SUPPRESS)  # the flooder process
    parser.add_argument("--identity-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hold", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.command = " ".join(["python -m benchmarks.watch_flood", *map(shlex.quote, sys.argv[1:])])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.flood:
        flood(args.flood, args.streams, args.identity_dir, args.hold)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    options = Options(
        customers=args.customers,
        levels=(args.level,),
        warmup=args.warmup,
        duration=args.duration,
        reps=args.reps,
        clients=1,
        deadline=5.0,
        info_level=0,
        db_warmup=0,
        seed=None,
        results_dir=args.results_dir,
        command=args.command,
    )
    stack = Stack(prefix="bench-watch-flood-")
    try:
        cluster, nats = stack.postgres(), stack.nats()
        database_url, _ = prepare_database(cluster, args.customers)
        settle_database(database_url)
        identity_dir = stack.identity.directory
        limited = start_order_service(stack, database_url, nats.url, log_level="WARNING")
        os.environ["BENCH_BROKER_WATCHES_PER_CUSTOMER"] = str(UNBOUNDED)
        try:
            unbounded = start_order_service(stack, database_url, nats.url, log_level="ERROR")
        finally:
            del os.environ["BENCH_BROKER_WATCHES_PER_CUSTOMER"]
        bounded_target = place_target(limited, cluster, nats, identity_dir)
        unbounded_target = place_target(unbounded, cluster, nats, identity_dir)
        log("warm-up: 10 s of PlaceOrder, unmeasured")
        measure(bounded_target, args.level, options, 0, warmup=0, duration=10)
        arms = [
            Arm("quiet", bounded_target, flood=False),
            Arm("flooded", bounded_target, flood=True),
            Arm("flooded, no limit", unbounded_target, flood=True),
        ]
        run = run_arms(arms, args, options, identity_dir)
        echo_server = start_echo_server(stack)
        echo_target = Target("echo", echo_server.address, server_groups(echo_server.process))
        echo = [measure(echo_target, args.level, options, 1, warmup=options.warmup, duration=options.duration)]
    finally:
        stack.close()
    paths = write_results(args, run, echo, started)
    log(f"results: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
