"""Learning sessions at run time: observe a category's members, read back what they do.

A session (``learning-session``, created over REST with ``state: learning``)
has every member of its category observed (`observe.observe_flows`, compiled
by the feature while the session runs).  Every `POLL` seconds the runtime
reads the members' connection records back with flow stats (cookie
`observe.record_cookie(category)`, on each member's switch), keeps the latest
count of each record, and writes the session's ``progress`` (members,
connections seen, rules so far).  A record whose count grew was seen again
then (``last_seen``).

A session ends when REST writes ``state: stopped``, or when its ``duration``
is over (the runtime writes it, journaled).  Its records are read one last
time, consolidated with the category's current policy (`graph.consolidate`)
into the next version (`versions.save`), its observation flows go and its
records are deleted from the switches.
Nothing here needs a packet-in.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from controller.features.policy import graph, versions
from controller.reconcile.flows import FlowDiff
from controller.features.policy.members import Directory
from controller.features.policy.observe import Member, record_cookie
from controller.features.policy.records import TABLE as RECORDS, seen_of
from controller.features.policy.rules import SESSION, Rules, Seen

LOG = logging.getLogger("hubshift.policy")
POLL = 2.0                     # seconds between two readings of a session's records
ALL_BITS = (1 << 64) - 1
LEARNING, FINISHING, STOPPED = "learning", "finishing", "stopped"


@dataclass
class Running:
    """A session being observed, and what its records said so far."""
    id: str
    category: str
    ends_at: float | None
    seen: dict[tuple, Seen] = field(default_factory=dict)     # record key -> latest
    asked: set[int] = field(default_factory=set)              # switches being read
    stopping: bool = False


def record_key(s: Seen) -> tuple:
    return (s.member, s.direction, s.protocol, s.port, s.peer_ip)


class Learning:
    """The sessions the feature observes; `directory` is a fresh reading of the store."""

    def __init__(self, ctx, directory: Callable[[], Directory]) -> None:
        self.ctx, self.directory = ctx, directory
        self.running: dict[str, Running] = {}
        self.due = 0.0

    # -- what the store says -----------------------------------------------------------

    def reload(self) -> bool:
        """Sessions started or stopped over REST; True if what is observed changed."""
        docs = {d.id: d for d in self.ctx.store.list(SESSION)}
        changed = False
        for sid, doc in docs.items():
            state = doc.body.get("state")
            if state == LEARNING and sid not in self.running:
                started = float(doc.body.get("started_at") or self.ctx.wallclock())
                duration = doc.body.get("duration")
                self.running[sid] = Running(sid, doc.body["category"],
                                            started + duration if duration else None)
                self.ctx.journal(SESSION, sid, f"learning {doc.body['category']}",
                                 category=doc.body["category"])
                changed = True
            elif state == STOPPED and sid in self.running and not self.running[sid].stopping:
                self._stop(self.running[sid])
        for sid in [s for s in self.running if s not in docs]:
            del self.running[sid]                      # deleted: nothing is kept
            changed = True
        return changed

    def observed(self, directory: Directory) -> list[tuple[str, Member]]:
        """(category, member) of every running session's members, to compile.  A member
        of two categories learning at once is observed for the first (by name) only."""
        out: dict[str, tuple[str, Member]] = {}
        for run in sorted(self.running.values(), key=lambda r: r.category):
            for iid in directory.members(run.category):
                member = directory.member(iid)
                if member is not None and iid not in out:
                    out[iid] = (run.category, member)
        return [out[i] for i in sorted(out)]

    # -- time ----------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        if not self.running:
            return None
        mono = self.ctx.clock()
        ends = [r.ends_at - self.ctx.wallclock() for r in self.running.values()
                if r.ends_at is not None and not r.stopping]
        return max(0.0, min([self.due - mono, *ends]))

    def tick(self) -> None:
        now = self.ctx.wallclock()
        for run in list(self.running.values()):
            if run.ends_at is not None and now >= run.ends_at and not run.stopping:
                self._put(run.id, state=STOPPED, stopped_at=now, stopped_by="its duration")
                self._stop(run)
        mono = self.ctx.clock()
        if mono < self.due:
            return
        self.due = mono + POLL
        directory = self.directory()
        for run in list(self.running.values()):
            if not run.stopping:
                self._read(run, directory)

    # -- reading the records -------------------------------------------------------------

    def _read(self, run: Running, directory: Directory, then: Callable[[], None] | None = None):
        members = [m for iid in directory.members(run.category)
                   if (m := directory.member(iid)) is not None]
        dpids = sorted({m.dpid for m in members} - run.asked)
        if not dpids:
            if then is not None and not run.asked:
                then()
            return
        cookie = record_cookie(run.category)
        for dpid in dpids:
            asked = self.ctx.request(
                dpid, lambda ch, c=cookie: ch.flow_counters(RECORDS, c, ALL_BITS),  # records only
                lambda answer, d=dpid: self._answered(run, d, members, answer, then))
            if asked:
                run.asked.add(dpid)
        if then is not None and not run.asked:
            then()                                     # no switch to ask: finish now

    def _answered(self, run: Running, dpid: int, members: list[Member], answer: Future,
                  then: Callable[[], None] | None) -> None:
        run.asked.discard(dpid)
        if answer.exception() is not None:
            LOG.warning("records of %s on %016x not read: %s", run.category, dpid,
                        answer.exception())
        else:
            now = self.ctx.wallclock()
            for s in seen_of({m.port: m.interface_id for m in members if m.dpid == dpid},
                             answer.result(), now):
                key, old = record_key(s), run.seen.get(record_key(s))
                if old is None:
                    run.seen[key] = s._replace(first_seen=s.first_seen or now, last_seen=now)
                elif s.connections != old.connections:
                    run.seen[key] = old._replace(connections=s.connections, last_seen=now)
            self._progress(run)
        if then is not None and not run.asked:
            then()

    def _progress(self, run: Running) -> None:
        directory = self.directory()
        members = directory.members(run.category)
        rules = graph.consolidate(run.category, members, run.seen.values(),
                                  directory.generalizer())
        progress = {"members": len(members),
                    "connections": sum(s.connections for s in run.seen.values()),
                    "rules": len(rules.rules)}
        doc = self.ctx.store.find(SESSION, run.id)
        if doc is not None and doc.body.get("progress") != progress:
            self._put(run.id, progress=progress)

    # -- ending ------------------------------------------------------------------------------

    def _stop(self, run: Running) -> None:
        """Read the records one last time, then make the next version and stop observing."""
        run.stopping = True
        self._read(run, self.directory(), then=lambda: self._finish(run))

    def _finish(self, run: Running) -> None:
        directory = self.directory()
        members = directory.members(run.category)
        base = versions.current(self.ctx.store, run.category) or Rules(run.category)
        rules = graph.consolidate(run.category, members, run.seen.values(),
                                  directory.generalizer(), base)
        saved = versions.save(self.ctx.store, rules, f"learning session {run.id}",
                              self.ctx.wallclock(), session_id=run.id)
        self._put(run.id, policy_version=saved.version)
        self._forget_records(run.category, directory)
        self.ctx.journal(SESSION, run.id, f"learning {run.category} stopped: version "
                         f"{saved.version}, {len(saved.rules)} rules", category=run.category,
                         version=saved.version)
        self.running.pop(run.id, None)
        self.ctx.changed()                             # its observation flows go

    def _forget_records(self, category: str, directory: Directory) -> None:
        """Delete the category's records on its members' switches (the reconciler leaves
        learned tables alone), so a later session starts from nothing."""
        cookie = record_cookie(category)

        def forget(ch) -> None:
            found = tuple(ch.flow_stats(RECORDS, cookie, ALL_BITS))
            if found:
                ch.apply(FlowDiff(delete=found))
        for dpid in sorted({m.dpid for iid in directory.members(category)
                            if (m := directory.member(iid)) is not None}):
            self.ctx.request(dpid, forget, lambda answer, d=dpid: answer.exception() and
                             LOG.warning("records of %s on %016x not deleted: %s", category, d,
                                         answer.exception()))

    def _put(self, sid: str, **changes) -> None:
        """Merge `changes` into the session's document, atomically (REST may be stopping it)."""
        with self.ctx.store.transaction():
            doc = self.ctx.store.find(SESSION, sid)
            if doc is not None:
                self.ctx.store.put(SESSION, sid, {**doc.body, **changes})
