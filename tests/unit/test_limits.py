"""Places are taken at once or refused, per key, and given back when their holder ends."""

from __future__ import annotations

import pytest

from brokerage.domain.errors import LimitReached
from brokerage.rpc.limits import Places, ServerLimits


def test_a_place_past_the_bound_is_refused_and_a_freed_one_taken_again() -> None:
    places = Places(2, "watches_per_customer", "watches")
    with places.holding("7"), places.holding("7"):
        with pytest.raises(LimitReached) as refused, places.holding("7"):
            pass
        with places.holding("8"):  # another key has its own places
            assert places.held("8") == 1
    assert refused.value.limit == "watches_per_customer"
    assert str(refused.value) == "at most 2 watches at once"
    with places.holding("7"):
        assert places.held("7") == 1
    assert places.held("7") == 0


def test_a_holder_that_fails_gives_its_place_back() -> None:
    places = ServerLimits(max_unary_calls=1).places()
    with pytest.raises(RuntimeError), places.holding("unary_calls"):
        raise RuntimeError("the call failed")
    with places.holding("unary_calls"):
        assert places.held("unary_calls") == 1


def test_each_kind_of_call_has_its_own_bound() -> None:
    places = ServerLimits(max_unary_calls=1, max_streams=1, max_unauthenticated_streams=1).places()
    with places.holding("unary_calls"), places.holding("streams"), places.holding("unauthenticated_streams"):
        with pytest.raises(LimitReached, match="unary calls"), places.holding("unary_calls"):
            pass
