"""Mirrored policies at run time: the targets' firewalls, the reviews, the decisions.

* **Targets.** Every member of a mirroring profile's target category gets the
  profile's share of the source's current policy plus its overrides
  (`effective`), with default deny and the infrastructure it needs
  (`enforce.enforce_flows`).  A member made a target before any policy exists
  gets default deny plus infrastructure: it fails closed.  Its interface
  record says which profile and policy version it runs (``policy``).
* **Reviews.** Every `POLL` seconds the connections the targets' policies
  refused (or, in audit mode, would have refused) are read back with flow
  stats (`enforce.review_cookie`), generalized like learned ones, and kept as
  one ``policy-review`` per rule key (pending, with its members and count).
* **Decisions.** An approval or a denial over REST becomes a rule of the
  source's policy (origin ``approved`` with its ``expires_at``, or action
  ``deny``), saved as its next version: it reaches every target mirrored from
  that source at the next compile, one bundle per switch.  An approval whose
  time is over is taken out again (a new version).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from ipaddress import IPv4Network
from typing import Any

from controller.core.interfaces import KIND as INTERFACE
from controller.core.view import FabricView
from controller.features.policy import graph, versions
from controller.features.policy.effective import effective_rules, kept_rules
from controller.features.policy.enforce import (REFUSED_TABLE, Enforced, Infrastructure,
                                                decode_refused, review_cookie)
from controller.features.policy.members import Directory
from controller.features.policy.rules import (OVERRIDE, PROFILE, REVIEW, Peer, Rule, RuleKey,
                                              Rules)
from controller.pipeline import tables

LOG = logging.getLogger("hubshift.policy")
POLL = 2.0
ALL_BITS = (1 << 64) - 1


def resolver(directory: Directory):
    """A peer's networks: a category's members' addresses, a set's or subnet's CIDRs."""
    def resolve(peer: Peer) -> tuple[str, ...]:
        if peer.kind == "category":
            return tuple(sorted(f"{ip}/32" for iid in directory.members(peer.name)
                                for ip in directory.interfaces[iid].body.get("ips") or ()))
        if peer.kind == "set":
            return tuple(str(c) for c in directory.address_sets.get(peer.name, ()))
        if peer.kind == "subnet":
            cidr = directory.subnets.get(peer.name)
            return (str(cidr),) if cidr is not None else ()
        try:
            return (str(IPv4Network(peer.name)),)
        except ValueError:
            return ()
    return resolve


class Enforcement:
    def __init__(self, ctx, directory: Callable[[], Directory],
                 dns_servers: tuple[str, ...] = ()) -> None:
        self.ctx, self.directory, self.dns_servers = ctx, directory, dns_servers
        self.due = 0.0
        self.asked: set[tuple[str, int]] = set()
        self.skipped: set[str] = set()                 # targets with a personality (logged once)

    # -- what the store says -------------------------------------------------------------

    def profiles(self) -> dict[str, dict[str, Any]]:
        return {d.id: d.body for d in self.ctx.store.list(PROFILE)}

    def targets(self, directory: Directory, view: FabricView, index_of) -> list[Enforced]:
        """What every target member enforces now."""
        now, out = self.ctx.wallclock(), []
        resolve = resolver(directory)
        overrides: dict[str, list] = {}
        for d in self.ctx.store.list(OVERRIDE):
            overrides.setdefault(d.body.get("interface_id"), []).append(d.body)
        for pid, profile in sorted(self.profiles().items()):
            source = versions.current(self.ctx.store, profile["source_category"])
            kept = kept_rules(source, int(profile.get("strength", 100)), now)
            for iid in directory.members(profile["target_category"]):
                member = directory.member(iid)
                if member is None or member.egress_goto != tables.ARP.id:
                    if member is not None and iid not in self.skipped:
                        self.skipped.add(iid)
                        LOG.warning("%s runs a personality: its mirrored policy is not "
                                    "enforced (a personality and a mirrored policy on one "
                                    "interface are not supported)", iid)
                    continue
                index = index_of(iid)
                if index is None:
                    continue
                gateways = tuple(sorted({str(s.gateway) for ip in member.ips
                                         if (s := view.subnet_of(ip)) is not None}))
                out.append(Enforced(member, index,
                                    effective_rules(kept, overrides.get(iid, ()), resolve),
                                    profile.get("mode", "enforce"),
                                    Infrastructure(gateways, self.dns_servers),
                                    review_cookie(profile["target_category"])))
        return out

    def target_members(self, directory: Directory) -> set[str]:
        return {iid for p in self.profiles().values()
                for iid in directory.members(p["target_category"])}

    def note_members(self, directory: Directory) -> None:
        """Each target member's record says which profile and version it runs."""
        running: dict[str, dict] = {}
        for pid, p in sorted(self.profiles().items()):
            head = self.ctx.store.find("policy", p["source_category"])
            for iid in directory.members(p["target_category"]):
                running.setdefault(iid, {"profile_id": pid, "source_category":
                                         p["source_category"], "mode": p.get("mode", "enforce"),
                                         "version": head.body["version"] if head else None})
        for iid, doc in directory.interfaces.items():
            if doc.body.get("policy") != running.get(iid):
                with self.ctx.store.transaction():
                    fresh = self.ctx.store.find(INTERFACE, iid)
                    if fresh is not None:
                        self.ctx.store.put(INTERFACE, iid, {**fresh.body,
                                                            "policy": running.get(iid)})

    # -- reviews ---------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        """While a profile has targets: the next reading of their refused connections, or
        the end of an approval."""
        if not self.ctx.store.list(PROFILE):
            return None
        times = [max(0.0, self.due - self.ctx.clock())]
        now = self.ctx.wallclock()
        for d in self.ctx.store.list(REVIEW):
            ends = d.body.get("expires_at") if d.body.get("state") == "approved" else None
            if ends is not None and float(ends) > now:
                times.append(float(ends) - now)
        return min(times)

    def poll(self, directory: Directory) -> None:
        mono = self.ctx.clock()
        if mono < self.due:
            return
        self.due = mono + POLL
        for p in self.profiles().values():
            category = p["target_category"]
            members = [m for iid in directory.members(category)
                       if (m := directory.member(iid)) is not None]
            for dpid in sorted({m.dpid for m in members}):
                if (category, dpid) in self.asked:
                    continue
                asked = self.ctx.request(
                    dpid, lambda ch, c=review_cookie(category):
                    ch.flow_counters(REFUSED_TABLE, c, ALL_BITS),   # the records only
                    lambda answer, c=category, d=dpid, ms=members: self._refused(c, d, ms, answer))
                if asked:
                    self.asked.add((category, dpid))

    def _refused(self, category: str, dpid: int, members, answer: Future) -> None:
        self.asked.discard((category, dpid))
        if answer.exception() is not None:
            return
        now = self.ctx.wallclock()
        seen = decode_refused({m.port: m.interface_id for m in members if m.dpid == dpid},
                              answer.result(), now)
        gen = self.directory().generalizer()
        by_key: dict[str, dict] = {}
        for s in seen:
            key = graph.rule_key(s, gen)
            entry = by_key.setdefault(key.id, {"key": key, "members": set(), "count": 0})
            entry["members"].add(s.member)
            entry["count"] += s.connections
        for kid, entry in sorted(by_key.items()):
            self._review(category, kid, entry, now)

    def _review(self, category: str, kid: str, entry: dict, now: float) -> None:
        rid, key = f"{category}:{kid}", entry["key"]
        with self.ctx.store.transaction():
            doc = self.ctx.store.find(REVIEW, rid)
            if doc is not None and doc.body.get("state") != "pending":
                return                                  # decided: nothing more to ask
            body = {"category": category, "direction": key.direction, "protocol": key.protocol,
                    "port": key.port, "peer": str(key.peer),
                    "members": sorted(set(doc.body.get("members", ())) | entry["members"]
                                      if doc else entry["members"]),
                    "count": max(entry["count"], doc.body.get("count", 0) if doc else 0),
                    "first_seen": doc.body["first_seen"] if doc else now, "last_seen": now,
                    "state": "pending"}
            if doc is None or {k: v for k, v in doc.body.items() if k != "last_seen"} != \
                    {k: v for k, v in body.items() if k != "last_seen"}:
                self.ctx.store.put(REVIEW, rid, body)
        if doc is None:
            self.ctx.journal(REVIEW, rid, f"unseen connection of {category} waits for a "
                             f"decision: {kid}", category=category)

    # -- decisions -------------------------------------------------------------------------

    def decide(self) -> bool:
        """Decided reviews not yet applied become rules of their source's policy."""
        changed = False
        sources = {p["target_category"]: p["source_category"] for p in self.profiles().values()}
        now = self.ctx.wallclock()
        for doc in self.ctx.store.list(REVIEW):
            b = doc.body
            if b.get("state") not in ("approved", "denied") or b.get("applied_version"):
                continue
            source = sources.get(b["category"])
            if source is None:
                continue
            rules = versions.current(self.ctx.store, source) or Rules(source)
            key = RuleKey(b["direction"], b["protocol"], b.get("port"), Peer.parse(b["peer"]))
            approved = b["state"] == "approved"
            rule = Rule(key, "allow" if approved else "deny", frozenset(b.get("members") or ()),
                        0, float(b.get("first_seen") or now), float(b.get("last_seen") or now),
                        int(b.get("count") or 0), "approved" if approved else "denied",
                        b.get("expires_at") if approved else None)
            saved = versions.save(self.ctx.store, Rules(source, rules.version,
                                                        {**rules.rules, rule.id: rule}),
                                  f"review {doc.id} {b['state']}", now, review_id=doc.id)
            self.ctx.store.put(REVIEW, doc.id, {**b, "applied_version": saved.version})
            self.ctx.journal(REVIEW, doc.id, f"{b['state']}: {source} policy version "
                             f"{saved.version}", category=b["category"], source=source)
            changed = True
        return changed

    def expire(self) -> bool:
        """Approvals whose time is over leave their policy (a new version each)."""
        now, changed = self.ctx.wallclock(), False
        for head in self.ctx.store.list("policy"):
            rules = versions.current(self.ctx.store, head.id)
            if rules is None:
                continue
            gone = [r for r in rules.rules.values() if r.origin == "approved"
                    and r.expires_at is not None and r.expires_at <= now]
            if gone:
                kept = {i: r for i, r in rules.rules.items() if r not in gone}
                versions.save(self.ctx.store, replace(rules, rules=kept),
                              "approvals ended: " + ", ".join(r.id for r in gone), now)
                changed = True
        return changed
