"""hubctl ``shard``: a pool's resources and shards.

``shard enroll POOL IFACE`` prints the resource's RAP key once (and the
``hub-rap`` command line that uses it); no other command can show it again,
``shard key POOL RID`` issues a new one. ``shard resources POOL`` is one row
per resource (its lease, current address and shard, deprecated addresses
still draining), ``shard resource POOL RID`` one resource in full, ``shard
history [POOL] RID`` its lease's recent events (the pool is looked up when
left out), ``shard shards POOL`` the pool's shards.
"""
from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from controller.cli.client import EXIT_OK, ApiError, HubClient
from controller.cli.commands import Common, Subparsers
from controller.cli.output import Output, format_table, format_time

POOLS = "/v1/shard-pools"


def pool_url(pool: str, *rest: str) -> str:
    return "/".join([POOLS, *(quote(part, safe=":") for part in (pool, *rest))])


# -- tables ----------------------------------------------------------------------------

RESOURCE_HEADERS = ["ID", "INTERFACE", "EXTERNAL IP", "ADDRESS", "SHARD", "LEASE", "DEPRECATED"]


def _resource_row(r: dict[str, Any]) -> list[object]:
    return [r["id"], r["interface_id"], r["external_ip"], r.get("address"), r.get("shard_id"),
            (r.get("lease") or {}).get("state"), len(r.get("deprecated") or [])]


def resources_table(resources: list[dict[str, Any]]) -> str:
    if not resources:
        return "(no resources)"
    return format_table(RESOURCE_HEADERS, map(_resource_row, resources))


def _event(entry: dict[str, Any]) -> str:
    data = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "event"))
    return "  ".join(filter(None, (format_time(entry.get("at")), str(entry.get("event")), data)))


def history_text(r: dict[str, Any]) -> str:
    lines = [_event(e) for e in r.get("history") or []]
    return "\n".join(lines) if lines else f"(no history for resource {r['id']})"


def resource_table(r: dict[str, Any]) -> str:
    lease, move = r.get("lease") or {}, r.get("move")
    fields: list[list[object]] = [
        ["id", r["id"]], ["pool", r.get("pool_id")], ["interface", r["interface_id"]],
        ["external ip", r["external_ip"]], ["address", r.get("address")],
        ["shard", r.get("shard_id")], ["lease", lease.get("state")],
        ["lease expires", format_time(lease.get("expires_at"))],
        ["moving to", f"{move['to_address']} ({move['to_shard']}, {move['state']})"
         if move else None],
        ["enrolled", format_time(r.get("created_at"))]]
    out = format_table(["FIELD", "VALUE"], fields)
    deprecated = [[d["address"], d.get("shard_id"), d.get("connections"),
                   format_time(d.get("expires_at"))] for d in r.get("deprecated") or []]
    if deprecated:
        out += "\n\nDEPRECATED\n" + format_table(["ADDRESS", "SHARD", "CONNECTIONS", "RELEASED BY"],
                                                 deprecated)
    if r.get("history"):
        out += "\n\nHISTORY\n" + history_text(r)
    return out


def enrolled_text(a: dict[str, Any]) -> str:
    rap = a.get("rap") or {}
    server = rap.get("server") or "SERVER"
    return "\n".join([
        f"enrolled {a['interface_id']} in shard pool {a.get('pool_id')} as resource {a['id']}",
        f"external address: {a['external_ip']}",
        f"RAP server: {rap.get('server') or '(none: the interface is in no subnet)'} "
        f"port {rap.get('port')}",
        "",
        f"key: {a['key']}",
        "  (shown once: store it now; `hubctl shard key` issues a new one)",
        "",
        "on the resource:",
        f"  hub-rap --server {server} --port {rap.get('port')} --resource {a['id']} "
        f"--key {a['key']} --interface IFNAME"])


SHARD_HEADERS = ["ID", "CIDR", "STATE", "MEMBERS", "UTILIZATION", "CREATED", "EXPIRES"]


def shards_table(shards: list[dict[str, Any]]) -> str:
    rows = [[s["id"], s["cidr"], s["state"], len(s.get("members") or []),
             f"{100 * s['utilization']:.0f}%", format_time(s.get("created_at")),
             format_time(s.get("expires_at"))] for s in shards]
    return format_table(SHARD_HEADERS, rows) if rows else "(no shards yet)"


# -- commands --------------------------------------------------------------------------

def cmd_enroll(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body = {"interface_id": args.interface, "external_ip": args.external_ip, "id": args.id}
    answer = api.request("POST", pool_url(args.pool, "resources"),
                         json={k: v for k, v in body.items() if v is not None})
    out.emit(answer, enrolled_text)
    return EXIT_OK


def cmd_resources(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(pool_url(args.pool, "resources")), resources_table)
    return EXIT_OK


def cmd_resource(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(pool_url(args.pool, "resources", args.resource)), resource_table)
    return EXIT_OK


def cmd_key(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    answer = api.request("POST", pool_url(args.pool, "resources", args.resource, "key"))
    out.emit(answer, lambda a: f"new key for resource {a['id']}: {a['key']}\n"
                               "  (shown once; the old key no longer authenticates)")
    return EXIT_OK


def cmd_release(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    api.request("DELETE", pool_url(args.pool, "resources", args.resource))
    out.emit({"id": args.resource, "pool_id": args.pool, "released": True},
             lambda r: f"released resource {r['id']} of shard pool {r['pool_id']}")
    return EXIT_OK


def cmd_shards(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(pool_url(args.pool, "shards")), shards_table)
    return EXIT_OK


def find_resource(api: HubClient, rid: str) -> dict[str, Any]:
    """The resource ``rid`` of whichever pool holds it."""
    for pool in api.get(POOLS):
        for r in api.get(pool_url(pool["id"], "resources")):
            if r["id"] == rid:
                return dict(r)
    raise ApiError(404, {"title": "Not Found", "status": 404,
                         "detail": f"no shard pool has a resource {rid!r}"})


def cmd_history(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    pool, rid = (args.first, args.second) if args.second else (args.pool, args.first)
    if args.second and args.pool and args.pool != args.first:
        raise ApiError(400, {"title": "Bad Request", "status": 400,
                             "detail": f"the pool is given twice ({args.first}, {args.pool})"})
    r = api.get(pool_url(pool, "resources", rid)) if pool else find_resource(api, rid)
    out.emit(r, history_text)
    return EXIT_OK


def _pool_and_resource(p: argparse.ArgumentParser) -> None:
    p.add_argument("pool", metavar="POOL")
    p.add_argument("resource", metavar="RID", help="resource id")


def add_verbs(verbs: Subparsers, common: Common) -> None:
    """``shard enroll|resources|resource|key|release|shards|history``."""
    p = common.command(verbs, "enroll", cmd_enroll,
                       "enroll an interface as a resource of a pool (prints its key once)")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("interface", metavar="IFACE", help="interface id, e.g. 0000000000000a01:3")
    p.add_argument("--external-ip", metavar="IP",
                   help="its stable external address (default: the lowest free one)")
    p.add_argument("--id", metavar="ID", help="the resource's id (default: POOL-N)")
    p = common.command(verbs, "resources", cmd_resources,
                       "a pool's resources: address, shard, lease, deprecated addresses")
    p.add_argument("pool", metavar="POOL")
    _pool_and_resource(common.command(verbs, "resource", cmd_resource, "one resource in full"))
    _pool_and_resource(common.command(verbs, "key", cmd_key,
                                      "issue a new RAP key for a resource (prints it once)"))
    _pool_and_resource(common.command(verbs, "release", cmd_release,
                                      "release a resource (its interface and address are free)"))
    p = common.command(verbs, "shards", cmd_shards, "a pool's shards: members, utilization, state")
    p.add_argument("pool", metavar="POOL")
    p = common.command(verbs, "history", cmd_history,
                       "a resource's recent lease events: history [POOL] RID")
    p.add_argument("first", metavar="[POOL] RID")
    p.add_argument("second", nargs="?", metavar="RID", help=argparse.SUPPRESS)
    p.add_argument("--pool", metavar="POOL", help="the resource's pool (default: looked up)")
