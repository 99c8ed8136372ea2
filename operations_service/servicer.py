"""broker.v1.OperationsService over gRPC: translates each call for the repair desk (and reconciliation) and the
answer back. Only operators get here (the IdentityBoundary admits their tokens alone, by POLICY); every audit row
keeps who, as their token names them and its issuer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime

from grpc import aio

from brokerage.domain.errors import FieldViolation, InvalidRequest
from brokerage.domain.identifiers import id_violations
from brokerage.domain.market_hours import trading_day
from brokerage.domain.repairs import Break, Resolution
from brokerage.proto import operations_pb2, operations_pb2_grpc
from brokerage.reconcile import CheckResult, render
from brokerage.rpc.identity import Kind, Policy, Rule, operator
from brokerage.wire import STATUS_TO_PROTO, timestamp
from operations_service.desk import RepairDesk

SERVICE_NAME = operations_pb2.DESCRIPTOR.services_by_name["OperationsService"].full_name
READ, WRITE = Rule(Kind.OPERATOR, "ops:read"), Rule(Kind.OPERATOR, "ops:write")
POLICY = Policy(
    {
        f"/{SERVICE_NAME}/{method}": rule
        for method, rule in {
            "ListBreaks": READ,
            "Reconcile": READ,
            "ResolveBreak": WRITE,
            "ResolveBreaks": WRITE,
            "RedriveOrder": WRITE,
        }.items()
    }
)
DEFAULT_PAGE, MAX_PAGE = 100, 1_000
RESOLUTIONS = {
    operations_pb2.BREAK_RESOLUTION_ACCEPT_VENUE: Resolution.ACCEPT_VENUE,
    operations_pb2.BREAK_RESOLUTION_WRITE_OFF: Resolution.WRITE_OFF,
}
Reconcile = Callable[[date], Awaitable[list[CheckResult]]]


class OperationsServicer(operations_pb2_grpc.OperationsServiceServicer):
    def __init__(self, desk: RepairDesk, reconcile: Reconcile) -> None:
        self._desk = desk
        self._reconcile = reconcile

    async def ListBreaks(
        self, request: operations_pb2.ListBreaksRequest, context: aio.ServicerContext
    ) -> operations_pb2.ListBreaksResponse:
        size = request.page_size or DEFAULT_PAGE
        if not 0 < size <= MAX_PAGE:
            raise InvalidRequest([FieldViolation("page_size", f"must be 0 to {MAX_PAGE}")])
        after = page_after(request.page_token)
        breaks = await self._desk.breaks(
            kind=request.kind or None, include_resolved=request.include_resolved, limit=size + 1, after=after
        )
        more = len(breaks) > size
        return operations_pb2.ListBreaksResponse(
            breaks=[_break(b) for b in breaks[:size]], next_page_token=str(breaks[size - 1].break_id) if more else ""
        )

    async def ResolveBreak(
        self, request: operations_pb2.ResolveBreakRequest, context: aio.ServicerContext
    ) -> operations_pb2.ResolveBreakResponse:
        if request.exec_id:
            _check_id("exec_id", request.exec_id)
        brk, outcome = await self._desk.resolve(
            request.break_id,
            _resolution(request.resolution),
            operator(),
            _note(request.note),
            exec_id=request.exec_id or None,
        )
        return operations_pb2.ResolveBreakResponse(**{"break": _break(brk)}, outcome=outcome)

    async def ResolveBreaks(
        self, request: operations_pb2.ResolveBreaksRequest, context: aio.ServicerContext
    ) -> operations_pb2.ResolveBreaksResponse:
        _check_id("kind", request.kind)
        resolved = await self._desk.resolve_kind(
            request.kind, _resolution(request.resolution), operator(), _note(request.note)
        )
        return operations_pb2.ResolveBreaksResponse(
            resolved=[operations_pb2.ResolveBreakResponse(**{"break": _break(b)}, outcome=o) for b, o in resolved]
        )

    async def RedriveOrder(
        self, request: operations_pb2.RedriveOrderRequest, context: aio.ServicerContext
    ) -> operations_pb2.RedriveOrderResponse:
        _check_id("order_id", request.order_id)
        order, outcome = await self._desk.redrive(request.order_id, operator(), _note(request.note, "redrive"))
        return operations_pb2.RedriveOrderResponse(
            order_id=order.order_id, status=STATUS_TO_PROTO[order.status], outcome=outcome
        )

    async def Reconcile(
        self, request: operations_pb2.ReconcileRequest, context: aio.ServicerContext
    ) -> operations_pb2.ReconcileReport:
        day = _day(request.trading_day)
        results = await self._reconcile(day)
        return operations_pb2.ReconcileReport(
            clean=not any(r.findings for r in results),
            text=render(results, day),
            checks=[
                operations_pb2.ReconcileCheck(name=r.name, findings=len(r.findings), skipped=bool(r.skipped))
                for r in results
            ],
        )


def _break(b: Break) -> operations_pb2.Break:
    return operations_pb2.Break(
        break_id=b.break_id,
        kind=b.kind,
        exec_id=b.exec_id or "",
        order_id=b.order_id or "",
        detail=b.detail,
        recorded_at=timestamp(b.recorded_at),
        booked_to_error_account=b.booked_to_error_account,
        resolved_at=timestamp(b.resolved_at) if b.resolved_at else None,
        resolution=b.resolution or "",
        resolved_by=b.resolved_by or "",
        resolution_note=b.resolution_note,
    )


def _resolution(value: int) -> Resolution:
    if value not in RESOLUTIONS:
        raise InvalidRequest([FieldViolation("resolution", "must be ACCEPT_VENUE or WRITE_OFF")])
    return RESOLUTIONS[value]  # type: ignore[index]


def _note(text: str, default: str = "") -> str:
    note = text.strip() or default
    if not note:
        raise InvalidRequest([FieldViolation("note", "say why: it is kept in the audit row")])
    if len(note) > 1_000 or "\x00" in note:
        raise InvalidRequest([FieldViolation("note", "at most 1,000 characters, without NUL")])
    return note


def _check_id(field: str, value: str) -> None:
    if violations := id_violations(field, value):
        raise InvalidRequest(violations)


def _day(text: str) -> date:
    if not text:
        return trading_day(datetime.now(UTC))
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise InvalidRequest([FieldViolation("trading_day", f"expected YYYY-MM-DD, got {text!r}")]) from error


def page_after(text: str) -> int | None:
    """The row a page ends with (a break's, a risk event's id), from the token of the page before (empty: the first
    page)."""
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        raise InvalidRequest([FieldViolation("page_token", "not a token this service gave")])
    return int(text)
