"""Fuzzing: mutations of the mirrored requests sent to the shadow instance, from its host.

Python standard library only; docs/shadow-agent.md ("Fuzzing") says what it does and
why it needs no fuzzing library.  The seeds (`mutate.Corpus`) and their mutations
(`mutate.Mutator`) are pure; here:

- `settings_from`: the manifest's `profiles.Fuzzing`, checked (`Settings`).
- `local.open_socket` / `local.exchange`: one input over one socket, bound to the
  destination address itself, which must be one of the instance's (`Refused`
  otherwise): the kernel delivers it over loopback, so it never leaves the host.
- `Fuzzer`: the worker thread's loop: each seed's `mutations_per_seed` inputs, at
  most `rate` a second, each judged: crash, hang, error answer.
- `FuzzingProfile`: the capture read in `poll`, the seeds handed to the worker, the
  worker's findings handed back, the image's process group watched.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from controller.agents.shadow.capture import Capture
from controller.agents.shadow.feed import CaptureFeed
from controller.agents.shadow.ids import Endpoint
from controller.agents.shadow.local import (ACCEPTED, ANSWERED, CLOSED, REFUSED, RESET, SLICE,
                                            STOPPED, TIMEOUT, Outcome, Refused, accepts,
                                            exchange, group_alive, open_socket)
from controller.agents.shadow.mutate import MAX_INPUT, Corpus, Mutation, Mutator, Seed, Target
from controller.agents.shadow.protocol import SEVERITIES, FiveTuple, Finding

if TYPE_CHECKING:
    from controller.agents.shadow.profiles import ProfileContext

log = logging.getLogger("hub-shadow-agent")

NAME = "Fuzzing"
PROBE_DELAY = 0.2       # s after a connection closed without an answer, before the probe
HOLD = 30.0             # s at most waiting for a hung service to answer the seed again
CRASH_WINDOW = 5.0      # s after the last input in which the image's end is its crash
SHOWN = 200             # bytes of an input shown (as hex) in the evidence
ANSWER_SHOWN = 48       # bytes of an answer shown
JOIN = 2.0              # s `stop` waits for the worker

CRASH, HANG, ERROR = "crash", "hang", "error answer"
# what an exchange comes to


# -- settings --------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    seed: int = 0                           # of the mutator's random.Random
    seed_bytes: int = 4096                  # of a connection's request kept as a seed
    corpus: int = 64                        # seeds at most
    mutations_per_seed: int = 50
    rate: float = 20.0                      # inputs per second at most
    timeout: float = 1.0                    # s for an input's answer
    error_pattern: re.Pattern[bytes] | None = None
    crash_severity: str = "high"
    max_findings: int = 20


_BOUNDS = {"seed": (0, 2 ** 64), "seed_bytes": (1, MAX_INPUT), "corpus": (1, 1024),
           "mutations_per_seed": (1, 1_000_000), "rate": (0.01, 1000),
           "timeout": (0.01, 60), "max_findings": (1, 1000)}


def settings_from(settings: Mapping[str, Any]) -> Settings:
    """The manifest's `profiles.Fuzzing` (ValueError naming the setting that is wrong)."""
    unknown = sorted(set(settings) - set(Settings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"Fuzzing: unknown setting {unknown[0]!r}")
    values: dict[str, Any] = {}
    for name, (low, high) in _BOUNDS.items():
        if name not in settings:
            continue
        value, whole = settings[name], isinstance(Settings.__dataclass_fields__[name].default, int)
        kinds = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            raise ValueError(f"Fuzzing setting {name}: {value!r} (a{'n integer' if whole else ' number'}"
                             f" {low}..{high})")
        values[name] = value
    severity = values["crash_severity"] = settings.get("crash_severity", "high")
    if severity not in SEVERITIES:
        raise ValueError(f"Fuzzing setting crash_severity: {severity!r} (one of "
                         f"{', '.join(SEVERITIES)})")
    pattern = settings.get("error_pattern")
    try:
        if pattern == "":
            raise re.error("empty: it would match every answer")
        values["error_pattern"] = None if pattern is None else re.compile(pattern.encode())
    except (AttributeError, re.error) as exc:
        raise ValueError(f"Fuzzing setting error_pattern: {pattern!r} ({exc})") from None
    return Settings(**values)


# -- the worker ------------------------------------------------------------------------

@dataclass(frozen=True)
class Input:
    target: Target
    source: Endpoint        # the local end of its socket
    data: bytes
    operator: str           # the mutation's
    seed_size: int
    digest: str             # SHA-256, hex


class Fuzzer:
    """The worker's loop (`run`, or `fuzz` one seed): seeds from `add`, findings to
    `take`; `image_gone` when the image's process group has ended."""

    def __init__(self, settings: Settings, allowed: Collection[IPv4Address],
                 wallclock: Callable[[], float], alive: Callable[[], bool] = lambda: True,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.allowed = settings, frozenset(allowed)
        self.wallclock, self.alive, self.now = wallclock, alive, now
        self.mutator = Mutator(settings.seed)
        self.stopping = threading.Event()
        self.lock = threading.RLock()
        self.waiting: queue.SimpleQueue[Seed] = queue.SimpleQueue()
        self.seeds: list[Seed] = []
        self.found: list[Finding] = []
        self.reported: set[tuple[str, str]] = set()     # (kind, digest)
        self.answered: set[Target] = set()              # services that answered once
        self.last: Input | None = None                  # in flight, or the last sent
        self.ended: float | None = None                 # when it ended (None: in flight)
        self.gone = False
        self.sent = self.refused = 0
        self.error: BaseException | None = None         # the loop's end, if it failed
        self._next_at = 0.0

    def add(self, seeds: list[Seed]) -> None:
        with self.lock:
            self.seeds += seeds
        for seed in seeds:
            self.waiting.put(seed)

    def take(self) -> list[Finding]:
        with self.lock:
            found, self.found = self.found, []
        return found

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    seed = self.waiting.get(timeout=SLICE)
                except queue.Empty:
                    continue
                self.fuzz(seed)
        except BaseException as exc:                    # handed to the agent by a poll
            self.error = exc

    def fuzz(self, seed: Seed) -> None:
        with self.lock:
            others = [s.data for s in self.seeds if s.target == seed.target and s != seed]
        for _ in range(self.settings.mutations_per_seed):
            if self.stopping.is_set():
                return
            self._pace()
            if not self._try(seed, self.mutator.mutate(seed.data, others)):
                return

    def image_gone(self) -> None:
        """The image's process group has ended: the input in flight, or the last sent
        (if it ended within CRASH_WINDOW s), is the crash's; the worker stops."""
        with self.lock:
            if self.gone:
                return
            self.gone = True
            self.stopping.set()
            if self.last is None:
                return
            if self.ended is None:
                self._report(CRASH, self.last, "the image's process group ended with the "
                                               "input in flight")
            elif self.now() - self.ended <= CRASH_WINDOW:
                self._report(CRASH, self.last, f"the image's process group ended "
                                               f"{self.now() - self.ended:.1f} s after the input")

    def _pace(self) -> None:
        """Wait for the next input's turn: turns are 1/rate s apart (none taken back
        after a slow input), so no second has more than `rate` inputs."""
        turn = max(self._next_at, self.now())
        if turn > self.now():
            self.stopping.wait(turn - self.now())
        self._next_at = turn + 1 / self.settings.rate

    def _try(self, seed: Seed, mutation: Mutation) -> bool:
        """Send one input and judge it: whether to go on with the seed."""
        try:
            sock, source = open_socket(seed.target, self.allowed)
        except Refused as exc:
            log.warning("Fuzzing: no input sent to %s:%d: %s", seed.target.address,
                        seed.target.port, exc)
            self.refused += 1
            return False
        inp = Input(seed.target, source, mutation.data, mutation.operator, len(seed.data),
                    hashlib.sha256(mutation.data).hexdigest())
        with self.lock:
            self.last, self.ended = inp, None
        with sock:
            outcome = exchange(sock, inp.target, inp.data, self.settings.timeout, self.stopping)
        with self.lock:
            self.ended = self.now()
            self.sent += 1
        return self._judge(seed, inp, outcome)

    def _judge(self, seed: Seed, inp: Input, outcome: Outcome) -> bool:
        """What an input's outcome says (findings), and whether to go on with the seed."""
        if outcome.kind == STOPPED:
            return False
        if not self.alive():
            self.image_gone()
            return False
        if outcome.kind == REFUSED:
            log.info("Fuzzing: %s %s:%d refuses: the rest of its seed set aside",
                     inp.target.protocol, inp.target.address, inp.target.port)
            return False
        if outcome.kind == ANSWERED:
            self.answered.add(inp.target)
            pattern = self.settings.error_pattern
            if pattern is not None and pattern.search(outcome.answer):
                self._report(ERROR, inp, f"the answer matches {pattern.pattern.decode()!r}: "
                                         f"{outcome.answer[:ANSWER_SHOWN]!r}")
            return True
        if outcome.kind in (CLOSED, RESET):
            self.stopping.wait(PROBE_DELAY)
            if self._probe(seed) == REFUSED:
                self._report(CRASH, inp, f"the connection was {outcome.kind} without an "
                                         f"answer and the service then refused connections")
                return False
            return True
        probe = self._probe(seed)                   # TIMEOUT
        if probe == REFUSED:
            self._report(CRASH, inp, f"no answer in {self.settings.timeout:g} s and the "
                                     f"service then refused connections")
            return False
        if probe == STOPPED or inp.target.protocol == "udp" and (
                probe == ANSWERED or inp.target not in self.answered):
            return probe != STOPPED                 # a UDP service may ignore a datagram
        how = {ACCEPTED: "the service still accepts connections",
               TIMEOUT: "new connections time out too" if inp.target.protocol == "tcp"
               else "the seed itself goes unanswered now"}[probe]
        self._report(HANG, inp, f"no answer in {self.settings.timeout:g} s; {how}")
        return self._recover(seed)

    def _probe(self, seed: Seed) -> str:
        """Is the service still there?  TCP: a new connection; UDP: the seed itself."""
        if seed.target.protocol == "tcp":
            try:
                return accepts(seed.target, self.allowed, self.settings.timeout)
            except Refused:
                return STOPPED
        kind = self._send(seed.target, seed.data)
        if kind == ANSWERED:
            self.answered.add(seed.target)
        return kind

    def _send(self, target: Target, data: bytes) -> str:
        """A seed sent again (a probe, a recovery), not an input: what came of it."""
        try:
            sock, _ = open_socket(target, self.allowed)
        except Refused:
            return STOPPED
        with sock:
            return exchange(sock, target, data, self.settings.timeout, self.stopping).kind

    def _recover(self, seed: Seed) -> bool:
        """After a hang: wait (HOLD s at most) until the service answers the seed again."""
        deadline = self.now() + HOLD
        while not self.stopping.is_set() and self.now() < deadline:
            kind = self._send(seed.target, seed.data)
            if kind in (ANSWERED, CLOSED, RESET):
                return True
            if kind != TIMEOUT:
                return False
        log.info("Fuzzing: %s:%d still hangs after %.0f s: the rest of its seed set aside",
                 seed.target.address, seed.target.port, HOLD)
        return False

    def _report(self, kind: str, inp: Input, why: str) -> None:
        severity = {CRASH: self.settings.crash_severity, HANG: "medium", ERROR: "low"}[kind]
        with self.lock:
            key = (kind, inp.digest)
            if key in self.reported or len(self.reported) >= self.settings.max_findings:
                return
            self.reported.add(key)
            self.found.append(Finding(
                NAME, severity, FiveTuple(inp.target.protocol, inp.source.address, inp.source.port,
                                          inp.target.address, inp.target.port),
                evidence(kind, why, inp), self.wallclock()))
            if len(self.reported) >= self.settings.max_findings:
                log.info("Fuzzing: %d findings, the most reported: fuzzing stops", len(self.reported))
                self.stopping.set()


def evidence(kind: str, why: str, inp: Input) -> str:
    shown = inp.data[:SHOWN].hex() + ("…" if len(inp.data) > SHOWN else "")
    return (f"{kind}: {why}; input of {len(inp.data)} bytes, sha256 {inp.digest[:16]}, "
            f"{inp.operator} of a {inp.seed_size}-byte seed: {shown}")


# -- the profile -----------------------------------------------------------------------

class FuzzingProfile:
    """The profile the agent runs (`profiles.PROFILES[NAME]`): the settings checked at
    `start`, the capture on the slot's interface read in `poll` for a bounded time,
    the worker thread fed the seeds; each poll also checks the image's process group.
    `lag_ms`: the capture's, as the IDS profile's."""

    def __init__(self, open_capture: Callable[[str], Capture] = Capture,
                 now: Callable[[], float] = time.monotonic,
                 alive: Callable[[int], bool] = group_alive) -> None:
        self.open_capture, self.now, self.alive = open_capture, now, alive
        self.feed: CaptureFeed | None = None
        self.corpus: Corpus | None = None
        self.fuzzer: Fuzzer | None = None
        self.thread: threading.Thread | None = None
        self.pgid = 0

    @property
    def lag_ms(self) -> float:
        """How far behind the capture is (the seeds, not the fuzzing)."""
        return self.feed.lag_ms if self.feed is not None else 0.0

    def start(self, ctx: ProfileContext) -> None:
        settings = settings_from(ctx.settings)
        servers = {a.ip for a in ctx.addresses}
        self.pgid = ctx.pgid
        self.corpus = Corpus(servers, settings.seed_bytes, settings.corpus)
        self.fuzzer = Fuzzer(settings, servers, ctx.wallclock, lambda: self.alive(self.pgid),
                             self.now)
        self.feed = CaptureFeed(self.open_capture(ctx.interface), self.now)
        self.thread = threading.Thread(target=self.fuzzer.run, daemon=True,
                                       name=f"fuzzing {ctx.instance_id}")
        self.thread.start()

    def poll(self) -> list[Finding]:
        if self.fuzzer.error is not None:
            raise RuntimeError(f"the fuzzing worker failed: {self.fuzzer.error!r}")
        seeds, now = self.feed.drain(self.corpus.feed)
        seeds += self.corpus.expire(now)
        if seeds:
            self.fuzzer.add(seeds)
        if not self.fuzzer.gone and not self.alive(self.pgid):
            self.fuzzer.image_gone()
        return self.fuzzer.take()

    def stop(self) -> None:
        if self.fuzzer is not None:
            self.fuzzer.stopping.set()
        if self.thread is not None:
            self.thread.join(JOIN)
        if self.feed is not None:
            self.feed.close()
        self.feed = self.corpus = self.fuzzer = self.thread = None
