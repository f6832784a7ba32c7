"""hubctl command groups of the shadow feature.

* ``appliance`` (create -f FILE, list, get, set-percentage APP PCT, delete): the manifests;
* ``shadow``: the slots (``slots``, ``slot-add IFACE`` which prints the agent's key
  once with the ``hub-shadow-agent`` command line, ``slot-key``, ``slot-delete``) and
  an appliance's findings (``findings APP``);
* ``remediation`` (list, lift ID): the blocks in force.
"""
from __future__ import annotations

import argparse
from typing import Any

from controller.cli.client import EXIT_OK, HubClient
from controller.cli.commands import Common, Subparsers
from controller.cli.documents import Collection, add_document_group, fields_of, row_tables
from controller.cli.output import Output, format_table, format_time

SLOTS, REMEDIATIONS = "/v1/shadow-slots", "/v1/remediations"


# -- appliances ---------------------------------------------------------------------------

HEADERS = ["ID", "NAME", "INTERFACES", "ENABLED", "INSTANCES", "PERCENT", "PROFILES",
           "REVISION"]


def _instances(doc: dict[str, Any]) -> str:
    """"ready/asked", e.g. 1/2."""
    ready = sum(1 for i in doc.get("instances") or () if i.get("state") == "ready")
    return f"{ready}/{(fields_of(doc).get('shadowing') or {}).get('shadow_instance_count')}"


def _row(doc: dict[str, Any]) -> list[object]:
    f = fields_of(doc)
    shadowing = f.get("shadowing") or {}
    return [doc["id"], f.get("name"), f.get("interfaces"), shadowing.get("shadow_enabled"),
            _instances(doc), f"{(doc.get('percentage') or {}).get('current')}%",
            shadowing.get("shadow_analysis_profiles"), doc["revision"]]


def appliance_table(doc: dict[str, Any]) -> str:
    f = fields_of(doc)
    shadowing, percentage = f.get("shadowing") or {}, doc.get("percentage") or {}
    counters = doc.get("counters") or {}
    adjustment, remediation = f.get("adjustment") or {}, f.get("remediation") or {}
    services = [f"{s['protocol']}/{s['port']}" for s in f.get("service") or ()]
    rows: list[list[object]] = [
        ["id", doc["id"]], ["name", f.get("name")], ["interfaces", f.get("interfaces")],
        ["service", services or "every connection"], ["image", f.get("appliance_image")],
        ["enabled", shadowing.get("shadow_enabled")],
        ["instances", shadowing.get("shadow_instance_count")],
        ["percentage", f"{percentage.get('current')}% ({percentage.get('reason')}); "
                       f"configured {shadowing.get('shadow_traffic_percentage')}%"],
        ["adjustment", f"{adjustment.get('mode')} {adjustment.get('min')}..{adjustment.get('max')}%"],
        ["profiles", shadowing.get("shadow_analysis_profiles")],
        ["remediation", f"{remediation.get('mode')} (ttl {remediation.get('ttl')} s, at or above "
                        f"{remediation.get('min_severity')})"],
        ["mirrored", f"{counters.get('connections', 0)} connections, {counters.get('packets', 0)} "
                     f"packets, {counters.get('bytes', 0)} bytes, {counters.get('dropped', 0)} "
                     "dropped"],
        ["revision", doc["revision"]], ["updated", format_time(doc.get("updated_at"))]]
    if doc.get("unmirrored"):
        rows.insert(8, ["not mirrored", doc["unmirrored"]])
    holds = [f"{h['source']} until {format_time(h['until'])}" for h in doc.get("holds") or ()]
    if holds:
        rows.insert(8, ["held at 100%", ", ".join(holds)])
    if doc.get("added_instances"):
        rows.insert(7, ["added on load", doc["added_instances"]])
    out = format_table(["FIELD", "VALUE"], rows)
    instances = [[i["id"], i.get("slot_id"), i.get("state"),
                  (i.get("counters") or {}).get("connections", 0), _load(i.get("load")),
                  _figures(i.get("metrics"))] for i in doc.get("instances") or ()]
    if instances:
        out += "\n\nINSTANCES\n" + format_table(
            ["ID", "SLOT", "STATE", "CONNECTIONS", "LOAD", "PROFILES' FIGURES"], instances)
    return out


def _load(load: dict[str, Any] | None) -> str:
    if not load:
        return "-"
    return (f"{load.get('pps', 0):g} pps, {load.get('drops', 0)} drops, lag "
            f"{load.get('lag_ms', 0):g} ms, cpu {load.get('cpu_percent', 0):g}%")


def _figures(metrics: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted((metrics or {}).items())) or "-"


_, appliances_table = row_tables(HEADERS, _row, "(no appliances)")
APPLIANCES = Collection("appliance", "/v1/appliances", one=appliance_table, many=appliances_table)


def cmd_set_percentage(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    doc = api.request("PATCH", APPLIANCES.url(args.appliance),
                      json={"shadowing": {"shadow_traffic_percentage": args.percentage}})
    out.emit(doc, lambda d: f"appliance {d['id']}: shadow traffic percentage "
                            f"{fields_of(d)['shadowing']['shadow_traffic_percentage']}% "
                            f"(revision {d['revision']}); new connections only")
    return EXIT_OK


# -- slots ---------------------------------------------------------------------------------

def slots_table(slots: list[dict[str, Any]]) -> str:
    rows = [[s["id"], s["interface_id"], s.get("state"), s.get("appliance_id"),
             s.get("instance_id"), format_time(s.get("created_at"))] for s in slots]
    return format_table(["ID", "INTERFACE", "STATE", "APPLIANCE", "INSTANCE", "CREATED"],
                        rows) if rows else "(no shadow slots)"


def slot_added_text(a: dict[str, Any]) -> str:
    channel = a.get("channel") or {}
    server = channel.get("server") or "SERVER"
    return "\n".join([
        f"shadow slot {a['id']} on interface {a['interface_id']}",
        f"agent channel: {channel.get('server') or '(none: the interface is in no subnet)'} "
        f"port {channel.get('port')}",
        "",
        f"key: {a['key']}",
        "  (shown once: store it now; `hubctl shadow slot-key` issues a new one)",
        "",
        "on the slot's host:",
        f"  hub-shadow-agent --server {server} --port {channel.get('port')} --slot {a['id']} "
        f"--key {a['key']} --interface IFNAME"])


def cmd_slots(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(SLOTS), slots_table)
    return EXIT_OK


def cmd_slot_add(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body = {"interface_id": args.interface, "id": args.id}
    out.emit(api.request("POST", SLOTS, json={k: v for k, v in body.items() if v is not None}),
             slot_added_text)
    return EXIT_OK


def cmd_slot_key(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    answer = api.request("POST", f"{SLOTS}/{args.slot}/key")
    out.emit(answer, lambda a: f"new key for shadow slot {a['id']}: {a['key']}\n"
                               "  (shown once; the old key no longer authenticates)")
    return EXIT_OK


def cmd_slot_delete(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    api.request("DELETE", f"{SLOTS}/{args.slot}")
    out.emit({"id": args.slot, "deleted": True}, lambda r: f"deleted shadow slot {r['id']}")
    return EXIT_OK


# -- findings and remediations -------------------------------------------------------------

def five_tuple(t: dict[str, Any]) -> str:
    def end(ip: Any, port: Any) -> str:
        return f"{ip}:{port}" if port is not None else str(ip)
    return f"{t.get('protocol')} {end(t.get('src'), t.get('sport'))} > " \
           f"{end(t.get('dst'), t.get('dport'))}"


def findings_table(findings: list[dict[str, Any]]) -> str:
    rows = [[format_time(f.get("at")), f.get("profile"), f.get("severity"),
             five_tuple(f.get("five_tuple") or {}), f.get("action"),
             " ".join(f"{k}={v}" for k, v in (f.get("evidence") or {}).items())]
            for f in findings]
    return format_table(["AT", "PROFILE", "SEVERITY", "CONNECTION", "ACTION", "EVIDENCE"],
                        rows) if rows else "(no findings)"


def remediations_table(blocks: list[dict[str, Any]]) -> str:
    rows = [[r["id"], r.get("appliance_id"), r.get("source"), r.get("severity"),
             r.get("reason"), r.get("finding_id"), format_time(r.get("expires_at"))]
            for r in blocks]
    return format_table(["ID", "APPLIANCE", "SOURCE", "SEVERITY", "REASON", "FINDING", "ENDS"],
                        rows) if rows else "(no remediations)"


def cmd_findings(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(APPLIANCES.url(args.appliance, "findings"), limit=args.limit),
             findings_table)
    return EXIT_OK


def cmd_remediations(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(REMEDIATIONS, appliance_id=args.appliance), remediations_table)
    return EXIT_OK


def cmd_lift(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    lifted = api.request("DELETE", f"{REMEDIATIONS}/{args.id}")
    out.emit(lifted, lambda r: f"lifted remediation {r['id']} (source {r.get('source')}, "
                               f"appliance {r.get('appliance_id')})")
    return EXIT_OK


# -- the groups ----------------------------------------------------------------------------

def register(sub: Subparsers, common: Common) -> None:
    verbs = add_document_group(sub, common, APPLIANCES,
                               "shadowed appliances (create, list, get, set-percentage, delete)")
    p = common.command(verbs, "set-percentage", cmd_set_percentage,
                       "change the share of new connections mirrored to the shadows")
    p.add_argument("appliance", metavar="APP")
    p.add_argument("percentage", metavar="PCT", type=float, help="0.0-100.0, in steps of 0.1")

    shadow = common.group(sub, "shadow", "shadow slots and an appliance's findings")
    common.command(shadow, "slots", cmd_slots, "every shadow slot and its state")
    p = common.command(shadow, "slot-add", cmd_slot_add,
                       "set an interface aside as a shadow slot (prints its agent's key once)")
    p.add_argument("interface", metavar="IFACE", help="interface id, e.g. 0000000000000a01:3")
    p.add_argument("--id", metavar="ID", help="the slot's id (default: slot-N)")
    p = common.command(shadow, "slot-key", cmd_slot_key,
                       "issue a new key for a slot's agent (prints it once)")
    p.add_argument("slot", metavar="SLOT")
    p = common.command(shadow, "slot-delete", cmd_slot_delete, "remove a shadow slot")
    p.add_argument("slot", metavar="SLOT")
    p = common.command(shadow, "findings", cmd_findings, "an appliance's findings, newest first")
    p.add_argument("appliance", metavar="APP")
    p.add_argument("--limit", type=int, default=None, help="at most this many (default 100)")

    remediation = common.group(sub, "remediation", "blocks installed for findings")
    p = common.command(remediation, "list", cmd_remediations, "the blocks in force")
    p.add_argument("--appliance", metavar="APP", help="only this appliance's")
    p = common.command(remediation, "lift", cmd_lift, "lift a block early")
    p.add_argument("id", metavar="ID")
