"""A seed's scenario, without I/O: the load (buys, then sells of what was bought, and cancels) and the fault schedule,
both fixed by the seed; the interleaving is the machine's.

The faults come in two phases. In the isolated phase one fault at a time is injected, healed, and followed by a
quiet gap, so what it cost can be measured (PlaceOrder's unavailability, settlement's pause); across seeds every
kind comes up in turn. In the mixed phase faults overlap, one lane per engine (the services' processes, NATS,
PostgreSQL), and only the invariants are checked. Within a lane faults follow one another: PostgreSQL's lane starts
no fault before the last one's standby is synchronous again, and NATS's never takes down a third node.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from brokerage.listings import DEMO_LISTINGS


class Action(StrEnum):
    BUY = "buy"
    SELL = "sell"
    CANCEL = "cancel"


class FaultKind(StrEnum):
    KILL_ORDER_SERVICE = "kill-order-service"  # SIGKILL a replica; restarted as Kubernetes would
    KILL_WORKER = "kill-worker"
    KILL_CALLBACK = "kill-callback-service"
    KILL_SIMULATOR = "kill-simulator"
    PAUSE_WORKER = "pause-worker"  # SIGSTOP past its AckWait, then SIGCONT: a zombie replica
    KILL_NATS_NODE = "kill-nats-node"
    KILL_NATS_LEADER = "kill-nats-stream-leader"
    NATS_QUORUM_LOSS = "nats-quorum-loss"  # two of three servers down at once
    KILL_PG_PRIMARY = "kill-pg-primary"  # SIGKILL, the standby promoted, the old one rewound back as standby
    PAUSE_PG_PRIMARY = "pause-pg-primary"  # SIGSTOP, then as above (a paused primary is killed before promoting)
    KILL_PG_STANDBY = "kill-pg-standby"  # commits wait for it: never degraded to asynchronous
    STALL_PG_STANDBY = "stall-pg-standby"  # SIGSTOP, then SIGCONT


class Lane(StrEnum):
    PROCESSES = "processes"
    NATS = "nats"
    POSTGRES = "postgres"


LANES = {
    Lane.PROCESSES: (
        FaultKind.KILL_ORDER_SERVICE,
        FaultKind.KILL_WORKER,
        FaultKind.KILL_CALLBACK,
        FaultKind.KILL_SIMULATOR,
        FaultKind.PAUSE_WORKER,
    ),
    Lane.NATS: (FaultKind.KILL_NATS_NODE, FaultKind.KILL_NATS_LEADER, FaultKind.NATS_QUORUM_LOSS),
    Lane.POSTGRES: (
        FaultKind.KILL_PG_PRIMARY,
        FaultKind.PAUSE_PG_PRIMARY,
        FaultKind.KILL_PG_STANDBY,
        FaultKind.STALL_PG_STANDBY,
    ),
}
LANE = {kind: lane for lane, kinds in LANES.items() for kind in kinds}
# Seconds a fault lasts before it is healed (a process restarted, a node back, a pause ended), by kind.
DOWN = {
    FaultKind.KILL_ORDER_SERVICE: (0.5, 2.0),
    FaultKind.KILL_WORKER: (0.5, 2.0),
    FaultKind.KILL_CALLBACK: (0.5, 2.0),
    FaultKind.KILL_SIMULATOR: (0.5, 2.0),
    FaultKind.PAUSE_WORKER: (1.0, 3.0),  # beyond AckWait, added by the harness
    FaultKind.KILL_NATS_NODE: (2.0, 6.0),
    FaultKind.KILL_NATS_LEADER: (2.0, 6.0),
    FaultKind.NATS_QUORUM_LOSS: (3.0, 6.0),
    FaultKind.KILL_PG_PRIMARY: (1.0, 3.0),  # promoted at once; the old primary rejoins after this
    FaultKind.PAUSE_PG_PRIMARY: (1.0, 3.0),  # paused this long, then failed over
    FaultKind.KILL_PG_STANDBY: (1.0, 4.0),
    FaultKind.STALL_PG_STANDBY: (1.0, 3.0),
}
SYMBOLS = tuple(listing.symbol for listing in DEMO_LISTINGS)
CUSTOMERS = 300
RATE = 30.0  # orders a second at most, as the issue bounds the load
CANCEL_SHARE = 0.12
SELL_SHARE = 0.25
SELL_AFTER_SECONDS = 5.0  # a sell comes this long after a buy of the customer's, so the buy has likely filled
MIXED_MEAN_GAP_SECONDS = 2.5
ISOLATED_PER_SEED = 3


@dataclass(frozen=True)
class Step:
    """One call of the load, `at` seconds into the run."""

    at: float
    action: Action
    customer_id: str
    client_order_id: str  # a cancel's: the order it cancels
    symbol: str = ""
    quantity: int = 0


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    down: float  # seconds until healed
    pick: int  # which replica, node or worker: an index the harness takes modulo the candidates
    at: float = 0.0  # mixed phase: seconds after the phase starts; isolated faults go one after another

    @property
    def lane(self) -> Lane:
        return LANE[self.kind]


@dataclass(frozen=True)
class Venue:
    """The simulator's misbehaviour for the run."""

    chaos_rate: float
    malformed_rate: float
    replay_rate: float
    replay_delay_seconds: float
    failing_customer: str  # every SubmitOrder of its orders fails: parked, then mended and redriven

    def env(self, seed: int) -> dict[str, str]:
        return {
            "EXCHANGE_SEED": str(seed),
            "EXCHANGE_CHAOS_RATE": f"{self.chaos_rate:.3f}",
            "EXCHANGE_CHAOS_MAX_DELAY_MS": "400",
            "EXCHANGE_CHAOS_MALFORMED_RATE": f"{self.malformed_rate:.4f}",
            "EXCHANGE_CHAOS_REPLAY_RATE": f"{self.replay_rate:.3f}",
            "EXCHANGE_CHAOS_REPLAY_DELAY_MS": str(int(self.replay_delay_seconds * 1000)),
            "EXCHANGE_FAILING_CUSTOMERS": self.failing_customer,
        }


@dataclass(frozen=True)
class Scenario:
    seed: int
    steps: tuple[Step, ...]  # the seed's orders; load() goes on with the same mix while faults last
    isolated: tuple[Fault, ...]
    mixed: tuple[Fault, ...]
    venue: Venue

    @property
    def load_seconds(self) -> float:
        return self.steps[-1].at if self.steps else 0.0

    def load(self) -> Iterator[Step]:
        """The steps, then more of the same mix at the same rate, without end."""
        return _load(random.Random(f"chaos/{self.seed}/load"))


def scenario(seed: int, orders: int, *, mixed_faults: int | None = None) -> Scenario:
    """The seed's load of `orders` calls and its faults: ISOLATED_PER_SEED isolated ones, kinds taken in turn across
    seeds, and (by default) one mixed fault per MIXED_MEAN_GAP_SECONDS of half the load's length."""
    steps = tuple(itertools.islice(_load(random.Random(f"chaos/{seed}/load")), orders))
    rng = random.Random(f"chaos/{seed}/faults")
    kinds = list(FaultKind)
    isolated = tuple(_fault(rng, kinds[(seed * ISOLATED_PER_SEED + i) % len(kinds)]) for i in range(ISOLATED_PER_SEED))
    span = max(orders / RATE / 2, 10.0)
    count = mixed_faults if mixed_faults is not None else max(2, round(span / MIXED_MEAN_GAP_SECONDS))
    at = sorted(rng.uniform(0, span) for _ in range(count))
    mixed = tuple(_fault(rng, rng.choice(kinds), t) for t in at)
    venue = Venue(
        chaos_rate=rng.uniform(0.05, 0.3),
        malformed_rate=0.005,
        replay_rate=0.02,
        replay_delay_seconds=20.0,
        failing_customer=str(rng.randint(1, CUSTOMERS)),
    )
    return Scenario(seed, steps, isolated, mixed, venue)


def _fault(rng: random.Random, kind: FaultKind, at: float = 0.0) -> Fault:
    low, high = DOWN[kind]
    return Fault(kind, round(rng.uniform(low, high), 2), rng.randrange(1 << 16), round(at, 2))


def _load(rng: random.Random) -> Iterator[Step]:
    """Buys across the customers; a sell only of shares a customer bought SELL_AFTER_SECONDS or more before; a
    cancel of one of the last orders placed, a moment after it. RATE steps a second."""
    bought: list[tuple[float, str, str, int]] = []  # (at, customer, symbol, quantity) not yet sold
    placed: deque[tuple[str, str]] = deque(maxlen=20)  # (customer, client_order_id) of the last orders
    for n in itertools.count():
        at = round(n / RATE, 3)
        roll = rng.random()
        if roll < CANCEL_SHARE and placed:
            customer, client_order_id = placed[rng.randrange(len(placed))]
            yield Step(at, Action.CANCEL, customer, client_order_id)
            continue
        client_order_id = f"chaos-{n}"
        sellable = [i for i, b in enumerate(bought) if b[0] <= at - SELL_AFTER_SECONDS]
        if roll < CANCEL_SHARE + SELL_SHARE and sellable:
            _, customer, symbol, quantity = bought.pop(rng.choice(sellable))
            yield Step(at, Action.SELL, customer, client_order_id, symbol, rng.randint(1, quantity))
        else:
            customer, symbol, quantity = str(rng.randint(1, CUSTOMERS)), rng.choice(SYMBOLS), rng.randint(1, 10)
            yield Step(at, Action.BUY, customer, client_order_id, symbol, quantity)
            bought.append((at, customer, symbol, quantity))
        placed.append((customer, client_order_id))
