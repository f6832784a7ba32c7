"""RAP, the Resource Assignment Protocol: messages byte for byte, and their authentication.

Python standard library only: the `hub-rap` client on a bare resource uses
this module as it is.  docs/rap.md specifies the format and both state
machines; in short, every datagram is

    magic "RP" | version 1 | type | resource id (length-prefixed ASCII)
    | counter (u64) | nonce (96 bits) | server epoch (u32) | body | HMAC-SHA256

all big-endian, the HMAC keyed with the resource's secret over every byte
before it.  A receiver refuses a message that is malformed, names an unknown
resource, fails its HMAC, does not raise the sender's counter (a replay), or
carries another server epoch than the one it expects (stale); `Rejected`
says which, for `hub_rap_rejected_total{reason}`.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Callable

MAGIC = b"RP"
VERSION = 1
NONCE_BYTES = 12
MAC_BYTES = 32
MAX_ID = 64
_HEAD = struct.Struct("!2sBBB")          # magic, version, type, id length
_TAIL = struct.Struct(f"!Q{NONCE_BYTES}sI")   # counter, nonce, epoch
_LEASE = struct.Struct("!4sBII")          # address, prefix length, preferred, valid (s)
_ADDRESS = struct.Struct("!4s")
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


class Rejected(ValueError):
    """A datagram to drop without an answer; `reason` is the metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


REASONS = ("malformed", "unknown_resource", "bad_mac", "replay", "stale")


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
    rid = msg.resource.encode("ascii")
    if not 1 <= len(rid) <= MAX_ID:
        raise ValueError(f"resource id of {len(rid)} bytes (1..{MAX_ID})")
    if len(msg.nonce) != NONCE_BYTES:
        raise ValueError(f"nonce of {len(msg.nonce)} bytes ({NONCE_BYTES})")
    data = (_HEAD.pack(MAGIC, VERSION, msg.type, len(rid)) + rid
            + _TAIL.pack(msg.counter, msg.nonce, msg.epoch) + _body(msg))
    return data + hmac.new(key, data, hashlib.sha256).digest()


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


def decode(data: bytes, key_of: Callable[[str], bytes | None]) -> Message:
    """The authenticated message, or Rejected (malformed, unknown_resource, bad_mac).

    Replays and stale epochs are the receiver's state: see `Receiver`."""
    try:
        magic, version, type_, id_len = _HEAD.unpack_from(data)
        if magic != MAGIC or version != VERSION or not 1 <= id_len <= MAX_ID:
            raise Rejected("malformed", "header")
        rid = data[_HEAD.size:_HEAD.size + id_len].decode("ascii")
        tail = _HEAD.size + id_len
        counter, nonce, epoch = _TAIL.unpack_from(data, tail)
        body = data[tail + _TAIL.size:len(data) - MAC_BYTES]
        mac = data[len(data) - MAC_BYTES:]
        kind = Type(type_)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, Rejected):
            raise
        raise Rejected("malformed", str(exc)) from None
    if len(data) < tail + _TAIL.size + MAC_BYTES:
        raise Rejected("malformed", "short")
    key = key_of(rid)
    if key is None:
        raise Rejected("unknown_resource", rid)
    if not hmac.compare_digest(mac, hmac.new(key, data[:-MAC_BYTES], hashlib.sha256).digest()):
        raise Rejected("bad_mac", rid)
    return _parse_body(Message(kind, rid, counter, nonce, epoch), body)


def _parse_body(msg: Message, body: bytes) -> Message:
    t = msg.type
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


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


class Receiver:
    """One end's view of the other: the highest counter seen per resource, the epoch check.

    `accept` decodes and authenticates a datagram and refuses a counter that
    does not grow (a replay, or a reordered duplicate) and, at the hub, a
    message whose epoch `epoch_ok(resource, epoch, type)` refuses (stale).
    `counters` may be seeded (the hub keeps them with each resource)."""

    def __init__(self, key_of: Callable[[str], bytes | None],
                 epoch_ok: Callable[[str, int, Type], bool] | None = None,
                 counters: dict[str, int] | None = None) -> None:
        self.key_of = key_of
        self.epoch_ok = epoch_ok
        self.counters: dict[str, int] = dict(counters or {})

    def accept(self, data: bytes) -> Message:
        msg = decode(data, self.key_of)
        if msg.counter <= self.counters.get(msg.resource, -1):
            raise Rejected("replay", f"{msg.resource} counter {msg.counter}")
        if self.epoch_ok is not None and not self.epoch_ok(msg.resource, msg.epoch, msg.type):
            raise Rejected("stale", f"{msg.resource} epoch {msg.epoch}")
        self.counters[msg.resource] = msg.counter
        return msg


def key_bytes(key: str) -> bytes:
    """The HMAC key of a resource's secret as REST shows it (its ASCII bytes)."""
    return key.encode("ascii")


class Counter:
    """A sender's counters: from the wall clock in microseconds, one more per message,
    so a restarted sender still sends larger ones without storing anything."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, int(self._now() * 1_000_000))
        return self._last
