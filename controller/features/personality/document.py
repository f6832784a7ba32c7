"""Personality documents (PDR): what a host attached to the hub is allowed and given.

``Personality`` checks everything a document can check on its own;
``validate_personality`` adds the checks that need the store (the subnet it
names exists and contains its addresses and next hops). Both raise
``DocumentInvalid`` listing every offending field, so a bad document is
refused as a whole and never half-applied.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from controller.store import Store
from controller.core.topology import Subnet as TopologySubnet

from controller.core.documents import (ANY_NETWORK, NOT_BLANK, NotBlank, PORT_SCHEMA, DocumentInvalid, DocumentModel,
                                      IPv4, IPv4Cidr, Seconds, StrictPositiveInt, errors_of, fail,
                                      field_path, parse_port, rule)

KIND = "personality"

MAX_KEY = 2**32 - 1
MAX_VNI = 2**24 - 1
MAX_RULES = 10000              # firewall rules of one personality
MAX_APPLICATION_RULES = 1000   # application rules of one list (allow, deny)

Name = Annotated[str, Field(min_length=1, max_length=64)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]


def _no_duplicates(values: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            fail(f"{value} is listed more than once")
        seen.add(value)
    return values


class FirewallRule(DocumentModel):
    """One rule; rules are checked in order and the first match decides."""

    model_config = ConfigDict(json_schema_extra={  # a port only with tcp or udp
        "if": {"properties": {"protocol": {"enum": ["icmp", "any"]}}, "required": ["protocol"]},
        "then": {"properties": {"port": {"type": "null"}}}})

    source: IPv4Cidr = Field(default=ANY_NETWORK, description="Sender network", examples=["0.0.0.0/0"])
    destination: IPv4Cidr = Field(default=ANY_NETWORK, description="Receiver network")
    protocol: Literal["tcp", "udp", "icmp", "any"]
    port: int | str | None = Field(default=None, description='Destination port, "A-B" range, or null for any',
                                   examples=[443, "8000-8080"], json_schema_extra=PORT_SCHEMA)
    direction: Literal["ingress", "egress", "both"] = "both"
    action: Literal["allow", "deny"]

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any, info: ValidationInfo) -> int | str | None:
        port = parse_port(value)
        protocol = info.data.get("protocol")
        if port is not None and protocol in ("icmp", "any"):
            fail(f"a port only applies to protocol tcp or udp, not {protocol}; "
                 "remove the port or name the protocol")
        return port


def _needs(field: str, needed: str) -> dict[str, Any]:
    """JSON Schema: when ``field`` is given (not null), ``needed`` must be too."""
    number = {"type": "integer"}
    return {"if": {"properties": {field: number}, "required": [field]},
            "then": {"properties": {needed: number}, "required": [needed]}}


class QosSettings(DocumentModel):
    """Traffic class and rate limits; rates in kbit/s, bursts in kbyte."""

    model_config = ConfigDict(json_schema_extra={"allOf": [
        _needs("ingress_burst_kb", "ingress_rate_kbps"), _needs("egress_burst_kb", "egress_rate_kbps")]})

    priority: Annotated[int, Field(strict=True, ge=0, le=7)] | None = None
    ingress_rate_kbps: StrictPositiveInt | None = None
    ingress_burst_kb: StrictPositiveInt | None = None
    egress_rate_kbps: StrictPositiveInt | None = None
    egress_burst_kb: StrictPositiveInt | None = None

    @field_validator("ingress_burst_kb", "egress_burst_kb")
    @classmethod
    def _burst_needs_rate(cls, burst: int | None, info: ValidationInfo) -> int | None:
        assert info.field_name is not None
        rate = info.field_name.replace("_burst_kb", "_rate_kbps")
        if burst is not None and info.data.get(rate) is None:
            fail(f"a burst needs a rate; set {rate} too")
        return burst


class VpnTunnelConfig(DocumentModel):
    """An overlay tunnel to a remote endpoint and the prefixes reached through it."""

    model_config = ConfigDict(json_schema_extra={  # vxlan and geneve carry a 24-bit VNI
        "if": {"properties": {"type": {"enum": ["vxlan", "geneve"]}}, "required": ["type"]},
        "then": {"properties": {"key": {"anyOf": [{"type": "integer", "maximum": MAX_VNI},
                                                  {"type": "null"}]}}}})

    type: Literal["vxlan", "gre", "geneve"]
    remote_ip: IPv4
    key: Annotated[int, Field(strict=True, ge=0, le=MAX_KEY)] | None = Field(
        default=None, description="Tunnel key; the VNI for vxlan and geneve (at most 2^24-1)")
    remote_prefixes: Annotated[list[IPv4Cidr], Field(min_length=1)]

    @field_validator("key")
    @classmethod
    def _vni(cls, key: int | None, info: ValidationInfo) -> int | None:
        kind = info.data.get("type")
        if key is not None and kind in ("vxlan", "geneve") and key > MAX_VNI:
            fail(f"{kind} carries a 24-bit VNI; the key must be at most {MAX_VNI}")
        return key


class ApplicationRule(DocumentModel):
    """An application, recognized by transport port and optionally by payload."""

    name: Name
    protocol: Literal["tcp", "udp"]
    port: Port
    signature: str | None = Field(
        default=None, description='Payload bytes as text, or "re:<regex>" matched against the payload',
        json_schema_extra={"anyOf": [{"type": "string", "pattern": "^(?!re:$)[\\s\\S]+$",
                                      **rule('after "re:", a regular expression that compiles')},
                                     {"type": "null"}]})

    @field_validator("signature")
    @classmethod
    def _signature(cls, signature: str | None) -> str | None:
        if signature is None:
            return None
        if signature == "":
            fail('must not be empty; leave it out, give bytes as text, or "re:<regex>"')
        if signature.startswith("re:"):
            pattern = signature[3:]
            if not pattern:
                fail('the regular expression after "re:" is empty')
            try:  # matched against payload bytes, so compiled as a bytes pattern
                re.compile(pattern.encode("utf-8"))
            except re.error as exc:
                fail(f"the regular expression does not compile as a bytes pattern: {exc}")
        return signature


class ApplicationAccessPolicy(DocumentModel):
    allow: list[ApplicationRule] = Field(default_factory=list, max_length=MAX_APPLICATION_RULES)
    deny: list[ApplicationRule] = Field(default_factory=list, max_length=MAX_APPLICATION_RULES)


class RouteEntry(DocumentModel):
    destination: IPv4Cidr
    next_hop: IPv4 = Field(json_schema_extra=rule("inside the personality's subnet"))


class Personality(DocumentModel):
    """A personality document (PDR). Only ``name`` is required.

    ``firewall_rules`` are checked in order and the first match wins; what no
    rule matches takes ``default_action`` (deny unless set).
    """

    name: Annotated[Name, NotBlank] = Field(json_schema_extra={"pattern": NOT_BLANK, **rule(
        "without an id, holds a letter or digit to make the id from")})
    subnet_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, json_schema_extra=rule("names a stored subnet"))
    ip_addresses: list[IPv4] = Field(default_factory=list, json_schema_extra={"uniqueItems": True, **rule(
        "host addresses inside the subnet, not its gateway")})
    firewall_rules: list[FirewallRule] = Field(default_factory=list, max_length=MAX_RULES)
    default_action: Literal["allow", "deny"] = "deny"
    qos_settings: QosSettings | None = None
    vpn_tunnel_config: VpnTunnelConfig | None = None
    application_access_policy: ApplicationAccessPolicy | None = None
    dns_servers: list[IPv4] = Field(default_factory=list, json_schema_extra={"uniqueItems": True})
    routing_table: list[RouteEntry] = Field(default_factory=list, json_schema_extra=rule(
        "one route per destination"))
    expires_after: Seconds | None = Field(default=None, description='Seconds, or "45s", "30m", "2h", "1d"')

    @field_validator("ip_addresses", "dns_servers")
    @classmethod
    def _unique(cls, values: list[ipaddress.IPv4Address]) -> list[ipaddress.IPv4Address]:
        return _no_duplicates(values)

    @field_validator("routing_table")
    @classmethod
    def _one_route_per_destination(cls, routes: list[RouteEntry]) -> list[RouteEntry]:
        seen: set[Any] = set()
        for route in routes:
            if route.destination in seen:
                fail(f"destination {route.destination} is routed more than once; "
                     "a destination has one next hop")
            seen.add(route.destination)
        return routes

    def stored_body(self) -> dict[str, Any]:
        """The normalized body kept in the store: what was given, in canonical form.

        Defaults are not written out; validating the body again restores them.
        """
        return self.model_dump(mode="json", exclude_unset=True)


def parse_personality(doc: Any) -> Personality:
    """Validate a personality body on its own (no store)."""
    if not isinstance(doc, dict):
        raise DocumentInvalid([("body", "must be an object (a mapping of fields)")], "personality")
    try:
        return Personality.model_validate(doc)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), "personality") from None


def subnet_errors(personality: Personality, subnet: TopologySubnet) -> list[tuple[str, str]]:
    """Addresses and next hops of ``personality`` that do not fit ``subnet``."""
    errors: list[tuple[str, str]] = []
    cidr, name = subnet.cidr, subnet.id
    for i, ip in enumerate(personality.ip_addresses):
        field = field_path(("ip_addresses", i))
        if ip not in cidr:
            errors.append((field, f"{ip} is outside subnet {name!r} ({cidr})"))
        elif ip == subnet.gateway:
            errors.append((field, f"{ip} is the gateway of subnet {name!r}"))
        elif cidr.prefixlen <= 30 and ip in (cidr.network_address, cidr.broadcast_address):
            which = "network" if ip == cidr.network_address else "broadcast"
            errors.append((field, f"{ip} is the {which} address of subnet {name!r} ({cidr})"))
    for i, route in enumerate(personality.routing_table):
        if route.next_hop not in cidr:
            errors.append((field_path(("routing_table", i, "next_hop")),
                           f"next hop {route.next_hop} is outside subnet {name!r} ({cidr}); "
                           "a next hop must be reachable on the subnet"))
    return errors


def validate_personality(doc: Any, store: Store) -> Personality:
    """Validate a personality body, including the checks that read the store.

    ``subnet_id`` must name an existing subnet; every ``ip_addresses`` entry
    must be a host address inside it (not its gateway), and every
    ``routing_table[i].next_hop`` must lie inside it. Without ``subnet_id``
    there is nothing to check addresses against.
    """
    personality = parse_personality(doc)
    check_personality(personality, store)
    return personality


def check_personality(personality: Personality, store: Store) -> None:
    """The store rules of a parsed personality (see ``validate_personality``)."""
    if personality.subnet_id is None:
        return
    field = field_path(("subnet_id",))
    stored = store.find("subnet", personality.subnet_id)
    if stored is None:
        raise DocumentInvalid([(field, f"no subnet with id {personality.subnet_id!r} exists")],
                              "personality")
    try:
        subnet = TopologySubnet.from_body(stored.id, stored.body, stored.revision)
    except (KeyError, TypeError, ValueError) as exc:
        raise DocumentInvalid([(field, f"subnet {stored.id!r} is itself invalid: {exc}")],
                              "personality") from None
    errors = subnet_errors(personality, subnet)
    if errors:
        raise DocumentInvalid(errors, "personality")
