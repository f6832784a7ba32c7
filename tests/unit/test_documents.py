"""Typed documents: every validation rule, good and bad, with exact field names."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.core.documents import DocumentInvalid, field_path, id_problem, slugify
from controller.features.fabric.document import Subnet, parse_subnet, subnet_id_from_cidr, validate_subnet
from controller.features.personality.document import Personality, parse_personality, validate_personality
from controller.store import Store, open_store
from controller.core.topology import Subnet as TopologySubnet

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    s.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    yield s
    s.close()


def errors(exc: pytest.ExceptionInfo[DocumentInvalid]) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in exc.value.errors}


def bad_personality(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(DocumentInvalid) as exc:
        parse_personality(doc)
    return errors(exc)


def rule(**fields: Any) -> dict[str, Any]:
    return {"protocol": "tcp", "action": "allow", **fields}


# -- subnets ------------------------------------------------------------------------

def test_subnet_good() -> None:
    s = parse_subnet({"cidr": "10.0.1.0/24", "gateway": "10.0.1.254", "description": "seg 1"})
    assert s.cidr == ipaddress.IPv4Network("10.0.1.0/24")
    assert s.stored_body() == {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254", "description": "seg 1"}
    assert parse_subnet({"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}).stored_body() == {
        "cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}
    # The hub reads exactly what is stored.
    assert TopologySubnet.from_body("seg1", s.stored_body()).gateway == ipaddress.IPv4Address("10.0.1.254")


def test_subnet_point_to_point_gateway() -> None:
    assert parse_subnet({"cidr": "10.9.0.0/31", "gateway": "10.9.0.0"}).gateway == ipaddress.IPv4Address("10.9.0.0")


@pytest.mark.parametrize("doc, field, words", [
    ({"cidr": "10.0.1.1/24", "gateway": "10.0.1.254"}, "body.cidr", "host bits set; the network address is 10.0.1.0/24"),
    ({"cidr": "10.0.1.0/33", "gateway": "10.0.1.254"}, "body.cidr", "not a valid IPv4 network"),
    ({"cidr": "10.0.1.0", "gateway": "10.0.1.254"}, "body.cidr", "no prefix length"),
    ({"cidr": "banana", "gateway": "10.0.1.254"}, "body.cidr", "not a valid IPv4 network"),
    ({"cidr": 167772416, "gateway": "10.0.1.254"}, "body.cidr", "written as text"),
    ({"cidr": "10.0.1.0/24", "gateway": "10.0.2.1"}, "body.gateway", "outside the subnet 10.0.1.0/24"),
    ({"cidr": "10.0.1.0/24", "gateway": "10.0.1.0"}, "body.gateway", "network address"),
    ({"cidr": "10.0.1.0/24", "gateway": "10.0.1.255"}, "body.gateway", "broadcast address"),
    ({"cidr": "10.0.1.0/24", "gateway": "10.0.1.300"}, "body.gateway", "not a valid IPv4 address"),
    ({"cidr": "10.0.1.0/24"}, "body.gateway", "is required"),
    ({"gateway": "10.0.1.1"}, "body.cidr", "is required"),
    ({"cidr": "10.0.1.0/24", "gateway": "10.0.1.1", "vlan": 3}, "body.vlan", "not a known field"),
    ({"cidr": "10.0.1.0/24", "gateway": "10.0.1.1", "description": "x" * 257}, "body.description", "256"),
])
def test_subnet_bad(doc: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(DocumentInvalid) as exc:
        parse_subnet(doc)
    found = errors(exc)
    assert list(found) == [field]
    assert words in found[field]
    assert exc.value.detail == f"invalid subnet: {field}"


def test_subnet_not_an_object() -> None:
    with pytest.raises(DocumentInvalid) as exc:
        parse_subnet(["10.0.1.0/24"])
    assert list(errors(exc)) == ["body"]


def test_subnet_overlap_needs_the_store(store: Store) -> None:
    doc = {"cidr": "10.0.1.128/25", "gateway": "10.0.1.129"}
    parse_subnet(doc)  # fine on its own
    with pytest.raises(DocumentInvalid) as exc:
        validate_subnet(doc, store)
    assert errors(exc) == {"body.cidr": "10.0.1.128/25 overlaps subnet 'seg1' (10.0.1.0/24)"}
    # A subnet does not overlap itself when it is replaced.
    assert validate_subnet(doc, store, id="seg1").cidr.prefixlen == 25
    assert validate_subnet({"cidr": "10.0.2.0/24", "gateway": "10.0.2.254"}, store)


def test_subnet_id_from_cidr() -> None:
    assert subnet_id_from_cidr(ipaddress.IPv4Network("10.0.1.0/24")) == "10-0-1-0-24"


# -- personality: shape --------------------------------------------------------------

FULL = {
    "name": "Web Front",
    "subnet_id": "seg1",
    "ip_addresses": ["10.0.1.10", "10.0.1.11"],
    "firewall_rules": [
        {"source": "10.0.0.0/8", "protocol": "tcp", "port": 443, "direction": "ingress", "action": "allow"},
        {"protocol": "udp", "port": "5000-5010", "action": "allow"},
        {"protocol": "icmp", "action": "deny", "destination": "192.0.2.0/24", "direction": "egress"},
        {"protocol": "any", "port": None, "action": "deny"},
    ],
    "default_action": "deny",
    "qos_settings": {"priority": 5, "ingress_rate_kbps": 10000, "ingress_burst_kb": 1000,
                     "egress_rate_kbps": 5000, "egress_burst_kb": 500},
    "vpn_tunnel_config": {"type": "vxlan", "remote_ip": "192.0.2.10", "key": 5001,
                          "remote_prefixes": ["172.16.0.0/16"]},
    "application_access_policy": {
        "allow": [{"name": "https", "protocol": "tcp", "port": 443}],
        "deny": [{"name": "ssh", "protocol": "tcp", "port": 22, "signature": "SSH-2.0"},
                 {"name": "bt", "protocol": "tcp", "port": 6881, "signature": r"re:^\x13BitTorrent"}],
    },
    "dns_servers": ["10.0.1.53", "9.9.9.9"],
    "routing_table": [{"destination": "172.20.0.0/16", "next_hop": "10.0.1.1"}],
    "expires_after": "2h",
}


def test_full_personality(store: Store) -> None:
    p = validate_personality(FULL, store)
    assert p.name == "Web Front"
    assert len(p.firewall_rules) == 4
    first = p.firewall_rules[0]
    assert first.source == ipaddress.IPv4Network("10.0.0.0/8")
    assert first.destination == ipaddress.IPv4Network("0.0.0.0/0")
    assert p.firewall_rules[1].port == "5000-5010" and p.firewall_rules[1].direction == "both"
    assert p.expires_after == 7200
    body = p.stored_body()
    assert body["expires_after"] == 7200
    assert body["firewall_rules"][0] == {"source": "10.0.0.0/8", "protocol": "tcp", "port": 443,
                                         "direction": "ingress", "action": "allow"}
    # The stored form validates to the same personality.
    assert Personality.model_validate(body) == p


def test_minimal_personality() -> None:
    p = parse_personality({"name": "bare"})
    assert p.stored_body() == {"name": "bare"}
    assert p.ip_addresses == [] and p.firewall_rules == [] and p.default_action == "deny"
    assert p.subnet_id is None and p.qos_settings is None and p.expires_after is None
    # Defaults are not stored, and come back when the stored body is read.
    again = Personality.model_validate(p.stored_body())
    assert again == p


@pytest.mark.parametrize("doc, field, words", [
    ({}, "body.name", "is required"),
    ({"name": ""}, "body.name", "at least 1 character"),
    ({"name": "   "}, "body.name", "must not be blank"),
    ({"name": "n" * 65}, "body.name", "at most 64 characters"),
    ({"name": 7}, "body.name", "must be text"),
    ({"name": "x", "colour": "red"}, "body.colour", "is not a known field"),
    ({"name": "x", "subnet_id": ""}, "body.subnet_id", "at least 1 character"),
    ({"name": "x", "ip_addresses": "10.0.1.1"}, "body.ip_addresses", "must be a list"),
    ({"name": "x", "ip_addresses": ["10.0.1.1", "10.0.1.999"]}, "body.ip_addresses[1]", "not a valid IPv4 address"),
    ({"name": "x", "ip_addresses": ["fd00::1"]}, "body.ip_addresses[0]", "not a valid IPv4 address"),
    ({"name": "x", "ip_addresses": ["10.0.1.1", "10.0.1.1"]}, "body.ip_addresses", "10.0.1.1 is listed more than once"),
    ({"name": "x", "dns_servers": ["1.1.1.1", "dns.example"]}, "body.dns_servers[1]", "not a valid IPv4 address"),
    ({"name": "x", "dns_servers": ["1.1.1.1", "1.1.1.1"]}, "body.dns_servers", "listed more than once"),
    ({"name": "x", "default_action": "reject"}, "body.default_action", "'reject' is not allowed; use 'allow' or 'deny'"),
    ({"name": "x", "routing_table": [{"destination": "10.2.0.0/16"}]}, "body.routing_table[0].next_hop", "is required"),
    ({"name": "x", "routing_table": [{"destination": "10.2.0.0/16", "next_hop": "gateway"}]},
     "body.routing_table[0].next_hop", "not a valid IPv4 address"),
    ({"name": "x", "routing_table": [{"destination": "10.2.0.0/16", "next_hop": "10.0.1.1"},
                                     {"destination": "10.2.0.0/16", "next_hop": "10.0.1.2"}]},
     "body.routing_table", "destination 10.2.0.0/16 is routed more than once"),
    ({"name": "x", "routing_table": [{"destination": "10.2.0.1/16", "next_hop": "10.0.1.1"}]},
     "body.routing_table[0].destination", "host bits set"),
    ({"name": "x", "routing_table": [{"destination": "10.2.0.0/16", "next_hop": "10.0.1.1", "metric": 5}]},
     "body.routing_table[0].metric", "is not a known field"),
    ({"name": "x", "expires_after": 0}, "body.expires_after", "longer than zero"),
    ({"name": "x", "expires_after": -5}, "body.expires_after", "longer than zero"),
    ({"name": "x", "expires_after": "soon"}, "body.expires_after", "is not a duration"),
    ({"name": "x", "expires_after": "30 minutes"}, "body.expires_after", "is not a duration"),
    ({"name": "x", "expires_after": 1.5}, "body.expires_after", "number of seconds"),
    ({"name": "x", "expires_after": True}, "body.expires_after", "number of seconds"),
    ({"name": "x", "firewall_rules": {"protocol": "tcp"}}, "body.firewall_rules", "must be a list"),
    ({"name": "x", "firewall_rules": ["allow all"]}, "body.firewall_rules[0]", "must be an object"),
    ({"name": "x", "firewall_rules": None}, "body.firewall_rules", "must be a list"),
    ({"name": "x", "firewall_rules": [rule()] * 10001}, "body.firewall_rules", "at most 10000 items"),
    ({"name": "x", "application_access_policy": {"deny": [{"name": "a", "protocol": "tcp", "port": 1}] * 1001}},
     "body.application_access_policy.deny", "at most 1000 items"),
])
def test_personality_bad(doc: dict[str, Any], field: str, words: str) -> None:
    found = bad_personality(doc)
    assert list(found) == [field], found
    assert words in found[field]


@pytest.mark.parametrize("value, seconds", [
    (90, 90), ("90", 90), ("45s", 45), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
    ("2H", 7200),
])
def test_expires_after_normalized(value: Any, seconds: int) -> None:
    assert parse_personality({"name": "x", "expires_after": value}).expires_after == seconds


# -- firewall rules ------------------------------------------------------------------------

@pytest.mark.parametrize("port, stored", [
    (None, None), (1, 1), (65535, 65535), ("443", 443), ("8000-8080", "8000-8080"),
    ("8000 - 8080", "8000-8080"), ("443-443", 443),
])
def test_port_good(port: Any, stored: Any) -> None:
    p = parse_personality({"name": "x", "firewall_rules": [rule(port=port)]})
    assert p.firewall_rules[0].port == stored


@pytest.mark.parametrize("port, words", [
    (0, "port 0 is out of range; ports are 1-65535"),
    (65536, "port 65536 is out of range"),
    (-1, "out of range"),
    ("70000", "port 70000 is out of range"),
    ("9000-8000", "reversed; the first port must not be larger than the second"),
    ("1-70000", "port 70000 in range '1-70000' is out of range"),
    ("0-10", "port 0 in range"),
    ("https", "'https' is not a port"),
    ("80,443", "is not a port"),
    (True, "must be a port 1-65535"),
    (44.3, "must be a port 1-65535"),
    ([80], "must be a port 1-65535"),
])
def test_port_bad(port: Any, words: str) -> None:
    found = bad_personality({"name": "x", "firewall_rules": [rule(), rule(), rule(port=port)]})
    assert list(found) == ["body.firewall_rules[2].port"]
    assert words in found["body.firewall_rules[2].port"]


@pytest.mark.parametrize("protocol", ["icmp", "any"])
def test_port_needs_tcp_or_udp(protocol: str) -> None:
    found = bad_personality({"name": "x", "firewall_rules": [rule(protocol=protocol, port=80)]})
    assert list(found) == ["body.firewall_rules[0].port"]
    assert f"only applies to protocol tcp or udp, not {protocol}" in found["body.firewall_rules[0].port"]
    assert parse_personality({"name": "x", "firewall_rules": [rule(protocol=protocol)]})


@pytest.mark.parametrize("fields, field, words", [
    ({"protocol": "sctp"}, "protocol", "'sctp' is not allowed; use 'tcp', 'udp', 'icmp' or 'any'"),
    ({"protocol": "TCP"}, "protocol", "is not allowed"),
    ({"action": "drop"}, "action", "'drop' is not allowed; use 'allow' or 'deny'"),
    ({"direction": "in"}, "direction", "use 'ingress', 'egress' or 'both'"),
    ({"source": "10.0.0.0/33"}, "source", "not a valid IPv4 network"),
    ({"source": "10.1.2.3/8"}, "source", "host bits set; the network address is 10.0.0.0/8"),
    ({"destination": "any"}, "destination", "not a valid IPv4 network"),
    ({"destination": "192.0.2.7"}, "destination", "has no prefix length; write the network in CIDR form, such as 192.0.2.7/32"),
    ({"log": True}, "log", "is not a known field"),
])
def test_firewall_rule_bad(fields: dict[str, Any], field: str, words: str) -> None:
    found = bad_personality({"name": "x", "firewall_rules": [rule(), rule(**fields)]})
    assert list(found) == [f"body.firewall_rules[1].{field}"]
    assert words in found[f"body.firewall_rules[1].{field}"]


def test_firewall_rule_needs_protocol_and_action() -> None:
    found = bad_personality({"name": "x", "firewall_rules": [{"port": 22}]})
    assert found == {"body.firewall_rules[0].protocol": "is required",
                     "body.firewall_rules[0].action": "is required"}


def test_every_error_is_reported_at_once() -> None:
    found = bad_personality({"name": "", "firewall_rules": [rule(protocol="gre", port=99999)],
                             "dns_servers": ["x"], "extra": 1})
    assert set(found) == {"body.name", "body.firewall_rules[0].protocol",
                          "body.firewall_rules[0].port", "body.dns_servers[0]", "body.extra"}


# -- qos -----------------------------------------------------------------------------------

@pytest.mark.parametrize("qos, field, words", [
    ({"priority": 8}, "priority", "less than or equal to 7"),
    ({"priority": -1}, "priority", "greater than or equal to 0"),
    ({"priority": "3"}, "priority", "must be a whole number"),
    ({"priority": True}, "priority", "must be a whole number"),
    ({"ingress_rate_kbps": 0}, "ingress_rate_kbps", "greater than 0"),
    ({"egress_rate_kbps": -10}, "egress_rate_kbps", "greater than 0"),
    ({"egress_rate_kbps": 1.5}, "egress_rate_kbps", "must be a whole number"),
    ({"ingress_rate_kbps": 10, "ingress_burst_kb": 0}, "ingress_burst_kb", "greater than 0"),
    ({"ingress_burst_kb": 10}, "ingress_burst_kb", "a burst needs a rate; set ingress_rate_kbps too"),
    ({"egress_burst_kb": 10}, "egress_burst_kb", "set egress_rate_kbps too"),
    ({"dscp": 46}, "dscp", "is not a known field"),
])
def test_qos_bad(qos: dict[str, Any], field: str, words: str) -> None:
    found = bad_personality({"name": "x", "qos_settings": qos})
    assert list(found) == [f"body.qos_settings.{field}"]
    assert words in found[f"body.qos_settings.{field}"]


def test_qos_good() -> None:
    p = parse_personality({"name": "x", "qos_settings": {"priority": 0, "egress_rate_kbps": 1,
                                                         "egress_burst_kb": 1}})
    assert p.qos_settings is not None and p.qos_settings.priority == 0
    assert parse_personality({"name": "x", "qos_settings": {"priority": 7}})


# -- vpn -------------------------------------------------------------------------------------

VPN = {"type": "gre", "remote_ip": "192.0.2.1", "remote_prefixes": ["172.16.0.0/12"]}


@pytest.mark.parametrize("fields", [
    {}, {"key": 0}, {"key": 2**32 - 1}, {"type": "vxlan", "key": 2**24 - 1},
    {"type": "geneve", "key": 2**24 - 1}, {"remote_prefixes": ["172.16.0.0/12", "10.50.0.0/16"]},
])
def test_vpn_good(fields: dict[str, Any]) -> None:
    assert parse_personality({"name": "x", "vpn_tunnel_config": {**VPN, **fields}}).vpn_tunnel_config


@pytest.mark.parametrize("fields, field, words", [
    ({"type": "ipsec"}, "type", "use 'vxlan', 'gre' or 'geneve'"),
    ({"remote_ip": "192.0.2.300"}, "remote_ip", "not a valid IPv4 address"),
    ({"key": -1}, "key", "greater than or equal to 0"),
    ({"key": 2**32}, "key", "less than or equal to 4294967295"),
    ({"type": "vxlan", "key": 2**24}, "key", "vxlan carries a 24-bit VNI; the key must be at most 16777215"),
    ({"type": "geneve", "key": 2**24}, "key", "geneve carries a 24-bit VNI"),
    ({"remote_prefixes": []}, "remote_prefixes", "must not be empty"),
    ({"remote_prefixes": ["172.16.0.0/12", "10.0.0.1/8"]}, "remote_prefixes[1]", "host bits set"),
    ({"mtu": 1400}, "mtu", "is not a known field"),
])
def test_vpn_bad(fields: dict[str, Any], field: str, words: str) -> None:
    found = bad_personality({"name": "x", "vpn_tunnel_config": {**VPN, **fields}})
    assert list(found) == [f"body.vpn_tunnel_config.{field}"]
    assert words in found[f"body.vpn_tunnel_config.{field}"]


def test_vpn_required_fields() -> None:
    found = bad_personality({"name": "x", "vpn_tunnel_config": {}})
    assert found == {f"body.vpn_tunnel_config.{f}": "is required"
                     for f in ("type", "remote_ip", "remote_prefixes")}


# -- application access ---------------------------------------------------------------------

APP = {"name": "web", "protocol": "tcp", "port": 443}


@pytest.mark.parametrize("signature", [None, "GET /", "SSH-2.0", r"re:^GET /[a-z]+", "re:.*"])
def test_app_rule_good(signature: str | None) -> None:
    p = parse_personality({"name": "x", "application_access_policy": {
        "allow": [{**APP, "signature": signature}]}})
    assert p.application_access_policy is not None
    assert p.application_access_policy.allow[0].signature == signature
    assert p.application_access_policy.deny == []


@pytest.mark.parametrize("fields, field, words", [
    ({"signature": "re:(unclosed"}, "signature", "the regular expression does not compile"),
    ({"signature": r"re:\N{DIGIT ONE}"}, "signature", "does not compile as a bytes pattern"),
    ({"signature": "re:"}, "signature", "the regular expression after \"re:\" is empty"),
    ({"signature": ""}, "signature", "must not be empty"),
    ({"signature": 5}, "signature", "must be text"),
    ({"protocol": "icmp"}, "protocol", "use 'tcp' or 'udp'"),
    ({"port": 0}, "port", "greater than or equal to 1"),
    ({"port": 65536}, "port", "less than or equal to 65535"),
    ({"port": "443"}, "port", "must be a whole number"),
    ({"name": ""}, "name", "at least 1 character"),
    ({"url": "/"}, "url", "is not a known field"),
])
def test_app_rule_bad(fields: dict[str, Any], field: str, words: str) -> None:
    found = bad_personality({"name": "x", "application_access_policy": {
        "allow": [APP], "deny": [APP, {**APP, **fields}]}})
    assert list(found) == [f"body.application_access_policy.deny[1].{field}"]
    assert words in found[f"body.application_access_policy.deny[1].{field}"]


def test_app_rule_required_fields() -> None:
    found = bad_personality({"name": "x", "application_access_policy": {"allow": [{}]}})
    assert set(found) == {f"body.application_access_policy.allow[0].{f}" for f in ("name", "protocol", "port")}


# -- cross-field checks against the store ---------------------------------------------------

def test_subnet_must_exist(store: Store) -> None:
    with pytest.raises(DocumentInvalid) as exc:
        validate_personality({"name": "x", "subnet_id": "seg9"}, store)
    assert errors(exc) == {"body.subnet_id": "no subnet with id 'seg9' exists"}
    assert exc.value.detail == "invalid personality: body.subnet_id"


def test_addresses_must_lie_in_the_subnet(store: Store) -> None:
    with pytest.raises(DocumentInvalid) as exc:
        validate_personality({"name": "x", "subnet_id": "seg1",
                              "ip_addresses": ["10.0.1.5", "10.0.2.5", "10.0.1.254", "10.0.1.0", "10.0.1.255"]},
                             store)
    assert errors(exc) == {
        "body.ip_addresses[1]": "10.0.2.5 is outside subnet 'seg1' (10.0.1.0/24)",
        "body.ip_addresses[2]": "10.0.1.254 is the gateway of subnet 'seg1'",
        "body.ip_addresses[3]": "10.0.1.0 is the network address of subnet 'seg1' (10.0.1.0/24)",
        "body.ip_addresses[4]": "10.0.1.255 is the broadcast address of subnet 'seg1' (10.0.1.0/24)",
    }


def test_next_hop_must_lie_in_the_subnet(store: Store) -> None:
    doc = {"name": "x", "subnet_id": "seg1", "routing_table": [
        {"destination": "172.16.0.0/12", "next_hop": "10.0.1.1"},
        {"destination": "0.0.0.0/0", "next_hop": "10.9.9.9"},
    ]}
    with pytest.raises(DocumentInvalid) as exc:
        validate_personality(doc, store)
    found = errors(exc)
    assert list(found) == ["body.routing_table[1].next_hop"]
    assert "next hop 10.9.9.9 is outside subnet 'seg1' (10.0.1.0/24)" in found["body.routing_table[1].next_hop"]
    doc["routing_table"].pop()
    assert validate_personality(doc, store).routing_table[0].next_hop == ipaddress.IPv4Address("10.0.1.1")


def test_without_subnet_addresses_are_not_checked(store: Store) -> None:
    p = validate_personality({"name": "x", "ip_addresses": ["192.0.2.1"],
                              "routing_table": [{"destination": "0.0.0.0/0", "next_hop": "198.51.100.1"}]},
                             store)
    assert p.subnet_id is None


def test_store_checks_follow_shape_checks(store: Store) -> None:
    # A malformed document is reported as such before the store is consulted.
    with pytest.raises(DocumentInvalid) as exc:
        validate_personality({"name": "x", "subnet_id": "seg9", "ip_addresses": ["nope"]}, store)
    assert list(errors(exc)) == ["body.ip_addresses[0]"]


def test_broken_subnet_document(store: Store) -> None:
    store.put("subnet", "odd", {"cidr": "10.5.0.0/16"})
    with pytest.raises(DocumentInvalid) as exc:
        validate_personality({"name": "x", "subnet_id": "odd"}, store)
    assert "subnet 'odd' is itself invalid" in errors(exc)["body.subnet_id"]


# -- helpers and examples --------------------------------------------------------------------

def test_field_path() -> None:
    assert field_path(("firewall_rules", 2, "port")) == "body.firewall_rules[2].port"
    assert field_path(()) == "body"


@pytest.mark.parametrize("name, slug", [
    ("Web Front", "web-front"), ("  lockdown  ", "lockdown"), ("Café / Bar!", "cafe-bar"),
    ("a" * 80, "a" * 64), ("!!!", ""),
])
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_id_problem() -> None:
    assert id_problem("seg1") is None and id_problem("web.front_2-b") is None
    assert id_problem("-x") and id_problem("a/b") and id_problem("") and id_problem(5)
    assert id_problem("a" * 65)


def test_examples_are_valid(store: Store) -> None:
    subnet_doc = yaml.safe_load((EXAMPLES / "subnet-seg1.yaml").read_text())
    assert subnet_doc.pop("id") == "seg1"
    assert isinstance(parse_subnet(subnet_doc), Subnet)
    open_p = validate_personality(yaml.safe_load((EXAMPLES / "personality-open.yaml").read_text()), store)
    assert open_p.default_action == "allow" and open_p.firewall_rules == []
    lock = validate_personality(yaml.safe_load((EXAMPLES / "personality-lockdown.yaml").read_text()), store)
    assert lock.default_action == "deny"
    assert [(r.protocol, r.port, r.direction, r.action) for r in lock.firewall_rules] == [
        ("tcp", 443, "ingress", "allow")]


def test_not_blank_means_the_same_to_the_schema_and_the_validator():
    """The OpenAPI pattern and the model agree on every character (schemathesis found
    \\x1f, which ECMA's \\S calls text and Python's str.isspace calls space)."""
    import re
    import sys

    from controller.core.documents import NOT_BLANK
    from controller.features.persona.document import parse_persona
    disagree = [hex(c) for c in range(sys.maxunicode + 1)
                if bool(re.search(NOT_BLANK, chr(c))) == chr(c).isspace()]
    assert disagree == []
    for blank in ("\x1f", " \t", "\u3000"):
        with pytest.raises(DocumentInvalid, match="body.name"):
            parse_personality({"name": blank})
        with pytest.raises(DocumentInvalid, match="body.name"):
            parse_persona({"name": blank, "ip_range": "10.1.0.0/24", "protocols": ["tcp"],
                           "expiration": "2099-01-01T00:00:00Z"}, None)
