"""A connected switch, as the hub core sees it: requests with replies, atomic applies.

Called from the hub's worker thread; replies arrive on the os-ken event thread
through `on_reply`, which wakes the waiting request.  The channel allocates its
own xids (high bit set), so it never races os-ken's own xid counter.
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Sequence

from controller.core.channel import ChannelClosed
from controller.pipeline import ofcodec, wire
from controller.pipeline.actions import CONTROLLER, Action
from controller.pipeline.flowspec import FlowSpec
from controller.pipeline.meters import OFPM_MAX, MeterSpec
from controller.reconcile.flows import ApplyError, FlowDiff
from controller.core.topology import Port

LOG = logging.getLogger("hubshift.channel")

OF_VERSIONS = {0x04: "1.3", 0x05: "1.4", 0x06: "1.5"}
SEND_CHUNK = 256 * 1024  # bytes of serialized messages per socket write


class _Waiter:
    """Collects the replies and errors of one request (or one batch of xids)."""

    def __init__(self, final_xid: int, multipart: bool) -> None:
        self.final_xid = final_xid
        self.multipart = multipart
        self.replies: list = []
        self.errors: list = []
        self.done = threading.Event()
        self.closed = False

    def add(self, msg: Any, is_error: bool) -> None:
        (self.errors if is_error else self.replies).append(msg)
        more = self.multipart and getattr(msg, "flags", 0) & 1  # OFPMPF_REPLY_MORE
        if (msg.xid == self.final_xid and not more) or (is_error and msg.xid == self.final_xid):
            self.done.set()


class OsKenChannel:
    def __init__(self, datapath: Any, timeout: float = 60.0) -> None:
        self.dp = datapath
        self.dpid: int = datapath.id
        self.of_version = OF_VERSIONS.get(datapath.ofproto.OFP_VERSION, "?")
        self.timeout = timeout
        self._xids = itertools.count(0x80000000 | (id(self) & 0x0FFF0000))
        self._lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._closed = False

    # ------------------------------------------------------------ plumbing
    def _next_xid(self) -> int:
        with self._lock:
            return next(self._xids) & 0xFFFFFFFF

    def on_reply(self, msg: Any, is_error: bool = False) -> bool:
        with self._lock:
            waiter = self._waiters.get(msg.xid)
        if waiter is None:
            return False
        waiter.add(msg, is_error)
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiters = set(self._waiters.values())
            self._waiters.clear()
        for w in waiters:
            w.closed = True
            w.done.set()

    def _send_all(self, msgs: list) -> None:
        buf = bytearray()
        for msg in msgs:
            msg.serialize()
            buf += msg.buf
            if len(buf) >= SEND_CHUNK:
                self._write(bytes(buf))
                buf.clear()
        if buf:
            self._write(bytes(buf))

    def _write(self, buf: bytes) -> None:
        if not self.dp.send(buf):
            raise ChannelClosed(f"switch {self.dpid:016x} disconnected")

    def _exchange(self, msgs: list, multipart: bool = False) -> _Waiter:
        """Send msgs; wait until the last one is answered.  Replies/errors to any are kept."""
        for msg in msgs:
            if msg.xid is None:
                msg.set_xid(self._next_xid())
        waiter = _Waiter(msgs[-1].xid, multipart)
        with self._lock:
            if self._closed:
                raise ChannelClosed(f"switch {self.dpid:016x} disconnected")
            for msg in msgs:
                self._waiters[msg.xid] = waiter
        try:
            self._send_all(msgs)
            if not waiter.done.wait(self.timeout):
                raise TimeoutError(f"switch {self.dpid:016x} did not answer in {self.timeout}s")
            if waiter.closed:
                raise ChannelClosed(f"switch {self.dpid:016x} disconnected")
            return waiter
        finally:
            with self._lock:
                for msg in msgs:
                    self._waiters.pop(msg.xid, None)

    # ------------------------------------------------------- SwitchChannel
    def ports(self) -> list[Port]:
        parser, ofp = self.dp.ofproto_parser, self.dp.ofproto
        waiter = self._exchange([parser.OFPPortDescStatsRequest(self.dp, 0)], multipart=True)
        ports = []
        for reply in waiter.replies:
            for p in reply.body:
                up = not (p.state & ofp.OFPPS_LINK_DOWN) and not (p.config & ofp.OFPPC_PORT_DOWN)
                ports.append(Port(p.port_no, p.name.decode(errors="replace").rstrip("\x00"), up))
        if waiter.errors:
            raise ApplyError(f"port description refused: {waiter.errors[0]}")
        return ports

    def dump_flows(self, cookie: int, cookie_mask: int) -> list[FlowSpec]:
        waiter = self._exchange([ofcodec.flow_stats_request(self.dp, cookie, cookie_mask)],
                                multipart=True)
        if waiter.errors:
            raise ApplyError(f"flow stats refused: {waiter.errors[0]}")
        return [ofcodec.decode_flow(self.dp, s) for reply in waiter.replies for s in reply.body]

    def flow_counters(self, table_id: int, cookie: int,
                      cookie_mask: int) -> list[tuple[FlowSpec, int, int]]:
        """(flow, packet_count, byte_count) for one table's flows whose cookie matches."""
        waiter = self._exchange([ofcodec.flow_stats_request(self.dp, cookie, cookie_mask,
                                                            table_id)], multipart=True)
        if waiter.errors:
            raise ApplyError(f"flow stats refused: {waiter.errors[0]}")
        return [(ofcodec.decode_flow(self.dp, s), s.packet_count, s.byte_count)
                for reply in waiter.replies for s in reply.body]

    def flow_stats(self, table_id: int, cookie: int, cookie_mask: int) -> list[FlowSpec]:
        """One table's flows whose cookie matches."""
        return [spec for spec, _, _ in self.flow_counters(table_id, cookie, cookie_mask)]

    def aggregate(self, table_id: int, cookie: int, cookie_mask: int) -> tuple[int, int, int]:
        """(flow_count, packet_count, byte_count) over one table's flows whose cookie matches."""
        waiter = self._exchange([ofcodec.aggregate_request(self.dp, table_id, cookie,
                                                           cookie_mask)], multipart=True)
        if waiter.errors:
            raise ApplyError(f"aggregate stats refused: {waiter.errors[0]}")
        body = waiter.replies[0].body
        return body.flow_count, body.packet_count, body.byte_count

    def apply(self, diff: FlowDiff) -> None:
        """Deletes then adds, in one ORDERED|ATOMIC bundle (OpenFlow 1.4+), then a barrier.

        Every FlowMod (in its BundleAdd) is written to wire bytes here, by
        `controller.pipeline.wire` (straight from the FlowSpec; os-ken objects
        only for what it does not cover), so an encoding error is raised before
        anything is sent.
        """
        dp = self.dp
        parser, ofp = dp.ofproto_parser, dp.ofproto
        pre = wire.WireMessage
        n = len(diff.delete) + len(diff.add)
        bundled = ofp.OFP_VERSION >= 0x05
        with self._lock:  # xids in send order: [bundle id, OPEN,] mods..., [COMMIT,] barrier
            xids = [next(self._xids) & 0xFFFFFFFF for _ in range(n + (4 if bundled else 1))]
        if not bundled:
            mod = wire.flow_mod_wire
            msgs = [pre(x, mod(dp, f, x, True)) for f, x in zip(diff.delete, xids)]
            msgs += [pre(x, mod(dp, f, x)) for f, x in zip(diff.add, xids[len(msgs):])]
        else:
            bundle_id, xids = xids[0], xids[1:]
            flags = ofp.OFPBF_ORDERED | ofp.OFPBF_ATOMIC
            add = wire.bundle_add_wire
            msgs = [parser.OFPBundleCtrlMsg(dp, bundle_id, ofp.OFPBCT_OPEN_REQUEST, flags, [])]
            msgs += [pre(x, add(dp, bundle_id, flags, f, x, True))
                     for f, x in zip(diff.delete, xids[1:])]
            msgs += [pre(x, add(dp, bundle_id, flags, f, x))
                     for f, x in zip(diff.add, xids[len(msgs):])]
            msgs.append(parser.OFPBundleCtrlMsg(dp, bundle_id, ofp.OFPBCT_COMMIT_REQUEST,
                                                flags, []))
        msgs.append(parser.OFPBarrierRequest(dp))
        for msg, xid in zip(msgs, xids):
            if msg.xid is None:
                msg.set_xid(xid)
        waiter = self._exchange(msgs)
        if waiter.errors:
            first = waiter.errors[0]
            raise ApplyError(f"switch {self.dpid:016x} refused the change "
                             f"(type={first.type} code={first.code}); "
                             f"{len(waiter.errors)} error(s)")

    def meters(self) -> list[MeterSpec]:
        """Every meter on the switch (its configuration), as MeterSpecs.

        Meters in a shape the hub does not write come back with rate_kbps 0
        (`ofcodec.decode_meter`).  OVS's virtual meters (ids above OFPM_MAX:
        slowpath, controller) are left out: they are not the hub's.
        """
        waiter = self._exchange([ofcodec.meter_config_request(self.dp)], multipart=True)
        if waiter.errors:
            raise ApplyError(f"meter config stats refused: {waiter.errors[0]}")
        return [ofcodec.decode_meter(self.dp, c) for reply in waiter.replies
                for c in reply.body if 1 <= c.meter_id <= OFPM_MAX]

    def apply_meters(self, add: Sequence[MeterSpec] = (), modify: Sequence[MeterSpec] = (),
                     delete: Sequence[int] = ()) -> None:
        """MeterMods ADD, then MODIFY, then DELETE, then a barrier.

        Not atomic (OVS does not bundle meter mods): on an error some of the
        mods may have been applied.  Deleting a meter makes the switch remove
        the flows that use it; see `controller.reconcile.meters` for the order.
        """
        dp = self.dp
        msgs = [ofcodec.meter_add(dp, m) for m in add]
        msgs += [ofcodec.meter_modify(dp, m) for m in modify]
        msgs += [ofcodec.meter_delete(dp, i) for i in delete]
        msgs.append(dp.ofproto_parser.OFPBarrierRequest(dp))
        with self._lock:  # xids in send order
            for msg in msgs:
                msg.set_xid(next(self._xids) & 0xFFFFFFFF)
        for msg in msgs[:-1]:  # so an encoding error is raised before anything is sent
            msg.serialize()
        waiter = self._exchange(msgs)
        if waiter.errors:
            first = waiter.errors[0]
            raise ApplyError(f"switch {self.dpid:016x} refused the meter change "
                             f"(type={first.type} code={first.code}); "
                             f"{len(waiter.errors)} error(s)")

    def packet_out(self, data: bytes, actions: Sequence[Action], in_port: int = CONTROLLER) -> None:
        parser, ofp = self.dp.ofproto_parser, self.dp.ofproto
        msg = parser.OFPPacketOut(self.dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                                  actions=[ofcodec.encode_action(parser, a) for a in actions],
                                  data=data)
        msg.set_xid(self._next_xid())
        self._send_all([msg])
