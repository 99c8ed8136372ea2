"""What the mesh benchmarks (execution, settlement) share around a phase of load: the load generator process of an
open or a closed loop, the CPU and backlog watched through the measured window, an experiment's PostgreSQL settings,
and the NAME=VALUE arguments that carry them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psycopg
from psycopg import sql

from benchmarks.cpu import CpuSource, sample, used_between
from benchmarks.place_order import DATABASE, ROOT, Stack, collect_loadgens, sleep_until, start_echo_server
from benchmarks.stats import measurement
from benchmarks.submissions import PLACED_ONLY, watch_backlog
from devtools.stack import spawn, stop_processes

OPEN_LOOP_MAX_IN_FLIGHT = 1000  # beyond this many unanswered calls the open loop skips (and counts) a due call


def start_loadgen(
    target: str,
    window: tuple[float, float],
    *,
    rate: float | None,
    in_flight: int,
    deadline: float,
    customers: int,
    seed: int | None,
    identity_dir: Path,
    max_quantity: int = 1,
) -> subprocess.Popen[bytes]:
    """The load generator of a phase (benchmarks.loadgen): an open loop at `rate` orders/s (at most
    OPEN_LOOP_MAX_IN_FLIGHT unanswered), or with rate None `in_flight` PlaceOrder calls back to back; its load stops
    when the window (time.monotonic()) closes. Each order buys 1 to max_quantity shares, signed with the keys in
    identity_dir."""
    if rate is not None:
        load = ["--rate", str(rate), "--concurrency", str(OPEN_LOOP_MAX_IN_FLIGHT)]
    else:
        load = ["--concurrency", str(in_flight)]
    args = [
        *("--kind", "place", "--target", target, *load),
        *("--measure-from", repr(window[0]), "--measure-until", repr(window[1])),
        *("--deadline", str(deadline), "--customers", str(customers), "--max-quantity", str(max_quantity)),
        *(("--seed", str(seed)) if seed is not None else ()),
        *("--identity-dir", str(identity_dir)),
    ]
    return spawn(
        [sys.executable, "-m", "benchmarks.loadgen", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def observe_window(
    groups: Mapping[str, CpuSource],
    database_url: str,
    opens: float,
    closes: float,
    statuses: Sequence[str] = PLACED_ONLY,
) -> tuple[dict[str, float], list[int]]:
    """CPU of each group between the window's edges (time.monotonic()), and the backlog (orders in `statuses`)
    sampled through it."""
    sleep_until(opens)
    before = sample(groups)
    backlog_seen = watch_backlog(database_url, closes, statuses=statuses)
    after = sample(groups)
    return used_between(before, after), backlog_seen


def set_database_settings(database_url: str, settings: Mapping[str, str]) -> None:
    """ALTER DATABASE ... SET for each --pg-setting: every connection opened afterwards (the services') has them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(name), sql.Literal(value)
                )
            )


def name_value(text: str) -> tuple[str, str]:
    """An argparse type: NAME=VALUE."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError("expected NAME=VALUE, e.g. jit=off")
    return name.strip(), value.strip()


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C, so the benchmark's finally blocks stop everything it started."""
    raise KeyboardInterrupt(f"signal {signum}")


CALIBRATION_IN_FLIGHT = 32


@dataclass(frozen=True)
class Calibration:
    """How fast this machine is right now, in a unit every benchmark here shares: bare grpc.aio echo calls per
    second at CALIBRATION_IN_FLIGHT in flight, beside what `make bench` measured the same way in its recorded run.
    The machine is shared and its speed varies from day to day: this is what makes two runs' figures comparable."""

    echo_per_second: float
    recorded_per_second: float | None  # in benchmarks/results/place_order.json, if it has that level

    @property
    def speed(self) -> float | None:
        """This machine's speed now relative to the recorded PlaceOrder run's (1.0: as fast)."""
        return self.echo_per_second / self.recorded_per_second if self.recorded_per_second else None

    def describe(self) -> str:
        now = f"bare grpc.aio echo, {CALIBRATION_IN_FLIGHT} calls in flight: {self.echo_per_second:,.0f} calls/s"
        if self.speed is None:
            return f"{now} just before this run"
        return (
            f"{now} just before this run, against {self.recorded_per_second:,.0f} in the run recorded in "
            f"`place_order.md`: this machine ran at {self.speed:.2f} times that run's speed"
        )

    def as_json(self) -> dict[str, float | None]:
        return {"echo_per_second": self.echo_per_second, "recorded_per_second": self.recorded_per_second}


def calibrate(stack: Stack, warmup: float = 3.0, duration: float = 10.0) -> Calibration:
    """Measures the echo rate on this machine now, with nothing else of the benchmark running."""
    echo = start_echo_server(stack)
    try:
        opens = time.monotonic() + warmup
        loadgen = spawn(
            [
                *(sys.executable, "-m", "benchmarks.loadgen", "--kind", "echo", "--target", echo.address),
                *("--concurrency", str(CALIBRATION_IN_FLIGHT)),
                *("--measure-from", repr(opens), "--measure-until", repr(opens + duration)),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        (output,) = collect_loadgens([loadgen], timeout=warmup + duration + 60)
    finally:
        stop_processes([echo.process], timeout=5)
    echoed = measurement("echo", CALIBRATION_IN_FLIGHT, 1, duration, [output], {})
    return Calibration(echoed.per_second, _recorded_echo_rate())


def _recorded_echo_rate() -> float | None:
    try:
        recorded = json.loads((ROOT / "benchmarks" / "results" / "place_order.json").read_text())
    except (OSError, ValueError):
        return None
    rates = [
        m["per_second"]
        for m in recorded.get("measurements", [])
        if m.get("kind") == "echo" and m.get("concurrency") == CALIBRATION_IN_FLIGHT
    ]
    return statistics.median(rates) if rates else None
