"""hubctl commands about the hub itself: ``status``, ``topology`` and ``events``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import yaml

from controller.cli.client import EXIT_OK, HubClient
from controller.cli.commands import Common, Subparsers
from controller.cli.output import Output, cell, format_duration, format_table, format_time

FOLLOW_INTERVAL_S = 1.0


# -- status --------------------------------------------------------------------

def cmd_status(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    data = {"health": api.get("/v1/health"), "datapaths": api.get("/v1/datapaths")}
    out.emit(data, status_table)
    return EXIT_OK


def status_table(data: dict[str, Any]) -> str:
    h = data["health"]
    summary = (f"hub: {h['status']}   datapaths connected: {h['datapaths_connected']}   "
               f"uptime: {format_duration(h['uptime_s'])}")
    if not data["datapaths"]:
        return f"{summary}\n\n(no datapaths)"
    rows = []
    for dp in data["datapaths"]:
        up = sum(1 for p in dp["ports"] if p["up"])
        flows = dp["flows"]
        rows.append([dp["id"], dp["connected"], dp["of_version"], f"{up}/{len(dp['ports'])}",
                     f"{flows['installed']}/{flows['desired']}", flows["in_sync"]])
    headers = ["DATAPATH", "CONNECTED", "OPENFLOW", "PORTS UP", "FLOWS", "IN SYNC"]
    return f"{summary}\n\n{format_table(headers, rows)}"


# -- topology --------------------------------------------------------------------

def cmd_topology(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get("/v1/topology"), topology_table)
    return EXIT_OK


def _section(title: str, headers: list[str], rows: list[list[object]]) -> str:
    return f"{title}\n" + (format_table(headers, rows) if rows else "(none)")


def topology_table(topo: dict[str, Any]) -> str:
    switches = [[s["id"], s["dpid"], s["connected"]] for s in topo["switches"]]
    links = [[f"{ln['src']['datapath']}:{ln['src']['port_no']}",
              f"{ln['dst']['datapath']}:{ln['dst']['port_no']}"] for ln in topo["links"]]
    hosts = [[h["mac"], h["ips"], h["datapath"], h["port_no"], format_time(h["last_seen"])]
             for h in topo["hosts"]]
    return "\n\n".join([
        _section("SWITCHES", ["ID", "DPID", "CONNECTED"], switches),
        _section("LINKS", ["SRC", "DST"], links),
        _section("HOSTS", ["MAC", "IPS", "DATAPATH", "PORT", "LAST SEEN"], hosts),
    ])


# -- events --------------------------------------------------------------------

EVENT_HEADERS = ["SEQ", "TIME", "KIND", "SUBJECT", "MESSAGE"]


def _event_row(e: dict[str, Any]) -> list[object]:
    return [e["seq"], format_time(e["ts"]), e["kind"], e["subject"], e["message"]]


def events_table(page: dict[str, Any]) -> str:
    items = page["items"]
    return format_table(EVENT_HEADERS, map(_event_row, items)) if items else "(no events)"


def cmd_events(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    query = {"limit": args.limit, "kind": args.kind, "subject": args.subject}
    if not args.follow:
        newest = args.after == 0 or None               # without --after: the latest events
        out.emit(api.get("/v1/events", after=args.after, newest=newest, **query), events_table)
        return EXIT_OK
    after = args.after
    try:
        while True:
            page = api.get("/v1/events", after=after, **query)
            for event in page["items"]:
                print_event_line(event, out.format)
            sys.stdout.flush()
            after = page["next"] if page["next"] is not None else after
            if len(page["items"]) < args.limit:
                time.sleep(FOLLOW_INTERVAL_S)
    except KeyboardInterrupt:
        return EXIT_OK


def print_event_line(event: dict[str, Any], fmt: str) -> None:
    """Streaming form: JSON lines, a growing YAML list, or one text line each."""
    if fmt == "json":
        print(json.dumps(event))
    elif fmt == "yaml":
        print(yaml.safe_dump([event], sort_keys=False), end="")
    else:
        print("  ".join(cell(v) for v in _event_row(event)))


# -- registration ----------------------------------------------------------------

def register(sub: Subparsers, common: Common) -> None:
    common.command(sub, "status", cmd_status, "controller health and one line per datapath")
    common.command(sub, "topology", cmd_topology, "switches, inter-switch links and learned hosts")
    p = common.command(sub, "events", cmd_events, "the controller's event journal")
    p.add_argument("--after", type=int, default=0, metavar="N", help="only events with seq > N")
    p.add_argument("--limit", type=int, default=100, metavar="N",
                   help="page size (1-1000); without --after, the latest N events")
    p.add_argument("--kind", help="only events of this kind")
    p.add_argument("--subject", help="only events about this subject")
    p.add_argument("-f", "--follow", action="store_true", help="keep polling for new events")
