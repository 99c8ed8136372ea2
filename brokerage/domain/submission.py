"""Taking an order to the exchange: what the venue can answer, as data the worker acts on, and what the worker does
about an answer that is not one (DESIGN.md rule 7).

The venue adapter turns every answer into one of these: an acceptance or a refusal of the order (data), or an error
of one of three classes. A transient one is retried after a backoff. An unknown outcome (anything else for one order)
is asked of the venue, and retried a bounded number of times before the order is parked as a break. A venue-wide one
(our credentials refused, a method it does not have) means nothing can go: the circuit breaker opens, and nothing is
parked or rejected for it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Accepted:
    """The exchange has the order (also when it already had it: a resubmission is answered with the first ack)."""

    venue_order_id: str
    duplicate: bool = False


@dataclass(frozen=True)
class Refused:
    """The exchange will not take the order; it ends REJECTED with this reason and its reservation released."""

    reason: str


SubmissionOutcome = Accepted | Refused

TRANSIENT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})
REFUSAL_CODES = frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE", "NOT_FOUND"})
VENUE_WIDE_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED"})


class VenueUnavailable(Exception):
    """The venue did not take or refuse the order: the outcome is unknown, or it cannot answer now. Sending the same
    order again is safe (the exchange dedupes by our order id); it is never a reason to reject the customer's order.
    `code` is the status the venue (or the way to it) answered with."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        super().__init__(f"{code}: {detail}" if detail else code)


class TransientVenueError(VenueUnavailable):
    """UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED (or the stream to the venue broken)."""


class UnknownOutcome(VenueUnavailable):
    """Any other error for one order: what became of it is the venue's to say."""


class VenueDown(VenueUnavailable):
    """Nothing can go: the venue refuses us (UNAUTHENTICATED, PERMISSION_DENIED) or the call itself (UNIMPLEMENTED), or
    the circuit breaker is open."""


def venue_error(code: str, detail: str = "") -> VenueUnavailable:
    """The error of a status code that is no refusal of the order (REFUSAL_CODES are, and ALREADY_EXISTS is the venue
    having it already)."""
    if code in TRANSIENT_CODES:
        return TransientVenueError(code, detail)
    if code in VENUE_WIDE_CODES:
        return VenueDown(code, detail)
    return UnknownOutcome(code, detail)


class ShardPaused(Exception):
    """An operator paused the shard: nothing more of it goes to the exchange until it is resumed."""


@dataclass(frozen=True)
class RetryAt:
    moment: datetime


@dataclass(frozen=True)
class Park:
    """Given up on: a break for an operator, its reservation held."""


@dataclass(frozen=True)
class RetryPolicy:
    """When an order whose send failed goes again: after a backoff that doubles with its attempts up to `maximum`;
    an unknown outcome only `unknown_attempts` times, then the order is parked. A transient error never parks: the
    venue is only slow or away, which the circuit breaker sees when it is so for everyone."""

    initial: timedelta
    maximum: timedelta
    unknown_attempts: int

    def after(self, error: VenueUnavailable, attempts: int, unknown_outcomes: int, now: datetime) -> RetryAt | Park:
        """The order's failed attempts so far and how many of them were unknown outcomes, this one included."""
        if isinstance(error, UnknownOutcome) and unknown_outcomes >= self.unknown_attempts:
            return Park()
        return RetryAt(now + min(self.maximum, self.initial * 2 ** min(attempts - 1, 20)))


@dataclass
class CircuitBreaker:
    """Opens when the venue fails us as a whole: at once for a venue-wide code, or when one code has failed orders of
    `customers` distinct customers within `window`. While open, nothing is sent; after `cooldown` one send is let
    through (half open), and its success closes the breaker, its failure opens it again. No I/O: the clock is passed
    in."""

    customers: int
    window: timedelta
    cooldown: timedelta
    opened_at: datetime | None = None
    reason: str = ""
    _trial_at: datetime | None = None
    _failures: deque[tuple[datetime, str, str]] = field(default_factory=deque)  # (when, code, customer)

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def cooling_down(self, now: datetime) -> bool:
        """Open, and not yet past its cooldown (or a trial under way): a send would be refused."""
        return self.opened_at is not None and now - (self._trial_at or self.opened_at) < self.cooldown

    def allows(self, now: datetime) -> bool:
        """Whether a send may go now: closed, or open past its cooldown and no other trial under way."""
        if self.opened_at is None:
            return True
        if now - (self._trial_at or self.opened_at) < self.cooldown:
            return False
        self._trial_at = now
        return True

    def succeeded(self) -> None:
        self.opened_at, self.reason, self._trial_at = None, "", None
        self._failures.clear()

    def failed(self, error: VenueUnavailable, customer_id: str, now: datetime) -> bool:
        """Notes a failed send; whether the breaker is open after it."""
        if isinstance(error, VenueDown):
            return self._open(now, f"the venue answered {error.code}")
        if self._trial_at is not None:
            return self._open(now, f"the send tried after the cooldown failed: {error.code}")
        self._failures.append((now, error.code, customer_id))
        while self._failures and now - self._failures[0][0] > self.window:
            self._failures.popleft()
        affected = {customer for _, code, customer in self._failures if code == error.code}
        if len(affected) >= self.customers:
            window = self.window.total_seconds()
            return self._open(now, f"{error.code} for {len(affected)} customers within {window:g} s")
        return self.is_open

    def _open(self, now: datetime, reason: str) -> bool:
        self.opened_at, self.reason, self._trial_at = now, reason, None
        return True
