"""A category's consolidated policy: rules from connection records, the policy as a
directed graph, its exports (node-link JSON, Graphviz dot, Kubernetes
NetworkPolicy), and the difference between two versions.

* `consolidate` turns the records of all a category's members into one rule per
  rule key (direction, protocol, server port, generalized peer), each with its
  evidence: the distinct members that used it out of the category's members, the
  first and last time it was seen, and the connections counted.
* `to_graph` draws the rules as the seed's graph: nodes are endpoints (a peer,
  with the protocol and port when it is the server's side), edges are the
  connections the policy allows or denies, from the side that opens them:
  egress "category:web" -> "set:ext tcp/80", ingress "set:ext" ->
  "category:web tcp/8080".  It is a MultiDiGraph (a DiGraph), keyed by rule id:
  members of a category talking to each other give an egress and an ingress rule
  between the same two nodes.
* `k8s` says the same as one NetworkPolicy selecting the category's pods by the
  label `hubshift/category`; its default deny is the NetworkPolicy's own.

Pure: no store, no switch; the runtime and REST pass the rules in.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Callable, Collection, Iterable, Sequence

import networkx as nx
import yaml

from controller.features.policy.generalize import Generalizer
from controller.features.policy.rules import (
    DIRECTIONS, PORTED, Peer, Rule, RuleKey, Rules, Seen)

CATEGORY_LABEL = "hubshift/category"
K8S_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
# A Kubernetes label value: up to 63 characters, alphanumerics at both ends,
# '-', '_' and '.' inside (the empty value is legal but names no category).
K8S_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


# -- consolidation ------------------------------------------------------------------------

def rule_key(seen: Seen, gen: Generalizer) -> RuleKey:
    """A record's rule key: its peer generalized; a port only for tcp/udp (the
    server's, as the record has it: a client's ephemeral port never gets here)."""
    if seen.direction not in DIRECTIONS:
        raise ValueError(f"{seen.direction!r} is not a direction ({', '.join(DIRECTIONS)})")
    protocol = seen.protocol.lower()
    return RuleKey(seen.direction, protocol, seen.port if protocol in PORTED else None,
                   gen.peer(seen.peer_ip))


def consolidate(category: str, members: Collection[str], seen: Iterable[Seen],
                gen: Generalizer, base: Rules | None = None) -> Rules:
    """The category's rules: `base` (if given) with `seen` added, one rule per key.

    Only records of current `members` count.  Every rule's support is out of the
    current members, and a base rule keeps only its members still in the
    category (a rule nobody uses any more is kept, with support 0/N: dropping it
    is a decision, not a count).  Records are added, never de-duplicated: give
    each record once over the same base (e.g. base = the version a learning
    session started from, seen = everything the session recorded so far).
    The version is base's (0 without one); making a new version is the caller's.
    """
    if base is not None and base.category != category:
        raise ValueError(f"base is the policy of {base.category!r}, not {category!r}")
    current = frozenset(members)
    rules = {rid: replace(r, members=r.members & current, of=len(current))
             for rid, r in (base.rules.items() if base else ())}
    for record in seen:
        if record.member not in current:
            continue
        key = rule_key(record, gen)
        rule = rules.get(key.id) or Rule(key, of=len(current))
        rules[key.id] = rule.seen_again(record.member, record)
    return Rules(category, base.version if base else 0, dict(sorted(rules.items())))


# -- the graph ----------------------------------------------------------------------------

def service(protocol: str, port: int | None) -> str:
    """"tcp/80", or "icmp" for a protocol without ports."""
    return protocol if port is None else f"{protocol}/{port}"


def endpoint(peer: Peer, protocol: str | None = None, port: int | None = None) -> str:
    """A node's id: "set:ext" (a client's side), "set:ext tcp/80", "address:… icmp"."""
    return str(peer) if protocol is None else f"{peer} {service(protocol, port)}"


def _ends(category: str, rule: Rule) -> tuple[tuple[str, Peer], tuple[str, Peer]]:
    """(source, target) of a rule's edge, each as (node id, peer): the opener first."""
    key = rule.key
    me = Peer("category", category)
    if key.direction == "egress":
        return (endpoint(me), me), (endpoint(key.peer, key.protocol, key.port), key.peer)
    return (endpoint(key.peer), key.peer), (endpoint(me, key.protocol, key.port), me)


def edge_attributes(rule: Rule) -> dict[str, Any]:
    """A rule as its edge says it: the rule's JSON with its id under "rule"."""
    body = rule.to_json()
    return {"rule": body.pop("id"), **body}


def to_graph(rules: Rules) -> nx.MultiDiGraph:
    """The policy as a directed graph of endpoints, one edge per rule (key: rule id).

    Node attributes: kind and name (the peer), protocol and port (None on a
    client's side), own (True for the policy's own category).  Edge attributes:
    `edge_attributes`.  Nodes and edges are added in a stable order (by id)."""
    graph = nx.MultiDiGraph(category=rules.category, version=rules.version)
    edges = []
    for rule in sorted(rules.rules.values(), key=lambda r: r.id):
        (source, speer), (target, tpeer) = _ends(rules.category, rule)
        for node, peer, served in ((source, speer, False), (target, tpeer, True)):
            if node not in graph:
                graph.add_node(node, kind=peer.kind, name=peer.name,
                               protocol=rule.key.protocol if served else None,
                               port=rule.key.port if served else None,
                               own=peer == Peer("category", rules.category))
        edges.append((source, target, rule.id, edge_attributes(rule)))
    for source, target, key, attrs in edges:
        graph.add_edge(source, target, key=key, **attrs)
    return graph


def node_link(rules: Rules) -> dict[str, Any]:
    """`?format=graph`: {directed, multigraph, graph: {category, version}, nodes:
    [{id, kind, name, protocol, port, own}], edges: [{source, target, key, rule,
    action, support, members, ...}]}, nodes and edges sorted by id."""
    data = nx.node_link_data(to_graph(rules), edges="edges")
    data["nodes"] = sorted(({"id": n.pop("id"), **n} for n in data["nodes"]),
                           key=lambda n: n["id"])
    data["edges"] = sorted(({"source": e.pop("source"), "target": e.pop("target"),
                             "key": e.pop("key"), **e} for e in data["edges"]),
                           key=lambda e: e["key"])
    return data


# -- Graphviz -----------------------------------------------------------------------------

def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(*lines: str) -> str:
    """A quoted label of several lines (Graphviz's own \\n escape between them)."""
    return _quoted("\n".join(lines)).replace("\n", "\\n")


def dot(rules: Rules) -> str:
    """`?format=dot`: a Graphviz digraph.  Client sides are ellipses, served ports
    boxes, the category itself bold; allowed edges are green and solid, denied ones
    red and dashed; each edge's label is its action and support, its id the rule's."""
    graph = to_graph(rules)
    lines = [f"digraph {_quoted('policy ' + rules.category)} {{",
             f"  label={_quoted(f'policy of {rules.category}, version {rules.version}')};",
             "  labelloc=t;", "  rankdir=LR;", "  node [fontname=Helvetica];",
             "  edge [fontname=Helvetica];"]
    for node, attrs in sorted(graph.nodes(data=True)):
        where = f"{attrs['kind']}:{attrs['name']}"
        served = attrs["protocol"] is not None
        label = _label(where, service(attrs["protocol"], attrs["port"])) if served \
            else _label(where)
        shape = "box" if served else "ellipse"
        bold = ", style=bold" if attrs["own"] else ""
        lines.append(f"  {_quoted(node)} [label={label}, shape={shape}{bold}];")
    for source, target, key, attrs in sorted(graph.edges(keys=True, data=True),
                                             key=lambda e: e[2]):
        look = 'color=darkgreen' if attrs["action"] == "allow" else 'color=red, style=dashed'
        label = _label(f"{attrs['action']} {attrs['support']}")
        lines.append(f"  {_quoted(source)} -> {_quoted(target)} "
                     f"[id={_quoted(key)}, label={label}, {look}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- Kubernetes ---------------------------------------------------------------------------

def _k8s_name(category: str) -> str:
    """A DNS-1123 name for the NetworkPolicy: "hubshift-" + the category, lowered,
    other characters as '-'."""
    name = re.sub(r"[^a-z0-9.-]+", "-", category.lower()).strip("-.")
    return f"hubshift-{name}"[:253].rstrip("-.")


def _category_label(category: str) -> dict[str, Any]:
    if not K8S_LABEL_VALUE.fullmatch(category):
        raise ValueError(f"category {category!r} is not a Kubernetes label value (up to 63 "
                         "letters, digits, '-', '_' or '.', a letter or digit at both ends)")
    return {"matchLabels": {CATEGORY_LABEL: category}}


def _k8s_rule(rule: Rule, cidrs_of: Callable[[Peer], Sequence[str]]) -> dict[str, Any] | str:
    """A rule as a NetworkPolicy egress/ingress rule, or why it cannot be one."""
    key = rule.key
    if rule.action != "allow":
        return "denied: the NetworkPolicy's default deny refuses it"
    protocol = K8S_PROTOCOLS.get(key.protocol)
    if protocol is None:
        return f"{key.protocol} cannot be named by a NetworkPolicy's ports"
    if key.peer.kind == "category":
        peers: list[dict[str, Any]] = [{"podSelector": _category_label(key.peer.name)}]
    else:
        cidrs = list(cidrs_of(key.peer))
        if not cidrs:
            return f"{key.peer} has no known CIDR"
        peers = [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]
    port: dict[str, Any] = {"protocol": protocol}
    if key.port is not None:
        port["port"] = key.port
    return {"to" if key.direction == "egress" else "from": peers, "ports": [port]}


def addresses_only(peer: Peer) -> list[str]:
    """The default `cidrs_of` of `k8s`: an address is its host route; a set or a
    subnet is unknown without the sets' and subnets' documents ([])."""
    return Generalizer({}, {}, {}).cidrs(peer)


def k8s(rules: Rules, cidrs_of: Callable[[Peer], Sequence[str]] = addresses_only) -> str:
    """`?format=k8s`: the policy as one Kubernetes NetworkPolicy (YAML).

    The category's pods are selected by the label `hubshift/category: NAME`; a
    category peer is a `podSelector` by that label (same namespace), any other
    peer an `ipBlock` per CIDR that `cidrs_of` gives (pass `Generalizer.cidrs` of
    the current sets and subnets).  policyTypes is [Ingress, Egress], so anything
    not listed is refused: the default deny.  A rule a NetworkPolicy cannot say
    (denied, a protocol other than tcp/udp/sctp, a peer with no CIDR) is left
    out, and a comment at the top names it and why.  ValueError if a category
    is not a Kubernetes label value."""
    spec: dict[str, Any] = {"podSelector": _category_label(rules.category),
                            "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    left_out = []
    for rule in sorted(rules.rules.values(), key=lambda r: r.id):
        made = _k8s_rule(rule, cidrs_of)
        if isinstance(made, str):
            left_out.append(f"# left out {rule.id}: {made}")
        else:
            spec[rule.key.direction].append(made)
    document = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": _k8s_name(rules.category),
                             "labels": {CATEGORY_LABEL: rules.category},
                             "annotations": {"hubshift/policy-version": str(rules.version)}},
                "spec": spec}
    header = [f"# hubshift policy of category {rules.category}, version {rules.version}: "
              f"{len(spec['ingress']) + len(spec['egress'])} of {len(rules.rules)} rules; "
              "default deny (policyTypes Ingress and Egress)", *left_out]
    return "\n".join(header) + "\n" + yaml.safe_dump(document, sort_keys=False)


# -- versions -----------------------------------------------------------------------------

def diff(old: Rules, new: Rules) -> dict[str, Any]:
    """What changed from `old` to `new` (two versions of one category's policy):
    {category, from, to, added: [rule json], removed: [rule json], changed: [{id,
    fields, before, after}]}, each list by rule id; `fields` names what differs."""
    if old.category != new.category:
        raise ValueError(f"cannot diff the policies of {old.category!r} and {new.category!r}")
    changed = []
    for rid in sorted(old.rules.keys() & new.rules.keys()):
        before, after = old.rules[rid].to_json(), new.rules[rid].to_json()
        if before != after:
            changed.append({"id": rid, "fields": [f for f in before if before[f] != after[f]],
                            "before": before, "after": after})
    return {"category": new.category, "from": old.version, "to": new.version,
            "added": [new.rules[r].to_json() for r in sorted(new.rules.keys() - old.rules.keys())],
            "removed": [old.rules[r].to_json()
                        for r in sorted(old.rules.keys() - new.rules.keys())],
            "changed": changed}
