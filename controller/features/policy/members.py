"""Who is in a category, where they are plugged in, and what the peers they talk to are.

Read from the store on the worker: categories are kept in the interface records
(``categories``, written over REST), address sets are documents
(`rules.ADDRESS_SET`), subnets are the hub's.  `Directory` is one reading of all
of it: a category's members, a member's place in the fabric (`observe.Member`),
and the `generalize.Generalizer` that turns a peer's address into a `Peer`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Network

from controller.core.interfaces import KIND as INTERFACE
from controller.core.view import FabricView
from controller.features.policy.generalize import Generalizer
from controller.features.policy.observe import Member
from controller.features.policy.rules import ADDRESS_SET
from controller.pipeline import tables
from controller.store import Document, Store

LOG = logging.getLogger("hubshift.policy")


def categories_of(doc: Document) -> tuple[str, ...]:
    return tuple(sorted(set(doc.body.get("categories") or ())))


@dataclass(frozen=True)
class Directory:
    interfaces: dict[str, Document]              # interface id -> its record
    address_sets: dict[str, tuple[IPv4Network, ...]]
    subnets: dict[str, IPv4Network]

    @classmethod
    def read(cls, store: Store, view: FabricView) -> Directory:
        sets = {}
        for doc in store.list(ADDRESS_SET):
            try:
                sets[doc.id] = tuple(IPv4Network(c) for c in doc.body.get("cidrs") or ())
            except ValueError as exc:
                LOG.error("ignoring address set %s: %s", doc.id, exc)
        return cls({d.id: d for d in store.list(INTERFACE)}, sets,
                   {s.id: s.cidr for s in view.subnets})

    def members(self, category: str) -> list[str]:
        """The interface ids with the category, sorted."""
        return sorted(i for i, d in self.interfaces.items() if category in categories_of(d))

    def categories(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for iid, doc in sorted(self.interfaces.items()):
            for c in categories_of(doc):
                out.setdefault(c, []).append(iid)
        return out

    def member(self, interface_id: str) -> Member | None:
        """Where the interface is, and where its packets go on after a hook."""
        doc = self.interfaces.get(interface_id)
        if doc is None:
            return None
        b = doc.body
        personality = b.get("personality_id") is not None
        return Member(interface_id, int(b["datapath"], 16), int(b["port"]), str(b["mac"]).lower(),
                      tuple(b.get("ips") or ()),
                      tables.PERSONALITY_EGRESS.id if personality else tables.ARP.id,
                      tables.PERSONALITY_INGRESS.id if personality else None)

    def generalizer(self) -> Generalizer:
        by_ip: dict[str, tuple[str, ...]] = {}
        for doc in self.interfaces.values():
            cats = categories_of(doc)
            if cats:
                for ip in doc.body.get("ips") or ():
                    by_ip[ip] = cats
        return Generalizer(by_ip, self.address_sets, self.subnets)
