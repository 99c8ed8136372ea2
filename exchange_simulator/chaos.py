"""Chaos: the misbehaviour of a real venue's callbacks, on purpose, so the backend proves it copes.

With rate p each report is independently delayed (up to a maximum, so later reports overtake it) with
probability p and sent twice with probability p; and each accepted order, with probability p, is answered only
after its NEW report and its first fill have reached CallbackService. Rate 0 changes nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Chaos:
    rate: float
    max_delay_seconds: float
    rng: random.Random = field(default_factory=random.Random)

    def delivery_delay(self) -> float:
        """Seconds to hold a report back before its first delivery attempt."""
        if self.rate and self.rng.random() < self.rate:
            return self.rng.uniform(0.0, self.max_delay_seconds)
        return 0.0

    def copies(self) -> int:
        """How many times to deliver a report."""
        return 2 if self.rate and self.rng.random() < self.rate else 1

    def fills_before_acknowledgement(self) -> bool:
        """Whether SubmitOrder waits until the order's first fill was delivered before answering."""
        return bool(self.rate) and self.rng.random() < self.rate
