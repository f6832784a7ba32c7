"""Parametric Mininet topology of the hubshift virtual traffic hub.

This file depends only on Mininet and the standard library: ``mn --custom``
executes it with /usr/bin/python3, which does not see the hubshift package.
It is also importable as ``topologies.hub`` from the project virtualenv.

Command line (Open vSwitch must be running, see ``scripts/ovs start``)::

    mn --custom topologies/hub.py --topo hub,2,2 --switch hubovs \\
       --host hubhost --controller remote,ip=127.0.0.1,port=6653

``--topo hub,SEGMENTS,HOSTS,CORES,SPARES`` (keyword ``prefix=`` is accepted
too). With ``--controller none`` add ``--twait 0`` (or use
``--switch hubovs,failMode=standalone``): the switches run in fail-secure
mode, never report "connected", and ``mn --test ...`` would otherwise wait
for them forever.

Python::

    from topologies.hub import build_net
    net = build_net(segments=2, hosts=2, prefix="t1", controller_port=6653)
    net.start()
    ...
    net.stop()

Nodes (``P`` is the optional name prefix, at most a few characters, so that a
test lab never collides with another lab's leftovers)
------------------------------------------------------------------------------
=================  =========================  ============================
node               name                       datapath id (16 hex digits)
=================  =========================  ============================
core switch k      ``Pc1`` .. ``Pc{cores}``   0xc00 + k  (0000000000000c01)
attachment sw. s   ``Pa1`` .. ``Pa{segments}``  0xa00 + s  (0000000000000a01)
gateway bridge     ``Pgw1``                   0xb01      (0000000000000b01)
segment host       ``Ph{s}_{i}``              -
outside client     ``Pext``                   -
spare host k       ``Psp1`` .. ``Psp{spares}``  -
=================  =========================  ============================

Every attachment switch and the gateway bridge is linked to every core
switch. Segment hosts hang off their attachment switch, ``ext`` off the
gateway bridge, spares off core switch 1. With ``cores > 1`` the fabric has
loops: it only forwards under the hub controller (never use
``failMode='standalone'`` with more than one core).

OpenFlow port numbers (fixed explicitly, Mininet asks OVS for them through
``ofport_request``; interface ``X-ethN`` is OpenFlow port N of switch X)
-------------------------------------------------------------------------
* core ``ck``: port ``s`` -> attachment ``as`` (s = 1..segments);
  port ``segments+1`` -> ``gw1``; on ``c1`` only, port ``segments+1+j`` ->
  spare ``spj``.
* attachment ``as``: port ``k`` -> core ``ck`` (k = 1..cores);
  port ``cores+i`` -> host ``hs_i``.
* gateway bridge ``gw1``: port ``k`` -> core ``ck``; port ``cores+1`` -> ``ext``.
* every host has a single interface ``<host>-eth0``.

Addressing
----------
=============  ===================  ==================  ===============
subnet id      CIDR                 host address        gateway
=============  ===================  ==================  ===============
``seg{s}``     10.0.{s}.0/24        h{s}_{i}: 10.0.s.i  10.0.{s}.254
``ext``        198.51.100.0/24      ext: 198.51.100.1   198.51.100.254
``spares``     10.0.250.0/24        sp{k}: 10.0.250.k   10.0.250.254
=============  ===================  ==================  ===============

Limits: 1 <= segments <= 249 (10.0.250.0/24 belongs to the spares),
1 <= hosts <= 253, 1 <= cores <= 255, 0 <= spares <= 253, and every
interface name must fit Linux's 15-character limit (checked; with a
3-character prefix keep segments and hosts below 100).

Every host gets a default route via its subnet gateway; the gateways exist
only virtually (the hub controller answers ARP for them with its router MAC).

MAC addresses: ``02:00`` followed by the four bytes of the host's IPv4
address, e.g. h1_2 (10.0.1.2) -> 02:00:0a:00:01:02, ext (198.51.100.1) ->
02:00:c6:33:64:01, sp1 (10.0.250.1) -> 02:00:0a:00:fa:01. They are locally
administered unicast addresses, unique within one lab, and the IP can be read
back from the MAC.

Hosts (:class:`HubHost`) turn TX checksum offload off on their interfaces:
with the userspace datapath, TCP otherwise carries bad checksums and fails
silently. They also disable IPv6 by default so that router solicitations and
multicast-listener reports do not reach the controller (``ipv6=True`` keeps
it).
"""

import re

from mininet.log import warn
from mininet.net import Mininet
from mininet.node import Host, OVSSwitch, RemoteController
from mininet.topo import Topo

# ---------------------------------------------------------------------------
# Numbering plan (pure helpers, shared by the topology, its tests and the
# controller's configuration).
# ---------------------------------------------------------------------------

GATEWAY_OCTET = 254
SPARES_THIRD_OCTET = 250
EXT_NET = "198.51.100"
EXT_HOST_OCTET = 1

CORE_DPID_BASE = 0xC00
ATTACH_DPID_BASE = 0xA00
GATEWAY_BRIDGE_DPID = 0xB01

MAX_SEGMENTS = SPARES_THIRD_OCTET - 1  # 249
MAX_HOSTS = GATEWAY_OCTET - 1  # 253
MAX_CORES = 0xFF
MAX_SPARES = GATEWAY_OCTET - 1  # 253
IFNAMSIZ = 15  # longest Linux interface name

_PREFIX_RE = re.compile(r"^[A-Za-z0-9]*$")


def dpid_str(value):
    """Datapath id as the 16-hex-digit string Mininet and OVS expect."""
    return "%016x" % value


def mac_for_ip(ip):
    """Deterministic host MAC: ``02:00`` followed by the IPv4 address bytes."""
    octets = [int(part) for part in ip.split("/")[0].split(".")]
    return "02:00:" + ":".join("%02x" % o for o in octets)


def segment_subnet(s):
    """Subnet description of segment ``s`` (1-based)."""
    return {"id": "seg%d" % s, "cidr": "10.0.%d.0/24" % s,
            "gateway": "10.0.%d.%d" % (s, GATEWAY_OCTET)}


def ext_subnet():
    """Subnet of the outside client behind the gateway bridge."""
    return {"id": "ext", "cidr": "%s.0/24" % EXT_NET,
            "gateway": "%s.%d" % (EXT_NET, GATEWAY_OCTET)}


def spares_subnet():
    """Subnet of the spare hosts on core switch 1."""
    return {"id": "spares", "cidr": "10.0.%d.0/24" % SPARES_THIRD_OCTET,
            "gateway": "10.0.%d.%d" % (SPARES_THIRD_OCTET, GATEWAY_OCTET)}


def lab_subnets(segments, spares=2):
    """Subnets of a lab with ``segments`` segments, in controller-config form.

    Returns ``[{"id": "seg1", "cidr": "10.0.1.0/24", "gateway":
    "10.0.1.254"}, ..., {"id": "ext", ...}, {"id": "spares", ...}]``; the
    ``spares`` entry is left out when the lab has no spare host.
    """
    segments = int(segments)
    if not 1 <= segments <= MAX_SEGMENTS:
        raise ValueError("segments must be in 1..%d" % MAX_SEGMENTS)
    subnets = [segment_subnet(s) for s in range(1, segments + 1)]
    subnets.append(ext_subnet())
    if int(spares) > 0:
        subnets.append(spares_subnet())
    return subnets


def lab_hosts(segments=2, hosts=2, spares=2, prefix=""):
    """Every host of the lab: name, subnet id, ip (with /24), mac, gateway.

    Order: segment hosts (segment by segment), ext, spares.
    """
    plan = []

    def add(name, subnet, ip):
        plan.append({"name": prefix + name, "subnet": subnet["id"],
                     "ip": ip + "/24", "mac": mac_for_ip(ip),
                     "gateway": subnet["gateway"]})

    for s in range(1, segments + 1):
        for i in range(1, hosts + 1):
            add("h%d_%d" % (s, i), segment_subnet(s), "10.0.%d.%d" % (s, i))
    add("ext", ext_subnet(), "%s.%d" % (EXT_NET, EXT_HOST_OCTET))
    for k in range(1, spares + 1):
        add("sp%d" % k, spares_subnet(), "10.0.%d.%d" % (SPARES_THIRD_OCTET, k))
    return plan


def _check_params(segments, hosts, cores, spares, prefix):
    for what, value, low, high in (("segments", segments, 1, MAX_SEGMENTS),
                                   ("hosts", hosts, 1, MAX_HOSTS),
                                   ("cores", cores, 1, MAX_CORES),
                                   ("spares", spares, 0, MAX_SPARES)):
        if not low <= value <= high:
            raise ValueError("%s must be in %d..%d, got %d"
                             % (what, low, high, value))
    if not _PREFIX_RE.match(prefix):
        raise ValueError("prefix must be letters and digits only, got %r"
                         % prefix)


# ---------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------


class HubTopo(Topo):
    """Cores, attachment switches, gateway bridge, hosts (see module doc)."""

    def build(self, segments=2, hosts=2, cores=1, spares=2, prefix=""):
        segments, hosts, cores, spares = (int(segments), int(hosts),
                                          int(cores), int(spares))
        prefix = "" if prefix is None else str(prefix)
        _check_params(segments, hosts, cores, spares, prefix)
        self.segments, self.hosts_per_segment = segments, hosts
        self.cores, self.spares, self.prefix = cores, spares, prefix

        p = prefix
        core = ["%sc%d" % (p, k) for k in range(1, cores + 1)]
        attach = ["%sa%d" % (p, s) for s in range(1, segments + 1)]
        gw = "%sgw1" % p

        for k, name in enumerate(core, 1):
            self.addSwitch(name, dpid=dpid_str(CORE_DPID_BASE + k))
        for s, name in enumerate(attach, 1):
            self.addSwitch(name, dpid=dpid_str(ATTACH_DPID_BASE + s))
        self.addSwitch(gw, dpid=dpid_str(GATEWAY_BRIDGE_DPID))

        for h in lab_hosts(segments, hosts, spares, prefix):
            self.addHost(h["name"], ip=h["ip"], mac=h["mac"],
                         gateway=h["gateway"])

        # Fabric: core port s <-> attachment port k; core port segments+1
        # <-> gateway bridge port k.
        for k, c in enumerate(core, 1):
            for s, a in enumerate(attach, 1):
                self.addLink(c, a, port1=s, port2=k)
            self.addLink(c, gw, port1=segments + 1, port2=k)
        # Edge: hosts on attachment ports cores+i, ext on gw port cores+1,
        # spares on core 1 ports segments+1+j.
        for s, a in enumerate(attach, 1):
            for i in range(1, hosts + 1):
                self.addLink("%sh%d_%d" % (p, s, i), a, port1=0,
                             port2=cores + i)
        self.addLink("%sext" % p, gw, port1=0, port2=cores + 1)
        for j in range(1, spares + 1):
            self.addLink("%ssp%d" % (p, j), core[0], port1=0,
                         port2=segments + 1 + j)

        too_long = [n for n in self.interface_names() if len(n) > IFNAMSIZ]
        if too_long:
            raise ValueError("interface names longer than %d characters: %s"
                             % (IFNAMSIZ, ", ".join(sorted(too_long)[:5])))

    def interface_names(self):
        """Bridge names and the ``node-ethN`` names Mininet will create."""
        names = list(self.switches())
        for node, ports in self.ports.items():
            names.extend("%s-eth%d" % (node, port) for port in ports)
        return names


def _hub_topo(segments=2, hosts=2, cores=1, spares=2, prefix=""):
    """``--topo hub,SEGMENTS,HOSTS,CORES,SPARES[,prefix=P]``"""
    return HubTopo(segments=segments, hosts=hosts, cores=cores, spares=spares,
                   prefix=prefix)


# ---------------------------------------------------------------------------
# Node classes
# ---------------------------------------------------------------------------


class HubOVS(OVSSwitch):
    """OVS bridge on the userspace datapath, OpenFlow 1.3/1.4, fail-secure.

    ``failMode='secure'``: when the controller is unreachable OVS keeps the
    installed flows and never falls back to MAC learning. No in-band control.
    """

    def __init__(self, name, failMode="secure", datapath="user",
                 protocols="OpenFlow13,OpenFlow14", inband=False, **params):
        OVSSwitch.__init__(self, name, failMode=failMode, datapath=datapath,
                           protocols=protocols, inband=inband, **params)


class QuietRemoteController(RemoteController):
    """A RemoteController without Mininet's telnet probe of the controller port.

    The probe reads whatever the controller sends back as UTF-8; an OpenFlow
    HELLO is binary and, depending on its bytes, crashes Mininet with a
    UnicodeDecodeError.  The callers start the controller first and wait for it.
    """

    def checkListening(self):
        pass


class HubHost(Host):
    """Host with TX checksum offload off and a default route to its gateway.

    Extra parameters: ``gateway`` (IPv4 address of the default router) and
    ``ipv6`` (False: disable IPv6 inside the host).
    """

    def config(self, gateway=None, ipv6=False, **params):
        r = Host.config(self, **params)
        for intf in self.intfList():
            if intf.name == "lo":
                continue
            out = self.cmd("ethtool -K %s tx off 2>&1; echo rc=$?" % intf)
            if "rc=0" not in out:
                warn("*** %s: could not turn TX offload off on %s: %s\n"
                     % (self.name, intf, out.strip()))
        if not ipv6:
            self.cmd("sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 "
                     "net.ipv6.conf.default.disable_ipv6=1 "
                     "net.ipv6.conf.lo.disable_ipv6=1")
        intf = self.defaultIntf()
        if gateway and intf:
            out = self.cmd("ip route replace default via %s dev %s 2>&1"
                           % (gateway, intf))
            if out.strip():
                warn("*** %s: default route via %s: %s\n"
                     % (self.name, gateway, out.strip()))
        return r


# ---------------------------------------------------------------------------
# Python entry point
# ---------------------------------------------------------------------------


def _switch_class(fail_mode):
    """HubOVS with this fail mode, as a class: Mininet starts a switch class that has
    ``batchStartup`` with one ovs-vsctl process for all of them.  (A functools.partial
    hides it; each bridge was then made by one ovs-vsctl line typed into a shell, which
    the terminal cuts at 4,095 characters: a switch with ~50 hosts or more was never
    created.)"""
    if fail_mode == "secure":
        return HubOVS

    class Switch(HubOVS):
        def __init__(self, name, **params):
            params.setdefault("failMode", fail_mode)
            HubOVS.__init__(self, name, **params)
    return Switch


def build_net(segments=2, hosts=2, cores=1, spares=2, prefix="",
              controller_port=6653, fail_mode="secure", **net_params):
    """Build (not start) the hub network with HubOVS switches and HubHosts.

    The controller is a RemoteController ``{prefix}ctl`` at
    127.0.0.1:``controller_port``; ``controller_port=None`` builds without
    any controller. ``fail_mode`` is the switches' OVS fail mode ("secure";
    "standalone" makes the bridges plain learning switches, which is only
    loop-free with ``cores=1``). Extra keyword arguments go to ``Mininet``.
    Call ``net.start()`` to create the bridges and ``net.stop()`` to remove
    everything again.
    """
    topo = HubTopo(segments=segments, hosts=hosts, cores=cores,
                   spares=spares, prefix=prefix)
    params = dict(autoSetMacs=False, autoStaticArp=False, controller=None)
    params.update(net_params)
    net = Mininet(topo=topo, switch=_switch_class(fail_mode), host=HubHost, build=False,
                  **params)
    if controller_port is not None:
        net.addController("%sctl" % (prefix or ""), controller=QuietRemoteController,
                          ip="127.0.0.1", port=int(controller_port))
    net.build()
    return net


# Dictionaries read by ``mn --custom``.
topos = {"hub": _hub_topo}
switches = {"hubovs": HubOVS}
hosts = {"hubhost": HubHost}
