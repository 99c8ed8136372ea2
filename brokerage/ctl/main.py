"""brokerctl: the operator's levers, over the operations service (`.venv/bin/brokerctl --help`).

    brokerctl breaks list [--all] [--kind KIND]
    brokerctl breaks resolve BREAK_ID --accept-venue | --write-off --note TEXT [--exec-id EXEC_ID]
    brokerctl breaks resolve --kind KIND --all --accept-venue | --write-off --note TEXT
    brokerctl orders redrive ORDER_ID [--note TEXT]
    brokerctl reconcile [--day YYYY-MM-DD]
    brokerctl halt firm|symbol SYMBOL|customer CUSTOMER_ID --reason TEXT [--cancel-open-orders]
    brokerctl halt list [--all]
    brokerctl resume HALT_ID --reason TEXT
    brokerctl account CUSTOMER_ID active|closing-only|blocked --reason TEXT
    brokerctl limits get [CUSTOMER_ID]
    brokerctl limits set [CUSTOMER_ID] [--max-order-notional X] [--max-order-quantity N]
                         [--max-daily-buy-notional X] [--max-orders-per-minute N] --reason TEXT
    brokerctl risk-events [--limit N]

It presents an operator's token (a JWT from the operators' identity provider, with ops:read, and ops:write for
changes): BROKER_TOKEN, else --token-file. Against `make run` it needs no flags: the target defaults to
127.0.0.1:15080 (BROKER_OPERATIONS_TARGET) and the token to the one `make run` keeps fresh in
.local/identity/operator.token. Under mutual TLS it presents the certificate BROKER_TLS_CERT_FILE and
BROKER_TLS_KEY_FILE name, and checks the service's against BROKER_TLS_CA_FILE. Exit status: 0 done, 1 a
reconciliation that is not clean, 2 a refusal or an error (said on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import grpc

from brokerage.ctl import risk
from brokerage.proto import operations_pb2, operations_pb2_grpc
from brokerage.rpc.tls import channel_credentials, files_from

DEFAULT_TARGET = "127.0.0.1:15080"
LOCAL_TOKEN_FILE = Path(__file__).resolve().parents[2] / ".local" / "identity" / "operator.token"
DEADLINE_SECONDS = 30.0
RECONCILE_DEADLINE_SECONDS = 300.0
LIST_PAGE = 1_000  # breaks asked for at a time


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        token = _token(args.token_file)
    except OSError as error:
        _fail(f"no operator's token: set BROKER_TOKEN or --token-file ({error})")
    metadata = (("authorization", f"Bearer {token}"),)
    with _channel(args.target) as channel:
        try:
            sys.exit(args.run(channel, args, metadata))
        except grpc.RpcError as error:
            _fail(f"{error.code().name}: {error.details()}")  # type: ignore[attr-defined]


def _channel(target: str) -> grpc.Channel:
    try:
        cert, key, ca = (os.environ.get(f"BROKER_TLS_{name}_FILE", "") for name in ("CERT", "KEY", "CA"))
        tls = files_from(cert, key, ca, "BROKER_TLS_*")
    except ValueError as error:
        _fail(str(error))
    if tls is None:
        return grpc.insecure_channel(target)
    try:
        return grpc.secure_channel(target, channel_credentials(tls))
    except OSError as error:
        _fail(f"cannot read the TLS files: {error}")


def list_breaks(channel: grpc.Channel, args: argparse.Namespace, metadata: object) -> int:
    stub = operations_pb2_grpc.OperationsServiceStub(channel)
    request = operations_pb2.ListBreaksRequest(kind=args.kind or "", include_resolved=args.all, page_size=LIST_PAGE)
    breaks = []
    while True:
        page = stub.ListBreaks(request, metadata=metadata, timeout=DEADLINE_SECONDS)
        breaks += page.breaks
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    if not breaks:
        print("No breaks." if args.all else "No open breaks.")
    for b in breaks:
        state = f"{b.resolution} by {b.resolved_by}" if b.resolution else "open"
        subject = f"execution {b.exec_id}" if b.exec_id else f"order {b.order_id}" if b.order_id else "unread report"
        error_account = "; in the error account" if b.booked_to_error_account else ""
        print(f"{b.break_id:>6}  {b.kind:<17} {subject} of order {b.order_id or '?'} [{state}{error_account}]")
        print(f"        {b.detail}")
    return 0


def resolve_breaks(channel: grpc.Channel, args: argparse.Namespace, metadata: object) -> int:
    stub = operations_pb2_grpc.OperationsServiceStub(channel)
    resolution = (
        operations_pb2.BREAK_RESOLUTION_ACCEPT_VENUE if args.accept_venue else operations_pb2.BREAK_RESOLUTION_WRITE_OFF
    )
    if args.all:
        if not args.kind or args.break_id is not None:
            _fail("--all resolves every open break of one --kind, and takes no BREAK_ID")
        request = operations_pb2.ResolveBreaksRequest(kind=args.kind, resolution=resolution, note=args.note)
        answers = stub.ResolveBreaks(request, metadata=metadata, timeout=RECONCILE_DEADLINE_SECONDS).resolved
    else:
        if args.break_id is None:
            _fail("give a BREAK_ID, or --kind KIND --all")
        one = operations_pb2.ResolveBreakRequest(
            break_id=args.break_id, resolution=resolution, note=args.note, exec_id=args.exec_id or ""
        )
        answers = [stub.ResolveBreak(one, metadata=metadata, timeout=RECONCILE_DEADLINE_SECONDS)]
    for answer in answers:
        print(f"break {getattr(answer, 'break').break_id}: {answer.outcome}")
    if not answers:
        print(f"No open breaks of kind {args.kind}.")
    return 0


def redrive(channel: grpc.Channel, args: argparse.Namespace, metadata: object) -> int:
    stub = operations_pb2_grpc.OperationsServiceStub(channel)
    request = operations_pb2.RedriveOrderRequest(order_id=args.order_id, note=args.note or "")
    answer = stub.RedriveOrder(request, metadata=metadata, timeout=DEADLINE_SECONDS)
    print(f"order {answer.order_id}: {answer.outcome}")
    return 0


def reconcile(channel: grpc.Channel, args: argparse.Namespace, metadata: object) -> int:
    stub = operations_pb2_grpc.OperationsServiceStub(channel)
    request = operations_pb2.ReconcileRequest(trading_day=args.day or "")
    report = stub.Reconcile(request, metadata=metadata, timeout=RECONCILE_DEADLINE_SECONDS)
    print(report.text)
    return 0 if report.clean else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brokerctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default=os.environ.get("BROKER_OPERATIONS_TARGET", DEFAULT_TARGET))
    parser.add_argument("--token-file", type=Path, help="an operator's token (default: BROKER_TOKEN, or make run's)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    breaks = commands.add_parser("breaks", help="list and resolve breaks").add_subparsers(
        required=True, metavar="ACTION"
    )
    listing = breaks.add_parser("list", help="the open breaks, oldest first")
    listing.add_argument("--all", action="store_true", help="resolved ones too")
    listing.add_argument("--kind", help="of one kind only: malformed, refused, unknown_order, overfill, parked, ...")
    listing.set_defaults(run=list_breaks)
    resolving = breaks.add_parser("resolve", help="resolve a break (or every open break of a kind)")
    resolving.add_argument("break_id", nargs="?", type=int)
    how = resolving.add_mutually_exclusive_group(required=True)
    how.add_argument("--accept-venue", action="store_true", help="the drop copy is right: book its execution")
    how.add_argument("--write-off", action="store_true", help="the drop copy has no such execution")
    resolving.add_argument("--note", required=True, help="why, for the audit")
    resolving.add_argument("--kind")
    resolving.add_argument("--all", action="store_true")
    resolving.add_argument("--exec-id", help="for a break whose report could not be read: its execution")
    resolving.set_defaults(run=resolve_breaks)

    orders = commands.add_parser("orders", help="repair an order").add_subparsers(required=True, metavar="ACTION")
    redriving = orders.add_parser("redrive", help="ask the venue again and book what it says")
    redriving.add_argument("order_id")
    redriving.add_argument("--note", help="why, for the audit")
    redriving.set_defaults(run=redrive)

    reconciling = commands.add_parser("reconcile", help="prove the books, against the venue's drop copy")
    reconciling.add_argument("--day", help="YYYY-MM-DD (default: today in New York)")
    reconciling.set_defaults(run=reconcile)
    risk.add_commands(commands)
    return parser


def _token(token_file: Path | None) -> str:
    if token_file is None and (token := os.environ.get("BROKER_TOKEN")):
        return token
    return (token_file or LOCAL_TOKEN_FILE).read_text().strip()


def _fail(message: str) -> NoReturn:
    print(f"brokerctl: {message}", file=sys.stderr)
    sys.exit(2)
