"""hubctl: command-line client for the hub's northbound REST API.

Each command group registers itself through one ``add_*_command`` function
listed in ``COMMAND_GROUPS``; a handler receives the parsed arguments, a
``HubClient`` and an ``Output`` and returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

from controller.cli.documents import add_personality_command, add_subnet_command
from controller.cli.format import cell, format_duration, format_table, format_time
from controller.features.personality.cli import add_interface_command, add_operation_command, add_personality_apply_command
from controller.features.persona.cli import add_alerts_command, add_persona_command

DEFAULT_API = "http://127.0.0.1:8080"
FORMATS = ("table", "json", "yaml")
FOLLOW_INTERVAL_S = 1.0

EXIT_OK, EXIT_API_ERROR, EXIT_UNREACHABLE = 0, 1, 2


class Unreachable(Exception):
    """The API could not be contacted at all."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the hub API at {url}: {reason}")
        self.url, self.reason = url, reason


class ApiError(Exception):
    """The API answered with an error; ``problem`` is its RFC 7807 document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("title", f"HTTP {status}"))
        self.status, self.problem = status, problem


class HubClient:
    """Thin JSON client; pass ``client`` or ``transport`` to redirect requests (tests)."""

    def __init__(self, base_url: str, *, client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._owned = client is None
        self._http = client or httpx.Client(transport=transport, timeout=timeout)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                **kwargs: Any) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(method, self.base_url + path, params=query, **kwargs)
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise Unreachable(self.base_url, str(exc) or type(exc).__name__) from exc
        if resp.is_error:
            raise ApiError(resp.status_code, _problem_of(resp))
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(resp.status_code, {"title": "Invalid response", "status": resp.status_code,
                                              "detail": f"{method} {path} did not return JSON"}) from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def close(self) -> None:
        if self._owned:
            self._http.close()


def _problem_of(resp: httpx.Response) -> dict[str, Any]:
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "title" in doc:
        return doc
    return {"title": resp.reason_phrase or f"HTTP {resp.status_code}", "status": resp.status_code,
            "detail": resp.text.strip()[:300] or None}


@dataclass(frozen=True)
class Output:
    """Writes command results in the format chosen with -o."""

    format: str = "table"

    def emit(self, data: Any, table: Callable[[Any], str]) -> None:
        if self.format == "json":
            print(json.dumps(data, indent=2))
        elif self.format == "yaml":
            print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
        else:
            print(table(data))


Handler = Callable[[argparse.Namespace, HubClient, Output], int]


def _global_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # SUPPRESS: options may appear before or after the command without clobbering.
    parser.add_argument("--api", metavar="URL", default=argparse.SUPPRESS,
                        help=f"hub API base URL (env HUBCTL_API, default {DEFAULT_API})")
    parser.add_argument("-o", "--output", choices=FORMATS, default=argparse.SUPPRESS,
                        help="output format (default table)")
    return parser


_COMMON = _global_options(argparse.ArgumentParser(add_help=False))


def add_command(sub: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """Register one leaf command; nested groups call this on their own subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help,
                                                     parents=[_COMMON])
    parser.set_defaults(handler=handler)
    return parser


# -- status --------------------------------------------------------------------

def add_status_command(sub: Any) -> None:
    add_command(sub, "status", cmd_status, "controller health and one line per datapath")


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

def add_topology_command(sub: Any) -> None:
    add_command(sub, "topology", cmd_topology, "switches, inter-switch links and learned hosts")


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

def add_events_command(sub: Any) -> None:
    p = add_command(sub, "events", cmd_events, "the controller's event journal")
    p.add_argument("--after", type=int, default=0, metavar="N", help="only events with seq > N")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="page size (1-1000)")
    p.add_argument("--kind", help="only events of this kind")
    p.add_argument("--subject", help="only events about this subject")
    p.add_argument("-f", "--follow", action="store_true", help="keep polling for new events")


EVENT_HEADERS = ["SEQ", "TIME", "KIND", "SUBJECT", "MESSAGE"]


def _event_row(e: dict[str, Any]) -> list[object]:
    return [e["seq"], format_time(e["ts"]), e["kind"], e["subject"], e["message"]]


def events_table(page: dict[str, Any]) -> str:
    items = page["items"]
    return format_table(EVENT_HEADERS, map(_event_row, items)) if items else "(no events)"


def cmd_events(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    query = {"limit": args.limit, "kind": args.kind, "subject": args.subject}
    if not args.follow:
        out.emit(api.get("/v1/events", after=args.after, **query), events_table)
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


# -- entry point --------------------------------------------------------------------

COMMAND_GROUPS: list[Callable[[Any], None]] = [
    add_status_command,
    add_topology_command,
    add_events_command,
    add_subnet_command,
    add_personality_command,
    add_personality_apply_command,  # after add_personality_command: adds to its group
    add_interface_command,
    add_operation_command,
    add_persona_command,
    add_alerts_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = _global_options(argparse.ArgumentParser(
        prog="hubctl", description="Inspect and drive a hubshift controller."))
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add_group in COMMAND_GROUPS:
        add_group(sub)
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
