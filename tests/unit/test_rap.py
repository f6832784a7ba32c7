"""RAP messages: byte layout, authentication, and what a receiver refuses."""
from __future__ import annotations

import hashlib
import hmac
import struct
from ipaddress import IPv4Address

import pytest

from controller.rap.protocol import (MAC_BYTES, Lease, Message, Reason, Receiver, Rejected,
                                           Type, decode, encode)

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
