"""brokerctl's risk levers, over the operations service's RiskService: halts (the kill switch, the restricted list, a
customer's), account statuses, limits, and the audit of every change (the commands: brokerage.ctl.main's usage)."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from tabulate import tabulate

from brokerage.proto import operations_pb2, operations_pb2_grpc

DEADLINE_SECONDS = 30.0
SCOPES = {
    "firm": operations_pb2.HALT_SCOPE_FIRM,
    "symbol": operations_pb2.HALT_SCOPE_SYMBOL,
    "customer": operations_pb2.HALT_SCOPE_CUSTOMER,
}
STATUSES = {
    "active": operations_pb2.ACCOUNT_STATUS_ACTIVE,
    "closing-only": operations_pb2.ACCOUNT_STATUS_CLOSING_ONLY,
    "blocked": operations_pb2.ACCOUNT_STATUS_BLOCKED,
}
LIMIT_FIELDS = ("max_order_notional", "max_order_quantity", "max_daily_buy_notional", "max_orders_per_minute")


def add_commands(commands: Any) -> None:
    """Adds halt, resume, account, limits and risk-events to brokerctl's parser."""
    halting = commands.add_parser("halt", help="halt new orders: the firm, a symbol or a customer; or list halts")
    halts = halting.add_subparsers(required=True, metavar="SCOPE")
    for scope, target in (("firm", None), ("symbol", "symbol"), ("customer", "customer_id")):
        one = halts.add_parser(scope, help=f"halt new orders of the {scope}" if target else "the kill switch")
        if target:
            one.add_argument(target)
        one.add_argument("--reason", required=True, help="why, for the audit (never shown to customers)")
        one.add_argument("--cancel-open-orders", action="store_true", help="also cancel every open order in scope")
        one.set_defaults(run=set_halt, scope=scope)
    listing = halts.add_parser("list", help="the halts in force, newest first")
    listing.add_argument("--all", action="store_true", help="cleared ones too")
    listing.set_defaults(run=list_halts)

    resuming = commands.add_parser("resume", help="clear a halt")
    resuming.add_argument("halt_id", type=int)
    resuming.add_argument("--reason", required=True, help="why, for the audit")
    resuming.set_defaults(run=clear_halt)

    account = commands.add_parser("account", help="set a customer's account status")
    account.add_argument("customer_id")
    account.add_argument("status", choices=sorted(STATUSES))
    account.add_argument("--reason", required=True, help="why, for the audit")
    account.set_defaults(run=set_status)

    limits = commands.add_parser("limits", help="a customer's limits (or the firm's defaults)").add_subparsers(
        required=True, metavar="ACTION"
    )
    getting = limits.add_parser("get", help="the limits in force (no CUSTOMER_ID: the firm's defaults)")
    getting.add_argument("customer_id", nargs="?", default="")
    getting.set_defaults(run=get_limits)
    setting = limits.add_parser(
        "set",
        help="a customer's: each given overrides the firm's, each left out reverts to it; the firm's: "
        "each given replaces its default",
    )
    setting.add_argument("customer_id", nargs="?", default="")
    for field in LIMIT_FIELDS:
        setting.add_argument(f"--{field.replace('_', '-')}", type=int if "notional" not in field else str)
    setting.add_argument("--reason", required=True, help="why, for the audit")
    setting.set_defaults(run=set_limits)

    events = commands.add_parser("risk-events", help="the audit of halts, statuses and limits, newest first")
    events.add_argument("--limit", type=int, default=50)
    events.set_defaults(run=list_events)


def _risk(channel: grpc.Channel) -> operations_pb2_grpc.RiskServiceStub:
    return operations_pb2_grpc.RiskServiceStub(channel)


def set_halt(channel: grpc.Channel, args: argparse.Namespace, metadata: Any) -> int:
    request = operations_pb2.SetTradingHaltRequest(
        scope=SCOPES[args.scope],
        symbol=getattr(args, "symbol", "") or "",
        customer_id=getattr(args, "customer_id", "") or "",
        reason=args.reason,
        cancel_open_orders=args.cancel_open_orders,
    )
    answer = _risk(channel).SetTradingHalt(request, metadata=metadata, timeout=DEADLINE_SECONDS)
    said = "already in force" if answer.already_in_force else "set"
    print(f"halt {answer.halt.halt_id} {said}: {_target(answer.halt)}")
    return 0


def list_halts(channel: grpc.Channel, args: argparse.Namespace, metadata: Any) -> int:
    request = operations_pb2.ListTradingHaltsRequest(include_cleared=args.all)
    halts = _risk(channel).ListTradingHalts(request, metadata=metadata, timeout=DEADLINE_SECONDS).halts
    if not halts:
        print("No halts." if args.all else "No halts in force.")
        return 0
    rows = [
        [
            h.halt_id,
            _target(h),
            h.reason,
            "yes" if h.cancel_open_orders else "",
            f"{_time(h.set_at)} by {h.set_by}",
            f"{_time(h.cleared_at)} by {h.cleared_by}" if h.HasField("cleared_at") else "in force",
        ]
        for h in halts
    ]
    print(tabulate(rows, headers=["halt", "scope", "reason", "cancels", "set", "cleared"], disable_numparse=True))
    return 0


def clear_halt(channel: grpc.Channel, args: argparse.Namespace, metadata: Any) -> int:
    request = operations_pb2.ClearTradingHaltRequest(halt_id=args.halt_id, reason=args.reason)
    halt = _risk(channel).ClearTradingHalt(request, metadata=metadata, timeout=DEADLINE_SECONDS)
    print(f"halt {halt.halt_id} cleared: {_target(halt)} (at {_time(halt.cleared_at)} by {halt.cleared_by})")
    return 0


def set_status(channel: grpc.Channel, args: argparse.Namespace, metadata: Any) -> int:
    request = operations_pb2.SetAccountStatusRequest(
        customer_id=args.customer_id, status=STATUSES[args.status], reason=args.reason
    )
    answer = _risk(channel).SetAccountStatus(request, metadata=metadata, timeout=DEADLINE_SECONDS)
    status = operations_pb2.AccountStatus.Name(answer.status).removeprefix("ACCOUNT_STATUS_")
    print(f"customer {answer.customer_id}: {status}")
    return 0


def get_limits(channel: grpc.Channel, args: argparse.Namespace, metadata: Any) -> int:
    request = operations_pb2.GetLimitsRequest(customer_id=args.customer_id)
    _print_limits(_risk(channel).GetLimits(request, metadata=metadata, timeout=DEADLINE_SECONDS))
    return 0


def set_limits(channel: grpc.Channel, args: argparse.Namespace, metadata: Any) -> int:
    given = {field: getattr(args, field) for field in LIMIT_FIELDS if getattr(args, field) is not None}
    request = operations_pb2.SetLimitsRequest(customer_id=args.customer_id, reason=args.reason, **given)
    _print_limits(_risk(channel).SetLimits(request, metadata=metadata, timeout=DEADLINE_SECONDS))
    return 0


def list_events(channel: grpc.Channel, args: argparse.Namespace, metadata: Any) -> int:
    request = operations_pb2.ListRiskEventsRequest(page_size=args.limit)
    events = _risk(channel).ListRiskEvents(request, metadata=metadata, timeout=DEADLINE_SECONDS).events
    if not events:
        print("No risk events.")
        return 0
    rows = [
        [
            e.event_id,
            _time(e.occurred_at),
            e.action,
            e.symbol or e.customer_id or "firm",
            e.detail,
            e.reason,
            f"{e.operator} ({e.operator_issuer}) from {e.operator_peer}",
        ]
        for e in events
    ]
    print(tabulate(rows, headers=["event", "at", "action", "target", "detail", "reason", "by"], disable_numparse=True))
    return 0


def _print_limits(limits: operations_pb2.Limits) -> None:
    whose = f"customer {limits.customer_id}" if limits.customer_id else "the firm's defaults"
    rows = [[field.replace("_", " "), getattr(limits, field)] for field in LIMIT_FIELDS]
    print(f"Limits in force for {whose}:")
    print(tabulate(rows, tablefmt="plain", disable_numparse=True))  # money stays as written


def _target(halt: operations_pb2.TradingHalt) -> str:
    if halt.scope == operations_pb2.HALT_SCOPE_SYMBOL:
        return f"symbol {halt.symbol}"
    if halt.scope == operations_pb2.HALT_SCOPE_CUSTOMER:
        return f"customer {halt.customer_id}"
    return "the firm (kill switch)"


def _time(moment: Timestamp) -> str:
    return moment.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")
