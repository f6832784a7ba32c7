"""hubctl command groups of the policy feature.

* ``category set IFACE CAT... | clear IFACE | list``: an interface's categories
  (``PATCH /v1/interfaces/{id}``) and every category's members;
* ``address-set create -f FILE | list | get ID | delete ID``: the address sets;
* ``learn start CAT [--for 10m] | stop ID | status [ID]``: learning sessions;
* ``policy list | show CAT [--version N] [-o graph|dot|k8s] | versions CAT |
  diff CAT V1 V2``: the consolidated policies (``-o graph|dot|k8s`` are extra
  formats of ``show``, given after the command);
* ``profile create SRC TGT --strength N [--audit] | list | get ID | preview ID |
  delete ID``: mirroring profiles;
* ``review list [--category CAT] [--state S] | approve ID [--ttl 1h] [--reason TEXT] |
  deny ID [--reason TEXT]``: reviews of unseen connections;
* ``override add IFACE --action allow|deny --proto P [--port N] --peer PEER
  --reason TEXT [--ingress] | list IFACE | delete IFACE OID``: per-interface overrides;
* ``audit [--limit N] [--what WHAT]``: the audit trail, newest first.

Every command takes ``-o json|yaml`` for the API's answer as it is.
"""
from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from controller.cli.client import EXIT_OK, HubClient
from controller.cli.commands import Common, Subparsers, global_options
from controller.cli.documents import Collection, add_document_group, fields_of, row_tables
from controller.cli.output import FORMATS, Output, format_table, format_time
from controller.core.documents import parse_duration

MERGE_PATCH = {"content-type": "application/merge-patch+json"}
CATEGORIES, SESSIONS, POLICIES = "/v1/categories", "/v1/learning-sessions", "/v1/policies"
REVIEWS, AUDIT = "/v1/policy-reviews", "/v1/audit"
EXPORTS = ("graph", "dot", "k8s")


def url(base: str, *parts: str) -> str:
    """``base`` (a collection) with the path segments ``parts``, each quoted."""
    return base + "".join("/" + quote(part, safe=":") for part in parts)


# -- categories ----------------------------------------------------------------------------

def categories_text(doc: dict[str, Any]) -> str:
    cats = ", ".join(doc.get("categories") or ()) or "none"
    return f"interface {doc['id']}: categories {cats} (revision {doc['revision']})"


def cmd_category_set(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.request("PATCH", url("/v1/interfaces", args.interface), headers=MERGE_PATCH,
                         content=json.dumps({"categories": args.categories})), categories_text)
    return EXIT_OK


def cmd_category_clear(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.request("PATCH", url("/v1/interfaces", args.interface), headers=MERGE_PATCH,
                         content=json.dumps({"categories": None})), categories_text)
    return EXIT_OK


def categories_table(cats: list[dict[str, Any]]) -> str:
    rows = [[c["category"], len(c["members"]), c["members"]] for c in cats]
    return format_table(["CATEGORY", "COUNT", "MEMBERS"], rows) if rows else "(no categories)"


def cmd_category_list(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(CATEGORIES), categories_table)
    return EXIT_OK


# -- address sets --------------------------------------------------------------------------

set_table, sets_table = row_tables(["ID", "NAME", "CIDRS", "REVISION"],
                           lambda d: [d["id"], fields_of(d).get("name"),
                                      fields_of(d).get("cidrs"), d["revision"]],
                           "(no address sets)")
ADDRESS_SETS = Collection("address-set", "/v1/address-sets",
                          one=set_table, many=sets_table)


# -- learning sessions ---------------------------------------------------------------------

SESSION_HEADERS = ["ID", "CATEGORY", "STATE", "MEMBERS", "CONNECTIONS", "RULES", "STARTED",
                   "ENDS", "VERSION"]


def _session_row(s: dict[str, Any]) -> list[object]:
    p = s.get("progress") or {}
    ends = format_time(s["ends_at"]) if s.get("ends_at") else "when stopped"
    if s.get("state") == "stopped":
        ends = f"stopped {format_time(s.get('stopped_at'))}"
    return [s["id"], s["category"], s["state"], p.get("members"), p.get("connections"),
            p.get("rules"), format_time(s.get("started_at")), ends, s.get("policy_version")]


def sessions_table(sessions: list[dict[str, Any]]) -> str:
    return format_table(SESSION_HEADERS, map(_session_row, sessions)) if sessions \
        else "(no learning sessions)"


def started_text(s: dict[str, Any]) -> str:
    until = f"until {format_time(s['ends_at'])}" if s.get("ends_at") else "until stopped"
    return (f"learning {s['category']}: session {s['id']} ({until}); "
            f"hubctl learn stop {s['id']} ends it")


def stopped_text(s: dict[str, Any]) -> str:
    p = s.get("progress") or {}
    return (f"stopped session {s['id']} of {s['category']}: {p.get('connections', 0)} "
            f"connections, {p.get('rules', 0)} rules so far; the next policy version follows "
            f"(hubctl learn status {s['id']})")


def cmd_learn_start(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body: dict[str, Any] = {"category": args.category}
    if args.duration is not None:
        body["duration"] = args.duration
    out.emit(api.request("POST", SESSIONS, json=body), started_text)
    return EXIT_OK


def cmd_learn_stop(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.request("POST", url(SESSIONS, args.id, "stop")), stopped_text)
    return EXIT_OK


def cmd_learn_status(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    if args.id:
        out.emit(api.get(url(SESSIONS, args.id)), lambda s: sessions_table([s]))
    else:
        out.emit(api.get(SESSIONS, category=args.category), sessions_table)
    return EXIT_OK


# -- policies ------------------------------------------------------------------------------

RULE_HEADERS = ["DIRECTION", "PROTOCOL", "PORT", "PEER", "ACTION", "SUPPORT", "CONNECTIONS",
                "FIRST SEEN", "LAST SEEN"]


def _rule_row(r: dict[str, Any]) -> list[object]:
    return [r["direction"], r["protocol"], r.get("port") if r.get("port") is not None else "any",
            r["peer"], r.get("action"), r["support"], r.get("connections"),
            format_time(r.get("first_seen")), format_time(r.get("last_seen"))]


def rules_table(rules: list[dict[str, Any]]) -> str:
    return format_table(RULE_HEADERS, map(_rule_row, rules)) if rules else "(no rules)"


def policy_text(p: dict[str, Any]) -> str:
    head = f"policy of {p['category']}, version {p['version']}"
    if p.get("reason"):
        head += f" ({p['reason']}, {format_time(p.get('created_at'))})"
    return f"{head}\n\n{rules_table(p.get('rules') or [])}"


def policies_table(policies: list[dict[str, Any]]) -> str:
    rows = [[p["category"], p["version"], p["rules"], format_time(p.get("updated_at"))]
            for p in policies]
    return format_table(["CATEGORY", "VERSION", "RULES", "UPDATED"], rows) if rows \
        else "(no policies yet: learn a category first)"


def versions_table(versions: list[dict[str, Any]]) -> str:
    rows = [[v["version"], v["rules"], format_time(v.get("created_at")), v.get("reason")]
            for v in versions]
    return format_table(["VERSION", "RULES", "CREATED", "REASON"], rows)


def diff_text(d: dict[str, Any]) -> str:
    lines = [f"policy of {d['category']}: version {d['from']} -> {d['to']}"]
    lines += [f"+ {r['id']}  support {r['support']}" for r in d["added"]]
    lines += [f"- {r['id']}  support {r['support']}" for r in d["removed"]]
    lines += [f"~ {c['id']}  " + ", ".join(
        f"{f} {c['before'].get(f)} -> {c['after'].get(f)}" for f in c.get("fields") or ())
        for c in d["changed"]]
    if len(lines) == 1:
        lines.append("(no change)")
    return "\n".join(lines)


def cmd_policy_list(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(POLICIES), policies_table)
    return EXIT_OK


def cmd_policy_show(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    path = url(POLICIES, args.category)
    if out.format == "graph":
        print(json.dumps(api.get(path, format="graph", version=args.version), indent=2))
    elif out.format in EXPORTS:
        print(api.text(path, format=out.format, version=args.version), end="")
    else:
        out.emit(api.get(path, version=args.version), policy_text)
    return EXIT_OK


def cmd_policy_versions(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(url(POLICIES, args.category, "versions")), versions_table)
    return EXIT_OK


def cmd_policy_diff(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(url(POLICIES, args.category, "diff"), **{"from": args.old, "to": args.new}),
             diff_text)
    return EXIT_OK


def drift_text(answer: dict[str, Any]) -> str:
    rows = [["unused" if r["unused"] else "", "orphaned" if r["orphaned"] else "", r["direction"],
             r["protocol"], r["port"] if r["port"] is not None else "-", r["peer"], r["support"],
             r["current_support"],
             "-" if r["idle_seconds"] is None else f"{r['idle_seconds']:.0f} s"]
            for r in answer["rules"]]
    head = (f"drift of {answer['category']}, version {answer['version']}: "
            f"{len(answer['unused'])} rule(s) unused for {answer['unused_seconds']} s, "
            f"{len(answer['orphaned'])} orphaned, {answer['members']} member(s) now")
    return head + ("\n\n" + format_table(["", "", "DIRECTION", "PROTOCOL", "PORT", "PEER",
                                           "SUPPORT", "NOW", "IDLE"], rows) if rows else "")


def cmd_policy_drift(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(url(POLICIES, args.category, "drift"), unused=args.unused), drift_text)
    return EXIT_OK


def export_common() -> Common:
    """The parent of ``policy show``: the global options, with -o graph|dot|k8s too."""
    parent = global_options(argparse.ArgumentParser(add_help=False))
    for action in parent._actions:
        if action.dest == "output":
            action.choices = (*FORMATS, *EXPORTS)
            action.help = "output format (default table); graph: node-link JSON, dot: " \
                          "Graphviz, k8s: a Kubernetes NetworkPolicy"
    return Common(parent)


# -- mirroring profiles --------------------------------------------------------------------

PROFILE_HEADERS = ["ID", "SOURCE", "TARGET", "STRENGTH", "MODE", "REVISION"]
profile_table, profiles_table = row_tables(
    PROFILE_HEADERS, lambda d: [d["id"], fields_of(d).get("source_category"),
                                fields_of(d).get("target_category"),
                                f"{fields_of(d).get('strength')}%", fields_of(d).get("mode"),
                                d["revision"]], "(no mirroring profiles)")
PROFILES = Collection("profile", "/v1/mirroring-profiles",
                      one=profile_table, many=profiles_table)


def preview_text(p: dict[str, Any]) -> str:
    version = p.get("policy_version")
    head = (f"profile {p['profile_id']}: {p['source_category']} -> {p['target_category']} at "
            f"{p['strength']}% ({p['mode']}): ")
    if version is None:
        return head + f"{p['source_category']} has no policy yet; the target gets default deny"
    head += f"{p['cut']} of {p['ranked']} rules of version {version}, then default deny"
    rows = [["in" if r["included"] else "out", r.get("rank"), r["direction"], r["protocol"],
             r.get("port") if r.get("port") is not None else "any", r["peer"], r["reason"]]
            for r in p["rows"]]
    return head + "\n\n" + (format_table(["", "RANK", "DIRECTION", "PROTOCOL", "PORT", "PEER",
                                          "REASON"], rows) if rows else "(no rules)")


def cmd_profile_create(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body: dict[str, Any] = {"source_category": args.source, "target_category": args.target,
                            "strength": args.strength, "mode": "audit" if args.audit else "enforce"}
    if args.id:
        body["id"] = args.id
    out.emit(api.request("POST", PROFILES.path, json=body), PROFILES.one)
    return EXIT_OK


def cmd_profile_preview(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(PROFILES.url(args.id, "preview")), preview_text)
    return EXIT_OK


# -- reviews -------------------------------------------------------------------------------

REVIEW_HEADERS = ["ID", "STATE", "DIRECTION", "PROTOCOL", "PORT", "PEER", "MEMBERS", "COUNT",
                  "FIRST SEEN", "EXPIRES"]


def _port(value: Any) -> object:
    return value if value is not None else "any"


def reviews_table(reviews: list[dict[str, Any]]) -> str:
    rows = [[r["id"], r["state"], r["direction"], r["protocol"], _port(r.get("port")), r["peer"],
             len(r.get("members") or ()), r.get("count"), format_time(r.get("first_seen")),
             format_time(r["expires_at"]) if r.get("expires_at") else "-"] for r in reviews]
    return format_table(REVIEW_HEADERS, rows) if rows else "(no reviews)"


def decided_text(r: dict[str, Any]) -> str:
    until = f" until {format_time(r['expires_at'])}" if r.get("expires_at") else ""
    return f"review {r['id']}: {r['state']}{until}"


def cmd_review_list(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(REVIEWS, category=args.category, state=args.state), reviews_table)
    return EXIT_OK


def _decision(args: argparse.Namespace, ttl: str | None = None) -> dict[str, Any]:
    """A decision's body: the ttl and reason given."""
    body = {"ttl": ttl, "reason": args.reason}
    return {k: v for k, v in body.items() if v is not None}


def cmd_review_approve(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.request("POST", url(REVIEWS, args.id, "approve"),
                         json=_decision(args, args.ttl)), decided_text)
    return EXIT_OK


def cmd_review_deny(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.request("POST", url(REVIEWS, args.id, "deny"), json=_decision(args)),
             decided_text)
    return EXIT_OK


# -- overrides -----------------------------------------------------------------------------

OVERRIDE_HEADERS = ["ID", "ACTION", "DIRECTION", "PROTOCOL", "PORT", "PEER", "REASON", "CREATED"]


def overrides_url(interface: str, *parts: str) -> str:
    return url("/v1/interfaces", interface, "policy-overrides", *parts)


def overrides_table(overrides: list[dict[str, Any]]) -> str:
    rows = [[o["id"], o["action"], o["direction"], o["protocol"], _port(o.get("port")),
             o["peer"], o["reason"], format_time(o.get("created_at"))] for o in overrides]
    return format_table(OVERRIDE_HEADERS, rows) if rows else "(no overrides)"


def override_text(o: dict[str, Any]) -> str:
    return (f"override {o['id']} on {o['interface_id']}: {o['action']} {o['direction']} "
            f"{o['protocol']}/{_port(o.get('port'))} {o['peer']} ({o['reason']})")


def cmd_override_add(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body: dict[str, Any] = {"action": args.action, "protocol": args.proto, "peer": args.peer,
                            "reason": args.reason,
                            "direction": "ingress" if args.ingress else "egress"}
    if args.port is not None:
        body["port"] = args.port
    out.emit(api.request("POST", overrides_url(args.interface), json=body), override_text)
    return EXIT_OK


def cmd_override_list(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(overrides_url(args.interface)), overrides_table)
    return EXIT_OK


def cmd_override_delete(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.request("DELETE", overrides_url(args.interface, args.id)),
             lambda o: f"deleted override {o['id']} of {o['interface_id']}")
    return EXIT_OK


# -- the audit trail -----------------------------------------------------------------------

def audit_table(entries: list[dict[str, Any]]) -> str:
    rows = [[e["id"].lstrip("0") or "0", format_time(e.get("at")), e.get("actor"), e["what"],
             e.get("subject"), e.get("why") or "-"] for e in entries]
    return format_table(["SEQ", "AT", "ACTOR", "WHAT", "SUBJECT", "WHY"], rows) if rows \
        else "(no audit entries)"


def cmd_audit(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(AUDIT, limit=args.limit, what=args.what), audit_table)
    return EXIT_OK


# -- the groups ----------------------------------------------------------------------------

def register(sub: Subparsers, common: Common) -> None:
    verbs = common.group(sub, "category", "interfaces' categories and their members")
    p = common.command(verbs, "set", cmd_category_set,
                       "set an interface's categories (all of them)")
    p.add_argument("interface", metavar="IFACE", help="interface id, e.g. 0000000000000a01:3")
    p.add_argument("categories", metavar="CAT", nargs="+", help="e.g. web")
    p = common.command(verbs, "clear", cmd_category_clear, "remove an interface's categories")
    p.add_argument("interface", metavar="IFACE")
    common.command(verbs, "list", cmd_category_list, "every category and its members")

    add_document_group(sub, common, ADDRESS_SETS,
                       "named IPv4 ranges learned peers are generalized to (create, list, get, "
                       "delete)")

    verbs = common.group(sub, "learn", "learning sessions: observe a category's members")
    p = common.command(verbs, "start", cmd_learn_start, "start learning a category")
    p.add_argument("category", metavar="CAT")
    p.add_argument("--for", dest="duration", metavar="DURATION",
                   help='how long, e.g. 600 or "10m" (default: until stopped)')
    p = common.command(verbs, "stop", cmd_learn_stop,
                       "stop a session (its category's next policy version follows)")
    p.add_argument("id", metavar="ID")
    p = common.command(verbs, "status", cmd_learn_status,
                       "every session's progress, or one's: status [ID]")
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--category", metavar="CAT", help="only this category's sessions")

    verbs = common.group(sub, "policy", "consolidated policies, their versions and exports")
    common.command(verbs, "list", cmd_policy_list, "every category with a policy")
    p = export_common().command(verbs, "show", cmd_policy_show,
                                "a category's policy (-o graph|dot|k8s exports it)")
    p.add_argument("category", metavar="CAT")
    p.add_argument("--version", type=int, metavar="N", help="an older version")
    p = common.command(verbs, "versions", cmd_policy_versions, "every version of a policy")
    p.add_argument("category", metavar="CAT")
    p = common.command(verbs, "diff", cmd_policy_diff, "what changed between two versions")
    p.add_argument("category", metavar="CAT")
    p.add_argument("old", metavar="V1", type=int)
    p.add_argument("new", metavar="V2", type=int)
    p = common.command(verbs, "drift", cmd_policy_drift,
                       "rules unused for a while, support over today's members")
    p.add_argument("category", metavar="CAT")
    p.add_argument("--unused", type=parse_duration, default=7 * 24 * 3600, metavar="DURATION",
                   help="idle this long is unused (seconds or 30m, 7d; default 7d)")

    verbs = common.group(sub, "profile", "mirroring profiles: a category's policy for another")
    p = common.command(verbs, "create", cmd_profile_create,
                       "mirror SRC's policy to the members of TGT")
    p.add_argument("source", metavar="SRC")
    p.add_argument("target", metavar="TGT")
    p.add_argument("--strength", type=int, required=True, metavar="N",
                   help="0-100: the share of SRC's rules kept, most supported first")
    p.add_argument("--audit", action="store_true",
                   help="count what would be refused, refuse nothing")
    p.add_argument("--id", metavar="ID", help="the profile's id (default SRC-to-TGT)")
    PROFILES.add_list(verbs, common)
    PROFILES.add_get(verbs, common)
    p = common.command(verbs, "preview", cmd_profile_preview,
                       "which of the source's rules the target gets, and why")
    p.add_argument("id", metavar="ID")
    PROFILES.add_delete(verbs, common)

    verbs = common.group(sub, "review", "reviews of connections the policy refused")
    p = common.command(verbs, "list", cmd_review_list, "reviews, pending first")
    p.add_argument("--category", metavar="CAT", help="only this category's")
    p.add_argument("--state", choices=("pending", "approved", "denied"), help="only these")
    p = common.command(verbs, "approve", cmd_review_approve,
                       "allow it for every interface mirrored from its category")
    p.add_argument("id", metavar="ID")
    p.add_argument("--ttl", metavar="DURATION", help='a temporary allowance, e.g. "1h"')
    p.add_argument("--reason", metavar="TEXT", help="why (kept in the audit trail)")
    p = common.command(verbs, "deny", cmd_review_deny, "keep it refused, out of the queue")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", metavar="TEXT", help="why (kept in the audit trail)")

    verbs = common.group(sub, "override", "one interface's own policy rules")
    p = common.command(verbs, "add", cmd_override_add, "add a rule to one interface")
    p.add_argument("interface", metavar="IFACE")
    p.add_argument("--action", choices=("allow", "deny"), required=True)
    p.add_argument("--proto", required=True, metavar="P", help="tcp, udp or icmp")
    p.add_argument("--port", type=int, metavar="N", help="the server's port (default any)")
    p.add_argument("--peer", required=True, metavar="PEER",
                   help="category:NAME, set:ID, subnet:ID or address:IP")
    p.add_argument("--reason", required=True, metavar="TEXT")
    p.add_argument("--ingress", action="store_true",
                   help="the peer opens the connection (default: the interface does)")
    p = common.command(verbs, "list", cmd_override_list, "an interface's overrides")
    p.add_argument("interface", metavar="IFACE")
    p = common.command(verbs, "delete", cmd_override_delete, "remove an override")
    p.add_argument("interface", metavar="IFACE")
    p.add_argument("id", metavar="OID")

    p = common.command(sub, "audit", cmd_audit, "the policy audit trail, newest first")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (default 50)")
    p.add_argument("--what", metavar="WHAT", help="only e.g. policy-override or "
                                                  "policy-review.approved")
