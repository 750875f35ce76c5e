"""The S3 gateway's one door (deploy/team.sh s3): runs SeaweedFS as a child, every one of its ports on the loopback,
and forwards one TCP address to its S3 port, so that nothing but the S3 API is reachable from elsewhere — not the
master, volume server or filer (HTTP or gRPC), nor the gateway's own gRPC port.

    python s3_front.py LISTEN_HOST:PORT S3_PORT -- weed server ...

Bytes pass unchanged in both directions (an S3 signature covers the Host header the client sent). SIGTERM or SIGINT
stops the forwarding, then SeaweedFS (SIGTERM, SIGKILL after STOP_TIMEOUT_S); when SeaweedFS exits, so does this,
with its exit status, once it has removed the unix sockets SeaweedFS leaves in /tmp. Standard library only: it runs
in the team image beside `weed`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

CHUNK_BYTES = 1 << 16
STOP_TIMEOUT_S = 10.0
SOCKET_DIR = Path("/tmp")  # where SeaweedFS puts its unix sockets, whatever TMPDIR says
GRPC_OFFSET = 10000  # SeaweedFS's gRPC port of a service: its port + this


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy reader to writer until end of stream, then pass the end on (a half close)."""
    try:
        while chunk := await reader.read(CHUNK_BYTES):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:  # either side reset the connection: the other copy ends too
        pass


async def _forward(s3_port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One client connection, joined to a new connection to the gateway on the loopback."""
    try:
        inner_reader, inner_writer = await asyncio.open_connection("127.0.0.1", s3_port)
    except OSError:  # SeaweedFS is still starting (or stopping): the client retries
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, inner_writer), _pipe(inner_reader, writer))
    finally:
        writer.close()
        inner_writer.close()


def remove_sockets(command: list[str]) -> None:
    """Remove the unix sockets SeaweedFS names after its services' ports (seaweedfs-NAME-PORT.sock, also for their
    gRPC ports), the ports read from the command's `-….port=N` flags: it leaves them behind when it stops."""
    ports = set()
    for arg in command:
        flag, _, value = arg.partition("=")
        if flag.startswith("-") and flag.endswith("port") and value.isdigit() and int(value) > 0:
            ports |= {int(value), int(value) + GRPC_OFFSET}
    for port in ports:
        for sock in SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


async def main(argv: list[str]) -> int:
    """Run SeaweedFS and the forwarding until either ends; SeaweedFS's exit status (0 when stopped by a signal)."""
    if len(argv) < 4 or argv[2] != "--" or ":" not in argv[0] or not argv[1].isdigit():
        sys.exit("usage: s3_front.py LISTEN_HOST:PORT S3_PORT -- COMMAND...")
    host, _, port = argv[0].rpartition(":")
    s3_port, command = int(argv[1]), argv[3:]
    weed = await asyncio.create_subprocess_exec(*command)
    server = await asyncio.start_server(lambda r, w: _forward(s3_port, r, w), host, int(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ended, stopped = asyncio.ensure_future(weed.wait()), asyncio.ensure_future(stop.wait())
    await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.close()
    stopped_here = weed.returncode is None
    if stopped_here:
        weed.terminate()
        try:
            await asyncio.wait_for(weed.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            weed.kill()
            await weed.wait()
    remove_sockets(command)
    return 0 if stopped_here else weed.returncode


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
