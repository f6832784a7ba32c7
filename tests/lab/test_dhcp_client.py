"""A stock DHCP client (ISC dhclient) configures an interface from controller.features.persona.dhcp's replies.

One veth pair: the client's end in a network namespace, the other end in the
root namespace where a responder thread reads frames from an AF_PACKET socket
and answers with ``decide`` + ``build_reply``, as the hub does with punted
frames.  The client starts from a stale lease for another address, so the
exchange is INIT-REBOOT (nak) -> DISCOVER/OFFER -> REQUEST/ACK, and Debian's
own dhclient-script applies the result: address, mask, lease lifetime,
default route, and nameservers (written to the namespace's private
resolv.conf, which ``ip netns exec`` bind-mounts from /etc/netns/NAME).  The
lease is short, so the client then renews at T1 with a unicast REQUEST to the
server address (ARP for it answered by the responder, as the hub's proxy-ARP
flows would) and gets a unicast ACK to its own address.

Lab tier: a network namespace, raw sockets and a real client.  Needs root,
iproute2 and isc-dhcp-client (scripts/install).  Names start with ``dh``
(scripts/test cleans that prefix up).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from controller import packets
from controller.features.persona.dhcp import build_reply, decide, parse_request

pytestmark = pytest.mark.lab
SUFFIX = os.getpid() % 100000
NS = f"dhns{SUFFIX}"
HOST_IF = f"dh{SUFFIX}r"        # root side, the responder's
CLIENT_IF = f"dh{SUFFIX}c"      # namespace side, dhclient's
CLIENT_MAC = "02:00:00:00:d1:01"
SERVER_MAC = "02:00:00:00:d1:fe"
SERVER_IP = "10.99.0.1"
ASSIGNED = "10.99.0.10"
STALE = "10.98.0.77"
DNS = ("10.99.0.53", "10.99.0.54")
LEASE = 6                       # T1 3 s: dhclient renews after 2.25..3 s
NETNS_ETC = Path("/etc/netns") / NS
MARKER = "# hubshift dhcp test: this namespace's own resolv.conf\n"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def cleanup() -> None:
    sh("ip", "netns", "del", NS, check=False)          # takes the veth pair with it
    sh("ip", "link", "del", HOST_IF, check=False)
    shutil.rmtree(NETNS_ETC, ignore_errors=True)


class Responder:
    """Answers DHCP on one interface exactly as the hub would for an attached client."""

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        # (request kind, ciaddr, IPv4 destination, reply kind)
        self.seen: list[tuple[str, str, str, str | None]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            arp = packets.parse(data)
            if arp and arp.eth_type == packets.ETH_ARP and arp.arp_op == 1 \
                    and arp.arp_tpa == SERVER_IP:
                self.sock.send(arp_reply(data))
                continue
            req = parse_request(data)
            if req is None:
                continue
            assigned = ASSIGNED if req.client_mac == CLIENT_MAC else None
            decision = decide(req, assigned, SERVER_IP)
            self.seen.append((req.kind, req.ciaddr, req.ip_dst,
                              decision.kind if decision else None))
            if decision is not None:
                self.sock.send(build_reply(
                    req, kind=decision.kind, your_ip=ASSIGNED, server_ip=SERVER_IP,
                    server_mac=SERVER_MAC, netmask="255.255.255.0", router=SERVER_IP, dns=DNS,
                    lease_seconds=LEASE, message=decision.reason))

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def arp_reply(request: bytes) -> bytes:
    """SERVER_MAC is at SERVER_IP, to the asker of an ARP request."""
    asker_mac, asker_ip = request[22:28], request[28:32]
    return (asker_mac + packets.mac_bytes(SERVER_MAC) + request[12:14] + request[14:20]
            + b"\x00\x02" + packets.mac_bytes(SERVER_MAC) + socket.inet_aton(SERVER_IP)
            + asker_mac + asker_ip)


@pytest.fixture
def veth() -> Iterator[None]:
    for tool in ("ip", "dhclient"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/install"
    assert os.geteuid() == 0, "needs root (network namespaces, raw sockets)"
    cleanup()
    try:
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", CLIENT_IF)
        sh("ip", "link", "set", CLIENT_IF, "netns", NS)
        sh("ip", "-n", NS, "link", "set", CLIENT_IF, "address", CLIENT_MAC)
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        sh("ip", "link", "set", HOST_IF, "up")
        NETNS_ETC.mkdir(parents=True)
        (NETNS_ETC / "resolv.conf").write_text(MARKER)
        # dhclient-script writes /etc/resolv.conf: it must land in the namespace's copy.
        seen = sh("ip", "netns", "exec", NS, "cat", "/etc/resolv.conf").stdout
        assert seen == MARKER, "ip netns exec did not bind-mount the namespace's resolv.conf"
        yield
    finally:
        cleanup()


def addresses() -> list[dict]:
    out = sh("ip", "-n", NS, "-j", "-4", "addr", "show", "dev", CLIENT_IF).stdout
    return [a for link in json.loads(out or "[]") for a in link.get("addr_info", [])]


def test_stock_dhclient_gets_the_assigned_address(veth: None, tmp_path: Path) -> None:
    leases = tmp_path / "dhclient.leases"
    # A lease the client remembers from elsewhere: it first asks for it back (INIT-REBOOT).
    leases.write_text(
        "lease {\n"
        f"  interface \"{CLIENT_IF}\";\n  fixed-address {STALE};\n"
        "  option subnet-mask 255.255.255.0;\n  option dhcp-lease-time 86400;\n"
        "  option dhcp-server-identifier 10.98.0.1;\n"
        "  renew 4 2099/01/01 00:00:00;\n  rebind 4 2099/01/01 00:00:00;\n"
        "  expire 4 2099/01/01 00:00:00;\n}\n")
    log = (tmp_path / "dhclient.log").open("w")
    with Responder(HOST_IF) as responder:
        client = subprocess.Popen(
            ["ip", "netns", "exec", NS, "dhclient", "-1", "-d", "-v",
             "-lf", str(leases), "-pf", str(tmp_path / "dhclient.pid"), CLIENT_IF],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and client.poll() is None:
                # dhclient-script adds the address first and writes resolv.conf after it
                if any(a["local"] == ASSIGNED for a in addresses()) and all(
                        f"nameserver {ip}" in (NETNS_ETC / "resolv.conf").read_text()
                        for ip in DNS):
                    break
                time.sleep(0.05)
            got = addresses()
            routes = sh("ip", "-n", NS, "-4", "route", "show", "default").stdout
            resolv = (NETNS_ETC / "resolv.conf").read_text()
            bound = len(responder.seen)
            deadline = time.monotonic() + (3 * LEASE if got else 0)
            while time.monotonic() < deadline and client.poll() is None:
                if any(seen[1] != "0.0.0.0" for seen in responder.seen[bound:]):
                    time.sleep(0.5)     # let dhclient-script apply the renewed lease
                    break
                time.sleep(0.05)
            renewed = addresses()
        finally:
            client.terminate()      # ip netns exec execs: this is dhclient's own PID
            try:
                client.wait(timeout=5)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait(timeout=5)
            log.close()
    output = (tmp_path / "dhclient.log").read_text()
    assert [a for a in got if a["local"] == ASSIGNED], f"no address; dhclient said:\n{output}"
    addr = next(a for a in got if a["local"] == ASSIGNED)
    assert addr["prefixlen"] == 24
    assert LEASE - 2 <= addr["valid_life_time"] <= LEASE       # the lease time reached the stack
    assert f"default via {SERVER_IP} dev {CLIENT_IF}" in routes
    assert all(f"nameserver {ip}" in resolv for ip in DNS), resolv
    broadcast = "255.255.255.255"
    assert responder.seen[:bound] == [
        ("request", "0.0.0.0", broadcast, "nak"),              # the stale address was refused
        ("discover", "0.0.0.0", broadcast, "offer"),
        ("request", "0.0.0.0", broadcast, "ack"),
    ], output
    assert f"DHCPACK of {ASSIGNED} from {SERVER_IP}" in output
    # Renewing: unicast to the server from the bound address, acked, address kept.
    assert ("request", ASSIGNED, SERVER_IP, "ack") in responder.seen[bound:], \
        (responder.seen, output)
    assert output.count(f"DHCPACK of {ASSIGNED} from {SERVER_IP}") >= 2, output
    assert any(a["local"] == ASSIGNED for a in renewed)
