"""The unit tier's guard (tests/unit/purity.py): what a unit test may not do fails loudly."""
from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys

import pytest

from tests.unit.purity import ImpureTest, refused_program


@pytest.mark.parametrize("argv", [
    ["ip", "netns", "add", "x"],
    ["/usr/bin/ovs-vsctl", "show"],
    ["ovsdb-server", "--remote=punix:x"],
    ["dhclient", "-1", "eth0"],
    ["mn", "-c"],
    ["sudo", "true"],
    ["env", "A=1", "timeout", "5", "ovs-ofctl", "dump-flows", "br"],
    ["sh", "-c", "true && ip link show; echo done"],
    ["bash", "-c", "X=1 ovs-appctl version | cat"],
    ["/usr/bin/python3", "-c", "import mininet.net"],
    ["scripts/ovs", "start"],
])
def test_refused_programs(argv):
    assert refused_program(argv)


@pytest.mark.parametrize("argv", [
    [sys.executable, "topologies/dnsd.py", "--query", "x"],
    ["sh", "-c", "echo ip ovs-vsctl"],
    ["git", "status"],
    ["python3", "-c", "print('mininet')"],
])
def test_allowed_programs(argv):
    assert refused_program(argv) is None


def test_every_way_to_start_a_program_is_guarded():
    with pytest.raises(ImpureTest, match="runs ip"):
        subprocess.run(["ip", "link"], check=False)
    with pytest.raises(ImpureTest, match="runs ovs-vsctl"):
        subprocess.run("ovs-vsctl show", shell=True, check=False)
    with pytest.raises(ImpureTest, match="runs dhclient"):
        subprocess.check_output(["true"], executable="dhclient")
    with pytest.raises(ImpureTest, match="runs ip"):
        os.system("ip link")
    with pytest.raises(ImpureTest, match="runs ovs-ofctl"):
        os.posix_spawnp("ovs-ofctl", ["ovs-ofctl", "--version"], os.environ)
    with pytest.raises(ImpureTest, match="runs ovs-no-such-tool"):   # (not there: never execs)
        os.execvp("ovs-no-such-tool", ["ovs-no-such-tool"])
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True,
                          text=True).stdout == "1\n"


def test_mininet_cannot_be_imported():
    sys.modules.pop("mininet", None)
    with pytest.raises(ImpureTest, match="imports mininet"):
        importlib.import_module("mininet")


def test_sockets_stay_on_loopback():
    with pytest.raises(ImpureTest, match="packet socket"):
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with pytest.raises(ImpureTest, match="raw socket"):
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(ImpureTest, match="privileged port 53"):
            s.bind(("127.0.0.1", 53))
        with pytest.raises(ImpureTest, match="binds 192.0.2.1:0"):
            s.bind(("192.0.2.1", 0))
        with pytest.raises(ImpureTest, match="talks to 192.0.2.1:53"):
            s.sendto(b"x", ("192.0.2.1", 53))
        with pytest.raises(ImpureTest, match="talks to example.org:53"):
            s.connect(("example.org", 53))
        s.bind(("127.0.0.1", 0))
        s.sendto(b"x", s.getsockname())
        assert s.recv(1) == b"x"
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))                   # the wildcard on a free port needs nothing
        with pytest.raises(ImpureTest, match="talks to 198.51.100.1:80"):
            s.connect_ex(("198.51.100.1", 80))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        with pytest.raises(ImpureTest, match="/var/run/openvswitch/db.sock"):
            s.connect("/var/run/openvswitch/db.sock")


def test_the_tier_is_not_root():
    assert os.geteuid() != 0
