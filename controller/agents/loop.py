"""The process around an agent's state machine: one UDP socket, a `select` loop, signals.

Python standard library only.  `hub-rap` (`controller.rap.client`) and
`hub-shadow-agent` (`controller.agents.shadow.main`) run their state machines
here: anything with `start()`, `deadline()`, `now()`, `receive(data, source)`,
`tick()` and `stop()` (a `Machine`).
"""
from __future__ import annotations

import logging
import select
import signal
import socket
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("agents.loop")

Send = Callable[[bytes, tuple[str, int]], None]


class Machine(Protocol):
    def start(self) -> None: ...

    def deadline(self) -> float | None:
        """When `tick` has something to do (on `now`'s clock); None: never."""

    def now(self) -> float: ...

    def receive(self, data: bytes, source: tuple[str, int]) -> None: ...

    def tick(self) -> None: ...

    def stop(self) -> None: ...


def open_socket(interface: str) -> socket.socket:
    """One UDP socket for the life of the process (the hub answers to its port): any
    address, an ephemeral port, broadcasts allowed, bound to the interface."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", 0))
    except OSError:
        sock.close()
        raise
    return sock


def sender(sock: socket.socket, logger: logging.Logger = log) -> Send:
    """`send(data, (ip, port))` on the socket; a failure is logged, not raised (no route
    yet, say: the machine's retransmission tries again)."""
    def send(data: bytes, to: tuple[str, int]) -> None:
        try:
            sock.sendto(data, to)
        except OSError as exc:
            logger.warning("send to %s:%d: %s", to[0], to[1], exc)
    return send


def run(machine: Machine, sock: socket.socket) -> int:
    """Until SIGTERM or SIGINT: datagrams to the machine, its timers; then `stop()`."""
    stopping: list[int] = []
    wake_r, wake_w = socket.socketpair()
    for end in (wake_r, wake_w):
        end.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stopping.append(number))
    machine.start()
    while not stopping:
        deadline = machine.deadline()
        timeout = None if deadline is None else max(0.0, deadline - machine.now())
        ready, _, _ = select.select([sock, wake_r], [], [], timeout)
        if wake_r in ready:
            wake_r.recv(64)
        if sock in ready:
            try:
                data, source = sock.recvfrom(65535)
            except OSError as exc:
                log.warning("receive: %s", exc)
            else:
                machine.receive(data, source)
        machine.tick()
    log.info("stopping (%s)", signal.Signals(stopping[0]).name)
    machine.stop()
    return 0
