"""The shadow agent's messages, over the agents' channel with the magic "SA".

Python standard library only: `hub-shadow-agent` uses it on a bare slot host, the
hub's shadow feature on the other end.  docs/shadow-agent.md specifies the bytes
and both state machines.  The envelope (`controller.agents.channel`) names the
slot (its id, its key) in both directions; the bodies are:

    HELLO, READY, HEARTBEAT, FINDINGS, FAILED, STOP   a UTF-8 JSON object
    ACK                                               the counter acknowledged (u64)
    LAUNCH                                            one part of a launch order:
        instance id length (1) | instance id | part (1) | parts (1) | digest (8) | chunk

No datagram passes `MAX_DATAGRAM`: orders.py cuts a launch order into LAUNCH
parts and a list of findings into FINDINGS batches.
"""
from __future__ import annotations

import enum
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import ClassVar, Union

from controller.agents import channel
from controller.agents.channel import Envelope, KeyOf, Rejected
from controller.agents.shadow import fields

MAGIC = b"SA"
VERSION = 1
MAX_DATAGRAM = 1200             # bytes, envelope included: one frame on any link
SEVERITIES = ("low", "medium", "high", "critical")
DIGEST_BYTES = 8
MAX_PARTS = 255
_ACK = struct.Struct("!Q")
_PART = struct.Struct(f"!BB{DIGEST_BYTES}s")        # part, parts, digest


class Type(enum.IntEnum):
    HELLO = 1        # agent -> hub, at start: retransmitted until ACKed
    ACK = 2          # hub -> agent: the HELLO or FINDINGS with this counter arrived
    LAUNCH = 3       # hub -> agent: a part of a launch order, retransmitted until READY
    READY = 4        # agent -> hub: the instance runs
    HEARTBEAT = 5    # agent -> hub, every second: its load (no instance: idle)
    FINDINGS = 6     # agent -> hub: what the profiles found, retransmitted until ACKed
    FAILED = 7       # agent -> hub: the instance did not start, or ended by itself
    STOP = 8         # hub -> agent: stop the instance


CHANNEL: channel.Channel[Type] = channel.Channel(MAGIC, Type, VERSION, unknown="unknown_slot")
REASONS = CHANNEL.reasons     # ("malformed", "unknown_slot", "bad_mac", "replay", "stale")


# -- findings ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FiveTuple:
    protocol: str                # "tcp", "udp", "icmp", ...
    src: IPv4Address
    sport: int
    dst: IPv4Address
    dport: int

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "src": str(self.src), "sport": self.sport,
                "dst": str(self.dst), "dport": self.dport}

    @classmethod
    def from_json(cls, obj: dict) -> FiveTuple:
        ports = [fields.count(obj[k]) for k in ("sport", "dport")]
        if any(p > 0xFFFF for p in ports):
            raise ValueError(f"ports {ports}")
        return cls(fields.text(obj["protocol"]), IPv4Address(fields.text(obj["src"])), ports[0],
                   IPv4Address(fields.text(obj["dst"])), ports[1])


@dataclass(frozen=True)
class Finding:
    """What a profile found: `evidence` is text (binary input as hex), `at` wall-clock s."""
    profile: str
    severity: str
    five_tuple: FiveTuple | None
    evidence: str
    at: float

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} (one of {', '.join(SEVERITIES)})")

    def to_json(self) -> dict:
        return {"profile": self.profile, "severity": self.severity,
                "five_tuple": self.five_tuple.to_json() if self.five_tuple else None,
                "evidence": self.evidence, "at": self.at}

    @classmethod
    def from_json(cls, obj: dict) -> Finding:
        five = obj["five_tuple"]
        return cls(fields.text(obj["profile"]), fields.text(obj["severity"]),
                   None if five is None else FiveTuple.from_json(five),
                   fields.text(obj["evidence"]), fields.number(obj["at"]))


# -- bodies --------------------------------------------------------------------------------

class _Json:
    """A body that is one JSON object: `to_json` and `from_json` say which."""

    def pack(self) -> bytes:
        return fields.dump(self.to_json())

    @classmethod
    def unpack(cls, data: bytes):
        return cls.from_json(fields.load(data))


@dataclass(frozen=True)
class Hello(_Json):
    version: str                          # the agent's
    interface: str
    profiles: tuple[str, ...] = ()        # the analysis profiles this agent can run

    def to_json(self) -> dict:
        return {"version": self.version, "interface": self.interface,
                "profiles": list(self.profiles)}

    @classmethod
    def from_json(cls, obj: dict) -> Hello:
        return cls(fields.text(obj["version"]), fields.text(obj["interface"]), fields.names(obj["profiles"]))


@dataclass(frozen=True)
class Ack:
    counter: int                          # of the HELLO or FINDINGS acknowledged

    def pack(self) -> bytes:
        return _ACK.pack(self.counter)

    @classmethod
    def unpack(cls, data: bytes) -> Ack:
        return cls(*_ACK.unpack(data))


@dataclass(frozen=True)
class Launch:
    """One part of a launch order: `chunk` is bytes part..part+1 of its JSON document."""
    instance_id: str
    part: int
    parts: int
    digest: bytes                         # SHA-256 of the whole document, first 8 bytes
    chunk: bytes

    @staticmethod
    def header_size(instance_id: str) -> int:
        return 1 + len(instance_id) + _PART.size

    def pack(self) -> bytes:
        rid = fields.ident(self.instance_id).encode("ascii")
        if not 0 <= self.part < self.parts <= MAX_PARTS or len(self.digest) != DIGEST_BYTES:
            raise ValueError(f"part {self.part} of {self.parts}, digest {self.digest!r}")
        return bytes([len(rid)]) + rid + _PART.pack(self.part, self.parts, self.digest) + self.chunk

    @classmethod
    def unpack(cls, data: bytes) -> Launch:
        n = data[0]
        instance_id = fields.ident(data[1:1 + n].decode("ascii"))
        part, parts, digest = _PART.unpack_from(data, 1 + n)
        if not part < parts:
            raise ValueError(f"part {part} of {parts}")
        return cls(instance_id, part, parts, digest, data[1 + n + _PART.size:])


@dataclass(frozen=True)
class Ready(_Json):
    instance_id: str
    profiles: tuple[str, ...] = ()        # started
    unavailable: tuple[str, ...] = ()     # asked for, not in this agent

    def to_json(self) -> dict:
        return {"instance_id": fields.ident(self.instance_id), "profiles": list(self.profiles),
                "unavailable": list(self.unavailable)}

    @classmethod
    def from_json(cls, obj: dict) -> Ready:
        return cls(fields.ident(obj["instance_id"]), fields.names(obj["profiles"]),
                   fields.names(obj["unavailable"]))


METRIC_NAME = re.compile(r"[a-z0-9_]{1,40}")
MAX_METRICS = 16


def finite(value: object) -> bool:
    """A number (not a bool), neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def metric_ok(name: object, value: object) -> bool:
    """A profile's figure as HEARTBEAT carries it: a name of `METRIC_NAME`, a finite number."""
    return isinstance(name, str) and METRIC_NAME.fullmatch(name) is not None and finite(value)


def _metrics(obj: object) -> dict[str, float]:
    if not isinstance(obj, dict) or len(obj) > MAX_METRICS:
        raise ValueError(f"metrics: an object of {MAX_METRICS} entries at most")
    bad = next((k for k, v in obj.items() if not metric_ok(k, v)), None)
    if bad is not None:
        raise ValueError(f"metric {bad!r}: {obj[bad]!r}")
    return {k: float(v) for k, v in obj.items()}


@dataclass(frozen=True)
class Heartbeat(_Json):
    instance_id: str | None               # None: idle
    pps: float                            # packets received per second on the interface
    drops: int                            # received packets dropped since the last heartbeat
    lag_ms: float                         # the profiles' analysis lag (the largest)
    cpu_percent: float                    # the image's process group; 100 = one core
    metrics: Mapping[str, float] = field(default_factory=dict)   # the profiles' figures

    def __post_init__(self) -> None:
        _metrics(dict(self.metrics))

    def to_json(self) -> dict:
        obj = {"instance_id": None if self.instance_id is None else fields.ident(self.instance_id),
               "pps": self.pps, "drops": self.drops, "lag_ms": self.lag_ms,
               "cpu_percent": self.cpu_percent}
        return {**obj, "metrics": dict(self.metrics)} if self.metrics else obj   # none: left out

    @classmethod
    def from_json(cls, obj: dict) -> Heartbeat:
        rid = obj["instance_id"]
        return cls(None if rid is None else fields.ident(rid), fields.number(obj["pps"]),
                   fields.count(obj["drops"]), fields.number(obj["lag_ms"]),
                   fields.number(obj["cpu_percent"]), _metrics(obj.get("metrics", {})))


@dataclass(frozen=True)
class Findings(_Json):
    instance_id: str
    seq: int                              # the batch's number: the same in a retransmission
    findings: tuple[Finding, ...]

    def to_json(self) -> dict:
        return {"instance_id": fields.ident(self.instance_id), "seq": self.seq,
                "findings": [f.to_json() for f in self.findings]}

    @classmethod
    def from_json(cls, obj: dict) -> Findings:
        found = obj["findings"]
        if not isinstance(found, list):
            raise ValueError("findings is not a list")
        return cls(fields.ident(obj["instance_id"]), fields.count(obj["seq"]),
                   tuple(Finding.from_json(f) for f in found))


@dataclass(frozen=True)
class Failed(_Json):
    instance_id: str
    reason: str
    MAX_REASON: ClassVar[int] = 512       # characters; a longer reason is cut

    def __post_init__(self) -> None:
        if len(self.reason) > self.MAX_REASON:
            object.__setattr__(self, "reason", self.reason[:self.MAX_REASON - 1] + "…")

    def to_json(self) -> dict:
        return {"instance_id": fields.ident(self.instance_id), "reason": self.reason}

    @classmethod
    def from_json(cls, obj: dict) -> Failed:
        return cls(fields.ident(obj["instance_id"]), fields.text(obj["reason"]))


@dataclass(frozen=True)
class Stop(_Json):
    instance_id: str

    def to_json(self) -> dict:
        return {"instance_id": fields.ident(self.instance_id)}

    @classmethod
    def from_json(cls, obj: dict) -> Stop:
        return cls(fields.ident(obj["instance_id"]))


Body = Union[Hello, Ack, Launch, Ready, Heartbeat, Findings, Failed, Stop]
_TYPE_OF: dict[type, Type] = {Hello: Type.HELLO, Ack: Type.ACK, Launch: Type.LAUNCH,
                              Ready: Type.READY, Heartbeat: Type.HEARTBEAT,
                              Findings: Type.FINDINGS, Failed: Type.FAILED, Stop: Type.STOP}
_BODY_OF = {t: cls for cls, t in _TYPE_OF.items()}


@dataclass(frozen=True)
class Message:
    slot: str                             # the agent id of the envelope, both directions
    counter: int
    nonce: bytes
    epoch: int
    body: Body

    @property
    def type(self) -> Type:
        return _TYPE_OF[type(self.body)]


def encode(msg: Message, key: bytes) -> bytes:
    data = CHANNEL.encode(Envelope(msg.type, msg.slot, msg.counter, msg.nonce, msg.epoch,
                                   msg.body.pack()), key)
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"{msg.type.name} of {len(data)} bytes (at most {MAX_DATAGRAM})")
    return data


def decode(data: bytes, key_of: KeyOf) -> Message:
    """The authenticated message, or Rejected (malformed, unknown_slot, bad_mac)."""
    return _message(CHANNEL.decode(data, key_of))


def _message(env: Envelope[Type]) -> Message:
    try:
        body = _BODY_OF[env.type].unpack(env.body)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error) as exc:
        raise Rejected(channel.MALFORMED, f"{env.type.name}: {exc}") from None
    return Message(env.agent, env.counter, env.nonce, env.epoch, body)


class Receiver(channel.Receiver[Type, Message]):
    """The channel's receiver for shadow messages: counters per slot, the epoch check."""

    def __init__(self, key_of: KeyOf, epoch_ok: Callable[[str, int, Type], bool] | None = None,
                 counters: dict[str, int] | None = None) -> None:
        super().__init__(CHANNEL, key_of, _message, epoch_ok, counters)
