"""Personality changes: the coordinator that walks operations through their states.

Runs on the hub's worker thread only (`tick` after every converge, packet-ins
for probe replies, switch answers posted back).  Each step is written to the
operation record before the next one starts; a controller restarted
mid-change resumes from the record (see `_prepare`).

    pending ─► transition ─► draining ─► applying ─► verifying ─► succeeded
                   (no personality yet: straight to applying)  └─► rolled_back
    any step that cannot go on ──────────────────────────────────► failed

A step that changes the interface's flows binds it (`BindingTable.bind`) and
waits for the switch to hold them (`FeatureContext.realization`), then goes on
in a later tick: the coordinator never converges by itself.  Transition keeps
the old personality's zone, addresses and routes but refuses new connections
both ways.  Draining counts the interface's live connections with one
aggregate-stats request per poll on `personality_connections` (learned flows,
one per connection; see `controller.features.personality.compile`), asked
without blocking the worker.  What is still open when `max_seconds` runs out
is cut: the new personality uses the interface's other conntrack zone.
Applying is one bundle.  Verifying runs the health checks
(`controller.features.personality.checks`); one without an answer by its
deadline rolls back to the previous binding and marks the interface
`fallback`.
"""
from __future__ import annotations

import logging
import random
from concurrent.futures import Future
from typing import Any, Callable

from controller.core import interfaces
from controller.core.context import FeatureContext, Realization
from controller.features.personality import binding as bindings
from controller.features.personality import operations as ops
from controller.features.personality.binding import Binding, BindingTable
from controller.features.personality import checks
from controller.features.personality.checks import NoTarget, build_checks, reply_flows
from controller.features.personality.compile import connection_cookie, interface_zone
from controller.features.personality.expiry import Expiries
from controller.features.personality.records import Records
from controller.features.personality.run import (ALL_BITS, Awaiting, Run, compile_context,
                                                 interface_of)
from controller.pipeline import tables
from controller.pipeline.actions import TABLE, Output

LOG = logging.getLogger("hubshift.changes")

POLL_SECONDS = 0.25      # drain: how often the connection count is read


class Changes:
    """Every unfinished personality change (operation), advanced tick by tick."""

    def __init__(self, ctx: FeatureContext, table: BindingTable,
                 rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.table = table
        self.rng = rng or ctx.random
        self.records = Records(ctx.store, ctx.wallclock)
        self.runs: dict[str, Run] = {}
        self.expiries = Expiries(ctx.store, self.records, ctx.wallclock)
        self._scan_needed = True

    # ------------------------------------------------------------- loading
    def load(self) -> None:
        """Bindings as last realized (compiled once switches connect)."""
        for doc in self.store.list(bindings.KIND):
            iface = self.store.find(interfaces.KIND, doc.id)
            if iface is None:
                continue
            current, _ = bindings.load(self.store, doc.id, interface_of(iface))
            if current is not None:
                self.table.current[doc.id] = current
        self.expiries.load()

    def wake(self) -> None:
        """Operations were created: look at the store at the next tick."""
        self._scan_needed = True

    # ---------------------------------------------------------------- ticks
    def tick(self) -> None:
        if self.expiries.expire():
            self._scan_needed = True   # its operation starts in this same tick
        if self._scan_needed:
            self._scan_needed = False
            self._scan()
        for run in list(self.runs.values()):
            self._guarded(run, self._advance, run)

    def next_wakeup(self) -> float | None:
        """Seconds until something here needs the worker again (None: nothing)."""
        if self._scan_needed:
            return 0.0
        if self.runs:
            return POLL_SECONDS / 2
        return self.expiries.next_wakeup()

    def _guarded(self, run: Run, step: Callable, *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:  # never leave an operation stuck
            LOG.exception("operation %s", run.op_id)
            if run.op_id in self.runs:
                self._fail(run, f"internal error: {exc}")

    def _scan(self) -> None:
        for doc in self.store.list(ops.KIND):
            if doc.body["state"] in ops.FINAL or doc.id in self.runs:
                continue
            run = Run(doc.id, doc.body["interface_id"])
            if doc.body["state"] != "pending":
                self._log(run, doc.body["state"],
                          f"resumed in state {doc.body['state']} after a controller restart")
            self.runs[doc.id] = run

    def _advance(self, run: Run) -> None:
        if run.awaiting is not None:
            assert run.interface is not None
            state = self.ctx.realization([run.interface.dpid], run.awaiting.generation)
            if state is Realization.PENDING:
                return
            awaiting, run.awaiting = run.awaiting, None
            awaiting.then(state is Realization.DONE)
            return
        if not run.prepared and not self._prepare(run, self.records.op(run.op_id)):
            return
        op = self.records.op(run.op_id)
        if op["state"] == "draining":
            self._drain(run)
        elif op["state"] == "applying":
            self._apply(run)
        elif op["state"] == "verifying":
            self._verify(run)

    def _await(self, run: Run, generation: int, then: Callable[[bool], None]) -> None:
        run.awaiting = Awaiting(generation, then)

    # ---------------------------------------------------------------- steps
    def _prepare(self, run: Run, op: dict[str, Any]) -> bool:
        """Find what is there now, compile the target; True once ready for the state's step."""
        iface_doc = self.store.find(interfaces.KIND, run.iid)
        if iface_doc is None:
            self._fail(run, f"interface {run.iid} no longer exists")
            return False
        run.interface = interface_of(iface_doc)
        if not self.ctx.ready(run.interface.dpid):
            if not run.waiting_logged:
                self._log(run, op["state"], f"waiting for datapath {iface_doc.body['datapath']}")
                run.waiting_logged = True
            return False
        current, previous = bindings.load(self.store, run.iid, run.interface)
        if op["state"] == "verifying":
            # The new personality is realized and recorded; roll back to what it replaced.
            run.previous, run.target = previous, current
            self._await(run, self.table.bind(run.iid, current),
                        lambda ok: ok and self._resume_checks(run))
            return False
        run.previous = current
        if not self._prepare_target(run, op, current):
            return False
        if current is None or op["state"] == "applying":
            if current is None:
                self._log(run, "applying", "the interface had no personality: nothing to drain")
            self._set(run, "applying")
            run.prepared = True
            return True
        # Transition: refuse new connections, keep the established ones.
        self._await(run, self.table.bind(run.iid, current.in_transition()),
                    lambda ok: self._transitioned(run, current, ok))
        return False

    def _prepare_target(self, run: Run, op: dict[str, Any], current: Binding | None) -> bool:
        """The binding the operation moves to (None: no personality); False if it cannot."""
        target_id = op["to_personality_id"]
        if target_id is None:
            run.target = None
            return True
        doc = self.store.find("personality", target_id)
        if doc is None:
            self._fail(run, f"personality {target_id!r} no longer exists")
            return False
        epoch = 1 - (current.zone & 1) if current else 0
        assert run.interface is not None
        target = Binding(run.interface, doc.id, doc.revision, doc.body,
                         interface_zone(run.interface, epoch))
        try:  # compiled now, and kept by the binding: not again between drain end and realized
            target.flows(compile_context(self.ctx))
        except ValueError as exc:
            self._fail(run, f"personality {target_id!r} does not compile: {exc}")
            return False
        problem = self._prepare_tunnel(target)   # VPN: its port exists before any flow
        if problem:
            self._fail(run, f"personality {target_id!r}: {problem}; nothing was changed")
            return False
        run.target = target
        return True

    def _prepare_tunnel(self, binding: Binding) -> str | None:
        """Create the tunnel port `binding` needs now; None, or why it cannot be."""
        if binding.tunnel is None:
            return None
        others = [*self.table.current.values(), *self.held_bindings()]
        return bindings.tunnel_conflict(binding, others) or self.ctx.ensure_tunnel(binding.tunnel)

    def _transitioned(self, run: Run, current: Binding, ok: bool) -> None:
        if not ok:
            self.table.bind(run.iid, current)
            self._fail(run, "could not install the transition flows")
            return
        self.records.set_interface(run.iid, personality_state="transition")
        op = self.records.op(run.op_id)
        drain = op["drain"]
        run.drain_deadline = op.get("drain_deadline") or self.ctx.wallclock() + drain["max_seconds"]
        self._log(run, "transition", "new connections refused; established ones keep flowing")
        self._set(run, "draining", drain_deadline=run.drain_deadline,
                  message=f"draining until {drain['until']}, at most {drain['max_seconds']:g} s")
        run.prepared = True
        self._drain(run)

    def _drain(self, run: Run) -> None:
        now = self.ctx.clock()
        if now < run.next_poll or run.counting:
            return
        run.next_poll = now + POLL_SECONDS
        assert run.interface is not None and run.previous is not None
        cookie = connection_cookie(run.interface, run.previous.zone)
        run.counting = self.ctx.request(
            run.interface.dpid,
            lambda channel: channel.aggregate(tables.PERSONALITY_CONNECTIONS.id, cookie, ALL_BITS),
            lambda answer: self._guarded(run, self._counted, run, answer))
        # Not connected: no count for now; the deadline still runs at the next poll.

    def _counted(self, run: Run, answer: Future) -> None:
        run.counting = False
        if run.op_id not in self.runs or answer.exception() is not None:
            return  # finished meanwhile, or the switch went away
        op = self.records.op(run.op_id)
        if op["state"] != "draining":
            return
        count = answer.result().flows
        if count != op["connections"]:
            self.records.update(run.op_id, connections=count)
        drain = op["drain"]
        waited = self.ctx.wallclock() - (run.drain_deadline - drain["max_seconds"])
        if drain["until"] == "zero-connections" and count == 0:
            self._set(run, "applying", message=f"drained: no live connections after {waited:.1f} s")
        elif self.ctx.wallclock() >= run.drain_deadline:
            cut = (f"; {count} connection(s) still open are cut (the new personality "
                   "has no state for them)") if count else ""
            self._set(run, "applying", message=f"drain time of {drain['max_seconds']:g} s "
                                               f"is over{cut}")
        else:
            return
        run.drain_ended = self.ctx.clock()
        self._apply(run)

    def _apply(self, run: Run) -> None:
        started = run.drain_ended or self.ctx.clock()
        self._await(run, self.table.bind(run.iid, run.target),
                    lambda ok: self._applied(run, started) if ok else self._not_applied(run))

    def _not_applied(self, run: Run) -> None:
        self.table.bind(run.iid, run.previous)
        self.records.set_interface(run.iid, personality_state="active")
        self._fail(run, "the new personality could not be installed; the previous one stays")

    def _applied(self, run: Run, started: float) -> None:
        ms = (self.ctx.clock() - started) * 1000
        target = run.target
        checks = self.records.op(run.op_id)["health_checks"]
        with self.store.transaction():
            bindings.save(self.store, run.iid, target, run.previous)
            self.records.set_interface(
                run.iid, personality_id=target.personality_id if target else None,
                personality_revision=target.revision if target else None,
                personality_state="active")
            self._set(run, "verifying" if checks else "applying", applied_ms=round(ms, 3),
                      message=f"applied in one bundle: {ms:.1f} ms from drain end to realized")
        if checks:
            self._start_checks(run)
        else:
            self._succeed(run)

    # ---------------------------------------------------------- health checks
    def _resume_checks(self, run: Run) -> None:
        run.prepared = True
        self._start_checks(run)

    def _start_checks(self, run: Run) -> None:
        assert run.interface is not None
        op = self.records.op(run.op_id)
        policy = run.target.policy if run.target else None
        iface = self.store.get(interfaces.KIND, run.iid).body
        src_ip = (policy.ip_addresses[0] if policy and policy.ip_addresses
                  else (iface.get("ips") or [None])[0])
        if src_ip is None:
            self._rollback(run, "health checks need an address for the interface; it has none")
            return
        try:
            run.checks = build_checks(op["health_checks"], policy, run.interface, src_ip,
                                      self.ctx.view(), self.rng, self.ctx.clock())
        except NoTarget as exc:
            self._rollback(run, str(exc))
            return
        generation = self.table.set_extra(("probe", run.op_id), run.interface.dpid,
                                          reply_flows(run.op_id, run.checks))
        self._await(run, generation, lambda ok: self._checking(run))

    def _checking(self, run: Run) -> None:
        self._log(run, "verifying", "checking " + ", ".join(c.desc for c in run.checks))
        self._verify(run)

    def _verify(self, run: Run) -> None:
        if not run.checks:
            return
        assert run.interface is not None
        due = checks.due(run.checks, self.ctx.clock())
        if due.failure:
            self._rollback(run, due.failure)
            return
        for check in due.send:
            self.ctx.packet_out(run.interface.dpid, check.probe.frame, [Output(TABLE)],
                                in_port=run.interface.port)
        if due.passed:
            self._log(run, "verifying", "all health checks passed")
            self._succeed(run)

    def on_packet_in(self, dpid: int, data: bytes) -> bool:
        """A punted probe reply?  True if it was one (it goes no further)."""
        for run in list(self.runs.values()):
            if run.interface is None or run.interface.dpid != dpid or run.awaiting:
                continue
            reply = checks.reply(run.checks, data)
            if reply is None:
                continue
            if reply.failure:
                self._rollback(run, reply.failure)
            else:
                self._log(run, "verifying", f"health check {reply.check.desc} passed")
                if reply.check.reset is not None:
                    self.ctx.packet_out(dpid, reply.check.reset, [Output(TABLE)],
                                        in_port=run.interface.port)
            return True
        return False

    # --------------------------------------------------------------- endings
    def _succeed(self, run: Run) -> None:
        target = run.target
        iface = self.store.get(interfaces.KIND, run.iid).body
        fields = self.expiries.after_success(run.iid, iface, target, run.previous)
        with self.store.transaction():
            self.records.set_interface(run.iid, **fields)
            self._finish(run, "succeeded", None)
        if run.previous is not None and run.interface is not None \
                and (target is None or target.zone != run.previous.zone):
            # The zone given up holds the connections that were cut: forget them, so the
            # next change back to it starts clean.
            zone = run.previous.zone
            self.ctx.request(run.interface.dpid, lambda channel: channel.flush_zone(zone),
                             lambda answer: answer.exception() and LOG.warning(
                                 "%s: flushing zone %d: %s", run.iid, zone, answer.exception()))

    def _rollback(self, run: Run, reason: str) -> None:
        assert run.interface is not None
        self.table.set_extra(("probe", run.op_id), run.interface.dpid, None)
        self._await(run, self.table.bind(run.iid, run.previous),
                    lambda ok: self._rolled_back(run, reason, ok))

    def _rolled_back(self, run: Run, reason: str, ok: bool) -> None:
        with self.store.transaction():
            if not ok:
                self._finish(run, "failed", f"{reason}; the rollback could not be installed "
                                            "and is retried when the switch reconnects")
                return
            bindings.save(self.store, run.iid, run.previous, None)
            prev = run.previous
            self.records.set_interface(
                run.iid, personality_id=prev.personality_id if prev else None,
                personality_revision=prev.revision if prev else None,
                personality_state="fallback", expires_at=None)
            self._log(run, "rolled_back", f"rolled back: {reason}")
            self._finish(run, "rolled_back", reason)

    def _fail(self, run: Run, reason: str) -> None:
        self._log(run, "failed", reason)
        self._finish(run, "failed", reason)

    def _finish(self, run: Run, result: str, reason: str | None) -> None:
        if run.interface is not None:
            self.table.set_extra(("probe", run.op_id), run.interface.dpid, None)
        with self.store.transaction():
            extra = {"reason": reason} if reason is not None else {}
            self._set(run, result, result=result, finished_at=self.ctx.wallclock(),
                      message=None if result != "succeeded" else "change complete", **extra)
            self.records.release_interface(run.iid, run.op_id)
            op = self.records.op(run.op_id)
            self.ctx.journal("personality", run.iid, f"change {result}",
                             operation=run.op_id, frm=op["from_personality_id"],
                             to=op["to_personality_id"], reason=op["reason"])
        self.runs.pop(run.op_id, None)
        self.ctx.changed()   # what it held (its target, its rollback) is no longer wanted

    # -------------------------------------------------------------- queries
    def held_bindings(self) -> list[Binding]:
        """Bindings an unfinished operation may still install (its target, its rollback)."""
        return [b for run in self.runs.values() for b in (run.target, run.previous)
                if b is not None]

    # ------------------------------------------------------------- records
    def _set(self, run: Run, state: str, message: str | None = None, **fields: Any) -> None:
        self.records.set_state(run.op_id, state, message, **fields)

    def _log(self, run: Run, state: str, message: str) -> None:
        self.records.log(run.op_id, run.iid, state, message)
