"""RAP messages: byte layout, authentication, and what a receiver refuses."""
from __future__ import annotations

import hashlib
import hmac
import struct
from ipaddress import IPv4Address

import pytest

from controller.rap.protocol import (MAC_BYTES, REASONS, Lease, Message, Reason, Receiver,
                                     Rejected, Type, decode, encode)

KEY = b"k" * 32
NONCE = bytes(range(12))
LEASE = Lease(IPv4Address("10.200.3.17"), 28, 30, 60)


def keys(rid):
    return KEY if rid == "web-1" else None


def msg(type_, counter=1, epoch=7, **kw) -> Message:
    return Message(type_, "web-1", counter, NONCE, epoch, **kw)


EXAMPLES = [msg(Type.REGISTER, epoch=0), msg(Type.OFFER, lease=LEASE),
            msg(Type.ACK, address=LEASE.address), msg(Type.RENEW, address=LEASE.address),
            msg(Type.REBIND, address=LEASE.address),
            msg(Type.ANNOUNCE, lease=LEASE, address=IPv4Address("10.200.9.3")),
            msg(Type.RELEASE, address=LEASE.address), msg(Type.NAK, reason=Reason.EPOCH)]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.type.name)
def test_every_message_survives_the_round_trip(message):
    assert decode(encode(message, KEY), keys) == message


def test_the_bytes_are_as_docs_rap_md_says():
    data = encode(msg(Type.OFFER, counter=0x0102030405060708, lease=LEASE), KEY)
    assert data[:5] == b"RP\x01\x02\x05" and data[5:10] == b"web-1"
    assert data[10:18] == bytes.fromhex("0102030405060708") and data[18:30] == NONCE
    assert data[30:34] == struct.pack("!I", 7)
    assert data[34:47] == bytes([10, 200, 3, 17, 28]) + struct.pack("!II", 30, 60)
    assert data[47:] == hmac.new(KEY, data[:47], hashlib.sha256).digest()
    assert len(data) == 47 + MAC_BYTES


@pytest.mark.parametrize("mangle, reason", [
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "bad_mac"),            # forged
    (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "bad_mac"),   # tampered nonce
    (lambda d: b"XP" + d[2:], "malformed"),
    (lambda d: d[:2] + b"\x02" + d[3:], "malformed"),              # another version
    (lambda d: d[:3] + b"\x63" + d[4:], "malformed"),              # no such type
    (lambda d: d[:12], "malformed"),
    (lambda d: b"", "malformed"),
])
def test_forged_and_malformed_datagrams_are_refused(mangle, reason):
    data = encode(msg(Type.RENEW, address=LEASE.address), KEY)
    with pytest.raises(Rejected) as info:
        decode(mangle(data), keys)
    assert info.value.reason == reason


def test_a_wrong_key_or_an_unknown_resource_is_refused():
    data = encode(msg(Type.RENEW, address=LEASE.address), b"other key")
    with pytest.raises(Rejected, match="bad_mac"):
        decode(data, keys)
    stranger = encode(Message(Type.REGISTER, "web-2", 1, NONCE, 0), KEY)
    with pytest.raises(Rejected) as info:
        decode(stranger, keys)
    assert info.value.reason == "unknown_resource"


def test_a_body_that_does_not_fit_its_type_is_malformed():
    good = encode(msg(Type.RENEW, address=LEASE.address), KEY)
    body_start = 34
    short = good[:body_start] + good[body_start:body_start + 3]
    with pytest.raises(Rejected, match="malformed"):
        decode(short + hmac.new(KEY, short, hashlib.sha256).digest(), keys)
    bad_lease = Lease(LEASE.address, 28, 90, 60)           # preferred longer than valid
    with pytest.raises(Rejected, match="malformed"):
        decode(encode(msg(Type.OFFER, lease=bad_lease), KEY), keys)


def test_a_receiver_refuses_replays_and_stale_epochs():
    hub = Receiver(keys, epoch_ok=lambda r, e, t: e == 7 or (e == 0 and t == Type.REGISTER))
    first = encode(msg(Type.REGISTER, counter=10, epoch=0), KEY)
    assert hub.accept(first).type == Type.REGISTER
    with pytest.raises(Rejected) as info:
        hub.accept(first)                                   # the same datagram again
    assert info.value.reason == "replay"
    with pytest.raises(Rejected, match="replay"):
        hub.accept(encode(msg(Type.RENEW, counter=9, address=LEASE.address), KEY))
    with pytest.raises(Rejected) as info:
        hub.accept(encode(msg(Type.RENEW, counter=11, epoch=6, address=LEASE.address), KEY))
    assert info.value.reason == "stale"
    with pytest.raises(Rejected, match="stale"):              # only REGISTER may say 0
        hub.accept(encode(msg(Type.RENEW, counter=12, epoch=0, address=LEASE.address), KEY))
    assert hub.accept(encode(msg(Type.RENEW, counter=13, address=LEASE.address), KEY)).counter == 13
    client = Receiver(keys)                                  # a client takes any epoch
    assert client.accept(encode(msg(Type.OFFER, counter=1, epoch=8, lease=LEASE), KEY)).epoch == 8


def test_what_cannot_be_encoded_is_refused_before_sending():
    with pytest.raises(ValueError):
        encode(msg(Type.OFFER), KEY)                         # no lease
    with pytest.raises(ValueError):
        encode(Message(Type.REGISTER, "x" * 65, 1, NONCE, 0), KEY)
    with pytest.raises(ValueError):
        encode(Message(Type.REGISTER, "web-1", 1, b"short", 0), KEY)


# Datagrams as the implementation before the shared channel (controller/agents/channel.py)
# encoded them, key b"golden-key", nonce 00..0b: RAP's wire format must not move.
GOLDEN_NONCE = bytes.fromhex("000102030405060708090a0b")
GOLDEN_LEASE = Lease(IPv4Address("10.200.3.17"), 28, 30, 60)
GOLDEN = [
    (Message(Type.REGISTER, "web-1", 1, GOLDEN_NONCE, 0),
     "52500101057765622d310000000000000001000102030405060708090a0b00000000a1f157591d4d956bd4"
     "bcc98e24f58ea64ec3c6fccb15c4d1bd95ec5db4814658"),
    (Message(Type.OFFER, "web-1", 0x0102030405060708, GOLDEN_NONCE, 7, lease=GOLDEN_LEASE),
     "52500102057765622d310102030405060708000102030405060708090a0b000000070ac803111c0000001e"
     "0000003ca1b0c7f1dfb9d9c42e3e294c8fa22d264ef382618e8db6ea5c6e9d1704cdd1d1"),
    (Message(Type.ACK, "web-1", 2, GOLDEN_NONCE, 7, address=GOLDEN_LEASE.address),
     "52500103057765622d310000000000000002000102030405060708090a0b000000070ac8031109637e06e6"
     "04522c08b4fb6999057a920fd64ef1bccf3d3b70b3b51b798aeaa6"),
    (Message(Type.RENEW, "r" * 64, 3, GOLDEN_NONCE, 0xFFFFFFFF, address=GOLDEN_LEASE.address),
     "5250010440" + "72" * 64 + "0000000000000003000102030405060708090a0bffffffff0ac80311"
     "8ab7899895cd66c5e0ea69ed6ea39a202bf134d5af8362dfa13cba9468e694b3"),
    (Message(Type.REBIND, "web-1", 4, GOLDEN_NONCE, 7, address=GOLDEN_LEASE.address),
     "52500105057765622d310000000000000004000102030405060708090a0b000000070ac803116549053afd"
     "5829adff91b7c75879da483ad8740da05a0c050a07ea1813c011cc"),
    (Message(Type.ANNOUNCE, "web-1", 5, GOLDEN_NONCE, 7, lease=GOLDEN_LEASE,
             address=IPv4Address("10.200.9.3")),
     "52500106057765622d310000000000000005000102030405060708090a0b000000070ac803111c0000001e"
     "0000003c0ac80903be076c318ab5faf92fd2489741afb3ef150fdca42b6e803ee41330734616350e"),
    (Message(Type.RELEASE, "h1_2", 1700000000000000, GOLDEN_NONCE, 9,
             address=IPv4Address("10.200.9.3")),
     "525001070468315f3200060a24181e4000000102030405060708090a0b000000090ac80903e4f4d8ca1265"
     "23a020cfe292466b8bd536649629a020340693cae3ff3ddf75df"),
    (Message(Type.NAK, "web-1", 2**64 - 1, GOLDEN_NONCE, 7, reason=Reason.NO_ADDRESS),
     "52500108057765622d31ffffffffffffffff000102030405060708090a0b00000007034aeb9fc3a83e5a14"
     "93d67656a4e4b1661c9e1d27d7d74deefabd9b9aea3afe50"),
]


@pytest.mark.parametrize("message, golden", GOLDEN, ids=lambda m: getattr(m, "type", "hex"))
def test_the_bytes_on_the_wire_are_those_of_the_implementation_before_the_channel(message,
                                                                                  golden):
    assert encode(message, b"golden-key").hex() == golden
    assert decode(bytes.fromhex(golden), lambda rid: b"golden-key") == message


def test_an_unknown_resource_keeps_its_metric_label():
    assert REASONS == ("malformed", "unknown_resource", "bad_mac", "replay", "stale")
    with pytest.raises(Rejected) as info:
        Receiver(lambda rid: None).accept(bytes.fromhex(GOLDEN[0][1]))
    assert info.value.reason == "unknown_resource"
