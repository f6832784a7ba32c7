"""The shadow instance manager: the hub's end of the agent channel, on the worker.

Slots (``shadow-slot``, written by REST) run agents; this module keeps what
each agent does (``shadow-slot-state``) and the instances of each appliance
(``shadow-state``), and is their only writer.  Per slot (docs/shadow-agent.md,
"What the hub's end does"):

* HELLO -> ACK, the slot is alive (its agent's address noted); a HELLO from a
  slot whose instance was ready means the agent restarted: the instance failed.
  (A HELLO while launching only sends the order again: nothing ran yet.)
* An enabled manifest gets ``shadow_instance_count`` instances (more while the
  adaptive mode added some on load: `tuning.wanted`), each on a free alive
  slot (slot ids in order, a slot whose last instance failed last): LAUNCH,
  every part, from 1 s doubling until READY, FAILED or a HEARTBEAT naming it.
* HEARTBEAT records the load, the profiles' figures (``metrics``) and the
  copies dropped at the slot; none for `MISS_LIMIT` -> the slot failed, its
  instance failed and replaced from a free alive slot.  FAILED -> the same.
* Fewer instances wanted (shrunk, disabled, deleted) -> the newest stop: STOP
  retransmitted until a HEARTBEAT that does not name it, then the slot is free.
  A heartbeat naming an instance the slot should not run gets a STOP too.
* FINDINGS -> ACK(its counter); each finding stored once per (slot, seq, index)
  as ``shadow-finding``, journaled and counted, after `remedy` decided what it
  does (the feature's remediation: an alert, or a block); a finding naming a
  source may hold it (sample and hold, `tuning.Tuning.hold`).

The records and their writes are `states.ShadowRecords`; the adaptive mode
(percentage, holds, scaling) is `tuning.Tuning`, run from `tick`.

Everything it needs is in the store (counters and the epoch last sent with each
slot's state), so a restarted hub resumes: an alive slot gets a fresh miss
limit, launches and stops in flight are sent again under the new epoch.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from controller.agents.channel import MAX_ID
from controller.agents.shadow import protocol as p
from controller.agents.shadow.orders import LaunchOrder, launch_parts
from controller.core.interfaces import KIND as INTERFACE
from controller.features.shadow import findings
from controller.features.shadow.adaptive import host_load
from controller.features.shadow.agentd import AgentLink, AgentMetrics, Port, next_epoch
from controller.features.shadow.counting import Tally
from controller.features.shadow.document import SLOT_STATE, STATE, Appliance, Slot
from controller.features.shadow.records import (ACTIVE, FAILED, FREE, INSTANCE_STATES, LAUNCHING,
                                                READY, STOPPED, STOPPING, AgentChannel, Finding,
                                                Instance, Load, ShadowState, SlotState)
from controller.features.shadow.states import ShadowRecords, production_addresses, read_records
from controller.features.shadow.tuning import Tuning, wanted

LOG = logging.getLogger("hubshift.shadows")
MISS_LIMIT = 3.0                  # seconds without a heartbeat: the agent is gone
RESTART_GRACE = 15.0              # after a restart: the switches reconnect first
FIRST_RETRY, MAX_RETRY = 1.0, 16.0


@dataclass
class _Retry:
    """When a slot's LAUNCH or STOP goes again, and the wait after that."""
    at: float
    wait: float = FIRST_RETRY


class ShadowManager(ShadowRecords):
    def __init__(self, ctx, remedy: Callable[[Finding], Finding] = lambda f: f,
                 host_load: Callable[[], float] = host_load) -> None:
        self.ctx = ctx
        self.remedy = remedy                      # what a finding does (remediation)
        self.tuning = Tuning(ctx, self._store_state, lambda: self._free_slot() is not None,
                             host_load)           # the adaptive mode
        self.metrics = AgentMetrics(ctx.registry)
        self.appliances: dict[str, Appliance] = {}
        self.slots: dict[str, Slot] = {}
        self.slot_states: dict[str, SlotState] = {}
        self.states: dict[str, ShadowState] = {}
        self.heard: dict[str, float] = {}         # slot -> monotonic time of its last message
        self.retry: dict[str, _Retry] = {}
        self.failed_on: set[str] = set()          # slots whose last instance failed: taken last
        self.epoch = 0
        self.link = AgentLink(ctx, self.metrics, self._key_of, self.port_of, self._epoch_ok)

    # ------------------------------------------------------------ loading
    def load(self, appliances: dict[str, Appliance], slots: dict[str, Slot]) -> None:
        store = self.ctx.store
        self.epoch = self.link.epoch = next_epoch(store)
        self.slot_states = read_records(store, SLOT_STATE, SlotState)
        self.states = read_records(store, STATE, ShadowState)
        self.link.receiver.counters = {sid: st.agent.counter for sid, st in self.slot_states.items()
                                       if st.agent is not None}
        mono = self.ctx.clock()
        for sid, st in self.slot_states.items():
            if st.alive:     # the switches reconnect first: heartbeats resume within the grace
                self.heard[sid] = mono + RESTART_GRACE
            if st.state in (LAUNCHING, STOPPING):
                self.retry[sid] = _Retry(mono)
        self.reload(appliances, slots)

    def reload(self, appliances: dict[str, Appliance], slots: dict[str, Slot]) -> None:
        """The manifests or slots changed: slots gone are forgotten, then instances assigned."""
        self.appliances, self.slots = appliances, slots
        for sid in [s for s in self.slot_states if s not in slots]:
            st = self.slot_states.pop(sid)
            if st.state in ACTIVE and st.appliance_id and st.instance_id:
                self._end(st.appliance_id, st.instance_id, FAILED, "its slot was removed")
            self.ctx.store.delete(SLOT_STATE, sid)
            for table in (self.heard, self.retry, self.link.receiver.counters):
                table.pop(sid, None)
        self.assign()

    # ------------------------------------------------------------ reads
    def _key_of(self, sid: str) -> str | None:
        slot = self.slots.get(sid)
        return slot.key if slot else None

    def port_of(self, sid: str) -> Port | None:
        slot = self.slots.get(sid)
        doc = self.ctx.store.find(INTERFACE, slot.interface_id) if slot else None
        if doc is None:
            return None
        b = doc.body
        return Port(int(b["datapath"], 16), int(b["port"]), str(b["mac"]).lower(),
                    tuple(b.get("ips") or ()))

    def _epoch_ok(self, sid: str, epoch: int, type_: p.Type) -> bool:
        if type_ == p.Type.HELLO or epoch == self.epoch:
            return True
        st = self.slot_states.get(sid)
        return epoch != 0 and st is not None and st.agent is not None and st.agent.epoch == epoch

    # ------------------------------------------------------------ assignment
    def assign(self) -> None:
        """Start and stop instances until each appliance runs what it asks for."""
        for app_id in sorted({*self.appliances, *self.states}):
            app = self.appliances.get(app_id)
            want = wanted(app, self.states.get(app_id))
            active = sorted((i for i in self.instances(app_id) if i.state in ACTIVE),
                            key=lambda i: i.ordinal or 0)
            for extra in active[want:]:
                self._end(app_id, extra.id, STOPPED, "no longer wanted")
            for _ in range(want - len(active)):
                sid = self._free_slot()
                if sid is None:
                    break
                self._launch(app_id, sid)
            if app is None and not any(i.state in ACTIVE for i in self.instances(app_id)):
                self.states.pop(app_id, None)
                if self.ctx.store.find(STATE, app_id) is not None:
                    self.ctx.store.delete(STATE, app_id)
        self.publish()

    def _free_slot(self) -> str | None:
        order = sorted(self.slots, key=lambda sid: (sid in self.failed_on, sid))
        return next((sid for sid in order if (st := self.slot(sid)).alive
                     and st.state == FREE and self.port_of(sid) is not None), None)

    def _launch(self, app_id: str, sid: str) -> None:
        state = self.states.get(app_id) or ShadowState()
        n = state.launched + 1
        iid = f"{app_id[:MAX_ID - 12]}-{n}"
        taken = {i.ordinal for i in state.instances if i.state in ACTIVE}
        ordinal = next(k for k in range(len(taken) + 1) if k not in taken)
        now = self.ctx.wallclock()
        instance = Instance(id=iid, slot_id=sid, state=LAUNCHING, appliance_id=app_id,
                            ordinal=ordinal, since=now)
        self._put_state(app_id, [*state.instances, instance], launched=n)
        self._put_slot(sid, state=LAUNCHING, appliance_id=app_id, instance_id=iid)
        self.ctx.journal("shadow", app_id, f"instance {iid} launching on slot {sid}",
                         instance_id=iid, slot_id=sid)
        self.retry[sid] = _Retry(self.ctx.clock())
        self._resend(sid)
        self.ctx.changed()

    def _end(self, app_id: str, instance_id: str, state: str, reason: str) -> None:
        """An instance failed or stopped; its slot is free, or stopping it if it may run."""
        instance = self._set_instance(app_id, instance_id, state=state, reason=reason,
                                      since=self.ctx.wallclock())
        sid = instance.slot_id if instance else None
        st = self.slot_states.get(sid) if sid else None
        if sid is not None and state == FAILED:
            self.failed_on.add(sid)
        if st is not None and st.instance_id == instance_id and st.state in ACTIVE:
            if state == STOPPED and st.alive:
                self._stop(sid, instance_id)
            else:
                self.retry.pop(sid, None)
                self._put_slot(sid, state=FREE if st.alive else FAILED, appliance_id=None,
                               instance_id=None)
        self.ctx.journal("shadow", app_id, f"instance {instance_id} {state}: {reason}",
                         instance_id=instance_id, slot_id=sid, state=state, reason=reason)
        self.ctx.changed()

    def _stop(self, sid: str, instance_id: str) -> None:
        self._put_slot(sid, state=STOPPING, instance_id=instance_id)
        self.retry[sid] = _Retry(self.ctx.clock())
        self._resend(sid)

    def _freed(self, sid: str) -> None:
        self.retry.pop(sid, None)
        self._put_slot(sid, state=FREE, appliance_id=None, instance_id=None)
        self.ctx.journal("shadow", sid, "shadow slot free", slot_id=sid)

    # ------------------------------------------------------------ out
    def _send(self, sid: str, body: p.Body) -> None:
        st = self.slot(sid)
        if st.agent is None or not self.link.send(sid, st.agent.ip, st.agent.port, body):
            return
        if st.agent.epoch != self.epoch:
            self._put_slot(sid, agent=st.agent.model_copy(update={"epoch": self.epoch}))

    def _resend(self, sid: str) -> None:
        """Send the slot's pending LAUNCH (every part) or STOP, and wait longer next time."""
        st, retry = self.slot(sid), self.retry.get(sid)
        order = self._order(st) if st.state == LAUNCHING else None
        if retry is None or (order is None and st.state != STOPPING):
            self.retry.pop(sid, None)
            return
        for body in (launch_parts(order, sid) if order else [p.Stop(st.instance_id)]):
            self._send(sid, body)
        retry.at, retry.wait = self.ctx.clock() + retry.wait, min(retry.wait * 2, MAX_RETRY)

    def _order(self, st: SlotState) -> LaunchOrder | None:
        app = self.appliances.get(st.appliance_id or "")
        if app is None or st.instance_id is None:
            return None
        addresses, gateway = production_addresses(self.ctx, app)
        settings = app.profiles.model_dump(mode="json") if app.profiles else {}
        profiles = {name: settings.get(name) or {} for name in app.shadowing.shadow_analysis_profiles}
        return LaunchOrder(st.instance_id, app.appliance_image, addresses, gateway, profiles)

    # ------------------------------------------------------------ in
    def on_packet_in(self, punt) -> None:
        heard = self.link.receive(punt)
        if heard is None or heard.msg.slot not in self.slots:
            return
        sid, msg = heard.msg.slot, heard.msg
        self.heard[sid] = self.ctx.clock()
        st = self.slot(sid)
        epoch = st.agent.epoch if st.agent else 0
        self._put_slot(sid, agent=AgentChannel(ip=heard.ip, port=heard.port, counter=msg.counter,
                                               epoch=epoch))
        handler = {p.Hello: self._hello, p.Ready: self._ready, p.Heartbeat: self._heartbeat,
                   p.Findings: self._findings, p.Failed: self._failed}.get(type(msg.body))
        if handler is not None:
            handler(sid, msg)
        self.assign()

    def _hello(self, sid: str, msg: p.Message) -> None:
        self._send(sid, p.Ack(msg.counter))
        st = self.slot(sid)
        if not st.alive:
            self.ctx.journal("shadow", sid, "shadow agent connected", slot_id=sid,
                             epoch=self.epoch)
        st = self._put_slot(sid, alive=True, profiles=list(msg.body.profiles))
        if st.state == LAUNCHING:
            self.retry[sid] = _Retry(self.ctx.clock())
            self._resend(sid)
        elif st.state == READY and st.appliance_id and st.instance_id:
            self._end(st.appliance_id, st.instance_id, FAILED, "its agent restarted")
        elif st.state != FREE:
            self._freed(sid)

    def _ready(self, sid: str, msg: p.Message) -> None:
        st = self.slot(sid)
        if st.state == LAUNCHING and msg.body.instance_id == st.instance_id:
            self._now_ready(sid, st)
        elif msg.body.instance_id != st.instance_id or st.state == STOPPING:
            self._unwanted(sid, msg.body.instance_id)

    def _now_ready(self, sid: str, st: SlotState) -> None:
        self.retry.pop(sid, None)
        self.failed_on.discard(sid)
        self._put_slot(sid, state=READY)
        self._set_instance(st.appliance_id, st.instance_id, state=READY,
                           since=self.ctx.wallclock())
        self.ctx.journal("shadow", st.appliance_id, f"instance {st.instance_id} ready on slot "
                         f"{sid}", instance_id=st.instance_id, slot_id=sid)
        self.ctx.changed()

    def _unwanted(self, sid: str, instance_id: str) -> None:
        """The agent runs an instance the slot should not: STOP it (unless a LAUNCH of
        another is on its way, which stops it anyway)."""
        st = self.slot(sid)
        if st.state not in (LAUNCHING, READY) and not (st.state == STOPPING
                                                        and st.instance_id == instance_id):
            self._stop(sid, instance_id)

    def _heartbeat(self, sid: str, msg: p.Message) -> None:
        hb, now = msg.body, self.ctx.wallclock()
        load = Load(pps=hb.pps, drops=hb.drops, lag_ms=hb.lag_ms, cpu_percent=hb.cpu_percent)
        st = self.slot(sid)
        st = self._put_slot(sid, alive=True, heartbeat_at=now, load=load,
                            state=FREE if st.state == FAILED else st.state)
        if hb.instance_id == st.instance_id and st.state in ACTIVE:
            if st.state == LAUNCHING:
                self._now_ready(sid, st)
            self._set_instance(st.appliance_id, st.instance_id, heartbeat_at=now, load=load,
                               metrics=dict(getattr(hb, "metrics", None) or {}))
            if hb.drops:
                self.count(st.appliance_id, st.instance_id, Tally(), hb.drops)
            for name, value in (getattr(hb, "metrics", None) or {}).items():
                self.metrics.profile.labels(st.appliance_id, st.instance_id, name).set(value)
        elif st.state == READY:
            self._end(st.appliance_id, st.instance_id, FAILED,
                      f"its agent runs {hb.instance_id or 'nothing'}")
        elif st.state == STOPPING and hb.instance_id != st.instance_id:
            self._freed(sid)
        if hb.instance_id is not None and hb.instance_id != self.slot(sid).instance_id:
            self._unwanted(sid, hb.instance_id)

    def _failed(self, sid: str, msg: p.Message) -> None:
        st, iid = self.slot(sid), msg.body.instance_id
        if iid != st.instance_id:
            return
        if st.state in ACTIVE:
            self._end(st.appliance_id, iid, FAILED, msg.body.reason)
        elif st.state == STOPPING:
            self._freed(sid)

    def _findings(self, sid: str, msg: p.Message) -> None:
        self._send(sid, p.Ack(msg.counter))
        batch = msg.body
        app_id = self._owner(sid, batch.instance_id)
        if app_id is None:
            LOG.warning("findings of unknown instance %s from slot %s dropped",
                        batch.instance_id, sid)
            return
        for n, found in enumerate(batch.findings):
            record = findings.take(self.ctx, self.metrics, f"{sid}-{batch.seq}-{n}", app_id,
                                   batch.instance_id, found, self.remedy)
            app, state = self.appliances.get(app_id), self.states.get(app_id)
            if record is not None and app is not None and state is not None:
                own = {str(a.ip) for a in production_addresses(self.ctx, app)[0]}
                held = self.tuning.hold(app, state, record, own)
                if held is not None:
                    self._store_state(app_id, held)
        findings.prune(self.ctx, set(self.appliances), self.ctx.wallclock())

    # ------------------------------------------------------------ time
    def tick(self) -> None:
        mono = self.ctx.clock()
        for sid, st in list(self.slot_states.items()):
            if st.alive and mono - self.heard.get(sid, mono) > MISS_LIMIT:
                self._silent(sid, st)
        for sid, retry in list(self.retry.items()):
            if retry.at <= mono:
                self._resend(sid)
        self.assign()
        self.tuning.adapt(self.appliances, self.states)
        self.tuning.expire_holds(self.states)

    def _silent(self, sid: str, st: SlotState) -> None:
        self.retry.pop(sid, None)
        st = self._put_slot(sid, alive=False)
        self.ctx.journal("shadow", sid, "shadow agent silent: heartbeats missed", slot_id=sid)
        if st.state in ACTIVE and st.appliance_id and st.instance_id:
            self._end(st.appliance_id, st.instance_id, FAILED, "heartbeats missed")
        else:
            self._put_slot(sid, state=FAILED, appliance_id=None, instance_id=None)

    def next_wakeup(self) -> float | None:
        mono = self.ctx.clock()
        times = [r.at for r in self.retry.values()]
        times += [self.heard.get(sid, mono) + MISS_LIMIT for sid, st in self.slot_states.items()
                  if st.alive]
        if (due := self.tuning.next_wakeup(self.states)) is not None:
            times.append(mono + due)
        return max(0.0, min(times) - mono) if times else None

    def publish(self) -> None:
        counts = dict.fromkeys(INSTANCE_STATES, 0)
        for state in self.states.values():
            for i in state.instances:
                counts[i.state] += 1
        for state, n in counts.items():
            self.metrics.instances.labels(state).set(n)
