"""hubctl command groups for typed documents: ``subnet`` and ``personality``.

``create -f FILE`` sends the file as it is (YAML or JSON, ``-`` for stdin)
with the matching content type, so the API's errors name the fields of the
file the user wrote. ``list``, ``get ID`` and ``delete ID`` print tables by
default, or the stored documents with ``-o json|yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.cli.format import format_table, format_time

if TYPE_CHECKING:
    from controller.cli.main import HubClient, Output

EXIT_OK, EXIT_LOCAL_ERROR = 0, 2

JSON_TYPE, YAML_TYPE = "application/json", "application/yaml"


# -- files -------------------------------------------------------------------------

class FileProblem(Exception):
    """The document file could not be read."""


def read_document_file(path: str) -> tuple[bytes, str]:
    """The bytes of ``path`` (``-`` is stdin) and the content type to send them with."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise FileProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    return data, content_type_for(path, data)


def content_type_for(path: str, data: bytes) -> str:
    """By extension (.json, .yaml, .yml); otherwise JSON if it parses as a JSON object, else YAML."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        return JSON_TYPE
    if ext in (".yaml", ".yml"):
        return YAML_TYPE
    try:
        return JSON_TYPE if isinstance(json.loads(data), dict) else YAML_TYPE
    except ValueError:
        return YAML_TYPE


# -- generic commands ------------------------------------------------------------------

Table = Callable[[Any], str]


def _create(collection: str, table: Table) -> Callable[[argparse.Namespace, HubClient, Output], int]:
    def handler(args: argparse.Namespace, api: HubClient, out: Output) -> int:
        try:
            data, content_type = read_document_file(args.file)
        except FileProblem as exc:
            print(f"hubctl: {exc}", file=sys.stderr)
            return EXIT_LOCAL_ERROR
        doc = api.request("POST", f"/v1/{collection}", content=data,
                          headers={"content-type": content_type})
        out.emit(doc, table)
        return EXIT_OK
    return handler


def _list(collection: str, table: Table) -> Callable[[argparse.Namespace, HubClient, Output], int]:
    def handler(args: argparse.Namespace, api: HubClient, out: Output) -> int:
        out.emit(api.get(f"/v1/{collection}"), table)
        return EXIT_OK
    return handler


def _get(collection: str, table: Table) -> Callable[[argparse.Namespace, HubClient, Output], int]:
    def handler(args: argparse.Namespace, api: HubClient, out: Output) -> int:
        out.emit(api.get(f"/v1/{collection}/{args.id}"), table)
        return EXIT_OK
    return handler


def _delete(collection: str, kind: str) -> Callable[[argparse.Namespace, HubClient, Output], int]:
    def handler(args: argparse.Namespace, api: HubClient, out: Output) -> int:
        doc = api.request("DELETE", f"/v1/{collection}/{args.id}")
        out.emit(doc, lambda d: f"deleted {kind} {d['id']} (revision {d['revision']})")
        return EXIT_OK
    return handler


def _add_group(sub: Any, kind: str, collection: str, help: str, one: Table, many: Table) -> None:
    from controller.cli.main import _COMMON, add_command  # cli imports this module; import at call time

    group = sub.add_parser(kind, help=help, description=help, parents=[_COMMON])
    verbs = group.add_subparsers(title="commands", metavar="COMMAND", required=True)
    p = add_command(verbs, "create", _create(collection, one), f"create a {kind} from a YAML or JSON file")
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="document file; - reads stdin")
    add_command(verbs, "list", _list(collection, many), f"every {kind}")
    p = add_command(verbs, "get", _get(collection, one), f"one {kind}")
    p.add_argument("id", metavar="ID")
    p = add_command(verbs, "delete", _delete(collection, kind), f"delete a {kind}")
    p.add_argument("id", metavar="ID")


# -- subnets ---------------------------------------------------------------------------

SUBNET_HEADERS = ["ID", "CIDR", "GATEWAY", "REVISION", "DESCRIPTION"]


def _subnet_row(doc: dict[str, Any]) -> list[object]:
    b = doc["body"]
    return [doc["id"], b.get("cidr"), b.get("gateway"), doc["revision"], b.get("description")]


def subnets_table(docs: list[dict[str, Any]]) -> str:
    return format_table(SUBNET_HEADERS, map(_subnet_row, docs)) if docs else "(no subnets)"


def subnet_table(doc: dict[str, Any]) -> str:
    return f"{format_table(SUBNET_HEADERS, [_subnet_row(doc)])}\n\nupdated: {format_time(doc['updated_at'])}"


def add_subnet_command(sub: Any) -> None:
    _add_group(sub, "subnet", "subnets", "subnets the hub routes (create, list, get, delete)",
               subnet_table, subnets_table)


# -- personalities -------------------------------------------------------------------------

PERSONALITY_HEADERS = ["ID", "NAME", "SUBNET", "ADDRESSES", "RULES", "DEFAULT", "REVISION"]


def _personality_row(doc: dict[str, Any]) -> list[object]:
    b = doc["body"]
    return [doc["id"], b.get("name"), b.get("subnet_id"), b.get("ip_addresses") or [],
            len(b.get("firewall_rules") or []), b.get("default_action", "deny"), doc["revision"]]


def personalities_table(docs: list[dict[str, Any]]) -> str:
    return format_table(PERSONALITY_HEADERS, map(_personality_row, docs)) if docs else "(no personalities)"


def _port(value: Any) -> str:
    return "any" if value is None else str(value)


def _firewall_summary(body: dict[str, Any]) -> str:
    n = len(body.get("firewall_rules") or [])
    return f"{n} rule{'' if n == 1 else 's'}, default {body.get('default_action', 'deny')}"


def personality_table(doc: dict[str, Any]) -> str:
    b = doc["body"]
    qos = b.get("qos_settings") or {}
    vpn = b.get("vpn_tunnel_config")
    apps = b.get("application_access_policy") or {}
    fields: list[list[object]] = [
        ["id", doc["id"]], ["name", b.get("name")], ["revision", doc["revision"]],
        ["updated", format_time(doc["updated_at"])], ["subnet", b.get("subnet_id")],
        ["addresses", b.get("ip_addresses") or []], ["dns servers", b.get("dns_servers") or []],
        ["firewall", _firewall_summary(b)],
        ["qos", ", ".join(f"{k}={v}" for k, v in qos.items()) or None],
        ["vpn", f"{vpn['type']} to {vpn['remote_ip']} for {','.join(vpn['remote_prefixes'])}"
         if vpn else None],
        ["apps allowed", [a["name"] for a in apps.get("allow", [])]],
        ["apps denied", [a["name"] for a in apps.get("deny", [])]],
        ["expires after", f"{b['expires_after']}s" if b.get("expires_after") else None],
    ]
    out = format_table(["FIELD", "VALUE"], fields)
    rules = [[i, r.get("direction", "both"), r["protocol"], r.get("source", "0.0.0.0/0"),
              r.get("destination", "0.0.0.0/0"), _port(r.get("port")), r["action"]]
             for i, r in enumerate(b.get("firewall_rules") or [])]
    if rules:
        out += "\n\nFIREWALL RULES\n" + format_table(
            ["#", "DIRECTION", "PROTOCOL", "SOURCE", "DESTINATION", "PORT", "ACTION"], rules)
    routes = [[r["destination"], r["next_hop"]] for r in b.get("routing_table") or []]
    if routes:
        out += "\n\nROUTES\n" + format_table(["DESTINATION", "NEXT HOP"], routes)
    return out


def add_personality_command(sub: Any) -> None:
    _add_group(sub, "personality", "personalities",
               "personality documents (create, list, get, delete)", personality_table,
               personalities_table)
