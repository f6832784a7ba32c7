"""The agents' authenticated channel (controller/agents/channel.py) and the shadow agent's
messages over it: byte layout, refusals, replays, stale epochs, round trips, and the
cutting of launch orders and findings to datagrams."""
from __future__ import annotations

import enum
import hashlib
import hmac
import json
import random
import struct
from ipaddress import IPv4Address, IPv4Interface

import pytest

from controller.agents.channel import (MAC_BYTES, Channel, Counter, Envelope, Receiver, Rejected,
                                       key_bytes)
from controller.agents.shadow import protocol as sp
from controller.agents.shadow.orders import (Assembler, LaunchOrder, findings_batches,
                                             launch_parts)
from controller.rap import protocol as rap

KEY = b"k" * 32
NONCE = bytes(range(12))


class T(enum.IntEnum):
    PING = 1
    PONG = 2


TEST = Channel(b"TT", T)


def keys(agent):
    return KEY if agent == "a-1" else None


def env(type_=T.PING, counter=1, epoch=7, body=b"hello", agent="a-1") -> Envelope:
    return Envelope(type_, agent, counter, NONCE, epoch, body)


# -- the channel -----------------------------------------------------------------------

def test_the_envelope_is_laid_out_as_documented():
    data = TEST.encode(env(T.PONG, counter=0x0102030405060708, epoch=0xA0B0C0D0), KEY)
    assert data[:5] == b"TT\x01\x02\x03" and data[5:8] == b"a-1"
    assert data[8:16] == bytes.fromhex("0102030405060708") and data[16:28] == NONCE
    assert data[28:32] == bytes.fromhex("a0b0c0d0") and data[32:37] == b"hello"
    assert data[37:] == hmac.new(KEY, data[:37], hashlib.sha256).digest()
    assert len(data) == TEST.overhead("a-1") + 5 == 37 + MAC_BYTES
    assert TEST.decode(data, keys) == env(T.PONG, counter=0x0102030405060708, epoch=0xA0B0C0D0)


@pytest.mark.parametrize("mangle, reason", [
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "bad_mac"),              # forged
    (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "bad_mac"),     # tampered nonce
    (lambda d: d[:33] + b"J" + d[34:], "bad_mac"),                   # tampered body
    (lambda d: b"RP" + d[2:], "malformed"),                          # another protocol's
    (lambda d: d[:2] + b"\x02" + d[3:], "malformed"),                # another version
    (lambda d: d[:3] + b"\x09" + d[4:], "malformed"),                # no such type
    (lambda d: d[:4] + b"\x00" + d[5:], "malformed"),                # an empty id
    (lambda d: d[:5] + b"\xff" + d[6:], "malformed"),                # not ASCII
    (lambda d: d[:30], "malformed"),
    (lambda d: d[:4], "malformed"),
    (lambda d: b"", "malformed"),
])
def test_forged_altered_foreign_and_truncated_datagrams_are_refused(mangle, reason):
    with pytest.raises(Rejected) as info:
        TEST.decode(mangle(TEST.encode(env(), KEY)), keys)
    assert info.value.reason == reason


def test_a_wrong_key_and_an_unknown_agent_are_refused_with_the_channels_own_reason():
    with pytest.raises(Rejected, match="bad_mac"):
        TEST.decode(TEST.encode(env(), b"another key"), keys)
    stranger = TEST.encode(env(agent="a-2"), KEY)
    with pytest.raises(Rejected) as info:
        TEST.decode(stranger, keys)
    assert info.value.reason == "unknown_agent"
    named = Channel(b"TT", T, unknown="unknown_thing")
    with pytest.raises(Rejected) as info:
        named.decode(stranger, keys)
    assert info.value.reason == "unknown_thing"
    assert named.reasons == ("malformed", "unknown_thing", "bad_mac", "replay", "stale")


def test_the_protocols_do_not_take_each_others_datagrams():
    rap_data = rap.encode(rap.Message(rap.Type.REGISTER, "a-1", 1, NONCE, 0), KEY)
    shadow_data = sp.encode(sp.Message("a-1", 1, NONCE, 0, sp.Stop("i-1")), KEY)
    with pytest.raises(Rejected, match="malformed"):
        sp.decode(rap_data, keys)
    with pytest.raises(Rejected, match="malformed"):
        rap.decode(shadow_data, keys)
    assert rap.REASONS[1] == "unknown_resource" and sp.REASONS[1] == "unknown_slot"


def test_a_receiver_refuses_replays_and_stale_epochs_and_only_a_taken_message_counts():
    def parse(e):
        if e.body == b"bad":
            raise Rejected("malformed", "body")
        return e
    hub = Receiver(TEST, keys, parse, epoch_ok=lambda a, e, t: e == 7 or t == T.PING)
    first = TEST.encode(env(counter=10, epoch=0), KEY)
    assert hub.accept(first).counter == 10
    with pytest.raises(Rejected) as info:
        hub.accept(first)                                     # the same datagram again
    assert info.value.reason == "replay"
    with pytest.raises(Rejected, match="replay"):
        hub.accept(TEST.encode(env(counter=9), KEY))          # older
    with pytest.raises(Rejected) as info:
        hub.accept(TEST.encode(env(T.PONG, counter=11, epoch=6), KEY))
    assert info.value.reason == "stale"
    with pytest.raises(Rejected, match="malformed"):
        hub.accept(TEST.encode(env(counter=12, body=b"bad"), KEY))
    assert hub.counters == {"a-1": 10}                        # neither raised the counter
    assert hub.accept(TEST.encode(env(T.PONG, counter=11), KEY)).type is T.PONG
    seeded = Receiver(TEST, keys, parse, counters={"a-1": 50})
    with pytest.raises(Rejected, match="replay"):
        seeded.accept(TEST.encode(env(counter=50), KEY))


def test_what_cannot_be_encoded_is_refused_before_sending():
    for bad in (env(agent="x" * 65), env(agent=""), env(counter=-1), env(counter=1 << 64),
                env(epoch=1 << 32), Envelope(T.PING, "a-1", 1, b"short", 0)):
        with pytest.raises(ValueError):
            TEST.encode(bad, KEY)
    with pytest.raises(UnicodeEncodeError):
        TEST.encode(env(agent="é"), KEY)


def test_counters_start_from_the_clock_in_microseconds_and_always_grow():
    t = [1000.0]
    counter = Counter(lambda: t[0])
    assert counter.next() == 1_000_000_000
    assert counter.next() == 1_000_000_001                    # the same microsecond
    t[0] = 999.0                                              # the clock went back
    assert counter.next() == 1_000_000_002
    t[0] = 1001.0
    assert counter.next() == 1_001_000_000
    assert key_bytes("s3cret") == b"s3cret"


# -- the shadow agent's messages ------------------------------------------------------

FIVE = sp.FiveTuple("tcp", IPv4Address("10.0.0.7"), 40001, IPv4Address("10.0.0.5"), 80)
FINDING = sp.Finding("IDS_Signature_Scan", "high", FIVE, "rule sql-1: 'UNION SELECT'",
                     1_700_000_000.25)
BODIES = [
    sp.Hello("0.1.0", "eth1", ("IDS_Signature_Scan",)), sp.Ack(0x0102030405060708),
    sp.Launch("web-shadow-1", 0, 2, b"\x01" * 8, b'{"image":'),
    sp.Ready("web-shadow-1", ("IDS_Signature_Scan",), ("Fuzzing",)),
    sp.Heartbeat("web-shadow-1", 1520.5, 3, 0.0, 12.5), sp.Heartbeat(None, 0, 0, 0, 0),
    sp.Findings("web-shadow-1", 17, (FINDING, sp.Finding("Anomaly_Detection", "low", None,
                                                          "scan of 40 ports", 1.0))),
    sp.Failed("web-shadow-1", "image exited with status 3"), sp.Stop("web-shadow-1"),
]


def shadow(body, counter=1, epoch=7, slot="a-1") -> sp.Message:
    return sp.Message(slot, counter, NONCE, epoch, body)


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_every_shadow_message_survives_the_round_trip(body):
    assert sp.decode(sp.encode(shadow(body), KEY), keys) == shadow(body)
    assert sp.Receiver(keys).accept(sp.encode(shadow(body), KEY)).body == body


def test_the_shadow_bytes_are_as_docs_shadow_agent_md_says():
    data = sp.encode(shadow(sp.Heartbeat("i-1", 1520.5, 3, 0.0, 12.5)), KEY)
    assert data[:4] == b"SA\x01\x05" and data[4:8] == b"\x03a-1"
    body = data[sp.CHANNEL.overhead("a-1") - MAC_BYTES:-MAC_BYTES]
    assert body == (b'{"instance_id":"i-1","pps":1520.5,"drops":3,"lag_ms":0.0,'
                    b'"cpu_percent":12.5}')
    ack = sp.encode(shadow(sp.Ack(5)), KEY)
    assert ack[3] == 2 and ack[-MAC_BYTES - 8:-MAC_BYTES] == struct.pack("!Q", 5)
    part = sp.encode(shadow(sp.Launch("i-1", 1, 3, b"D" * 8, b"chunk")), KEY)
    assert part[32:-MAC_BYTES] == b"\x03i-1\x01\x03DDDDDDDDchunk"
    finding = json.loads(sp.Findings("i-1", 9, (FINDING,)).pack())["findings"][0]
    assert finding == {"profile": "IDS_Signature_Scan", "severity": "high",
                       "five_tuple": {"protocol": "tcp", "src": "10.0.0.7", "sport": 40001,
                                      "dst": "10.0.0.5", "dport": 80},
                       "evidence": "rule sql-1: 'UNION SELECT'", "at": 1700000000.25}


@pytest.mark.parametrize("type_, body", [
    (sp.Type.HEARTBEAT, b"[1, 2]"),                                      # not an object
    (sp.Type.HEARTBEAT, b'{"instance_id": "i-1", "pps": 1}'),            # fields missing
    (sp.Type.HEARTBEAT, b'{"instance_id": "i-1", "pps": -1, "drops": 0, "lag_ms": 0, '
                        b'"cpu_percent": 0}'),
    (sp.Type.HEARTBEAT, b'{"instance_id": "i-1", "pps": NaN, "drops": 0, "lag_ms": 0, '
                        b'"cpu_percent": 0}'),
    (sp.Type.HEARTBEAT, b'{"instance_id": "i-1", "pps": 1, "drops": true, "lag_ms": 0, '
                        b'"cpu_percent": 0}'),
    (sp.Type.READY, b'{"instance_id": "", "profiles": [], "unavailable": []}'),
    (sp.Type.STOP, b'{"instance_id": 7}'),
    (sp.Type.STOP, b"\xff\xfe"),                                         # not UTF-8
    (sp.Type.FINDINGS, b'{"instance_id": "i-1", "seq": 1, "findings": [{"profile": "x", '
                       b'"severity": "dire", "five_tuple": null, "evidence": "", "at": 1}]}'),
    (sp.Type.FINDINGS, b'{"instance_id": "i-1", "seq": 1, "findings": [{"profile": "x", '
                       b'"severity": "low", "five_tuple": {"protocol": "tcp", "src": "x", '
                       b'"sport": 1, "dst": "10.0.0.1", "dport": 2}, "evidence": "", "at": 1}]}'),
    (sp.Type.ACK, b"\x00" * 7),
    (sp.Type.LAUNCH, b"\x03i-1\x03\x03DDDDDDDD"),                        # part 3 of 3
    (sp.Type.LAUNCH, b"\x09i-1"),                                        # truncated
    (sp.Type.LAUNCH, b""),
])
def test_an_authentic_body_that_does_not_fit_its_type_is_malformed(type_, body):
    data = sp.CHANNEL.encode(Envelope(type_, "a-1", 1, NONCE, 7, body), KEY)
    with pytest.raises(Rejected) as info:
        sp.decode(data, keys)
    assert info.value.reason == "malformed"


def test_no_shadow_datagram_passes_the_size_limit():
    with pytest.raises(ValueError, match="at most 1200"):
        sp.encode(shadow(sp.Hello("0.1.0", "eth1", tuple(f"p{i:04}" for i in range(200)))), KEY)
    assert len(sp.Failed("i-1", "x" * 5000).reason) == sp.Failed.MAX_REASON
    with pytest.raises(ValueError):
        sp.Finding("x", "dire", None, "", 0)


# -- launch orders and findings cut to datagrams ----------------------------------------

ORDER = LaunchOrder("web-shadow-1", "/usr/bin/web --port 80 --name 'shadow one'",
                    (IPv4Interface("10.0.0.5/24"), IPv4Interface("10.0.1.5/24")),
                    IPv4Address("10.0.0.1"), {"IDS_Signature_Scan": {}, "Fuzzing": {"rate": 5}})


def test_a_small_launch_order_is_one_part_and_comes_back_whole():
    parts = launch_parts(ORDER, "slot-1")
    assert [(p.part, p.parts) for p in parts] == [(0, 1)]
    order = Assembler().add(parts[0])
    assert order == ORDER and json.loads(ORDER.document())["gateway"] == "10.0.0.1"


def test_a_large_launch_order_is_cut_into_datagrams_and_put_together_in_any_order():
    signatures = [{"id": f"sig-{i}", "content": "x" * 60, "severity": "high"} for i in range(80)]
    big = LaunchOrder("web-shadow-1", "web", (IPv4Interface("10.0.0.5/24"),), None,
                      {"IDS_Signature_Scan": {"signatures": signatures}})
    parts = launch_parts(big, "slot-1")
    assert len(parts) > 5
    sizes = [len(sp.encode(shadow(p, slot="slot-1"), KEY)) for p in parts]
    assert max(sizes) <= sp.MAX_DATAGRAM and max(sizes) > sp.MAX_DATAGRAM - 20
    shuffled = parts + parts[:3]                                # copies too
    random.Random(4).shuffle(shuffled)
    assembler, done = Assembler(), []
    for part in shuffled:
        order = assembler.add(part)
        if order is not None:
            done.append(order)
    assert done[0] == big


def test_a_part_of_another_order_starts_over_and_a_wrong_digest_is_refused():
    small = launch_parts(ORDER, "slot-1")[0]
    other = LaunchOrder("web-shadow-2", "web", (), None, {"x": {"blob": "y" * 3000}})
    assembler = Assembler()
    first, *rest = launch_parts(other, "slot-1")
    assert assembler.add(first) is None
    assert assembler.add(small) == ORDER                        # the other order was dropped
    assert all(assembler.add(p) is None for p in rest)          # its first part is gone
    forged = sp.Launch(small.instance_id, 0, 1, b"\x00" * 8, small.chunk)
    with pytest.raises(ValueError, match="digest"):
        Assembler().add(forged)


def test_findings_go_whole_in_datagrams_within_the_limit_a_huge_one_cut():
    findings = [sp.Finding("IDS_Signature_Scan", "medium", FIVE, f"rule {i}: " + "e" * 40, i)
                for i in range(40)]
    batches = findings_batches("slot-1", "web-shadow-1", findings)
    assert len(batches) > 2 and [f for b in batches for f in b] == findings
    for batch in batches:
        data = sp.encode(shadow(sp.Findings("web-shadow-1", (1 << 64) - 1, batch),
                                slot="slot-1"), KEY)
        assert len(data) <= sp.MAX_DATAGRAM
    huge = sp.Finding("Fuzzing", "critical", FIVE, "é\"" * 3000, 2.0)
    (cut,), = findings_batches("slot-1", "web-shadow-1", [huge])
    assert cut.evidence.endswith("…") and huge.evidence.startswith(cut.evidence[:-1])
    data = sp.encode(shadow(sp.Findings("web-shadow-1", (1 << 64) - 1, (cut,)),
                            slot="slot-1"), KEY)
    assert sp.MAX_DATAGRAM - 10 < len(data) <= sp.MAX_DATAGRAM
    assert findings_batches("slot-1", "web-shadow-1", []) == []
