"""FlowMods (and the BundleAdds carrying them) written straight to wire bytes.

Building os-ken objects and serializing them costs ~17 us per flow, which
dominated bulk applies.  For the flows the hub compiles, the bytes are written
with `struct` instead: byte for byte what `ofcodec.flow_add` / `flow_delete`
(wrapped in an OFPBundleAddMsg for OpenFlow 1.4) serialize to, as
tests/unit/test_ofcodec_fast.py checks.  Anything outside the supported set
(another OpenFlow version, match field, action, or a value not in canonical
form) makes the fast encoder answer None, and the os-ken objects encode it:
they remain the reference encoding.
"""
from __future__ import annotations

import operator
import re
import socket
import struct
from typing import Any, NamedTuple

from controller.pipeline import cookies
from controller.pipeline.actions import Action, DecTtl, Move, Output, SetField
from controller.pipeline.flowspec import FlowSpec, Match
from controller.pipeline.ofcodec import flow_add, flow_delete

_HUB_COOKIE, _HUB_MASK = cookies.hub_mask()

_OFPT_FLOW_MOD = 14
_OFPT_BUNDLE_ADD_MESSAGE = 34     # OpenFlow 1.4
_OFPFC_ADD = 0
_OFPFC_DELETE_STRICT = 4
_OFPMT_OXM = 1
_OFPIT_GOTO_TABLE = 1
_OFPIT_APPLY_ACTIONS = 4
_OFPIT_METER = 6                  # OpenFlow 1.3 and 1.4 (1.5 has a meter action instead)
_OFPAT_OUTPUT = 0
_OFPAT_DEC_NW_TTL = 24
_OFPAT_SET_FIELD = 25
_OFPAT_EXPERIMENTER = 0xFFFF
_NX_EXPERIMENTER_ID = 0x00002320
_NXAST_REG_MOVE = 6
_ANY = 0xFFFFFFFF                 # OFPP_ANY, OFPG_ANY and OFP_NO_BUFFER alike

_FAST_VERSIONS = frozenset({0x04, 0x05})  # OpenFlow 1.3, 1.4

# ofp_flow_mod after its header, up to the match: cookie, cookie_mask, table_id,
# command, idle/hard timeout, priority, buffer_id, out_port, out_group, flags,
# then 2 bytes that are padding in 1.3 and `importance` (always 0 here) in 1.4.
_FLOW_MOD_FIXED = struct.Struct("!QQBBHHHIIIH2x")
_HEADER = struct.Struct("!BBHI")
# BundleAdd header + bundle_id, pad, flags + the bundled message's header.
_BUNDLE_ADD_HEAD = struct.Struct("!BBHII2xHBBHI")
_HH = struct.Struct("!HH")
_OUTPUT = struct.Struct("!HHIH6x")
_GOTO = struct.Struct("!HHB3x")
_METER = struct.Struct("!HHI")
_DEC_NW_TTL = _HH.pack(_OFPAT_DEC_NW_TTL, 8) + bytes(4)
_NX_HEAD = struct.Struct("!HHIHHHH")  # type, len, experimenter, subtype, n_bits, src_ofs, dst_ofs

_INT, _MAC, _IPV4 = "int", "mac", "ipv4"
# The match fields / set-field targets the compilers use, by value kind.
FAST_FIELDS = {
    "in_port": _INT, "metadata": _INT, "eth_dst": _MAC, "eth_src": _MAC, "eth_type": _INT,
    "vlan_vid": _INT, "ip_proto": _INT, "ipv4_src": _IPV4, "ipv4_dst": _IPV4,
    "tcp_src": _INT, "tcp_dst": _INT, "udp_src": _INT, "udp_dst": _INT,
    "icmpv4_type": _INT, "icmpv4_code": _INT, "arp_op": _INT,
    "arp_spa": _IPV4, "arp_tpa": _IPV4, "arp_sha": _MAC, "arp_tha": _MAC,
}
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}\Z")


class _Field(NamedTuple):
    order: int        # OXM type number: the order os-ken sorts match fields in
    kind: str
    size: int
    limit: int        # 1 << (8 * size)
    header: bytes     # OXM header, no mask
    header_w: bytes   # OXM header, with mask


_FIELDS: dict[int, dict[str, _Field]] = {}
_MOVE_HEADERS: dict[tuple[int, str], bytes] = {}


def _fields(ofp: Any) -> dict[str, _Field]:
    """The supported OXM fields of one OpenFlow version, headers taken from os-ken."""
    table = _FIELDS.get(ofp.OFP_VERSION)
    if table is None:
        table = _FIELDS[ofp.OFP_VERSION] = _build_fields(ofp)
    return table


def _build_fields(ofp: Any) -> dict[str, _Field]:
    from os_ken.lib import type_desc

    table = {}
    for name, kind in FAST_FIELDS.items():
        num, desc = ofp.oxm_get_field_info_by_name(name)
        if isinstance(num, tuple):
            continue  # experimenter OXM: left to os-ken
        expected = {_INT: type_desc.IntDescr, _MAC: type_desc.MacAddr,
                    _IPV4: type_desc.IPv4Addr}[kind]
        if not (desc is expected or isinstance(desc, expected)):
            continue
        size = desc.size
        plain, masked = bytearray(), bytearray()
        ofp.oxm_serialize(num, bytes(size), None, plain, 0)
        ofp.oxm_serialize(num, bytes(size), bytes(size), masked, 0)
        table[name] = _Field(num, kind, size, 1 << (8 * size), bytes(plain[:4]),
                             bytes(masked[:4]))
    return table


def _move_header(ofp: Any, name: str) -> bytes | None:
    """The OXM/NXM header naming a reg_move operand, as os-ken writes it."""
    key = (ofp.OFP_VERSION, name)
    header = _MOVE_HEADERS.get(key)
    if header is None:
        try:
            buf = bytearray()
            ofp.oxm_serialize_header(ofp.oxm_from_user_header(name), buf, 0)
        except Exception:
            return None
        header = _MOVE_HEADERS[key] = bytes(buf)
    return header


def _value(f: _Field, value: Any) -> int | None:
    """A user value in canonical form as an integer; None if os-ken should judge it."""
    kind = f.kind
    if kind == _INT:
        if type(value) is int and 0 <= value < f.limit:
            return value
        return None
    if type(value) is not str:
        return None
    if kind == _MAC:
        if _MAC_RE.match(value) is None:
            return None
        return int(value.replace(":", ""), 16)
    try:  # _IPV4: dotted quad, exactly as it prints back (no shorthand, no leading zeros)
        packed = socket.inet_aton(value)
    except (OSError, ValueError):
        return None
    if socket.inet_ntoa(packed) != value:
        return None
    return int.from_bytes(packed, "big")


def _masked_oxm(f: _Field, value: Any) -> bytes | None:
    """A masked match field as an OXM TLV, normalized (value & mask) as os-ken does.

    `value` is a (value, mask) tuple, or for IPv4 fields "a.b.c.d/len"; None for
    anything else.
    """
    if type(value) is tuple:
        if len(value) != 2:
            return None
        v, m = _value(f, value[0]), _value(f, value[1])
        if v is None or m is None:
            return None
    elif f.kind == _IPV4 and type(value) is str and "/" in value:
        addr, _, plen = value.partition("/")
        v = _value(f, addr)
        if v is None or not (plen.isdigit() and plen.isascii() and str(int(plen)) == plen
                             and int(plen) <= 32):
            return None
        m = (0xFFFFFFFF << (32 - int(plen))) & 0xFFFFFFFF
    else:
        return None
    size = f.size
    return f.header_w + (v & m).to_bytes(size, "big") + m.to_bytes(size, "big")


def _fast_match(fields: dict[str, _Field], match: Match) -> bytes | None:
    oxms = []
    for name, value in match:
        f = fields.get(name)
        if f is None:
            return None
        v = _value(f, value)
        if v is not None:
            oxms.append((f.order, f.header + v.to_bytes(f.size, "big")))
        else:
            tlv = _masked_oxm(f, value)
            if tlv is None:
                return None
            oxms.append((f.order, tlv))
    if len(oxms) > 1:
        oxms.sort(key=_first)  # stable, by OXM type: os-ken's order
    body = b"".join([tlv for _, tlv in oxms])
    length = 4 + len(body)
    return _HH.pack(_OFPMT_OXM, length) + body + bytes(-length % 8)


_first = operator.itemgetter(0)


def _fast_action(ofp: Any, fields: dict[str, _Field], action: Action) -> bytes | None:
    cls = type(action)
    if cls is Output:
        port, max_len = action.port, action.max_len
        if type(port) is int and type(max_len) is int and 0 <= port <= 0xFFFFFFFF \
                and 0 <= max_len <= 0xFFFF:
            return _OUTPUT.pack(_OFPAT_OUTPUT, 16, port, max_len)
        return None
    if cls is SetField:
        f = fields.get(action.field)
        if f is None:
            return None
        v = _value(f, action.value)
        if v is None:
            return None
        length = 4 + 4 + f.size
        padded = length + (-length % 8)
        return (_HH.pack(_OFPAT_SET_FIELD, padded) + f.header + v.to_bytes(f.size, "big")
                + bytes(padded - length))
    if cls is Move:
        src, dst = _move_header(ofp, action.src), _move_header(ofp, action.dst)
        n_bits = action.n_bits
        if src is None or dst is None or type(n_bits) is not int or not 0 <= n_bits <= 0xFFFF:
            return None
        length = 16 + len(src) + len(dst)
        padded = length + (-length % 8)
        return (_NX_HEAD.pack(_OFPAT_EXPERIMENTER, padded, _NX_EXPERIMENTER_ID, _NXAST_REG_MOVE,
                              n_bits, 0, 0) + src + dst + bytes(padded - length))
    if cls is DecTtl:
        return _DEC_NW_TTL
    return None  # Conntrack, Learn, Opaque: os-ken encodes them


def _fast_instructions(ofp: Any, fields: dict[str, _Field], spec: FlowSpec) -> bytes | None:
    out = b""
    meter = spec.meter
    if meter is not None:  # first, as ofcodec.instructions puts it
        if type(meter) is not int or not 0 <= meter <= 0xFFFFFFFF:
            return None
        out = _METER.pack(_OFPIT_METER, 8, meter)
    if spec.actions:
        parts = []
        for action in spec.actions:
            wire = _fast_action(ofp, fields, action)
            if wire is None:
                return None
            parts.append(wire)
        body = b"".join(parts)  # every action is a multiple of 8 bytes long
        out += _HH.pack(_OFPIT_APPLY_ACTIONS, 8 + len(body)) + bytes(4) + body
    goto = spec.goto
    if goto is not None:
        if type(goto) is not int or not 0 <= goto <= 0xFF:
            return None
        out += _GOTO.pack(_OFPIT_GOTO_TABLE, 8, goto)
    return out


def fast_flow_mod_body(dp: Any, spec: FlowSpec, delete: bool = False) -> bytes | None:
    """The FlowMod of `flow_add(dp, spec)` (or `flow_delete`) after its ofp_header, as bytes.

    None when the spec, or the datapath's OpenFlow version, is outside what this
    encoder writes; the os-ken objects then encode it (and raise what they raise).
    """
    ofp = dp.ofproto
    fields = _FIELDS.get(ofp.OFP_VERSION)
    if fields is None:
        if ofp.OFP_VERSION not in _FAST_VERSIONS:
            return None
        fields = _fields(ofp)
    table, priority = spec.table, spec.priority
    if delete:
        cookie, cookie_mask, command, inst = _HUB_COOKIE, _HUB_MASK, _OFPFC_DELETE_STRICT, b""
    else:
        cookie, cookie_mask, command = spec.cookie, 0, _OFPFC_ADD
        inst = _fast_instructions(ofp, fields, spec)
        if inst is None:
            return None
    if not (type(cookie) is int and 0 <= cookie < 1 << 64 and type(table) is int
            and 0 <= table <= 0xFF and type(priority) is int and 0 <= priority <= 0xFFFF):
        return None
    match = _fast_match(fields, spec.match)
    if match is None:
        return None
    return (_FLOW_MOD_FIXED.pack(cookie, cookie_mask, table, command, 0, 0, priority,
                                 _ANY, _ANY, _ANY, 0) + match + inst)


class WireMessage:
    """An OpenFlow message already in wire form; serializes as a no-op (like an os-ken msg)."""

    __slots__ = ("xid", "buf")

    def __init__(self, xid: int, buf: bytes) -> None:
        self.xid = xid
        self.buf = buf

    def set_xid(self, xid: int) -> None:
        assert self.xid is None
        self.xid = xid

    def serialize(self) -> None:
        pass


def flow_mod_wire(dp: Any, spec: FlowSpec, xid: int, delete: bool = False) -> bytes:
    """`flow_add(dp, spec)` (or `flow_delete`) with this xid, serialized."""
    body = fast_flow_mod_body(dp, spec, delete)
    if body is None:
        msg = (flow_delete if delete else flow_add)(dp, spec)
        msg.set_xid(xid)
        msg.serialize()
        return bytes(msg.buf)
    return _HEADER.pack(dp.ofproto.OFP_VERSION, _OFPT_FLOW_MOD, 8 + len(body), xid) + body


def bundle_add_wire(dp: Any, bundle_id: int, flags: int, spec: FlowSpec, xid: int,
                    delete: bool = False) -> bytes:
    """An OpenFlow 1.4+ BundleAdd carrying `flow_add(dp, spec)` (or `flow_delete`), serialized.

    The bundled FlowMod carries the BundleAdd's xid (OpenFlow 1.4 7.3.9.2); no
    properties, so no padding after it.
    """
    body = fast_flow_mod_body(dp, spec, delete)
    if body is None:
        mod = (flow_delete if delete else flow_add)(dp, spec)
        msg = dp.ofproto_parser.OFPBundleAddMsg(dp, bundle_id, flags, mod, [])
        msg.set_xid(xid)
        mod.xid = xid
        msg.serialize()
        return bytes(msg.buf)
    version, inner = dp.ofproto.OFP_VERSION, 8 + len(body)
    return _BUNDLE_ADD_HEAD.pack(version, _OFPT_BUNDLE_ADD_MESSAGE, 16 + inner, xid, bundle_id,
                                 flags, version, _OFPT_FLOW_MOD, inner, xid) + body
