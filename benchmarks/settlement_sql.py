"""Settlement's SQL alone, per execution report, against another revision's: `make bench-settlement-sql`.

`python -m benchmarks.settlement_sql [--against REV] [--orders N] [--reps R]`

The whole mesh's CPU per order is a poor measure of what the database does for each report: on two cores the
mesh fills the machine at any rate worth measuring, so every process's share moves with the others'. This measures
the statements alone. For this tree and, with --against, a git worktree of that revision (default d334cf2, the
release before the double-entry books), alternately R times: a fresh database on a private PostgreSQL, migrated and
seeded by that tree's own code (brokerage.storage.migrate, .seed), N buys placed and recorded SUBMITTED through the
functions both releases have (place_orders, record_submitted), then a NEW and a FILL for each booked through
apply_execution_reports in batches of 64, one transaction each, on one connection: the wall time and the backend's
CPU (/proc) per report. Results go to benchmarks/results/settlement_sql.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg

from benchmarks.place_order import ROOT, log
from benchmarks.report import commit, machine
from devtools.stack import PostgresCluster, free_port

NAME = "settlement_sql"
BATCH = 64  # reports per transaction, as CallbackService's BROKER_SETTLEMENT_BATCH_MAX
CUSTOMERS = 2_000
QUANTITY, PROTECTION, FILL_PRICE = 2, Decimal("100.00"), Decimal("99.50")
# Migrates and seeds with the tree's own code: argv[1] the tree, argv[2] the database URL, argv[3] the customers.
PREPARE = (
    "import sys; sys.path.insert(0, sys.argv[1]);"
    "from brokerage.storage.migrate import apply; from brokerage.storage.seed import seed;"
    "apply(sys.argv[2]); seed(sys.argv[2], int(sys.argv[3]))"
)


@dataclass(frozen=True)
class Measured:
    tree: str  # "this tree" or the revision
    reports: int
    wall_us: float  # per report
    backend_cpu_us: float  # per report


def prepare(cluster: PostgresCluster, tree: Path) -> str:
    name = f"settle_{uuid.uuid4().hex[:8]}"
    cluster.create_database(name)
    url = cluster.url(name)
    subprocess.run([sys.executable, "-c", PREPARE, str(tree), url, str(CUSTOMERS)], cwd=tree, check=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO shard_config (shard_count) VALUES (16) ON CONFLICT DO NOTHING")
    return url


def place_and_submit(conn: psycopg.Connection, order_ids: list[str]) -> None:
    """N buys of QUANTITY at PROTECTION, through the placement function every release since 0002 has."""
    for start in range(0, len(order_ids), 500):
        ids = order_ids[start : start + 500]
        n = len(ids)
        conn.execute(
            """SELECT * FROM place_orders(%s, %s, %s, %s, %s, %s::bigint[], %s::numeric[], %s::numeric[], %s::text[],
                                          %s, %s::bytea[])""",
            (
                ids,
                [str(1 + i % CUSTOMERS) for i in range(start, start + n)],
                [f"k-{o}" for o in ids],
                ["AAPL"] * n,
                ["BUY"] * n,
                [QUANTITY] * n,
                [PROTECTION] * n,
                [QUANTITY * PROTECTION] * n,
                [None] * n,
                ["orders.0"] * n,
                [b""] * n,
            ),
        )
        for order_id in ids:
            conn.execute("SELECT record_submitted(%s, %s)", (order_id, f"V-{order_id}"))


def book(conn: psycopg.Connection, order_ids: list[str]) -> tuple[float, float]:
    """Books a NEW and a FILL for each order; the wall and backend CPU seconds it took."""
    now = datetime.now(UTC)
    reports = [
        report
        for o in order_ids
        for report in ((f"{o}-N", o, "NEW", 0, None, 0), (f"{o}-F", o, "FILL", 2, FILL_PRICE, 2))
    ]
    (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone() or (0,)
    cpu_before, started = backend_cpu(pid), time.perf_counter()
    for start in range(0, len(reports), BATCH):
        batch = reports[start : start + BATCH]
        n = len(batch)
        with conn.transaction():
            conn.execute(
                """SELECT * FROM apply_execution_reports(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],
                       %s::numeric[], %s::bigint[], %s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::bigint[],
                       true)""",
                (
                    [r[0] for r in batch],
                    [r[1] for r in batch],
                    [f"V-{r[1]}" for r in batch],
                    [r[2] for r in batch],
                    [r[3] for r in batch],
                    [r[4] for r in batch],
                    [r[5] for r in batch],
                    [""] * n,
                    [now] * n,
                    ["AAPL"] * n,
                    ["BUY"] * n,
                    [QUANTITY] * n,
                ),
            ).fetchall()
    return time.perf_counter() - started, backend_cpu(pid) - cpu_before


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(cluster: PostgresCluster, tree: Path, label: str, orders: int) -> Measured:
    url = prepare(cluster, tree)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            order_ids = [f"O{i:08d}" for i in range(orders)]
            place_and_submit(conn, order_ids)
            wall, cpu = book(conn, order_ids)
            (filled,) = conn.execute("SELECT count(*) FROM orders WHERE status = 'FILLED'").fetchone() or (0,)
        if filled != orders:
            raise RuntimeError(f"{label}: {filled} of {orders} orders FILLED")
    finally:
        cluster.drop_database(url.rsplit("/", 1)[1])
    reports = 2 * orders
    measured = Measured(label, reports, wall * 1e6 / reports, cpu * 1e6 / reports)
    log(f"{label}: {measured.wall_us:.0f} us wall, {measured.backend_cpu_us:.0f} us backend CPU per report")
    return measured


def worktree(stack: ExitStack, work_dir: Path, revision: str) -> Path:
    path = work_dir / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), revision], cwd=ROOT, check=True, capture_output=True
    )
    stack.callback(subprocess.run, ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)
    return path


def write(runs: Sequence[Measured], options: argparse.Namespace, took: float) -> list[Path]:
    median = {
        label: statistics.median(r.backend_cpu_us for r in runs if r.tree == label)
        for label in dict.fromkeys(r.tree for r in runs)
    }
    lines = [
        f"# Settlement's SQL per report ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- **Command:** `python -m benchmarks.settlement_sql --against {options.against} --orders {options.orders} "
        f"--reps {options.reps}`. Took {took / 60:.1f} min. Commit {commit()[:12]}.",
        f"- **Machine:** nproc={machine()['nproc']}, {machine()['cpu']}; a private PostgreSQL as the tests'.",
        f"- **Each run:** a fresh database migrated and seeded by the tree's own code; {options.orders:,} buys placed "
        f"and recorded SUBMITTED, then a NEW and a FILL for each booked in batches of {BATCH} (one transaction each) "
        "on one connection. The backend's CPU per report, from /proc.",
        "",
        "| tree | backend CPU per report, µs (median) | runs: CPU / wall µs per report |",
        "|---|---:|---|",
        *(
            f"| {label} | {value:.0f} | "
            + ", ".join(f"{r.backend_cpu_us:.0f} / {r.wall_us:.0f}" for r in runs if r.tree == label)
            + " |"
            for label, value in median.items()
        ),
        "",
    ]
    if options.against and len(median) == 2:
        ours, theirs = median["this tree"], median[options.against]
        lines += [f"This tree's statements cost {ours / theirs:.2f} times {options.against}'s per report.", ""]
    options.results_dir.mkdir(parents=True, exist_ok=True)
    md, js = options.results_dir / f"{NAME}.md", options.results_dir / f"{NAME}.json"
    md.write_text("\n".join(lines))
    document = {"runs": [asdict(r) for r in runs], "median_backend_cpu_us": median, "commit": commit()}
    js.write_text(json.dumps(document, indent=2) + "\n")
    return [md, js]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.settlement_sql", description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="d334cf2", help="a revision to compare with ('' for none)")
    parser.add_argument("--orders", type=int, default=3_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    options = parser.parse_args(argv)
    started = time.monotonic()
    with ExitStack() as stack:
        work_dir = Path(tempfile.mkdtemp(prefix="bench-settlement-sql-"))
        stack.callback(shutil.rmtree, work_dir, ignore_errors=True)
        cluster = stack.enter_context(PostgresCluster(work_dir / "pg", free_port()))
        theirs = [(options.against, worktree(stack, work_dir, options.against))] if options.against else []
        trees = [("this tree", ROOT), *theirs]
        runs = []
        for rep in range(options.reps):
            for label, tree in trees if rep % 2 == 0 else reversed(trees):
                runs.append(measure(cluster, tree, label, options.orders))
    for path in write(runs, options, time.monotonic() - started):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
