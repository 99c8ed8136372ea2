"""broker.v1.RiskService over gRPC: translates each call for the risk store and the answer back. Only operators get
here (ops:write to change, ops:read to list); every change's audit row names the operator's token (issuer and
subject) and the peer (its certificate's identity under mutual TLS, else its address)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from grpc import aio
from prometheus_client import Gauge

from brokerage.background import stop_requested
from brokerage.domain.errors import FieldViolation, InvalidRequest, NotFound
from brokerage.domain.identifiers import id_violations
from brokerage.domain.money import format_decimal
from brokerage.domain.risk import (
    AccountStatus,
    Halt,
    HaltScope,
    Limits,
    RiskEvent,
    halt_request,
    parse_limits,
    reason_violations,
)
from brokerage.proto import operations_pb2, operations_pb2_grpc
from brokerage.rpc.identity import Kind, Rule, caller
from brokerage.rpc.tls import peer_identities
from brokerage.storage.risk import Changer, RiskStore
from brokerage.telemetry import get_logger
from brokerage.wire import timestamp
from operations_service.servicer import DEFAULT_PAGE, MAX_PAGE, page_after

log = get_logger(__name__)

SERVICE_NAME = operations_pb2.DESCRIPTOR.services_by_name["RiskService"].full_name
READ, WRITE = Rule(Kind.OPERATOR, "ops:read"), Rule(Kind.OPERATOR, "ops:write")
RULES = {
    f"/{SERVICE_NAME}/{method}": rule
    for method, rule in {
        "SetTradingHalt": WRITE,
        "ClearTradingHalt": WRITE,
        "ListTradingHalts": READ,
        "SetAccountStatus": WRITE,
        "SetLimits": WRITE,
        "GetLimits": READ,
        "ListRiskEvents": READ,
    }.items()
}
SCOPES = {
    operations_pb2.HALT_SCOPE_FIRM: HaltScope.FIRM,
    operations_pb2.HALT_SCOPE_SYMBOL: HaltScope.SYMBOL,
    operations_pb2.HALT_SCOPE_CUSTOMER: HaltScope.CUSTOMER,
}
SCOPES_TO_PROTO = {scope: value for value, scope in SCOPES.items()}
STATUSES = {
    operations_pb2.ACCOUNT_STATUS_ACTIVE: AccountStatus.ACTIVE,
    operations_pb2.ACCOUNT_STATUS_CLOSING_ONLY: AccountStatus.CLOSING_ONLY,
    operations_pb2.ACCOUNT_STATUS_BLOCKED: AccountStatus.BLOCKED,
}
STATUSES_TO_PROTO = {status: value for value, status in STATUSES.items()}
HALTS_LISTED = 1_000
FIRM_BUY_NOTIONAL = Gauge(
    "firm_buy_notional_today", "Gross notional of the buys the firm accepted today (New York), as last summed."
)


class FirmThreshold:
    """The firm's credit threshold: sums the day's accepted buys each check and engages the firm-wide halt by itself
    when they reach the threshold (the database decides, once a day; every replica may check)."""

    def __init__(self, store: RiskStore, threshold: Decimal, every: float) -> None:
        self._store = store
        self._threshold = threshold
        self._every = every

    async def watch(self) -> None:
        while not stop_requested():
            try:
                await self.check()
            except Exception as error:
                log.warning("firm threshold check failed", error=repr(error))
            await asyncio.sleep(self._every)

    async def check(self) -> int | None:
        notional, halt_id = await self._store.engage_firm_threshold(self._threshold)
        FIRM_BUY_NOTIONAL.set(float(notional))  # a gauge's sample, not money
        if halt_id is not None:
            log.critical(
                "firm halt engaged at the daily notional threshold",
                halt_id=halt_id,
                notional=str(notional),
                threshold=str(self._threshold),
            )
        return halt_id


class RiskServicer(operations_pb2_grpc.RiskServiceServicer):
    def __init__(self, store: RiskStore) -> None:
        self._store = store

    async def SetTradingHalt(
        self, request: operations_pb2.SetTradingHaltRequest, context: aio.ServicerContext
    ) -> operations_pb2.SetTradingHaltResponse:
        if request.scope not in SCOPES:
            raise InvalidRequest([FieldViolation("scope", "must be FIRM, SYMBOL or CUSTOMER")])
        wanted = halt_request(
            SCOPES[request.scope],  # type: ignore[index]
            request.symbol,
            request.customer_id,
            request.reason,
            request.cancel_open_orders,
        )
        result = await self._store.set_halt(wanted, _changer(context))
        if result is None:
            raise NotFound(wanted.scope.value.lower(), wanted.symbol or wanted.customer_id or "")
        halt, was_set = result
        if was_set:
            log.warning("trading halt set", **_halt_log(halt), operator=halt.set_by)
        return operations_pb2.SetTradingHaltResponse(halt=_halt(halt), already_in_force=not was_set)

    async def ClearTradingHalt(
        self, request: operations_pb2.ClearTradingHaltRequest, context: aio.ServicerContext
    ) -> operations_pb2.TradingHalt:
        if request.halt_id <= 0:
            raise InvalidRequest([FieldViolation("halt_id", "must be a halt's id")])
        _check(reason_violations(request.reason))
        halt = await self._store.clear_halt(request.halt_id, request.reason, _changer(context))
        if halt is None:
            raise NotFound("halt", str(request.halt_id))
        log.warning("trading halt cleared", **_halt_log(halt), operator=halt.cleared_by)
        return _halt(halt)

    async def ListTradingHalts(
        self, request: operations_pb2.ListTradingHaltsRequest, context: aio.ServicerContext
    ) -> operations_pb2.ListTradingHaltsResponse:
        halts = await self._store.halts(include_cleared=request.include_cleared, limit=HALTS_LISTED)
        return operations_pb2.ListTradingHaltsResponse(halts=[_halt(h) for h in halts])

    async def SetAccountStatus(
        self, request: operations_pb2.SetAccountStatusRequest, context: aio.ServicerContext
    ) -> operations_pb2.SetAccountStatusResponse:
        violations = id_violations("customer_id", request.customer_id) + reason_violations(request.reason)
        if request.status not in STATUSES:
            violations.append(FieldViolation("status", "must be ACTIVE, CLOSING_ONLY or BLOCKED"))
        _check(violations)
        status = STATUSES[request.status]  # type: ignore[index]
        stored = await self._store.set_status(request.customer_id, status, request.reason, _changer(context))
        if stored is None:
            raise NotFound("customer", request.customer_id)
        log.warning("account status set", customer_id=request.customer_id, status=stored.value)
        return operations_pb2.SetAccountStatusResponse(customer_id=request.customer_id, status=request.status)

    async def SetLimits(
        self, request: operations_pb2.SetLimitsRequest, context: aio.ServicerContext
    ) -> operations_pb2.Limits:
        violations = reason_violations(request.reason)
        if request.customer_id:
            violations += id_violations("customer_id", request.customer_id)
        _check(violations)
        given = request.HasField
        limits = parse_limits(
            max_order_notional=request.max_order_notional if given("max_order_notional") else None,
            max_order_quantity=request.max_order_quantity if given("max_order_quantity") else None,
            max_daily_buy_notional=request.max_daily_buy_notional if given("max_daily_buy_notional") else None,
            max_orders_per_minute=request.max_orders_per_minute if given("max_orders_per_minute") else None,
        )
        in_force = await self._store.set_limits(request.customer_id, limits, request.reason, _changer(context))
        if in_force is None:
            raise NotFound("customer", request.customer_id)
        log.warning("limits set", customer_id=request.customer_id or "(the firm's defaults)")
        return _limits(request.customer_id, in_force)

    async def GetLimits(
        self, request: operations_pb2.GetLimitsRequest, context: aio.ServicerContext
    ) -> operations_pb2.Limits:
        if request.customer_id:
            _check(id_violations("customer_id", request.customer_id))
        in_force = await self._store.limits(request.customer_id)
        if in_force is None:
            raise NotFound("customer", request.customer_id)
        return _limits(request.customer_id, in_force)

    async def ListRiskEvents(
        self, request: operations_pb2.ListRiskEventsRequest, context: aio.ServicerContext
    ) -> operations_pb2.ListRiskEventsResponse:
        size = request.page_size or DEFAULT_PAGE
        if not 0 < size <= MAX_PAGE:
            raise InvalidRequest([FieldViolation("page_size", f"must be 0 to {MAX_PAGE}")])
        events = await self._store.events(limit=size + 1, before=page_after(request.page_token))
        more = len(events) > size
        return operations_pb2.ListRiskEventsResponse(
            events=[_event(e) for e in events[:size]], next_page_token=str(events[size - 1].event_id) if more else ""
        )


def _changer(context: aio.ServicerContext) -> Changer:
    principal = caller()
    peer = ",".join(sorted(peer_identities(context))) or context.peer()
    return Changer(issuer=principal.issuer, operator=principal.subject, peer=peer)


def _check(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidRequest(violations)


def _halt(h: Halt) -> operations_pb2.TradingHalt:
    return operations_pb2.TradingHalt(
        halt_id=h.halt_id,
        scope=SCOPES_TO_PROTO[h.scope],
        symbol=h.symbol or "",
        customer_id=h.customer_id or "",
        reason=h.reason,
        cancel_open_orders=h.cancel_open_orders,
        set_at=timestamp(h.set_at),
        set_by=h.set_by,
        cleared_at=timestamp(h.cleared_at) if h.cleared_at else None,
        cleared_by=h.cleared_by or "",
    )


def _halt_log(h: Halt) -> dict[str, object]:
    return {"halt_id": h.halt_id, "scope": h.scope.value, "symbol": h.symbol, "customer_id": h.customer_id}


def _limits(customer_id: str, limits: Limits) -> operations_pb2.Limits:
    return operations_pb2.Limits(
        customer_id=customer_id,
        max_order_notional=format_decimal(limits.max_order_notional),
        max_order_quantity=limits.max_order_quantity or 0,
        max_daily_buy_notional=format_decimal(limits.max_daily_buy_notional),
        max_orders_per_minute=limits.max_orders_per_minute or 0,
    )


def _event(e: RiskEvent) -> operations_pb2.RiskEvent:
    return operations_pb2.RiskEvent(
        event_id=e.event_id,
        occurred_at=timestamp(e.occurred_at),
        action=e.action,
        customer_id=e.customer_id or "",
        symbol=e.symbol or "",
        halt_id=e.halt_id or 0,
        detail=e.detail,
        reason=e.reason,
        operator_issuer=e.operator_issuer,
        operator=e.operator,
        operator_peer=e.operator_peer,
    )
