"""One seed, start to end: the world started from the template, the load sent while the faults are injected (the
isolated phase, then the mixed one), the system left until quiet, the invariants checked, the breaks resolved as
an operator would by each kind's brokerctl rule, the books checked again and reconciled. Everything the run did
and saw goes to its JSONL timeline."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.chaos import checks
from benchmarks.chaos.cluster import LONGEST_SWEEP_WINDOW, World
from benchmarks.chaos.faults import Injected, inject
from benchmarks.chaos.load import Load
from benchmarks.chaos.plan import Fault, Lane, Scenario, scenario
from benchmarks.chaos.recovery import Recovery, recovery
from devtools.mesh import read_drop_copy
from devtools.token import DevIdentity

QUIET_GAP = 6.0  # after an isolated fault heals, before the next: its cost is measured over this window too
FIRST_FAULT_AT = 2.0
QUIET_FOR = 3 * LONGEST_SWEEP_WINDOW  # nothing changing this long: quiescent
STUCK_AFTER = 300.0  # not quiet by then: the seed fails as stuck
SAMPLE_EVERY = 0.25
REPLAYED = 50  # PlaceOrders sent again at the end, each to return its order
BROKERCTL = str(Path(sys.prefix) / "bin" / "brokerctl")
RESOLUTION_PASSES = 3


class Timeline:
    """The run's JSONL: one object per line, `t` in seconds since the run began."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("w")
        self._start = time.monotonic()

    def at(self, moment: float) -> float:
        return round(moment - self._start, 3)

    def write(self, event: str, **fields: Any) -> None:
        self._file.write(json.dumps({"t": self.at(time.monotonic()), "event": event, **fields}, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class SeedResult:
    seed: int
    orders: int
    passed: bool = False
    stuck: bool = False
    error: str = ""
    verdicts: list[checks.Verdict] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    breaks: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    venue: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    timeline: str = ""

    def failed(self) -> list[checks.Verdict]:
        return [v for v in self.verdicts if not v.holds]


async def run_seed(seed: int, orders: int, template: Path, work_dir: Path, identity: DevIdentity) -> SeedResult:
    plan = scenario(seed, orders)
    result = SeedResult(seed, orders, timeline=str(work_dir / f"seed-{seed}.jsonl"))
    timeline = Timeline(Path(result.timeline))
    world = World(work_dir / f"seed-{seed}", template, identity, plan.venue.env(seed))
    began = time.monotonic()
    timeline.write("scenario", steps=len(plan.steps), isolated=[asdict(f) for f in plan.isolated],
                   mixed=[asdict(f) for f in plan.mixed], venue=asdict(plan.venue))  # fmt: skip
    try:
        await world.start()
        timeline.write("started", services=sorted(world.plans))
        load = await _drive(world, plan, timeline, result)
        await _settle_and_check(world, load, plan.seed, timeline, result)
    except Exception as error:  # the seed fails, with what broke; the next seed goes on
        result.error = f"{type(error).__name__}: {error}"
        timeline.write("error", error=result.error)
    finally:
        world.stop()
        result.seconds = round(time.monotonic() - began, 1)
        result.passed = not result.error and not result.stuck and not result.failed()
        timeline.write("verdict", passed=result.passed, failed=[v.name for v in result.failed()])
        timeline.close()
    return result


async def _drive(world: World, plan: Scenario, timeline: Timeline, result: SeedResult) -> Load:
    """The load and the faults together; then the recovery of each isolated fault from what the load saw."""
    target = "ipv4:" + ",".join(world.order_targets)  # both replicas, round robin
    load = Load(target, world.identity, lambda event, fields: timeline.write(event, **fields))
    samples: list[tuple[float, int | None]] = []
    faulting = asyncio.create_task(_faults(world, plan, timeline))
    sampling = asyncio.create_task(_sample_settlement(world, samples, faulting))
    await load.run(plan.load(), len(plan.steps), keep_going=lambda: not faulting.done())
    isolated, injected = await faulting
    await sampling
    result.faults = [{**asdict(i), "injected_at": timeline.at(i.injected_at), "healed_at": timeline.at(i.healed_at)}
                     for i in injected]  # fmt: skip
    result.recoveries = [recovery(i, end, load.attempts, samples) for i, end in isolated]
    for r in result.recoveries:
        timeline.write("recovery", **asdict(r))
    answers = Counter(f"{a.action} {a.outcome}" for a in load.attempts)
    skipped = {"cancel skipped: not placed": load.cancels.get("skipped: not placed", 0)}
    result.answers = {"sent": load.sent, **answers, "place unanswered": len(load.unanswered), **skipped}
    return load


async def _faults(
    world: World, plan: Scenario, timeline: Timeline
) -> tuple[list[tuple[Injected, float]], list[Injected]]:
    """The isolated phase (one fault, healed, a quiet gap), then the mixed one (a lane per engine, overlapping).
    Returns each isolated fault with the end of its measuring window, and every fault injected."""

    def note(kind: str) -> Any:
        return lambda event, detail: timeline.write("fault", kind=kind, what=event, detail=detail)

    injected: list[Injected] = []
    isolated: list[tuple[Injected, float]] = []
    await asyncio.sleep(FIRST_FAULT_AT)
    for fault in plan.isolated:
        done = await inject(world, fault, note(fault.kind))
        await asyncio.sleep(QUIET_GAP)
        injected.append(done)
        isolated.append((done, time.monotonic()))
    mixed_start = time.monotonic()

    async def lane(faults: list[Fault]) -> None:
        for fault in faults:
            await asyncio.sleep(max(0.0, mixed_start + fault.at - time.monotonic()))
            injected.append(await inject(world, fault, note(fault.kind)))

    async with asyncio.TaskGroup() as lanes:  # one lane failing cancels the others
        for each in Lane:
            lanes.create_task(lane([f for f in plan.mixed if f.lane is each]))
    return isolated, injected


async def _sample_settlement(world: World, samples: list[tuple[float, int | None]], until: asyncio.Task[Any]) -> None:
    """The count of booked executions, every SAMPLE_EVERY seconds (None while the database does not answer)."""

    def count() -> int | None:
        try:
            with psycopg.connect(world.database_url, connect_timeout=1) as conn:
                row = conn.execute("SELECT count(*) FROM executions").fetchone()
            return int(row[0]) if row else None
        except psycopg.Error:
            return None

    while not until.done():
        samples.append((time.monotonic(), await asyncio.to_thread(count)))
        await asyncio.sleep(SAMPLE_EVERY)


async def _settle_and_check(world: World, load: Load, seed: int, timeline: Timeline, result: SeedResult) -> None:
    if not await _quiesce(world, timeline):
        result.stuck = True
        return
    entries = read_drop_copy(world.exchange.target)
    result.verdicts += checks.answered_orders(world.database_url, load.placed, load.order_ids)
    result.verdicts += checks.fills(world.database_url, entries)
    result.verdicts.append(checks.settled_or_named(world.database_url, "as the faults left it"))
    result.breaks = _breaks_by_kind(world)
    refused = checks.Verdict("every repair brokerctl was asked for succeeded")
    for failure in await _resolve_as_an_operator(world, timeline):
        refused.add(failure)
    result.verdicts.append(refused)
    if not await _quiesce(world, timeline):
        result.stuck = True
        return
    result.verdicts.append(checks.settled_or_named(world.database_url, "after the repairs"))
    entries = read_drop_copy(world.exchange.target)
    result.verdicts.append(checks.books_from_drop_copy(world.database_url, entries))
    result.verdicts.append(checks.fifo(world.database_url, entries))  # the redriven orders' arrivals too
    result.verdicts.append(await _feed(world))
    reconciled = await asyncio.to_thread(_reconcile, world)
    verdict = checks.Verdict("reconcile exits 0 once the breaks are resolved")
    if reconciled.returncode != 0:
        verdict.add(reconciled.stdout[-1500:] + reconciled.stderr[-500:])
    result.verdicts.append(verdict)
    rng = random.Random(seed)
    sample = rng.sample(sorted(load.placed), min(REPLAYED, len(load.placed)))
    replayed = checks.Verdict("a replayed PlaceOrder returns its order")
    for difference in await load.replay(sample):
        replayed.add(difference)
    result.verdicts.append(replayed)
    alive = checks.Verdict("no service exited but those killed (a failover makes them unready, not dead)")
    for name, process in world.processes.items():
        if process.poll() is not None:
            alive.add(f"{name} exited with {process.returncode}")
    result.verdicts.append(alive)
    world.venue_counts.add(world.exchange_metrics())
    result.venue = dict(world.venue_counts)
    for v in result.verdicts:
        timeline.write("invariant", name=v.name, holds=v.holds, count=v.count, violations=v.violations)


def _fingerprint(world: World) -> tuple[Any, ...] | None:
    try:
        with psycopg.connect(world.database_url, connect_timeout=2) as conn:
            row = conn.execute(
                """SELECT (SELECT count(*) FROM orders), (SELECT max(updated_at) FROM orders),
                          (SELECT count(*) FROM executions), (SELECT count(*) FROM breaks),
                          (SELECT count(resolved_at) FROM breaks), (SELECT count(*) FROM execution_feed)"""
            ).fetchone()
    except psycopg.Error:
        return None
    awaiting = world.exchange_metrics().get("exchange_reports_awaiting_delivery")
    return (*(row or ()), awaiting) if awaiting == 0 else None


async def _quiesce(world: World, timeline: Timeline) -> bool:
    """Until no order or break has changed, and the venue has nothing left to deliver, for QUIET_FOR seconds;
    False if that never happens within STUCK_AFTER."""
    began = time.monotonic()
    last, since = None, time.monotonic()
    while time.monotonic() - began < STUCK_AFTER:
        now = await asyncio.to_thread(_fingerprint, world)
        if now is None or now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= QUIET_FOR:
            timeline.write("quiet", after=round(time.monotonic() - began, 1))
            return True
        await asyncio.sleep(1.0)
    timeline.write("stuck", state=str(last))
    return False


async def _feed(world: World) -> checks.Verdict:
    try:
        published = await world.executions_feed()
    except Exception as error:
        unread = checks.Verdict(checks.FEED)
        unread.add(f"the EXECUTIONS stream could not be read: {error!r}")
        return unread
    return await asyncio.to_thread(checks.feed, world.database_url, published)


def _breaks_by_kind(world: World) -> dict[str, int]:
    with psycopg.connect(world.database_url) as conn:
        return dict(conn.execute("SELECT kind, count(*) FROM breaks GROUP BY kind ORDER BY kind").fetchall())


async def _resolve_as_an_operator(world: World, timeline: Timeline) -> list[str]:
    """Each open break by its kind's rule: a parked order redriven once the venue's routing is mended (the
    simulator restarted on its journal without its failing customer); any other break accepted from the drop copy
    when the venue made its execution, else written off. Until none is open (a mended venue still garbles some).
    Returns the repairs brokerctl refused."""
    refused: list[str] = []
    for _ in range(RESOLUTION_PASSES):
        with psycopg.connect(world.database_url) as conn:
            open_breaks = conn.execute(
                "SELECT break_id, kind, exec_id, order_id FROM breaks WHERE resolved_at IS NULL ORDER BY break_id"
            ).fetchall()
        if not open_breaks:
            break
        made = {e.report.exec_id for e in read_drop_copy(world.exchange.target)}
        if (
            any(kind == "parked" for _, kind, _, _ in open_breaks)
            and "EXCHANGE_FAILING_CUSTOMERS" in world.exchange.env
        ):
            await _mend_the_venue(world, timeline)
        for break_id, kind, exec_id, order_id in open_breaks:
            if kind == "parked":
                args = ["orders", "redrive", order_id, "--note", "chaos: routing mended"]
            else:
                how = "--accept-venue" if exec_id in made else "--write-off"
                args = ["breaks", "resolve", str(break_id), how, "--note", "chaos: by the drop copy"]
            done = await asyncio.to_thread(_brokerctl, world, args)
            said = (done.stdout + done.stderr)[-300:]
            timeline.write("repair", break_id=break_id, kind=kind, args=args, exit=done.returncode, said=said)
            if done.returncode != 0:
                refused.append(f"brokerctl {' '.join(args)}: {said}")
        await _quiesce(world, timeline)
    return refused


async def _mend_the_venue(world: World, timeline: Timeline) -> None:
    world.venue_counts.add(world.exchange_metrics())
    process = world.processes[world.exchange.name]
    process.terminate()
    await asyncio.to_thread(process.wait, 30)
    env = {k: v for k, v in world.exchange.env.items() if k != "EXCHANGE_FAILING_CUSTOMERS"}
    ready = await world.launch(world.exchange.name, env)
    world.exchange = world.plans[world.exchange.name]
    timeline.write("venue mended", ready=ready)


def _brokerctl(world: World, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        **world.env(),
        "BROKER_OPERATIONS_TARGET": world.operations.target,
        "BROKER_TOKEN": world.identity.operator_token("chaos-operator"),
    }
    return subprocess.run([BROKERCTL, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def _reconcile(world: World) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "brokerage.reconcile", "--stuck-after-seconds", "60"]
    return subprocess.run(command, env=world.reconcile_env(), capture_output=True, text=True, timeout=300, check=False)
