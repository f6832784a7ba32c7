"""The Mininet hub topology (topologies/hub.py) as a description: names, datapath ids,
links, ports, addressing, and the `mn --custom` entry points.

No OVS and no namespaces are started, but the module is Mininet's (it subclasses
its Topo), so it lives in the lab tier, where Mininet is.
"""

import inspect
import ipaddress
import os
import subprocess
from collections import Counter

import pytest
from mininet.node import Host, OVSSwitch

from topologies import hub
from topologies.hub import HubTopo, lab_hosts, lab_subnets

pytestmark = pytest.mark.lab
HUB_PY = os.path.join(os.path.dirname(hub.__file__), "hub.py")


@pytest.fixture(scope="module")
def topo():
    return HubTopo(segments=3, hosts=2, cores=2, spares=2)


def test_node_names(topo):
    assert set(topo.switches()) == {"c1", "c2", "a1", "a2", "a3", "gw1"}
    assert set(topo.hosts()) == {"h1_1", "h1_2", "h2_1", "h2_2", "h3_1",
                                 "h3_2", "ext", "sp1", "sp2"}


def test_prefixed_names():
    t = HubTopo(segments=1, hosts=1, cores=1, spares=1, prefix="t9")
    assert set(t.switches()) == {"t9c1", "t9a1", "t9gw1"}
    assert set(t.hosts()) == {"t9h1_1", "t9ext", "t9sp1"}


def test_dpids(topo):
    dpids = {n: topo.nodeInfo(n)["dpid"] for n in topo.switches()}
    assert dpids == {
        "c1": "0000000000000c01", "c2": "0000000000000c02",
        "a1": "0000000000000a01", "a2": "0000000000000a02",
        "a3": "0000000000000a03", "gw1": "0000000000000b01",
    }
    assert all(len(d) == 16 for d in dpids.values())


def test_link_counts(topo):
    links = topo.links()
    # cores x (attachments + gateway bridge) + segment hosts + ext + spares
    assert len(links) == 2 * (3 + 1) + 3 * 2 + 1 + 2 == 17
    degree = Counter()
    for a, b in links:
        degree[a] += 1
        degree[b] += 1
    assert degree["c1"] == 3 + 1 + 2  # attachments, gw1, spares
    assert degree["c2"] == 3 + 1
    for s in (1, 2, 3):
        assert degree["a%d" % s] == 2 + 2  # cores, hosts
    assert degree["gw1"] == 2 + 1
    for h in topo.hosts():
        assert degree[h] == 1
    # no parallel links
    assert len({frozenset(link) for link in links}) == len(links)


def test_port_plan(topo):
    for k in (1, 2):
        core = "c%d" % k
        for s in (1, 2, 3):
            assert topo.port(core, "a%d" % s) == (s, k)
        assert topo.port(core, "gw1") == (4, k)
    for s in (1, 2, 3):
        for i in (1, 2):
            assert topo.port("a%d" % s, "h%d_%d" % (s, i)) == (2 + i, 0)
    assert topo.port("gw1", "ext") == (3, 0)
    assert topo.port("c1", "sp1") == (5, 0)
    assert topo.port("c1", "sp2") == (6, 0)


def test_host_addressing(topo):
    info = {h: topo.nodeInfo(h) for h in topo.hosts()}
    assert info["h2_1"]["ip"] == "10.0.2.1/24"
    assert info["h2_1"]["gateway"] == "10.0.2.254"
    assert info["h2_1"]["mac"] == "02:00:0a:00:02:01"
    assert info["ext"]["ip"] == "198.51.100.1/24"
    assert info["ext"]["gateway"] == "198.51.100.254"
    assert info["ext"]["mac"] == "02:00:c6:33:64:01"
    assert info["sp2"]["ip"] == "10.0.250.2/24"
    assert info["sp2"]["gateway"] == "10.0.250.254"
    assert info["sp2"]["mac"] == "02:00:0a:00:fa:02"
    macs = [i["mac"] for i in info.values()]
    ips = [i["ip"] for i in info.values()]
    assert len(set(macs)) == len(macs) and len(set(ips)) == len(ips)
    for i in info.values():
        first = int(i["mac"].split(":")[0], 16)
        assert first & 0x02 and not first & 0x01  # local, unicast


def test_lab_subnets_shape():
    assert lab_subnets(2) == [
        {"id": "seg1", "cidr": "10.0.1.0/24", "gateway": "10.0.1.254"},
        {"id": "seg2", "cidr": "10.0.2.0/24", "gateway": "10.0.2.254"},
        {"id": "ext", "cidr": "198.51.100.0/24", "gateway": "198.51.100.254"},
        {"id": "spares", "cidr": "10.0.250.0/24", "gateway": "10.0.250.254"},
    ]
    assert [s["id"] for s in lab_subnets(1, spares=0)] == ["seg1", "ext"]


def test_lab_subnets_match_hosts(topo):
    subnets = {s["id"]: s for s in lab_subnets(3, spares=2)}
    expected_subnet = {"ext": "ext", "sp1": "spares", "sp2": "spares"}
    for s in (1, 2, 3):
        for i in (1, 2):
            expected_subnet["h%d_%d" % (s, i)] = "seg%d" % s
    assert set(expected_subnet) == set(topo.hosts())
    used = set()
    for host, sid in expected_subnet.items():
        info = topo.nodeInfo(host)
        subnet = subnets[sid]
        net = ipaddress.ip_network(subnet["cidr"])
        iface = ipaddress.ip_interface(info["ip"])
        assert iface.network == net, host
        assert info["gateway"] == subnet["gateway"], host
        assert ipaddress.ip_address(subnet["gateway"]) in net
        assert iface.ip != ipaddress.ip_address(subnet["gateway"])
        used.add(sid)
    assert used == set(subnets)
    # lab_hosts is the same plan the topology was built from
    plan = {h["name"]: h for h in lab_hosts(3, 2, 2)}
    for host in topo.hosts():
        info = topo.nodeInfo(host)
        assert (plan[host]["ip"], plan[host]["mac"], plan[host]["gateway"]) \
            == (info["ip"], info["mac"], info["gateway"])
        assert plan[host]["subnet"] == expected_subnet[host]


def test_subnets_do_not_overlap():
    nets = [ipaddress.ip_network(s["cidr"]) for s in lab_subnets(249)]
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            assert not a.overlaps(b)


@pytest.mark.parametrize("prefix", ["", "x", "t9", "lab"])
@pytest.mark.parametrize("size", [dict(segments=3, hosts=2, cores=2, spares=2),
                                  dict(segments=99, hosts=99, cores=9,
                                       spares=99)])
def test_interface_names_fit_ifnamsiz(prefix, size):
    t = HubTopo(prefix=prefix, **size)
    names = t.interface_names()
    assert len(names) == len(set(names))
    longest = max(names, key=len)
    assert len(longest) <= 15, longest
    for node in t.nodes():
        assert node.startswith(prefix)


def test_too_long_names_rejected():
    with pytest.raises(ValueError, match="longer than 15"):
        HubTopo(segments=100, hosts=100, prefix="lab")


@pytest.mark.parametrize("kwargs", [dict(segments=0), dict(segments=250),
                                    dict(hosts=0), dict(hosts=254),
                                    dict(cores=0), dict(spares=-1),
                                    dict(prefix="a-b"), dict(prefix="a_")])
def test_bad_parameters_rejected(kwargs):
    with pytest.raises(ValueError):
        HubTopo(**kwargs)


def test_mn_custom_dictionaries():
    t = hub.topos["hub"](3, 2, 2)
    assert isinstance(t, HubTopo)
    assert set(t.switches()) == {"c1", "c2", "a1", "a2", "a3", "gw1"}
    assert len(t.hosts()) == 3 * 2 + 1 + 2  # default spares=2
    assert issubclass(hub.switches["hubovs"], OVSSwitch)
    assert issubclass(hub.hosts["hubhost"], Host)
    defaults = {name: p.default for name, p in
                inspect.signature(hub.HubOVS.__init__).parameters.items()}
    assert defaults["datapath"] == "user"
    assert defaults["failMode"] == "secure"
    assert defaults["protocols"] == "OpenFlow13,OpenFlow14"
    assert defaults["inband"] is False


def test_custom_file_runs_without_project_package(tmp_path):
    """``mn --custom`` execs the file with the system python, outside the
    project: it must need nothing but Mininet and the standard library."""
    code = (
        "import sys\n"
        "assert not any('topologies' in m for m in sys.modules)\n"
        "ns = {}\n"
        "exec(compile(open(%r).read(), %r, 'exec'), ns, ns)\n"
        "t = ns['topos']['hub'](2, 2)\n"
        "print(len(t.switches()), len(t.hosts()), len(t.links()))\n"
    ) % (HUB_PY, HUB_PY)
    probe = subprocess.run(["/usr/bin/python3", "-I", "-c", "import mininet"],
                           capture_output=True, cwd=tmp_path)
    assert probe.returncode == 0, "Debian's python3 has no Mininet: run scripts/install"
    out = subprocess.run(["/usr/bin/python3", "-I", "-c", code],
                         capture_output=True, text=True, cwd=tmp_path,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "7", str(1 * 3 + 2 * 2 + 1 + 2)]
