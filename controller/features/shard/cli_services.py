"""hubctl ``shard``: a pool's services and routes (the HRT).

``shard services POOL`` is one row per service, ``shard service POOL ID`` one
in full, ``shard service-add POOL -f FILE`` creates one from a YAML or JSON
file, ``shard service-delete POOL ID`` removes it.  ``shard routes POOL``
lists the routes, given and learned (``--service`` for one service's);
``shard routes POOL add SERVICE SESSION RESOURCE`` sends a session (or, for
a service without a pattern, a client prefix) to a resource; ``shard routes
POOL delete ID`` removes a given route.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from controller.cli.client import EXIT_LOCAL_ERROR, EXIT_OK, HubClient
from controller.cli.commands import Common, Subparsers
from controller.cli.documents import FileProblem, read_document_file
from controller.cli.output import Output, format_table, format_time
from controller.features.shard.cli_shard import pool_url

SERVICE_HEADERS = ["ID", "EXTERNAL IP", "PROTOCOL", "PORT", "RESOURCES", "ROUTING"]
ROUTE_HEADERS = ["ID", "SERVICE", "SESSION", "RESOURCE", "LEARNED", "EXPIRES"]


def _routing(s: dict[str, Any]) -> str:
    pattern = (s.get("metadata") or {}).get("pattern")
    return f"pattern {pattern}" if pattern else "hash"


def _service_row(s: dict[str, Any]) -> list[object]:
    return [s["id"], s["external_ip"], s["protocol"], s["port"], s["resources"], _routing(s)]


def services_table(services: list[dict[str, Any]]) -> str:
    return (format_table(SERVICE_HEADERS, map(_service_row, services)) if services
            else "(no services)")


def service_table(s: dict[str, Any]) -> str:
    return format_table(["FIELD", "VALUE"], [
        ["id", s["id"]], ["pool", s.get("pool_id")], ["external ip", s["external_ip"]],
        ["protocol", s["protocol"]], ["port", s["port"]], ["resources", s["resources"]],
        ["routing", _routing(s)], ["idle timeout", f"{s.get('idle_timeout')} s"],
        ["conntrack zone", s.get("zone")], ["created", format_time(s.get("created_at"))]])


def _route_row(r: dict[str, Any]) -> list[object]:
    return [r["id"], r["service_id"], r["session"], r["resource_id"], r["learned"],
            format_time(r.get("expires_at")) if r["learned"] else None]


def routes_table(routes: list[dict[str, Any]]) -> str:
    return format_table(ROUTE_HEADERS, map(_route_row, routes)) if routes else "(no routes)"


# -- commands --------------------------------------------------------------------------

def cmd_services(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(pool_url(args.pool, "services")), services_table)
    return EXIT_OK


def cmd_service(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(pool_url(args.pool, "services", args.service)), service_table)
    return EXIT_OK


def cmd_service_add(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    try:
        file = read_document_file(args.file)
    except FileProblem as exc:
        print(f"hubctl: {exc}", file=sys.stderr)
        return EXIT_LOCAL_ERROR
    answer = api.request("POST", pool_url(args.pool, "services"), content=file.data,
                         headers={"content-type": file.content_type})
    out.emit(answer, service_table)
    return EXIT_OK


def cmd_service_delete(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    api.request("DELETE", pool_url(args.pool, "services", args.service))
    out.emit({"id": args.service, "pool_id": args.pool, "deleted": True},
             lambda s: f"deleted service {s['id']} of shard pool {s['pool_id']} (and its routes)")
    return EXIT_OK


def cmd_routes(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(pool_url(args.pool, "routes"), service_id=getattr(args, "service", None)),
             routes_table)
    return EXIT_OK


def cmd_route_add(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body = {"service_id": args.service_id, "session": args.session,
            "resource_id": args.resource_id}
    answer = api.request("POST", pool_url(args.pool, "routes"), json=body)
    out.emit(answer, lambda r: f"route {r['id']}: session {r['session']!r} of service "
                               f"{r['service_id']} goes to {r['resource_id']}")
    return EXIT_OK


def cmd_route_delete(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    api.request("DELETE", pool_url(args.pool, "routes", args.route))
    out.emit({"id": args.route, "deleted": True}, lambda r: f"deleted route {r['id']}")
    return EXIT_OK


def _pool_and_service(p: argparse.ArgumentParser) -> None:
    p.add_argument("pool", metavar="POOL")
    p.add_argument("service", metavar="SERVICE", help="service id")


def add_verbs(verbs: Subparsers, common: Common) -> None:
    """``shard services|service|service-add|service-delete|routes``."""
    p = common.command(verbs, "services", cmd_services,
                       "a pool's services: external address, resources, routing")
    p.add_argument("pool", metavar="POOL")
    _pool_and_service(common.command(verbs, "service", cmd_service, "one service in full"))
    p = common.command(verbs, "service-add", cmd_service_add,
                       "put resources behind one external address, from a YAML or JSON file")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("-f", "--file", required=True, metavar="FILE",
                   help="{external_ip, protocol, port, resources, metadata?: {pattern}}; "
                        "- reads stdin")
    _pool_and_service(common.command(verbs, "service-delete", cmd_service_delete,
                                     "remove a service and its routes"))
    p = common.command(verbs, "routes", cmd_routes,
                       "a pool's routes, given and learned: routes POOL [list|add|delete]")
    p.add_argument("pool", metavar="POOL")
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=False)
    q = common.command(actions, "list", cmd_routes, "the routes, given and learned (default)")
    q.add_argument("--service", metavar="SERVICE", help="only this service's")
    q = common.command(actions, "add", cmd_route_add, "send a session of a service to a resource")
    q.add_argument("service_id", metavar="SERVICE")
    q.add_argument("session", metavar="SESSION",
                   help="what the service's pattern extracts, or a client prefix (no pattern)")
    q.add_argument("resource_id", metavar="RESOURCE")
    q = common.command(actions, "delete", cmd_route_delete, "remove a given route")
    q.add_argument("route", metavar="ID")
