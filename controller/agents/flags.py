"""The command line the in-band agents share (hub-rap, hub-shadow-agent).

Python standard library only.  `parser` has the flags every agent takes: the hub's
address and port, the agent's id (``--resource`` or ``--slot``) and key, the
interface facing the hub, the iproute2 command and the log level; `parse` also
refuses an id or key that is not ASCII and an id longer than the channel allows;
`open_channel` sets up the log and the socket bound to the interface (None, the
reason logged, when it cannot be opened).
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from ipaddress import IPv4Address

from controller.agents.channel import MAX_ID, key_bytes
from controller.agents.loop import open_socket


def parser(prog: str, description: str, *, id_flag: str, id_help: str, key_help: str,
           server_help: str, port: int, port_help: str,
           interface_help: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--server", required=True, type=IPv4Address, metavar="ADDR",
                   help=server_help)
    p.add_argument("--port", type=int, default=port, metavar="N",
                   help=f"{port_help} (default {port})")
    p.add_argument(f"--{id_flag}", required=True, metavar="ID", help=id_help)
    p.add_argument("--key", required=True, metavar="KEY", help=key_help)
    p.add_argument("--interface", required=True, metavar="IFNAME", help=interface_help)
    p.add_argument("--ip-command", default="ip", metavar="CMD",
                   help="the iproute2 command to run, split like a shell line (default: ip)")
    p.add_argument("--log-level", default="info", metavar="LEVEL",
                   choices=("debug", "info", "warning", "error"),
                   help="debug also logs every datagram dropped (default: info)")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None,
          id_flag: str) -> argparse.Namespace:
    """The flags, with the id (`id_flag`) and the key checked as the channel needs them."""
    args = p.parse_args(argv)
    ident = getattr(args, id_flag)
    try:
        key_bytes(args.key)
        ident.encode("ascii")
    except UnicodeEncodeError:
        p.error(f"--{id_flag} and --key are ASCII")
    if not 1 <= len(ident) <= MAX_ID:
        p.error(f"--{id_flag} is 1..{MAX_ID} characters")
    return args


def open_channel(prog: str, args: argparse.Namespace,
                 log: logging.Logger) -> socket.socket | None:
    """The log set up as `args.log_level` says, and the socket on `args.interface`."""
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format=f"{prog}: %(message)s")
    try:
        return open_socket(args.interface)
    except OSError as exc:
        log.error("cannot open a socket on %s: %s", args.interface, exc)
        return None
