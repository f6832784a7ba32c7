"""The persona firewall tables: persona_out_fw (71) and persona_in_fw (72).

Stateful, per persona (reg6 says which): replies and related packets pass;
a new connection needs a listed protocol, no persona on the other end
(`isolation_flows`, shared by all personas), and, outbound, no denying
security policy (first match wins; default allow), inbound, an allowing one
(default deny).  Commits and refusals carry the persona's usage cookies, so
connections opened and attempts denied are counted.
"""
from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network

from controller.features.persona.net import (CONNECTION, DENIED, REAL_MARK, REG_PERSONA,
                                             REG_REAL, GatewayInput, PersonaNet, Policy,
                                             persona_cookie, usage_cookie)
from controller.pipeline import tables
from controller.pipeline.actions import Conntrack, ct_state
from controller.pipeline.flowspec import FlowSpec, MatchValue, flow
from controller.pipeline.ports import port_range_masks

ETH_IPV4 = 0x0800
PORT_FIELDS = {6: "tcp_dst", 17: "udp_dst", 132: "sctp_dst"}

# Priorities
FW_INVALID = 65000
FW_REPLY = 64000
FW_CLOSED = 62000
FW_INTRA = 61000
FW_ISOLATE = 60000
FW_POLICY_TOP = 50000  # policy i gets FW_POLICY_TOP - 2 * i (+1: to the real address)
FW_DEFAULT = 100
FW_REFUSE = 1


def _net(match: dict, field: str, net: IPv4Network | None) -> None:
    if net is not None and net.prefixlen:
        match[field] = str(net.network_address) if net.prefixlen == 32 else \
            (str(net.network_address), str(net.netmask))


def range_match(net: IPv4Network) -> MatchValue:
    return str(net.network_address) if net.prefixlen == 32 else \
        (str(net.network_address), str(net.netmask))


def _policy_matches(policy: Policy) -> list[dict[str, MatchValue]]:
    base: dict[str, MatchValue] = {"eth_type": ETH_IPV4, "ip_proto": policy.protocol}
    _net(base, "ipv4_src", policy.source)
    _net(base, "ipv4_dst", policy.destination)
    field = PORT_FIELDS.get(policy.protocol)
    if policy.ports is None or field is None:
        return [base]
    out = []
    for value, mask in port_range_masks(*policy.ports):
        m = dict(base)
        m[field] = value if mask == 0xFFFF else (value, mask)
        out.append(m)
    return out


def firewall_flows(inp: GatewayInput, p: PersonaNet) -> list[FlowSpec]:
    T = tables
    c = persona_cookie(p.id)
    me = {REG_PERSONA: p.index, "eth_type": ETH_IPV4}
    commit = Conntrack(commit=True, zone=p.zone)
    real_commit = Conntrack(commit=True, zone=p.zone, mark=REAL_MARK, mark_mask=REAL_MARK)
    conn, denied = usage_cookie(p.id, CONNECTION), usage_cookie(p.id, DENIED)
    new = ct_state("+trk+new")
    flows: list[FlowSpec] = []
    for fw, onward in ((T.PERSONA_OUT_FW, T.PERSONA_OUT), (T.PERSONA_IN_FW, T.PERSONA_IN)):
        flows += [
            flow(fw.id, FW_INVALID, {**me, "ct_state": ct_state("+trk+inv")}, cookie=c),
            flow(fw.id, FW_REPLY, {**me, "ct_state": ct_state("+trk+est")}, goto=onward.id,
                 cookie=c),
            flow(fw.id, FW_REPLY, {**me, "ct_state": ct_state("+trk+rel")}, goto=onward.id,
                 cookie=c),
            flow(fw.id, FW_REFUSE, {**me, "ct_state": new}, cookie=denied),
        ]
        if p.closing:
            flows.append(flow(fw.id, FW_CLOSED, {**me, "ct_state": new}, cookie=c))
            continue
        for i, policy in enumerate(p.policies):
            if policy.protocol not in p.protocols:
                continue
            top = FW_POLICY_TOP - 2 * i
            for match in _policy_matches(policy):
                if policy.action == "allow":
                    flows.append(flow(fw.id, top, {**me, **match, "ct_state": new},
                                      [commit], goto=onward.id, cookie=conn))
                    if fw is T.PERSONA_IN_FW and p.owns_real and p.nat_range is not None:
                        flows.append(flow(fw.id, top + 1, {**me, **match, "ct_state": new,
                                                           REG_REAL: 1},
                                          [real_commit], goto=onward.id, cookie=conn))
                else:
                    flows.append(flow(fw.id, top, {**me, **match, "ct_state": new},
                                      cookie=denied))
    # From the persona: within its own range, or by default, any listed protocol.
    for proto in sorted(p.protocols):
        base = {**me, "ip_proto": proto, "ct_state": new}
        if not p.closing:
            flows.append(flow(T.PERSONA_OUT_FW.id, FW_INTRA, {**base,
                                                              "ipv4_dst": range_match(p.ip_range)},
                              [commit], goto=T.PERSONA_OUT.id, cookie=conn))
            flows.append(flow(T.PERSONA_OUT_FW.id, FW_DEFAULT, base, [commit],
                              goto=T.PERSONA_OUT.id, cookie=conn))
    return flows


def isolation_flows(inp: GatewayInput) -> list[FlowSpec]:
    """New connections between personas are refused, whichever persona sends.

    One flow per persona range (real and hub-visible) in each firewall table,
    shared by all personas (no reg6 match): a persona's own range is let
    through above it (FW_INTRA).  A refusal counts as a denied attempt of the
    persona the range belongs to (the first by id, for a range two share).
    """
    T = tables
    flows = []
    seen: set[IPv4Network] = set()
    for p in sorted(inp.personas, key=lambda p: p.id):
        for net in (p.ip_range, p.hub_range):
            if net in seen:
                continue
            seen.add(net)
            for fw, field in ((T.PERSONA_OUT_FW, "ipv4_dst"), (T.PERSONA_IN_FW, "ipv4_src")):
                flows.append(_isolation_flow(fw.id, field, net, p.id))
    return flows


# Every compile rebuilds the isolation and route flows of every persona (they
# depend on which persona comes first for a range), and building a FlowSpec
# normalizes its addresses through `ipaddress`: with a thousand personas that
# was most of a compile.  Each flow only depends on these arguments, so it is
# built once.
@lru_cache(maxsize=1 << 16)
def _isolation_flow(table_id: int, field: str, net: IPv4Network, persona_id: str) -> FlowSpec:
    return flow(table_id, FW_ISOLATE, {"eth_type": ETH_IPV4, "ct_state": ct_state("+trk+new"),
                                       field: range_match(net)},
                cookie=usage_cookie(persona_id, DENIED))
