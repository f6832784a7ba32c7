"""A connected switch, as the hub core sees it: requests with replies, atomic applies.

Called from the hub's worker thread; replies arrive on the os-ken event thread
through `on_reply`, which wakes the waiting request.  The channel allocates its
own xids (high bit set), so it never races os-ken's own xid counter.
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Iterable, Sequence

from controller.core.channel import Aggregate, ChannelClosed, FlowCounters
from controller.pipeline import ctflush, ofcodec, stream
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

    def _take_xids(self, n: int) -> list[int]:
        """n xids, consecutive in send order."""
        with self._lock:
            return [next(self._xids) & 0xFFFFFFFF for _ in range(n)]

    def _send_all(self, msgs: list) -> None:
        for msg in msgs:
            msg.serialize()
        self._write_chunks(msg.buf for msg in msgs)

    def _write_chunks(self, pieces: Iterable[bytes]) -> None:
        for chunk in stream.chunked(pieces, SEND_CHUNK):
            self._write(chunk)

    def _write(self, buf: bytes) -> None:
        if not self.dp.send(buf):
            raise ChannelClosed(f"switch {self.dpid:016x} disconnected")

    def _expect(self, xids: Sequence[int], multipart: bool = False) -> _Waiter:
        """A waiter for the replies and errors to `xids`, done when the last one is answered."""
        waiter = _Waiter(xids[-1], multipart)
        with self._lock:
            if self._closed:
                raise ChannelClosed(f"switch {self.dpid:016x} disconnected")
            self._waiters.update(dict.fromkeys(xids, waiter))
        return waiter

    def _forget(self, xids: Iterable[int]) -> None:
        with self._lock:
            pop = self._waiters.pop
            for xid in xids:
                pop(xid, None)

    def _wait(self, waiter: _Waiter) -> None:
        if not waiter.done.wait(self.timeout):
            raise TimeoutError(f"switch {self.dpid:016x} did not answer in {self.timeout}s")
        if waiter.closed:
            raise ChannelClosed(f"switch {self.dpid:016x} disconnected")

    def _exchange(self, msgs: list, multipart: bool = False) -> _Waiter:
        """Send msgs; wait until the last one is answered.  Replies/errors to any are kept."""
        for msg in msgs:
            if msg.xid is None:
                msg.set_xid(self._next_xid())
        xids = [msg.xid for msg in msgs]
        waiter = self._expect(xids, multipart)
        try:
            self._send_all(msgs)
            self._wait(waiter)
            return waiter
        finally:
            self._forget(xids)

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

    def flow_counters(self, table_id: int | None, cookie: int,
                      cookie_mask: int) -> list[FlowCounters]:
        """One table's (None: every table's) flows whose cookie matches, with their counters."""
        waiter = self._exchange([ofcodec.flow_stats_request(self.dp, cookie, cookie_mask,
                                                            table_id)], multipart=True)
        if waiter.errors:
            raise ApplyError(f"flow stats refused: {waiter.errors[0]}")
        return [FlowCounters(ofcodec.decode_flow(self.dp, s), s.packet_count, s.byte_count)
                for reply in waiter.replies for s in reply.body]

    def flow_stats(self, table_id: int, cookie: int, cookie_mask: int) -> list[FlowSpec]:
        """One table's flows whose cookie matches."""
        return [c.flow for c in self.flow_counters(table_id, cookie, cookie_mask)]

    def aggregate(self, table_id: int, cookie: int, cookie_mask: int) -> Aggregate:
        """Flow, packet and byte counts over one table's flows whose cookie matches."""
        waiter = self._exchange([ofcodec.aggregate_request(self.dp, table_id, cookie,
                                                           cookie_mask)], multipart=True)
        if waiter.errors:
            raise ApplyError(f"aggregate stats refused: {waiter.errors[0]}")
        body = waiter.replies[0].body
        return Aggregate(body.flow_count, body.packet_count, body.byte_count)

    def apply(self, diff: FlowDiff) -> None:
        """Deletes then adds, atomically on OpenFlow 1.4+; ApplyError if the switch refuses any.

        Every FlowMod (in its BundleAdd) is written to wire bytes by
        `controller.pipeline.wire` (straight from the FlowSpec; os-ken objects
        only for what it does not cover).  On OpenFlow 1.4+ the bundle is
        streamed: see `_apply_bundle`.  On 1.3 (no bundles, so not atomic)
        everything is encoded before anything is sent, so an encoding error
        sends nothing; then the mods and a barrier.
        """
        if self.dp.ofproto.OFP_VERSION >= 0x05:
            self._apply_bundle(diff)
            return
        dp = self.dp
        xids = self._take_xids(len(diff) + 1)
        mods = list(stream.mod_messages(dp, diff.delete, diff.add, xids[:-1]))
        barrier = self._serialized(dp.ofproto_parser.OFPBarrierRequest(dp), xids[-1])
        waiter = self._expect(xids)
        try:
            self._write_chunks(mods + [barrier])
            self._wait(waiter)
        finally:
            self._forget(xids)
        self._raise_refusal(waiter, "change")

    def _apply_bundle(self, diff: FlowDiff) -> None:
        """OPEN, the BundleAdds, a barrier; then COMMIT and a barrier, or DISCARD if any failed.

        The BundleAdds are encoded and written in SEND_CHUNK pieces, so the
        switch parses the first ones while the next are encoded.  The barrier
        before the commit makes every add's answer arrive first: Open vSwitch
        answers an add it cannot parse with an error but still commits the
        rest of the bundle, so the commit is sent only when no add was refused
        (otherwise the bundle is discarded: nothing of it is applied).  Once a
        refusal has arrived, the remaining adds are not sent.  An encoding
        error discards the bundle too, and is raised.
        """
        dp = self.dp
        parser, ofp = dp.ofproto_parser, dp.ofproto
        # xids in send order: bundle id, OPEN, mods..., barrier, COMMIT or DISCARD, barrier
        xids = self._take_xids(len(diff) + 5)
        bundle = stream.Bundle(xids[0], ofp.OFPBF_ORDERED | ofp.OFPBF_ATOMIC)
        sent = xids[1:-2]
        opening = self._serialized(parser.OFPBundleCtrlMsg(
            dp, bundle.bundle_id, ofp.OFPBCT_OPEN_REQUEST, bundle.flags, []), sent[0])
        mods = stream.mod_messages(dp, diff.delete, diff.add, sent[1:-1], bundle)
        waiter = self._expect(sent)
        written = False
        try:
            for chunk in stream.chunked(itertools.chain((opening,), mods), SEND_CHUNK):
                self._write(chunk)
                written = True
                if waiter.errors:
                    break  # refused already: the bundle will be discarded
            self._write(self._serialized(parser.OFPBarrierRequest(dp), sent[-1]))
            self._wait(waiter)
        except (ChannelClosed, TimeoutError):
            raise
        except Exception:
            if written:  # an encoding error: the open bundle must not stay behind
                try:
                    self._end_bundle(bundle, ofp.OFPBCT_DISCARD_REQUEST, xids[-2:])
                except Exception as exc:  # the encoding error is the one to report
                    LOG.warning("switch %016x: discarding bundle %#x failed: %s",
                                self.dpid, bundle.bundle_id, exc)
            raise
        finally:
            self._forget(sent)
        if waiter.errors:
            self._end_bundle(bundle, ofp.OFPBCT_DISCARD_REQUEST, xids[-2:])
        else:
            waiter = self._end_bundle(bundle, ofp.OFPBCT_COMMIT_REQUEST, xids[-2:])
        self._raise_refusal(waiter, "change")

    def _end_bundle(self, bundle: stream.Bundle, kind: int, xids: Sequence[int]) -> _Waiter:
        """COMMIT or DISCARD the bundle, then a barrier; the waiter holds the answers."""
        parser = self.dp.ofproto_parser
        msgs = [parser.OFPBundleCtrlMsg(self.dp, bundle.bundle_id, kind, bundle.flags, []),
                parser.OFPBarrierRequest(self.dp)]
        for msg, xid in zip(msgs, xids):
            msg.set_xid(xid)
        return self._exchange(msgs)

    def _raise_refusal(self, waiter: _Waiter, what: str) -> None:
        if waiter.errors:
            first = waiter.errors[0]
            raise ApplyError(f"switch {self.dpid:016x} refused the {what} "
                             f"(type={first.type} code={first.code}); "
                             f"{len(waiter.errors)} error(s)")

    @staticmethod
    def _serialized(msg: Any, xid: int) -> bytes:
        msg.set_xid(xid)
        msg.serialize()
        return bytes(msg.buf)

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
        self._raise_refusal(self._exchange(msgs), "meter change")

    def flush_zone(self, zone: int) -> None:
        parser = self.dp.ofproto_parser
        xid = self._next_xid()
        barrier = parser.OFPBarrierRequest(self.dp)
        barrier.set_xid(self._next_xid())
        waiter = self._expect([xid, barrier.xid])
        try:
            barrier.serialize()
            self._write(ctflush.ct_flush_zone(self.dp.ofproto.OFP_VERSION, xid, zone)
                        + bytes(barrier.buf))
            self._wait(waiter)
        finally:
            self._forget([xid, barrier.xid])
        self._raise_refusal(waiter, f"flush of conntrack zone {zone}")

    def packet_out(self, data: bytes, actions: Sequence[Action], in_port: int = CONTROLLER) -> None:
        parser, ofp = self.dp.ofproto_parser, self.dp.ofproto
        msg = parser.OFPPacketOut(self.dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                                  actions=[ofcodec.encode_action(parser, a) for a in actions],
                                  data=data)
        msg.set_xid(self._next_xid())
        self._send_all([msg])
