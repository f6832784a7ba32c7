"""The `hub-rap` client's hands on the interface: the IPv4 addresses and the default route,
through iproute2's `ip` command.

Python standard library only (the client runs on a bare resource).  `IpAddresses`
runs `ip` for one interface; the client's state machine sees only the `Addresses`
protocol, so tests give it a fake that records the calls.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface
from typing import Protocol


class AddressError(RuntimeError):
    """An `ip` command failed; the message carries its command line and stderr."""


class Addresses(Protocol):
    """The interface's IPv4 addresses and its default route."""

    def ipv4(self) -> list[IPv4Interface]:
        """Every IPv4 address on the interface now."""

    def replace(self, address: IPv4Interface, valid: int, preferred: int) -> None:
        """Add the address (or update it) with these lifetimes, in seconds."""

    def change(self, address: IPv4Interface, valid: int, preferred: int) -> None:
        """Set the lifetimes of an address already on the interface."""

    def delete(self, address: IPv4Interface) -> None:
        """Remove the address."""

    def default_route(self, source: IPv4Address) -> None:
        """Send everything out of the interface, on link (the hub answers every ARP),
        from `source`: IPv4 ignores `preferred_lft 0` when it picks a source address."""


class IpAddresses:
    """`Addresses` through `ip` (iproute2) for the interface `dev`.

    `command` is the program and its leading arguments, `("ip",)` by default;
    anything that takes `ip`'s arguments does (tests pass a recorder)."""

    def __init__(self, dev: str, command: Sequence[str] = ("ip",)) -> None:
        self.dev = dev
        self.command = tuple(command)

    def ipv4(self) -> list[IPv4Interface]:
        out = self._run("-j", "-4", "addr", "show", "dev", self.dev)
        return [IPv4Interface(f"{info['local']}/{info['prefixlen']}")
                for link in json.loads(out or "[]") for info in link.get("addr_info", [])
                if info.get("family") == "inet"]

    def replace(self, address: IPv4Interface, valid: int, preferred: int) -> None:
        self._run("addr", "replace", str(address), "dev", self.dev, *_lifetimes(valid, preferred))

    def change(self, address: IPv4Interface, valid: int, preferred: int) -> None:
        self._run("addr", "change", str(address), "dev", self.dev, *_lifetimes(valid, preferred))

    def delete(self, address: IPv4Interface) -> None:
        self._run("addr", "del", str(address), "dev", self.dev)

    def default_route(self, source: IPv4Address) -> None:
        self._run("route", "replace", "default", "dev", self.dev, "src", str(source))

    def _run(self, *args: str) -> str:
        argv = [*self.command, *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AddressError(f"{' '.join(argv)}: {exc}") from None
        if done.returncode != 0:
            raise AddressError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
        return done.stdout


FOREVER = 0xFFFFFFFF     # a lifetime without end (`ip` says "forever")


def _lifetimes(valid: int, preferred: int) -> tuple[str, ...]:
    def text(seconds: int) -> str:
        return "forever" if seconds >= FOREVER else str(seconds)
    return ("valid_lft", text(valid), "preferred_lft", text(preferred))
