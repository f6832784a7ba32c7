"""The mirror's capability probe (controller.features.shadow.probe) against a real Open
vSwitch 3.1 bridge (userspace datapath), through the hub's own switch channel
(apps.channel.OsKenChannel: bundles on OpenFlow 1.4, mods and a barrier on 1.3) over the
bridge's management socket.

    - the switch accepts every requirement, in the mirror's shape, and holds each probe
      flow exactly as sent for the moment it is there; none is left behind, and a flow
      that is not the probe's is untouched;
    - requirements it refuses are reported missing with its error: a multipath hash it
      does not know (fields 7, one past the last OVS 3.1 has: how an OVS older than the
      mirror's symmetric_l3l4+udp answers it) and a ct_mark written outside ct;
    - a probe flow left behind (the controller died in between) is deleted by the next
      reconcile of the switch, as any flow of the hub nothing desires.
"""
from __future__ import annotations

import socket
import struct
import threading

import pytest
from os_ken.ofproto import ofproto_parser, ofproto_protocol, ofproto_v1_3, ofproto_v1_4

from apps.channel import OsKenChannel
from controller.features.shadow.mirror_caps import (ALL, REQUIREMENTS, Capabilities,
                                                    Requirement, blocking_reason)
from controller.features.shadow.probe import PROBE_COOKIE, probe_flows, run_probe
from controller.pipeline import actions
from controller.pipeline.actions import Multipath, Output, SetField
from controller.pipeline.flowspec import flow
from controller.reconcile.flows import FlowDiff, Reconciler
from controller.store import open_store
from tests.trace.ofsession import RUNDIR
from tests.unit.fakecontext import FakeCore, fake_context

pytestmark = pytest.mark.trace

FULL = (1 << 64) - 1
UNKNOWN_HASH = "a hash OVS 3.1 lacks"          # NX_HASH_FIELDS 7: after symmetric_l3 (6)
BAD_ARGUMENT = "OFPET_BAD_ACTION/OFPBAC_BAD_ARGUMENT (type 2, code 5)"
BAD_SET_ARGUMENT = "OFPET_BAD_ACTION/OFPBAC_BAD_SET_ARGUMENT (type 2, code 15)"


class SocketDatapath(ofproto_protocol.ProtocolDesc):
    """What OsKenChannel needs of an os-ken Datapath, over a bridge's management socket:
    `send`, and every message the switch answers handed to the channel (`on_reply`)."""

    def __init__(self, bridge: str, dpid: int, version: int) -> None:
        super().__init__(version)
        self.id = dpid
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(RUNDIR / f"{bridge}.mgmt"))
        self.lock = threading.Lock()
        hello = self.ofproto_parser.OFPHello(self)
        hello.set_xid(1)
        hello.serialize()
        self.sock.sendall(bytes(hello.buf))
        assert self._recv().version >= version
        self.channel = OsKenChannel(self, timeout=10)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def send(self, buf: bytes) -> bool:
        try:
            with self.lock:
                self.sock.sendall(bytes(buf))
            return True
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)            # wakes the reader
        except OSError:
            pass
        self.sock.close()
        self.reader.join(5)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _recv(self):
        head = self._exact(8)
        version, msg_type, length, xid = struct.unpack("!BBHI", head)
        return ofproto_parser.msg(self, version, msg_type, length, xid,
                                  head + self._exact(length - 8))

    def _read(self) -> None:
        parser = self.ofproto_parser
        try:
            while True:
                msg = self._recv()
                if isinstance(msg, parser.OFPEchoRequest):
                    reply = parser.OFPEchoReply(self, data=msg.data)
                    reply.set_xid(msg.xid)
                    reply.serialize()
                    self.send(reply.buf)
                    continue
                self.channel.on_reply(msg, is_error=isinstance(msg, parser.OFPErrorMsg))
        except (EOFError, OSError):
            self.channel.close()


@pytest.fixture
def switch(make_bridge, request):
    bridge = make_bridge(2)
    dp = SocketDatapath(bridge.name, bridge.dpid, request.param)
    yield bridge, dp
    dp.close()


def parametrized(test):
    return pytest.mark.parametrize("switch", [ofproto_v1_3.OFP_VERSION,
                                              ofproto_v1_4.OFP_VERSION],
                                   ids=["of13", "of14"], indirect=True)(test)


class Watching:
    """The channel, reading back the probe's flows after each change (what the switch held)."""

    def __init__(self, channel: OsKenChannel) -> None:
        self.channel = channel
        self.held: list[list] = []

    def apply(self, diff: FlowDiff) -> None:
        self.channel.apply(diff)
        self.held.append(self.channel.dump_flows(PROBE_COOKIE, FULL))

    def dump_flows(self, cookie: int, mask: int):
        return self.channel.dump_flows(cookie, mask)


def probe_leftovers(bridge) -> list[str]:
    return [line for line in bridge.dump_flows() if f"cookie={PROBE_COOKIE:#x}" in line]


@parametrized
def test_open_vswitch_accepts_every_requirement_and_keeps_no_probe_flow(switch):
    bridge, dp = switch
    bridge.add_flows("table=0,priority=1,actions=drop\n")       # not the hub's: untouched
    before = bridge.dump_flows()
    watching = Watching(dp.channel)
    result = run_probe(watching, bridge.dpid, ALL)
    assert result.refused == (), result
    flows = probe_flows(ALL)
    # after each add the switch held that flow too, exactly as sent (decoded back)
    assert [sorted(map(repr, held)) for held in watching.held[:-1]] == \
        [sorted(map(repr, flows[:k + 1])) for k in range(len(flows))]
    assert watching.held[-1] == []
    assert probe_leftovers(bridge) == [] and bridge.dump_flows() == before


@parametrized
def test_what_open_vswitch_refuses_is_missing_with_its_error(switch, monkeypatch):
    bridge, dp = switch
    monkeypatch.setitem(actions.MULTIPATH_FIELDS, UNKNOWN_HASH, 7)
    ct, multipath, clone = REQUIREMENTS
    unknown_hash = Requirement("multipath", multipath.why,
                               (Multipath(1000, "reg0", 10, 0, fields=UNKNOWN_HASH),))
    mark_outside_ct = Requirement("ct_mark", "a mark written by set_field, outside ct",
                                  (SetField("ct_mark", 0x100), Output(1)))
    result = run_probe(dp.channel, bridge.dpid, (ct, unknown_hash, clone, mark_outside_ct))
    assert result.missing() == {"multipath": BAD_ARGUMENT, "ct_mark": BAD_SET_ARGUMENT}
    assert probe_leftovers(bridge) == []                        # ct and clone: gone again


@parametrized
def test_capabilities_of_a_real_switch(switch, monkeypatch):
    bridge, dp = switch
    core = FakeCore(switches={bridge.dpid})
    caps = Capabilities(fake_context(core, open_store(":memory:")))
    assert caps.probe(bridge.dpid)
    assert core.answer(dp.channel) == 1
    assert not caps.unknown(bridge.dpid)
    assert blocking_reason(caps, [bridge.dpid], snaplen=True) is None
    monkeypatch.setitem(actions.MULTIPATH_FIELDS, UNKNOWN_HASH, 7)
    ct, multipath, clone = REQUIREMENTS
    older = Capabilities(fake_context(core, open_store(":memory:")), (
        ct, multipath._replace(actions=(Multipath(1000, "reg0", 10, 0, fields=UNKNOWN_HASH),)),
        clone))
    older.probe(bridge.dpid)
    core.answer(dp.channel)
    why = blocking_reason(older, [bridge.dpid], snaplen=False)
    assert why == (f"switch {bridge.dpid:016x} lacks what the mirror needs: multipath "
                   f"({multipath.why}): refused with {BAD_ARGUMENT}")
    assert probe_leftovers(bridge) == []


@parametrized
def test_a_probe_flow_left_behind_is_deleted_by_the_next_reconcile(switch):
    bridge, dp = switch
    leftover = probe_flows(ALL)[2]
    dp.channel.apply(FlowDiff(add=(leftover,)))                 # added; never deleted
    assert len(probe_leftovers(bridge)) == 1
    mine = flow(0, 1, {"eth_type": 0x0806}, [], cookie=0xB501000000000001)
    reconciler = Reconciler(dp.channel)
    reconciler.sync([mine])                                     # what the hub desires
    assert probe_leftovers(bridge) == []
    assert dp.channel.dump_flows(0xB5 << 56, 0xFF << 56) == [mine]
