"""Taking an order to the exchange: what the venue can answer, as data the worker acts on.

The venue adapter turns every answer into one of these; the worker decides what each means for the order.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class VenueUnavailable(Exception):
    """The outcome is unknown or the exchange cannot answer now: try the same order again later.

    Safe because the exchange dedupes by our order id; never a reason to reject the customer's order.
    """


class ShardPaused(Exception):
    """An operator paused the shard: nothing more of it goes to the exchange until it is resumed."""
