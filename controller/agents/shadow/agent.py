"""The shadow agent's state machine: HELLO until the hub acknowledges it, then heartbeats,
the launch and stop of one shadow instance, and its profiles' findings.

Python standard library only.  `Agent` takes `send(data, (ip, port))`, clocks, an
`Addresses` (`controller.rap.addresses`, as hub-rap), a `Launcher` and `Stats`
(host.py) and the profiles' registry, so tests drive it without a socket, root or
processes; `main.py` wires the real ones.  docs/shadow-agent.md ("The agent's state
machine") says what it does.
"""
from __future__ import annotations

import collections
import enum
import logging
import shlex
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface

from controller import __version__
from controller.agents.channel import Counter, Rejected, new_nonce
from controller.agents.loop import Send
from controller.agents.shadow import protocol as sp
from controller.agents.shadow.orders import Assembler, LaunchOrder, findings_batches
from controller.agents.shadow.host import InterfaceCounters, Launcher, Process, Stats
from controller.agents.shadow.profiles import (PROFILES, Profile, ProfileContext,
                                               largest_lag_ms, merged_metrics)
from controller.rap.addresses import FOREVER, AddressError, Addresses

log = logging.getLogger("hub-shadow-agent")

DEFAULT_PORT = 6700
HELLO_FIRST = 1.0          # s: HELLO retransmission starts here, doubling ...
HELLO_MAX = 32.0           # ... up to this, then stays
HELLOS_KEPT = 16           # the last HELLO counters an ACK may name
HEARTBEAT = 1.0            # s
POLL = 0.2                 # s between polls of the profiles
RETRANSMIT = 2.0           # s: FINDINGS not acknowledged are sent again ...
TRIES = 5                  # ... up to this many times in all
PENDING_MAX = 64           # FINDINGS awaiting an ACK; beyond, the oldest are given up


class State(enum.Enum):
    INIT = "init"              # not started
    HELLO = "hello"            # HELLO sent, waiting for the hub's ACK
    IDLE = "idle"              # heartbeats, no instance
    RUNNING = "running"        # an instance runs; heartbeats with its load
    STOPPED = "stopped"


@dataclass(frozen=True)
class Sample:
    """The counters a heartbeat's figures are the growth of."""
    at: float
    interface: InterfaceCounters
    pgid: int | None           # the instance's process group, None when idle
    cpu: float                 # its CPU seconds


@dataclass
class Instance:
    order: LaunchOrder
    process: Process
    profiles: dict[str, Profile]
    added: list[IPv4Interface]     # the production addresses put on the interface
    ready: sp.Ready


@dataclass(frozen=True)
class Pending:
    """FINDINGS sent, not acknowledged yet: an ACK of any of `counters` will do."""
    findings: sp.Findings
    sent: float                    # last time
    counters: tuple[int, ...]      # one per try


class Agent:
    """The slot's side of the shadow protocol.  Call `start()`, then `receive()` each
    datagram and `tick()` whenever `deadline()` has passed; `stop()` ends the instance."""

    def __init__(self, slot: str, key: bytes, server: IPv4Address, port: int, interface: str,
                 addresses: Addresses, launcher: Launcher, stats: Stats, send: Send, *,
                 profiles: Mapping[str, Callable[[], Profile]] = PROFILES,
                 now: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time,
                 counter: Counter | None = None) -> None:
        self.slot, self.key, self.server, self.port = slot, key, server, port
        self.interface, self.addresses = interface, addresses
        self.launcher, self.stats, self.profiles = launcher, stats, profiles
        self._send_datagram, self.now, self.wallclock = send, now, wallclock
        self.counter = counter or Counter(wallclock)
        self.receiver = sp.Receiver(lambda sid: key if sid == slot else None)
        self.state = State.INIT
        self.epoch = 0                                   # the hub's, from its last message
        self.instance: Instance | None = None
        self.rejected: collections.Counter[str] = collections.Counter()
        self._assembler = Assembler()
        self._hellos: dict[int, float] = {}              # counter -> when it was sent
        self._hello_tries = 0
        self._backoff = HELLO_FIRST
        self._hello_at = self._beat_at = self._poll_at = 0.0
        self._sample = Sample(0.0, InterfaceCounters(0, 0), None, 0.0)
        self._pending: dict[int, Pending] = {}           # by seq
        self._bad_metrics: set[tuple[str, str]] = set()  # (profile, metric) logged

    # -- driving ---------------------------------------------------------------------

    def start(self) -> None:
        self.state = State.HELLO
        self._hello(self.now())

    def deadline(self) -> float | None:
        """When `tick` has something to do (on `now`'s clock); None once stopped."""
        if self.state is State.HELLO:
            return self._hello_at
        if self.state not in (State.IDLE, State.RUNNING):
            return None
        times = [self._beat_at] + [p.sent + RETRANSMIT for p in self._pending.values()]
        if self.instance is not None and self.instance.profiles:
            times.append(self._poll_at)
        return min(times)

    def tick(self) -> None:
        now = self.now()
        if self.state is State.HELLO:
            if now >= self._hello_at:
                self._hello(now)
            return
        if self.state not in (State.IDLE, State.RUNNING):
            return
        if self.instance is not None:
            self._watch(self.instance, now)
        if self.instance is not None and self.instance.profiles and now >= self._poll_at:
            self._poll(self.instance, now)
        self._retransmit(now)
        if now >= self._beat_at:
            self._heartbeat(now)

    def receive(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            msg = self.receiver.accept(data)
        except Rejected as exc:
            self.rejected[exc.reason] += 1
            log.debug("dropped a datagram from %s:%d (%s)", source[0], source[1], exc)
            return
        body = msg.body
        if self.state is State.HELLO and isinstance(body, sp.Ack):
            return self._on_hello_ack(msg, body)
        if self.state not in (State.IDLE, State.RUNNING):
            # Before the ACK of a HELLO of this run, a LAUNCH or STOP may be a replay
            # from an earlier one: the ACK's counter is the floor from then on.
            log.debug("ignored %s in state %s", msg.type.name, self.state.value)
            return
        if isinstance(body, sp.Ack):
            self._on_findings_ack(msg, body)
        elif isinstance(body, sp.Launch):
            self._on_launch(msg, body)
        elif isinstance(body, sp.Stop):
            self._on_stop(msg, body)
        else:
            log.debug("ignored %s from the hub", msg.type.name)

    def stop(self) -> None:
        """End the instance (FAILED "agent stopped" to the hub) and stop."""
        running = self.instance
        if running is not None:
            self._halt(running, self.now())
            self._send(sp.Failed(running.order.instance_id, "agent stopped"))
            log.info("stopped instance %s (agent stopping)", running.order.instance_id)
        self.state = State.STOPPED

    # -- the hub's messages --------------------------------------------------------

    def _on_hello_ack(self, msg: sp.Message, ack: sp.Ack) -> None:
        sent = self._hellos.get(ack.counter)
        if sent is None:
            log.debug("ACK of %d: not a HELLO of this run", ack.counter)
            return
        now = self.now()
        tries = f" (try {self._hello_tries})" if self._hello_tries > 1 else ""
        log.info("HELLO -> ACK in %.1f ms%s, epoch %d", (now - sent) * 1000, tries, msg.epoch)
        self._note_epoch(msg.epoch)
        self._hellos.clear()
        self.state = State.IDLE
        self._sample = self._take_sample(now)
        self._beat_at = now + HEARTBEAT

    def _on_findings_ack(self, msg: sp.Message, ack: sp.Ack) -> None:
        self._note_epoch(msg.epoch)
        seq = next((seq for seq, p in self._pending.items() if ack.counter in p.counters), None)
        if seq is None:
            log.debug("ACK of %d: nothing awaits it", ack.counter)
        else:
            del self._pending[seq]
            log.debug("findings %d acknowledged", seq)

    def _on_launch(self, msg: sp.Message, part: sp.Launch) -> None:
        self._note_epoch(msg.epoch)
        try:
            order = self._assembler.add(part)
        except ValueError as exc:
            return self._fail(part.instance_id, f"launch order: {exc}")
        if order is None:
            return                                   # more parts to come
        now, running = self.now(), self.instance
        if running is not None:
            if running.order == order:
                log.debug("LAUNCH of %s again: READY again", order.instance_id)
                self._send(running.ready)
                return
            log.info("instance %s gives way to %s", running.order.instance_id,
                     order.instance_id)
            self._halt(running, now)
        self._launch(order, now)

    def _on_stop(self, msg: sp.Message, stop: sp.Stop) -> None:
        self._note_epoch(msg.epoch)
        now, running = self.now(), self.instance
        if running is not None and running.order.instance_id == stop.instance_id:
            self._halt(running, now)
            log.info("stopped instance %s", stop.instance_id)
        else:
            log.debug("STOP of %s, not running", stop.instance_id)
        self._heartbeat(now)                         # the answer: what runs now

    # -- the instance ----------------------------------------------------------------

    def _launch(self, order: LaunchOrder, now: float) -> None:
        rid = order.instance_id
        log.info("launching %s: %s on %s", rid, order.image,
                 ", ".join(map(str, order.addresses)) or "no address")
        try:
            argv = shlex.split(order.image)
        except ValueError as exc:
            return self._fail(rid, f"image {order.image!r}: {exc}")
        if not argv:
            return self._fail(rid, "the image is an empty command line")
        added: list[IPv4Interface] = []
        try:
            for address in order.addresses:
                self.addresses.replace(address, FOREVER, FOREVER)
                added.append(address)
            process = self.launcher.start(argv)
        except (AddressError, OSError) as exc:
            self._remove(added)
            return self._fail(rid, str(exc))
        profiles, unavailable = self._start_profiles(order, process.pid)
        ready = sp.Ready(rid, tuple(profiles), tuple(unavailable))
        self.instance = Instance(order, process, profiles, added, ready)
        self.state = State.RUNNING
        self._sample = self._take_sample(now)
        self._poll_at = now + POLL
        self._send(ready)
        log.info("instance %s ready (pid %d, profiles: %s)", rid, process.pid,
                 ", ".join(profiles) or "none")

    def _start_profiles(self, order: LaunchOrder,
                        pgid: int) -> tuple[dict[str, Profile], list[str]]:
        started: dict[str, Profile] = {}
        unavailable: list[str] = []
        for name, settings in order.profiles.items():
            factory = self.profiles.get(name)
            if factory is None:
                log.warning("profile %s not available in this agent yet", name)
                unavailable.append(name)
                continue
            ctx = ProfileContext(order.instance_id, self.interface, order.addresses,
                                 order.gateway, settings, pgid, self.wallclock)
            try:
                profile = factory()
                profile.start(ctx)
            except Exception as exc:                 # a plug-in's failure is its own
                log.error("profile %s did not start: %s", name, exc)
                unavailable.append(name)
                continue
            started[name] = profile
        return started, unavailable

    def _watch(self, running: Instance, now: float) -> None:
        """The image ended by itself: the profiles polled a last time (what they saw of its
        end, such as the input that crashed it, is sent first), then FAILED, and
        everything it had is removed."""
        status = running.process.poll()
        if status is None:
            return
        how = (f"killed by {signal.Signals(-status).name}" if status < 0
               else f"exited with status {status}")
        if running.profiles:
            self._poll(running, now)
        self._halt(running, now)
        self._fail(running.order.instance_id, f"image {how}")

    def _halt(self, running: Instance, now: float) -> None:
        """Profiles stopped, the process group ended, the addresses removed: IDLE."""
        for name, profile in running.profiles.items():
            try:
                profile.stop()
            except Exception as exc:
                log.error("profile %s did not stop cleanly: %s", name, exc)
        running.process.stop()
        self._remove(running.added)
        self.instance, self.state = None, State.IDLE
        self._sample = self._take_sample(now)

    def _remove(self, added: list[IPv4Interface]) -> None:
        for address in reversed(added):
            try:
                self.addresses.delete(address)
            except AddressError as exc:
                log.warning("%s", exc)

    def _fail(self, instance_id: str, reason: str) -> None:
        log.error("instance %s failed: %s", instance_id, reason)
        self._send(sp.Failed(instance_id, reason))

    def _poll(self, running: Instance, now: float) -> None:
        self._poll_at = now + POLL
        found: list[sp.Finding] = []
        for name, profile in list(running.profiles.items()):
            try:
                found += profile.poll()
            except Exception as exc:
                log.error("profile %s failed and is stopped: %s", name, exc)
                del running.profiles[name]
                try:
                    profile.stop()
                except Exception:
                    pass
        for batch in findings_batches(self.slot, running.order.instance_id, found):
            findings = sp.Findings(running.order.instance_id, self.counter.next(), batch)
            self._transmit(Pending(findings, now, ()), now)

    # -- what is sent ------------------------------------------------------------------

    def _hello(self, now: float) -> None:
        hello = sp.Hello(__version__, self.interface, tuple(sorted(self.profiles)))
        self._hellos[self._send(hello)] = now
        self._hello_tries += 1
        while len(self._hellos) > HELLOS_KEPT:
            del self._hellos[next(iter(self._hellos))]
        self._hello_at = now + self._backoff
        self._backoff = min(self._backoff * 2, HELLO_MAX)

    def _heartbeat(self, now: float) -> None:
        last, sample = self._sample, self._take_sample(now)
        span = max(now - last.at, 1e-6)
        pps = max(0, sample.interface.packets - last.interface.packets) / span
        drops = max(0, sample.interface.drops - last.interface.drops)
        cpu = (max(0.0, sample.cpu - last.cpu) / span * 100
               if sample.pgid is not None and sample.pgid == last.pgid else 0.0)
        self._sample, self._beat_at = sample, now + HEARTBEAT
        running = self.instance
        rid = running.order.instance_id if running is not None else None
        profiles = running.profiles if running is not None else {}
        beat = sp.Heartbeat(rid, round(pps, 1), drops, round(largest_lag_ms(profiles), 1),
                            round(cpu, 1), merged_metrics(profiles, self._bad_metrics))
        self._send(self._fitted(beat))

    def _fitted(self, beat: sp.Heartbeat) -> sp.Heartbeat:
        """The heartbeat, its last metrics left out until it fits in MAX_DATAGRAM."""
        room = sp.MAX_DATAGRAM - sp.CHANNEL.overhead(self.slot)
        metrics = dict(beat.metrics)
        while metrics and len(beat.pack()) > room:
            dropped = metrics.popitem()
            beat = replace(beat, metrics=dict(metrics))
            log.debug("metric %s left out of a heartbeat: no room", dropped[0])
        return beat

    def _take_sample(self, now: float) -> Sample:
        pgid = self.instance.process.pid if self.instance is not None else None
        return Sample(now, self.stats.interface(), pgid,
                      self.stats.cpu_seconds(pgid) if pgid is not None else 0.0)

    def _transmit(self, pending: Pending, now: float) -> None:
        counter = self._send(pending.findings)
        self._pending[pending.findings.seq] = Pending(pending.findings, now,
                                                      pending.counters + (counter,))
        while len(self._pending) > PENDING_MAX:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            log.warning("findings %d given up: too many awaiting an ACK", oldest)

    def _retransmit(self, now: float) -> None:
        for seq, pending in list(self._pending.items()):
            if now < pending.sent + RETRANSMIT:
                continue
            if len(pending.counters) >= TRIES:
                del self._pending[seq]
                log.warning("findings %d given up: no ACK after %d tries", seq, TRIES)
            else:
                self._transmit(pending, now)

    def _send(self, body: sp.Body) -> int:
        """Send `body` to the hub; its counter."""
        counter = self.counter.next()
        epoch = 0 if isinstance(body, sp.Hello) else self.epoch   # 0 is always allowed there
        msg = sp.Message(self.slot, counter, new_nonce(), epoch, body)
        self._send_datagram(sp.encode(msg, self.key), (str(self.server), self.port))
        return counter

    def _note_epoch(self, epoch: int) -> None:
        if self.epoch and epoch != self.epoch:
            log.info("hub restarted (epoch %d -> %d)", self.epoch, epoch)
        self.epoch = epoch
