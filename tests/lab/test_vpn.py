"""VPN personalities with the real controller, a Mininet hub and real traffic.

h1_1 (10.0.1.1) is switched to a personality whose `vpn_tunnel_config`
reaches 172.16.5.0/24 behind a second hub site (tests/lab/vpn_site.py: its
own Open vSwitch in a namespace, over an underlay 198.18.71.0/24).  The
controller creates the tunnel port over OVSDB; the test only observes it
(ovs-vsctl, counters) and builds the second site.  Once per tunnel type.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.lab.conftest import start_lab, stop_lab
from tests.lab.harness import ping_loss, sh, wait_for
from tests.lab.test_personalities import baseline, iface, personality, switch, wait_op
from tests.lab.vpn_site import HOST_IP, HOST_NS, NETCHECK, REMOTE_PREFIX, SITE_ENDPOINT, RemoteSite

pytestmark = pytest.mark.lab
LAB_PREFIX = "vp"
ROUTER_MAC = "02:b5:00:00:00:01"
KEYS = {"vxlan": 5001, "gre": 5002, "geneve": 5003}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=2, hosts=2, spares=0)
    site = RemoteSite(tmp_path_factory.mktemp("vp-site"), ROUTER_MAC)
    try:
        site.start()
        lab.net.pingAll(timeout=2)          # every host (and interface) discovered
        lab.site = site
        yield lab
    finally:
        try:
            site.stop()
        finally:
            stop_lab(lab)


def hub_tunnel_ports(interface_id: str) -> list[dict]:
    """Ports in the lab's OVSDB that the hub made for this interface, with their interface rows."""
    out = sh("ovs-vsctl", "--format=json", "--columns=name", "find", "port",
             f'external_ids:hubshift-interface="{interface_id}"')
    names = [row[0] for row in json.loads(out)["data"]]
    ports = []
    for name in names:
        fields = {}
        for column in ("type", "options", "ofport", "error"):
            fields[column] = sh("ovs-vsctl", "get", "interface", name, column).strip()
        fields["name"] = name
        fields["bridge"] = sh("ovs-vsctl", "port-to-br", name).strip()
        ports.append(fields)
    return ports


def reaches_remote(lab, host: str = "h1_1") -> bool:
    return ping_loss(lab.host(host).cmd(f"ping -c 1 -W 1 {HOST_IP}")) == 0.0


@pytest.mark.parametrize("kind", ["vxlan", "gre", "geneve"])
def test_vpn_reaches_a_host_behind_the_second_site_through_the_tunnel(lab, kind):
    site, key = lab.site, KEYS[kind]
    site.use(kind, key)
    baseline(lab, "h1_1", f"plain-{kind}")
    record = iface(lab, "h1_1")
    assert hub_tunnel_ports(record["id"]) == []
    assert not reaches_remote(lab)                      # no VPN: 172.16.5.0/24 is nowhere

    personality(lab, f"vpn-{kind}", ip_addresses=["10.0.1.1"], default_action="allow",
                vpn_tunnel_config={"type": kind, "remote_ip": SITE_ENDPOINT, "key": key,
                                   "remote_prefixes": [REMOTE_PREFIX]})
    op = wait_op(lab, switch(lab, "h1_1", f"vpn-{kind}", drain={"max_seconds": 0})["id"])
    assert op["state"] == "succeeded", op

    # The controller made the port over OVSDB, on h1_1's switch, with the right options.
    ports = hub_tunnel_ports(record["id"])
    assert len(ports) == 1, ports
    port = ports[0]
    assert port["type"] == kind and port["bridge"] == f"{LAB_PREFIX}a1", port
    assert port["options"] == f'{{key="{key}", remote_ip="{SITE_ENDPOINT}"}}', port
    assert int(port["ofport"]) > 0 and port["error"] == "[]", port

    # Ping and a TCP connection reach the remote host, through the site's tunnel.
    through = site.from_tunnel(kind)
    wait_for("a ping through the tunnel", lambda: reaches_remote(lab), 10)
    assert ping_loss(lab.host("h1_1").cmd(f"ping -c 5 -i 0.2 -W 1 {HOST_IP}")) == 0.0
    answer = lab.host("h1_1").cmd(f"python3 {NETCHECK} connect {HOST_IP} 8080 -t 2").strip()
    assert answer == "remote:8080 hello", answer
    assert site.from_tunnel(kind) >= through + 6 + 3   # pings and the TCP exchange came that way

    # Traffic outside the remote prefixes does not take the tunnel.
    through = site.from_tunnel(kind)
    assert ping_loss(lab.host("h1_1").cmd("ping -c 3 -i 0.2 -W 1 10.0.2.1")) == 0.0
    assert ping_loss(lab.host("h1_1").cmd("ping -c 2 -i 0.2 -W 1 172.16.6.1")) == 100.0
    assert site.from_tunnel(kind) == through
    # Only h1_1's personality has the VPN: another host's traffic to the prefix is not tunnelled.
    assert not reaches_remote(lab, "h2_1")
    assert site.from_tunnel(kind) == through

    # Switching back removes the port, and the remote prefixes are unreachable again.
    op = wait_op(lab, switch(lab, "h1_1", f"plain-{kind}-h1_1", drain={"max_seconds": 0})["id"])
    assert op["state"] == "succeeded", op
    wait_for("the tunnel port removed", lambda: hub_tunnel_ports(record["id"]) == [], 10)
    assert port["name"] not in sh("ovs-vsctl", "list-ports", f"{LAB_PREFIX}a1").split()
    assert not reaches_remote(lab)


def test_connections_from_the_remote_site_obey_the_ingress_rules(lab):
    """What arrives through the tunnel passes the personality's ingress firewall."""
    lab.site.use("vxlan", KEYS["vxlan"])
    personality(lab, "vpn-locked", ip_addresses=["10.0.1.1"], default_action="deny",
                firewall_rules=[{"protocol": "any", "direction": "egress", "action": "allow"},
                                {"protocol": "tcp", "port": 8081, "direction": "ingress",
                                 "action": "allow"}],
                vpn_tunnel_config={"type": "vxlan", "remote_ip": SITE_ENDPOINT,
                                   "key": KEYS["vxlan"], "remote_prefixes": [REMOTE_PREFIX]})
    op = wait_op(lab, switch(lab, "h1_1", "vpn-locked", drain={"max_seconds": 0})["id"])
    assert op["state"] == "succeeded", op
    h1 = lab.host("h1_1")
    pid = h1.cmd(f"python3 {NETCHECK} serve 8081 8082 --name h1 >/dev/null 2>&1 & echo $!").strip()
    try:
        wait_for("h1_1's servers", lambda: ":8082" in h1.cmd("ss -ltn"), 10)
        wait_for("egress through the tunnel", lambda: reaches_remote(lab), 10)

        def remote_connect(port: int) -> subprocess.CompletedProcess:
            return subprocess.run(["ip", "netns", "exec", HOST_NS, "python3", str(NETCHECK),
                                   "connect", "10.0.1.1", str(port), "-t", "1"],
                                  capture_output=True, text=True, timeout=10)
        allowed = remote_connect(8081)
        assert allowed.returncode == 0 and allowed.stdout.strip() == "h1:8081 hello", allowed
        denied = remote_connect(8082)
        assert denied.returncode == 1, denied.stdout      # a new connection on 8082: denied
    finally:
        h1.cmd(f"kill {pid}")
