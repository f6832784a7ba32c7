"""Services (the HRT): several resources behind one external address, and their flows.

What is stored, one kind per writer:

* ``shard-service`` (REST): ``{pool_id, external_ip, protocol, port, resources,
  metadata?: {pattern}, idle_timeout, index, created_at}``.  ``index`` numbers
  the service's conntrack zone (``SERVICE_ZONES``).  Its claims
  (``service_claims``): the external address (the same space as the
  resources' own) and the index.
* ``shard-route`` (REST): ``{pool_id, service_id, session, resource_id}``.
  For a service with a pattern, ``session`` is what the pattern's group
  extracts; for one without, a client prefix (``10.1.0.0/16``).
* ``shard-session`` (the runtime, on the worker): a learned route, the
  resource that default routing gave a session, ``{..., last_seen}``; it
  expires ``idle_timeout`` seconds after the session was last seen.

The flows, pure (`compile_services`), per service S with external address Es:

    every switch   route (40): to Es, its protocol and port ─►
                     no pattern: multipath(symmetric_l3l4+udp) ─► reg1 = link k ─► shard_service
                     pattern:    ct(zone Zs) ─► shard_service
                   shard_service (90): client-prefix route ─► resource (above the hash)
                     reg1 = k (hash) or ct_mark = k+1 (pinned) ─► resource k:
                       MACs rewritten, TTL decremented; on its switch ─► shard_in,
                       elsewhere out toward its switch (l2 there sends it to shard_in)
                     pattern, +new, not pinned ─► controller (`hrt`: it pins the flow)
    resource k's   shard_in (91): to Es ─► ct(zone Zk, nat) ─► shard_in_ct
    switch         shard_in_ct (92): new ─► ct(commit, zone Zk, nat(dst=current address))
                     ─► shard_deliver;  known ones are translate's flows

Replies are un-NATed by the resource's own zone in shard_edge, so they leave
with source Es.  A hash bucket whose resource has no address goes to the next
resource that has one, so the other buckets never move.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Annotated, Any, Literal, Mapping

from pydantic import Field, ValidationError, field_validator

from controller.core import budgets
from controller.core.budgets import Span
from controller.core.documents import (ID_PATTERN, IPv4, DocumentInvalid, DocumentModel, Seconds,
                                       errors_of, fail, rule)
from controller.features.shard.translate import ETH_IPV4, PUNT_METER, ResourceNet, ct_match
from controller.pipeline import cookies, tables
from controller.pipeline.actions import (Conntrack, DecTtl, Multipath, Nat, Output, SetField)
from controller.pipeline.flowspec import FlowSpec, flow

SERVICE, ROUTE, SESSION = "shard-service", "shard-route", "shard-session"
PROTOCOLS = {"tcp": 6, "udp": 17}
IDLE_TIMEOUT = 600              # seconds: a learned session unseen this long is forgotten
MAX_RESOURCES = 64              # per service
MARK_BITS = budgets.SHARD.ct_mark[0]            # ct_mark bits 16..19: the pinned resource
MAX_PINNED = (1 << len(MARK_BITS)) - 1          # 15 resources: marks 1..15 (0: not pinned)
ZONES = budgets.SHARD.zones[0]
SERVICE_ZONES = Span(0xB000, ZONES.last)        # resources take 0xA000 + index below these
MAX_INDEX = len(SERVICE_ZONES) - 1
HASH_REGISTER = f"reg{budgets.SHARD.registers[0].reg}"

# Priorities.  route (40): the shard's band 301..349, above a resource's external address.
SERVICE_ROUTE = 330
PREFIX_ROUTE = 200              # + the prefix length: the longest prefix wins
CHOSEN = 100                    # a hash bucket or a pinned flow
UNPINNED = 50                   # a patterned flow's first datagram: to the controller
IN_SERVICE, NEW = 200, 100      # shard_in, shard_in_ct (as translate's)

WHAT = "shard service"
DocumentId = Annotated[str, Field(pattern=f"^{ID_PATTERN.pattern}$")]
TCP_PATTERN = ("TCP cannot be routed by payload: its first packet (the SYN) carries none, and "
               "it must be forwarded before any payload is sent; use default routing or "
               "client-prefix routes")


# -- the document ---------------------------------------------------------------------

class Metadata(DocumentModel):
    pattern: str = Field(
        min_length=1, max_length=512, examples=[r"session=(\w+)"],
        description="A Python regular expression with exactly one group, searched in the "
                    "first datagram of a UDP flow (as UTF-8): the group is the session",
        json_schema_extra=rule("compiles as a Python regular expression with exactly one "
                               "group; UDP services only"))

    @field_validator("pattern")
    @classmethod
    def _one_group(cls, pattern: str) -> str:
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            fail(f"is not a Python regular expression: {exc}")
        if groups != 1:
            fail(f"has {groups} groups; it needs exactly one (the session)")
        return pattern


class ServiceSpec(DocumentModel):
    """Body of ``POST /v1/shard-pools/{id}/services``."""
    id: DocumentId | None = Field(
        default=None, description="The service's id; made from the pool's, the protocol and "
                                  "the port if left out")
    external_ip: IPv4 = Field(
        description="The one address clients use", examples=["198.51.100.80"],
        json_schema_extra=rule("a host address of the pool's external range that no resource "
                               "or other service holds"))
    protocol: Literal["udp", "tcp"]
    port: Annotated[int, Field(strict=True, ge=1, le=65535)]
    resources: list[DocumentId] = Field(
        min_length=1, max_length=MAX_RESOURCES,
        description="Resources of the same pool behind it (at most 15 with a pattern)",
        json_schema_extra=rule("each is enrolled in this pool, once; at most 15 with a "
                               "pattern"))
    metadata: Metadata | None = None
    idle_timeout: Seconds = Field(default=IDLE_TIMEOUT, description="A learned session unseen "
                                                                    "this long is forgotten")


def parse_service(body: Mapping[str, Any]) -> ServiceSpec:
    """The request as a ServiceSpec, or DocumentInvalid naming each bad field."""
    try:
        spec = ServiceSpec.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), WHAT) from None
    errors = []
    if spec.metadata is not None and spec.protocol == "tcp":
        errors.append(("body.metadata.pattern", TCP_PATTERN))
    if spec.metadata is not None and len(spec.resources) > MAX_PINNED:
        errors.append(("body.resources", f"{len(spec.resources)} resources; a service with a "
                                         f"pattern takes at most {MAX_PINNED}"))
    for i, rid in enumerate(spec.resources):
        if rid in spec.resources[:i]:
            errors.append((f"body.resources[{i}]", f"{rid!r} is listed twice"))
    if errors:
        raise DocumentInvalid(errors, WHAT)
    return spec


class RouteSpec(DocumentModel):
    """Body of ``POST /v1/shard-pools/{id}/routes``."""
    service_id: DocumentId = Field(json_schema_extra=rule("names a service of this pool"))
    session: str = Field(
        min_length=1, max_length=256, examples=["alice", "10.1.0.0/16"],
        description="For a service with a pattern: what its group extracts. For one without "
                    "(TCP, hashed UDP): a client prefix, an IPv4 network or address",
        json_schema_extra=rule("a client prefix (IPv4 network without host bits, or address) "
                               "for a service without a pattern"))
    resource_id: DocumentId = Field(json_schema_extra=rule("one of the service's resources"))


def route_session(pattern: str | None, session: str) -> str:
    """The session as stored: a client prefix in CIDR form for a service without a pattern
    (ValueError when it is not one), else the text itself."""
    if pattern is not None:
        return session
    try:
        return str(IPv4Network(session.strip()))
    except ValueError:
        raise ValueError(f"{session!r} is not a client prefix (an IPv4 network without host "
                         "bits, or an address): a service without a pattern routes by the "
                         "client's address only") from None


# -- what is stored, as the runtime reads it --------------------------------------------

@dataclass(frozen=True)
class Service:
    id: str
    pool_id: str
    external_ip: str
    protocol: str
    port: int
    resources: tuple[str, ...]
    pattern: str | None
    idle_timeout: int
    index: int

    @property
    def zone(self) -> int:
        return SERVICE_ZONES.first + self.index

    @property
    def ip_proto(self) -> int:
        return PROTOCOLS[self.protocol]

    @classmethod
    def from_doc(cls, id: str, body: Mapping[str, Any]) -> "Service":
        pattern = (body.get("metadata") or {}).get("pattern")
        return cls(id, body["pool_id"], body["external_ip"], body["protocol"], int(body["port"]),
                   tuple(body["resources"]), pattern,
                   int(body.get("idle_timeout") or IDLE_TIMEOUT), int(body["index"]))


def mark_of(position: int) -> int:
    """The ct_mark that pins a flow to the service's resource at `position` (0-based)."""
    if not 0 <= position < MAX_PINNED:
        raise ValueError(f"position {position} cannot be pinned (at most {MAX_PINNED})")
    return (position + 1) << MARK_BITS.first


def route_id(service_id: str, session: str) -> str:
    """The id of a service's route for a session (an operator's ``shard-route`` or a learned
    ``shard-session``: the same one, so a session has at most one of each)."""
    digest = hashlib.sha256(f"{service_id}\n{session}".encode()).hexdigest()[:12]
    return f"{service_id[:51]}-{digest}"


@dataclass(frozen=True)
class Route:
    """An operator's route: this session (or client prefix) to this resource."""
    id: str
    pool_id: str
    service_id: str
    session: str
    resource_id: str

    @classmethod
    def from_doc(cls, id: str, body: Mapping[str, Any]) -> "Route":
        return cls(id, body["pool_id"], body["service_id"], body["session"], body["resource_id"])


# -- the flows ------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceNet:
    """A service as its flows need it: its resources by position (None: no address now),
    and its client-prefix routes as (prefix, position)."""
    service: Service
    members: tuple[ResourceNet | None, ...]
    prefixes: tuple[tuple[IPv4Network, int], ...] = ()


@dataclass(frozen=True)
class ServicesInput:
    switches: frozenset[int]
    router_mac: str
    hops: Mapping[int, Mapping[int, int]]       # FabricView.hops: [from dpid][to dpid] -> port
    services: tuple[ServiceNet, ...]


def service_cookie(service_id: str) -> int:
    return cookies.make(cookies.Feature.SHARD, f"service:{service_id}")


def _to_service(s: Service) -> dict[str, Any]:
    return {"eth_type": ETH_IPV4, "ipv4_dst": s.external_ip}


def _route_flow(inp: ServicesInput, s: Service) -> FlowSpec:
    match = {**_to_service(s), "eth_dst": inp.router_mac, "ip_proto": s.ip_proto,
             f"{s.protocol}_dst": s.port}
    if s.pattern is None:
        return flow(tables.ROUTE.id, SERVICE_ROUTE, match,
                    [Multipath(len(s.resources), HASH_REGISTER)],
                    goto=tables.SHARD_SERVICE.id, cookie=service_cookie(s.id))
    return flow(tables.ROUTE.id, SERVICE_ROUTE, match,
                [Conntrack(zone=s.zone, table=tables.SHARD_SERVICE.id)],
                cookie=service_cookie(s.id))


def _deliver(inp: ServicesInput, dpid: int, s: Service, r: ResourceNet, priority: int,
             match: dict[str, Any]) -> FlowSpec | None:
    """The flow of shard_service that hands a packet to resource `r` (None: unreachable)."""
    rewrite = [SetField("eth_src", inp.router_mac), SetField("eth_dst", r.mac), DecTtl()]
    if dpid == r.dpid:
        return flow(tables.SHARD_SERVICE.id, priority, match, rewrite,
                    goto=tables.SHARD_IN.id, cookie=service_cookie(s.id))
    port = inp.hops.get(dpid, {}).get(r.dpid)
    if port is None:
        return None
    return flow(tables.SHARD_SERVICE.id, priority, match, [*rewrite, Output(port)],
                cookie=service_cookie(s.id))


def _bucket_owner(members: tuple[ResourceNet | None, ...], k: int) -> ResourceNet | None:
    """The resource of hash bucket k: its own, or the next one with an address."""
    n = len(members)
    return next((members[(k + i) % n] for i in range(n) if members[(k + i) % n]), None)


def _decision_flows(inp: ServicesInput, dpid: int, sn: ServiceNet) -> list[FlowSpec]:
    s, out = sn.service, []
    chosen: list[tuple[int, dict[str, Any], ResourceNet | None]] = []
    for prefix, k in sn.prefixes:
        chosen.append((PREFIX_ROUTE + prefix.prefixlen,
                       {**_to_service(s), "ipv4_src": str(prefix)}, sn.members[k]))
    if s.pattern is None:
        chosen += [(CHOSEN, {**_to_service(s), HASH_REGISTER: k}, _bucket_owner(sn.members, k))
                   for k in range(len(sn.members))]
    else:
        chosen += [(CHOSEN, {**_to_service(s), **ct_match("+trk"),
                             "ct_mark": (mark_of(k), MARK_BITS.mask)}, r)
                   for k, r in enumerate(sn.members)]
        out.append(flow(tables.SHARD_SERVICE.id, UNPINNED,
                        {**_to_service(s), **ct_match("+new+trk")}, [Output.controller()],
                        meter=PUNT_METER, cookie=service_cookie(s.id)))
    for priority, match, r in chosen:
        f = _deliver(inp, dpid, s, r, priority, match) if r is not None else None
        if f is not None:
            out.append(f)
    return out


def _inbound_flows(s: Service, r: ResourceNet) -> list[FlowSpec]:
    """On the resource's switch: the service's connections are translated to its address."""
    c = service_cookie(s.id)
    mine = {"eth_dst": r.mac, "eth_type": ETH_IPV4, "ipv4_dst": s.external_ip,
            "ip_proto": s.ip_proto}
    return [flow(tables.SHARD_IN.id, IN_SERVICE, {**mine, f"{s.protocol}_dst": s.port},
                 [Conntrack(zone=r.zone, nat=Nat(), table=tables.SHARD_IN_CT.id)], cookie=c),
            flow(tables.SHARD_IN_CT.id, NEW, {**mine, **ct_match("+new+trk")},
                 [Conntrack(commit=True, zone=r.zone, nat=Nat(dst=r.address),
                            table=tables.SHARD_DELIVER.id)], cookie=c)]


def compile_services(inp: ServicesInput) -> dict[int, list[FlowSpec]]:
    """Per ready switch, the flows of every service (nothing for a switch without any)."""
    out: dict[int, list[FlowSpec]] = {}
    for sn in inp.services:
        for dpid in sorted(inp.switches):
            out.setdefault(dpid, []).append(_route_flow(inp, sn.service))
            out[dpid] += _decision_flows(inp, dpid, sn)
        for r in dict.fromkeys(m for m in sn.members if m is not None):
            if r.dpid in inp.switches:
                out[r.dpid] += _inbound_flows(sn.service, r)
    for flows in out.values():
        tables.check(flows)
    return out
