"""Which shard owns a customer: stable across processes, languages and restarts (DESIGN.md rule 5)."""

from __future__ import annotations

import hashlib

SUBJECT_PREFIX = "orders"


def shard_for(customer_id: str, shard_count: int) -> int:
    """The first 8 bytes of SHA-256 of the customer id, big-endian, modulo the fixed shard count."""
    digest = hashlib.sha256(customer_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shard_count


def subject_for_shard(shard: int) -> str:
    return f"{SUBJECT_PREFIX}.{shard}"


def subject_for(customer_id: str, shard_count: int) -> str:
    return subject_for_shard(shard_for(customer_id, shard_count))


def parse_shard_set(text: str, shard_count: int) -> tuple[int, ...]:
    """The shards a worker cluster owns, from ranges and single shards: "0-7", "8-15", "0-3,12,14-15".

    Raises ValueError naming what is wrong: a malformed part, a shard outside 0..shard_count-1, an overlap.
    """
    shards: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{part!r} is not a shard or a range of shards like 0-7")
        low, high = int(first), int(last) if dash else int(first)
        if low > high:
            raise ValueError(f"range {part!r} runs backwards")
        if high >= shard_count:
            raise ValueError(f"shard {high} does not exist: there are {shard_count} (0-{shard_count - 1})")
        shards.extend(range(low, high + 1))
    if len(set(shards)) != len(shards):
        raise ValueError(f"{text!r} names a shard twice")
    return tuple(sorted(shards))


def format_shard_set(shards: tuple[int, ...]) -> str:
    """The shortest text parse_shard_set reads back as the same shards: (0, 1, 2, 5) -> "0-2,5"."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive shards
    for shard in sorted(shards):
        if runs and shard == runs[-1][1] + 1:
            runs[-1][1] = shard
        else:
            runs.append([shard, shard])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)
