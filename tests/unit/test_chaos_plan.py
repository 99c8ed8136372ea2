"""The chaos harness's pure parts (benchmarks/chaos): a seed fixes the load and the faults; the load sells only what
its customer bought; across consecutive seeds every fault kind is measured in isolation; recovery figures come
from what the load and the sampler saw."""

from __future__ import annotations

import itertools
from collections import defaultdict

from benchmarks.chaos.faults import Injected
from benchmarks.chaos.load import Attempt
from benchmarks.chaos.plan import ISOLATED_PER_SEED, RATE, Action, FaultKind, Lane, scenario
from benchmarks.chaos.recovery import longest_pause, recovery


def test_a_seed_fixes_the_load_and_the_faults() -> None:
    assert scenario(7, 500) == scenario(7, 500)
    assert scenario(7, 500) != scenario(8, 500)


def test_the_load_stays_under_its_rate_and_sells_only_what_was_bought_before() -> None:
    plan = scenario(3, 2000)
    assert len(plan.steps) == 2000
    assert plan.load_seconds >= (2000 - 1) / RATE * 0.99  # 30 a second: under the 40
    bought: dict[tuple[str, str], int] = defaultdict(int)
    placed: set[tuple[str, str]] = set()
    for step in plan.steps:
        if step.action is Action.BUY:
            bought[(step.customer_id, step.symbol)] += step.quantity
        elif step.action is Action.SELL:
            assert 0 < step.quantity <= bought[(step.customer_id, step.symbol)]
            bought[(step.customer_id, step.symbol)] -= step.quantity
        else:
            assert (step.customer_id, step.client_order_id) in placed  # a cancel names an order placed before
        if step.action is not Action.CANCEL:
            placed.add((step.customer_id, step.client_order_id))
    actions = {step.action for step in plan.steps}
    assert actions == set(Action)


def test_the_load_goes_on_past_the_seeds_orders_with_the_same_mix() -> None:
    plan = scenario(5, 300)
    longer = list(itertools.islice(plan.load(), 600))
    assert tuple(longer[:300]) == plan.steps
    assert {step.action for step in longer[300:]} == set(Action)
    assert longer[599].at == round(599 / RATE, 3)


def test_consecutive_seeds_isolate_every_fault_kind() -> None:
    seeds = range(1, 1 + len(FaultKind) // ISOLATED_PER_SEED)
    isolated = {fault.kind for seed in seeds for fault in scenario(seed, 300).isolated}
    assert isolated == set(FaultKind)


def test_every_fault_kind_has_a_lane() -> None:
    assert {scenario(s, 2000).mixed[0].lane for s in range(40)} <= set(Lane)
    assert all(fault.down > 0 for s in range(20) for fault in scenario(s, 2000).mixed)


def test_unavailability_lasts_until_the_last_failed_attempt_and_counts_the_failed_share() -> None:
    fault = Injected(FaultKind.KILL_PG_PRIMARY, "pg_a", injected_at=100.0, healed_at=104.0)
    attempts = [
        Attempt(99.0, 99.1, Action.BUY, "UNAVAILABLE"),  # before the fault: not its
        Attempt(100.5, 101.0, Action.BUY, "UNAVAILABLE"),
        Attempt(101.0, 101.2, Action.SELL, "OK"),
        Attempt(101.5, 102.5, Action.BUY, "DEADLINE_EXCEEDED"),
        Attempt(103.0, 103.1, Action.BUY, "OK"),
        Attempt(103.2, 103.3, Action.CANCEL, "UNAVAILABLE"),  # cancels are not PlaceOrder
    ]
    seen = recovery(fault, 110.0, attempts, [(t / 4, 10) for t in range(400, 440)])
    assert (seen.place_unavailable, seen.place_error_rate, seen.place_attempts) == (2.5, round(2 / 3, 3), 4)
    assert seen.lasted == 4.0


def test_a_fault_nothing_failed_under_costs_nothing() -> None:
    fault = Injected(FaultKind.KILL_WORKER, "w", injected_at=10.0, healed_at=11.0)
    seen = recovery(fault, 20.0, [Attempt(10.5, 10.6, Action.BUY, "OK")], [(10.0, 1), (10.25, 2)])
    assert (seen.place_unavailable, seen.place_error_rate) == (0.0, 0.0)


def test_settlement_pauses_between_growths_and_while_the_database_does_not_answer() -> None:
    samples = [(0.0, 5), (1.0, 6), (2.0, None), (3.0, None), (4.0, 6), (5.0, 9), (6.0, 10)]
    assert longest_pause(samples, 0.5, 6.0) == 4.0  # grew at 1.0, then not until 5.0
    assert longest_pause([(0.0, 1), (1.0, 2), (2.0, 3)], 0.0, 2.0) == 1.0
