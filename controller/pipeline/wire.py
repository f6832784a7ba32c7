"""FlowMods (and the BundleAdds carrying them) written straight to wire bytes.

Building os-ken objects and serializing them costs ~17 us per flow (~30 us for
a conntrack or learn flow), which dominated bulk applies: a personality switch
is ~2,000 such flows in one bundle.  For the flows the hub compiles, the bytes
are written with `struct` instead: byte for byte what `ofcodec.flow_add` /
`flow_delete` (wrapped in an OFPBundleAddMsg for OpenFlow 1.4) serialize to, as
tests/unit/test_ofcodec_fast.py checks, for every flow `compile_fabric`,
`compile_personality` and `compile_transition` emit.  Anything outside the
supported set (another OpenFlow version, match field, action, a field of an
action this module does not write set to other than its default, or a value not
in canonical form) makes the fast encoder answer None, and the os-ken objects
encode it: they remain the reference encoding.
"""
from __future__ import annotations

import dataclasses
import operator
import re
import socket
import struct
from typing import Any, NamedTuple

from controller.pipeline import cookies
from controller.pipeline.actions import (Action, Conntrack, DecTtl, Learn, LearnMatch, Move, Nat,
                                         Output, SetField)
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
_NXAST_LEARN = 16
_NXAST_REG_LOAD2 = 33
_NXAST_CT = 35
_NXAST_NAT = 36
_CT_COMMIT = 1                    # NX_CT_F_COMMIT
_CT_NO_RECIRC = 0xFF              # NX_CT_RECIRC_NONE
_FULL_MARK = 0xFFFFFFFF           # a ct_mark mask of every bit: the mark is set whole
_NAT_SRC, _NAT_DST = 1, 2         # NX_NAT_F_SRC, NX_NAT_F_DST
_NAT_IPV4_MIN, _NAT_PROTO_MIN = 1 << 0, 1 << 4  # NX_NAT_RANGE_*: which range fields follow
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
# NXActionCT: type, len, experimenter, subtype, flags, zone_src (none: 4 zero bytes, so the
# zone is immediate), zone, recirc_table, 3 pad, alg; then its nested actions.
_NX_CT = struct.Struct("!HHIHH4xHB3xH")
# NXActionNAT: type, len, experimenter, subtype, 2 pad, flags, range_present; then the ranges.
_NX_NAT = struct.Struct("!HHIH2xHH")
# NXActionLearn: type, len, experimenter, subtype, idle/hard timeout, priority, cookie,
# flags, table_id, pad, fin_idle/fin_hard timeout; then the flow_mod_specs.
_NX_LEARN = struct.Struct("!HHIHHHHQHBxHH")
_NX_SUBTYPE = struct.Struct("!HHIH")  # type, len, experimenter, subtype
_H = struct.Struct("!H")
_I = struct.Struct("!I")

_INT, _MAC, _IPV4 = "int", "mac", "ipv4"
# The match fields / set-field targets the compilers use, by value kind.  ct_state, ct_zone,
# ct_mark and the registers are Nicira (NXM_NX) fields: plain 4-byte OXM headers of class 1.
FAST_FIELDS = {
    "in_port": _INT, "metadata": _INT, "eth_dst": _MAC, "eth_src": _MAC, "eth_type": _INT,
    "vlan_vid": _INT, "ip_dscp": _INT, "ip_proto": _INT, "ipv4_src": _IPV4, "ipv4_dst": _IPV4,
    "tcp_src": _INT, "tcp_dst": _INT, "udp_src": _INT, "udp_dst": _INT,
    "icmpv4_type": _INT, "icmpv4_code": _INT, "arp_op": _INT,
    "arp_spa": _IPV4, "arp_tpa": _IPV4, "arp_sha": _MAC, "arp_tha": _MAC,
    "ct_state": _INT, "ct_zone": _INT, "ct_mark": _INT,
    **{f"reg{i}": _INT for i in range(8)},
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
# Per OpenFlow version: match item (name, value) -> (OXM type, TLV), for canonical values only.
_OXM_MEMO: dict[int, dict[tuple[str, Any], tuple[int, bytes]]] = {}
_OXM_MEMO_MAX = 1 << 16   # entries; the memo starts over when full
# Per OpenFlow version: id(action) -> (that action, its bytes), for Conntrack and Learn.  A
# compiler builds one such action and puts it in many flows (every allow rule's commit);
# found by identity (the entry keeps the action alive), never by equality.
_ACTION_MEMO: dict[int, dict[int, tuple[Action, bytes]]] = {}
_ACTION_MEMO_MAX = 1 << 12
_PLAIN = (int, str)


def _fields(ofp: Any) -> dict[str, _Field]:
    """The supported OXM fields of one OpenFlow version, headers taken from os-ken."""
    table = _FIELDS.get(ofp.OFP_VERSION)
    if table is None:
        _OXM_MEMO[ofp.OFP_VERSION] = {}
        _ACTION_MEMO[ofp.OFP_VERSION] = {}
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
    """The OXM/NXM header naming a reg_move (or learn) operand, as os-ken writes it."""
    if type(name) is not str:
        return None
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


def _fast_match(fields: dict[str, _Field], memo: dict, match: Match) -> bytes | None:
    """The OFPMatch of `ofcodec.encode_match`, padded: OXM TLVs sorted (stably) by OXM type.

    Compiled flows repeat most of their match items (an interface's MAC, an
    eth_type, a ct_state), so each item's TLV is remembered.  Only items whose
    value is exactly an int or a str, or a pair of one of them, are looked up
    or remembered: equality would otherwise let True find 1, or 1.0 find 1,
    and such values must reach os-ken.
    """
    oxms = []
    for item in match:
        name, value = item
        tv = type(value)
        plain = type(item) is tuple and (
            tv is int or tv is str or (tv is tuple and len(value) == 2 and type(value[0])
                                       is type(value[1]) and type(value[0]) in _PLAIN))
        if plain:
            oxm = memo.get(item)
            if oxm is not None:
                oxms.append(oxm)
                continue
        f = fields.get(name)
        if f is None:
            return None
        v = _value(f, value)
        if v is not None:
            oxm = (f.order, f.header + v.to_bytes(f.size, "big"))
        else:
            tlv = _masked_oxm(f, value)
            if tlv is None:
                return None
            oxm = (f.order, tlv)
        if plain:
            if len(memo) >= _OXM_MEMO_MAX:
                memo.clear()
            memo[item] = oxm
        oxms.append(oxm)
    if len(oxms) > 1:
        oxms.sort(key=_first)  # stable, by OXM type: os-ken's order
    body = b"".join([tlv for _, tlv in oxms])
    length = 4 + len(body)
    return _HH.pack(_OFPMT_OXM, length) + body + bytes(-length % 8)


_first = operator.itemgetter(0)


class _NoDefault:
    """The default of a field that has none: no value is ever of this type."""


_NO_DEFAULT = _NoDefault()


def _unwritten(cls: type, written: frozenset[str]) -> tuple[tuple[str, Any], ...]:
    """The fields of an action dataclass this module does not write, with their defaults.

    An action gains fields over time (a ct mark, a learn flag); until this
    encoder writes one, an action that sets it to anything but its default must
    go to os-ken.  Empty (falsy) when the encoder writes every field, so the
    check costs nothing then.
    """
    out = []
    for f in dataclasses.fields(cls):
        if f.name in written:
            continue
        if f.default is not dataclasses.MISSING:
            out.append((f.name, f.default))
        elif f.default_factory is not dataclasses.MISSING:
            out.append((f.name, f.default_factory()))
        else:
            out.append((f.name, _NO_DEFAULT))  # never held: always left to os-ken
    return tuple(out)


def _defaults_only(action: Any, unwritten: tuple[tuple[str, Any], ...]) -> bool:
    """True if every field in `unwritten` holds its default (same type, equal value)."""
    for name, default in unwritten:
        value = getattr(action, name)
        if value is not default and (type(value) is not type(default) or value != default):
            return False
    return True


# What the encoders below write of each action; any other field must be at its default.
# An action type missing here (Opaque, or one added since) is left to os-ken.
_UNWRITTEN: dict[type, tuple[tuple[str, Any], ...]] = {
    Output: _unwritten(Output, frozenset({"port", "max_len"})),
    SetField: _unwritten(SetField, frozenset({"field", "value"})),
    Move: _unwritten(Move, frozenset({"src", "dst", "n_bits"})),
    DecTtl: _unwritten(DecTtl, frozenset()),
    Conntrack: _unwritten(Conntrack, frozenset({"commit", "zone", "table", "nat", "mark",
                                                "mark_mask"})),
    Learn: _unwritten(Learn, frozenset({"table", "cookie", "idle_timeout", "hard_timeout",
                                        "priority", "specs"})),
}
_NAT_UNWRITTEN = _unwritten(Nat, frozenset({"dst", "dst_port", "src"}))
_SPEC_UNWRITTEN = _unwritten(LearnMatch, frozenset({"dst", "n_bits", "dst_ofs", "src",
                                                    "src_ofs", "value"}))
_IPV4_ADDR = _Field(0, _IPV4, 4, 1 << 32, b"", b"")  # for _value on NAT addresses


def _fast_action(ofp: Any, fields: dict[str, _Field], action: Action) -> bytes | None:
    """`ofcodec.encode_action(parser, action)`, serialized; None to leave it to os-ken."""
    cls = type(action)
    unwritten = _UNWRITTEN.get(cls)
    if unwritten is None or (unwritten and not _defaults_only(action, unwritten)):
        return None
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
    memo = _ACTION_MEMO[ofp.OFP_VERSION]
    known = memo.get(id(action))
    if known is not None and known[0] is action:
        return known[1]
    if cls is Conntrack:
        wire = _fast_conntrack(fields, action)
    else:  # cls is Learn: the last one in _UNWRITTEN
        wire = _fast_learn(ofp, action)
    if wire is not None:
        if len(memo) >= _ACTION_MEMO_MAX:
            memo.clear()
        memo[id(action)] = (action, wire)
    return wire


def _fast_conntrack(fields: dict[str, _Field], ct: Conntrack) -> bytes | None:
    """`ofcodec.encode_action` of a Conntrack: NXActionCT, immediate zone, no ALG.

    Its nested actions: the mark if any (a set_field of ct_mark when whole, an
    NXActionRegLoad2 when masked: both come out padded), then the NXActionNAT
    if any.  os-ken appends the NAT unpadded and pads the ct action as a whole,
    which gives the same bytes as the NAT padded on its own, since everything
    before it is a multiple of 8 bytes long.
    """
    commit, zone, table, nat = ct.commit, ct.zone, ct.table, ct.nat
    if type(commit) is not bool or type(zone) is not int or not 0 <= zone <= 0xFFFF:
        return None
    if table is None:
        table = _CT_NO_RECIRC
    elif type(table) is not int or not 0 <= table < _CT_NO_RECIRC:
        return None
    # getattr: the mark is written when Conntrack has one (it arrived after this encoder).
    mark, mask = getattr(ct, "mark", None), getattr(ct, "mark_mask", _FULL_MARK)
    if mark is None:
        if type(mask) is not int or mask != _FULL_MARK:
            return None
        nested = b""
    else:
        nested = _fast_mark(fields, mark, mask)
        if nested is None:
            return None
    if nat is not None:
        wire_nat = _fast_nat(nat)
        if wire_nat is None:
            return None
        nested += wire_nat
    return _NX_CT.pack(_OFPAT_EXPERIMENTER, 24 + len(nested), _NX_EXPERIMENTER_ID, _NXAST_CT,
                       _CT_COMMIT if commit else 0, zone, table, 0) + nested


def _fast_mark(fields: dict[str, _Field], mark: Any, mask: Any) -> bytes | None:
    """`ofcodec._encode_mark`: set_field of ct_mark (whole), NXActionRegLoad2 (masked)."""
    f = fields.get("ct_mark")
    if (f is None or f.size != 4 or type(mark) is not int or type(mask) is not int
            or not 0 < mask <= _FULL_MARK or not 0 <= mark <= _FULL_MARK or mark & ~mask):
        return None
    if mask == _FULL_MARK:  # 4 + an 8-byte OXM + 4 pad
        return _HH.pack(_OFPAT_SET_FIELD, 16) + f.header + _I.pack(mark) + bytes(4)
    # experimenter header + subtype, a 12-byte masked OXM, 2 pad
    return (_NX_SUBTYPE.pack(_OFPAT_EXPERIMENTER, 24, _NX_EXPERIMENTER_ID, _NXAST_REG_LOAD2)
            + f.header_w + _I.pack(mark) + _I.pack(mask) + bytes(2))


def _fast_nat(nat: Nat) -> bytes | None:
    """`ofcodec._encode_nat`: NXActionNAT with at most an IPv4 minimum and a port minimum."""
    if type(nat) is not Nat or (_NAT_UNWRITTEN and not _defaults_only(nat, _NAT_UNWRITTEN)):
        return None
    dst, port, src = nat.dst, nat.dst_port, nat.src
    if dst is not None:
        if src is not None:
            return None  # Nat refuses both; ofcodec would write dst only
        flags, addr = _NAT_DST, _value(_IPV4_ADDR, dst)
        if addr is None:
            return None
        if port is None:
            present, ranges = _NAT_IPV4_MIN, addr.to_bytes(4, "big")
        elif type(port) is int and 0 <= port <= 0xFFFF:
            present = _NAT_IPV4_MIN | _NAT_PROTO_MIN
            ranges = addr.to_bytes(4, "big") + _H.pack(port)
        else:
            return None
    elif port is not None:
        return None  # a port without an address: ofcodec would drop it
    elif src is not None:
        flags, addr = _NAT_SRC, _value(_IPV4_ADDR, src)
        if addr is None:
            return None
        present, ranges = _NAT_IPV4_MIN, addr.to_bytes(4, "big")
    else:
        flags, present, ranges = 0, 0, b""
    length = 16 + len(ranges)
    padded = length + (-length % 8)
    return (_NX_NAT.pack(_OFPAT_EXPERIMENTER, padded, _NX_EXPERIMENTER_ID, _NXAST_NAT, flags,
                         present) + ranges + bytes(padded - length))


def _fast_learn(ofp: Any, learn: Learn) -> bytes | None:
    """`ofcodec.encode_action` of a Learn: NXActionLearn of NXFlowSpecMatch specs, no flags."""
    table, cookie, idle, hard, priority = (learn.table, learn.cookie, learn.idle_timeout,
                                           learn.hard_timeout, learn.priority)
    if not (type(table) is int and 0 <= table <= 0xFF and type(cookie) is int
            and 0 <= cookie < 1 << 64 and type(idle) is int and 0 <= idle <= 0xFFFF
            and type(hard) is int and 0 <= hard <= 0xFFFF and type(priority) is int
            and 0 <= priority <= 0xFFFF and type(learn.specs) is tuple):
        return None
    parts = []
    for spec in learn.specs:
        part = _fast_learn_match(ofp, spec)
        if part is None:
            return None
        parts.append(part)
    specs = b"".join(parts)
    length = 32 + len(specs)
    padded = length + (-length % 8)
    return (_NX_LEARN.pack(_OFPAT_EXPERIMENTER, padded, _NX_EXPERIMENTER_ID, _NXAST_LEARN,
                           idle, hard, priority, cookie, 0, table, 0, 0)
            + specs + bytes(padded - length))


def _fast_learn_match(ofp: Any, spec: LearnMatch) -> bytes | None:
    """An NXFlowSpecMatch: header (src type, dst type 0 = match, n_bits), source, dst subfield.

    The source is a subfield (4-byte OXM/NXM header, offset) or an immediate
    value in whole 16-bit words enough for n_bits.
    """
    if type(spec) is not LearnMatch or (_SPEC_UNWRITTEN
                                        and not _defaults_only(spec, _SPEC_UNWRITTEN)):
        return None
    n_bits, dst_ofs, src = spec.n_bits, spec.dst_ofs, spec.src
    if not (type(n_bits) is int and 0 < n_bits <= 0x3FF and type(dst_ofs) is int
            and 0 <= dst_ofs <= 0xFFFF):
        return None
    dst = _move_header(ofp, spec.dst)
    if dst is None or len(dst) != 4:
        return None
    if src is not None:
        if spec.value is not None:
            return None  # LearnMatch refuses both; ofcodec would write src
        src_ofs, header = spec.src_ofs, _move_header(ofp, src)
        if header is None or len(header) != 4 or type(src_ofs) is not int \
                or not 0 <= src_ofs <= 0xFFFF:
            return None
        return _H.pack(n_bits) + header + _H.pack(src_ofs) + dst + _H.pack(dst_ofs)
    value, size = spec.value, (n_bits + 15) // 16 * 2
    if type(value) is not int or not 0 <= value < 1 << (8 * size):
        return None
    return (_H.pack(1 << 13 | n_bits) + value.to_bytes(size, "big") + dst
            + _H.pack(dst_ofs))


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
    match = _fast_match(fields, _OXM_MEMO[ofp.OFP_VERSION], spec.match)
    if match is None:
        return None
    return (_FLOW_MOD_FIXED.pack(cookie, cookie_mask, table, command, 0, 0, priority,
                                 _ANY, _ANY, _ANY, 0) + match + inst)


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
