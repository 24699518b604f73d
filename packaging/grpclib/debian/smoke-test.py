"""Build-time check of the built grpclib against Debian's h2, multidict and protobuf.

Serves grpclib's own health service on a Unix socket and calls Health/Check through a Channel:
HTTP/2 (h2), metadata (multidict), the protobuf codec, client and server together.
"""

import asyncio
import os
import tempfile

import grpclib
from grpclib.client import Channel
from grpclib.health.service import Health
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.server import Server


async def main(path: str) -> None:
    server = Server([Health()])
    await server.start(path=path)
    try:
        channel = Channel(path=path)
        try:
            reply = await HealthStub(channel).Check(HealthCheckRequest())
        finally:
            channel.close()
    finally:
        server.close()
        await server.wait_closed()
    assert reply.status == HealthCheckResponse.SERVING, reply
    print(f"grpclib {grpclib.__version__}: health check: SERVING")


with tempfile.TemporaryDirectory() as tmp:
    asyncio.run(main(os.path.join(tmp, "grpc.sock")))
