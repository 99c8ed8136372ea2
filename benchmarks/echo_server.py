"""A bare grpc.aio echo server, the reference the OrderService is measured against.

`python -m benchmarks.echo_server --port N` serves `/bench.Echo/Echo`, which returns the request bytes as they
came: no protobuf, interceptors, health or reflection, so a call costs only what grpc.aio itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from grpc import aio

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


async def echo(request: bytes, context: aio.ServicerContext) -> bytes:
    """Returns the request unchanged (no (de)serializers: the handler sees raw bytes)."""
    return request


def echo_handler() -> grpc.GenericRpcHandler:
    """The generic handler of bench.Echo/Echo with identity (de)serialization."""
    method = grpc.unary_unary_rpc_method_handler(echo)
    return grpc.method_handlers_generic_handler(SERVICE, {"Echo": method})


async def serve(host: str, port: int) -> None:
    """Serves until SIGTERM or SIGINT, then stops at once."""
    server = aio.server()
    server.add_generic_rpc_handlers((echo_handler(),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
