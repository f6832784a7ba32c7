"""hub-shadow-agent: the process on a shadow slot host.

Python standard library only.  `main` parses the flags, opens the socket (bound to
the interface) and runs the `Agent` (agent.py) in the agents' `select` loop
(`controller.agents.loop`) until SIGTERM or SIGINT, which end the instance, remove
its addresses and exit 0.  docs/shadow-agent.md is its manual.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from controller.agents import flags
from controller.agents.channel import key_bytes
from controller.agents.loop import run, sender
from controller.agents.shadow.agent import DEFAULT_PORT, Agent, log
from controller.agents.shadow.host import PopenLauncher, SysStats
from controller.rap.addresses import IpAddresses


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = flags.parser("hub-shadow-agent", "Run shadow instances of an appliance on this slot, "
                     "as the hub asks, and report their load and findings.", id_flag="slot",
                     id_help="the slot id", key_help="the slot's key", port=DEFAULT_PORT,
                     port_help="the hub's shadow agent port",
                     server_help="the hub's address for this slot (channel.server of the slot)",
                     interface_help="the interface facing the hub: the instance's addresses "
                                    "go there")
    return flags.parse(p, argv, "slot")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sock = flags.open_channel("hub-shadow-agent", args, log)
    if sock is None:
        return 1
    agent = Agent(args.slot, key_bytes(args.key), args.server, args.port, args.interface,
                  IpAddresses(args.interface, shlex.split(args.ip_command)), PopenLauncher(),
                  SysStats(args.interface), sender(sock, log))
    log.info("slot %s on %s, server %s:%d", args.slot, args.interface, args.server, args.port)
    with sock:
        return run(agent, sock)


if __name__ == "__main__":
    sys.exit(main())
