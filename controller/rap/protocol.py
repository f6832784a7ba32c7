"""RAP, the Resource Assignment Protocol: its messages byte for byte.

Python standard library only: the `hub-rap` client on a bare resource uses
this module as it is.  docs/rap.md specifies the format and both state
machines.  The envelope, its authentication and the receiver's checks are the
channel shared with the shadow agent (`controller.agents.channel`, magic "RP"
here); in short, every datagram is

    magic "RP" | version 1 | type | resource id (length-prefixed ASCII)
    | counter (u64) | nonce (96 bits) | server epoch (u32) | body | HMAC-SHA256

all big-endian, the HMAC keyed with the resource's secret over every byte
before it.  A receiver refuses a message that is malformed, names an unknown
resource, fails its HMAC, does not raise the sender's counter (a replay), or
carries another server epoch than the one it expects (stale); `Rejected`
says which, for `hub_rap_rejected_total{reason}` (`REASONS`).
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from controller.agents import channel
from controller.agents.channel import (MAC_BYTES, MAX_ID, NONCE_BYTES, Counter, Envelope,
                                       KeyOf, Rejected, key_bytes, new_nonce)

__all__ = ["MAGIC", "VERSION", "NONCE_BYTES", "MAC_BYTES", "MAX_ID", "REASONS", "CHANNEL",
           "Type", "Reason", "Rejected", "Lease", "Message", "encode", "decode", "Receiver",
           "new_nonce", "key_bytes", "Counter"]

MAGIC = b"RP"
VERSION = 1
_LEASE = struct.Struct("!4sBII")          # address, prefix length, preferred, valid (s)
_REASON = struct.Struct("!B")


class Type(enum.IntEnum):
    REGISTER = 1     # client -> hub: give me an address
    OFFER = 2        # hub -> client: a lease
    ACK = 3          # client -> hub: the lease (or announced address) is in use
    RENEW = 4        # client -> hub at T1 = 0.5 of the lease: extend it
    REBIND = 5       # client -> hub at T2 = 0.875, to any hub address: extend it
    ANNOUNCE = 6     # hub -> client on a rotation: a new lease; the old address deprecated
    RELEASE = 7      # either way: this address is given up
    NAK = 8          # hub -> client: no (the lease is unknown, or the epoch changed)


class Reason(enum.IntEnum):
    """Why a NAK was sent."""
    UNKNOWN_LEASE = 1
    EPOCH = 2
    NO_ADDRESS = 3


CHANNEL: channel.Channel[Type] = channel.Channel(MAGIC, Type, VERSION, unknown="unknown_resource")
REASONS = CHANNEL.reasons     # ("malformed", "unknown_resource", "bad_mac", "replay", "stale")


@dataclass(frozen=True)
class Lease:
    address: IPv4Address
    prefix: int
    preferred: int            # seconds the address may open new connections
    valid: int                # seconds the address may be used at all


@dataclass(frozen=True)
class Message:
    type: Type
    resource: str
    counter: int
    nonce: bytes
    epoch: int
    lease: Lease | None = None              # OFFER, ANNOUNCE
    address: IPv4Address | None = None      # ACK, RENEW, REBIND, RELEASE; ANNOUNCE: the old one
    reason: Reason | None = None            # NAK


def encode(msg: Message, key: bytes) -> bytes:
    env = Envelope(msg.type, msg.resource, msg.counter, msg.nonce, msg.epoch, _body(msg))
    return CHANNEL.encode(env, key)


def _body(msg: Message) -> bytes:
    t = msg.type
    if t in (Type.OFFER, Type.ANNOUNCE):
        if msg.lease is None:
            raise ValueError(f"{t.name} needs a lease")
        lease = _LEASE.pack(msg.lease.address.packed, msg.lease.prefix, msg.lease.preferred,
                            msg.lease.valid)
        if t == Type.ANNOUNCE:
            if msg.address is None:
                raise ValueError("ANNOUNCE needs the old address")
            return lease + msg.address.packed
        return lease
    if t in (Type.ACK, Type.RENEW, Type.REBIND, Type.RELEASE):
        if msg.address is None:
            raise ValueError(f"{t.name} needs an address")
        return msg.address.packed
    if t == Type.NAK:
        return _REASON.pack(msg.reason or Reason.UNKNOWN_LEASE)
    return b""


def decode(data: bytes, key_of: KeyOf) -> Message:
    """The authenticated message, or Rejected (malformed, unknown_resource, bad_mac).

    Replays and stale epochs are the receiver's state: see `Receiver`."""
    return _message(CHANNEL.decode(data, key_of))


def _message(env: Envelope[Type]) -> Message:
    t, body = env.type, env.body
    msg = Message(t, env.agent, env.counter, env.nonce, env.epoch)
    try:
        if t in (Type.OFFER, Type.ANNOUNCE):
            want = _LEASE.size + (4 if t == Type.ANNOUNCE else 0)
            if len(body) != want:
                raise Rejected("malformed", f"{t.name} body of {len(body)} bytes")
            addr, prefix, preferred, valid = _LEASE.unpack_from(body)
            if not 0 < prefix <= 32 or preferred > valid:
                raise Rejected("malformed", "lease")
            lease = Lease(IPv4Address(addr), prefix, preferred, valid)
            old = IPv4Address(body[_LEASE.size:]) if t == Type.ANNOUNCE else None
            return _with(msg, lease=lease, address=old)
        if t in (Type.ACK, Type.RENEW, Type.REBIND, Type.RELEASE):
            if len(body) != 4:
                raise Rejected("malformed", f"{t.name} body of {len(body)} bytes")
            return _with(msg, address=IPv4Address(body))
        if t == Type.NAK:
            if len(body) != 1:
                raise Rejected("malformed", "NAK body")
            return _with(msg, reason=Reason(body[0]))
        if body:
            raise Rejected("malformed", f"{t.name} has no body")
        return msg
    except ValueError as exc:
        if isinstance(exc, Rejected):
            raise
        raise Rejected("malformed", str(exc)) from None


def _with(msg: Message, **fields) -> Message:
    return Message(**{**msg.__dict__, **fields})


class Receiver(channel.Receiver[Type, Message]):
    """One end's view of the other: the highest counter seen per resource, the epoch check.

    `accept` decodes and authenticates a datagram and refuses a counter that
    does not grow (a replay, or a reordered duplicate) and, at the hub, a
    message whose epoch `epoch_ok(resource, epoch, type)` refuses (stale).
    `counters` may be seeded (the hub keeps them with each resource)."""

    def __init__(self, key_of: KeyOf, epoch_ok: Callable[[str, int, Type], bool] | None = None,
                 counters: dict[str, int] | None = None) -> None:
        super().__init__(CHANNEL, key_of, _message, epoch_ok, counters)
