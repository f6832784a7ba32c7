"""Mirroring to shadow instances in flows, pure: `compile_mirror(MirrorInput)`.

A shadowed appliance's traffic is decided once per connection, in the
switch, and every packet of a sampled connection is copied whole to one
shadow instance.  The packet itself never enters a shadow table: each hook
replaces the flow it overrides with the same continuation plus a `clone`,
and only the clone (the copy) goes through conntrack and the decision.

    production    classify (0): its port+MAC, IPv4 [its service's protocol, from its port]
    switch          ─► clone(ct(zone Za) ─► shadow_from (7)),  the packet ─► goto as before
                         (arp; personality_egress when the interface has a personality)
                  l2 (50): to its MAC, IPv4 [to its service's port]
                    ─► clone(ct(zone Za) ─► shadow_to (80)),   the packet ─► as before
                         (out its port; personality_ingress with a personality)
                  l2 (50), above: from a blocked source to its MAC ─► dropped

                  shadow_from / shadow_to, the copy (ct_zone = Za):
                    marked sampled, instance i ─► MAC := i's, out toward i (cut to snaplen)
                    new, undecided ─► multipath ─► reg0[0..9] = hash mod 1000,
                                                   reg0[16..19] = second hash mod instances
                                  ─► shadow_from_decide (8) / shadow_to_decide (81)
                    anything else ─► dropped
                  shadow_*_decide:
                    TCP not opening (no SYN, or SYN+ACK) ─► commit decided, dropped
                    a held source, or reg0[0..9] < permille (prefix-masked ranges)
                      ─► commit decided+sampled+instance, MAC := its, out toward it
                    the rest ─► commit decided, dropped

    instance's    classify (0), above everything: its port
    switch          UDP to its gateway at the agent port, or ARP for the gateway
                      ─► shadow_agent (9): datagram ─► controller (metered); ARP answered
                    anything else it sends ─► dropped (replies, RSTs, ARP, ICMP)

One conntrack zone per appliance (`zone_of`), seen by both hooks, so a
connection is decided by its first packet whichever way it goes and its
replies are `+est` in the same entry.  The mark (`ct_mark` bits 8..15) is
written once, at the decision: a percentage changed later affects new
connections only, and a one-way UDP stream (`+new` after its commit) keeps
its decision.  The hash is `symmetric_l3l4+udp`, the same for both
directions; a value below 5 per mille is below 10 too, so sampling is
nested; the instance comes from a second hash (another basis), so each
instance gets whole connections.  A TCP connection first seen mid-stream
(begun before its appliance was mirrored, or after conntrack lost it) is
never sampled: no half streams.

Copies are taken at the hub's side of the production interface, before its
personality's firewall: a connection that firewall refuses may still be
mirrored (nothing the shadow answers ever leaves its port).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from controller.core import budgets
from controller.features.fabric.compile import arp_responder
from controller.features.shadow.mirror_caps import Requirement, required_actions
from controller.features.shadow.mirror_net import (
    BUCKET_BASIS, BUCKET_BITS, BUCKET_MASK, BUCKET_OFS, DECIDED, ETH_ARP, ETH_IPV4,
    HASH_REGISTER, MARK, ORDINAL_MASK, PROTOCOLS, SAMPLE_BASIS, SAMPLE_BITS, SAMPLE_LINKS,
    SAMPLED, TCP_ACK, TCP_SYN, ApplianceNet, Block, Endpoint, InstanceNet, MirrorInput,
    ServicePort, appliance_cookie, below, guard_cookie, instance_cookie, sampled_mark)
from controller.pipeline import tables
from controller.pipeline.actions import (Action, Clone, Conntrack, Move, Multipath, Output,
                                         OutputTrunc, SetField, ct_state)
from controller.pipeline.flowspec import FlowSpec, flow
from controller.pipeline.meters import MeterSpec

__all__ = ["ApplianceNet", "Block", "Endpoint", "InstanceNet", "MirrorInput", "ServicePort",
           "Requirement", "required_actions", "appliance_cookie",
           "instance_cookie", "guard_cookie", "compile_mirror", "mirror_meters",
           "appliance_flows"]

AGENT_METER = budgets.SHADOW.meters[0].first     # every agent punt of a switch
AGENT_METER_KBPS = 256

# Priorities.  classify (0): hooks 255..269, a shadow's port 65100..65199; l2 (50) 165..179.
HOOK_CLASSIFY, GUARD_DROP, GUARD_AGENT = 260, 65150, 65160
HOOK_L2, BLOCK = 170, 179
COPY, UNDECIDED = 300, 200                       # shadow_from / shadow_to
NOT_AN_OPEN, HELD, IN_RANGE, UNSAMPLED = 400, 300, 200, 100   # the decide tables
AGENT_PUNT, GATEWAY_ARP = 200, 100               # shadow_agent


class _Side(NamedTuple):
    """One hook: where the copy is tracked and decided, and how the service is matched."""
    track: int
    decide: int
    port_field: str                  # tcp_src (from production) or tcp_dst (to it)


FROM = _Side(tables.SHADOW_FROM.id, tables.SHADOW_FROM_DECIDE.id, "src")
TO = _Side(tables.SHADOW_TO.id, tables.SHADOW_TO_DECIDE.id, "dst")


def _service_matches(a: ApplianceNet, side: _Side) -> list[dict[str, Any]]:
    if not a.service:
        return [{"eth_type": ETH_IPV4}]
    return [{"eth_type": ETH_IPV4, "ip_proto": PROTOCOLS[s.protocol],
             f"{s.protocol}_{side.port_field}": s.port} for s in a.service]


def _hooks(a: ApplianceNet, e: Endpoint) -> list[FlowSpec]:
    c = appliance_cookie(a.id)
    out = []
    for side, base in ((FROM, {"in_port": e.port, "eth_src": e.mac}), (TO, {"eth_dst": e.mac})):
        copy = Clone((Conntrack(zone=a.zone, table=side.track),))
        for m in _service_matches(a, side):
            if side is FROM:
                out.append(flow(tables.CLASSIFY.id, HOOK_CLASSIFY, {**base, **m}, [copy],
                                goto=e.egress_goto, cookie=c))
            elif e.ingress_goto is None:
                out.append(flow(tables.L2.id, HOOK_L2, {**base, **m}, [copy, Output(e.port)],
                                cookie=c))
            else:
                out.append(flow(tables.L2.id, HOOK_L2, {**base, **m}, [copy],
                                goto=e.ingress_goto, cookie=c))
    return out


def _blocks(a: ApplianceNet, e: Endpoint) -> list[FlowSpec]:
    """Above every other flow of the appliance at l2, so a blocked packet is not copied."""
    return [flow(tables.L2.id, BLOCK, {"eth_dst": e.mac, "eth_type": ETH_IPV4,
                                       "ipv4_src": b.source_ip}, cookie=b.cookie)
            for b in a.blocks]


def _copy(a: ApplianceNet, i: InstanceNet, dpid: int, port: int | None) -> tuple[Action, ...]:
    """The copy's way from switch `dpid` to instance `i`, out of `port` (none: unreachable).
    Toward another switch the copy's in_port is cleared (from reg7, which stays zero), as
    the fabric does: it may have come in by the very link it leaves by."""
    if port is None:
        return ()
    clear = (Move("reg7", "in_port", 16),) if i.dpid != dpid else ()
    out = Output(port) if a.snaplen is None else OutputTrunc(port, a.snaplen)
    return (*clear, SetField("eth_dst", i.mac), out)


def _mirror(a: ApplianceNet, side: _Side, dpid: int,
            ports: tuple[int | None, ...]) -> list[FlowSpec]:
    """The copies' tables of one hook: copy what is sampled, decide what is new."""
    c, here = appliance_cookie(a.id), {"eth_type": ETH_IPV4, "ct_zone": a.zone}
    receivers = a.receivers
    out = [flow(side.track, UNDECIDED, {**here, "ct_state": ct_state("+trk+new"),
                                        "ct_mark": (0, DECIDED)},
                [Multipath(SAMPLE_LINKS, HASH_REGISTER, SAMPLE_BITS, 0, basis=SAMPLE_BASIS),
                 Multipath(len(receivers), HASH_REGISTER, BUCKET_BITS, BUCKET_OFS,
                           basis=BUCKET_BASIS)],
                goto=side.decide, cookie=c)]
    undecided = Conntrack(commit=True, zone=a.zone, mark=DECIDED, mark_mask=MARK.mask)
    for flags in ((0, TCP_SYN), (TCP_SYN | TCP_ACK, TCP_SYN | TCP_ACK)):
        out.append(flow(side.decide, NOT_AN_OPEN, {**here, "ip_proto": PROTOCOLS["tcp"],
                                                   "tcp_flags": flags}, [undecided], cookie=c))
    out.append(flow(side.decide, UNSAMPLED, here, [undecided], cookie=c))
    for k, (i, port) in enumerate(zip(receivers, ports)):
        ci, copy = instance_cookie(a.id, i.slot_id), _copy(a, i, dpid, port)
        if copy:
            out.append(flow(side.track, COPY, {**here, "ct_state": ct_state("+trk"),
                                               "ct_mark": (sampled_mark(i.ordinal),
                                                           DECIDED | SAMPLED | ORDINAL_MASK)},
                            copy, cookie=ci))
        commit = Conntrack(commit=True, zone=a.zone, mark=sampled_mark(i.ordinal),
                           mark_mask=MARK.mask)
        bucket = k << BUCKET_OFS
        for source in a.held_sources:
            out.append(flow(side.decide, HELD, {**here, "ipv4_src": source,
                                                HASH_REGISTER: (bucket, BUCKET_MASK)},
                            [commit, *copy], cookie=ci))
        for value, mask in below(a.permille):
            out.append(flow(side.decide, IN_RANGE,
                            {**here, HASH_REGISTER: (bucket | value, BUCKET_MASK | mask)},
                            [commit, *copy], cookie=ci))
    return out


def guard_flows(router_mac: str, agent_port: int, i: InstanceNet) -> list[FlowSpec]:
    """Nothing the instance sends leaves its port, but its agent's datagrams to the hub."""
    c, port = guard_cookie(i.slot_id), {"in_port": i.port}
    out = [flow(tables.CLASSIFY.id, GUARD_DROP, port, cookie=c)]
    if i.gateway_ip is None:
        return out
    agent = {**port, "eth_type": ETH_IPV4, "ip_proto": PROTOCOLS["udp"],
             "ipv4_dst": i.gateway_ip, "udp_dst": agent_port}
    arp = {**port, "eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": i.gateway_ip}
    out += [flow(tables.CLASSIFY.id, GUARD_AGENT, m, goto=tables.SHADOW_AGENT.id, cookie=c)
            for m in (agent, arp)]
    out += [flow(tables.SHADOW_AGENT.id, AGENT_PUNT, agent, [Output.controller()],
                 meter=AGENT_METER, cookie=c),
            flow(tables.SHADOW_AGENT.id, GATEWAY_ARP, arp,
                 arp_responder(router_mac, i.gateway_ip), cookie=c)]
    return out


@lru_cache(maxsize=1 << 12)
def appliance_flows(router_mac: str, agent_port: int, a: ApplianceNet, dpid: int,
                    ports: tuple[int | None, ...]) -> tuple[FlowSpec, ...]:
    """One appliance's flows on switch `dpid`, made once per (appliance as it is now, the
    switch's ports toward its ready instances, in `receivers` order): a percentage or an
    instance changed recompiles that appliance only."""
    out: list[FlowSpec] = []
    here = [e for e in a.production if e.dpid == dpid]
    for e in here:   # nothing is copied while no instance is ready: no hooks
        out += _blocks(a, e) + (_hooks(a, e) if a.receivers else [])
    if here and a.receivers:
        out += _mirror(a, FROM, dpid, ports) + _mirror(a, TO, dpid, ports)
    for i in a.instances:
        if i.dpid == dpid:
            out += guard_flows(router_mac, agent_port, i)
    tables.check(out)
    return tuple(out)


def _ports(inp: MirrorInput, dpid: int, a: ApplianceNet) -> tuple[int | None, ...]:
    return tuple(i.port if i.dpid == dpid else inp.hops.get(dpid, {}).get(i.dpid)
                 for i in a.receivers)


def compile_mirror(inp: MirrorInput) -> dict[int, tuple[FlowSpec, ...]]:
    """Per ready switch with anything of an appliance on it, the appliances' flows."""
    out: dict[int, list[FlowSpec]] = {}
    for a in inp.appliances:
        for dpid in sorted(inp.switches):
            flows = appliance_flows(inp.router_mac, inp.agent_port, a, dpid,
                                    _ports(inp, dpid, a))
            if flows:
                out.setdefault(dpid, []).extend(flows)
    return {dpid: tuple(flows) for dpid, flows in out.items()}


def agent_meter() -> MeterSpec:
    return MeterSpec(AGENT_METER, AGENT_METER_KBPS)


def mirror_meters(inp: MirrorInput) -> dict[int, tuple[MeterSpec, ...]]:
    """The meter the agents' punts go through, on every switch with a flow that punts."""
    punting = {i.dpid for a in inp.appliances for i in a.instances
               if i.gateway_ip is not None and i.dpid in inp.switches}
    return {dpid: (MeterSpec(AGENT_METER, AGENT_METER_KBPS),) for dpid in sorted(punting)}
