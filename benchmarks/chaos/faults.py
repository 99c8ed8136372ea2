"""Each fault kind done to a World, and healed, by the rules that lose no acknowledged commit (issue 18): a primary,
paused or not, is SIGKILLed before its standby is promoted, and comes back only as a standby after pg_rewind; a
lost standby is waited for (commits wait with it), never replaced by asynchronous replication.

SIGKILL leaves the page cache to the kernel: what a killed process wrote is still read back, so nothing here claims
durability through a power loss.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from benchmarks.chaos.cluster import ACK_WAIT_SECONDS, World
from benchmarks.chaos.plan import Fault, FaultKind


@dataclass
class Injected:
    """What a fault did, on the harness's clock (time.monotonic)."""

    kind: FaultKind
    target: str
    injected_at: float
    healed_at: float = 0.0
    detail: dict[str, object] = field(default_factory=dict)


Doer = Callable[[World, Fault, Callable[[str, str], None]], Awaitable[Injected]]


async def inject(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    """Does the fault and heals it; returns once healed. note(event, detail) goes to the timeline."""
    return await DOERS[fault.kind](world, fault, note)


def _pick(candidates: list[str], fault: Fault) -> str:
    return candidates[fault.pick % len(candidates)]


async def _kill_service(world: World, fault: Fault, note: Callable[[str, str], None], names: list[str]) -> Injected:
    name = _pick(names, fault)
    done = Injected(fault.kind, name, time.monotonic())
    world.signal(name, signal.SIGKILL)
    note("killed", name)
    await asyncio.sleep(fault.down)  # Kubernetes restarts it after a moment
    ready = await world.launch(name)
    done.healed_at = time.monotonic()
    done.detail["ready"] = ready
    note("restarted" if ready else "restarted, not ready", name)
    return done


async def kill_order_service(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    return await _kill_service(world, fault, note, [s.name for s in world.order_services])


async def kill_worker(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    return await _kill_service(world, fault, note, [s.name for s in world.workers])


async def kill_callback(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    return await _kill_service(world, fault, note, [world.callback.name])


async def kill_simulator(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    world.venue_counts.add(world.exchange_metrics())  # its counters die with it
    return await _kill_service(world, fault, note, [world.exchange.name])


async def pause_worker(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    name = _pick([s.name for s in world.workers_with_a_partner], fault)  # a zombie: another replica takes over
    done = Injected(fault.kind, name, time.monotonic())
    world.signal(name, signal.SIGSTOP)
    note("paused", name)
    await asyncio.sleep(ACK_WAIT_SECONDS + fault.down)  # past AckWait: its shards' messages go to another replica
    world.signal(name, signal.SIGCONT)
    done.healed_at = time.monotonic()
    note("resumed", name)
    return done


async def _nats_down(world: World, fault: Fault, note: Callable[[str, str], None], nodes: list[str]) -> Injected:
    done = Injected(fault.kind, ",".join(nodes), time.monotonic())
    for node in nodes:
        world.messaging.nodes[node].kill()
    note("killed", ",".join(nodes))
    await asyncio.sleep(fault.down)
    for node in nodes:
        world.messaging.nodes[node].start()  # in the main thread: see cluster.py
    await asyncio.to_thread(world.messaging.wait_ready)  # the lane's next fault finds all three caught up
    done.healed_at = time.monotonic()
    note("restarted", ",".join(nodes))
    return done


async def kill_nats_node(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    return await _nats_down(world, fault, note, [_pick(sorted(world.messaging.nodes), fault)])


async def kill_nats_leader(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    leader = await world.stream_leader()
    nodes = sorted(world.messaging.nodes)
    return await _nats_down(world, fault, note, [leader if leader in nodes else _pick(nodes, fault)])


async def nats_quorum_loss(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    nodes = sorted(world.messaging.nodes)
    survivor = _pick(nodes, fault)
    return await _nats_down(world, fault, note, [n for n in nodes if n != survivor])


async def _fail_over(world: World, done: Injected, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    """SIGKILL the primary and promote the standby (which was synchronous: the lane starts no PostgreSQL fault
    before it is); the old primary rewound back as the standby after fault.down. The window without a synchronous
    standby is reported."""
    old = world.database.primary
    new = await asyncio.to_thread(world.database.fail_over)
    promoted = time.monotonic()
    note("promoted", f"{new} (the old primary {old} killed first)")
    await asyncio.sleep(fault.down)
    await asyncio.to_thread(world.database.rejoin)
    done.healed_at = time.monotonic()
    done.detail["without_synchronous_standby_seconds"] = round(done.healed_at - promoted, 3)
    note("rejoined", f"{old} rewound, synchronous standby of {new}")
    return done


async def kill_pg_primary(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    done = Injected(fault.kind, world.database.primary, time.monotonic())
    return await _fail_over(world, done, fault, note)


async def pause_pg_primary(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    primary = world.database.primary
    done = Injected(fault.kind, primary, time.monotonic())
    world.database.pause(primary)
    note("paused", primary)
    await asyncio.sleep(fault.down)  # as long as the operator's failure detection takes
    return await _fail_over(world, done, fault, note)


async def kill_pg_standby(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    standby = world.database.standby
    done = Injected(fault.kind, standby, time.monotonic())
    await asyncio.to_thread(world.database.nodes[standby].kill)
    note("killed", f"{standby}: commits wait for it")
    await asyncio.sleep(fault.down)
    await asyncio.to_thread(world.database.restart_standby)
    done.healed_at = time.monotonic()
    note("restarted", f"{standby}, synchronous again")
    return done


async def stall_pg_standby(world: World, fault: Fault, note: Callable[[str, str], None]) -> Injected:
    standby = world.database.standby
    done = Injected(fault.kind, standby, time.monotonic())
    world.database.pause(standby)
    note("paused", standby)
    await asyncio.sleep(fault.down)
    world.database.resume(standby)
    await asyncio.to_thread(world.database.wait_synchronous)  # the lane's next fault finds it synchronous
    done.healed_at = time.monotonic()
    note("resumed", standby)
    return done


DOERS: dict[FaultKind, Doer] = {
    FaultKind.KILL_ORDER_SERVICE: kill_order_service,
    FaultKind.KILL_WORKER: kill_worker,
    FaultKind.KILL_CALLBACK: kill_callback,
    FaultKind.KILL_SIMULATOR: kill_simulator,
    FaultKind.PAUSE_WORKER: pause_worker,
    FaultKind.KILL_NATS_NODE: kill_nats_node,
    FaultKind.KILL_NATS_LEADER: kill_nats_leader,
    FaultKind.NATS_QUORUM_LOSS: nats_quorum_loss,
    FaultKind.KILL_PG_PRIMARY: kill_pg_primary,
    FaultKind.PAUSE_PG_PRIMARY: pause_pg_primary,
    FaultKind.KILL_PG_STANDBY: kill_pg_standby,
    FaultKind.STALL_PG_STANDBY: stall_pg_standby,
}
