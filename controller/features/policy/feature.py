"""Policy mirroring and learning as a feature: the Feature interface over categories,
learning sessions, mirroring profiles, overrides and reviews.

What it compiles, one conntrack zone per member (`Indexes`): the firewall of
every member of a profile's target category (`enforce.enforce_flows`, what it
enforces from `enforcement.Enforcement.targets`), and the observation flows of
every other member of a category a learning session runs for
(`observe.observe_flows`).  Its runtime: `learning.Learning` (sessions, records
read back, the version made when a session ends) and `enforcement.Enforcement`
(reviews of refused connections, decisions into the source's next version,
approvals' TTLs, each target's record naming its profile).  Categories are in
the interface records (written over REST, ``documents_changed("interface")``);
a host that appears with a category is observed or enforced at the next compile.
"""
from __future__ import annotations

import logging
from typing import Any

from controller.core import budgets
from controller.core.feature import Contribution, Feature
from controller.core.interfaces import KIND as INTERFACE
from controller.core.view import FabricView
from controller.features.policy.enforce import enforce_flows
from controller.features.policy.enforcement import Enforcement
from controller.features.policy.learning import Learning
from controller.features.policy.members import Directory
from controller.features.policy.observe import observe_flows, record_cookie
from controller.features.policy.rules import ADDRESS_SET, OVERRIDE, PROFILE, REVIEW, SESSION
from controller.store import Store

LOG = logging.getLogger("hubshift.policy")
ALLOCATION_KIND, INDEXES = "allocation", "policy-index"     # body: {interface id: index}
MEMBERS = 0x1000                                           # zones 0xD000..0xDFFF


class Indexes:
    """Each observed member's index (its conntrack zone), allocated once and stored."""

    def __init__(self, store: Store) -> None:
        self.store = store
        doc = store.find(ALLOCATION_KIND, INDEXES)
        self.of: dict[str, int] = dict(doc.body) if doc else {}

    def index(self, interface_id: str) -> int | None:
        if interface_id not in self.of:
            used = set(self.of.values())
            free = next((i for i in range(MEMBERS) if i not in used), None)
            if free is None:
                LOG.error("no conntrack zone left to observe %s", interface_id)
                return None
            self.of[interface_id] = free
            self.store.put(ALLOCATION_KIND, INDEXES, dict(self.of))
        return self.of[interface_id]


class PolicyFeature(Feature):
    name = "policy"
    budget = budgets.POLICY
    document_kinds = (INTERFACE, ADDRESS_SET, SESSION, PROFILE, OVERRIDE, REVIEW)

    def __init__(self, ctx: Any, settings: Any = None) -> None:
        super().__init__(ctx, settings)
        self.indexes = Indexes(ctx.store)
        directory = lambda: Directory.read(ctx.store, ctx.view())             # noqa: E731
        self.learning = Learning(ctx, directory)
        dns = tuple((settings or {}).get("dns_servers", ())) if isinstance(settings, dict) else ()
        self.enforcement = Enforcement(ctx, directory, dns)

    def load(self) -> None:
        self.learning.reload()
        self.enforcement.decide()

    def documents_changed(self, kind: str) -> None:
        self.learning.reload()
        self.enforcement.decide()
        self.ctx.changed()                   # members, sets, sessions, profiles may have changed

    def contribute(self, view: FabricView) -> Contribution:
        directory = Directory.read(self.ctx.store, view)
        flows: dict[int, list] = {}
        enforced = self.enforcement.target_members(directory)
        for e in self.enforcement.targets(directory, view, self.indexes.index):
            if e.member.dpid in view.switches:
                flows.setdefault(e.member.dpid, []).extend(enforce_flows(e))
        for category, member in self.learning.observed(directory):
            if member.interface_id in enforced:
                continue                     # a target is enforced, not observed
            index = self.indexes.index(member.interface_id)
            if index is None or member.dpid not in view.switches:
                continue
            flows.setdefault(member.dpid, []).extend(
                observe_flows(member, index, record_cookie(category)))
        return Contribution(flows={d: tuple(f) for d, f in flows.items()})

    def tick(self) -> None:
        self.learning.tick()
        directory = Directory.read(self.ctx.store, self.ctx.view())
        self.enforcement.poll(directory)
        self.enforcement.note_members(directory)
        if self.enforcement.expire():
            self.ctx.changed()

    def next_wakeup(self) -> float | None:
        times = [t for t in (self.learning.next_wakeup(), self.enforcement.next_wakeup())
                 if t is not None]
        return min(times) if times else None
