"""`python -m benchmarks.chaos [--seeds N] [--orders M] [--first-seed S]` (`make chaos`): seeded runs of the whole
mesh on clustered engines under mixed faults, the invariants checked after each, and the figures written to
benchmarks/results/chaos.md and chaos.json. Exits 1 if any seed failed, printing the command that replays it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from benchmarks.chaos.cluster import make_template
from benchmarks.chaos.plan import CUSTOMERS
from benchmarks.chaos.report import write_results
from benchmarks.chaos.run import SeedResult, run_seed
from devtools.token import DevIdentity

RESULTS = Path(__file__).resolve().parents[1] / "results"
TIMELINES = Path(".local/chaos")


def replay_command(seed: int, orders: int) -> str:
    return f"python -m benchmarks.chaos --seeds 1 --first-seed {seed} --orders {orders}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--orders", type=int, default=2000, help="calls of the load per seed")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where chaos.md and chaos.json go")
    parser.add_argument("--timelines", type=Path, default=TIMELINES, help="each seed's JSONL, and a failed one's logs")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so each seed's finally stops its engines and services.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    results = _run(args.first_seed, args.seeds, args.orders, args.timelines)
    write_results(results, args.results, replay_command)
    failed = [r for r in results if not r.passed]
    for result in failed:
        print(f"seed {result.seed} failed; replay: {replay_command(result.seed, result.orders)}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} seeds passed; {args.results / 'chaos.md'}")
    return 1 if failed else 0


def _run(first: int, count: int, orders: int, timelines: Path) -> list[SeedResult]:
    """Each seed in an event loop of its own, from one template."""
    timelines.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        template = make_template(work / "template", CUSTOMERS)
        identity = DevIdentity(work / "identity").ensure()
        results = []
        for seed in range(first, first + count):
            seed_dir = work / f"seed-{seed}"
            seed_dir.mkdir()
            result = asyncio.run(run_seed(seed, orders, template, seed_dir, identity))
            shutil.copy(result.timeline, timelines / f"seed-{seed}.jsonl")
            result.timeline = str(timelines / f"seed-{seed}.jsonl")
            if not result.passed:
                for log in (seed_dir / f"seed-{seed}").glob("*.log"):
                    shutil.copy(log, timelines / f"seed-{seed}-{log.name}")
            shutil.rmtree(seed_dir, ignore_errors=True)
            print(f"seed {seed}: {'passed' if result.passed else 'FAILED'} in {result.seconds:.0f} s", flush=True)
            results.append(result)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
