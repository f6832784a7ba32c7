"""Requests replayed to the shadow service on this host, timed: never off the host.

Python standard library only.  `replay(request, timeout)` sends a `Request` to its
server (a production address this host holds, and port) from a socket bound to that
very address: the kernel delivers it over its loopback path, and the bind fails if
the address is not on this host, so nothing is sent then.  TCP: connect, (if
production spoke first, wait for the shadow's first bytes), send, shut the write
side, read to the end or `timeout`; the latency is from the last byte sent to the
first byte of the answer.  UDP: send, wait for one datagram.  `Replayer` runs the
replays in a worker thread: a bounded queue (a request that finds it full is
dropped and counted), at most `rate` replays a second (`Pacer`).
Performance_Profiling (performance.py) is its user; docs/shadow-agent.md says
what this guarantees and what it does not.
"""
from __future__ import annotations

import math
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from controller.agents.shadow.ids import Endpoint
from controller.agents.shadow.local import local_socket

QUEUE = 256                 # requests waiting for the worker at most
READ = 65536                # bytes read at a time


@dataclass(frozen=True)
class Request:
    """What a client sent production before its answer, to be sent the shadow."""
    protocol: str                           # "tcp" or "udp"
    server: Endpoint                        # a production address and port
    payload: bytes
    server_first: bool = False              # TCP: production spoke before the client


@dataclass(frozen=True)
class Answer:
    """What a replay got: `latency_ms` None when it failed (`error` says why)."""
    latency_ms: float | None
    size: int = 0                           # answer bytes
    seconds: float = 0.0                    # from the request sent to the answer's end
    error: str | None = None


def replay(request: Request, timeout: float,
           clock: Callable[[], float] = time.monotonic) -> Answer:
    """Send `request` to its server from a socket bound to the server's own address
    (so only to this host) and time the answer."""
    deadline = clock() + timeout
    target = (str(request.server.address), request.server.port)
    try:
        with local_socket(request.protocol, target[0]) as sock:   # EADDRNOTAVAIL unless local
            sock.settimeout(timeout)
            sock.connect(target)
            return _exchange(sock, request, deadline, clock)
    except OSError as exc:
        return Answer(None, error=str(exc) or type(exc).__name__)


def _exchange(sock: socket.socket, request: Request, deadline: float,
              clock: Callable[[], float]) -> Answer:
    tcp = request.protocol == "tcp"
    began = clock()
    if tcp and request.server_first and _read(sock, deadline, clock) is None:
        return _unanswered(began, deadline, clock, "closed before its banner")
    sock.sendall(request.payload)
    sent = clock()
    if tcp:
        sock.shutdown(socket.SHUT_WR)
    first, size = None, 0
    for chunk in _chunks(sock, deadline, clock, until_end=tcp):
        first = clock() if first is None else first
        size += len(chunk)
    if first is None:
        return _unanswered(sent, deadline, clock, "closed without an answer")
    return Answer((first - sent) * 1000, size, clock() - sent)


def _unanswered(since: float, deadline: float, clock: Callable[[], float],
                why: str) -> Answer:
    """Nothing came: ended by the service before the deadline, an error; at the deadline,
    a latency of the time waited (production did answer)."""
    now = clock()
    if now < deadline:
        return Answer(None, seconds=now - since, error=why)
    return Answer((now - since) * 1000, 0, now - since)


def _chunks(sock: socket.socket, deadline: float, clock: Callable[[], float],
            until_end: bool) -> Iterable[bytes]:
    """What arrives before `deadline`: to the end of the stream, or one datagram."""
    while (chunk := _read(sock, deadline, clock)) is not None:
        yield chunk
        if not until_end:
            return


def _read(sock: socket.socket, deadline: float, clock: Callable[[], float]) -> bytes | None:
    """One read before `deadline`; None at the end, a reset or the deadline."""
    left = deadline - clock()
    if left <= 0:
        return None
    sock.settimeout(left)
    try:
        return sock.recv(READ) or None
    except (TimeoutError, ConnectionResetError):
        return None


class Pacer:
    """At most `rate` a second: `wait()` returns when the next one may go."""

    def __init__(self, rate: float, clock: Callable[[], float],
                 sleep: Callable[[float], Any]) -> None:
        self.gap, self.clock, self.sleep = 1.0 / rate, clock, sleep
        self.next = -math.inf

    def wait(self) -> None:
        now = self.clock()
        if now < self.next:
            self.sleep(self.next - now)
            now = self.next
        self.next = now + self.gap


class Replayer:
    """A worker thread replaying requests: `submit` never blocks (a full queue drops
    the request, counted in `drops`), `take` returns the answers so far."""

    def __init__(self, rate: float, timeout: float,
                 replay: Callable[[Request, float], Answer] = replay,
                 clock: Callable[[], float] = time.monotonic, size: int = QUEUE) -> None:
        self.timeout, self.replay = timeout, replay
        self.jobs: queue.Queue[Request] = queue.Queue(size)
        self.answers: queue.SimpleQueue[Answer] = queue.SimpleQueue()
        self.drops = 0
        self._stopping = threading.Event()
        self._pacer = Pacer(rate, clock, self._stopping.wait)
        self._thread = threading.Thread(target=self._run, name="performance-replay",
                                        daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> None:
        try:
            self.jobs.put_nowait(request)
        except queue.Full:
            self.drops += 1

    def take(self) -> list[Answer]:
        out: list[Answer] = []
        while True:
            try:
                out.append(self.answers.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        """End the worker (a replay under way ends at its timeout at most)."""
        self._stopping.set()
        self._thread.join(self.timeout + 1.0)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                request = self.jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            self._pacer.wait()
            if not self._stopping.is_set():
                self.answers.put(self.replay(request, self.timeout))
