"""How hubctl shows personality documents, interfaces, operations, dry runs and A/B applies."""

from __future__ import annotations

from typing import Any

from controller.cli.documents import fields_of
from controller.cli.output import cell, format_table, format_time, plural

DEFAULT_CHECK_TIMEOUT = 3.0


# -- personality documents --------------------------------------------------------------

PERSONALITY_HEADERS = ["ID", "NAME", "SUBNET", "ADDRESSES", "RULES", "DEFAULT", "REVISION"]


def _personality_row(doc: dict[str, Any]) -> list[object]:
    f = fields_of(doc)
    return [doc["id"], f.get("name"), f.get("subnet_id"), f.get("ip_addresses") or [],
            len(f.get("firewall_rules") or []), f.get("default_action", "deny"), doc["revision"]]


def personalities_table(docs: list[dict[str, Any]]) -> str:
    return format_table(PERSONALITY_HEADERS, map(_personality_row, docs)) if docs else "(no personalities)"


def _port(value: Any) -> str:
    return "any" if value is None else str(value)


def _firewall_summary(f: dict[str, Any]) -> str:
    n = len(f.get("firewall_rules") or [])
    return f"{plural(n, 'rule')}, default {f.get('default_action', 'deny')}"


def personality_table(doc: dict[str, Any]) -> str:
    f = fields_of(doc)
    qos = f.get("qos_settings") or {}
    vpn = f.get("vpn_tunnel_config")
    apps = f.get("application_access_policy") or {}
    fields: list[list[object]] = [
        ["id", doc["id"]], ["name", f.get("name")], ["revision", doc["revision"]],
        ["updated", format_time(doc["updated_at"])], ["subnet", f.get("subnet_id")],
        ["addresses", f.get("ip_addresses") or []], ["dns servers", f.get("dns_servers") or []],
        ["firewall", _firewall_summary(f)],
        ["qos", ", ".join(f"{k}={v}" for k, v in qos.items()) or None],
        ["vpn", f"{vpn['type']} to {vpn['remote_ip']} for {','.join(vpn['remote_prefixes'])}"
         if vpn else None],
        ["apps allowed", [a["name"] for a in apps.get("allow", [])]],
        ["apps denied", [a["name"] for a in apps.get("deny", [])]],
        ["expires after", f"{f['expires_after']}s" if f.get("expires_after") else None],
    ]
    out = format_table(["FIELD", "VALUE"], fields)
    rules = [[i, r.get("direction", "both"), r["protocol"], r.get("source", "0.0.0.0/0"),
              r.get("destination", "0.0.0.0/0"), _port(r.get("port")), r["action"]]
             for i, r in enumerate(f.get("firewall_rules") or [])]
    if rules:
        out += "\n\nFIREWALL RULES\n" + format_table(
            ["#", "DIRECTION", "PROTOCOL", "SOURCE", "DESTINATION", "PORT", "ACTION"], rules)
    routes = [[r["destination"], r["next_hop"]] for r in f.get("routing_table") or []]
    if routes:
        out += "\n\nROUTES\n" + format_table(["DESTINATION", "NEXT HOP"], routes)
    return out


# -- values ---------------------------------------------------------------------------------

def format_check(check: dict[str, Any]) -> str:
    """The spec form of a stored health check (see ``cli.parse_check``)."""
    text = check["type"]
    if check.get("target"):
        text += f":{check['target']}"
    if check.get("port") is not None:
        text += f":{check['port']}"
    timeout = check.get("timeout_seconds")
    if timeout is not None and timeout != DEFAULT_CHECK_TIMEOUT:
        text += f"@{timeout:g}"
    return text


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


# -- interfaces -------------------------------------------------------------------------------

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


# -- operations -------------------------------------------------------------------------------

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


def unchanged_line(answer: dict[str, Any]) -> str:
    return f"unchanged (already on it): {', '.join(answer['unchanged'])}"


def apply_table(answer: dict[str, Any]) -> str:
    ops = answer["operations"]
    rows = [[op["interface_id"], op["id"], op.get("from_personality_id"), op["to_personality_id"],
             op["state"]] for op in ops]
    out = format_table(["INTERFACE", "OPERATION", "FROM", "TO", "STATE"], rows) if rows \
        else "(no operations started)"
    if answer.get("unchanged"):
        out += "\n\n" + unchanged_line(answer)
    return out
