"""hubctl command groups of personas: ``persona`` and ``alerts``.

``persona create -f FILE`` sends the file as written (YAML or JSON) so the
API's errors name the fields of that file; ``--dry-run`` prints the flows it
would install on each datapath, one per line. ``persona extend ID --by 2h``
moves the deadline from the current expiration (not from now); ``--to`` sets
it. Tables show what an operator looks for first: state, time left, gateway,
NAT mapping.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from controller.cli.client import EXIT_OK, HubClient, invalid_response
from controller.cli.commands import Common, Subparsers
from controller.cli.documents import Collection, Filter, Preview
from controller.cli.output import Output, format_duration, format_table, format_time, plural
from controller.core.documents import parse_duration
from controller.features.persona.document import parse_expiration

_now: Callable[[], float] = time.time  # replaced by tests


# -- values -------------------------------------------------------------------------------

def duration_arg(text: str) -> int:
    """argparse type: "2h", "30m", "1d", "90" -> seconds."""
    try:
        return parse_duration(text)
    except Exception as exc:  # the parser's sentence is the message
        raise argparse.ArgumentTypeError(str(exc).splitlines()[0]) from None


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def expires_in(p: dict[str, Any], now: float) -> str:
    if p.get("state") == "expired":
        return "expired"
    left = p["expires_at"] - now
    return format_duration(left) if left > 0 else "due"


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_rate(bps: float) -> str:
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if abs(bps) < 1000 or unit == "Gbit/s":
            return f"{bps:.0f} {unit}" if unit == "bit/s" else f"{bps:.1f} {unit}"
        bps /= 1000
    raise AssertionError("unreachable")


def _nat(p: dict[str, Any]) -> str | None:
    return (p.get("nat") or {}).get("hub_range")


# -- tables -------------------------------------------------------------------------------

LIST_HEADERS = ["ID", "NAME", "RANGE", "GATEWAY", "NAT", "STATE", "EXPIRES IN", "ATTACHED"]


def _row(p: dict[str, Any], now: float) -> list[object]:
    d = p["document"]
    return [p["id"], d.get("name"), d.get("ip_range"), p.get("gateway"), _nat(p), p.get("state"),
            expires_in(p, now), len(p.get("attachments") or [])]


def personas_table(docs: list[dict[str, Any]]) -> str:
    now = _now()
    return format_table(LIST_HEADERS, [_row(p, now) for p in docs]) if docs else "(no personas)"


def persona_table(p: dict[str, Any]) -> str:
    d = p["document"]
    qos = d.get("qos") or {}
    thresholds = {k: v for k, v in (d.get("alert_thresholds") or {}).items()
                  if k in ("bandwidth", "bytes", "security_events", "expiry_warning")}
    expiry = format_time(p.get("expires_at"))
    if p.get("state") == "active":
        expiry += f" (in {expires_in(p, _now())})"
    fields: list[list[object]] = [
        ["id", p["id"]], ["name", d.get("name")], ["state", p.get("state")],
        ["range", d.get("ip_range")], ["gateway", p.get("gateway")], ["nat", _nat(p)],
        ["index", p.get("index")], ["protocols", d.get("protocols") or []],
        ["bandwidth", qos.get("bandwidth")], ["latency", qos.get("latency")],
        ["expires", expiry], ["expired at", format_time(p["expired_at"]) if p.get("expired_at") else None],
        ["owner", d.get("owner")], ["description", d.get("description")],
        ["alert thresholds", ", ".join(f"{k}={v}" for k, v in thresholds.items()) or None],
        ["revision", p.get("revision")],
    ]
    out = format_table(["FIELD", "VALUE"], fields)
    policies = [[i, s["protocol"], s.get("port", "any"), s.get("source", "any"),
                 s.get("destination", "any"), s["action"]]
                for i, s in enumerate(d.get("security_policies") or [])]
    if policies:
        out += "\n\nSECURITY POLICIES\n" + format_table(
            ["#", "PROTOCOL", "PORT", "SOURCE", "DESTINATION", "ACTION"], policies)
    attached = [[a["interface_id"], a["ip"], a.get("mac")] for a in p.get("attachments") or []]
    if attached:
        out += "\n\nATTACHMENTS\n" + format_table(["INTERFACE", "IP", "MAC"], attached)
    return out


def created_table(p: dict[str, Any]) -> str:
    out = persona_table(p)
    for r in p.get("remapped") or []:
        out += f"\nNAT: persona {r['persona_id']} is now reached at {r['hub_range']}"
    return out


def preview_flows(p: dict[str, Any]) -> dict[str, list[str]]:
    """The dry run's ``flows``: per datapath, a list of rendered flows (and nothing else)."""
    flows = p.get("flows", {})
    if isinstance(flows, dict) and all(isinstance(fl, list) and all(isinstance(f, str) for f in fl)
                                       for fl in flows.values()):
        return flows
    raise invalid_response(200, "the dry run's flows are not a list of flows per datapath")


def preview_table(p: dict[str, Any]) -> str:
    record = p["record"]
    lines = [f"dry run: persona {p['id']} would get index {record['index']}, gateway "
             f"{record['gateway']}, NAT {_nat(record) or 'none'} (nothing was stored)"]
    for r in p.get("remapped") or []:
        lines.append(f"  persona {r['persona_id']} would be reached at {r['hub_range']}")
    for dpid, flows in sorted(preview_flows(p).items()):
        lines.append(f"\n{dpid}: {plural(len(flows), 'flow')}")
        lines.extend(f"  {f}" for f in flows)
    if p.get("meters"):
        lines.append(f"\nmeters: {len(p['meters'])}")
        lines.extend(f"  {m}" for m in p["meters"])
    return "\n".join(lines)


def usage_table(u: dict[str, Any]) -> str:
    rows = [["bytes", human_bytes(u["bytes"]["in"]), human_bytes(u["bytes"]["out"])],
            ["packets", u["packets"]["in"], u["packets"]["out"]],
            ["rate", human_rate(u["rate_bps"]["in"]), human_rate(u["rate_bps"]["out"])]]
    return (f"persona {u['persona_id']} ({u['state']})\n\n" + format_table(["", "IN", "OUT"], rows)
            + f"\n\nconnections: {u['connections']}\ndenied attempts: {u['denied']}\n"
            + (f"latency: {u['latency_ms']:g} ms\n" if u.get("latency_ms") is not None else "")
            + f"updated: {format_time(u['updated_at']) if u.get('updated_at') else 'never'}")


def _alert_time(at: Any) -> str:
    """Local time, like every hubctl table (the runtime stores RFC 3339 text)."""
    if isinstance(at, (int, float)) and not isinstance(at, bool):
        return format_time(at)
    try:
        return format_time(parse_expiration(at))
    except Exception:  # not a time after all: show it as it is
        return str(at) if at else "-"


ALERT_HEADERS = ["TIME", "SEVERITY", "KIND", "SUBJECT", "VALUE", "THRESHOLD", "MESSAGE"]


def alerts_table(alerts: list[dict[str, Any]]) -> str:
    rows = [[_alert_time(a.get("at")), a.get("severity"), a.get("kind"),
             a.get("persona_id") or a.get("appliance_id") or a.get("subject"),
             a.get("value"), a.get("threshold"), a.get("message")] for a in alerts]
    return format_table(ALERT_HEADERS, rows) if rows else "(no alerts)"


# -- commands -----------------------------------------------------------------------------

PERSONAS = Collection(
    "persona", "/v1/personas", one=persona_table, many=personas_table, created=created_table,
    preview=Preview(preview_table, "show the flows it would install; store nothing"),
    filters=(Filter("state", "only in this state", ("active", "expired")),))


def cmd_extend(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    if args.to is not None:
        expiration, headers = args.to, {}
    else:  # from the current deadline, and only if nobody changed it meanwhile
        current = api.get(PERSONAS.url(args.id))
        expiration = rfc3339(current["expires_at"] + args.by)
        headers = {"If-Match": f'"{current["revision"]}"'}
    doc = api.request("PATCH", PERSONAS.url(args.id), json={"expiration": expiration}, headers=headers)
    out.emit(doc, lambda p: f"persona {p['id']} now expires at {p['document']['expiration']} "
                            f"(in {expires_in(p, _now())})")
    return EXIT_OK


def cmd_usage(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(PERSONAS.url(args.id, "usage")), usage_table)
    return EXIT_OK


def cmd_attach(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body: dict[str, Any] = {"interface_id": args.interface}
    if args.ip:
        body["ip"] = args.ip
    doc = api.request("POST", PERSONAS.url(args.id, "attachments"), json=body)
    out.emit(doc, lambda a: f"attached {a['interface_id']} to persona {a['persona_id']} as "
                            f"{a['ip']}/{a['prefix_length']} (gateway {a['gateway']})")
    return EXIT_OK


def cmd_detach(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    doc = api.request("DELETE", PERSONAS.url(args.id, "attachments", args.interface))
    out.emit(doc, lambda a: f"detached {a['interface_id']} from persona {a['persona_id']} "
                            f"(was {a['ip']})")
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get("/v1/alerts", persona_id=args.persona, appliance_id=args.appliance,
                     kind=args.kind, limit=args.limit),
             alerts_table)
    return EXIT_OK


def register(sub: Subparsers, common: Common) -> None:
    verbs = common.group(sub, "persona", "temporary isolated segments "
                         "(create, list, get, extend, delete, usage, attach, detach)")
    PERSONAS.add_create(verbs, common)
    PERSONAS.add_list(verbs, common)
    PERSONAS.add_get(verbs, common)
    p = common.command(verbs, "extend", cmd_extend, "move a persona's expiration")
    p.add_argument("id", metavar="ID")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--to", metavar="TIME", help="new expiration, RFC 3339 (2030-12-31T23:59:59Z)")
    when.add_argument("--by", type=duration_arg, metavar="DURATION",
                      help='add to the current expiration: "30m", "2h", "1d" or seconds')
    PERSONAS.add_delete(verbs, common, "tear a persona down and remove it")
    p = common.command(verbs, "usage", cmd_usage, "bytes, packets, connections, denied attempts, rate")
    p.add_argument("id", metavar="ID")
    p = common.command(verbs, "attach", cmd_attach, "attach an interface to a persona")
    p.add_argument("id", metavar="ID")
    p.add_argument("interface", metavar="IFACE", help="interface id, e.g. 0000000000000a01:3")
    p.add_argument("--ip", metavar="IP", help="address in the range (default: the lowest free one)")
    p = common.command(verbs, "detach", cmd_detach, "detach an interface from a persona")
    p.add_argument("id", metavar="ID")
    p.add_argument("interface", metavar="IFACE")

    p = common.command(sub, "alerts", cmd_alerts, "alerts (personas' thresholds, shadows' findings), newest first")
    p.add_argument("--persona", metavar="ID", help="only this persona's")
    p.add_argument("--appliance", metavar="ID", help="only this appliance's (shadow findings)")
    p.add_argument("--kind", help="only this kind (bandwidth, bytes, security_events, latency, "
                                  "expiry_warning, shadow_finding)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (1-1000)")
