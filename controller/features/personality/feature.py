"""Network personalities as a feature: each interface's whole behaviour, changed live.

Contribution: every bound interface's compiled personality (flows, meters,
its VPN tunnel port) on its own switch, plus the temporary flows of
operations in flight (health-check punts).  Punts: probe replies (l2),
first payloads under application inspection (the firewall/count tables),
and packets routed via a next hop not discovered yet (personality_routes).
"""
from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from controller.core import budgets
from controller.core.feature import Contribution, Feature, PacketIn
from controller.core.interfaces import interface_id
from controller.core.view import FabricView
from controller.features.personality.binding import Binding, BindingTable
from controller.features.personality.compile import Context
from controller.features.personality.dryrun import dry_run
from controller.features.personality.inspector import TABLES as INSPECTED_TABLES, Inspector
from controller.features.personality.changes import Changes
from controller.packets import ETH_IPV4
from controller.pipeline import tables
from controller.pipeline.flowspec import FlowSpec
from controller.pipeline.meters import MeterSpec
from controller.reconcile.tunnels import TunnelPort


class PersonalityFeature(Feature):
    name = "personality"
    budget = budgets.PERSONALITY
    document_kinds = ("personality", "operation")
    punt_tables = frozenset({tables.L2.id, tables.PERSONALITY_ROUTES.id, *INSPECTED_TABLES})

    def __init__(self, ctx, settings=None) -> None:
        super().__init__(ctx, settings)
        self.bindings = BindingTable(ctx.changed)
        self.changes = Changes(ctx, self.bindings)
        self.inspector = Inspector(self.bindings.current, ctx.clock)
        self._flows: dict[tuple, tuple[FlowSpec, ...]] = {}

    def load(self) -> None:
        self.changes.load()

    def documents_changed(self, kind: str) -> None:
        self.changes.wake()   # new operations (a change, a revert, a personality update)

    # -------------------------------------------------------- desired state
    def contribute(self, view: FabricView) -> Contribution:
        ctx = Context(router_mac=view.router_mac, macs=view.macs, tunnel_ports=view.tunnel_ports)
        flows: dict[int, list[FlowSpec]] = {}
        meters: dict[int, list[MeterSpec]] = {}
        cache: dict[tuple, tuple[FlowSpec, ...]] = {}
        for binding in self.bindings.current.values():
            dpid = binding.interface.dpid
            if dpid not in view.switches:
                continue
            meters.setdefault(dpid, []).extend(binding.meters())
            # What a binding's flows depend on besides itself: its next hops' MACs, its tunnel.
            key = (binding, tuple(ctx.mac_of(r.next_hop) for r in binding.policy.routes),
                   binding.tunnel and ctx.tunnel_ports.get(binding.tunnel.name))
            compiled = self._flows.get(key)
            cache[key] = compiled if compiled is not None else binding.flows(ctx)
            flows.setdefault(dpid, []).extend(cache[key])
        self._flows = cache
        for dpid, extra in self.bindings.extra.values():
            if dpid in view.switches:
                flows.setdefault(dpid, []).extend(extra)
        return Contribution(flows={d: tuple(f) for d, f in flows.items()},
                            meters={d: tuple(m) for d, m in meters.items()},
                            tunnels=self._tunnels())

    def _tunnels(self) -> dict[int, tuple[TunnelPort, ...]]:
        """Tunnel ports of every binding that is bound, or held by an operation."""
        wanted: dict[int, list[TunnelPort]] = {}
        held: list[Binding] = [*self.bindings.current.values(), *self.changes.held_bindings()]
        for binding in held:
            port = binding.tunnel
            if port is not None and port not in wanted.get(port.dpid, ()):
                wanted.setdefault(port.dpid, []).append(port)
        return {d: tuple(p) for d, p in wanted.items()}

    # ------------------------------------------------------------ events
    def on_packet_in(self, punt: PacketIn) -> None:
        if punt.table_id == tables.L2.id:
            self.changes.on_packet_in(punt.dpid, punt.data)
        elif punt.table_id in INSPECTED_TABLES and punt.packet.eth_type == ETH_IPV4:
            out = self.inspector.on_packet_in(punt.dpid, punt.table_id, punt.in_port, punt.data)
            if out is not None:
                self.ctx.packet_out(out.dpid, out.data, out.actions, out.in_port)
        elif punt.table_id == tables.PERSONALITY_ROUTES.id and punt.packet.eth_type == ETH_IPV4:
            self._resolve_next_hop(punt)

    def _resolve_next_hop(self, punt: PacketIn) -> None:
        """A packet an interface routes via a next hop not discovered yet: ask for it."""
        binding = self.bindings.current.get(interface_id(punt.dpid, punt.in_port))
        if binding is None or punt.packet.ip_dst is None:
            return
        dst = IPv4Address(punt.packet.ip_dst)
        routes = [r for r in binding.policy.routes if dst in r.destination]
        if routes:
            best = max(routes, key=lambda r: r.destination.prefixlen)
            self.ctx.resolve(best.next_hop)

    def tick(self) -> None:
        self.changes.tick()

    def next_wakeup(self) -> float | None:
        return self.changes.next_wakeup()

    def query(self, name: str, **args: Any) -> Any:
        if name == "dry_run":
            return dry_run(self.ctx, self.bindings.current, args["interface_id"],
                           args["personality_id"])
        return super().query(name, **args)
