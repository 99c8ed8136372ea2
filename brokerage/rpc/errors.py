"""The one place domain errors become gRPC status codes, with google.rpc error details where they help."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from brokerage.domain.errors import (
    DomainError,
    FailedPrecondition,
    IdempotencyConflict,
    InvalidRequest,
    LimitReached,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)


def to_status(error: DomainError) -> grpc.Status:
    code, detail = _code_and_detail(error)
    status = status_pb2.Status(code=code, message=str(error))
    if detail is not None:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return rpc_status.to_status(status)


def _code_and_detail(error: DomainError) -> tuple[int, Message | None]:
    match error:
        case InvalidRequest(violations=violations):
            return code_pb2.INVALID_ARGUMENT, error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in violations
                ]
            )
        case NotFound(resource_type=kind, resource_name=name):
            return code_pb2.NOT_FOUND, error_details_pb2.ResourceInfo(resource_type=kind, resource_name=name)
        case IdempotencyConflict():
            return code_pb2.ALREADY_EXISTS, None
        case FailedPrecondition(subject=subject, violation_type=kind):
            return code_pb2.FAILED_PRECONDITION, error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(type=kind, subject=subject, description=str(error))
                ]
            )
        case Unavailable():
            return code_pb2.UNAVAILABLE, error_details_pb2.RetryInfo()
        case LimitReached(limit=limit, retry_after_seconds=retry_after):
            if retry_after is None:
                return code_pb2.RESOURCE_EXHAUSTED, error_details_pb2.QuotaFailure(
                    violations=[error_details_pb2.QuotaFailure.Violation(subject=limit, description=str(error))]
                )
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromTimedelta(timedelta(seconds=retry_after))
            return code_pb2.RESOURCE_EXHAUSTED, retry
        case Unauthenticated():
            return code_pb2.UNAUTHENTICATED, None
        case PermissionDenied(subject=subject):
            return code_pb2.PERMISSION_DENIED, error_details_pb2.ErrorInfo(
                reason="PERMISSION_DENIED", domain="brokerage", metadata={"subject": subject}
            )
    return code_pb2.INTERNAL, None
