"""What a hubctl command group is built with.

A feature's ``register(subparsers, common)`` (its registry entry's ``cli``)
adds its groups with ``common.group`` and its leaf commands with
``common.command``; both accept the global options (``--api``, ``-o``) after
the command too.  A handler receives the parsed arguments, a ``HubClient``
and an ``Output``, and returns the exit code.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.cli.client import DEFAULT_API, HubClient
from controller.cli.output import FORMATS, Output

Handler = Callable[[argparse.Namespace, HubClient, Output], int]
Subparsers = Any  # argparse's _SubParsersAction, a private type


def global_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # SUPPRESS: options may appear before or after the command without clobbering.
    parser.add_argument("--api", metavar="URL", default=argparse.SUPPRESS,
                        help=f"hub API base URL (env HUBCTL_API, default {DEFAULT_API})")
    parser.add_argument("-o", "--output", choices=FORMATS, default=argparse.SUPPRESS,
                        help="output format (default table)")
    return parser


@dataclass(frozen=True)
class Common:
    """The parent parser of every command: the global options."""

    parent: argparse.ArgumentParser

    @classmethod
    def create(cls) -> Common:
        return cls(global_options(argparse.ArgumentParser(add_help=False)))

    def command(self, sub: Subparsers, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        """One leaf command; its parser, to add the command's own arguments to."""
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help,
                                                         parents=[self.parent])
        parser.set_defaults(handler=handler)
        return parser

    def group(self, sub: Subparsers, name: str, help: str) -> Subparsers:
        """A command group (``hubctl NAME VERB``); the subparsers to add its verbs to."""
        group = sub.add_parser(name, help=help, description=help, parents=[self.parent])
        return group.add_subparsers(title="commands", metavar="COMMAND", required=True)
