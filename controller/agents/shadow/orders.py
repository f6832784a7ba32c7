"""Launch orders and findings cut to datagrams of at most `MAX_DATAGRAM` bytes.

Python standard library only.  A launch order (`LaunchOrder`: the image, the
production addresses, the gateway, the profiles) travels as a JSON document cut
into LAUNCH parts (`launch_parts`), put together again by `Assembler`; a list of
findings travels as FINDINGS batches of whole findings (`findings_batches`).
docs/shadow-agent.md specifies both.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from controller.agents.shadow import fields
from controller.agents.shadow.protocol import (CHANNEL, DIGEST_BYTES, MAX_DATAGRAM, MAX_PARTS,
                                               Finding, Findings, Launch)


@dataclass(frozen=True)
class LaunchOrder:
    """What LAUNCH asks: run `image` (a command line) with the production `addresses` on
    the slot's interface, and these analysis profiles (name: settings)."""
    instance_id: str
    image: str
    addresses: tuple[IPv4Interface, ...]
    gateway: IPv4Address | None = None
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def document(self) -> bytes:
        return fields.dump({
            "image": self.image, "addresses": [str(a) for a in self.addresses],
            "gateway": None if self.gateway is None else str(self.gateway),
            "profiles": {name: dict(s) for name, s in self.profiles.items()}})

    @classmethod
    def from_document(cls, instance_id: str, data: bytes) -> LaunchOrder:
        obj = fields.load(data)
        addresses, gateway, profiles = obj["addresses"], obj["gateway"], obj["profiles"]
        if not isinstance(addresses, list) or not isinstance(profiles, dict) or not all(
                isinstance(s, dict) for s in profiles.values()):
            raise ValueError("addresses is a list, profiles an object of objects")
        return cls(fields.ident(instance_id), fields.text(obj["image"]),
                   tuple(IPv4Interface(fields.text(a)) for a in addresses),
                   None if gateway is None else IPv4Address(fields.text(gateway)), profiles)


def _digest(document: bytes) -> bytes:
    return hashlib.sha256(document).digest()[:DIGEST_BYTES]


def launch_parts(order: LaunchOrder, slot: str) -> list[Launch]:
    """The LAUNCH bodies of an order to `slot`, each datagram within MAX_DATAGRAM."""
    doc = order.document()
    digest = _digest(doc)
    room = MAX_DATAGRAM - CHANNEL.overhead(slot) - Launch.header_size(order.instance_id)
    chunks = [doc[i:i + room] for i in range(0, len(doc), room)]
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"a launch order of {len(doc)} bytes ({MAX_PARTS} parts at most)")
    return [Launch(order.instance_id, i, len(chunks), digest, c) for i, c in enumerate(chunks)]


class Assembler:
    """LAUNCH parts to their order: parts of one order at a time (another order's part
    starts over), any order of arrival, copies ignored."""

    def __init__(self) -> None:
        self._of: tuple[str, bytes, int] | None = None
        self._chunks: dict[int, bytes] = {}

    def add(self, part: Launch) -> LaunchOrder | None:
        """The whole order once this part completes it (ValueError if it does not parse)."""
        of = (part.instance_id, part.digest, part.parts)
        if of != self._of:
            self._of, self._chunks = of, {}
        self._chunks[part.part] = part.chunk
        if len(self._chunks) < part.parts:
            return None
        doc = b"".join(self._chunks[i] for i in range(part.parts))
        self._of, self._chunks = None, {}
        if _digest(doc) != part.digest:
            raise ValueError("the launch order does not match its digest")
        return LaunchOrder.from_document(part.instance_id, doc)


def findings_batches(slot: str, instance_id: str,
                     findings: Sequence[Finding]) -> list[tuple[Finding, ...]]:
    """Whole findings grouped so that each FINDINGS datagram stays within MAX_DATAGRAM;
    a finding too large alone has its evidence cut (ending in "…")."""
    empty = len(Findings(instance_id, (1 << 64) - 1, ()).pack())
    room = MAX_DATAGRAM - CHANNEL.overhead(slot) - empty
    batches: list[tuple[Finding, ...]] = []
    batch: list[Finding] = []
    used = 0
    for finding in findings:
        finding = _fitted(finding, room)
        size = len(fields.dump(finding.to_json())) + (1 if batch else 0)     # the comma
        if batch and used + size > room:
            batches.append(tuple(batch))
            batch, used, size = [], 0, size - 1
        batch.append(finding)
        used += size
    return batches + ([tuple(batch)] if batch else [])


def _fitted(finding: Finding, room: int) -> Finding:
    """The finding, or its evidence cut to the longest start (and "…") that fits."""
    def size(evidence: str) -> int:
        return len(fields.dump(replace(finding, evidence=evidence).to_json()))
    if size(finding.evidence) <= room:
        return finding
    if size("…") > room:
        raise ValueError(f"a finding of {finding.profile} too large even without evidence")
    short, long = 0, len(finding.evidence)         # fits with `short` kept, not with `long`
    while long - short > 1:
        middle = (short + long) // 2
        if size(finding.evidence[:middle] + "…") <= room:
            short = middle
        else:
            long = middle
    return replace(finding, evidence=finding.evidence[:short] + "…")
