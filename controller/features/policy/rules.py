"""The policy feature's words: connections seen, rule keys, rules, and the store kinds.

Pure, shared by every part of the feature (observation, the consolidated graph,
mirroring, enforcement, REST).  docs/policy.md is the user's side of it.

* A **connection record** (`Seen`) is what the switch recorded of one member's
  connections of one shape: who opened it (`direction`, from conntrack: egress =
  the member opened it, ingress = the peer did), the protocol, the server's port
  (the destination port of the opening packet: never the client's ephemeral
  port; None for a protocol without ports), the peer's address, and how many
  connections of that shape were opened.
* A **rule key** (`RuleKey`) is a record with its peer generalized (`Peer`): a
  member of a category -> that category; an address inside a declared address set
  or a hub subnet -> that set; otherwise the exact address.
* A **rule** (`Rule`) is a key with its action and its evidence: the distinct
  members that used it out of the category's members (support), when it was
  first and last seen, how many connections, and where it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

# -- store kinds (documents written by REST unless said) ----------------------------------
ADDRESS_SET = "address-set"              # {name, cidrs: [str]}
SESSION = "learning-session"             # {category, duration, state, started_at, ends_at, ...}
POLICY = "policy"                        # id = category: {category, version, updated_at}
POLICY_VERSION = "policy-version"        # id = "<category>@<version>": {category, version, rules,...}
PROFILE = "mirroring-profile"            # {source_category, target_category, strength, mode}
OVERRIDE = "policy-override"             # {interface_id, action, protocol, port, peer, reason}
REVIEW = "policy-review"                 # written by the runtime; approve/deny over REST
AUDIT = "policy-audit"                   # append-only: {seq, at, actor, what, why, before, after}

Direction = Literal["egress", "ingress"]
DIRECTIONS = ("egress", "ingress")
PORTED = ("tcp", "udp")                  # protocols whose rules name a server port
PeerKind = Literal["category", "set", "subnet", "address"]
Action = Literal["allow", "deny"]
Origin = Literal["learned", "approved", "denied", "override"]


class Seen(NamedTuple):
    """One member's connections of one shape, as the switch recorded them."""
    member: str                  # the interface id
    direction: Direction
    protocol: str                # "tcp", "udp", "icmp", or an IP protocol number as text
    port: int | None             # the server's port (tcp/udp), else None
    peer_ip: str
    connections: int = 1
    first_seen: float = 0.0      # Unix time
    last_seen: float = 0.0


class Peer(NamedTuple):
    kind: PeerKind
    name: str                    # a category, an address set's id, a subnet's id, an address

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> Peer:
        """"category:db", "set:ext", "subnet:seg1", "address:198.51.100.1" (ValueError)."""
        kind, sep, name = text.partition(":")
        if not sep or kind not in ("category", "set", "subnet", "address") or not name:
            raise ValueError(f"{text!r} is not a peer (category:NAME, set:ID, subnet:ID or "
                             "address:IP)")
        return cls(kind, name)                               # type: ignore[arg-type]


class RuleKey(NamedTuple):
    """What a rule allows or denies, whoever of the category uses it."""
    direction: Direction
    protocol: str
    port: int | None
    peer: Peer

    @property
    def id(self) -> str:
        """Stable and readable: "egress-tcp-80-set-ext"."""
        port = "any" if self.port is None else str(self.port)
        return f"{self.direction}-{self.protocol}-{port}-{self.peer.kind}-{self.peer.name}"


@dataclass(frozen=True)
class Rule:
    key: RuleKey
    action: Action = "allow"
    members: frozenset[str] = frozenset()     # the distinct members that used it
    of: int = 0                               # the category's members when it was computed
    first_seen: float = 0.0
    last_seen: float = 0.0
    connections: int = 0
    origin: Origin = "learned"
    expires_at: float | None = None           # a temporary approval (TTL); None: kept

    @property
    def id(self) -> str:
        return self.key.id

    @property
    def support(self) -> str:
        return f"{len(self.members)}/{self.of}"

    def to_json(self) -> dict[str, Any]:
        """The answer's shape (`GET /v1/policies/{category}`)."""
        return {"id": self.id, "direction": self.key.direction, "protocol": self.key.protocol,
                "port": self.key.port, "peer": str(self.key.peer), "action": self.action,
                "support": self.support, "members": sorted(self.members),
                "first_seen": self.first_seen, "last_seen": self.last_seen,
                "connections": self.connections, "origin": self.origin,
                "expires_at": self.expires_at}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Rule:
        support = str(body.get("support", "0/0"))
        return cls(RuleKey(body["direction"], body["protocol"], body.get("port"),
                           Peer.parse(body["peer"])),
                   action=body.get("action", "allow"),
                   members=frozenset(body.get("members") or ()),
                   of=int(support.split("/", 1)[1]) if "/" in support else 0,
                   first_seen=float(body.get("first_seen") or 0.0),
                   last_seen=float(body.get("last_seen") or 0.0),
                   connections=int(body.get("connections") or 0),
                   origin=body.get("origin", "learned"), expires_at=body.get("expires_at"))

    def seen_again(self, member: str, seen: Seen) -> Rule:
        """This rule with one more record of `member`'s."""
        first = min(self.first_seen, seen.first_seen) if self.first_seen else seen.first_seen
        return replace(self, members=self.members | {member}, first_seen=first,
                       last_seen=max(self.last_seen, seen.last_seen),
                       connections=self.connections + seen.connections)


@dataclass(frozen=True)
class Rules:
    """A category's rules at one version, by key id."""
    category: str
    version: int = 0
    rules: dict[str, Rule] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "version": self.version,
                "rules": [r.to_json() for r in sorted(self.rules.values(), key=lambda r: r.id)]}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Rules:
        rules = [Rule.from_json(r) for r in body.get("rules") or ()]
        return cls(body["category"], int(body.get("version") or 0), {r.id: r for r in rules})
