"""Network personas as a feature: temporary isolated segments behind a persona gateway.

Contribution: the gateway's persona pipeline, meters and counted flows, and
every member switch's edge hooks (`controller.features.persona.compile`).
Punts: DHCP from members (persona_edge), echo replies of the latency probe
(persona_gateway), and forwarded packets to undiscovered addresses
(persona_forward).  The runtime (`runtime.Personas`) keeps time: expiry,
ordered teardown, usage polls and alerts.
"""
from __future__ import annotations

from typing import Any

from controller.core import budgets
from controller.core.feature import Contribution, Feature, PacketIn
from controller.core.view import FabricView
from controller.features.persona import settings as persona_settings
from controller.features.persona.runtime import Personas
from controller.packets import ETH_IPV4
from controller.pipeline import tables


class PersonaFeature(Feature):
    name = "persona"
    budget = budgets.PERSONA
    settings_key = "personas"
    document_kinds = ("persona",)
    punt_tables = frozenset({tables.PERSONA_EDGE.id, tables.PERSONA_GATEWAY.id,
                             tables.PERSONA_FORWARD.id})

    def __init__(self, ctx, settings: persona_settings.PersonaSettings | None = None) -> None:
        super().__init__(ctx, settings or persona_settings.PersonaSettings())
        self.runtime = Personas(ctx, self.settings)

    def load(self) -> None:
        self.runtime.load()

    def documents_changed(self, kind: str) -> None:
        self.runtime.reload()

    def contribute(self, view: FabricView) -> Contribution:
        flows, meters = self.runtime.contribute(view)
        return Contribution(flows=flows, meters=meters)

    def on_packet_in(self, punt: PacketIn) -> None:
        if punt.table_id == tables.PERSONA_FORWARD.id:
            if punt.packet.eth_type == ETH_IPV4:
                self.ctx.resolve(punt.packet.ip_dst)
        else:
            self.runtime.on_packet_in(punt.dpid, punt.table_id, punt.in_port, punt.packet,
                                      punt.data)

    def tick(self) -> None:
        self.runtime.tick()

    def next_wakeup(self) -> float | None:
        return self.runtime.next_wakeup()

    def query(self, name: str, **args: Any) -> Any:
        if name == "preview":
            body = args["body"]
            return self.runtime.preview(body.get("id") or "preview", body)
        if name == "usage":
            return self.runtime.usage(args["id"])
        return super().query(name, **args)
