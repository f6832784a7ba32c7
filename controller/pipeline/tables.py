"""The table layout, declared once.  Every compiled flow is checked against it.

Ids leave gaps so later features can slot their tables in between without
renumbering (OpenFlow only allows goto to a higher table).  Each table names
the feature that owns it; the id ranges each feature may use, those held for
features still to come included, are in `controller.core.budgets`, which
checks this layout against them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from controller.pipeline.actions import Conntrack, flat
from controller.pipeline.flowspec import FlowSpec


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    purpose: str
    miss: str  # what the table-miss flow does: "controller", "drop" or "goto:<name>"
    learned: bool = False  # filled by the switch itself (learn actions), not by the hub
    owner: str = "fabric"  # the feature whose budget holds it (controller.core.budgets)


CLASSIFY = Table(0, "classify",
                 "Admit packets from known hosts (port + MAC) and from fabric links; "
                 "punt LLDP, and ARP/IPv4 from unknown sources (host discovery).",
                 "drop")
PERSONALITY_EGRESS = Table(2, "personality_egress",
                           "Packets from an interface with a personality (classify sends "
                           "them here): anti-spoofing (ARP and IPv4 only from the "
                           "personality's addresses, the rest dropped); IPv4 goes through "
                           "conntrack in the interface's zone, resuming in "
                           "personality_egress_fw; ARP continues to arp.",
                           "drop", owner="personality")
PERSONALITY_EGRESS_FW = Table(3, "personality_egress_fw",
                              "Stateful firewall for what an interface sends: replies and "
                              "related packets of known connections continue to arp; new "
                              "connections take the first matching egress rule (allowed ones "
                              "are committed to conntrack, ct_mark COMMITTED), else the "
                              "default action; new packets of a committed connection (one-way "
                              "UDP) pass.  Application policy: connections marked denied are "
                              "dropped, the opener's packets of ones under inspection go to the "
                              "controller.",
                              "drop", owner="personality")
PERSONALITY_EGRESS_COUNT = Table(4, "personality_egress_count",
                                 "Every packet an interface's firewall let out records its "
                                 "connection in personality_connections (learn), then goes on "
                                 "to personality_routes.  A connection just admitted to a port "
                                 "of the application policy is marked denied (and dropped) or "
                                 "under inspection (a UDP one goes to the controller).",
                                 "drop", owner="personality")
PERSONALITY_ROUTES = Table(5, "personality_routes",
                           "An interface's own routing table: its packets to the router MAC "
                           "for a destination it routes are sent to the next hop's MAC; "
                           "the rest continue to arp and the fabric's routing.",
                           "goto:arp", owner="personality")
PERSONA_EDGE = Table(6, "persona_edge",
                     "Packets from an interface attached to a persona (classify sends "
                     "them here): ARP requests are answered with the persona gateway's "
                     "MAC (every peer is reached through the gateway), DHCP is punted, "
                     "IPv4 from the attached address goes to l2 toward the gateway; the "
                     "rest is dropped.",
                     "drop", owner="persona")
SHADOW_FROM = Table(7, "shadow_from",
                    "Copies (clone at classify) of what a shadowed appliance's production "
                    "interface sends, after conntrack in the appliance's zone: a packet of a "
                    "sampled connection goes to the connection's shadow instance (its MAC, "
                    "its port, cut to the snaplen); the first packet of an undecided "
                    "connection is hashed into reg0 (multipath) and decided in "
                    "shadow_from_decide; any other copy is dropped.  The packet itself never "
                    "comes here.",
                    "drop", owner="shadow")
SHADOW_FROM_DECIDE = Table(8, "shadow_from_decide",
                           "A connection's first packet, hashed: sampled (a held source, or "
                           "the hash below the appliance's permille) is committed with the "
                           "sampled mark and its instance, and copied to it; the rest is "
                           "committed as decided and dropped.",
                           "drop", owner="shadow")
SHADOW_AGENT = Table(9, "shadow_agent",
                     "From a shadow instance's port (classify drops everything else it "
                     "sends): its agent's datagrams to the gateway go to the controller "
                     "under the shadow meter; ARP requests for the gateway are answered.",
                     "drop", owner="shadow")
SHARD_EDGE = Table(12, "shard_edge",
                   "Packets from an interface enrolled in a shard pool (classify sends them "
                   "here): every ARP request is answered with the router MAC; RAP to the "
                   "gateway or broadcast goes to the controller under a meter; IPv4 from "
                   "one of the resource's shard addresses records its connection "
                   "(shard_connections) and goes through conntrack in the resource's zone "
                   "(un-NATing replies), resuming in shard_out; the rest is dropped.",
                   "drop", owner="shard")
SHARD_OUT = Table(13, "shard_out",
                  "After conntrack, from a resource: packets of known connections go to "
                  "route (their source already its external address); a new connection "
                  "from a shard address is committed with its source NATed to the "
                  "external address, resuming in shard_out_nat.",
                  "drop", owner="shard")
SHARD_OUT_NAT = Table(14, "shard_out_nat",
                      "A resource's new connection, source-NATed: on to route.",
                      "goto:route", owner="shard")
POLICY_FROM = Table(20, "policy_from",
                    "Copies (clone at classify) of what an observed member sends (TCP only "
                    "with SYN), after conntrack in the member's own zone, reg2 = its record "
                    "key: the opening packet of a new connection (TCP: SYN without ACK) "
                    "learns or refreshes its connection record in policy_records and is "
                    "committed as recorded (ct_mark), resuming in policy_records; any other "
                    "copy is dropped.  The packet itself never comes here.",
                    "drop", owner="policy")
POLICY_EGRESS_FW = Table(21, "policy_egress_fw",
                         "Stateful firewall for what an enforced member sends (classify "
                         "sends its IPv4 through conntrack in the member's zone, reg2 = its "
                         "key): invalid and refused connections are dropped; replies, "
                         "related packets and committed connections continue to route; a "
                         "new connection takes the infrastructure allowances, then the "
                         "mirrored rules in order (allowed: committed), else the default: "
                         "recorded in policy_refused and dropped (enforce) or committed as "
                         "would-deny and passed on (audit).",
                         "drop", owner="policy")
ARP = Table(10, "arp",
            "Answer ARP requests for gateways and known hosts from flows; punt "
            "requests for unknown targets (the controller floods them to edge ports).",
            "goto:route")
ROUTE = Table(40, "route",
              "Packets sent to the router MAC: answer pings to gateways, rewrite "
              "MACs and decrement TTL for known hosts; punt unknown destinations "
              "(the controller ARP-probes for them).",
              "goto:l2")
L2 = Table(50, "l2", "Forward by destination MAC along the shortest path to the host; "
           "on its own switch, a host with a personality is reached through "
           "personality_ingress instead.",
           "drop")
PERSONALITY_INGRESS = Table(60, "personality_ingress",
                            "Packets delivered to an interface with a personality (l2 sends "
                            "them here): ARP is output to its port; IPv4 goes through "
                            "conntrack in the interface's zone, resuming in "
                            "personality_ingress_fw; the rest is dropped.",
                            "drop", owner="personality")
PERSONALITY_INGRESS_FW = Table(61, "personality_ingress_fw",
                               "Stateful firewall for what an interface receives: replies and "
                               "related packets of known connections are output to its port; "
                               "new connections take the first matching ingress rule (allowed "
                               "ones are committed and output), else the default action; as "
                               "personality_egress_fw for committed new packets and the "
                               "application policy.",
                               "drop", owner="personality")
PERSONALITY_INGRESS_COUNT = Table(62, "personality_ingress_count",
                                  "Every packet an interface's firewall let in records its "
                                  "connection in personality_connections (learn), then is "
                                  "output to the interface's port; as personality_egress_count "
                                  "for the application policy.",
                                  "drop", owner="personality")
PERSONALITY_CONNECTIONS = Table(63, "personality_connections",
                                "Never visited by packets: one learned flow per live connection "
                                "of an interface (cookie: interface and conntrack zone; idle "
                                "timeout: a connection silent that long is over).  Counted "
                                "with aggregate stats while a personality switch drains.",
                                "drop", learned=True, owner="personality")

SHADOW_TO = Table(80, "shadow_to",
                  "Copies (clone at l2) of what is delivered to a shadowed appliance's "
                  "production interface, after conntrack in the appliance's zone: as "
                  "shadow_from.",
                  "drop", owner="shadow")
SHADOW_TO_DECIDE = Table(81, "shadow_to_decide",
                         "A connection's first packet toward the appliance, hashed: as "
                         "shadow_from_decide.",
                         "drop", owner="shadow")
POLICY_TO = Table(100, "policy_to",
                  "Copies (clone at l2) of what is delivered to an observed member, after "
                  "conntrack in its zone (so a peer's replies are established): as "
                  "policy_from, the connections the peer opened.",
                  "drop", owner="policy")
POLICY_INGRESS_FW = Table(101, "policy_ingress_fw",
                          "Stateful firewall for what is delivered to an enforced member "
                          "(l2 sends its IPv4 through conntrack in the member's zone): as "
                          "policy_egress_fw, the connections the peer opens; what passes is "
                          "output to the member's port.",
                          "drop", owner="policy")
POLICY_REFUSED = Table(108, "policy_refused",
                       "Only a refused (enforce) or would-deny (audit) new connection's "
                       "opening packet comes here, once per connection: one learned flow per "
                       "shape (reg2: the member's port and the direction; protocol, server "
                       "port, peer), no timeout; its packet count is the number of "
                       "connections refused.  Read back with flow stats (cookie: the "
                       "category's reviews).",
                       "drop", learned=True, owner="policy")
POLICY_RECORDS = Table(109, "policy_records",
                       "Only the copy of a new connection's opening packet comes here: one "
                       "learned flow per connection record of an observed member (reg2: the "
                       "member's port and the direction; protocol, server port, peer), no "
                       "timeout; its packet count is the number of connections opened.  Read "
                       "back with flow stats (cookie: the category's records).",
                       "drop", learned=True, owner="policy")
SHARD_SERVICE = Table(90, "shard_service",
                      "A service's decision (route sends packets to a service's external "
                      "address here): a hashed one by the link number multipath wrote in "
                      "reg1, a client-prefix route by the source, a patterned UDP flow by "
                      "the resource its ct_mark was pinned to (new unpinned ones go to the "
                      "controller, which pins them); the packet is rewritten to the "
                      "resource's MAC and goes to shard_in on its switch, toward it elsewhere.",
                      "drop", owner="shard")
SHARD_IN = Table(91, "shard_in",
                 "On a resource's switch, IPv4 to its MAC (l2 sends it here): to its "
                 "external address goes through conntrack in its zone (applying the "
                 "translation a connection was committed with), resuming in shard_in_ct; "
                 "to a shard address it is a probe, dropped and counted; the rest dropped.",
                 "drop", owner="shard")
SHARD_IN_CT = Table(92, "shard_in_ct",
                    "After conntrack, to a resource: packets of known connections are "
                    "output to its port (already translated); a new connection to its "
                    "external address (TCP only with SYN) is committed with its "
                    "destination NATed to the resource's current shard address, resuming "
                    "in shard_deliver.",
                    "drop", owner="shard")
SHARD_DELIVER = Table(93, "shard_deliver",
                      "A resource's new inbound connection, translated: output to its port.",
                      "drop", owner="shard")
SHARD_CONNECTIONS = Table(95, "shard_connections",
                          "Never visited by packets: one learned flow per live connection "
                          "of a resource's shard address (cookie: resource and address; "
                          "hard timeout: a connection silent that long is over).  Counted "
                          "with aggregate stats while a deprecated address drains.",
                          "drop", learned=True, owner="shard")
PERSONA_GATEWAY = Table(70, "persona_gateway",
                        "On the persona gateway only (l2 sends it packets to the gateway "
                        "MAC): echo to a persona's gateway address is answered; packets from "
                        "an attached host (outbound) or to a persona's hub-visible address "
                        "(inbound, un-NATed here) are marked with the persona (reg6) and go "
                        "through conntrack in its zone.",
                        "drop", owner="persona")
PERSONA_OUT_FW = Table(71, "persona_out_fw",
                       "Stateful policy for what a persona sends: replies pass; a new "
                       "connection needs a listed protocol, no persona on the other end, "
                       "and no denying security policy (first match wins; default allow).",
                       "drop", owner="persona")
PERSONA_IN_FW = Table(72, "persona_in_fw",
                      "Stateful policy for what a persona receives: replies pass; a new "
                      "connection from outside needs a security policy that allows it "
                      "(default deny).",
                      "drop", owner="persona")
PERSONA_OUT = Table(73, "persona_out",
                    "Outbound persona traffic: delivered to a peer of the same persona, or "
                    "source-NATed (overlapping ranges), metered, DSCP-marked and counted, "
                    "then forwarded.",
                    "drop", owner="persona")
PERSONA_IN = Table(74, "persona_in",
                   "Inbound persona traffic: metered, counted and delivered to the attached "
                   "host along the fabric's shortest path.",
                   "drop", owner="persona")
PERSONA_FORWARD = Table(75, "persona_forward",
                        "Routes persona traffic to hub hosts from the gateway (the same "
                        "rewrite as route, output along the shortest path); unknown "
                        "destinations are punted so the hub probes for them.",
                        "controller", owner="persona")

LAYOUT: tuple[Table, ...] = (CLASSIFY, PERSONALITY_EGRESS, PERSONALITY_EGRESS_FW,
                             PERSONALITY_EGRESS_COUNT, PERSONALITY_ROUTES, PERSONA_EDGE, SHADOW_FROM,
                             SHADOW_FROM_DECIDE, SHADOW_AGENT, ARP, SHARD_EDGE,
                             SHARD_OUT, SHARD_OUT_NAT, POLICY_FROM, POLICY_EGRESS_FW, ROUTE, L2, PERSONALITY_INGRESS, PERSONALITY_INGRESS_FW,
                             PERSONALITY_INGRESS_COUNT, PERSONALITY_CONNECTIONS, PERSONA_GATEWAY,
                             PERSONA_OUT_FW, PERSONA_IN_FW, PERSONA_OUT, PERSONA_IN,
                             PERSONA_FORWARD, SHADOW_TO, SHADOW_TO_DECIDE, SHARD_SERVICE, SHARD_IN,
                             SHARD_IN_CT, SHARD_DELIVER,
                             SHARD_CONNECTIONS, POLICY_TO, POLICY_INGRESS_FW, POLICY_REFUSED,
                             POLICY_RECORDS)
BY_ID = {t.id: t for t in LAYOUT}
BY_NAME = {t.name: t for t in LAYOUT}
LEARNED = frozenset(t.id for t in LAYOUT if t.learned)


class LayoutError(ValueError):
    pass


def check(flows: Iterable[FlowSpec]) -> None:
    """Refuse flows in undeclared tables or that goto backwards/undeclared tables.

    A conntrack action that resumes in a table (`ct(table=N)`) is held to the
    same rule as a goto: the table must be declared and further along; so is
    one nested in a Clone (its copy resumes there).
    """
    for f in flows:
        if f.table not in BY_ID:
            raise LayoutError(f"flow in undeclared table {f.table}: {f}")
        targets = [("goto", f.goto)] + [("ct resumes in", a.table) for a in flat(f.actions)
                                        if isinstance(a, Conntrack) and a.table is not None]
        for what, target in targets:
            if target is None:
                continue
            if target not in BY_ID:
                raise LayoutError(f"{what} undeclared table {target}: {f}")
            if target <= f.table:
                raise LayoutError(f"{what} must move forward ({f.table} -> {target}): {f}")
