"""hub-shadow-agent: its state machine driven by the hub's messages and a clock (fake
addresses, launcher, load readers and profiles), the host readers and the process
group launcher for real, the real process over loopback UDP, its stdlib-only imports."""
from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from controller.agents.channel import key_bytes, new_nonce
from controller.agents.shadow import agent as agent_module
from controller.agents.shadow import protocol as sp
from controller.agents.shadow.agent import Agent, State
from controller.agents.shadow.host import GroupProcess, InterfaceCounters, PopenLauncher, SysStats
from controller.agents.shadow.orders import LaunchOrder, launch_parts
from controller.rap.addresses import FOREVER, AddressError

ROOT = Path(__file__).resolve().parents[2]
SLOT = "slot-1"
KEY = key_bytes("s3cret-slot-key")
SERVER = IPv4Address("192.168.1.1")
START = 1000.0
ORDER = LaunchOrder("web-shadow-1", "/usr/sbin/web --name 'shadow one' -p 80",
                    (IPv4Interface("10.0.0.5/24"),), IPv4Address("10.0.0.1"),
                    {"IDS_Signature_Scan": {"signatures": []}})


def keys(slot):
    return KEY if slot == SLOT else None


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


class FakeAddresses:
    def __init__(self) -> None:
        self.on: set[IPv4Interface] = set()
        self.calls: list[tuple] = []
        self.fail_on: IPv4Interface | None = None

    def replace(self, address, valid, preferred):
        self.calls.append(("replace", str(address), valid, preferred))
        if address == self.fail_on:
            raise AddressError(f"ip addr replace {address}: RTNETLINK answers: File exists")
        self.on.add(address)

    def delete(self, address):
        self.calls.append(("delete", str(address)))
        self.on.discard(address)


class FakeProcess:
    def __init__(self, argv, pid) -> None:
        self.argv, self.pid = argv, pid
        self.status: int | None = None
        self.stopped = False

    def poll(self):
        return self.status

    def stop(self):
        self.stopped = True


class FakeLauncher:
    def __init__(self) -> None:
        self.started: list[FakeProcess] = []
        self.error: OSError | None = None

    def start(self, argv):
        if self.error:
            raise self.error
        self.started.append(FakeProcess(list(argv), 4242 + len(self.started)))
        return self.started[-1]


class FakeStats:
    def __init__(self) -> None:
        self.packets = self.drops = 0
        self.cpu: dict[int, float] = {}

    def interface(self):
        return InterfaceCounters(self.packets, self.drops)

    def cpu_seconds(self, pgid):
        return self.cpu.get(pgid, 0.0)


class FakeProfile:
    """Hands out `pending` at the next poll; `fail` makes poll raise."""
    made: list[FakeProfile] = []

    def __init__(self) -> None:
        self.ctx = None
        self.pending: list[sp.Finding] = []
        self.stopped = self.fail = False
        FakeProfile.made.append(self)

    def start(self, ctx):
        self.ctx = ctx

    def poll(self):
        if self.fail:
            raise RuntimeError("capture died")
        out, self.pending = self.pending, []
        return out

    def stop(self):
        self.stopped = True


class Hub:
    """Encodes the hub's messages as the hub would: growing counters, its epoch."""

    def __init__(self, epoch: int = 77) -> None:
        self.epoch, self.counter = epoch, 1_700_000_000_000_000

    def __call__(self, body, key=KEY, slot=SLOT) -> bytes:
        self.counter += 1
        return sp.encode(sp.Message(slot, self.counter, new_nonce(), self.epoch, body), key)


class Rig:
    def __init__(self, profiles=None) -> None:
        self.clock, self.hub = Clock(), Hub()
        self.addresses, self.launcher, self.stats = FakeAddresses(), FakeLauncher(), FakeStats()
        self.sent: list[sp.Message] = []
        self.agent = Agent(SLOT, KEY, SERVER, 6700, "eth1", self.addresses, self.launcher,
                           self.stats, self.record, profiles=profiles or {}, now=self.clock,
                           wallclock=lambda: 1_700_000_000.0 + self.clock.t)

    def record(self, data, to):
        assert to == ("192.168.1.1", 6700)
        self.sent.append(sp.decode(data, keys))

    def take(self) -> list[sp.Message]:
        out, self.sent = self.sent, []
        return out

    def bodies(self) -> list:
        return [m.body for m in self.take()]

    def calls(self) -> list[tuple]:
        out, self.addresses.calls = self.addresses.calls, []
        return out

    def give(self, body, **kw) -> None:
        self.agent.receive(self.hub(body, **kw), ("192.168.1.1", 6700))

    def at(self, t: float) -> None:
        """The clock at START + t, and the agent's timers run as the select loop would."""
        self.clock.t = START + t
        self.agent.tick()

    def hello_acked(self) -> Rig:
        self.agent.start()
        (hello,) = self.take()
        self.give(sp.Ack(hello.counter))
        return self

    def launched(self, order=ORDER) -> Rig:
        self.hello_acked()
        for part in launch_parts(order, SLOT):
            self.give(part)
        self.take(), self.calls()
        return self


@pytest.fixture
def rig():
    return Rig()


def test_hello_is_sent_at_start_and_again_from_1_s_doubling_to_32_s(rig):
    rig.agent.start()
    (hello,) = rig.take()
    assert hello.body == sp.Hello(hello.body.version, "eth1", ()) and hello.epoch == 0
    times = [START]
    for _ in range(8):
        rig.at(rig.agent.deadline() - START - 0.001)
        assert rig.sent == []                              # not before its time
        rig.at(rig.agent.deadline() - START)
        assert [type(b) for b in rig.bodies()] == [sp.Hello]
        times.append(rig.clock.t)
    assert [b - a for a, b in zip(times, times[1:])] == [1, 2, 4, 8, 16, 32, 32, 32]
    assert rig.agent.state is State.HELLO


def test_only_an_ack_of_a_hello_of_this_run_answers_it(rig, caplog):
    caplog.set_level(logging.INFO, "hub-shadow-agent")
    rig.agent.start()
    rig.at(1)                                              # the second HELLO
    hellos = [m.counter for m in rig.take()]
    # A LAUNCH or STOP before the ACK may be a replay of an earlier run: ignored.
    for part in launch_parts(ORDER, SLOT):
        rig.give(part)
    rig.give(sp.Stop("web-shadow-1"))
    rig.give(sp.Ack(hellos[0] - 1))                        # not a counter of ours
    assert rig.launcher.started == [] and rig.agent.state is State.HELLO
    rig.clock.t += 0.004
    rig.give(sp.Ack(hellos[1]))
    assert rig.agent.state is State.IDLE and rig.agent.epoch == 77
    assert "HELLO -> ACK in 4.0 ms (try 2), epoch 77" in caplog.messages
    assert rig.agent.deadline() == pytest.approx(START + 1.004 + 1)


def test_idle_heartbeats_every_second_with_no_instance(rig):
    rig.hello_acked()
    rig.stats.packets, rig.stats.drops = 40, 1
    rig.at(0.999)
    assert rig.take() == []
    for t in (1, 2, 3):
        rig.at(t)
        (beat,) = rig.take()
        assert beat.epoch == 77
        assert beat.body == (sp.Heartbeat(None, 40.0, 1, 0.0, 0.0) if t == 1
                             else sp.Heartbeat(None, 0.0, 0, 0.0, 0.0))


def test_launch_puts_the_addresses_on_starts_the_split_command_and_answers_ready(rig, caplog):
    caplog.set_level(logging.INFO, "hub-shadow-agent")
    rig.hello_acked()
    (part,) = launch_parts(ORDER, SLOT)
    rig.give(part)
    assert rig.calls() == [("replace", "10.0.0.5/24", FOREVER, FOREVER)]
    (process,) = rig.launcher.started
    assert process.argv == ["/usr/sbin/web", "--name", "shadow one", "-p", "80"]
    (ready,) = rig.take()
    assert ready.body == sp.Ready("web-shadow-1", (), ("IDS_Signature_Scan",))
    assert ready.epoch == 77 and rig.agent.state is State.RUNNING
    assert "profile IDS_Signature_Scan not available in this agent yet" in caplog.messages
    assert "instance web-shadow-1 ready (pid 4242, profiles: none)" in caplog.messages
    rig.give(part)                                         # the hub's retransmission
    assert [m.body for m in rig.take()] == [ready.body]
    assert len(rig.launcher.started) == 1 and rig.calls() == []


def test_heartbeats_carry_the_interface_and_cpu_growth_of_each_second(rig):
    rig.launched()
    pgid = rig.launcher.started[0].pid
    rig.stats.packets, rig.stats.drops, rig.stats.cpu[pgid] = 1500, 7, 0.25
    rig.at(1)
    (beat,) = rig.take()
    assert beat.body == sp.Heartbeat("web-shadow-1", 1500.0, 7, 0.0, 25.0)
    rig.stats.packets, rig.stats.cpu[pgid] = 1500 + 3001, 1.25
    rig.at(2)
    assert rig.bodies() == [sp.Heartbeat("web-shadow-1", 3001.0, 0, 0.0, 100.0)]


def test_an_image_that_exits_by_itself_is_failed_and_cleaned_up(rig):
    rig.launched()
    process = rig.launcher.started[0]
    process.status = 3
    rig.at(1)
    failed, beat = rig.bodies()
    assert failed == sp.Failed("web-shadow-1", "image exited with status 3")
    assert beat.instance_id is None and rig.agent.state is State.IDLE
    assert process.stopped and rig.calls() == [("delete", "10.0.0.5/24")]
    assert rig.addresses.on == set()
    rig.launched()                                         # a new launch is taken
    rig.launcher.started[-1].status = -9
    rig.at(2)
    assert rig.bodies()[0] == sp.Failed("web-shadow-1", "image killed by SIGKILL")


def test_stop_ends_the_instance_removes_the_addresses_and_answers_with_a_heartbeat(rig):
    rig.launched()
    process = rig.launcher.started[0]
    rig.give(sp.Stop("web-shadow-2"))                      # not the one running
    assert not process.stopped and rig.bodies()[0].instance_id == "web-shadow-1"
    rig.clock.t += 0.5
    rig.give(sp.Stop("web-shadow-1"))
    assert process.stopped and rig.calls() == [("delete", "10.0.0.5/24")]
    assert rig.bodies() == [sp.Heartbeat(None, 0.0, 0, 0.0, 0.0)]
    assert rig.agent.state is State.IDLE and rig.agent.instance is None
    rig.give(sp.Stop("web-shadow-1"))                      # again: the same answer
    assert rig.bodies() == [sp.Heartbeat(None, 0.0, 0, 0.0, 0.0)] and rig.calls() == []


def test_forged_replayed_foreign_and_malformed_hub_datagrams_are_dropped(rig):
    rig.hello_acked()
    (part,) = launch_parts(ORDER, SLOT)
    wrong_way = rig.hub(sp.Heartbeat(None, 0, 0, 0, 0))     # authentic, but an agent's message
    good = rig.hub(part)
    for data in (wrong_way, rig.hub(part, key=b"another key"), rig.hub(part, slot="slot-2"),
                 good[:-1] + bytes([good[-1] ^ 1]), good[:30], b"hello"):
        rig.agent.receive(data, ("6.6.6.6", 6700))
    assert rig.launcher.started == [] and rig.take() == [] and rig.calls() == []
    rig.agent.receive(good, ("192.168.1.1", 6700))
    assert len(rig.launcher.started) == 1
    rig.give(sp.Stop("web-shadow-1"))
    rig.take()
    rig.agent.receive(good, ("192.168.1.1", 6700))                  # replayed after STOP
    assert len(rig.launcher.started) == 1 and rig.take() == []
    assert rig.agent.rejected == {"bad_mac": 2, "unknown_slot": 1, "malformed": 2,
                                  "replay": 1}


def test_a_launch_in_several_parts_starts_once_all_have_arrived(rig):
    rig.hello_acked()
    big = LaunchOrder("web-shadow-1", "web", (IPv4Interface("10.0.0.5/24"),), None,
                      {"Fuzzing": {"corpus": ["x" * 100] * 30}})
    parts = launch_parts(big, SLOT)
    assert len(parts) >= 3
    for part in reversed(parts[1:]):
        rig.give(part)
    assert rig.launcher.started == [] and rig.take() == []
    rig.give(parts[0])
    assert len(rig.launcher.started) == 1
    assert rig.bodies() == [sp.Ready("web-shadow-1", (), ("Fuzzing",))]


def test_a_launch_of_another_instance_ends_the_running_one_first(rig):
    rig.launched()
    first = rig.launcher.started[0]
    other = LaunchOrder("web-shadow-9", "web", (IPv4Interface("10.0.0.9/24"),))
    rig.give(launch_parts(other, SLOT)[0])
    assert first.stopped and rig.calls() == [("delete", "10.0.0.5/24"),
                                             ("replace", "10.0.0.9/24", FOREVER, FOREVER)]
    assert rig.bodies() == [sp.Ready("web-shadow-9")]
    assert rig.agent.instance.order == other


def test_a_failing_ip_command_or_image_is_failed_and_leaves_no_address(rig):
    two = LaunchOrder("web-shadow-1", "web", (IPv4Interface("10.0.0.5/24"),
                                              IPv4Interface("10.0.1.5/24")))
    rig.hello_acked()
    rig.addresses.fail_on = IPv4Interface("10.0.1.5/24")
    rig.give(launch_parts(two, SLOT)[0])
    (failed,) = rig.bodies()
    assert isinstance(failed, sp.Failed) and "File exists" in failed.reason
    assert rig.launcher.started == [] and rig.addresses.on == set()
    assert rig.agent.state is State.IDLE
    rig.addresses.fail_on = None
    rig.launcher.error = FileNotFoundError(2, "No such file or directory", "web")
    rig.give(launch_parts(two, SLOT)[0])
    assert rig.bodies() == [sp.Failed("web-shadow-1",
                                      "[Errno 2] No such file or directory: 'web'")]
    assert rig.addresses.on == set()
    rig.give(launch_parts(LaunchOrder("web-shadow-1", "web 'unclosed", ()), SLOT)[0])
    assert "No closing quotation" in rig.bodies()[0].reason


def test_profiles_are_started_polled_and_their_findings_sent_until_acknowledged():
    FakeProfile.made.clear()
    rig = Rig(profiles={"IDS_Signature_Scan": FakeProfile}).launched()
    (profile,) = FakeProfile.made
    assert profile.ctx.settings == {"signatures": []} and profile.ctx.pgid == 4242
    assert profile.ctx.interface == "eth1" and profile.ctx.addresses == ORDER.addresses
    finding = sp.Finding("IDS_Signature_Scan", "high", None, "rule 1", profile.ctx.wallclock())
    profile.pending = [finding]
    rig.at(0.2)
    (sent,) = rig.take()
    assert sent.body.findings == (finding,) and sent.body.instance_id == "web-shadow-1"
    rig.at(2.2)                                            # no ACK: again, same seq
    again = [m for m in rig.take() if isinstance(m.body, sp.Findings)]
    assert [m.body for m in again] == [sent.body] and again[0].counter > sent.counter
    rig.give(sp.Ack(sent.counter))                         # the first try's, late: enough
    for t in (4.2, 6.2, 8.2):
        rig.at(t)
        assert not [m for m in rig.take() if isinstance(m.body, sp.Findings)]
    profile.pending = [finding]
    rig.at(10.2)
    rig.take()
    tries = 1
    for t in (12.2, 14.2, 16.2, 18.2, 20.2, 22.2):         # 5 tries in all, then given up
        rig.at(t)
        tries += len([m for m in rig.take() if isinstance(m.body, sp.Findings)])
    assert tries == agent_module.TRIES


def test_at_most_64_findings_batches_await_an_ack_the_oldest_given_up(caplog):
    FakeProfile.made.clear()
    rig = Rig(profiles={"IDS_Signature_Scan": FakeProfile}).launched()
    (profile,) = FakeProfile.made
    profile.pending = [sp.Finding("IDS_Signature_Scan", "low", None, f"{i} " + "x" * 700, i)
                       for i in range(70)]                 # one finding per datagram
    rig.at(0.2)
    sent = [m.body.seq for m in rig.take()]
    assert len(sent) == 70 and sorted(rig.agent._pending) == sorted(sent[6:])
    assert sum("too many awaiting an ACK" in m for m in caplog.messages) == 6


def test_a_failing_profile_is_stopped_and_the_instance_goes_on(caplog):
    FakeProfile.made.clear()
    rig = Rig(profiles={"IDS_Signature_Scan": FakeProfile}).launched()
    (profile,) = FakeProfile.made
    profile.fail = True
    rig.at(0.2)
    assert profile.stopped and rig.agent.instance.profiles == {}
    assert "profile IDS_Signature_Scan failed and is stopped: capture died" in caplog.messages
    rig.at(1)
    assert rig.bodies()[-1].instance_id == "web-shadow-1"


def test_stop_of_the_agent_ends_the_instance_and_says_so(rig):
    FakeProfile.made.clear()
    rig = Rig(profiles={"IDS_Signature_Scan": FakeProfile}).launched()
    rig.agent.stop()
    assert rig.bodies() == [sp.Failed("web-shadow-1", "agent stopped")]
    assert rig.launcher.started[0].stopped and FakeProfile.made[0].stopped
    assert rig.calls() == [("delete", "10.0.0.5/24")]
    assert rig.agent.state is State.STOPPED and rig.agent.deadline() is None
    rig.give(launch_parts(ORDER, SLOT)[0])
    assert len(rig.launcher.started) == 1 and rig.take() == []


def test_a_new_hub_epoch_is_logged_and_used_from_then_on(rig, caplog):
    rig.launched()
    caplog.set_level(logging.INFO, "hub-shadow-agent")
    rig.hub.epoch = 78
    rig.give(launch_parts(ORDER, SLOT)[0])
    assert "hub restarted (epoch 77 -> 78)" in caplog.messages
    rig.at(1)
    assert [m.epoch for m in rig.take()] == [78, 78]


class MeteredProfile(FakeProfile):
    """A profile with a lag and figures, as Performance_Profiling has."""

    def __init__(self) -> None:
        super().__init__()
        self.lag_ms, self.figures = 0.0, {}

    def metrics(self):
        return self.figures


def test_heartbeats_carry_the_largest_lag_and_the_merged_metrics_of_the_profiles(caplog):
    FakeProfile.made.clear()
    order = LaunchOrder("web-shadow-1", "web", (IPv4Interface("10.0.0.5/24"),), None,
                        {"IDS_Signature_Scan": {}, "Performance_Profiling": {},
                         "Anomaly_Detection": {}})
    rig = Rig(profiles={"IDS_Signature_Scan": MeteredProfile,
                        "Performance_Profiling": MeteredProfile,
                        "Anomaly_Detection": FakeProfile}).launched(order)   # no lag, no metrics
    ids, perf, _ = FakeProfile.made
    ids.lag_ms, perf.lag_ms = 250.04, 12.0
    ids.figures = {"rules": 3}
    perf.figures = {"latency_p50_ms": 1.5, "latency_p99_ms": 9.25, "replays": 40.0,
                    "Bad-Name": 1.0, "cpu_percent": float("nan"), "flag": True}
    rig.at(1)
    [beat] = rig.bodies()
    assert beat.lag_ms == 250.0
    assert beat.metrics == {"latency_p50_ms": 1.5, "latency_p99_ms": 9.25, "replays": 40.0,
                            "rules": 3.0}
    assert sum("left out" in m for m in caplog.messages) == 3
    rig.at(2)                                              # logged once a name
    assert rig.bodies()[0].metrics == beat.metrics
    assert sum("left out" in m for m in caplog.messages) == 3
    ids.lag_ms, perf.lag_ms = float("inf"), 0.0            # not a lag: left out
    ids.figures = perf.figures = {}
    rig.at(3)
    assert rig.bodies() == [sp.Heartbeat("web-shadow-1", 0.0, 0, 0.0, 0.0)]


def test_metrics_are_cut_to_16_and_to_what_fits_in_a_datagram():
    FakeProfile.made.clear()
    long_slot, long_id = "s" * 64, "i" * 64
    rig = Rig(profiles={"Performance_Profiling": MeteredProfile})
    rig.agent.slot = long_slot
    rig.agent.receiver = sp.Receiver(lambda sid: KEY if sid == long_slot else None)
    sent = []
    rig.agent._send_datagram = lambda data, to: sent.append(data)
    rig.agent.start()
    rig.agent.receive(rig.hub(sp.Ack(sp.decode(sent.pop(), lambda s: KEY).counter),
                              slot=long_slot), ("192.168.1.1", 6700))
    order = LaunchOrder(long_id, "web", (), None, {"Performance_Profiling": {}})
    for part in launch_parts(order, long_slot):
        rig.agent.receive(rig.hub(part, slot=long_slot), ("192.168.1.1", 6700))
    (profile,) = FakeProfile.made
    profile.figures = {f"m{i:02d}_" + "x" * 36: -1.2345678901234567e-300 for i in range(20)}
    rig.stats.drops = 2 ** 64 - 1
    sent.clear()
    rig.at(1)
    [data] = sent
    beat = sp.decode(data, lambda s: KEY).body
    assert len(data) <= sp.MAX_DATAGRAM and 10 <= len(beat.metrics) < 16
    assert list(beat.metrics) == sorted(profile.figures)[:len(beat.metrics)]
    # the seven figures of Performance_Profiling, however large, always fit
    profile.figures = {name: 123456789012.345 for name in (
        "latency_p50_ms", "latency_p99_ms", "throughput_bps", "replays", "replay_drops",
        "cpu_percent", "memory_bytes")}
    sent.clear()
    rig.at(2)
    assert len(sp.decode(sent[0], lambda s: KEY).body.metrics) == 7


def test_heartbeat_metrics_on_the_wire_and_old_heartbeats_still_read():
    beat = sp.Heartbeat("i-1", 1.0, 0, 5.5, 2.0, {"latency_p99_ms": 12.5, "replays": 3})
    assert json.loads(beat.pack())["metrics"] == {"latency_p99_ms": 12.5, "replays": 3}
    assert sp.Heartbeat.unpack(beat.pack()) == beat
    assert "metrics" not in json.loads(sp.Heartbeat(None, 0, 0, 0, 0).pack())
    old = b'{"instance_id":"i-1","pps":1.0,"drops":0,"lag_ms":0.0,"cpu_percent":2.0}'
    assert sp.Heartbeat.unpack(old) == sp.Heartbeat("i-1", 1.0, 0, 0.0, 2.0)
    for bad in ({"Bad": 1}, {"x" * 41: 1}, {"ok": "1"}, {"ok": True}, {"ok": None},
                {f"m{i}": 1 for i in range(17)}, [1]):
        data = old[:-1] + b',"metrics":' + json.dumps(bad).encode() + b"}"
        with pytest.raises(ValueError):
            sp.Heartbeat.unpack(data)
        if isinstance(bad, dict):                          # nor can one be made
            with pytest.raises(ValueError):
                sp.Heartbeat("i-1", 1.0, 0, 0.0, 2.0, bad)
    nan = old[:-1] + b',"metrics":{"x":NaN}}'
    with pytest.raises(ValueError):
        sp.Heartbeat.unpack(nan)
    assert sp.Heartbeat.unpack(old[:-1] + b',"metrics":{"delta":-2.5}}').metrics == {
        "delta": -2.5}


def test_an_image_that_ends_is_polled_once_more_before_failed():
    FakeProfile.made.clear()
    rig = Rig(profiles={"Fuzzing": FakeProfile}).launched(
        LaunchOrder("web-shadow-1", "web", (IPv4Interface("10.0.0.5/24"),), None,
                    {"Fuzzing": {}}))
    (profile,) = FakeProfile.made
    rig.at(0.2)
    rig.take()
    crash = sp.Finding("Fuzzing", "critical", None, "crash on 00ff", 1.0)
    profile.pending = [crash]
    rig.launcher.started[0].status = -11
    rig.clock.t = START + 0.3                              # before the next poll is due
    rig.agent.tick()
    findings, failed = rig.bodies()[:2]
    assert findings.findings == (crash,)
    assert failed == sp.Failed("web-shadow-1", "image killed by SIGSEGV")
    assert profile.stopped and rig.agent.state is State.IDLE


# -- the host, for real ------------------------------------------------------------------

def test_sys_stats_reads_the_interface_counters_and_a_process_groups_cpu(tmp_path):
    stats_dir = tmp_path / "net" / "eth1" / "statistics"
    stats_dir.mkdir(parents=True)
    for name, value in (("rx_packets", 1234), ("rx_dropped", 5), ("rx_missed_errors", 2)):
        (stats_dir / name).write_text(f"{value}\n")
    proc = tmp_path / "proc"
    for pid, comm, pgrp, times in ((10, "web", 10, (100, 50, 7, 3)),
                                   (11, "a (b) c", 10, (20, 30, 0, 0)),
                                   (12, "other", 99, (1000, 1000, 0, 0))):
        (proc / str(pid)).mkdir(parents=True)
        fields = ["S", "1", str(pgrp)] + ["0"] * 8 + [str(t) for t in times] + ["0"] * 30
        (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    stats = SysStats("eth1", str(tmp_path / "net"), str(proc))
    assert stats.interface() == InterfaceCounters(1234, 7)
    assert stats.cpu_seconds(10) == pytest.approx(210 / os.sysconf("SC_CLK_TCK"))
    for pid, rss in ((10, 100), (11, 28), (12, 5000)):    # field 24 of stat: rss, in pages
        path = proc / str(pid) / "stat"
        head, tail = path.read_text().rsplit(")", 1)
        fields = tail.split()
        fields[21] = str(rss)
        path.write_text(head + ") " + " ".join(fields) + "\n")
    assert stats.memory_bytes(10) == 128 * os.sysconf("SC_PAGE_SIZE")
    assert stats.memory_bytes(77) == 0
    assert SysStats("nope", str(tmp_path / "net"), str(proc)).interface() == (0, 0)


def test_the_launcher_starts_its_own_process_group_and_stop_ends_all_of_it(tmp_path):
    pids = tmp_path / "pids"
    # The leader and a child that both shrug off SIGTERM: SIGKILL after the grace.
    script = f"trap '' TERM; sleep 30 & echo $$ $! > {pids}; wait"
    process = PopenLauncher().start(["sh", "-c", script])
    try:
        _until(lambda: pids.exists() and pids.read_text().strip())
        leader, child = map(int, pids.read_text().split())
        assert os.getpgid(leader) == leader == process.pid and os.getpgid(child) == leader
        assert process.poll() is None
        began = time.monotonic()
        process.stop(grace=0.3)
        assert 0.3 <= time.monotonic() - began < 3
        assert process.poll() == -signal.SIGKILL
        # SIGKILL reaches the group at once; the kernel takes a moment to end the child.
        _until(lambda: not _alive(child), timeout=3.0)      # else: "timed out"
    finally:
        _kill_group(process.pid)
    quick = PopenLauncher().start(["sleep", "30"])
    began = time.monotonic()
    quick.stop()
    assert time.monotonic() - began < 1 and quick.poll() == -signal.SIGTERM
    with pytest.raises(OSError):
        PopenLauncher().start(["/nonexistent/image"])


def test_a_group_already_gone_stops_at_once():
    process = GroupProcess(subprocess.Popen(["true"], process_group=0))
    process.popen.wait()
    process.stop()
    assert process.poll() == 0


# -- the process ---------------------------------------------------------------------------

def test_the_real_agent_over_loopback_launches_reports_and_cleans_up_on_sigterm(tmp_path):
    log = tmp_path / "ip.log"
    ip_command = shlex.join([sys.executable, str(_fake_ip(tmp_path)), str(log)])
    pidfile = tmp_path / "image.pid"
    order = LaunchOrder("web-shadow-1", shlex.join(["sh", "-c", f"echo $$ > {pidfile}; "
                                                    "exec sleep 30"]),
                        (IPv4Interface("10.0.0.5/24"),), IPv4Address("10.0.0.1"),
                        {"No_Such_Profile": {}})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hub:
        hub.bind(("127.0.0.1", 0))
        hub.settimeout(10)                                  # the deadline of every step
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.agents.shadow.main", "--server", "127.0.0.1",
             "--port", str(hub.getsockname()[1]), "--slot", SLOT, "--key", "s3cret-slot-key",
             "--interface", "lo", "--ip-command", ip_command],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            receiver, send = sp.Receiver(keys), Hub()

            def expect(kind):
                while True:
                    data, source = hub.recvfrom(2048)
                    msg = receiver.accept(data)
                    if isinstance(msg.body, kind):
                        return msg, source

            hello, agent = expect(sp.Hello)
            assert (hello.body.interface, hello.epoch) == ("lo", 0)
            hub.sendto(send(sp.Ack(hello.counter)), agent)
            for part in launch_parts(order, SLOT):
                hub.sendto(send(part), agent)
            ready, _ = expect(sp.Ready)
            assert ready.body == sp.Ready("web-shadow-1", (), ("No_Such_Profile",))
            assert ready.epoch == send.epoch
            beat, _ = expect(sp.Heartbeat)
            assert beat.body.instance_id == "web-shadow-1" and beat.body.pps >= 0
            _until(lambda: pidfile.exists() and pidfile.read_text().strip())
            image = int(pidfile.read_text())
            assert _alive(image) and os.getpgid(image) == image
            proc.send_signal(signal.SIGTERM)
            failed, _ = expect(sp.Failed)
            assert failed.body == sp.Failed("web-shadow-1", "agent stopped")
            assert proc.wait(timeout=10) == 0
            assert not _alive(image)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if pidfile.exists() and pidfile.read_text().strip():
                _kill_group(int(pidfile.read_text()))
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert "hub-shadow-agent: HELLO -> ACK in" in stderr
    assert "hub-shadow-agent: profile No_Such_Profile not available in this agent yet" in stderr
    assert "hub-shadow-agent: stopped instance web-shadow-1 (agent stopping)" in stderr
    assert log.read_text().splitlines() == [
        "addr replace 10.0.0.5/24 dev lo valid_lft forever preferred_lft forever",
        "addr del 10.0.0.5/24 dev lo"]


def test_the_agent_imports_nothing_but_the_standard_library():
    code = textwrap.dedent("""
        import sys
        import controller.agents.shadow.main
        print([m for m in sorted(sys.modules) if m.split(".")[0] not in sys.stdlib_module_names
               and m.split(".")[0] not in ("controller", "__main__")])
        print(sorted({m for m in sys.modules if m.startswith("controller.")
                      and not m.startswith(("controller.agents", "controller.rap"))}))
    """)
    # -S: no site (no .pth of the virtualenv); the package from the working directory
    out = subprocess.run([sys.executable, "-S", "-E", "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out.split("\n")[:2] == ["[]", "[]"]


def _fake_ip(tmp_path: Path) -> Path:
    """A stand-in for `ip`: appends its arguments to the log given first."""
    script = tmp_path / "fake_ip.py"
    script.write_text("import sys\nwith open(sys.argv[1], 'a') as f:\n"
                      "    f.write(' '.join(sys.argv[2:]) + '\\n')\n")
    return script


def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
