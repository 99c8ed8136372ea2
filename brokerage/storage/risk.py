"""The risk controls as the operations service changes and reads them (migration 0019): halts, account statuses and
limits, each change through its function with its audit row in the same transaction; and the halts in force, as the
workers read them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg_pool import AsyncConnectionPool

from brokerage.domain.risk import (
    AccountStatus,
    Halt,
    HaltRequest,
    HaltScope,
    Limits,
    RiskEvent,
)
from brokerage.storage.queries import fetch_all


@dataclass(frozen=True)
class Changer:
    """Who makes a change, as its audit row keeps it: the operator's token (issuer, subject) and the peer."""

    issuer: str
    operator: str
    peer: str

    def params(self) -> dict[str, str]:
        return {"issuer": self.issuer, "operator": self.operator, "peer": self.peer}


class RiskStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def set_halt(self, request: HaltRequest, changer: Changer) -> tuple[Halt, bool] | None:
        """The halt set (True), or the one already in force over its target (False); None for an unknown symbol or
        customer."""
        params = {
            "scope": request.scope.value,
            "symbol": request.symbol,
            "customer_id": request.customer_id,
            "reason": request.reason,
            "cancel_open_orders": request.cancel_open_orders,
            **changer.params(),
        }
        [row] = await fetch_all(self._pool, "set_trading_halt", params)
        return None if row["halt_id"] is None else (halt_from_row(row), row["o_set"])

    async def clear_halt(self, halt_id: int, reason: str, changer: Changer) -> Halt | None:
        rows = await fetch_all(
            self._pool, "clear_trading_halt", {"halt_id": halt_id, "reason": reason, **changer.params()}
        )
        return halt_from_row(rows[0]) if rows else None

    async def halts(self, *, include_cleared: bool, limit: int) -> list[Halt]:
        rows = await fetch_all(self._pool, "list_trading_halts", {"include_cleared": include_cleared, "limit": limit})
        return [halt_from_row(row) for row in rows]

    async def set_status(
        self, customer_id: str, status: AccountStatus, reason: str, changer: Changer
    ) -> AccountStatus | None:
        params = {"customer_id": customer_id, "status": status.value, "reason": reason, **changer.params()}
        rows = await fetch_all(self._pool, "set_account_status", params)
        return AccountStatus(rows[0]["account_status"]) if rows else None

    async def set_limits(self, customer_id: str, limits: Limits, reason: str, changer: Changer) -> Limits | None:
        """The limits in force after the change; None for an unknown customer."""
        params = {
            "customer_id": customer_id,
            "max_order_notional": limits.max_order_notional,
            "max_order_quantity": limits.max_order_quantity,
            "max_daily_buy_notional": limits.max_daily_buy_notional,
            "max_orders_per_minute": limits.max_orders_per_minute,
            "reason": reason,
            **changer.params(),
        }
        rows = await fetch_all(self._pool, "set_limits", params)
        return _limits(rows[0]) if rows else None

    async def limits(self, customer_id: str) -> Limits | None:
        """The limits in force for the customer ('' : the firm's defaults); None for an unknown customer."""
        rows = await fetch_all(self._pool, "get_limits", {"customer_id": customer_id})
        return _limits(rows[0]) if rows else None

    async def engage_firm_threshold(self, threshold: Decimal) -> tuple[Decimal, int | None]:
        """The firm's accepted buy notional today, and the firm halt engaged now if it reached the threshold (None:
        nothing engaged: below it, a firm halt already in force, or engaged by it earlier today)."""
        [row] = await fetch_all(self._pool, "engage_firm_threshold_halt", {"threshold": threshold})
        return row["o_notional"], row["o_halt_id"]

    async def events(self, *, limit: int, before: int | None) -> list[RiskEvent]:
        rows = await fetch_all(self._pool, "list_risk_events", {"limit": limit, "before": before})
        return [_event(row) for row in rows]


async def halts_in_force(pool: AsyncConnectionPool) -> tuple[Halt, ...]:
    return tuple(halt_from_row(row) for row in await fetch_all(pool, "halts_in_force"))


def halt_from_row(row: dict[str, Any]) -> Halt:
    return Halt(
        halt_id=row["halt_id"],
        scope=HaltScope(row["scope"]),
        symbol=row["symbol"],
        customer_id=row["customer_id"],
        reason=row["reason"],
        cancel_open_orders=row["cancel_open_orders"],
        set_at=row["set_at"],
        set_by=row["set_by"],
        cleared_at=row["cleared_at"],
        cleared_by=row["cleared_by"],
    )


def _limits(row: dict[str, Any]) -> Limits:
    return Limits(
        max_order_notional=row["max_order_notional"],
        max_order_quantity=row["max_order_quantity"],
        max_daily_buy_notional=row["max_daily_buy_notional"],
        max_orders_per_minute=row["max_orders_per_minute"],
    )


def _event(row: dict[str, Any]) -> RiskEvent:
    return RiskEvent(
        event_id=row["event_id"],
        occurred_at=row["occurred_at"],
        action=row["action"],
        customer_id=row["customer_id"],
        symbol=row["symbol"],
        halt_id=row["halt_id"],
        detail=row["detail"],
        reason=row["reason"],
        operator_issuer=row["operator_issuer"],
        operator=row["operator"],
        operator_peer=row["operator_peer"],
    )
