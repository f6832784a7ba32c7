"""The consolidated policy: rules from records, the graph, its exports, diffs."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace

import networkx as nx
import pytest
import yaml

from controller.features.policy import graph
from controller.features.policy.rules import Peer, Rule, RuleKey, Rules, Seen
from tests.unit.policy_example import (
    ADDRESSES, EXT_HOST, WEB, generalizer, records, web_rules)

EXT80, DB5432, EXT8080 = ("egress-tcp-80-set-ext", "egress-tcp-5432-category-db",
                          "egress-tcp-8080-set-ext")


# -- consolidation ------------------------------------------------------------------------

def test_the_learning_example_gives_exactly_three_rules():
    rules = web_rules()
    assert sorted(rules.rules) == sorted([EXT80, DB5432, EXT8080])
    assert {rid: r.support for rid, r in rules.rules.items()} == {
        EXT80: "2/2", DB5432: "2/2", EXT8080: "1/2"}
    assert rules.rules[EXT8080].members == {"h1_1"}
    assert {r.key.port for r in rules.rules.values()} == {80, 5432, 8080}


def test_a_rule_keeps_its_evidence():
    rule = web_rules().rules[DB5432]
    assert (rule.first_seen, rule.last_seen, rule.connections) == (105.0, 170.0, 5)
    assert (rule.action, rule.origin, rule.of) == ("allow", "learned", 2)
    assert rule.key == RuleKey("egress", "tcp", 5432, Peer("category", "db"))


def test_one_member_seen_twice_counts_once_in_the_support():
    again = Seen("h1_2", "egress", "tcp", 8080, "198.51.100.7", 2, 140.0, 180.0)
    rule = graph.consolidate("web", WEB, records() + [again, again], generalizer()).rules[EXT8080]
    assert (rule.support, rule.connections, rule.last_seen) == ("2/2", 5, 180.0)
    once = Seen("h1_1", "egress", "tcp", 8080, EXT_HOST, 9, 131.0, 131.0)
    rule = graph.consolidate("web", WEB, records() + [once], generalizer()).rules[EXT8080]
    assert (rule.support, rule.connections, rule.first_seen) == ("1/2", 10, 130.0)


def test_records_of_non_members_do_not_count():
    stranger = Seen("h2_1", "egress", "tcp", 22, EXT_HOST, 1, 100.0, 100.0)
    rules = graph.consolidate("web", WEB, records() + [stranger], generalizer())
    assert len(rules.rules) == 3


def test_ingress_rules_name_the_opener_and_the_members_port():
    seen = [Seen("h2_1", "ingress", "tcp", 5432, ADDRESSES["h1_1"], 1, 105.0, 105.0),
            Seen("h2_1", "ingress", "tcp", 5432, ADDRESSES["h1_2"], 4, 120.0, 170.0),
            Seen("h2_1", "ingress", "ICMP", 8, "192.0.2.9", 1, 90.0, 90.0)]
    rules = graph.consolidate("db", ["h2_1"], seen, generalizer())
    assert {rid: (r.support, r.connections) for rid, r in rules.rules.items()} == {
        "ingress-tcp-5432-category-web": ("1/1", 5),
        "ingress-icmp-any-address-192.0.2.9": ("1/1", 1)}


def test_merging_into_a_base_keeps_its_rules_and_version():
    base = web_rules(version=4)
    denied = Rule(RuleKey("egress", "tcp", 22, Peer("set", "ext")), action="deny", of=2,
                  origin="denied")
    base = replace(base, rules={**base.rules, denied.id: denied})
    new = [Seen("h1_2", "egress", "tcp", 8080, EXT_HOST, 1, 200.0, 210.0),
           Seen("h1_2", "egress", "tcp", 22, EXT_HOST, 1, 220.0, 220.0)]
    merged = graph.consolidate("web", WEB, new, generalizer(), base=base)
    assert merged.version == 4 and merged.category == "web"
    assert merged.rules[EXT8080].support == "2/2"
    assert merged.rules[EXT8080].last_seen == 210.0
    assert merged.rules[denied.id].action == "deny"           # seen again, still denied
    assert merged.rules[denied.id].members == {"h1_2"}
    assert merged.rules[EXT80] == base.rules[EXT80]


def test_support_is_out_of_the_current_members():
    merged = graph.consolidate("web", ["h1_2", "h1_3", "h1_4"], [], generalizer(),
                               base=web_rules())
    assert {rid: r.support for rid, r in merged.rules.items()} == {
        EXT80: "1/3", DB5432: "1/3", EXT8080: "0/3"}


def test_a_base_of_another_category_is_refused():
    with pytest.raises(ValueError, match="'web'"):
        graph.consolidate("db", ["h2_1"], [], generalizer(), base=web_rules())


def test_a_record_with_no_direction_is_refused():
    with pytest.raises(ValueError, match="direction"):
        graph.consolidate("web", WEB, [Seen("h1_1", "sideways", "tcp", 80, EXT_HOST)],
                          generalizer())


# -- the graph ----------------------------------------------------------------------------

def test_the_graph_of_the_example():
    g = graph.to_graph(web_rules())
    assert isinstance(g, nx.DiGraph) and g.graph == {"category": "web", "version": 1}
    assert sorted(g.edges(keys=True)) == [
        ("category:web", "category:db tcp/5432", DB5432),
        ("category:web", "set:ext tcp/80", EXT80),
        ("category:web", "set:ext tcp/8080", EXT8080)]
    assert g.nodes["category:web"] == {"kind": "category", "name": "web", "protocol": None,
                                       "port": None, "own": True}
    assert g.nodes["set:ext tcp/8080"] == {"kind": "set", "name": "ext", "protocol": "tcp",
                                           "port": 8080, "own": False}


def test_members_talking_to_each_other_give_two_edges_between_the_same_nodes():
    db = ADDRESSES["h2_1"]
    seen = [Seen("h2_1", "egress", "tcp", 5432, db, 1, 1.0, 1.0),
            Seen("h2_1", "ingress", "tcp", 5432, db, 1, 1.0, 1.0)]
    g = graph.to_graph(graph.consolidate("db", ["h2_1"], seen, generalizer()))
    assert sorted(g.edges(keys=True)) == [
        ("category:db", "category:db tcp/5432", "egress-tcp-5432-category-db"),
        ("category:db", "category:db tcp/5432", "ingress-tcp-5432-category-db")]


def test_node_link_of_the_example():
    data = graph.node_link(web_rules())
    assert json.loads(json.dumps(data)) == data
    assert (data["directed"], data["multigraph"], data["graph"]) == (
        True, True, {"category": "web", "version": 1})
    assert [n["id"] for n in data["nodes"]] == [
        "category:db tcp/5432", "category:web", "set:ext tcp/80", "set:ext tcp/8080"]
    edge = next(e for e in data["edges"] if e["key"] == EXT8080)
    assert edge == {"source": "category:web", "target": "set:ext tcp/8080", "key": EXT8080,
                    "rule": EXT8080, "direction": "egress", "protocol": "tcp", "port": 8080,
                    "peer": "set:ext", "action": "allow", "support": "1/2",
                    "members": ["h1_1"], "first_seen": 130.0, "last_seen": 130.0,
                    "connections": 1, "origin": "learned", "expires_at": None}
    back = nx.node_link_graph(data, edges="edges")
    assert sorted(back.edges(keys=True)) == sorted(graph.to_graph(web_rules()).edges(keys=True))


# -- Graphviz -----------------------------------------------------------------------------

QUOTED = r'"(?:[^"\\]|\\.)*"'
VALUE = rf'(?:{QUOTED}|[A-Za-z0-9_.]+)'
ATTRS = rf'\[((?:[a-z]+={VALUE}(?:, )?)*)\]'
NODE = re.compile(rf'  ({QUOTED}) {ATTRS};')
EDGE = re.compile(rf'  ({QUOTED}) -> ({QUOTED}) {ATTRS};')
SETTING = re.compile(rf'  (?:[a-z]+={VALUE}|(?:node|edge) {ATTRS});')


def unquote(text: str) -> str:
    """A quoted string's text, escapes read as a label's (\\n is a line break)."""
    if not text.startswith('"'):
        return text
    return re.sub(r'\\(.)', lambda m: "\n" if m[1] == "n" else m[1], text[1:-1])


def attributes(text: str) -> dict[str, str]:
    return {k: unquote(v) for k, v in re.findall(rf'([a-z]+)=({VALUE})', text)}


def parse_dot(text: str) -> tuple[dict[str, dict], list[tuple[str, str, dict]]]:
    """The nodes and edges of our dot output; every line must be a statement."""
    lines = text.splitlines()
    assert re.fullmatch(rf'digraph {QUOTED} {{', lines[0]) and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if m := EDGE.fullmatch(line):
            edges.append((unquote(m[1]), unquote(m[2]), attributes(m[3])))
        elif m := NODE.fullmatch(line):
            nodes[unquote(m[1])] = attributes(m[2])
        else:
            assert SETTING.fullmatch(line), line
    return nodes, edges


def test_dot_of_the_example():
    text = graph.dot(web_rules())
    nodes, edges = parse_dot(text)
    assert nodes["category:web"] == {"label": "category:web", "shape": "ellipse",
                                     "style": "bold"}
    assert nodes["set:ext tcp/8080"] == {"label": "set:ext\ntcp/8080", "shape": "box"}
    assert set(nodes) == set(graph.to_graph(web_rules()).nodes)
    assert edges == [("category:web", "category:db tcp/5432",
                      {"id": DB5432, "label": "allow 2/2", "color": "darkgreen"}),
                     ("category:web", "set:ext tcp/80",
                      {"id": EXT80, "label": "allow 2/2", "color": "darkgreen"}),
                     ("category:web", "set:ext tcp/8080",
                      {"id": EXT8080, "label": "allow 1/2", "color": "darkgreen"})]
    assert 'label="policy of web, version 1";' in text


def test_dot_quotes_what_needs_quoting_and_dashes_denials():
    odd = 'we"b\\x'
    rule = Rule(RuleKey("ingress", "udp", 53, Peer("address", "192.0.2.1")), action="deny")
    nodes, edges = parse_dot(graph.dot(Rules(odd, 2, {rule.id: rule})))
    assert f"category:{odd} udp/53" in nodes and "address:192.0.2.1" in nodes
    assert edges == [("address:192.0.2.1", f"category:{odd} udp/53",
                      {"id": rule.id, "label": "deny 0/0", "color": "red",
                       "style": "dashed"})]


def test_dot_parses_with_pydot_when_it_is_installed():
    pydot = pytest.importorskip("pydot")
    (parsed,) = pydot.graph_from_dot_data(graph.dot(web_rules()))
    assert sorted(e.get_attributes()["id"].strip('"') for e in parsed.get_edges()) == [
        DB5432, EXT80, EXT8080]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_lays_it_out_when_it_is_installed():
    odd = Rule(RuleKey("ingress", "udp", 53, Peer("address", "192.0.2.1")), action="deny")
    for text in (graph.dot(web_rules()), graph.dot(Rules('we"b\\x', 2, {odd.id: odd}))):
        done = subprocess.run(["dot", "-Tplain"], input=text, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0 and not done.stderr, done.stderr
        edges = [line for line in done.stdout.splitlines() if line.startswith("edge ")]
        assert len(edges) == text.count(" -> ")


# -- Kubernetes ---------------------------------------------------------------------------

def test_k8s_of_the_example():
    text = graph.k8s(web_rules(), generalizer().cidrs)
    assert text.startswith("# hubshift policy of category web, version 1: 3 of 3 rules")
    db = {"podSelector": {"matchLabels": {"hubshift/category": "db"}}}
    ext = {"ipBlock": {"cidr": "198.51.100.0/24"}}
    assert yaml.safe_load(text) == {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "hubshift-web", "labels": {"hubshift/category": "web"},
                     "annotations": {"hubshift/policy-version": "1"}},
        "spec": {"podSelector": {"matchLabels": {"hubshift/category": "web"}},
                 "policyTypes": ["Ingress", "Egress"], "ingress": [],
                 "egress": [{"to": [db], "ports": [{"protocol": "TCP", "port": 5432}]},
                            {"to": [ext], "ports": [{"protocol": "TCP", "port": 80}]},
                            {"to": [ext], "ports": [{"protocol": "TCP", "port": 8080}]}]}}


def test_k8s_says_what_it_leaves_out_and_why():
    keys = [RuleKey("ingress", "tcp", 22, Peer("address", "192.0.2.1")),
            RuleKey("egress", "icmp", None, Peer("address", "192.0.2.1")),
            RuleKey("egress", "udp", 53, Peer("subnet", "seg2"))]
    rules = {k.id: Rule(k) for k in keys}
    denied = Rule(RuleKey("egress", "tcp", 22, Peer("set", "ext")), action="deny")
    text = graph.k8s(Rules("New-Web_1", 7, {**rules, denied.id: denied}))
    assert "# left out egress-icmp-any-address-192.0.2.1: icmp cannot be named" in text
    assert "# left out egress-udp-53-subnet-seg2: subnet:seg2 has no known CIDR" in text
    assert "# left out egress-tcp-22-set-ext: denied" in text
    body = yaml.safe_load(text)
    assert body["metadata"]["name"] == "hubshift-new-web-1"
    assert body["spec"]["egress"] == []
    assert body["spec"]["ingress"] == [{"from": [{"ipBlock": {"cidr": "192.0.2.1/32"}}],
                                        "ports": [{"protocol": "TCP", "port": 22}]}]
    resolved = yaml.safe_load(graph.k8s(Rules("db", 1, rules), generalizer().cidrs))
    assert resolved["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": "10.0.2.0/24"}}],
                                           "ports": [{"protocol": "UDP", "port": 53}]}]


def test_k8s_refuses_a_category_that_is_not_a_label_value():
    with pytest.raises(ValueError, match="label value"):
        graph.k8s(Rules("web server", 1, {}))


# -- versions -----------------------------------------------------------------------------

def test_diff_of_two_versions():
    first = graph.consolidate("web", WEB, records()[:3], generalizer())
    v1 = Rules("web", 1, first.rules)
    v2 = replace(web_rules(version=2), rules={
        rid: r for rid, r in web_rules().rules.items() if rid != EXT80})
    d = graph.diff(v1, v2)
    assert (d["category"], d["from"], d["to"]) == ("web", 1, 2)
    assert [r["id"] for r in d["added"]] == [EXT8080]
    assert d["removed"] == [v1.rules[EXT80].to_json()]
    (change,) = d["changed"]
    assert change["id"] == DB5432
    assert change["fields"] == ["support", "members", "last_seen", "connections"]
    assert (change["before"]["support"], change["after"]["support"]) == ("1/2", "2/2")


def test_diff_of_a_version_with_itself_is_empty_and_categories_must_match():
    assert graph.diff(web_rules(), web_rules(version=2)) == {
        "category": "web", "from": 1, "to": 2, "added": [], "removed": [], "changed": []}
    with pytest.raises(ValueError):
        graph.diff(web_rules(), Rules("db", 1, {}))
