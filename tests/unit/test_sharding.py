import hashlib
import re

import pytest

from brokerage.domain.sharding import format_shard_set, parse_shard_set, shard_for, subject_for
from devtools.mesh import split_shards


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


@pytest.mark.parametrize(
    ("text", "shards"),
    [("0-7", tuple(range(8))), ("8-15", tuple(range(8, 16))), ("0-3,12,14-15", (0, 1, 2, 3, 12, 14, 15)), ("5", (5,))],
)
def test_a_clusters_shards_are_read_from_ranges_and_written_back_the_same(text: str, shards: tuple[int, ...]) -> None:
    assert parse_shard_set(text, 16) == shards
    assert format_shard_set(shards) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0-16", "shard 16 does not exist: there are 16 (0-15)"),
        ("7-3", "runs backwards"),
        ("0-3,2", "names a shard twice"),
        ("a-b", "is not a shard or a range"),
        ("", "is not a shard or a range"),
        ("-3", "is not a shard or a range"),
    ],
)
def test_a_malformed_shard_set_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_shard_set(text, 16)


@pytest.mark.parametrize("count", [1, 2, 4, 16, 17, 64])
def test_shards_split_between_clusters_cover_every_shard_once(count: int) -> None:
    ranges = split_shards(count, 2)
    owned = [s for r in ranges for s in parse_shard_set(r, count)]
    assert owned == list(range(count))
