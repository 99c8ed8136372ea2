"""What the worker makes of a venue that does not answer (rule 7), without I/O: each error by its class, a retry
policy per order, and a circuit breaker for the venue as a whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from brokerage.domain.submission import (
    CircuitBreaker,
    Park,
    RetryAt,
    RetryPolicy,
    TransientVenueError,
    UnknownOutcome,
    VenueDown,
    venue_error,
)

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
POLICY = RetryPolicy(initial=timedelta(seconds=1), maximum=timedelta(seconds=8), unknown_attempts=3)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("UNAVAILABLE", TransientVenueError),
        ("DEADLINE_EXCEEDED", TransientVenueError),
        ("RESOURCE_EXHAUSTED", TransientVenueError),
        ("ABORTED", TransientVenueError),
        ("UNAUTHENTICATED", VenueDown),
        ("PERMISSION_DENIED", VenueDown),
        ("UNIMPLEMENTED", VenueDown),
        ("INTERNAL", UnknownOutcome),
        ("UNKNOWN", UnknownOutcome),
        ("DATA_LOSS", UnknownOutcome),
    ],
)
def test_each_code_has_its_class(code: str, kind: type) -> None:
    assert type(venue_error(code)) is kind


def test_a_transient_error_backs_off_doubling_to_the_maximum_and_never_parks() -> None:
    delays = [POLICY.after(TransientVenueError("UNAVAILABLE"), n, 0, NOW) for n in range(1, 7)]
    assert delays == [RetryAt(NOW + timedelta(seconds=s)) for s in (1, 2, 4, 8, 8, 8)]


def test_an_unknown_outcome_parks_at_its_last_attempt() -> None:
    assert [POLICY.after(UnknownOutcome("INTERNAL"), n, n, NOW) for n in (1, 2, 3)] == [
        RetryAt(NOW + timedelta(seconds=1)),
        RetryAt(NOW + timedelta(seconds=2)),
        Park(),
    ]


def breaker() -> CircuitBreaker:
    return CircuitBreaker(customers=3, window=timedelta(seconds=10), cooldown=timedelta(seconds=5))


def test_a_venue_wide_error_opens_at_once() -> None:
    opened = breaker()
    assert opened.failed(VenueDown("UNAUTHENTICATED"), "A", NOW) and not opened.allows(NOW)


def test_one_code_for_several_customers_within_the_window_opens_and_one_customer_never_does() -> None:
    one_customer, several = breaker(), breaker()
    for i in range(10):
        assert not one_customer.failed(UnknownOutcome("INTERNAL"), "A", NOW + timedelta(seconds=i))
    outcomes = [several.failed(UnknownOutcome("INTERNAL"), c, NOW) for c in "ABC"]
    assert outcomes == [False, False, True]


def test_failures_outside_the_window_or_of_other_codes_do_not_add_up() -> None:
    spread = breaker()
    assert not spread.failed(UnknownOutcome("INTERNAL"), "A", NOW)
    assert not spread.failed(UnknownOutcome("INTERNAL"), "B", NOW + timedelta(seconds=11))
    assert not spread.failed(TransientVenueError("UNAVAILABLE"), "C", NOW + timedelta(seconds=12))


def test_after_the_cooldown_one_send_tries_and_its_answer_decides() -> None:
    tried = breaker()
    tried.failed(VenueDown("PERMISSION_DENIED"), "A", NOW)
    assert not tried.allows(NOW + timedelta(seconds=4))
    assert tried.allows(NOW + timedelta(seconds=5))  # the trial
    assert not tried.allows(NOW + timedelta(seconds=5))  # only one at a time
    assert tried.failed(TransientVenueError("UNAVAILABLE"), "A", NOW + timedelta(seconds=6))  # open again
    assert tried.allows(NOW + timedelta(seconds=11))
    tried.succeeded()
    assert not tried.is_open and tried.allows(NOW + timedelta(seconds=11))
