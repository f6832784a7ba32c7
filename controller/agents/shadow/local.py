"""Talking to the shadow service on this host, and only to it: a socket bound to the
destination address itself.

Python standard library only.  `local_socket` binds to the destination (a production
address the instance holds), which fails unless this host holds it: the kernel then
delivers over its loopback path, so nothing sent through it leaves the host.
`open_socket` adds the check that the address is one of the instance's (`Refused`
otherwise, nothing sent); `exchange` sends one input and waits for the first bytes
of an answer (the `Outcome`); `accepts` says whether a TCP service still takes
connections; `group_alive` whether the image's process group still has a process.
Fuzzing (fuzzing.py) and the replays of Performance_Profiling (replay.py) use it.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Collection
from ipaddress import IPv4Address
from typing import NamedTuple

from controller.agents.shadow.ids import Endpoint
from controller.agents.shadow.mutate import Target

ANSWER = 4096           # bytes of an answer read (what `error_pattern` is matched on)
SLICE = 0.1             # s: a wait on a socket is cut in slices, to see `stop` in time
ANSWERED, CLOSED, RESET, TIMEOUT, REFUSED, ACCEPTED, STOPPED = (
    "answered", "closed", "reset", "timeout", "refused", "accepted", "stopped")


def local_socket(protocol: str, address: str) -> socket.socket:
    """A TCP or UDP socket bound to `address` (any port): OSError unless this host
    holds the address, so what it sends to that address stays on the host."""
    sock = socket.socket(socket.AF_INET,
                         socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM)
    try:
        sock.bind((address, 0))
    except OSError:
        sock.close()
        raise
    return sock


class Refused(Exception):
    """A destination the profile may not send to: nothing was sent."""


class Outcome(NamedTuple):
    kind: str               # ANSWERED, CLOSED, RESET, TIMEOUT, REFUSED or STOPPED
    answer: bytes = b""


def open_socket(target: Target, allowed: Collection[IPv4Address]) -> tuple[socket.socket, Endpoint]:
    """A socket toward `target` and its local end.  `target.address` must be one of
    `allowed` (the instance's), and the socket is bound to that very address, which
    fails unless this host holds it: the input goes over loopback, never out."""
    if target.address not in allowed:
        raise Refused(f"{target.address} is not an address of the instance")
    try:
        sock = local_socket(target.protocol, str(target.address))
    except OSError as exc:
        raise Refused(f"{target.address} is not held by this host ({exc.strerror})") from None
    address, port = sock.getsockname()
    return sock, Endpoint(IPv4Address(address), port)


def exchange(sock: socket.socket, target: Target, data: bytes, timeout: float,
             stop: threading.Event) -> Outcome:
    """Send `data` (TCP: then a FIN, so a service waiting for more sees the end) and
    wait up to `timeout` s in all for the first bytes of an answer."""
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        sock.connect((str(target.address), target.port))
        if target.protocol == "tcp":
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        else:
            sock.send(data)
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return Outcome(TIMEOUT)
            sock.settimeout(min(left, SLICE))
            try:
                answer = sock.recv(ANSWER)
            except TimeoutError:
                continue
            return Outcome(ANSWERED, answer) if answer else Outcome(CLOSED)
        return Outcome(STOPPED)
    except ConnectionRefusedError:
        return Outcome(REFUSED)
    except (ConnectionResetError, BrokenPipeError):
        return Outcome(RESET)
    except TimeoutError:
        return Outcome(TIMEOUT)
    except OSError:                         # unreachable, say: nothing to fuzz there
        return Outcome(REFUSED)


def accepts(target: Target, allowed: Collection[IPv4Address], timeout: float) -> str:
    """Whether the TCP service takes a new connection: ACCEPTED, REFUSED or TIMEOUT."""
    sock, _ = open_socket(target, allowed)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((str(target.address), target.port))
        except ConnectionRefusedError:
            return REFUSED
        except TimeoutError:
            return TIMEOUT
    return ACCEPTED


def group_alive(pgid: int) -> bool:
    """Whether the process group `pgid` still has a process."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
