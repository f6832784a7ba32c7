"""hub-rap, the resource's RAP client: its state machine driven by the hub's messages and a
clock, its `ip` calls, the real process over loopback UDP, and its stdlib-only imports."""
from __future__ import annotations

import logging
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from controller.rap import protocol as rap
from controller.rap.client import Client, State
from controller.rap.addresses import FOREVER, AddressError, IpAddresses

ROOT = Path(__file__).resolve().parents[2]
RID = "web-1"
KEY = rap.key_bytes("s3cret-key")
SERVER = IPv4Address("192.168.1.1")
LEASE = rap.Lease(IPv4Address("10.200.3.5"), 28, 60, 60)
NEW = rap.Lease(IPv4Address("10.200.7.2"), 28, 60, 60)
START = 1000.0


def keys(rid):
    return KEY if rid == RID else None


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


class FakeAddresses:
    """The interface's addresses as `ip` would keep them; `calls` records every change."""

    def __init__(self, *initial: str) -> None:
        self.on = {IPv4Interface(a): None for a in initial}
        self.calls: list[tuple] = []
        self.fail = False

    def ipv4(self):
        return list(self.on)

    def replace(self, address, valid, preferred):
        self.calls.append(("replace", str(address), valid, preferred))
        if self.fail:
            raise AddressError("ip addr replace: RTNETLINK answers: Operation not permitted")
        self.on[address] = (valid, preferred)

    def change(self, address, valid, preferred):
        self.calls.append(("change", str(address), valid, preferred))
        if address not in self.on:
            raise AddressError(f"ip addr change {address}: Cannot assign requested address")
        self.on[address] = (valid, preferred)

    def delete(self, address):
        self.calls.append(("delete", str(address)))
        if self.on.pop(address, 0) == 0:
            raise AddressError(f"ip addr del {address}: Cannot assign requested address")

    def default_route(self, source):
        self.calls.append(("route", str(source)))


class Hub:
    """Encodes the hub's messages as the hub would: growing counters, its epoch."""

    def __init__(self, epoch: int = 1234) -> None:
        self.epoch, self.counter = epoch, 0

    def __call__(self, type_, key=KEY, resource=RID, **kw) -> bytes:
        self.counter += 1
        return rap.encode(rap.Message(type_, resource, self.counter, rap.new_nonce(), self.epoch,
                                      **kw), key)


class Rig:
    def __init__(self, *initial: str) -> None:
        self.clock, self.hub = Clock(), Hub()
        self.addresses = FakeAddresses(*initial)
        self.sent: list[tuple[rap.Message, tuple[str, int]]] = []
        self.client = Client(RID, KEY, SERVER, 6699, self.addresses,
                             lambda data, to: self.sent.append((rap.decode(data, keys), to)),
                             now=self.clock)

    def take(self) -> list[tuple[rap.Type, str, IPv4Address | None]]:
        """What the client sent since the last take: (type, destination ip, address)."""
        out = [(m.type, to[0], m.address) for m, to in self.sent]
        assert all(to[1] == 6699 for _, to in self.sent)
        self.sent.clear()
        return out

    def calls(self) -> list[tuple]:
        out, self.addresses.calls = self.addresses.calls, []
        return out

    def give(self, type_, **kw) -> None:
        self.client.receive(self.hub(type_, **kw), ("192.168.1.1", 6699))

    def at(self, t: float) -> None:
        """The clock at START + t, and the client's timers run as a select loop would."""
        self.clock.t = START + t
        self.client.tick()

    def leased(self) -> "Rig":
        self.client.start()
        self.give(rap.Type.OFFER, lease=LEASE)
        self.take(), self.calls()
        return self


@pytest.fixture
def rig():
    return Rig("192.168.1.10/24")


def test_register_goes_to_the_server_and_backs_off_from_1_s_doubling_to_32_s(rig):
    rig.client.start()
    times = [START]
    (first, to), = rig.sent
    assert (first.type, first.epoch, to) == (rap.Type.REGISTER, 0, ("192.168.1.1", 6699))
    rig.sent.clear()
    for _ in range(8):
        rig.at(rig.client.deadline() - START - 0.001)
        assert rig.sent == []                        # not before its time
        rig.at(rig.client.deadline() - START)
        assert rig.take() == [(rap.Type.REGISTER, "192.168.1.1", None)]
        times.append(rig.clock.t)
    assert [b - a for a, b in zip(times, times[1:])] == [1, 2, 4, 8, 16, 32, 32, 32]
    assert rig.client.state is State.SELECTING


def test_register_is_broadcast_while_the_interface_has_no_ipv4_address():
    rig = Rig()
    rig.client.start()
    assert rig.take() == [(rap.Type.REGISTER, "255.255.255.255", None)]


def test_an_offer_puts_the_address_alone_on_the_interface_and_is_acked(rig, caplog):
    caplog.set_level(logging.INFO, "hub-rap")
    rig.client.start()
    rig.take()
    rig.at(1.0)                                       # REGISTER again, then the OFFER
    rig.clock.t += 0.25
    rig.give(rap.Type.OFFER, lease=LEASE)
    assert rig.calls() == [("replace", "10.200.3.5/28", 60, 60), ("delete", "192.168.1.10/24"),
                           ("route", "10.200.3.5")]
    assert rig.addresses.ipv4() == [IPv4Interface("10.200.3.5/28")]
    (ack, to), = [s for s in rig.sent if s[0].type == rap.Type.ACK]
    assert (ack.address, ack.epoch, to[0]) == (LEASE.address, 1234, "192.168.1.1")
    assert rig.client.state is State.BOUND
    assert "leased 10.200.3.5/28 (valid 60 s, epoch 1234)" in caplog.messages
    assert "REGISTER -> OFFER in 250.0 ms (try 2)" in caplog.messages
    assert "removed 192.168.1.10/24 (not a shard address held)" in caplog.messages


def test_t1_renews_to_the_server_t2_rebinds_to_broadcast_and_expiry_starts_over(rig, caplog):
    rig.leased()
    caplog.set_level(logging.INFO, "hub-rap")
    assert rig.client.deadline() == START + 30
    rig.at(29.9)
    assert rig.take() == []
    rig.at(30)
    assert rig.take() == [(rap.Type.RENEW, "192.168.1.1", LEASE.address)]
    assert rig.client.state is State.RENEWING and rig.sent == []
    rig.at(31)
    assert rig.take() == []
    rig.at(32)
    assert rig.take() == [(rap.Type.RENEW, "192.168.1.1", LEASE.address)]
    rig.at(52.5)
    assert rig.take() == [(rap.Type.REBIND, "255.255.255.255", LEASE.address)]
    assert rig.client.state is State.REBINDING
    rig.at(54.5)
    assert rig.take() == [(rap.Type.REBIND, "255.255.255.255", LEASE.address)]
    assert rig.calls() == []
    rig.at(60)
    assert rig.calls() == [("delete", "10.200.3.5/28")]
    assert rig.take() == [(rap.Type.REGISTER, "255.255.255.255", None)]   # no address left
    assert rig.client.state is State.SELECTING and rig.client.current is None
    assert "lease of 10.200.3.5/28 expired; registering again" in caplog.messages


def test_an_offer_answering_renew_refreshes_the_lifetimes_and_restarts_the_timers(rig, caplog):
    rig.leased()
    caplog.set_level(logging.INFO, "hub-rap")
    rig.at(30)
    rig.take()
    rig.clock.t += 0.004
    rig.give(rap.Type.OFFER, lease=rap.Lease(LEASE.address, 28, 50, 60))
    assert rig.calls() == [("change", "10.200.3.5/28", 60, 50)]
    assert rig.take() == [(rap.Type.ACK, "192.168.1.1", LEASE.address)]
    assert rig.client.state is State.BOUND
    assert rig.client.deadline() == pytest.approx(START + 30.004 + 30)
    assert "RENEW -> OFFER in 4.0 ms" in caplog.messages
    assert "renewed 10.200.3.5/28 (valid 60 s)" in caplog.messages


def test_a_new_epoch_in_an_offer_is_logged_and_used_from_then_on(rig, caplog):
    rig.leased()
    caplog.set_level(logging.INFO, "hub-rap")
    rig.at(52.5)                                      # REBIND: the hub restarted meanwhile
    rig.hub.epoch = 99
    rig.give(rap.Type.OFFER, lease=LEASE)
    assert "hub restarted (epoch 1234 -> 99)" in caplog.messages
    assert rig.client.state is State.BOUND and rig.client.epoch == 99
    rig.at(52.5 + 30)
    assert [(m.type, m.epoch) for m, _ in rig.sent] == [(rap.Type.REBIND, 1234),
                                                        (rap.Type.ACK, 99), (rap.Type.RENEW, 99)]


def test_announce_adds_the_new_address_deprecates_the_old_and_acks_once_per_copy(rig, caplog):
    rig.leased()
    caplog.set_level(logging.INFO, "hub-rap")
    rig.clock.t += 20
    rig.give(rap.Type.ANNOUNCE, lease=NEW, address=LEASE.address)
    assert rig.calls() == [("replace", "10.200.7.2/28", 60, 60), ("route", "10.200.7.2"),
                           ("change", "10.200.3.5/28", FOREVER, 0)]   # until RELEASE
    assert set(rig.addresses.ipv4()) == {IPv4Interface("10.200.7.2/28"),
                                         IPv4Interface("10.200.3.5/28")}
    assert rig.take() == [(rap.Type.ACK, "192.168.1.1", NEW.address)]
    assert "announced 10.200.7.2/28, 10.200.3.5 deprecated" in caplog.messages
    rig.give(rap.Type.ANNOUNCE, lease=NEW, address=LEASE.address)   # the hub's retransmission
    assert rig.calls() == []
    assert rig.take() == [(rap.Type.ACK, "192.168.1.1", NEW.address)]
    rig.at(20 + 30)                                   # T1 of the new lease renews the new one
    assert rig.take() == [(rap.Type.RENEW, "192.168.1.1", NEW.address)]


def test_release_removes_a_deprecated_address_and_of_the_current_one_starts_over(rig, caplog):
    rig.leased()
    caplog.set_level(logging.INFO, "hub-rap")
    rig.give(rap.Type.ANNOUNCE, lease=NEW, address=LEASE.address)
    rig.take(), rig.calls()
    rig.give(rap.Type.RELEASE, address=LEASE.address)
    assert rig.calls() == [("delete", "10.200.3.5/28")]
    assert "released 10.200.3.5" in caplog.messages and rig.take() == []
    rig.give(rap.Type.RELEASE, address=LEASE.address)                 # not held any more
    assert rig.calls() == [] and rig.client.state is State.BOUND
    rig.give(rap.Type.RELEASE, address=NEW.address)
    assert rig.calls() == [("delete", "10.200.7.2/28")]
    assert rig.take() == [(rap.Type.REGISTER, "255.255.255.255", None)]


def test_nak_removes_every_shard_address_and_registers_again(rig):
    rig.leased()
    rig.give(rap.Type.ANNOUNCE, lease=NEW, address=LEASE.address)
    rig.take(), rig.calls()
    rig.give(rap.Type.NAK, reason=rap.Reason.UNKNOWN_LEASE)
    assert sorted(rig.calls()) == [("delete", "10.200.3.5/28"), ("delete", "10.200.7.2/28")]
    assert rig.take() == [(rap.Type.REGISTER, "255.255.255.255", None)]
    assert rig.client.state is State.SELECTING
    assert rig.client.current is None and rig.client.deprecated == {}


def test_nak_while_selecting_keeps_the_register_back_off(rig):
    rig.client.start()
    rig.at(1)
    rig.take()
    rig.give(rap.Type.NAK, reason=rap.Reason.NO_ADDRESS)
    assert rig.take() == [] and rig.client.deadline() == START + 3


def test_forged_replayed_foreign_and_malformed_datagrams_are_dropped_and_counted(rig):
    rig.client.start()
    rig.take()
    offer = rig.hub(rap.Type.OFFER, lease=LEASE)
    for data in (rig.hub(rap.Type.OFFER, lease=LEASE, key=b"another key"),
                 rig.hub(rap.Type.OFFER, lease=LEASE, resource="web-2"),
                 offer[:-1] + bytes([offer[-1] ^ 1]), offer[:20], b"hello"):
        rig.client.receive(data, ("6.6.6.6", 6699))
    assert rig.calls() == [] and rig.take() == []
    rig.client.receive(offer, ("192.168.1.1", 6699))
    assert rig.take() == [(rap.Type.ACK, "192.168.1.1", LEASE.address)]
    rig.calls()
    rig.client.receive(offer, ("192.168.1.1", 6699))             # the same OFFER, replayed
    assert rig.calls() == [] and rig.take() == []
    assert rig.client.rejected == {"bad_mac": 2, "unknown_resource": 1, "malformed": 2,
                                   "replay": 1}


def test_a_failing_ip_command_acks_nothing_and_the_next_offer_is_taken(rig, caplog):
    rig.client.start()
    rig.take()
    rig.addresses.fail = True
    rig.give(rap.Type.OFFER, lease=LEASE)
    assert rig.take() == [] and rig.client.current is None
    assert rig.client.state is State.SELECTING
    assert any("Operation not permitted" in m for m in caplog.messages)
    rig.addresses.fail = False
    rig.at(1)
    rig.give(rap.Type.OFFER, lease=LEASE)
    assert rig.take()[-1] == (rap.Type.ACK, "192.168.1.1", LEASE.address)
    assert rig.client.state is State.BOUND


def test_stop_releases_every_address_held_deprecated_ones_included(rig):
    rig.leased()
    rig.clock.t += 10
    rig.give(rap.Type.ANNOUNCE, lease=NEW, address=LEASE.address)
    rig.clock.t += 10
    rig.give(rap.Type.ANNOUNCE, lease=rap.Lease(IPv4Address("10.200.9.9"), 29, 60, 60),
             address=NEW.address)
    rig.take(), rig.calls()
    rig.at(60.5)          # the first lease's lifetime is over: deprecated, it stays till RELEASE
    rig.take()                                        # (and the current one's T1 passed)
    rig.client.stop()
    assert rig.take() == [(rap.Type.RELEASE, "192.168.1.1", IPv4Address("10.200.9.9")),
                          (rap.Type.RELEASE, "192.168.1.1", LEASE.address),
                          (rap.Type.RELEASE, "192.168.1.1", NEW.address)]
    assert rig.calls() == [("delete", "10.200.9.9/29"), ("delete", "10.200.3.5/28"),
                           ("delete", "10.200.7.2/28")]
    assert rig.client.state is State.STOPPED and rig.client.deadline() is None
    rig.give(rap.Type.OFFER, lease=LEASE)
    assert rig.take() == [] and rig.calls() == []


def test_ip_addresses_runs_ip_as_the_decisions_say(tmp_path):
    log = tmp_path / "ip.log"
    script = _fake_ip(tmp_path, log)
    ip = IpAddresses("eth1", [sys.executable, str(script), str(log)])
    assert ip.ipv4() == [IPv4Interface("127.0.0.1/8")]
    ip.replace(IPv4Interface("10.200.3.5/28"), 60, 30)
    ip.change(IPv4Interface("10.200.3.5/28"), 12, 0)
    ip.delete(IPv4Interface("10.200.3.5/28"))
    ip.default_route(IPv4Address("10.200.3.5"))
    assert _lines(log) == [
        "-j -4 addr show dev eth1",
        "addr replace 10.200.3.5/28 dev eth1 valid_lft 60 preferred_lft 30",
        "addr change 10.200.3.5/28 dev eth1 valid_lft 12 preferred_lft 0",
        "addr del 10.200.3.5/28 dev eth1", "route replace default dev eth1 src 10.200.3.5"]
    with pytest.raises(AddressError, match="no such thing"):
        IpAddresses("eth1", [sys.executable, "-c", "import sys; sys.exit('no such thing')"]
                    ).default_route(IPv4Address("10.200.3.5"))


def test_the_real_client_over_loopback_registers_takes_the_offer_acks_and_releases(tmp_path):
    log = tmp_path / "ip.log"
    ip_command = shlex.join([sys.executable, str(_fake_ip(tmp_path, log)), str(log)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hub:
        hub.bind(("127.0.0.1", 0))
        hub.settimeout(10)                            # the deadline of every step below
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.rap.client", "--server", "127.0.0.1",
             "--port", str(hub.getsockname()[1]), "--resource", RID, "--key", "s3cret-key",
             "--interface", "lo", "--ip-command", ip_command],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            receiver = rap.Receiver(keys)
            data, client = hub.recvfrom(2048)
            register = receiver.accept(data)
            assert (register.type, register.resource, register.epoch) == (rap.Type.REGISTER, RID, 0)
            hub.sendto(rap.encode(rap.Message(rap.Type.OFFER, RID, 1, rap.new_nonce(), 77,
                                              lease=LEASE), KEY), client)
            data, source = hub.recvfrom(2048)
            ack = receiver.accept(data)
            assert (ack.type, ack.address, ack.epoch, source) == (rap.Type.ACK, LEASE.address,
                                                                  77, client)
            proc.send_signal(signal.SIGTERM)
            release = receiver.accept(hub.recvfrom(2048)[0])
            assert (release.type, release.address) == (rap.Type.RELEASE, LEASE.address)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert "hub-rap: leased 10.200.3.5/28 (valid 60 s, epoch 77)" in stderr
    assert "hub-rap: REGISTER -> OFFER in" in stderr
    assert "hub-rap: released 10.200.3.5 (stopping)" in stderr
    changes = [line for line in _lines(log) if not line.startswith("-j")]
    assert changes == ["addr replace 10.200.3.5/28 dev lo valid_lft 60 preferred_lft 60",
                       "addr del 127.0.0.1/8 dev lo", "route replace default dev lo src 10.200.3.5",
                       "addr del 10.200.3.5/28 dev lo"]


def test_the_client_imports_nothing_but_the_standard_library():
    code = textwrap.dedent("""
        import sys
        import controller.rap.client
        print([m for m in sorted(sys.modules) if m.split(".")[0] not in sys.stdlib_module_names
               and m.split(".")[0] not in ("controller", "__main__")])
    """)
    # -S: no site (no .pth of the virtualenv); the package from the working directory
    out = subprocess.run([sys.executable, "-S", "-E", "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def _fake_ip(tmp_path: Path, log: Path) -> Path:
    """A stand-in for `ip`: appends its arguments to the log; `-j -4 addr show` answers
    127.0.0.1/8."""
    script = tmp_path / "fake_ip.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        log, args = sys.argv[1], sys.argv[2:]
        with open(log, "a") as f:
            f.write(" ".join(args) + "\\n")
        if args[:2] == ["-j", "-4"]:
            print(json.dumps([{"ifname": "lo", "addr_info": [
                {"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]}]))
    """))
    return script


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines()
