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
