"""Real TCP in many network namespaces from one process, for `benchmarks/policy.py`.

A socket belongs to the network namespace its creating thread was in when it was
made, and keeps it.  `Netns.socket(ns)` enters the named namespace
(`/var/run/netns/NAME`, `setns(2)` on the calling thread), makes a socket and comes
back, so one asyncio loop (`Engine`, in a thread of its own) can serve and connect
in 54 namespaces at once, with no process per host and no interpreter start-up in
the measurements.

* `serve(ns, ip, ports, name)`: TCP servers answering each line with
  "<name>:<port> <line>" (what tests/lab/netcheck.py `serve` answers).
* `run_plan(plan, concurrency)`: every `Conn` of the plan once, `concurrency` at a
  time: connect, one line, its answer, close.  A `Tally` of ok / failed.
* `until_open(conns, timeout, give_up)`: each `Conn` tried again and again (a new
  connection each time, `timeout` to be answered) until one is answered; when,
  in `time.time()`, for each (a future: the caller acts meanwhile).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Coroutine, NamedTuple

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Netns:
    """Sockets made inside named network namespaces (ip netns add NAME)."""

    def __init__(self) -> None:
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.fds: dict[str, int] = {}
        self.lock = threading.Lock()

    def socket(self, ns: str) -> socket.socket:
        """A non-blocking TCP socket in `ns` (the caller's thread comes back home)."""
        with self.lock:
            fd = self.fds.get(ns)
            if fd is None:
                fd = self.fds[ns] = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            _setns(fd)
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                _setns(self.home)
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
        os.close(self.home)


class Conn(NamedTuple):
    """One connection to make: from namespace `ns` to ip:port; its answer starts with `expect`."""
    ns: str
    ip: str
    port: int
    expect: str


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0


class Engine:
    """An asyncio loop in a thread: the servers live there; `run` waits for a coroutine."""

    def __init__(self) -> None:
        self.netns = Netns()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="policy-traffic",
                                       daemon=True)
        self.thread.start()
        self.servers: list[asyncio.base_events.Server] = []

    def run(self, coro: Coroutine, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # -- servers --------------------------------------------------------------------------
    def serve(self, ns: str, ip: str, ports: list[int], name: str) -> None:
        self.run(self._serve(ns, ip, ports, name), 30)

    async def _serve(self, ns: str, ip: str, ports: list[int], name: str) -> None:
        for port in ports:
            sock = self.netns.socket(ns)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
            sock.listen(1024)

            async def answer(reader, writer, port=port):
                try:
                    line = await asyncio.wait_for(reader.readline(), 10)
                    writer.write(f"{name}:{port} ".encode() + line)
                    await writer.drain()
                except (OSError, asyncio.TimeoutError):
                    pass
                finally:
                    writer.close()
            self.servers.append(await asyncio.start_server(answer, sock=sock))

    # -- clients --------------------------------------------------------------------------
    async def attempt(self, conn: Conn, timeout: float) -> bool:
        """One connection: connect, a line, its answer (within `timeout` in all)."""
        sock = self.netns.socket(conn.ns)
        writer = None
        try:
            async with asyncio.timeout(timeout):
                await self.loop.sock_connect(sock, (conn.ip, conn.port))
                reader, writer = await asyncio.open_connection(sock=sock)
                writer.write(b"hello\n")
                line = await reader.readline()
            return line.decode(errors="replace").startswith(conn.expect)
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            if writer is not None:
                writer.close()
            else:
                sock.close()

    def run_plan(self, plan: list[Conn], concurrency: int, timeout: float = 5.0) -> Tally:
        return self.run(self._run_plan(plan, concurrency, timeout))

    async def _run_plan(self, plan: list[Conn], concurrency: int, timeout: float) -> Tally:
        tally, gate = Tally(), asyncio.Semaphore(concurrency)
        t0 = time.perf_counter()

        async def one(conn: Conn) -> None:
            async with gate:
                if await self.attempt(conn, timeout):
                    tally.ok += 1
                else:
                    tally.failed += 1
        await asyncio.gather(*(one(c) for c in plan))
        tally.seconds = time.perf_counter() - t0
        return tally

    def until_open(self, conns: list[Conn], timeout: float, give_up: float
                   ) -> "concurrent.futures.Future[list[tuple[float, float] | None]]":
        """Started now, answered later: for each conn, (start of the attempt answered,
        start of the one before it), wall clock, or None if none was answered within
        `give_up` seconds."""
        return asyncio.run_coroutine_threadsafe(self._until_open(conns, timeout, give_up),
                                                self.loop)

    async def _until_open(self, conns: list[Conn], timeout: float, give_up: float):
        end = time.monotonic() + give_up

        async def one(conn: Conn):
            before = time.time()
            while time.monotonic() < end:
                at = time.time()
                if await self.attempt(conn, timeout):
                    return at, before
                before = at
                await asyncio.sleep(0.005)
            return None
        return list(await asyncio.gather(*(one(c) for c in conns)))

    def close(self) -> None:
        async def stop():
            for s in self.servers:
                s.close()
        try:
            self.run(stop(), 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.netns.close()
