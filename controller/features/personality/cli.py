"""hubctl command groups for personality operations: ``interface``, ``operation``
and ``personality apply``.

``interface switch``, ``interface revert`` and ``personality apply`` start
operations and print them; with ``--wait`` they follow each operation
(``GET /v1/operations/{id}`` every 0.3 s), print one line per state change and
a live connection count while draining, and exit 0 only when every operation
succeeded (1 when one was rolled back or failed).  ``--dry-run`` prints the
flow diff and the connections a switch would cut, and changes nothing.

Health checks are written ``gateway``, ``gateway:IP``, ``dns``, ``dns:IP``,
``ping:IP`` or ``tcp:IP:PORT``, each optionally followed by ``@SECONDS``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.cli.format import cell, format_table, format_time

if TYPE_CHECKING:
    from controller.cli.main import HubClient, Output

EXIT_OK, EXIT_NOT_SUCCEEDED = 0, 1

POLL_INTERVAL_S = 0.3
FINAL = ("succeeded", "rolled_back", "failed")
UNTIL = ("zero-connections", "timeout")
DEFAULT_CHECK_TIMEOUT = 3.0

_sleep: Callable[[float], None] = time.sleep  # replaced by tests


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


def format_check(check: dict[str, Any]) -> str:
    """The spec form of a stored health check."""
    text = check["type"]
    if check.get("target"):
        text += f":{check['target']}"
    if check.get("port") is not None:
        text += f":{check['port']}"
    timeout = check.get("timeout_seconds")
    if timeout is not None and timeout != DEFAULT_CHECK_TIMEOUT:
        text += f"@{timeout:g}"
    return text


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


# -- rendering ---------------------------------------------------------------------------

def connection_count(connections: Any) -> int | None:
    """The live connection count in an operation's ``connections`` member, however it is given."""
    if isinstance(connections, bool):
        return None
    if isinstance(connections, int):
        return connections
    if isinstance(connections, list):
        return len(connections)
    if isinstance(connections, dict):
        for key in ("count", "live", "current", "remaining"):
            if isinstance(connections.get(key), int):
                return int(connections[key])
    return None


def _first(d: dict[str, Any], *keys: str) -> Any:
    return next((d[k] for k in keys if d.get(k) is not None), None)


def format_connection(c: dict[str, Any]) -> str:
    """``tcp 10.0.1.10:40000 <-> 10.0.2.2:22`` for the hub's {"protocol", "local", "peer"}
    (also src/dst forms; falls back to key=value pairs)."""
    if c.get("local") is not None and c.get("peer") is not None:
        proto = c.get("protocol")
        return (f"{proto} " if proto else "") + f"{c['local']} <-> {c['peer']}"
    src, dst = _first(c, "src", "src_ip", "source", "nw_src"), _first(c, "dst", "dst_ip", "destination", "nw_dst")
    if src is None or dst is None:
        return " ".join(f"{k}={cell(v)}" for k, v in c.items())
    proto = _first(c, "protocol", "proto", "ip_proto")
    sport, dport = _first(c, "src_port", "sport", "tp_src"), _first(c, "dst_port", "dport", "tp_dst")
    text = f"{src}{'' if sport is None else f':{sport}'} -> {dst}{'' if dport is None else f':{dport}'}"
    state = _first(c, "state", "ct_state")
    return (f"{proto} " if proto else "") + text + (f" ({state})" if state else "")


INTERFACE_HEADERS = ["ID", "MAC", "IPS", "PERSONALITY", "STATE", "DEFAULT", "OPERATION"]


def _interface_row(i: dict[str, Any]) -> list[object]:
    return [i["id"], i.get("mac"), i.get("ips") or [], i.get("personality_id"),
            i.get("personality_state"), i.get("default_personality_id"), i.get("operation_id")]


def interfaces_table(items: list[dict[str, Any]]) -> str:
    return format_table(INTERFACE_HEADERS, map(_interface_row, items)) if items else "(no interfaces)"


def interface_table(i: dict[str, Any]) -> str:
    fields: list[list[object]] = [
        ["id", i["id"]], ["datapath", i.get("datapath")], ["port", i.get("port")],
        ["mac", i.get("mac")], ["ips", i.get("ips") or []],
        ["personality", i.get("personality_id")], ["state", i.get("personality_state")],
        ["default", i.get("default_personality_id")], ["operation", i.get("operation_id")],
        ["expires", format_time(i["expires_at"]) if i.get("expires_at") else None],
        ["after expiry", i.get("expires_to") if i.get("expires_at") else None],
        ["revision", i.get("revision")], ["updated", format_time(i.get("updated_at"))],
    ]
    return format_table(["FIELD", "VALUE"], fields)


OPERATION_HEADERS = ["ID", "INTERFACE", "KIND", "FROM", "TO", "STATE", "CREATED"]


def _operation_row(op: dict[str, Any]) -> list[object]:
    return [op["id"], op["interface_id"], op["kind"], op.get("from_personality_id"),
            op["to_personality_id"], op["state"], format_time(op.get("created_at"))]


def operations_table(ops: list[dict[str, Any]]) -> str:
    return format_table(OPERATION_HEADERS, map(_operation_row, ops)) if ops else "(no operations)"


def _drain_text(drain: dict[str, Any] | None) -> str | None:
    if not drain:
        return None
    return f"up to {drain.get('max_seconds', 30):g}s, until {drain.get('until', 'zero-connections')}"


def operation_table(op: dict[str, Any]) -> str:
    count = connection_count(op.get("connections"))
    fields: list[list[object]] = [
        ["id", op["id"]], ["interface", op["interface_id"]], ["kind", op["kind"]],
        ["from", op.get("from_personality_id")], ["to", op["to_personality_id"]],
        ["state", op["state"]], ["result", op.get("result")], ["reason", op.get("reason")],
        ["drain", _drain_text(op.get("drain"))],
        ["checks", [format_check(c) for c in op.get("health_checks") or []]],
        ["connections", count], ["created", format_time(op.get("created_at"))],
        ["finished", format_time(op.get("finished_at"))],
    ]
    out = format_table(["FIELD", "VALUE"], fields)
    log = [[format_time(e.get("at")), e.get("state"), e.get("message")] for e in op.get("log") or []]
    if log:
        out += "\n\nLOG\n" + format_table(["TIME", "STATE", "MESSAGE"], log)
    return out


HISTORY_HEADERS = ["OPERATION", "KIND", "AT", "FROM", "TO", "STATE", "RESULT", "REASON"]


def history_table(entries: list[dict[str, Any]]) -> str:
    rows = [[e["operation"], e["kind"], format_time(e["at"]), e.get("from"), e["to"], e["state"],
             e.get("result"), e.get("reason")] for e in entries]
    return format_table(HISTORY_HEADERS, rows) if rows else "(no operations)"


def dry_run_text(d: dict[str, Any]) -> str:
    flows = d.get("flows") or {}
    add, delete = flows.get("add") or [], flows.get("delete") or []
    before = d.get("from_personality_id") or "(none)"
    lines = [f"dry run: {d['interface_id']}  {before} -> {d['to_personality_id']}  (nothing was changed)",
             f"flows: {len(add)} to add, {len(delete)} to delete"]
    lines += [f"+ {f}" for f in add] + [f"- {f}" for f in delete]
    conns = d.get("connections") or []
    cut = d.get("would_cut", len(conns))
    lines.append(f"connections that would be cut: {cut}")
    lines += [f"  {format_connection(c)}" for c in conns]
    return "\n".join(lines)


def apply_table(answer: dict[str, Any]) -> str:
    ops = answer["operations"]
    rows = [[op["interface_id"], op["id"], op.get("from_personality_id"), op["to_personality_id"],
             op["state"]] for op in ops]
    out = format_table(["INTERFACE", "OPERATION", "FROM", "TO", "STATE"], rows) if rows \
        else "(no operations started)"
    if answer.get("unchanged"):
        out += f"\n\nunchanged (already on it): {', '.join(answer['unchanged'])}"
    return out


# -- following operations ---------------------------------------------------------------------

class _Follower:
    """Prints what changes in the operations being waited for."""

    def __init__(self, labelled: bool, tty: bool) -> None:
        self.labelled, self.tty = labelled, tty
        self.states: dict[str, str] = {}
        self.counts: dict[str, int | None] = {}
        self.drain_seen: dict[str, float] = {}
        self.open_line = False

    def _print(self, text: str) -> None:
        if self.open_line:
            sys.stdout.write("\n")
            self.open_line = False
        print(text)
        sys.stdout.flush()

    def see(self, op: dict[str, Any]) -> None:
        prefix = f"{op['interface_id']}: " if self.labelled else ""
        state = op["state"]
        if self.states.get(op["id"]) != state:
            self.states[op["id"]] = state
            if state in FINAL and state != "succeeded":
                note = op.get("reason") or op.get("result") or _last_message(op, state)
            else:
                note = _last_message(op, state)
            self._print(f"{prefix}{state}" + (f": {note}" if note else ""))
        if state == "draining":
            self._progress(op, prefix)

    def _progress(self, op: dict[str, Any], prefix: str) -> None:
        count = connection_count(op.get("connections"))
        started = _entered(op, "draining")
        if started is None:
            started = self.drain_seen.setdefault(op["id"], time.time())
        elapsed = max(0.0, time.time() - started)
        limit = (op.get("drain") or {}).get("max_seconds", 30)
        what = "" if count is None else f"{count} connection{'' if count == 1 else 's'}, "
        line = f"{prefix}draining: {what}{elapsed:.1f} s of {limit:g} s"
        if self.tty and not self.labelled:
            sys.stdout.write("\r\x1b[K" + line)
            sys.stdout.flush()
            self.open_line = True
        elif op["id"] not in self.counts or self.counts[op["id"]] != count:
            self._print(line)
        self.counts[op["id"]] = count

    def close(self) -> None:
        if self.open_line:
            sys.stdout.write("\n")
            self.open_line = False


def _last_message(op: dict[str, Any], state: str) -> str | None:
    entries = [e for e in op.get("log") or [] if e.get("state") == state]
    return entries[-1].get("message") if entries else None


def _entered(op: dict[str, Any], state: str) -> float | None:
    entries = [e for e in op.get("log") or [] if e.get("state") == state and e.get("at") is not None]
    return float(entries[-1]["at"]) if entries else None


def wait_for(api: HubClient, ops: list[dict[str, Any]], out: Output, *, several: bool = False) -> int:
    """Follow ``ops`` until each is finished; 0 when all succeeded, else 1.

    ``several``: lines name the interface (always so for more than one operation).
    """
    several = several or len(ops) > 1
    follow = _Follower(labelled=several, tty=sys.stdout.isatty()) if out.format == "table" else None
    latest = {op["id"]: op for op in ops}
    try:
        for op in ops:
            if follow:
                follow.see(op)
        while any(op["state"] not in FINAL for op in latest.values()):
            _sleep(POLL_INTERVAL_S)
            for id, op in latest.items():
                if op["state"] not in FINAL:
                    latest[id] = api.get(f"/v1/operations/{id}")
                    if follow:
                        follow.see(latest[id])
    finally:
        if follow:
            follow.close()
    done = list(latest.values())
    if not follow:
        out.emit(done if several else done[0], operations_table if several else operation_table)
    failed = [op for op in done if op["state"] != "succeeded"]
    if failed and follow and several:
        print(f"{len(failed)} of {len(done)} operations did not succeed: "
              + ", ".join(f"{op['interface_id']} {op['state']}" for op in failed))
    return EXIT_NOT_SUCCEEDED if failed else EXIT_OK


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
    else:
        body["selector"] = {"datapath": args.datapath}
    answer = api.request("POST", f"/v1/personalities/{args.id}/apply", json=body)
    if args.wait and answer["operations"]:
        if out.format == "table" and answer.get("unchanged"):
            print(f"unchanged (already on it): {', '.join(answer['unchanged'])}")
        return wait_for(api, answer["operations"], out, several=True)
    out.emit(answer, apply_table)
    return EXIT_OK


# -- registration ---------------------------------------------------------------------------

def _group(sub: Any, name: str, help: str) -> Any:
    from controller.cli.main import _COMMON  # cli imports this module; import at call time

    group = sub.add_parser(name, help=help, description=help, parents=[_COMMON])
    return group.add_subparsers(title="commands", metavar="COMMAND", required=True)


def add_interface_command(sub: Any) -> None:
    from controller.cli.main import add_command

    verbs = _group(sub, "interface", "host-facing interfaces and their personalities "
                   "(list, get, switch, revert, history)")
    add_command(verbs, "list", cmd_interface_list, "every interface record")
    p = add_command(verbs, "get", cmd_interface_get, "one interface record")
    p.add_argument("id", metavar="ID")
    p = add_command(verbs, "switch", cmd_interface_switch,
                    "switch an interface to a personality (drain, apply, verify)")
    p.add_argument("id", metavar="ID")
    p.add_argument("personality", metavar="PERSONALITY")
    _add_switch_options(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="show the flow diff and the connections that would be cut; change nothing")
    mode.add_argument("--wait", action="store_true", help="follow the operation until it finishes")
    p = add_command(verbs, "revert", cmd_interface_revert,
                    "switch an interface back to its default (last-known-good) personality")
    p.add_argument("id", metavar="ID")
    _add_switch_options(p)
    p.add_argument("--wait", action="store_true", help="follow the operation until it finishes")
    p = add_command(verbs, "history", cmd_interface_history, "every operation of an interface")
    p.add_argument("id", metavar="ID")


def add_operation_command(sub: Any) -> None:
    from controller.cli.main import add_command

    verbs = _group(sub, "operation", "personality operations (get, list)")
    p = add_command(verbs, "get", cmd_operation_get, "one operation and its log")
    p.add_argument("id", metavar="ID")
    p = add_command(verbs, "list", cmd_operation_list, "operations, newest first")
    p.add_argument("--interface", metavar="ID", help="only this interface's")
    p.add_argument("--state", help="only operations in this state")


def add_personality_apply_command(sub: Any) -> None:
    """Add ``apply`` to the ``personality`` group registered by ``cli_documents``."""
    from controller.cli.main import add_command

    group: argparse.ArgumentParser = sub.choices["personality"]
    verbs = next(a for a in group._actions if isinstance(a, argparse._SubParsersAction))
    p = add_command(verbs, "apply", cmd_personality_apply,
                    "switch several interfaces to a personality at once (A/B), all or nothing")
    p.add_argument("id", metavar="ID")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--interface", action="append", metavar="ID",
                        help="an interface to switch (repeatable)")
    target.add_argument("--datapath", metavar="DPID", help="every interface of this datapath (16 hex digits)")
    _add_switch_options(p)
    p.add_argument("--wait", action="store_true", help="follow the operations until they finish")
