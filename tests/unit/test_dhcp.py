"""DHCP server logic: requests built with scapy, replies read back with scapy."""
from __future__ import annotations

import random

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from controller.features.persona import dhcp
from controller.features.persona.dhcp import Decision, DhcpRequest, build_reply, decide, parse_request

CLIENT_MAC = "02:00:00:00:d1:01"
SERVER_MAC = "02:00:00:00:d1:fe"
SERVER_IP = "10.100.0.1"
ASSIGNED = "10.100.0.2"
NETMASK = "255.255.255.0"
DNS = ("10.100.0.53", "10.100.0.54")


def request_frame(mtype: str, *, options=(), xid: int = 0x1234ABCD, flags: int = 0,
                  ciaddr: str = "0.0.0.0", giaddr: str = "0.0.0.0", chaddr: str = CLIENT_MAC,
                  src: str = "0.0.0.0", dst: str = "255.255.255.255", sport: int = 68,
                  dport: int = 67, vlan: int | None = None) -> bytes:
    eth = Ether(src=chaddr, dst="ff:ff:ff:ff:ff:ff")
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    pkt = eth / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / BOOTP(
        op=1, chaddr=bytes.fromhex(chaddr.replace(":", "")), xid=xid, flags=flags,
        ciaddr=ciaddr, giaddr=giaddr) / DHCP(options=[("message-type", mtype), *options, "end"])
    return bytes(pkt)


def request(mtype: str, **kw) -> DhcpRequest:
    req = parse_request(request_frame(mtype, **kw))
    assert req is not None
    return req


def reply(req: DhcpRequest, kind: str, **kw) -> Ether:
    args = {"kind": kind, "your_ip": ASSIGNED, "server_ip": SERVER_IP, "server_mac": SERVER_MAC,
            "netmask": NETMASK, "router": SERVER_IP, "dns": DNS, "lease_seconds": 3600, **kw}
    return Ether(build_reply(req, **args))


def options(pkt: Ether) -> dict:
    out = {}
    for opt in pkt[DHCP].options:
        if isinstance(opt, tuple):
            out[opt[0]] = opt[1] if len(opt) == 2 else opt[1:]
    return out


def assert_checksums(pkt: Ether) -> None:
    fresh = pkt.copy()
    del fresh[IP].chksum
    del fresh[UDP].chksum
    fresh = Ether(bytes(fresh))
    assert pkt[IP].chksum == fresh[IP].chksum
    assert pkt[UDP].chksum == fresh[UDP].chksum


# -- parsing -----------------------------------------------------------------

def test_parse_discover() -> None:
    req = request("discover", xid=7, flags=0x8000,
                  options=[("client_id", b"\x01" + bytes.fromhex(CLIENT_MAC.replace(":", ""))),
                           ("hostname", "web-1"), ("param_req_list", [1, 3, 6, 15])])
    assert req.kind == "discover" and req.message_type == dhcp.DISCOVER
    assert req.xid == 7 and req.broadcast
    assert req.client_mac == CLIENT_MAC == req.eth_src
    assert req.ciaddr == "0.0.0.0" and req.ip_src == "0.0.0.0" and req.ip_dst == "255.255.255.255"
    assert req.hostname == "web-1"
    assert req.parameter_list == (1, 3, 6, 15)
    assert req.client_id == b"\x01\x02\x00\x00\x00\xd1\x01"
    assert req.requested_ip is None and req.server_id is None


def test_parse_request_fields() -> None:
    req = request("request", options=[("requested_addr", ASSIGNED), ("server_id", SERVER_IP)])
    assert req.kind == "request" and not req.broadcast
    assert req.requested_ip == ASSIGNED and req.server_id == SERVER_IP


def test_chaddr_is_the_client_even_when_another_mac_sent_the_frame() -> None:
    frame = bytearray(request_frame("discover"))
    frame[6:12] = bytes.fromhex("020000000099")
    req = parse_request(bytes(frame))
    assert req is not None and req.client_mac == CLIENT_MAC and req.eth_src == "02:00:00:00:00:99"


@pytest.mark.parametrize("mtype", ["discover", "request", "decline", "release", "inform"])
def test_every_client_message_type_parses(mtype: str) -> None:
    assert request(mtype, ciaddr=ASSIGNED, src=ASSIGNED).kind == mtype


def test_renewal_carries_ciaddr() -> None:
    req = request("request", ciaddr=ASSIGNED, src=ASSIGNED, dst=SERVER_IP)
    assert req.ciaddr == ASSIGNED and req.ip_src == ASSIGNED and req.requested_ip is None
    assert req.ip_dst == SERVER_IP


def test_vlan_tagged_request_parses() -> None:
    assert request("discover", vlan=10).kind == "discover"


def test_repeated_option_is_concatenated() -> None:
    """RFC 3396: a long option split in two parts is one value."""
    req = request("discover", options=[("hostname", "abc"), ("hostname", "def")])
    assert req.hostname == "abcdef"


@pytest.mark.parametrize("frame", [
    request_frame("offer"),                        # a server's message
    request_frame("ack"),
    request_frame("discover", dport=68),           # not to the server port
    bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=68, dport=67)),
    bytes(Ether(src=CLIENT_MAC) / IP() / UDP(sport=68, dport=67) / BOOTP(op=1)),   # no cookie/type
    bytes(Ether(src=CLIENT_MAC) / IP() / UDP(sport=67, dport=67) / BOOTP(op=2) /
          DHCP(options=[("message-type", "discover"), "end"])),                    # BOOTREPLY
    bytes(Ether(src=CLIENT_MAC) / IP() / UDP(sport=68, dport=67) / BOOTP(op=1, htype=6) /
          DHCP(options=[("message-type", "discover"), "end"])),                    # not Ethernet
    bytes(Ether(src=CLIENT_MAC) / IP(flags="MF") / UDP(sport=68, dport=67) / BOOTP(op=1) /
          DHCP(options=[("message-type", "discover"), "end"])),                    # a fragment
    b"", b"\x00" * 13, b"\xff" * 600,
])
def test_not_a_client_request(frame: bytes) -> None:
    assert parse_request(frame) is None


def test_truncated_frames_never_raise_and_never_misparse() -> None:
    frame = request_frame("request", options=[("requested_addr", ASSIGNED), ("server_id", SERVER_IP)])
    for cut in range(len(frame)):
        req = parse_request(frame[:cut])
        # the IP total length covers the whole datagram: any cut is an incomplete packet
        assert req is None, cut


def test_garbage_never_raises() -> None:
    rng = random.Random(4)
    base = request_frame("request", options=[("requested_addr", ASSIGNED), ("server_id", SERVER_IP),
                                             ("hostname", "h")])
    parsed = 0
    for _ in range(3000):
        frame = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            frame[rng.randrange(14, len(frame))] = rng.randrange(256)
        req = parse_request(bytes(frame))        # must not raise
        parsed += req is not None
        parse_request(bytes(rng.randrange(256) for _ in range(rng.randrange(400))))
    assert 0 < parsed < 3000   # mutations in options/padding still parse, header damage does not


def test_our_own_reply_is_not_a_request() -> None:
    """The hub must never answer its own packet-out if it comes back as a punt."""
    frame = build_reply(request("discover"), kind="offer", your_ip=ASSIGNED, server_ip=SERVER_IP,
                        server_mac=SERVER_MAC, netmask=NETMASK, router=SERVER_IP, dns=DNS,
                        lease_seconds=60)
    assert parse_request(frame) is None


# -- deciding ----------------------------------------------------------------

SELECTING = [("requested_addr", ASSIGNED), ("server_id", SERVER_IP)]


@pytest.mark.parametrize("mtype, kw, want", [
    ("discover", {}, "offer"),
    ("request", {"options": SELECTING}, "ack"),
    ("request", {"options": [("requested_addr", "10.100.0.9"), ("server_id", SERVER_IP)]}, "nak"),
    ("request", {"options": [("server_id", SERVER_IP)]}, "nak"),                 # no address asked
    ("request", {"options": [("requested_addr", ASSIGNED), ("server_id", "10.9.9.9")]}, None),
    ("request", {"options": [("requested_addr", ASSIGNED)]}, "ack"),             # init-reboot
    ("request", {"options": [("requested_addr", "10.200.0.7")]}, "nak"),         # stale lease
    ("request", {"ciaddr": ASSIGNED}, "ack"),                                    # renewing
    ("request", {"ciaddr": "10.100.0.9"}, "nak"),
    ("request", {}, None),                                                       # says nothing
    ("inform", {"ciaddr": ASSIGNED}, "ack"),
    ("inform", {"ciaddr": "10.100.0.9"}, None),
    ("release", {"ciaddr": ASSIGNED}, None),
    ("decline", {"options": [("requested_addr", ASSIGNED), ("server_id", SERVER_IP)]}, None),
])
def test_decide(mtype: str, kw: dict, want: str | None) -> None:
    decision = decide(request(mtype, **kw), ASSIGNED, SERVER_IP)
    assert (decision.kind if decision else None) == want
    if decision:
        assert isinstance(decision, Decision) and decision.reason


@pytest.mark.parametrize("mtype, kw", [("discover", {}), ("request", {"options": SELECTING}),
                                       ("request", {"ciaddr": ASSIGNED})])
def test_unknown_client_is_never_answered(mtype: str, kw: dict) -> None:
    assert decide(request(mtype, **kw), None, SERVER_IP) is None


def test_relayed_request_is_not_answered() -> None:
    assert decide(request("discover", giaddr="10.0.0.1"), ASSIGNED, SERVER_IP) is None


def test_nak_reason_names_both_addresses() -> None:
    decision = decide(request("request", options=[("requested_addr", "10.200.0.7")]), ASSIGNED,
                      SERVER_IP)
    assert decision is not None and "10.200.0.7" in decision.reason and ASSIGNED in decision.reason


# -- building ----------------------------------------------------------------

def test_offer_to_a_broadcast_client() -> None:
    req = request("discover", flags=0x8000, xid=99)
    pkt = reply(req, "offer")
    assert_checksums(pkt)
    assert pkt.src == SERVER_MAC and pkt.dst == "ff:ff:ff:ff:ff:ff"
    assert pkt[IP].src == SERVER_IP and pkt[IP].dst == "255.255.255.255" and pkt[IP].ttl == 64
    assert (pkt[UDP].sport, pkt[UDP].dport) == (67, 68)
    b = pkt[BOOTP]
    assert b.op == 2 and b.xid == 99 and b.flags == 0x8000
    assert b.yiaddr == ASSIGNED and b.ciaddr == "0.0.0.0" and b.siaddr == "0.0.0.0"
    assert b.chaddr[:6] == bytes.fromhex(CLIENT_MAC.replace(":", "")) and b.chaddr[6:] == b"\0" * 10
    opts = options(pkt)
    assert opts["message-type"] == 2
    assert opts["server_id"] == SERVER_IP
    assert opts["lease_time"] == 3600
    assert opts["renewal_time"] == 1800 and opts["rebinding_time"] == 3150
    assert opts["subnet_mask"] == NETMASK
    assert opts["router"] == SERVER_IP
    assert opts["name_server"] == DNS
    assert len(bytes(b)) >= dhcp.MIN_BOOTP_LEN


def test_offer_unicast_when_the_client_can_take_it() -> None:
    pkt = reply(request("discover"), "offer")
    assert pkt.dst == CLIENT_MAC and pkt[IP].dst == ASSIGNED and pkt[BOOTP].flags == 0


def test_ack_to_renewal_goes_to_ciaddr_and_echoes_it() -> None:
    req = request("request", ciaddr=ASSIGNED, src=ASSIGNED, dst=SERVER_IP, flags=0x8000)
    pkt = reply(req, "ack")
    assert_checksums(pkt)
    assert pkt.dst == CLIENT_MAC and pkt[IP].dst == ASSIGNED
    assert pkt[BOOTP].ciaddr == ASSIGNED and pkt[BOOTP].yiaddr == ASSIGNED
    assert options(pkt)["message-type"] == 5


def test_nak_is_broadcast_and_bare() -> None:
    req = request("request", options=[("requested_addr", "10.200.0.7")])
    pkt = reply(req, "nak", message="wrong address")
    assert_checksums(pkt)
    assert pkt.dst == "ff:ff:ff:ff:ff:ff" and pkt[IP].dst == "255.255.255.255"
    assert pkt[BOOTP].yiaddr == "0.0.0.0" and pkt[BOOTP].ciaddr == "0.0.0.0"
    opts = options(pkt)
    assert set(opts) == {"message-type", "server_id", "error_message"}
    assert opts["message-type"] == 6 and opts["error_message"] == b"wrong address"


def test_ack_to_inform_has_configuration_but_no_lease() -> None:
    req = request("inform", ciaddr=ASSIGNED, src=ASSIGNED, dst=SERVER_IP)
    pkt = reply(req, "ack")
    assert pkt[BOOTP].yiaddr == "0.0.0.0" and pkt[BOOTP].ciaddr == ASSIGNED
    assert pkt[IP].dst == ASSIGNED
    opts = options(pkt)
    assert not {"lease_time", "renewal_time", "rebinding_time"} & set(opts)
    assert opts["subnet_mask"] == NETMASK and opts["router"] == SERVER_IP


def test_optional_options_are_left_out() -> None:
    opts = options(reply(request("discover"), "offer", router=None, dns=()))
    assert "router" not in opts and "name_server" not in opts and "domain" not in opts
    assert options(reply(request("discover"), "offer", domain="lab.example"))["domain"] == \
        b"lab.example"


@pytest.mark.parametrize("lease, t1, t2", [(1, 1, 1), (10, 5, 8), (0, 1, 1),
                                            (2**40, 0xFFFFFFFE // 2, 0xFFFFFFFE * 7 // 8)])
def test_lease_times_are_clamped(lease: int, t1: int, t2: int) -> None:
    """A lease ends at the persona's expiration: at least a second, never 'infinite'."""
    opts = options(reply(request("discover"), "offer", lease_seconds=lease))
    assert opts["lease_time"] == max(1, min(lease, 0xFFFFFFFE))
    assert (opts["renewal_time"], opts["rebinding_time"]) == (t1, t2)


def test_unknown_reply_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        reply(request("discover"), "decline")


def test_whole_exchange_round_trips_through_the_parser() -> None:
    """Offer -> the client's REQUEST built from the offer -> ack, all by decide()."""
    discover = request("discover", xid=5)
    offer = reply(discover, decide(discover, ASSIGNED, SERVER_IP).kind)
    opts = options(offer)
    req = request("request", xid=offer[BOOTP].xid,
                  options=[("requested_addr", offer[BOOTP].yiaddr), ("server_id", opts["server_id"])])
    decision = decide(req, ASSIGNED, SERVER_IP)
    assert decision is not None and decision.kind == "ack"
    ack = reply(req, decision.kind)
    assert options(ack)["message-type"] == 5 and ack[BOOTP].xid == 5
