"""hubctl command groups of personalities: ``personality`` (create -f FILE, list,
get, delete, apply), ``interface`` and ``operation``.

``interface switch``, ``interface revert`` and ``personality apply`` start
operations and print them; with ``--wait`` they follow each operation
(`cli_wait`) and exit 0 only when every operation succeeded (1 when one was
rolled back or failed).  ``--dry-run`` prints the flow diff and the
connections a switch would cut, and changes nothing.

Health checks are written ``gateway``, ``gateway:IP``, ``dns``, ``dns:IP``,
``ping:IP`` or ``tcp:IP:PORT``, each optionally followed by ``@SECONDS``.
"""

from __future__ import annotations

import argparse
from typing import Any

from controller.cli.client import EXIT_OK, HubClient
from controller.cli.commands import Common, Subparsers
from controller.cli.documents import Collection, add_document_group
from controller.cli.output import Output
from controller.features.personality.cli_tables import (apply_table, dry_run_text, history_table,
                                                        interface_table, interfaces_table, operation_table,
                                                        operations_table, personalities_table,
                                                        personality_table, unchanged_line)
from controller.features.personality.cli_wait import wait_for

UNTIL = ("zero-connections", "timeout")

PERSONALITIES = Collection("personality", "/v1/personalities", one=personality_table,
                           many=personalities_table)


# -- health check specs ----------------------------------------------------------------

CHECK_FORMS = "gateway[:IP], dns[:IP], ping:IP or tcp:IP:PORT, optionally @SECONDS"


def parse_check(spec: str) -> dict[str, Any]:
    """``tcp:10.0.2.2:22@5`` -> {"type": "tcp", "target": "10.0.2.2", "port": 22, "timeout_seconds": 5.0}."""
    def bad(reason: str) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(f"bad check {spec!r}: {reason} (use {CHECK_FORMS})")

    head, at, seconds = spec.partition("@")
    check: dict[str, Any] = {}
    kind, *rest = head.split(":")
    if (kind in ("gateway", "dns") and len(rest) <= 1) or (kind == "ping" and len(rest) == 1):
        pass
    elif kind == "tcp" and len(rest) == 2:
        try:
            check["port"] = int(rest.pop())
        except ValueError:
            raise bad("the port must be a number") from None
    elif kind in ("gateway", "dns", "ping", "tcp"):
        raise bad(f"wrong number of ':' parts for a {kind} check")
    else:
        raise bad(f"unknown check type {kind!r}")
    if rest:
        if not rest[0]:
            raise bad("the address is empty")
        check["target"] = rest[0]
    if at:
        try:
            check["timeout_seconds"] = float(seconds)
        except ValueError:
            raise bad("the timeout must be a number of seconds") from None
    return {"type": kind, **check}


def _add_switch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drain-max", type=float, metavar="SECONDS",
                   help="how long established connections keep the old personality (default 30)")
    p.add_argument("--until", choices=UNTIL,
                   help="end the drain when no connection is left (default) or only at --drain-max")
    p.add_argument("--check", type=parse_check, action="append", default=[], metavar="SPEC",
                   help=f"health check after the switch, repeatable: {CHECK_FORMS}")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The drain and health_checks members of a request body, from the command line."""
    body: dict[str, Any] = {}
    drain = {k: v for k, v in (("max_seconds", args.drain_max), ("until", args.until)) if v is not None}
    if drain:
        body["drain"] = drain
    if args.check:
        body["health_checks"] = args.check
    return body


# -- commands -------------------------------------------------------------------------------

def cmd_interface_list(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get("/v1/interfaces"), interfaces_table)
    return EXIT_OK


def cmd_interface_get(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(f"/v1/interfaces/{args.id}"), interface_table)
    return EXIT_OK


def cmd_interface_switch(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body = {"personality_id": args.personality, **_options(args)}
    if args.dry_run:
        body["dry_run"] = True
    answer = api.request("POST", f"/v1/interfaces/{args.id}/switch", json=body)
    if args.dry_run:
        out.emit(answer, dry_run_text)
        return EXIT_OK
    if args.wait:
        return wait_for(api, [answer], out)
    out.emit(answer, operation_table)
    return EXIT_OK


def cmd_interface_revert(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    op = api.request("POST", f"/v1/interfaces/{args.id}/revert", json=_options(args))
    if args.wait:
        return wait_for(api, [op], out)
    out.emit(op, operation_table)
    return EXIT_OK


def cmd_interface_history(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(f"/v1/interfaces/{args.id}/history"), history_table)
    return EXIT_OK


def cmd_operation_get(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(f"/v1/operations/{args.id}"), operation_table)
    return EXIT_OK


def cmd_operation_list(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get("/v1/operations", interface_id=args.interface, state=args.state), operations_table)
    return EXIT_OK


def cmd_personality_apply(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body: dict[str, Any] = _options(args)
    if args.interface:
        body["interfaces"] = args.interface
    elif args.category:
        body["selector"] = {"category": args.category}
    else:
        body["selector"] = {"datapath": args.datapath}
    answer = api.request("POST", f"/v1/personalities/{args.id}/apply", json=body)
    if args.wait and answer["operations"]:
        if out.format == "table" and answer.get("unchanged"):
            print(unchanged_line(answer))
        return wait_for(api, answer["operations"], out, several=True)
    out.emit(answer, apply_table)
    return EXIT_OK


# -- registration ---------------------------------------------------------------------------

def _add_apply(verbs: Subparsers, common: Common) -> None:
    p = common.command(verbs, "apply", cmd_personality_apply,
                       "switch several interfaces to a personality at once (A/B), all or nothing")
    p.add_argument("id", metavar="ID")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--interface", action="append", metavar="ID",
                        help="an interface to switch (repeatable)")
    target.add_argument("--datapath", metavar="DPID", help="every interface of this datapath (16 hex digits)")
    target.add_argument("--category", metavar="CAT", help="every interface with this category")
    _add_switch_options(p)
    p.add_argument("--wait", action="store_true", help="follow the operations until they finish")


def _add_interface(sub: Subparsers, common: Common) -> None:
    verbs = common.group(sub, "interface", "host-facing interfaces and their personalities "
                         "(list, get, switch, revert, history)")
    common.command(verbs, "list", cmd_interface_list, "every interface record")
    p = common.command(verbs, "get", cmd_interface_get, "one interface record")
    p.add_argument("id", metavar="ID")
    p = common.command(verbs, "switch", cmd_interface_switch,
                       "switch an interface to a personality (drain, apply, verify)")
    p.add_argument("id", metavar="ID")
    p.add_argument("personality", metavar="PERSONALITY")
    _add_switch_options(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="show the flow diff and the connections that would be cut; change nothing")
    mode.add_argument("--wait", action="store_true", help="follow the operation until it finishes")
    p = common.command(verbs, "revert", cmd_interface_revert,
                       "switch an interface back to its default (last-known-good) personality")
    p.add_argument("id", metavar="ID")
    _add_switch_options(p)
    p.add_argument("--wait", action="store_true", help="follow the operation until it finishes")
    p = common.command(verbs, "history", cmd_interface_history, "every operation of an interface")
    p.add_argument("id", metavar="ID")


def _add_operation(sub: Subparsers, common: Common) -> None:
    verbs = common.group(sub, "operation", "personality operations (get, list)")
    p = common.command(verbs, "get", cmd_operation_get, "one operation and its log")
    p.add_argument("id", metavar="ID")
    p = common.command(verbs, "list", cmd_operation_list, "operations, newest first")
    p.add_argument("--interface", metavar="ID", help="only this interface's")
    p.add_argument("--state", help="only operations in this state")


def register(sub: Subparsers, common: Common) -> None:
    verbs = add_document_group(sub, common, PERSONALITIES, "personality documents (create, list, get, delete)")
    _add_apply(verbs, common)
    _add_interface(sub, common)
    _add_operation(sub, common)
