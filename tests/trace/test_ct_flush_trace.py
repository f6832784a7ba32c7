"""NXT_CT_FLUSH_ZONE as the hub encodes it (controller.pipeline.ctflush) on a real bridge:
Open vSwitch decodes it, and it empties exactly the zone it names."""
from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from controller.pipeline import ctflush
from tests.trace.conftest import run
from tests.trace.ofsession import OFSession

ZONE, OTHER = 4321, 4322


def entries(zone: int) -> list[str]:
    out = run("ovs-appctl", "dpctl/dump-conntrack", f"zone={zone}", check=False)
    return [line for line in out.splitlines() if f"zone={zone}" in line]


def commit(bridge, zone: int, sport: int) -> None:
    syn = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                / IP(src="10.9.9.1", dst="10.9.9.2") / TCP(sport=sport, dport=80, flags="S"))
    bridge.ofctl("packet-out", bridge.name,
                 f"in_port=1 packet={syn.hex()} actions=ct(commit,zone={zone})")


def test_open_vswitch_reads_the_message_as_a_zone_flush():
    printed = run("ovs-ofctl", "ofp-print", ctflush.ct_flush_zone(0x05, 7, ZONE).hex())
    assert "NXT_CT_FLUSH_ZONE" in printed and f"zone_id={ZONE}" in printed, printed


def test_a_flush_empties_its_zone_and_no_other(make_bridge):
    bridge = make_bridge(2)
    commit(bridge, ZONE, 40001)
    commit(bridge, OTHER, 40002)
    assert entries(ZONE) and entries(OTHER)
    with OFSession(bridge.name, 0x05) as session:
        session.xid += 1
        session.sock.sendall(ctflush.ct_flush_zone(0x05, session.xid, ZONE))
        session.barrier([])
    assert entries(ZONE) == []
    assert entries(OTHER)
    bridge.ofctl("ct-flush-zone", bridge.name, str(OTHER))
    assert entries(OTHER) == []
