import hashlib

from brokerage.domain.sharding import shard_for, subject_for


def test_shard_is_the_first_eight_bytes_of_sha256_modulo_the_count() -> None:
    digest = hashlib.sha256(b"customer-42").digest()
    assert shard_for("customer-42", 16) == int.from_bytes(digest[:8], "big") % 16


def test_known_values_never_change() -> None:
    # Pinned: a change here would move customers between shards and break their FIFO.
    assert [shard_for(str(c), 16) for c in range(1, 9)] == [1, 14, 11, 6, 11, 7, 14, 7]
    assert shard_for("customer-42", 1024) == 821


def test_customers_spread_over_every_shard() -> None:
    counts = [0] * 16
    for customer in range(1, 16_001):
        counts[shard_for(str(customer), 16)] += 1
    assert min(counts) > 800 and max(counts) < 1200


def test_subject_names_the_shard() -> None:
    assert subject_for("1", 16) == f"orders.{shard_for('1', 16)}"
