"""The policy feature's documents as REST reads and answers them.

Written by users (one model each, parsed by the CRUD layer or the routes):

* an **address set** (`AddressSet`, kind `rules.ADDRESS_SET`): a name and the
  IPv4 networks it covers; a peer inside one of them is that set in a rule;
* a **learning session** request (`LearningRequest`, kind `rules.SESSION`): the
  category to observe and, optionally, for how long;
* a **mirroring profile** (`MirroringProfile`, kind `rules.PROFILE`): the source
  category whose policy a target category gets, at a strength 0-100, enforced or
  audited.

What needs the store (a profile's source is a known category, one session per
category at a time) is checked where the document is written (the APIs), not
here.  The answer models (``...View``) document what the routes answer.
"""
from __future__ import annotations

from ipaddress import IPv4Address
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from controller.api.crud import StoredMeta
from controller.api.routes_interfaces import Category, distinct
from controller.core.documents import (NOT_BLANK, DocumentModel, IPv4Cidr, NotBlank, Seconds,
                                       fail, rule)
from controller.features.policy.rules import Peer

MODES = ("enforce", "audit")
STATES = ("learning", "stopped")
FORMATS = ("json", "graph", "dot", "k8s")
"""What ``GET /v1/policies/{category}`` answers: the rules (json), node-link JSON
(graph), Graphviz (dot), a Kubernetes NetworkPolicy (k8s)."""

Name = Annotated[str, Field(min_length=1, max_length=64), NotBlank]
Strength = Annotated[int, Field(strict=True, ge=0, le=100)]


# -- address sets ---------------------------------------------------------------------------

class AddressSet(DocumentModel):
    """A declared range of peers: an address inside it is this set in a rule (the most
    specific set when several hold it)."""
    name: Name = Field(examples=["ext"], json_schema_extra={
        "pattern": NOT_BLANK, **rule("has a letter or digit to make the id from (or give an id)")})
    cidrs: Annotated[list[IPv4Cidr], Field(min_length=1, max_length=1024),
                     AfterValidator(distinct)] = Field(
        description="IPv4 networks in CIDR form", examples=[["198.51.100.0/24"]],
        json_schema_extra={"uniqueItems": True})

    def stored_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# -- learning sessions ---------------------------------------------------------------------

class LearningRequest(DocumentModel):
    """Body of ``POST /v1/learning-sessions``."""
    category: Category = Field(description="Every member of it is observed (members that get "
                                           "the category later too); none yet is fine")
    duration: Seconds | None = Field(default=None, description="Seconds, or text such as "
                                                               '"10m"; null: until stopped')


class Progress(BaseModel):
    members: int = Field(description="Members of the category observed")
    connections: int = Field(description="Connections seen so far")
    rules: int = Field(description="Rules they make so far")


class SessionView(StoredMeta):
    category: str
    duration: int | None
    state: Literal[STATES]  # type: ignore[valid-type]
    started_at: float
    ends_at: float | None = Field(description="When its duration is over; null: until stopped")
    stopped_at: float | None = None
    stopped_by: str | None = None
    progress: Progress
    policy_version: int | None = Field(default=None, description="The policy version made "
                                                                 "when it stopped")


# -- policies ------------------------------------------------------------------------------

class RuleView(BaseModel):
    id: str
    direction: Literal["egress", "ingress"]
    protocol: str
    port: int | None = Field(description="The server's port; null for a protocol without ports")
    peer: str = Field(description='"category:NAME", "set:ID", "subnet:ID" or "address:IP"')
    action: Literal["allow", "deny"]
    support: str = Field(description='Distinct members that used it, of the members: "1/2"')
    members: list[str]
    first_seen: float
    last_seen: float
    connections: int
    origin: str
    expires_at: float | None


class PolicyView(BaseModel):
    category: str
    version: int
    rules: list[RuleView]
    created_at: float | None = None
    reason: str | None = None


class NodeLinkView(BaseModel):
    """``?format=graph``: networkx node-link JSON."""
    model_config = ConfigDict(extra="allow")
    directed: bool
    multigraph: bool
    graph: dict[str, Any]
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


class PolicySummary(BaseModel):
    category: str
    version: int
    rules: int = Field(description="How many rules the current version has")
    updated_at: float | None = None


class VersionView(BaseModel):
    category: str
    version: int
    rules: int
    created_at: float | None = None
    reason: str | None = None


class DiffView(BaseModel):
    category: str
    from_: int = Field(alias="from")
    to: int
    added: list[RuleView]
    removed: list[RuleView]
    changed: list[dict[str, Any]] = Field(description="{id, fields, before, after} per rule")


# -- mirroring profiles --------------------------------------------------------------------

class MirroringProfile(DocumentModel):
    """A target category gets the source category's policy, at a strength."""
    source_category: Category = Field(json_schema_extra=rule(
        "a category some interface has, or one with a policy"))
    target_category: Category = Field(
        description="May be a category nobody has yet (its members come later)",
        json_schema_extra=rule("not the source category"))
    strength: Strength = Field(description="0-100: the share of the source's rules kept, most "
                                           "supported first (100: all; 0: default deny alone)")
    mode: Literal[MODES] = Field(  # type: ignore[valid-type]
        default="enforce", description="enforce: refused as the policy says; audit: passed, "
                                       "and what would be refused is counted")

    @field_validator("target_category")
    @classmethod
    def _not_the_source(cls, target: str, info: ValidationInfo) -> str:
        if target == info.data.get("source_category"):
            fail(f"is the source category ({target}); a profile mirrors one category to "
                 "another")
        return target

    def stored_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class PreviewRowView(BaseModel):
    rule_id: str
    included: bool
    rank: int | None = Field(description="Its place among the ranked rules; null: a deny rule, "
                                         "always kept")
    reason: str = Field(examples=["support 1/2, rank 3 of 3, cut at 2"])
    direction: str
    protocol: str
    port: int | None
    peer: str
    support: str


class PreviewView(BaseModel):
    profile_id: str
    source_category: str
    target_category: str
    strength: int
    mode: str
    policy_version: int | None = Field(description="The source's current version; null: it "
                                                   "has none yet (the target gets default deny)")
    ranked: int
    cut: int
    rows: list[PreviewRowView]


# -- overrides, reviews, the audit trail (round 2) -----------------------------------------

OVERRIDE_PROTOCOLS = ("tcp", "udp", "icmp")
REVIEW_STATES = ("pending", "approved", "denied")
PEER_PATTERN = r"^(category|set|subnet|address):\S+$"


def _peer_text(text: str) -> str:
    """A peer as rules.Peer writes it; an address peer is an IPv4 address."""
    try:
        peer = Peer.parse(text)
    except ValueError as exc:
        fail(str(exc))
    if peer.kind == "address":
        try:
            IPv4Address(peer.name)
        except ValueError:
            fail(f"{peer.name!r} is not an IPv4 address (address:IP)")
    return str(peer)


class OverrideRequest(DocumentModel):
    """Body of ``POST /v1/interfaces/{id}/policy-overrides``: one rule for that interface
    alone, before its mirrored policy."""
    model_config = ConfigDict(json_schema_extra={  # a port only with tcp or udp
        "if": {"properties": {"protocol": {"not": {"enum": ["tcp", "udp"]}}},
               "required": ["protocol"]},
        "then": {"properties": {"port": {"type": "null"}}}})

    action: Literal["allow", "deny"]
    direction: Literal["egress", "ingress"] = Field(
        default="egress", description="egress: the interface opens it; ingress: the peer does")
    protocol: Literal[OVERRIDE_PROTOCOLS]  # type: ignore[valid-type]
    port: int | None = Field(default=None, ge=1, le=65535, strict=True,
                             description="The server's port (tcp, udp); null: any port")
    peer: Annotated[str, AfterValidator(_peer_text)] = Field(
        examples=["set:ext", "address:198.51.100.22"],
        description='"category:NAME", "set:ID", "subnet:ID" or "address:IP"',
        json_schema_extra={"pattern": PEER_PATTERN, "maxLength": 128,
                           **rule("an address peer is an IPv4 address")})
    reason: Annotated[str, Field(min_length=1, max_length=500), NotBlank] = Field(
        json_schema_extra={"pattern": NOT_BLANK}, examples=["ticket 42: backup host"])

    @field_validator("port")
    @classmethod
    def _port_with_ports(cls, port: int | None, info: ValidationInfo) -> int | None:
        protocol = info.data.get("protocol")
        if port is not None and protocol is not None and protocol not in ("tcp", "udp"):
            fail(f"a port only applies to tcp or udp, not {protocol}")
        return port


class OverrideView(BaseModel):
    id: str
    revision: int
    created_at: float
    updated_at: float
    interface_id: str
    action: Literal["allow", "deny"]
    direction: Literal["egress", "ingress"]
    protocol: str
    port: int | None
    peer: str
    reason: str


class DecisionRequest(DocumentModel):
    """Body of ``POST /v1/policy-reviews/{id}/approve`` (and ``deny``, without ttl)."""
    ttl: Seconds | None = Field(default=None, description='Seconds, or text such as "1h": a '
                                                          "temporary allowance; null: kept")
    reason: Annotated[str, Field(min_length=1, max_length=500), NotBlank] | None = Field(
        default=None, json_schema_extra={"pattern": NOT_BLANK},
        description="Why (kept in the audit trail)")


class DenyRequest(DocumentModel):
    reason: Annotated[str, Field(min_length=1, max_length=500), NotBlank] | None = Field(
        default=None, json_schema_extra={"pattern": NOT_BLANK},
        description="Why (kept in the audit trail)")


class ReviewView(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(description='"<category>:<rule id>"')
    category: str
    direction: str
    protocol: str
    port: int | None
    peer: str
    members: list[str]
    count: int = Field(description="Connections refused (enforce) or that would have been "
                                   "(audit)")
    first_seen: float
    state: Literal[REVIEW_STATES]  # type: ignore[valid-type]
    decided_at: float | None = None
    decided_by: str | None = None
    ttl: int | None = None
    expires_at: float | None = None


class AuditView(BaseModel):
    id: str = Field(description="Zero-padded sequence: later entries sort after earlier ones")
    seq: int
    at: float
    actor: str = Field(description='Who: "rest" for the REST API (until tokens exist)')
    what: str = Field(examples=["policy-override.created"],
                      description="<kind>.<what happened to it>")
    subject: str | None = Field(description="The document's id")
    why: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
