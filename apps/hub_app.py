"""The os-ken app of the hub: switch lifecycle, packet-in, replies.

Thin by design: each handler finds the switch's channel and forwards the event
to the hub core (`controller.core.hub.Hub`), which decides everything on its own
worker thread.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER,
                                       set_ev_cls)
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_4

from apps.channel import OsKenChannel
from controller.core.topology import Port

if TYPE_CHECKING:  # the app only forwards to it
    from controller.core.hub import Hub

_ALL = [CONFIG_DISPATCHER, MAIN_DISPATCHER, DEAD_DISPATCHER]


class HubApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION]

    def __init__(self, *args, hub: Hub, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hub = hub
        self.channels: dict[int, OsKenChannel] = {}

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev) -> None:
        dp = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            old = self.channels.get(dp.id)
            if old is not None:
                old.close()
                self.hub.switch_disconnected(dp.id, old)
            channel = OsKenChannel(dp)
            self.channels[dp.id] = channel
            self.hub.switch_connected(channel)
        elif ev.state == DEAD_DISPATCHER and dp.id is not None:
            channel = self.channels.get(dp.id)
            if channel is not None and channel.dp is dp:
                del self.channels[dp.id]
                channel.close()
                self.hub.switch_disconnected(dp.id, channel)

    def _channel(self, dp) -> OsKenChannel | None:
        channel = self.channels.get(dp.id)
        return channel if channel is not None and channel.dp is dp else None

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev) -> None:
        msg = ev.msg
        self.hub.packet_in(msg.datapath.id, msg.table_id, msg.match["in_port"], msg.data)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev) -> None:
        msg = ev.msg
        ofp = msg.datapath.ofproto
        p = msg.desc
        up = not (p.state & ofp.OFPPS_LINK_DOWN) and not (p.config & ofp.OFPPC_PORT_DOWN)
        port = Port(p.port_no, p.name.decode(errors="replace").rstrip("\x00"), up)
        self.hub.port_status(msg.datapath.id, port, deleted=msg.reason == ofp.OFPPR_DELETE)

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPAggregateStatsReply,
                 ofp_event.EventOFPPortDescStatsReply, ofp_event.EventOFPMeterConfigStatsReply,
                 ofp_event.EventOFPBarrierReply, ofp_event.EventOFPBundleCtrlMsg], MAIN_DISPATCHER)
    def _reply(self, ev) -> None:
        channel = self._channel(ev.msg.datapath)
        if channel is not None:
            channel.on_reply(ev.msg)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, _ALL)
    def _error(self, ev) -> None:
        msg = ev.msg
        channel = self._channel(msg.datapath)
        if channel is None or not channel.on_reply(msg, is_error=True):
            self.logger.warning("switch %s error type=%s code=%s", msg.datapath.id, msg.type, msg.code)
