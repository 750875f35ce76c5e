"""The S3 gateway's one door (deploy/team.sh s3): runs SeaweedFS as a child, every one of its ports on the loopback,
and forwards one TCP address to its S3 port, so that nothing but the S3 API is reachable from elsewhere — not the
master, volume server or filer (HTTP or gRPC), nor the gateway's own gRPC port.

    python s3_front.py LISTEN_HOST:PORT S3_PORT -- weed server ...

Bytes pass unchanged in both directions (an S3 signature covers the Host header the client sent). SIGTERM or SIGINT
stops the forwarding, then SeaweedFS (SIGTERM, SIGKILL after STOP_TIMEOUT_S); when SeaweedFS exits, so does this,
with its exit status, once it has removed the unix sockets this SeaweedFS made in /tmp. Standard library only: it runs
in the team image beside `weed`.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def sockets(command: list[str]) -> dict[Path, int]:
    """The unix sockets now in SOCKET_DIR that SeaweedFS would name after the ports of `command`
    (seaweedfs-NAME-PORT.sock, for every `-….port…=N` flag and each such port + GRPC_OFFSET), with their inodes."""
    ports = set()
    for arg in command:
        flag, _, value = arg.partition("=")
        if flag.startswith("-") and "port" in flag and value.isdecimal() and int(value) > 0:
            ports |= {int(value), int(value) + GRPC_OFFSET}
    found = {}
    for port in ports:
        for sock in SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                found[sock] = sock.stat().st_ino
    return found


def remove_new_sockets(command: list[str], before: dict[Path, int]) -> None:
    """Remove the sockets of `command`'s ports that were not there, as they were, before SeaweedFS started (those
    it made and leaves behind when it stops; never another instance's)."""
    for sock, inode in sockets(command).items():
        if before.get(sock) != inode:
            sock.unlink(missing_ok=True)


async def main(argv: list[str]) -> int:
    """Run SeaweedFS and the forwarding until either ends; SeaweedFS's exit status (0 when stopped by a signal)."""
    if len(argv) < 4 or argv[2] != "--" or ":" not in argv[0] or not argv[1].isdigit():
        sys.exit("usage: s3_front.py LISTEN_HOST:PORT S3_PORT -- COMMAND...")
    host, _, port = argv[0].rpartition(":")
    s3_port, command = int(argv[1]), argv[3:]
    before = sockets(command)
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
    remove_new_sockets(command, before)
    return 0 if stopped_here else weed.returncode


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
