"""hubctl: command-line client for the hub's northbound REST API.

The hub's own commands (`controller.cli.hub`) come first, then every
feature's command groups, registered from `controller.registry.FEATURES`
(each entry's ``cli`` is a ``register(subparsers, common)``).  This module
names no feature.
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx

from controller.cli import hub
from controller.cli.client import (DEFAULT_API, EXIT_API_ERROR, EXIT_OK, EXIT_UNREACHABLE, ApiError,
                                   HubClient, Unreachable)
from controller.cli.commands import Common, Handler, global_options
from controller.cli.output import Output
from controller.registry import FEATURES


def build_parser() -> argparse.ArgumentParser:
    parser = global_options(argparse.ArgumentParser(
        prog="hubctl", description="Inspect and drive a hubshift controller."))
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    common = Common.create()
    hub.register(sub, common)
    for plugin in FEATURES:
        register = plugin.cli_register()
        if register is not None:
            register(sub, common)
    return parser


def report_problem(err: ApiError) -> None:
    p = err.problem
    print(f"hubctl: {p.get('title', 'Error')} (HTTP {err.status})", file=sys.stderr)
    if p.get("detail"):
        print(f"  {p['detail']}", file=sys.stderr)
    for fe in p.get("errors") or []:
        print(f"  {fe.get('field', '?')}: {fe.get('reason', '')}", file=sys.stderr)


def main(argv: list[str] | None = None, *, client: httpx.Client | None = None,
         transport: httpx.BaseTransport | None = None) -> int:
    """Run hubctl; ``client``/``transport`` replace the network (used by tests)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_OK if exc.code is None else 2
    api_url = getattr(args, "api", None) or os.environ.get("HUBCTL_API") or DEFAULT_API
    api = HubClient(api_url, client=client, transport=transport)
    try:
        handler: Handler = args.handler
        return handler(args, api, Output(getattr(args, "output", "table")))
    except Unreachable as exc:
        print(f"hubctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiError as exc:
        report_problem(exc)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        api.close()


if __name__ == "__main__":
    sys.exit(main())
