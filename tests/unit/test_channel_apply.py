"""The channel's apply, end to end over a fake datapath: the bytes, the bundle, the stream.

On OpenFlow 1.4 a change is OPEN, the BundleAdds, a barrier, then COMMIT and a
barrier, streamed in chunks while it is encoded; a refused add or an encoding
error discards the bundle instead of committing it.  On 1.3 (no bundles) the
FlowMods are all encoded before anything is sent.
"""
from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4

import apps.channel
from apps.channel import OsKenChannel
from controller.core.channel import ChannelClosed
from controller.pipeline import cookies, ofcodec, stream
from controller.pipeline.actions import Conntrack, Learn, LearnMatch, Output, ct_state
from controller.pipeline.flowspec import FlowSpec, flow, make_match
from controller.reconcile.flows import ApplyError, FlowDiff

VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION]
OF14 = ofproto_v1_4.OFP_VERSION
COOKIE = cookies.make(cookies.Feature.FABRIC, "channel", 1)
ERROR = (4, 9)  # type, code of the refusals the fake sends


def hosts(n: int, table: int = 50) -> list[FlowSpec]:
    return [FlowSpec(table, 100, make_match({"eth_dst": f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"}),
                     (Output(1),), cookie=COOKIE) for i in range(n)]


def sample_diff() -> FlowDiff:
    """Plain L2 flows, a conntrack/learn flow, and one only os-ken encodes (ipv6)."""
    tcp = {"eth_type": 0x0800, "ip_proto": 6, "ct_state": ct_state("+trk+new")}
    ct = flow(3, 12, tcp, [Conntrack(True, 5), Learn(63, COOKIE, specs=(
        LearnMatch("ipv4_src", 32, src="ipv4_src"),))], goto=4, cookie=COOKIE)
    odd = FlowSpec(30, 2, (("ipv6_src", "fe80::1"),), (Output(1),), cookie=COOKIE)
    flows = hosts(40)
    return FlowDiff(add=tuple(flows[:20]) + (ct, odd) + tuple(flows[20:]),
                    delete=tuple(flows[::7]) + (odd,))


class FakeDatapath(ofproto_protocol.ProtocolDesc):
    """Records each write; answers barriers, and refuses the xids in `refuse_xids`."""

    id = 0xB5

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.channel: OsKenChannel | None = None
        self.writes: list[bytes] = []
        self.refuse_xids: set[int] = set()
        self.answer = True

    @property
    def sent(self) -> bytes:
        return b"".join(self.writes)

    def send(self, buf: bytes) -> bool:
        self.writes.append(bytes(buf))
        for msg_type, xid in headers(bytes(buf)):
            if xid in self.refuse_xids:
                self.channel.on_reply(Reply(xid, type=ERROR[0], code=ERROR[1]), is_error=True)
            if msg_type == self.ofproto.OFPT_BARRIER_REQUEST and self.answer:
                self.channel.on_reply(Reply(xid))
        return True


class Reply:
    def __init__(self, xid: int, **attrs) -> None:
        self.xid = xid
        self.__dict__.update(attrs)


def headers(data: bytes) -> list[tuple[int, int]]:
    """(type, xid) of each message; every write holds whole messages."""
    out, offset = [], 0
    while offset < len(data):
        _, msg_type, length, xid = struct.unpack_from("!BBHI", data, offset)
        out.append((msg_type, xid))
        offset += length
    assert offset == len(data)
    return out


def bundle_controls(dp) -> list[int]:
    """The bundle control types sent (OPEN, COMMIT, DISCARD), in order."""
    data, out, offset = dp.sent, [], 0
    while offset < len(data):
        _, msg_type, length, _ = struct.unpack_from("!BBHI", data, offset)
        if msg_type == dp.ofproto.OFPT_BUNDLE_CONTROL:
            out.append(struct.unpack_from("!H", data, offset + 12)[0])
        offset += length
    return out


def connected(version: int, timeout: float = 5) -> tuple[FakeDatapath, OsKenChannel]:
    dp = FakeDatapath(version)
    dp.channel = OsKenChannel(dp, timeout=timeout)
    return dp, dp.channel


def reference_stream(dp, diff: FlowDiff, xids: list[int]) -> bytes:
    """What apply must send, built from os-ken objects all the way."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    mods = [ofcodec.flow_delete(dp, f) for f in diff.delete] + \
           [ofcodec.flow_add(dp, f) for f in diff.add]
    if ofp.OFP_VERSION < OF14:
        msgs = mods + [parser.OFPBarrierRequest(dp)]
    else:
        bundle_id, flags = xids[0] - 1, ofp.OFPBF_ORDERED | ofp.OFPBF_ATOMIC
        msgs = [parser.OFPBundleCtrlMsg(dp, bundle_id, ofp.OFPBCT_OPEN_REQUEST, flags, [])]
        for mod, xid in zip(mods, xids[1:]):
            mod.xid = xid  # a bundled message carries its BundleAdd's xid
            msgs.append(parser.OFPBundleAddMsg(dp, bundle_id, flags, mod, []))
        msgs += [parser.OFPBarrierRequest(dp),
                 parser.OFPBundleCtrlMsg(dp, bundle_id, ofp.OFPBCT_COMMIT_REQUEST, flags, []),
                 parser.OFPBarrierRequest(dp)]
    assert len(msgs) == len(xids)
    out = bytearray()
    for msg, xid in zip(msgs, xids):
        msg.set_xid(xid)
        msg.serialize()
        out += msg.buf
    return bytes(out)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(apps.channel, "SEND_CHUNK", 512)


# ------------------------------------------------------------------- bytes
@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_apply_sends_what_os_ken_would(version):
    dp, channel = connected(version)
    diff = sample_diff()
    channel.apply(diff)
    sent = headers(dp.sent)
    bundled = version >= OF14
    assert len(sent) == len(diff) + (4 if bundled else 1)
    xids = [xid for _, xid in sent]
    assert xids == list(range(xids[0], xids[0] + len(xids)))  # consecutive, in send order
    assert dp.sent == reference_stream(dp, diff, xids)
    assert channel._waiters == {}
    # the next apply continues the sequence (after the bundle id, on 1.4)
    dp.writes.clear()
    channel.apply(FlowDiff(add=diff.add[:1]))
    assert headers(dp.sent)[0][1] == xids[-1] + (2 if bundled else 1)


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_empty_apply_is_just_a_barrier_or_an_empty_bundle(version):
    dp, channel = connected(version)
    channel.apply(FlowDiff())
    ofp = dp.ofproto
    types = [t for t, _ in headers(dp.sent)]
    if version >= OF14:
        assert types == [ofp.OFPT_BUNDLE_CONTROL, ofp.OFPT_BARRIER_REQUEST,
                         ofp.OFPT_BUNDLE_CONTROL, ofp.OFPT_BARRIER_REQUEST]
        assert bundle_controls(dp) == [ofp.OFPBCT_OPEN_REQUEST, ofp.OFPBCT_COMMIT_REQUEST]
    else:
        assert types == [ofp.OFPT_BARRIER_REQUEST]


# ------------------------------------------------------------------ stream
def test_a_large_bundle_is_written_in_chunks_while_it_is_encoded(small_chunks, monkeypatch):
    dp, channel = connected(OF14)
    diff = FlowDiff(add=tuple(hosts(200)))
    encoded = []
    real = stream.bundle_add_wire

    def counting(*args, **kwargs):
        encoded.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(stream, "bundle_add_wire", counting)
    at_write = []
    send = dp.send

    def recording(buf):
        at_write.append(len(encoded))
        return send(buf)
    monkeypatch.setattr(dp, "send", recording)
    channel.apply(diff)
    assert len(dp.writes) > 10
    assert at_write[0] < len(diff) / 10   # the first chunk left before most flows were encoded
    assert all(len(w) < 512 + 200 for w in dp.writes)  # chunks end at a message boundary
    xids = [xid for _, xid in headers(dp.sent)]
    assert dp.sent == reference_stream(dp, diff, xids)


def test_chunked_joins_whole_pieces():
    pieces = [bytes([i]) * (i + 1) for i in range(10)]
    chunks = list(stream.chunked(iter(pieces), 10))
    assert b"".join(chunks) == b"".join(pieces)
    assert [len(c) for c in chunks] == [1 + 2 + 3 + 4, 5 + 6, 7 + 8, 9 + 10]
    assert list(stream.chunked([], 10)) == []
    with pytest.raises(ValueError):
        list(stream.chunked(pieces, 0))


def test_mod_messages_checks_the_xids():
    dp = ofproto_protocol.ProtocolDesc(OF14)
    with pytest.raises(ValueError, match="2 xids for 3 flow mods"):
        list(stream.mod_messages(dp, hosts(1), hosts(2), [1, 2]))


# --------------------------------------------------------------- refusals
@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_a_refused_mod_fails_the_apply(version):
    dp, channel = connected(version)
    diff = sample_diff()
    first = channel._next_xid() + 1
    dp.refuse_xids = {first + (2 if version >= OF14 else 0) + 5}
    with pytest.raises(ApplyError, match="type=4 code=9"):
        channel.apply(diff)
    assert channel._waiters == {}


def test_a_refused_add_discards_the_bundle_instead_of_committing_it():
    """Open vSwitch commits the rest of a bundle after refusing one add: never commit then."""
    dp, channel = connected(OF14)
    diff = sample_diff()
    first = channel._next_xid() + 1
    dp.refuse_xids = {first + 2 + len(diff) - 1}  # the very last add
    with pytest.raises(ApplyError, match=r"refused the change \(type=4 code=9\); 1 error"):
        channel.apply(diff)
    ofp = dp.ofproto
    assert bundle_controls(dp) == [ofp.OFPBCT_OPEN_REQUEST, ofp.OFPBCT_DISCARD_REQUEST]
    assert headers(dp.sent)[-1][0] == ofp.OFPT_BARRIER_REQUEST


def test_a_refusal_stops_the_stream(small_chunks):
    dp, channel = connected(OF14)
    diff = FlowDiff(add=tuple(hosts(200)))
    first = channel._next_xid() + 1
    dp.refuse_xids = {first + 3}  # the second add, in the first chunk
    with pytest.raises(ApplyError):
        channel.apply(diff)
    adds = [t for t, _ in headers(dp.sent) if t == dp.ofproto.OFPT_BUNDLE_ADD_MESSAGE]
    assert 2 <= len(adds) < 20
    assert bundle_controls(dp)[-1] == dp.ofproto.OFPBCT_DISCARD_REQUEST


def test_a_refused_commit_fails_the_apply():
    dp, channel = connected(OF14)
    diff = FlowDiff(add=tuple(hosts(3)))
    first = channel._next_xid() + 1
    dp.refuse_xids = {first + 2 + len(diff) + 1}  # OPEN, 3 adds, barrier, COMMIT
    with pytest.raises(ApplyError, match="type=4 code=9"):
        channel.apply(diff)
    assert bundle_controls(dp)[-1] == dp.ofproto.OFPBCT_COMMIT_REQUEST


# --------------------------------------------------------- encoding errors
BAD = FlowSpec(10, 1, (("eth_dst", "not-a-mac"),), (Output(1),))


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_an_encoding_error_in_the_first_chunk_sends_nothing(version):
    dp, channel = connected(version)
    with pytest.raises(Exception):
        channel.apply(FlowDiff(add=tuple(hosts(30)) + (BAD,)))
    assert dp.writes == []
    assert channel._waiters == {}


def test_openflow13_encodes_everything_before_sending(small_chunks):
    dp, channel = connected(ofproto_v1_3.OFP_VERSION)
    with pytest.raises(Exception):
        channel.apply(FlowDiff(add=tuple(hosts(200)) + (BAD,)))
    assert dp.writes == []


def test_an_encoding_error_mid_stream_discards_the_bundle(small_chunks):
    dp, channel = connected(OF14)
    with pytest.raises(Exception) as raised:
        channel.apply(FlowDiff(add=tuple(hosts(200)) + (BAD,)))
    assert not isinstance(raised.value, ApplyError)  # the encoder's own error
    ofp = dp.ofproto
    assert bundle_controls(dp) == [ofp.OFPBCT_OPEN_REQUEST, ofp.OFPBCT_DISCARD_REQUEST]
    assert headers(dp.sent)[-1][0] == ofp.OFPT_BARRIER_REQUEST
    assert channel._waiters == {}


# ------------------------------------------------------- lost connections
@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_a_silent_switch_times_out(version):
    dp, channel = connected(version, timeout=0.05)
    dp.answer = False
    with pytest.raises(TimeoutError):
        channel.apply(FlowDiff(add=tuple(hosts(3))))
    assert channel._waiters == {}


def test_a_switch_gone_before_the_apply():
    dp, channel = connected(OF14)
    channel.close()
    with pytest.raises(ChannelClosed):
        channel.apply(FlowDiff(add=tuple(hosts(3))))
    assert dp.writes == []


def test_a_switch_gone_during_the_stream(small_chunks, monkeypatch):
    dp, channel = connected(OF14)
    monkeypatch.setattr(dp, "send", lambda buf: False)  # os-ken's answer once disconnected
    with pytest.raises(ChannelClosed):
        channel.apply(FlowDiff(add=tuple(hosts(200))))
    assert channel._waiters == {}
