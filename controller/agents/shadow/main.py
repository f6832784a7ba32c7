"""hub-shadow-agent: the process on a shadow slot host.

Python standard library only.  `main` parses the flags, opens the socket (bound to
the interface) and runs the `Agent` (agent.py) in the agents' `select` loop
(`controller.agents.loop`) until SIGTERM or SIGINT, which end the instance, remove
its addresses and exit 0.  docs/shadow-agent.md is its manual.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from ipaddress import IPv4Address

from controller.agents.channel import MAX_ID, key_bytes
from controller.agents.loop import open_socket, run, sender
from controller.agents.shadow.agent import DEFAULT_PORT, Agent, log
from controller.agents.shadow.host import PopenLauncher, SysStats
from controller.rap.addresses import IpAddresses


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hub-shadow-agent", description=(
        "Run shadow instances of an appliance on this slot, as the hub asks, and report "
        "their load and findings."))
    p.add_argument("--server", required=True, type=IPv4Address, metavar="ADDR",
                   help="the hub's address for this slot (channel.server of the slot)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="N",
                   help=f"the hub's shadow agent port (default {DEFAULT_PORT})")
    p.add_argument("--slot", required=True, metavar="ID", help="the slot id")
    p.add_argument("--key", required=True, metavar="KEY", help="the slot's key")
    p.add_argument("--interface", required=True, metavar="IFNAME",
                   help="the interface facing the hub: the instance's addresses go there")
    p.add_argument("--ip-command", default="ip", metavar="CMD",
                   help="the iproute2 command to run, split like a shell line (default: ip)")
    p.add_argument("--log-level", default="info", metavar="LEVEL",
                   choices=("debug", "info", "warning", "error"),
                   help="debug also logs every datagram dropped (default: info)")
    args = p.parse_args(argv)
    try:
        key_bytes(args.key)
        args.slot.encode("ascii")
    except UnicodeEncodeError:
        p.error("--slot and --key are ASCII")
    if not 1 <= len(args.slot) <= MAX_ID:
        p.error(f"--slot is 1..{MAX_ID} characters")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="hub-shadow-agent: %(message)s")
    try:
        sock = open_socket(args.interface)
    except OSError as exc:
        log.error("cannot open a socket on %s: %s", args.interface, exc)
        return 1
    agent = Agent(args.slot, key_bytes(args.key), args.server, args.port, args.interface,
                  IpAddresses(args.interface, shlex.split(args.ip_command)), PopenLauncher(),
                  SysStats(args.interface), sender(sock, log))
    log.info("slot %s on %s, server %s:%d", args.slot, args.interface, args.server, args.port)
    with sock:
        return run(agent, sock)


if __name__ == "__main__":
    sys.exit(main())
