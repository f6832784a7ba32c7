"""The slot host as the agent sees it: the image's process, the interface's counters and
the CPU time (and resident memory) of a process group.

Python standard library only.  `PopenLauncher` starts the image in its own process
group; `SysStats` reads `/sys/class/net/IF/statistics` and `/proc` (both roots may
be moved, for tests).  The state machine sees only the `Launcher`, `Process` and
`Stats` protocols.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

log = logging.getLogger("hub-shadow-agent")

STOP_GRACE = 3.0        # s between SIGTERM and SIGKILL of the image's process group
PR_SET_PDEATHSIG = 1


class InterfaceCounters(NamedTuple):
    packets: int        # received
    drops: int          # received and dropped (rx_dropped + rx_missed_errors)


class Stats(Protocol):
    def interface(self) -> InterfaceCounters: ...

    def cpu_seconds(self, pgid: int) -> float:
        """CPU time (user + system, children reaped included) of the group's processes."""


class Process(Protocol):
    @property
    def pid(self) -> int:
        """Also the id of its process group."""

    def poll(self) -> int | None:
        """Its exit status once it has exited, else None."""

    def stop(self) -> None:
        """End its whole process group (SIGTERM, then SIGKILL)."""


class Launcher(Protocol):
    def start(self, argv: Sequence[str]) -> Process:
        """Start `argv` (OSError if it cannot be)."""


class GroupProcess:
    """A process leading its own group; `stop` ends the group, waiting for it at most
    STOP_GRACE seconds after SIGTERM before SIGKILL."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def stop(self, grace: float = STOP_GRACE) -> None:
        if not _signal_group(self.pid, signal.SIGTERM):
            self.popen.wait()
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.popen.poll()                       # reap the leader as soon as it ends
            if self.popen.returncode is not None and not _signal_group(self.pid, 0):
                return
            time.sleep(0.02)
        if _signal_group(self.pid, signal.SIGKILL):
            log.info("process group %d still there after %.0f s: killed", self.pid, grace)
        self.popen.wait()


def _signal_group(pgid: int, signum: int) -> bool:
    """Signal the group; False if it has no process left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:         # a member that changed its user: still there
        return True
    return True


class PopenLauncher:
    """Starts the image as a child in its own process group, stdin from /dev/null, its
    output on the agent's; the child gets SIGKILL if the agent dies first (Linux)."""

    def __init__(self) -> None:
        self._prctl = _prctl()          # looked up here: the child only calls it

    def start(self, argv: Sequence[str]) -> GroupProcess:
        parent, prctl = os.getpid(), self._prctl

        def die_with_the_agent() -> None:           # in the child, before exec
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != parent:          # the agent is already gone
                    os._exit(1)

        return GroupProcess(subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                                             process_group=0, preexec_fn=die_with_the_agent))


def _prctl():
    """libc's prctl, or None where there is none."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


class SysStats:
    """`Stats` of one interface from sysfs, and of process groups from procfs."""

    def __init__(self, interface: str, sys_root: str = "/sys/class/net",
                 proc_root: str = "/proc") -> None:
        self.dir = Path(sys_root) / interface / "statistics"
        self.proc = Path(proc_root)
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")

    def interface(self) -> InterfaceCounters:
        def read(name: str) -> int:
            try:
                return int((self.dir / name).read_text())
            except (OSError, ValueError):
                return 0
        return InterfaceCounters(read("rx_packets"),
                                 read("rx_dropped") + read("rx_missed_errors"))

    def cpu_seconds(self, pgid: int) -> float:
        return sum(sum(int(f) for f in fields[11:15])        # utime stime cutime cstime
                   for fields in self._group(pgid)) / self.ticks

    def memory_bytes(self, pgid: int) -> int:
        """Resident memory of the group's processes (pages shared between them counted
        in each)."""
        return sum(int(fields[21]) for fields in self._group(pgid)) * self.page   # rss

    def _group(self, pgid: int) -> Iterator[list[str]]:
        """The /proc/PID/stat fields after `(comm)` of each process of the group."""
        for stat in self.proc.glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid pgrp ... : comm may hold spaces and parentheses
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue                        # gone meanwhile
            if int(fields[2]) == pgid:
                yield fields
