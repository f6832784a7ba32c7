"""The base fabric as a feature: routed subnets, L2 and routing flows, ARP punts.

Owns the `subnet` documents: it publishes them to the core (discovery ARPs
from their gateways) and compiles every ready switch's fabric flows.  Punts:
ARP requests for unknown targets (flooded to every host-facing port) and
routed packets to undiscovered addresses (the core resolves them).
"""
from __future__ import annotations

import logging

from controller.core import budgets
from controller.core.feature import Contribution, Feature, PacketIn
from controller.core.topology import Subnet
from controller.core.view import FabricView
from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.packets import ETH_ARP, ETH_IPV4
from controller.pipeline import tables

LOG = logging.getLogger("hubshift.fabric")


class FabricFeature(Feature):
    name = "fabric"
    budget = budgets.FABRIC
    document_kinds = ("subnet",)
    punt_tables = frozenset({tables.ARP.id, tables.ROUTE.id})

    def load(self) -> None:
        self._load_subnets()

    def documents_changed(self, kind: str) -> None:
        self._load_subnets()

    def _load_subnets(self) -> None:
        subnets = []
        for doc in self.ctx.store.list("subnet"):
            try:
                subnets.append(Subnet.from_body(doc.id, doc.body, doc.revision))
            except (KeyError, ValueError) as exc:
                LOG.error("ignoring invalid subnet %s: %s", doc.id, exc)
        self.ctx.set_subnets(subnets)

    def contribute(self, view: FabricView) -> Contribution:
        return Contribution(flows=compile_fabric(FabricInput(
            switches=view.switches, links=view.links, hosts=view.hosts,
            subnets=view.subnets, router_mac=view.router_mac)))

    def on_packet_in(self, punt: PacketIn) -> None:
        pkt = punt.packet
        if punt.table_id == tables.ARP.id and pkt.eth_type == ETH_ARP and pkt.arp_op == 1:
            self.ctx.flood(punt.data, exclude=(punt.dpid, punt.in_port))
        elif punt.table_id == tables.ROUTE.id and pkt.eth_type == ETH_IPV4:
            self.ctx.resolve(pkt.ip_dst, punt)
