"""Errors a request can meet before it becomes an order. Business outcomes (a rejection) are not errors.

The rpc layer maps each class to one status code, in one place (brokerage.rpc.errors).
"""

from __future__ import annotations

from dataclasses import dataclass


class DomainError(Exception):
    """Base of the errors the entrypoints translate."""


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidRequest(DomainError):
    """Malformed input: nothing is stored."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))


class NotFound(DomainError):
    def __init__(self, resource_type: str, resource_name: str) -> None:
        self.resource_type = resource_type
        self.resource_name = resource_name
        super().__init__(f"{resource_type} {resource_name!r} not found")


class UnknownCustomer(NotFound):
    def __init__(self, customer_id: str) -> None:
        super().__init__("customer", customer_id)


class OrderNotFound(NotFound):
    def __init__(self, order_id: str) -> None:
        super().__init__("order", order_id)


class IdempotencyConflict(DomainError):
    """The client_order_id was used before for a different order."""


class FailedPrecondition(DomainError):
    def __init__(self, subject: str, violation_type: str, description: str) -> None:
        self.subject = subject
        self.violation_type = violation_type
        super().__init__(description)


class Unauthenticated(DomainError):
    """The call proves no identity: no token, or one that is malformed, expired or not signed by a known issuer."""


class PermissionDenied(DomainError):
    """The caller is known, and may not do this: another customer's account, a scope it lacks, a peer not admitted."""

    def __init__(self, subject: str, description: str) -> None:
        self.subject = subject
        super().__init__(f"{subject}: {description}")


class Unavailable(DomainError):
    """A dependency (the database) cannot answer now; the caller may retry."""


class LimitReached(DomainError):
    """A bound on what one caller may hold or do was reached: nothing was done; the same request may succeed later
    (after `retry_after`, where one is known)."""

    def __init__(self, limit: str, description: str, retry_after_seconds: float | None = None) -> None:
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        super().__init__(description)
