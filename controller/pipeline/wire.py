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

This module writes the FlowMod, its match, its instructions and the OpenFlow
actions; `wire_nicira` the conntrack and learn actions; `wire_fields` holds
what both need (the field table, value checks).
"""
from __future__ import annotations

import operator
import struct
from typing import Any, NamedTuple

from controller.pipeline import cookies, wire_nicira
from controller.pipeline.actions import (Action, Conntrack, DecTtl, Learn, Move, Output,
                                         SetField)
from controller.pipeline.flowspec import FlowSpec, Match
from controller.pipeline.ofcodec import flow_add, flow_delete
from controller.pipeline.wire_fields import (HH, NX_EXPERIMENTER_ID, OFPAT_EXPERIMENTER,
                                             OFPAT_SET_FIELD, Field, defaults_only, fields_of,
                                             masked_oxm, move_header, padded, unwritten,
                                             value_bytes)

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
_NXAST_REG_MOVE = 6
_ANY = 0xFFFFFFFF                 # OFPP_ANY, OFPG_ANY and OFP_NO_BUFFER alike

_FAST_VERSIONS = frozenset({0x04, 0x05})  # OpenFlow 1.3, 1.4

# ofp_flow_mod after its header, up to the match: cookie, cookie_mask, table_id,
# command, idle/hard timeout, priority, buffer_id, out_port, out_group, flags,
# then 2 bytes that are padding in 1.3 and `importance` (always 0 here) in 1.4.
_FIXED = "QQBBHHHIIIH2x"
_FLOW_MOD_FIXED = struct.Struct("!" + _FIXED)
_FLOW_MOD = struct.Struct("!BBHI" + _FIXED)                  # with its ofp_header
_FLOW_MOD_LEN = _FLOW_MOD.size                               # 48: before the match
# BundleAdd header + bundle_id, pad, flags, then the bundled FlowMod as above.
_BUNDLE_FLOW_MOD = struct.Struct("!BBHII2xHBBHI" + _FIXED)
_BUNDLE_ADD_LEN = _BUNDLE_FLOW_MOD.size - _FLOW_MOD_LEN      # 16
_OUTPUT = struct.Struct("!HHIH6x")
_GOTO = struct.Struct("!HHB3x")
_METER = struct.Struct("!HHI")
_APPLY_HEAD = struct.Struct("!HH4x")
_DEC_NW_TTL = HH.pack(_OFPAT_DEC_NW_TTL, 8) + bytes(4)
_NX_HEAD = struct.Struct("!HHIHHHH")  # type, len, experimenter, subtype, n_bits, src_ofs, dst_ofs
_PADDING = tuple(bytes(n) for n in range(8))

# Per OpenFlow version: match item (name, value) -> (OXM type, TLV), for canonical values only.
_OXM_MEMO: dict[int, dict[tuple[str, Any], tuple[int, bytes]]] = {}
_OXM_MEMO_MAX = 1 << 16   # entries; the memo starts over when full
# Per OpenFlow version: id(action) -> (that action, its bytes), for Conntrack and Learn.  A
# compiler builds one such action and puts it in many flows (every allow rule's commit);
# found by identity (the entry keeps the action alive), never by equality.
_ACTION_MEMO: dict[int, dict[int, tuple[Action, bytes]]] = {}
_ACTION_MEMO_MAX = 1 << 12
_PLAIN = (int, str)


class _Tables(NamedTuple):
    """What the encoder keeps per OpenFlow version."""
    fields: dict[str, Field]
    oxm_memo: dict
    action_memo: dict


_TABLES: dict[int, _Tables] = {}


def _tables(ofp: Any) -> _Tables | None:
    """The tables of this OpenFlow version (None: not one this encoder writes)."""
    version = ofp.OFP_VERSION
    tables = _TABLES.get(version)
    if tables is None and version in _FAST_VERSIONS:
        tables = _TABLES[version] = _Tables(fields_of(ofp), _OXM_MEMO.setdefault(version, {}),
                                            _ACTION_MEMO.setdefault(version, {}))
    return tables


def _fast_match(fields: dict[str, Field], memo: dict, match: Match) -> bytes | None:
    """The OFPMatch of `ofcodec.encode_match`, padded: OXM TLVs sorted (stably) by OXM type.

    Compiled flows repeat most of their match items (an interface's MAC, an
    eth_type, a ct_state), so each item's TLV is remembered.  Only items whose
    value is exactly an int or a str, or a (value, mask) pair of one of them
    (a tuple, or a named one such as `ctmark.MarkMask`), are looked up or
    remembered: equality would otherwise let True find 1, or 1.0 find 1, and
    such values must reach os-ken.
    """
    oxms = []
    for item in match:
        name, value = item
        tv = type(value)
        plain = type(item) is tuple and (
            tv is int or tv is str or (isinstance(value, tuple) and len(value) == 2
                                       and type(value[0]) is type(value[1])
                                       and type(value[0]) in _PLAIN))
        if plain:
            oxm = memo.get(item)
            if oxm is not None:
                oxms.append(oxm)
                continue
        f = fields.get(name)
        if f is None:
            return None
        raw = value_bytes(f, value)
        if raw is not None:
            oxm = (f.order, f.header + raw)
        else:
            tlv = masked_oxm(f, value)
            if tlv is None:
                return None
            oxm = (f.order, tlv)
        if plain:
            if len(memo) >= _OXM_MEMO_MAX:
                memo.clear()
            memo[item] = oxm
        oxms.append(oxm)
    if len(oxms) == 1:
        body = oxms[0][1]
    else:
        oxms.sort(key=_first)  # stable, by OXM type: os-ken's order
        body = b"".join([tlv for _, tlv in oxms])
    length = 4 + len(body)
    return HH.pack(_OFPMT_OXM, length) + body + _PADDING[-length % 8]


_first = operator.itemgetter(0)

# What the encoders write of each action; any other field must be at its default.
# An action type missing here (Opaque, or one added since) is left to os-ken.
_UNWRITTEN: dict[type, tuple[tuple[str, Any], ...]] = {
    Output: unwritten(Output, frozenset({"port", "max_len"})),
    SetField: unwritten(SetField, frozenset({"field", "value"})),
    Move: unwritten(Move, frozenset({"src", "dst", "n_bits"})),
    DecTtl: unwritten(DecTtl, frozenset()),
    Conntrack: unwritten(Conntrack, frozenset({"commit", "zone", "table", "nat", "mark",
                                               "mark_mask"})),
    Learn: unwritten(Learn, frozenset({"table", "cookie", "idle_timeout", "hard_timeout",
                                       "priority", "specs"})),
}


def _fast_action(ofp: Any, tables: _Tables, action: Action) -> bytes | None:
    """`ofcodec.encode_action(parser, action)`, serialized; None to leave it to os-ken."""
    cls = type(action)
    unwritten_fields = _UNWRITTEN.get(cls)
    if unwritten_fields is None or (unwritten_fields
                                    and not defaults_only(action, unwritten_fields)):
        return None
    if cls is Output:
        port, max_len = action.port, action.max_len
        if type(port) is int and type(max_len) is int and 0 <= port <= 0xFFFFFFFF \
                and 0 <= max_len <= 0xFFFF:
            return _OUTPUT.pack(_OFPAT_OUTPUT, 16, port, max_len)
        return None
    if cls is SetField:
        f = tables.fields.get(action.field)
        if f is None:
            return None
        raw = value_bytes(f, action.value)
        if raw is None:
            return None
        length = 4 + 4 + f.size
        total = padded(length)
        return HH.pack(OFPAT_SET_FIELD, total) + f.header + raw + bytes(total - length)
    if cls is Move:
        src, dst = move_header(ofp, action.src), move_header(ofp, action.dst)
        n_bits = action.n_bits
        if src is None or dst is None or type(n_bits) is not int or not 0 <= n_bits <= 0xFFFF:
            return None
        length = 16 + len(src) + len(dst)
        total = padded(length)
        return (_NX_HEAD.pack(OFPAT_EXPERIMENTER, total, NX_EXPERIMENTER_ID, _NXAST_REG_MOVE,
                              n_bits, 0, 0) + src + dst + bytes(total - length))
    if cls is DecTtl:
        return _DEC_NW_TTL
    memo = tables.action_memo
    known = memo.get(id(action))
    if known is not None and known[0] is action:
        return known[1]
    if cls is Conntrack:
        wire = wire_nicira.conntrack(tables.fields, action)
    else:  # cls is Learn: the last one in _UNWRITTEN
        wire = wire_nicira.learn(ofp, action)
    if wire is not None:
        if len(memo) >= _ACTION_MEMO_MAX:
            memo.clear()
        memo[id(action)] = (action, wire)
    return wire


def _fast_instructions(ofp: Any, tables: _Tables, spec: FlowSpec) -> bytes | None:
    out = b""
    meter = spec.meter
    if meter is not None:  # first, as ofcodec.instructions puts it
        if type(meter) is not int or not 0 <= meter <= 0xFFFFFFFF:
            return None
        out = _METER.pack(_OFPIT_METER, 8, meter)
    actions = spec.actions
    if actions:
        if len(actions) == 1:
            body = _fast_action(ofp, tables, actions[0])
            if body is None:
                return None
        else:
            parts = []
            for action in actions:
                wire = _fast_action(ofp, tables, action)
                if wire is None:
                    return None
                parts.append(wire)
            body = b"".join(parts)  # every action is a multiple of 8 bytes long
        out += _APPLY_HEAD.pack(_OFPIT_APPLY_ACTIONS, 8 + len(body)) + body
    goto = spec.goto
    if goto is not None:
        if type(goto) is not int or not 0 <= goto <= 0xFF:
            return None
        out += _GOTO.pack(_OFPIT_GOTO_TABLE, 8, goto)
    return out


def _fast_parts(ofp: Any, spec: FlowSpec, delete: bool) -> tuple[tuple, bytes] | None:
    """The fixed fields of the FlowMod (after its header, up to the match), and the rest.

    None when the spec, or the OpenFlow version, is outside what this encoder
    writes.
    """
    tables = _TABLES.get(ofp.OFP_VERSION) or _tables(ofp)
    if tables is None:
        return None
    table, priority = spec.table, spec.priority
    if delete:
        cookie, cookie_mask, command, inst = _HUB_COOKIE, _HUB_MASK, _OFPFC_DELETE_STRICT, b""
    else:
        cookie, cookie_mask, command = spec.cookie, 0, _OFPFC_ADD
        inst = _fast_instructions(ofp, tables, spec)
        if inst is None:
            return None
    if not (type(cookie) is int and 0 <= cookie < 1 << 64 and type(table) is int
            and 0 <= table <= 0xFF and type(priority) is int and 0 <= priority <= 0xFFFF):
        return None
    match = _fast_match(tables.fields, tables.oxm_memo, spec.match)
    if match is None:
        return None
    return ((cookie, cookie_mask, table, command, 0, 0, priority, _ANY, _ANY, _ANY, 0),
            match + inst)


def fast_flow_mod_body(dp: Any, spec: FlowSpec, delete: bool = False) -> bytes | None:
    """The FlowMod of `flow_add(dp, spec)` (or `flow_delete`) after its ofp_header, as bytes.

    None when the spec, or the datapath's OpenFlow version, is outside what this
    encoder writes; the os-ken objects then encode it (and raise what they raise).
    """
    parts = _fast_parts(dp.ofproto, spec, delete)
    if parts is None:
        return None
    fixed, rest = parts
    return _FLOW_MOD_FIXED.pack(*fixed) + rest


def flow_mod_wire(dp: Any, spec: FlowSpec, xid: int, delete: bool = False) -> bytes:
    """`flow_add(dp, spec)` (or `flow_delete`) with this xid, serialized."""
    ofp = dp.ofproto
    parts = _fast_parts(ofp, spec, delete)
    if parts is None:
        msg = (flow_delete if delete else flow_add)(dp, spec)
        msg.set_xid(xid)
        msg.serialize()
        return bytes(msg.buf)
    fixed, rest = parts
    return _FLOW_MOD.pack(ofp.OFP_VERSION, _OFPT_FLOW_MOD, _FLOW_MOD_LEN + len(rest), xid,
                          *fixed) + rest


def bundle_add_wire(dp: Any, bundle_id: int, flags: int, spec: FlowSpec, xid: int,
                    delete: bool = False) -> bytes:
    """An OpenFlow 1.4+ BundleAdd carrying `flow_add(dp, spec)` (or `flow_delete`), serialized.

    The bundled FlowMod carries the BundleAdd's xid (OpenFlow 1.4 7.3.9.2); no
    properties, so no padding after it.
    """
    ofp = dp.ofproto
    parts = _fast_parts(ofp, spec, delete)
    if parts is None:
        mod = (flow_delete if delete else flow_add)(dp, spec)
        msg = dp.ofproto_parser.OFPBundleAddMsg(dp, bundle_id, flags, mod, [])
        msg.set_xid(xid)
        mod.xid = xid
        msg.serialize()
        return bytes(msg.buf)
    fixed, rest = parts
    version, inner = ofp.OFP_VERSION, _FLOW_MOD_LEN + len(rest)
    return _BUNDLE_FLOW_MOD.pack(version, _OFPT_BUNDLE_ADD_MESSAGE, _BUNDLE_ADD_LEN + inner, xid,
                                 bundle_id, flags, version, _OFPT_FLOW_MOD, inner, xid,
                                 *fixed) + rest
