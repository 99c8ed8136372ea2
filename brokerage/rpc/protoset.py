"""The contracts as a protobuf descriptor set, for grpcurl where reflection is off (production's OrderService and
CallbackService): `python -m brokerage.rpc.protoset broker.protoset` (in the image too), then
`grpcurl -protoset broker.protoset ...`. Built from the generated modules the services run, so it is always the
contract they serve."""

from __future__ import annotations

import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2

from brokerage.proto import callback_pb2, exchange_pb2, execution_pb2, operations_pb2, orders_pb2

CONTRACTS = (orders_pb2, execution_pb2, callback_pb2, operations_pb2, exchange_pb2, health_pb2)


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Every contract's file and the files they import, each after its imports."""
    ordered: list[FileDescriptor] = []

    def add(file: FileDescriptor) -> None:
        if file in ordered:
            return
        for dependency in file.dependencies:
            add(dependency)
        ordered.append(file)

    for module in CONTRACTS:
        add(module.DESCRIPTOR)
    files = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        file.CopyToProto(files.file.add())
    return files


def main() -> None:
    data = descriptor_set().SerializeToString()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main()
