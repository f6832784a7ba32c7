"""The personality switch coordinator: walks operations through their states.

Runs on the hub's worker thread only (`tick` after every batch of work,
`on_packet_in` for probe replies), so it changes hub state directly.  Each
step is written to the operation record before the next one starts; a
controller restarted mid-switch resumes from the record (see `_resume`).

    pending ─► transition ─► draining ─► applying ─► verifying ─► succeeded
                   (no personality yet: straight to applying)  └─► rolled_back
    any step that cannot go on ──────────────────────────────────► failed

Transition keeps the old personality's zone, addresses and routes but refuses
new connections both ways.  Draining counts the interface's live connections
with one aggregate-stats request per poll on `personality_connections`
(learned flows, one per connection; see `controller.features.personality.compile`),
so it works over OpenFlow alone.  What is still open when `max_seconds`
runs out is cut: the new personality uses the interface's other conntrack
zone and knows nothing of it.  Applying is one bundle.  Verifying injects
probes as the interface (packet-out through its own pipeline) and punts the
replies; a check that has no answer by its deadline rolls back to the
previous binding and marks the interface `fallback`.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller import probes
from controller.core import interfaces
from controller.features.fabric.compile import subnet_of
from controller.core.documents import parse_duration
from controller.features.personality.compile import (Interface, PersonalityPolicy, compile_personality,
                                            connection_cookie, decode_connection, interface_zone,
                                            probe_cookie, HOOK_L2)
from controller.features.personality import binding as bindings
from controller.features.personality import operations as ops
from controller.features.personality.binding import Binding
from controller.pipeline import ofctl, tables
from controller.pipeline.actions import TABLE, Output
from controller.pipeline.flowspec import flow
from controller.reconcile.flows import diff as flow_diff
from controller.store import Document

if TYPE_CHECKING:
    from controller.core.hub import Hub

LOG = logging.getLogger("hubshift.switcher")

POLL_SECONDS = 0.25      # drain: how often the connection count is read
PROBE_RESEND = 0.5       # verifying: an unanswered probe is sent again this often
ALL_BITS = (1 << 64) - 1


@dataclass
class Check:
    desc: str
    probe: Any               # controller.probes.Probe
    timeout: float
    deadline: float
    reset: bytes | None = None   # tcp: the RST that closes the probe's half-open connection
    passed: bool = False
    sent_at: float = -1.0


@dataclass
class Run:
    """In-memory progress of one operation (the record has the rest)."""
    op_id: str
    iid: str
    interface: Interface | None = None
    previous: Binding | None = None      # what the interface had before (rollback target)
    target: Binding | None = None
    drain_deadline: float = 0.0          # wallclock
    next_poll: float = 0.0
    drain_ended: float = 0.0
    checks: list[Check] = field(default_factory=list)
    prepared: bool = False               # target compiled, previous known (see _prepare)
    waiting_logged: bool = False


class Switcher:
    def __init__(self, hub: "Hub", rng: random.Random | None = None) -> None:
        self.hub = hub
        self.store = hub.store
        self.rng = rng or random.Random()
        self.runs: dict[str, Run] = {}
        self.expiries: dict[str, float] = {}   # interface id -> wallclock deadline
        self._scan_needed = True

    # ------------------------------------------------------------- loading
    def load(self) -> None:
        """Bindings as last realized (the hub compiles them once switches connect)."""
        for doc in self.store.list(bindings.KIND):
            iface = self.store.find(interfaces.KIND, doc.id)
            if iface is None:
                continue
            current, _ = bindings.load(self.store, doc.id, _interface(iface))
            if current is not None:
                self.hub.bindings[doc.id] = current
        for doc in self.store.list(interfaces.KIND):
            if doc.body.get("expires_at"):
                self.expiries[doc.id] = doc.body["expires_at"]

    def wake(self) -> None:
        """Operations were created: look at the store at the next tick."""
        self._scan_needed = True

    # ---------------------------------------------------------------- ticks
    def tick(self) -> None:
        if self._scan_needed:
            self._scan_needed = False
            self._scan()
        for run in list(self.runs.values()):
            try:
                self._step(run)
            except Exception as exc:  # never leave an operation stuck
                LOG.exception("operation %s", run.op_id)
                self._fail(run, f"internal error: {exc}")
        self._expire()

    def next_wakeup(self) -> float | None:
        """Seconds until something here needs the worker again (None: nothing)."""
        if self.runs:
            return POLL_SECONDS / 2
        if self.expiries:
            return max(0.0, min(self.expiries.values()) - self.hub.wallclock())
        return None

    def _scan(self) -> None:
        for doc in self.store.list(ops.KIND):
            if doc.body["state"] in ops.FINAL or doc.id in self.runs:
                continue
            run = Run(doc.id, doc.body["interface_id"])
            if doc.body["state"] != "pending":
                self._log(run, doc.body["state"],
                          f"resumed in state {doc.body['state']} after a controller restart")
            self.runs[doc.id] = run

    # ---------------------------------------------------------------- steps
    def _op(self, run: Run) -> dict[str, Any]:
        return self.store.get(ops.KIND, run.op_id).body

    def _step(self, run: Run) -> None:
        op = self._op(run)
        state = op["state"]
        if not run.prepared:
            if not self._prepare(run, op):
                return
            run.prepared = True
            op = self._op(run)
            state = op["state"]
        if state == "draining":
            self._drain(run, op)
        elif state == "applying":
            self._apply(run, op)
        elif state == "verifying":
            self._verify(run, op)

    def _prepare(self, run: Run, op: dict[str, Any]) -> bool:
        """Compile the target, find what is there now; enter transition if there is something."""
        iface_doc = self.store.find(interfaces.KIND, run.iid)
        if iface_doc is None:
            self._fail(run, f"interface {run.iid} no longer exists")
            return False
        run.interface = _interface(iface_doc)
        if not self.hub.ready(run.interface.dpid):
            if not run.waiting_logged:
                self._log(run, op["state"], f"waiting for datapath {iface_doc.body['datapath']}")
                run.waiting_logged = True
            return False
        current, previous = bindings.load(self.store, run.iid, run.interface)
        resumed_after_apply = op["state"] == "verifying"
        if resumed_after_apply:
            # The new personality is realized and recorded; roll back to what it replaced.
            run.previous, run.target = previous, current
            self.hub.bind(run.iid, current)
            if not self.hub.realize(run.interface.dpid):
                return False
            run.prepared = True
            self._start_checks(run, op)
            return False
        run.previous = current
        target_id = op["to_personality_id"]
        if target_id is None:
            run.target = None
        else:
            doc = self.store.find("personality", target_id)
            if doc is None:
                self._fail(run, f"personality {target_id!r} no longer exists")
                return False
            epoch = 1 - (current.zone & 1) if current else 0
            zone = interface_zone(run.interface, epoch)
            missing = unsupported(doc.body)
            if missing:
                self._fail(run, f"personality {target_id!r} uses {missing}, which this "
                                "controller cannot enforce yet; nothing was changed")
                return False
            target = Binding(run.interface, doc.id, doc.revision, doc.body, zone)
            try:  # compiled now, and kept by the binding: not again between drain end and realized
                target.flows(self.hub.compile_context())
            except ValueError as exc:
                self._fail(run, f"personality {target_id!r} does not compile: {exc}")
                return False
            problem = self.hub.prepare_tunnel(target)   # VPN: its port exists before any flow
            if problem:
                self._fail(run, f"personality {target_id!r}: {problem}; nothing was changed")
                return False
            run.target = target
        if current is None or op["state"] == "applying":
            if current is None:
                self._log(run, "applying", "the interface had no personality: nothing to drain")
            self._set(run, "applying")
            return True
        # Transition: refuse new connections, keep the established ones.
        self.hub.bind(run.iid, current.in_transition())
        if not self.hub.realize(run.interface.dpid):
            self.hub.bind(run.iid, current)
            self.hub.realize(run.interface.dpid)
            self._fail(run, "could not install the transition flows")
            return False
        self._set_interface(run.iid, personality_state="transition")
        now = self.hub.wallclock()
        drain = op["drain"]
        run.drain_deadline = op.get("drain_deadline") or now + drain["max_seconds"]
        self._log(run, "transition", "new connections refused; established ones keep flowing")
        self._set(run, "draining", drain_deadline=run.drain_deadline,
                  message=f"draining until {drain['until']}, at most {drain['max_seconds']:g} s")
        return True

    def _drain(self, run: Run, op: dict[str, Any]) -> None:
        now = self.hub.clock()
        if now < run.next_poll:
            return
        run.next_poll = now + POLL_SECONDS
        assert run.interface is not None and run.previous is not None
        count = self.connection_count(run.interface, run.previous.zone)
        if count is None:
            return  # switch gone for now; the deadline still runs
        if count != op["connections"]:
            self._update(run, connections=count)
        waited = self.hub.wallclock() - (run.drain_deadline - op["drain"]["max_seconds"])
        if op["drain"]["until"] == "zero-connections" and count == 0:
            self._set(run, "applying", message=f"drained: no live connections after {waited:.1f} s")
        elif self.hub.wallclock() >= run.drain_deadline:
            cut = (f"; {count} connection(s) still open are cut (the new personality "
                   "has no state for them)") if count else ""
            self._set(run, "applying", message=f"drain time of {op['drain']['max_seconds']:g} s "
                                               f"is over{cut}")
        else:
            return
        run.drain_ended = self.hub.clock()
        self._apply(run, self._op(run))

    def _apply(self, run: Run, op: dict[str, Any]) -> None:
        assert run.interface is not None
        dpid = run.interface.dpid
        started = run.drain_ended or self.hub.clock()
        self.hub.bind(run.iid, run.target)
        if not self.hub.realize(dpid):
            self.hub.bind(run.iid, run.previous)
            self.hub.realize(dpid)
            self._set_interface(run.iid, personality_state="active")
            self._fail(run, "the new personality could not be installed; the previous one stays")
            return
        ms = (self.hub.clock() - started) * 1000
        target = run.target
        with self.store.transaction():
            bindings.save(self.store, run.iid, target, run.previous)
            self._set_interface(run.iid, personality_id=target.personality_id if target else None,
                                personality_revision=target.revision if target else None,
                                personality_state="active")
            self._set(run, "verifying" if op["health_checks"] else "applying",
                      applied_ms=round(ms, 3),
                      message=f"applied in one bundle: {ms:.1f} ms from drain end to realized")
        if op["health_checks"]:
            self._start_checks(run, self._op(run))
        else:
            self._succeed(run)

    # ---------------------------------------------------------- health checks
    def _start_checks(self, run: Run, op: dict[str, Any]) -> None:
        assert run.interface is not None
        target = run.target
        policy = target.policy if target else None
        iface = self.store.get(interfaces.KIND, run.iid).body
        src_ip = (policy.ip_addresses[0] if policy and policy.ip_addresses
                  else (iface.get("ips") or [None])[0])
        if src_ip is None:
            self._rollback(run, "health checks need an address for the interface; it has none")
            return
        now = self.hub.clock()
        run.checks = []
        for spec in op["health_checks"]:
            for target_ip in self._check_targets(spec, policy, src_ip):
                if target_ip is None:
                    self._rollback(run, f"{spec['type']} check: no target (no subnet gateway "
                                        "or DNS server known)")
                    return
                probe, reset = self._probe(spec, run.interface, src_ip, target_ip)
                desc = f"{spec['type']} {target_ip}" + (f":{spec['port']}" if spec.get("port") else "")
                run.checks.append(Check(desc, probe, spec["timeout_seconds"],
                                        now + spec["timeout_seconds"], reset))
        flows = [flow(tables.L2.id, HOOK_L2 + 20, c.probe.reply_match, [Output.controller()],
                      cookie=probe_cookie(run.op_id)) for c in run.checks]
        self.hub.set_extra(("probe", run.op_id), run.interface.dpid, tuple(flows))
        self.hub.realize(run.interface.dpid)
        self._log(run, "verifying", "checking " + ", ".join(c.desc for c in run.checks))
        self._verify(run, op)

    def _check_targets(self, spec: dict[str, Any], policy: PersonalityPolicy | None,
                       src_ip: str) -> list[str | None]:
        if spec.get("target"):
            return [spec["target"]]
        if spec["type"] == "dns":
            return list(policy.dns_servers) if policy and policy.dns_servers else [None]
        subnet = subnet_of(src_ip, self.hub.subnets)
        return [str(subnet.gateway) if subnet else None]

    def _probe(self, spec: dict[str, Any], iface: Interface, src_ip: str, dst_ip: str):
        dst_mac = self.hub.next_mac(src_ip, dst_ip)
        sport = self.rng.randrange(33000, 60000)
        if spec["type"] in ("gateway", "ping"):
            return probes.ping_probe(iface.mac, src_ip, dst_mac, dst_ip,
                                     self.rng.randrange(1, 0xFFFF), 1), None
        if spec["type"] == "dns":
            return probes.dns_probe(iface.mac, src_ip, dst_mac, dst_ip, sport,
                                    self.rng.randrange(1, 0xFFFF)), None
        isn = self.rng.randrange(1, 2**31)
        return (probes.tcp_probe(iface.mac, src_ip, dst_mac, dst_ip, spec["port"], sport, isn),
                probes.tcp_reset(iface.mac, src_ip, dst_mac, dst_ip, sport, spec["port"], isn + 1))

    def _verify(self, run: Run, op: dict[str, Any]) -> None:
        if not run.checks:
            return
        now = self.hub.clock()
        for check in run.checks:
            if check.passed:
                continue
            if now > check.deadline:
                self._rollback(run, f"health check {check.desc} failed: no answer within "
                                    f"{check.timeout:g} s")
                return
            if now - check.sent_at >= PROBE_RESEND:
                check.sent_at = now
                self.hub.packet_out(run.interface.dpid, check.probe.frame, [Output(TABLE)],
                                    in_port=run.interface.port)
        if all(c.passed for c in run.checks):
            self._log(run, "verifying", "all health checks passed")
            self._succeed(run)

    def on_packet_in(self, dpid: int, data: bytes) -> bool:
        """A punted probe reply?  True if it was one (the hub then drops it)."""
        for run in list(self.runs.values()):
            if run.interface is None or run.interface.dpid != dpid:
                continue
            for check in run.checks:
                if check.passed:
                    continue
                if check.probe.is_reply(data):
                    check.passed = True
                    self._log(run, "verifying", f"health check {check.desc} passed")
                    if check.reset is not None:
                        self.hub.packet_out(dpid, check.reset, [Output(TABLE)],
                                            in_port=run.interface.port)
                    return True
                if check.probe.kind == "tcp" and check.probe.refused(data):
                    self._rollback(run, f"health check {check.desc} failed: connection refused")
                    return True
        return False

    # --------------------------------------------------------------- endings
    def _succeed(self, run: Run) -> None:
        target = run.target
        iface = self.store.get(interfaces.KIND, run.iid).body
        fields: dict[str, Any] = {"personality_state": "active"}
        expires = target.body.get("expires_after") if target else None
        if target is not None and expires is None:
            fields.update(default_personality_id=target.personality_id,
                          expires_at=None, expires_to=None)
        elif expires is not None:
            back = iface.get("default_personality_id") or (
                run.previous.personality_id if run.previous else None)
            fields.update(expires_at=self.hub.wallclock() + _seconds(expires), expires_to=back)
            self.expiries[run.iid] = fields["expires_at"]
        with self.store.transaction():
            self._set_interface(run.iid, **fields)
            self._finish(run, "succeeded", None)

    def _rollback(self, run: Run, reason: str) -> None:
        assert run.interface is not None
        self.hub.set_extra(("probe", run.op_id), run.interface.dpid, None)
        self.hub.bind(run.iid, run.previous)
        ok = self.hub.realize(run.interface.dpid)
        with self.store.transaction():
            if ok:
                bindings.save(self.store, run.iid, run.previous, None)
                prev = run.previous
                self._set_interface(run.iid, personality_id=prev.personality_id if prev else None,
                                    personality_revision=prev.revision if prev else None,
                                    personality_state="fallback", expires_at=None)
                self._log(run, "rolled_back", f"rolled back: {reason}")
                self._finish(run, "rolled_back", reason)
            else:
                self._finish(run, "failed", f"{reason}; the rollback could not be installed "
                                            "and is retried when the switch reconnects")

    def _fail(self, run: Run, reason: str) -> None:
        self._log(run, "failed", reason)
        self._finish(run, "failed", reason)

    def _finish(self, run: Run, result: str, reason: str | None) -> None:
        if run.interface is not None:
            self.hub.set_extra(("probe", run.op_id), run.interface.dpid, None)
            self.hub.realize(run.interface.dpid)
        now = self.hub.wallclock()
        with self.store.transaction():
            extra = {"reason": reason} if reason is not None else {}
            self._set(run, result, result=result, finished_at=now,
                      message=None if result != "succeeded" else "switch complete", **extra)
            iface = self.store.find(interfaces.KIND, run.iid)
            if iface is not None and iface.body.get("operation_id") == run.op_id:
                self.store.put(interfaces.KIND, run.iid, {**iface.body, "operation_id": None})
            op = self.store.get(ops.KIND, run.op_id).body
            self.hub.journal("personality", run.iid, f"switch {result}",
                             operation=run.op_id, frm=op["from_personality_id"],
                             to=op["to_personality_id"], reason=op["reason"])
        self.runs.pop(run.op_id, None)

    # ----------------------------------------------------------------- expiry
    def _expire(self) -> None:
        """Temporary personalities past their time go back (one operation each)."""
        now = self.hub.wallclock()
        for iid, at in list(self.expiries.items()):
            if at > now:
                continue
            doc = self.store.find(interfaces.KIND, iid)
            if doc is None or doc.body.get("expires_at") != at:
                del self.expiries[iid]   # replaced or cancelled meanwhile
                continue
            try:
                ops.create(self.store, iid, doc.body.get("expires_to"), kind="expiry", now=now,
                           drain=ops.Drain(max_seconds=0, until="timeout"),
                           reason=f"personality {doc.body.get('personality_id')!r} expired")
            except ops.Busy:
                continue   # tried again at the next tick, once that operation is done
            del self.expiries[iid]
            self._set_interface(iid, expires_at=None)
            self._scan_needed = True

    # -------------------------------------------------------------- queries
    def held_bindings(self) -> list[Binding]:
        """Bindings an unfinished operation may still install (its target, its rollback)."""
        return [b for run in self.runs.values() for b in (run.target, run.previous)
                if b is not None]

    def connection_count(self, iface: Interface, zone: int) -> int | None:
        channel = self.hub.channels.get(iface.dpid)
        if channel is None:
            return None
        count, _, _ = channel.aggregate(tables.PERSONALITY_CONNECTIONS.id,
                                        connection_cookie(iface, zone), ALL_BITS)
        return count

    def connections(self, iface: Interface, zone: int) -> list[dict[str, Any]]:
        channel = self.hub.channels.get(iface.dpid)
        if channel is None:
            return []
        flows = channel.flow_stats(tables.PERSONALITY_CONNECTIONS.id,
                                   connection_cookie(iface, zone), ALL_BITS)
        return [decode_connection(dict(f.match)) for f in flows]

    def dry_run(self, iid: str, personality_id: str) -> dict[str, Any]:
        """What a switch would change on the switch, and which connections it would cut."""
        iface_doc = self.store.find(interfaces.KIND, iid)
        if iface_doc is None:
            raise LookupError(f"no interface {iid!r}")
        doc = self.store.find("personality", personality_id)
        if doc is None:
            raise LookupError(f"no personality {personality_id!r}")
        missing = unsupported(doc.body)
        if missing:
            raise ValueError(f"personality {personality_id!r} uses {missing}, which this "
                             "controller cannot enforce yet")
        iface = _interface(iface_doc)
        current = self.hub.bindings.get(iid)
        epoch = 1 - (current.zone & 1) if current else 0
        policy = PersonalityPolicy.from_body(doc.id, doc.body, doc.revision)
        ctx = self.hub.compile_context()
        new = compile_personality(iface, policy, interface_zone(iface, epoch), ctx)
        old = current.flows(ctx) if current else ()
        change = flow_diff(new, old)
        conns = self.connections(iface, current.zone) if current else []
        return {"interface_id": iid, "from_personality_id": current.personality_id if current else None,
                "to_personality_id": personality_id,
                "flows": {"add": [ofctl.render_flow(f) for f in change.add],
                          "delete": [ofctl.render_flow(f) for f in change.delete]},
                "connections": conns, "would_cut": len(conns)}

    # ------------------------------------------------------------- records
    def _set(self, run: Run, state: str, message: str | None = None, **fields: Any) -> None:
        doc = self.store.get(ops.KIND, run.op_id)
        body = {**doc.body, **fields, "state": state}
        if message:
            body["log"] = _append(body["log"], self.hub.wallclock(), state, message)
        self.store.put(ops.KIND, run.op_id, body)

    def _update(self, run: Run, **fields: Any) -> None:
        doc = self.store.get(ops.KIND, run.op_id)
        self.store.put(ops.KIND, run.op_id, {**doc.body, **fields})

    def _log(self, run: Run, state: str, message: str) -> None:
        doc = self.store.get(ops.KIND, run.op_id)
        self.store.put(ops.KIND, run.op_id,
                       {**doc.body, "log": _append(doc.body["log"], self.hub.wallclock(),
                                                   state, message)})
        LOG.info("%s %s: %s", run.op_id, run.iid, message)

    def _set_interface(self, iid: str, **fields: Any) -> None:
        doc = self.store.get(interfaces.KIND, iid)
        self.store.put(interfaces.KIND, iid, {**doc.body, **fields})


# Personality sections stored and validated but not realized in flows yet.  A
# switch to a personality using one is refused rather than half-applied.
NOT_ENFORCED: tuple[str, ...] = ()


def unsupported(body: dict[str, Any]) -> str | None:
    used = [k for k in NOT_ENFORCED if body.get(k)]
    return " and ".join(used) or None


def _append(log: list, at: float, state: str, message: str) -> list:
    return (log + [{"at": at, "state": state, "message": message}])[-ops.LOG_MAX:]


def _interface(doc: Document) -> Interface:
    return Interface(int(doc.body["datapath"], 16), doc.body["port"], doc.body["mac"])


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float(parse_duration(value))
