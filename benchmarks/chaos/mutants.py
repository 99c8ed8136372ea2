"""`python -m benchmarks.chaos.mutants [--seed S] [--orders N] [PATCH ...]`: proof that the chaos suite catches real
bugs. Each patch in benchmarks/chaos/mutants/ breaks one rule of the money path; it is applied to a scratch copy of
the committed tree, one seed runs there, and the seed must fail. Writes benchmarks/results/chaos_mutants.md with
the invariants that caught each mutant, after a baseline seed on the unpatched tree that must pass; exits 1 if the
baseline failed or any mutant went uncaught by an invariant.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATCHES = Path(__file__).resolve().parent / "mutants"
RESULTS = ROOT / "benchmarks" / "results" / "chaos_mutants.md"
# What each mutant breaks.
WHAT = {
    "cancel-open-order-locally": "a cancel of an order at the venue is made here at once, without the venue's word",
    "claims-newest-first": "a worker's claim sends a customer's waiting orders newest first",
    "fill-at-protection-price": "settlement books a fill's cash at the order's protection price, not the fill's",
}


def run_seed(seed: int, orders: int, patch: Path | None) -> tuple[dict[str, int], str]:
    """One seed in a scratch copy of the committed tree, the patch applied if given: the invariants it found broken
    (name: violations), and its error or stuck note. Its timeline and a failed seed's logs are kept in
    .local/mutants/<patch>/."""
    name = patch.stem if patch else "unmutated"
    scratch = Path(tempfile.mkdtemp(prefix=f"mutant-{name}-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
        if patch:
            subprocess.run(["git", "apply", str(patch)], cwd=scratch, check=True)
        env = {**os.environ, "PYTHONPATH": str(scratch)}  # the scratch copy's modules, not the installed tree's
        command = [sys.executable, "-m", "benchmarks.chaos", "--seeds", "1", "--first-seed", str(seed),
                   "--orders", str(orders), "--results", "results", "--timelines", "timelines"]  # fmt: skip
        subprocess.run(command, cwd=scratch, env=env, check=False)
        (result,) = json.loads((scratch / "results" / "chaos.json").read_text())["seeds"]
        kept = ROOT / ".local" / "mutants" / name
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(scratch / "timelines", kept)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    broken = {invariant: found["count"] for invariant, found in result["invariants"].items() if found["count"]}
    return broken, result["error"] or ("stuck" if result["stuck"] else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos.mutants", description=__doc__)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--orders", type=int, default=600)
    parser.add_argument("patches", nargs="*", type=Path, default=sorted(PATCHES.glob("*.patch")))
    args = parser.parse_args(argv)
    lines = [
        "# Chaos mutants: broken builds the suite must fail",
        "",
        f"Each patch applied to a scratch copy of the committed tree; seed {args.seed}, {args.orders} calls "
        f"(`python -m benchmarks.chaos.mutants --seed {args.seed} --orders {args.orders}`).",
        "",
        "| mutant | what it breaks | caught | by |",
        "|---|---|---|---|",
    ]
    broken, note = run_seed(args.seed, args.orders, None)
    lines.append(f"| (none: the committed tree) | | {'FAILED' if broken or note else 'passes'} | {_by(broken, note)} |")
    print(lines[-1], flush=True)
    uncaught = 1 if broken or note else 0  # a baseline that fails proves nothing about the mutants
    for patch in args.patches:
        broken, note = run_seed(args.seed, args.orders, patch)
        caught = bool(broken)  # by an invariant: a seed merely stuck or broken proves nothing
        uncaught += not caught
        lines.append(
            f"| {patch.stem} | {WHAT.get(patch.stem, '')} | {'yes' if caught else 'NO'} | {_by(broken, note)} |"
        )
        print(lines[-1], flush=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    return 1 if uncaught else 0


def _by(broken: dict[str, int], note: str) -> str:
    return "; ".join(f"{name} ({count})" for name, count in broken.items()) + (f" {note}" if note else "")


if __name__ == "__main__":
    sys.exit(main())
