"""The authenticated datagram envelope between the hub and an agent on a host behind it.

Python standard library only.  RAP (`controller.rap.protocol`, magic "RP") and the
shadow agent's protocol (`controller.agents.shadow.protocol`, magic "SA") are two
`Channel`s over the same layout, all integers big-endian:

    magic (2) | version (1) | type (1) | agent id length n (1) | agent id (n, ASCII)
    | counter (u64) | nonce (12) | epoch (u32) | body | HMAC-SHA256 (32)

The agent id names the agent, and so the key, in both directions: the hub speaks
to an agent under the agent's own id.  The HMAC is keyed with that agent's secret
over every byte before it.  A receiver refuses (`Rejected(reason)`) a datagram
that is malformed, names an agent it does not know, fails its HMAC, does not raise
the counter of that agent (a replay), or carries an epoch it does not expect
(stale).  The reason is a metric label; each protocol names its own agents, so
the unknown-agent reason is the channel's (RAP's is "unknown_resource").
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

NONCE_BYTES = 12
MAC_BYTES = 32
MAX_ID = 64
_HEAD = struct.Struct("!2sBBB")                  # magic, version, type, id length
_TAIL = struct.Struct(f"!Q{NONCE_BYTES}sI")      # counter, nonce, epoch

MALFORMED = "malformed"
UNKNOWN_AGENT = "unknown_agent"
BAD_MAC = "bad_mac"
REPLAY = "replay"
STALE = "stale"

K = TypeVar("K", bound=enum.IntEnum)            # a protocol's message types
M = TypeVar("M")                                # a protocol's parsed message

KeyOf = Callable[[str], bytes | None]


class Rejected(ValueError):
    """A datagram to drop without an answer; `reason` is the metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Envelope(Generic[K]):
    """One datagram with its body still bytes."""
    type: K
    agent: str
    counter: int
    nonce: bytes
    epoch: int
    body: bytes = b""


class Channel(Generic[K]):
    """One protocol's envelope: its magic, its version and its message types.

    `unknown` is the reason given for an agent id that `key_of` does not know."""

    def __init__(self, magic: bytes, types: type[K], version: int = 1,
                 unknown: str = UNKNOWN_AGENT) -> None:
        if len(magic) != 2:
            raise ValueError("the magic is 2 bytes")
        self.magic, self.types, self.version, self.unknown = magic, types, version, unknown

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every reason `decode` and `Receiver.accept` give, in a fixed order."""
        return (MALFORMED, self.unknown, BAD_MAC, REPLAY, STALE)

    @staticmethod
    def overhead(agent: str) -> int:
        """Bytes of a datagram of `agent` that are not its body."""
        return _HEAD.size + len(agent.encode("ascii")) + _TAIL.size + MAC_BYTES

    def encode(self, env: Envelope[K], key: bytes) -> bytes:
        rid = env.agent.encode("ascii")
        if not 1 <= len(rid) <= MAX_ID:
            raise ValueError(f"agent id of {len(rid)} bytes (1..{MAX_ID})")
        if len(env.nonce) != NONCE_BYTES:
            raise ValueError(f"nonce of {len(env.nonce)} bytes ({NONCE_BYTES})")
        if not 0 <= env.counter < 1 << 64 or not 0 <= env.epoch < 1 << 32:
            raise ValueError(f"counter {env.counter} or epoch {env.epoch} out of range")
        data = (_HEAD.pack(self.magic, self.version, self.types(env.type), len(rid)) + rid
                + _TAIL.pack(env.counter, env.nonce, env.epoch) + env.body)
        return data + hmac.new(key, data, hashlib.sha256).digest()

    def decode(self, data: bytes, key_of: KeyOf) -> Envelope[K]:
        """The authenticated envelope, or Rejected (malformed, unknown, bad_mac).

        Replays and stale epochs are the receiver's state: see `Receiver`."""
        try:
            magic, version, type_, id_len = _HEAD.unpack_from(data)
            if magic != self.magic or version != self.version or not 1 <= id_len <= MAX_ID:
                raise Rejected(MALFORMED, "header")
            rid = data[_HEAD.size:_HEAD.size + id_len].decode("ascii")
            tail = _HEAD.size + id_len
            counter, nonce, epoch = _TAIL.unpack_from(data, tail)
            body = data[tail + _TAIL.size:len(data) - MAC_BYTES]
            mac = data[len(data) - MAC_BYTES:]
            kind = self.types(type_)
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            if isinstance(exc, Rejected):
                raise
            raise Rejected(MALFORMED, str(exc)) from None
        if len(data) < tail + _TAIL.size + MAC_BYTES:
            raise Rejected(MALFORMED, "short")
        key = key_of(rid)
        if key is None:
            raise Rejected(self.unknown, rid)
        if not hmac.compare_digest(mac, hmac.new(key, data[:-MAC_BYTES], hashlib.sha256).digest()):
            raise Rejected(BAD_MAC, rid)
        return Envelope(kind, rid, counter, nonce, epoch, body)


class Receiver(Generic[K, M]):
    """One end's view of the other: the highest counter taken per agent, the epoch check.

    `accept` decodes and authenticates a datagram, parses its body with `parse`
    (which raises Rejected("malformed") for a body that does not fit its type),
    refuses a counter that does not grow (a replay, or a reordered duplicate) and
    a message whose epoch `epoch_ok(agent, epoch, type)` refuses (stale).  Only a
    message that passes every check raises the counter.  `counters` may be seeded
    (the hub keeps them with each agent's record)."""

    def __init__(self, channel: Channel[K], key_of: KeyOf, parse: Callable[[Envelope[K]], M],
                 epoch_ok: Callable[[str, int, K], bool] | None = None,
                 counters: dict[str, int] | None = None) -> None:
        self.channel, self.key_of, self.parse, self.epoch_ok = channel, key_of, parse, epoch_ok
        self.counters: dict[str, int] = dict(counters or {})

    def accept(self, data: bytes) -> M:
        env = self.channel.decode(data, self.key_of)
        msg = self.parse(env)
        if env.counter <= self.counters.get(env.agent, -1):
            raise Rejected(REPLAY, f"{env.agent} counter {env.counter}")
        if self.epoch_ok is not None and not self.epoch_ok(env.agent, env.epoch, env.type):
            raise Rejected(STALE, f"{env.agent} epoch {env.epoch}")
        self.counters[env.agent] = env.counter
        return msg


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def key_bytes(key: str) -> bytes:
    """The HMAC key of an agent's secret as REST shows it (its ASCII bytes)."""
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
