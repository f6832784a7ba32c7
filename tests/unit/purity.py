"""The unit tier is pure: no root, no Mininet, no daemons, no namespaces, no real network.

A unit test (or the code it runs) that tries one of these fails at once with
`ImpureTest`, naming what it tried and where such a test belongs:

* starting a refused program (`ip`, `mn`, `dhclient`, any `ovs-*` or `ovsdb-*`,
  the project's `scripts/`, ...), directly, through a shell, or behind `sudo`/
  `env`/`timeout`; a Python child (`python -c "import mininet"`) counts too.
  Other programs (`sys.executable` running a project script) are fine;
* importing Mininet, while a unit module is collected or while a unit test
  runs (Mininet modules another tier already loaded are hidden for the test);
* a raw or packet socket, a bind to a privileged port or to a specific
  non-loopback address (the wildcard on a free port is fine: it needs neither
  root nor a network), a connect or send to a non-loopback address or to a
  host name other than localhost, a connect to a system daemon's unix socket
  (`/run/...`, e.g. ovsdb-server's);
* asking whether it is root: `os.geteuid()` answers nobody's id, so the tier
  behaves as it would for a developer without root (`os.getuid()` is left
  alone: pytest's own temporary directories check it).

Tests that need any of this live in tests/trace (Open vSwitch and daemons, no
hosts) or tests/lab (namespaces, Mininet, real traffic).
"""
from __future__ import annotations

import importlib.abc
import ipaddress
import os
import re
import shlex
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

UNIT = Path(__file__).resolve().parent
SCRIPTS = UNIT.parents[1] / "scripts"
NOBODY = 65534

REFUSED_PROGRAMS = frozenset({
    "ip", "mn", "mnexec", "dhclient", "tc", "ethtool", "sudo", "su", "nsenter", "unshare",
    "ping", "iperf", "iperf3", "tcpdump", "strongswan", "ipsec", "etcd", "systemctl",
})
REFUSED_PREFIXES = ("ovs-", "ovsdb-")
REFUSED_MODULES = frozenset({"mininet"})
WRAPPERS = frozenset({"env", "timeout", "nice", "nohup", "setsid", "stdbuf", "exec", "command",
                      "setpriv", "runuser", "chroot"})
SHELLS = frozenset({"sh", "bash", "dash", "zsh"})
SHELL_SEPARATORS = re.compile(r"[;&|()\n`]+|\$\(")
MININET_IMPORT = re.compile(r"\b(import|from)\s+mininet\b")
DAEMON_SOCKETS = ("/run/", "/var/run/")
WHERE = "move it to tests/trace (Open vSwitch, daemons) or tests/lab (namespaces, Mininet, traffic)"


class ImpureTest(Exception):
    """A unit test tried something only the trace or lab tier may do.

    Not an ImportError or OSError, so no `except` meant for a missing module
    or a network failure swallows it.
    """

    def __init__(self, what: str) -> None:
        super().__init__(f"the unit tier is pure, but this test {what}: {WHERE}")


# ------------------------------------------------------------------ programs
def _words(argv: list[str]) -> Iterator[str]:
    """The program names a command line would run (wrappers and shell -c looked through)."""
    if not argv:
        return
    name = os.path.basename(argv[0])
    yield argv[0]
    rest = argv[1:]
    if name in WRAPPERS:   # every operand may be the program (options are not parsed)
        operands = [w for w in rest if not w.startswith("-") and "=" not in w
                    and not re.fullmatch(r"[0-9.]+[smhd]?", w)]
        for i in range(len(operands)):
            yield from _words(operands[i:])
    elif name in SHELLS and "-c" in rest and rest.index("-c") + 1 < len(rest):
        yield from _shell_words(rest[rest.index("-c") + 1])


def _shell_words(script: str) -> Iterator[str]:
    for part in SHELL_SEPARATORS.split(script):
        try:
            argv = [w for w in shlex.split(part) if not re.fullmatch(r"\w+=.*", w)]
        except ValueError:
            argv = part.split()
        yield from _words(argv)


def refused_program(argv: list[str]) -> str | None:
    """Why `argv` may not run in a unit test, or None."""
    for word in _words(argv):
        name = os.path.basename(word)
        if name in REFUSED_PROGRAMS or name.startswith(REFUSED_PREFIXES):
            return f"runs {name} ({shlex.join(argv)})"
        if Path(word).resolve().parent == SCRIPTS:
            return f"runs the project's scripts/{name} ({shlex.join(argv)})"
    if os.path.basename(argv[0]).startswith("python") and "-c" in argv[:-1]:
        if MININET_IMPORT.search(argv[argv.index("-c") + 1]):
            return f"imports Mininet in a child Python ({shlex.join(argv)})"
    return None


def _argv(args: Any, shell: bool) -> list[str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        text = os.fsdecode(args)
        return ["sh", "-c", text] if shell else [text]
    argv = [os.fsdecode(a) for a in args]
    return ["sh", "-c", shlex.join(argv)] if shell else argv


def _check(argv: list[str]) -> None:
    why = refused_program(argv)
    if why:
        raise ImpureTest(why)


# ------------------------------------------------------------------- sockets
def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def _inet(sock: socket.socket) -> bool:
    return sock.family in (socket.AF_INET, socket.AF_INET6)


def _check_bind(sock: socket.socket, address: Any) -> None:
    if not _inet(sock):
        return
    host, port = address[0], address[1]
    if 0 < port < 1024:
        raise ImpureTest(f"binds privileged port {port} (needs root)")
    if not (_is_loopback(host) or _is_wildcard(host)):
        raise ImpureTest(f"binds {host}:{port}, not a loopback address")


def _check_peer(sock: socket.socket, address: Any) -> None:
    if _inet(sock):
        host = address[0]
        if not (_is_loopback(host) or host in ("0.0.0.0", "::")):
            raise ImpureTest(f"talks to {host}:{address[1]}, not a loopback address")
    elif sock.family == socket.AF_UNIX and isinstance(address, (str, bytes)):
        path = os.fsdecode(address)
        if path.startswith(DAEMON_SOCKETS):
            raise ImpureTest(f"connects to the system daemon socket {path}")


# --------------------------------------------------------------------- Mininet
class _RefuseImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in REFUSED_MODULES:
            raise ImpureTest(f"imports {name}")
        return None


@contextmanager
def refusing_imports() -> Iterator[None]:
    """While inside: importing a refused module raises (loaded ones are hidden meanwhile)."""
    hidden = {k: sys.modules.pop(k) for k in list(sys.modules)
              if k.partition(".")[0] in REFUSED_MODULES}
    finder = _RefuseImports()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        sys.modules.update(hidden)


# -------------------------------------------------------------------- pytest
def _under_unit(path: Path | None) -> bool:
    return path is not None and UNIT in Path(path).resolve().parents


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """Importing a unit test module must not import Mininet."""
    if not isinstance(collector, pytest.Module) or not _under_unit(collector.path):
        return (yield)
    with refusing_imports():
        return (yield)


@pytest.fixture(autouse=True)
def pure(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every unit test runs under the rules above."""
    if not _under_unit(request.path):
        yield
        return
    popen_init = subprocess.Popen.__init__

    def guarded_popen(self, args, *rest, **kw):
        _check(_argv(args, kw.get("shell", False)))
        if kw.get("executable"):
            _check([os.fsdecode(kw["executable"])])
        popen_init(self, args, *rest, **kw)

    def guarded_system(command):
        _check(["sh", "-c", os.fsdecode(command)])
        return system(command)

    def guarded_exec(real):
        def run(path, args, *rest):
            _check([os.fsdecode(path), *[os.fsdecode(a) for a in list(args)[1:]]])
            return real(path, args, *rest)
        return run

    def guarded_spawn(real):
        def run(path, argv, env, **kw):
            _check([os.fsdecode(path), *[os.fsdecode(a) for a in list(argv)[1:]]])
            return real(path, argv, env, **kw)
        return run

    system = os.system
    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_popen)
    monkeypatch.setattr(os, "system", guarded_system)
    for name in ("execv", "execve"):
        monkeypatch.setattr(os, name, guarded_exec(getattr(os, name)))
    for name in ("posix_spawn", "posix_spawnp"):
        monkeypatch.setattr(os, name, guarded_spawn(getattr(os, name)))
    _guard_sockets(monkeypatch)
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY)
    with refusing_imports():
        yield


def _guard_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = socket.socket
    init, bind, connect, connect_ex, sendto = (cls.__init__, cls.bind, cls.connect,
                                               cls.connect_ex, cls.sendto)

    def guarded_init(self, family=-1, type=-1, proto=-1, fileno=None):
        if fileno is None:
            if family == getattr(socket, "AF_PACKET", None):
                raise ImpureTest("opens a packet socket (needs root)")
            if type & ~(socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC) == socket.SOCK_RAW:
                raise ImpureTest("opens a raw socket (needs root)")
        init(self, family, type, proto, fileno)

    def guarded_bind(self, address):
        _check_bind(self, address)
        return bind(self, address)

    def guarded_connect(self, address):
        _check_peer(self, address)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        _check_peer(self, address)
        return connect_ex(self, address)

    def guarded_sendto(self, data, *args):
        _check_peer(self, args[-1])
        return sendto(self, data, *args)

    monkeypatch.setattr(cls, "__init__", guarded_init)
    monkeypatch.setattr(cls, "bind", guarded_bind)
    monkeypatch.setattr(cls, "connect", guarded_connect)
    monkeypatch.setattr(cls, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(cls, "sendto", guarded_sendto)
