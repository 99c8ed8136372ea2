"""CPU time of process groups and of the whole machine, read from /proc (Linux).

A sample maps each group (server, postgres, client, ...) to the CPU seconds (user + system) so far of each of its
processes (all their threads) or single threads. Between two samples, a process that appeared counts from zero;
one that exited is lost, except in a tree, whose root's reaped children (cutime + cstime) are part of the group:
PostgreSQL's backends and autovacuum workers come and go, and the postmaster reaps them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MACHINE_BUSY = "machine_busy"
MACHINE_TOTAL = "machine_total"

CpuSource = Callable[[], dict[str, float]]  # a group: CPU seconds so far, by process, thread or "reaped:<pid>"
REAPED = "reaped:"


def process_stat(pid: int) -> Path:
    """The stat file of a whole process: its CPU time covers all its threads."""
    return Path(f"/proc/{pid}/stat")


def thread_stat(pid: int, tid: int | None = None) -> Path:
    """The stat file of one thread (by default the main thread, whose tid is the pid)."""
    return Path(f"/proc/{pid}/task/{tid or pid}/stat")


def _stat_fields(stat: Path) -> list[str] | None:
    """The fields of a stat file after the command name (state is index 0), None if it is gone."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(stat: Path) -> float:
    """utime + stime of a process or thread, in seconds; 0 if it is gone."""
    fields = _stat_fields(stat)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def reaped_cpu_seconds(pid: int) -> float:
    """cutime + cstime: the CPU of the children a process has waited for, in seconds; 0 if it is gone."""
    fields = _stat_fields(process_stat(pid))
    return 0.0 if fields is None else (int(fields[13]) + int(fields[14])) / CLOCK_TICKS


def of_stats(stats: Callable[[], Iterable[Path]]) -> CpuSource:
    """A group of processes or threads, given by their stat files."""
    return lambda: {str(stat): cpu_seconds(stat) for stat in stats()}


def of_tree(root: Callable[[], int | None]) -> CpuSource:
    """A process, its children, and the children it has reaped, so nothing that exits is lost."""

    def read() -> dict[str, float]:
        pid = root()
        if pid is None:
            return {}
        values = {str(process_stat(p)): cpu_seconds(process_stat(p)) for p in (pid, *children_of(pid))}
        values[f"{REAPED}{pid}"] = reaped_cpu_seconds(pid)
        return values

    return read


def children_of(parent: int) -> list[int]:
    """The live processes whose parent is `parent`."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry / "stat")
            if fields is not None and int(fields[1]) == parent:
                children.append(int(entry.name))
    return children


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values)  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    per_group: dict[str, dict[str, float]]
    machine_busy: float
    machine_total: float


def sample(groups: Mapping[str, CpuSource]) -> CpuSample:
    """CPU seconds so far of every process or thread of every group, and of the machine."""
    per_group = {name: read() for name, read in groups.items()}
    busy, total = machine_cpu_seconds()
    return CpuSample(per_group, busy, total)


def used_between(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU seconds each group, the machine (busy) and the machine's capacity (total) used between two samples."""
    used = {}
    for name, end in after.per_group.items():
        start = before.per_group.get(name, {})
        used[name] = sum(max(0.0, seconds - start.get(key, 0.0)) for key, seconds in end.items())
        if any(key.startswith(REAPED) for key in end):  # an exited child's earlier CPU is in the reaped total
            used[name] -= sum(seconds for key, seconds in start.items() if key not in end)
    used[MACHINE_BUSY] = after.machine_busy - before.machine_busy
    used[MACHINE_TOTAL] = after.machine_total - before.machine_total
    return used


def pids_with_argument(argument: str) -> list[int]:
    """Live processes whose command line contains `argument` as one of its words (finds a server by its data dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                words = (entry / "cmdline").read_bytes().split(b"\0")
                if argument.encode() in words:
                    found.append(int(entry.name))
    return found
