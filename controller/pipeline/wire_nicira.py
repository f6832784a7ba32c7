"""Nicira actions written straight to wire bytes: conntrack (with its mark and NAT) and learn.

Part of the direct encoder (`controller.pipeline.wire`, which dispatches to
`conntrack` and `learn`): byte for byte what `ofcodec.encode_action` makes
os-ken serialize, or None for anything outside what is written here, which
then goes to os-ken.
"""
from __future__ import annotations

import struct
from typing import Any

from controller.pipeline.actions import Conntrack, Learn, LearnMatch, Nat
from controller.pipeline.wire_fields import (FULL_MARK, H, HH, I32, IPV4_ADDR, NX_EXPERIMENTER_ID,
                                             OFPAT_EXPERIMENTER, OFPAT_SET_FIELD, Field,
                                             defaults_only, move_header, padded, unwritten,
                                             value_of)

_NXAST_LEARN = 16
_NXAST_REG_LOAD2 = 33
_NXAST_CT = 35
_NXAST_NAT = 36
_CT_COMMIT = 1                    # NX_CT_F_COMMIT
_CT_NO_RECIRC = 0xFF              # NX_CT_RECIRC_NONE
_NAT_SRC, _NAT_DST = 1, 2         # NX_NAT_F_SRC, NX_NAT_F_DST
_NAT_IPV4_MIN, _NAT_PROTO_MIN = 1 << 0, 1 << 4  # NX_NAT_RANGE_*: which range fields follow
# NXActionCT: type, len, experimenter, subtype, flags, zone_src (none: 4 zero bytes, so the
# zone is immediate), zone, recirc_table, 3 pad, alg; then its nested actions.
_NX_CT = struct.Struct("!HHIHH4xHB3xH")
# NXActionNAT: type, len, experimenter, subtype, 2 pad, flags, range_present; then the ranges.
_NX_NAT = struct.Struct("!HHIH2xHH")
# NXActionLearn: type, len, experimenter, subtype, idle/hard timeout, priority, cookie,
# flags, table_id, pad, fin_idle/fin_hard timeout; then the flow_mod_specs.
_NX_LEARN = struct.Struct("!HHIHHHHQHBxHH")
_NX_SUBTYPE = struct.Struct("!HHIH")  # type, len, experimenter, subtype

# What the encoders below write of Nat and LearnMatch; any other field must be at its default.
NAT_UNWRITTEN = unwritten(Nat, frozenset({"dst", "dst_port", "src"}))
SPEC_UNWRITTEN = unwritten(LearnMatch, frozenset({"dst", "n_bits", "dst_ofs", "src",
                                                  "src_ofs", "value"}))


def conntrack(fields: dict[str, Field], ct: Conntrack) -> bytes | None:
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
    mark, mask = getattr(ct, "mark", None), getattr(ct, "mark_mask", FULL_MARK)
    if mark is None:
        if type(mask) is not int or mask != FULL_MARK:
            return None
        nested = b""
    else:
        nested = _mark(fields, mark, mask)
        if nested is None:
            return None
    if nat is not None:
        wire_nat = _nat(nat)
        if wire_nat is None:
            return None
        nested += wire_nat
    return _NX_CT.pack(OFPAT_EXPERIMENTER, 24 + len(nested), NX_EXPERIMENTER_ID, _NXAST_CT,
                       _CT_COMMIT if commit else 0, zone, table, 0) + nested


def _mark(fields: dict[str, Field], mark: Any, mask: Any) -> bytes | None:
    """`ofcodec._encode_mark`: set_field of ct_mark (whole), NXActionRegLoad2 (masked)."""
    f = fields.get("ct_mark")
    if (f is None or f.size != 4 or type(mark) is not int or type(mask) is not int
            or not 0 < mask <= FULL_MARK or not 0 <= mark <= FULL_MARK or mark & ~mask):
        return None
    if mask == FULL_MARK:  # 4 + an 8-byte OXM + 4 pad
        return HH.pack(OFPAT_SET_FIELD, 16) + f.header + I32.pack(mark) + bytes(4)
    # experimenter header + subtype, a 12-byte masked OXM, 2 pad
    return (_NX_SUBTYPE.pack(OFPAT_EXPERIMENTER, 24, NX_EXPERIMENTER_ID, _NXAST_REG_LOAD2)
            + f.header_w + I32.pack(mark) + I32.pack(mask) + bytes(2))


def _nat(nat: Nat) -> bytes | None:
    """`ofcodec._encode_nat`: NXActionNAT with at most an IPv4 minimum and a port minimum."""
    if type(nat) is not Nat or (NAT_UNWRITTEN and not defaults_only(nat, NAT_UNWRITTEN)):
        return None
    dst, port, src = nat.dst, nat.dst_port, nat.src
    if dst is not None:
        if src is not None:
            return None  # Nat refuses both; ofcodec would write dst only
        flags, addr = _NAT_DST, value_of(IPV4_ADDR, dst)
        if addr is None:
            return None
        if port is None:
            present, ranges = _NAT_IPV4_MIN, addr.to_bytes(4, "big")
        elif type(port) is int and 0 <= port <= 0xFFFF:
            present = _NAT_IPV4_MIN | _NAT_PROTO_MIN
            ranges = addr.to_bytes(4, "big") + H.pack(port)
        else:
            return None
    elif port is not None:
        return None  # a port without an address: ofcodec would drop it
    elif src is not None:
        flags, addr = _NAT_SRC, value_of(IPV4_ADDR, src)
        if addr is None:
            return None
        present, ranges = _NAT_IPV4_MIN, addr.to_bytes(4, "big")
    else:
        flags, present, ranges = 0, 0, b""
    length = 16 + len(ranges)
    total = padded(length)
    return (_NX_NAT.pack(OFPAT_EXPERIMENTER, total, NX_EXPERIMENTER_ID, _NXAST_NAT, flags,
                         present) + ranges + bytes(total - length))


def learn(ofp: Any, learn: Learn) -> bytes | None:
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
        part = _learn_match(ofp, spec)
        if part is None:
            return None
        parts.append(part)
    specs = b"".join(parts)
    length = 32 + len(specs)
    total = padded(length)
    return (_NX_LEARN.pack(OFPAT_EXPERIMENTER, total, NX_EXPERIMENTER_ID, _NXAST_LEARN,
                           idle, hard, priority, cookie, 0, table, 0, 0)
            + specs + bytes(total - length))


def _learn_match(ofp: Any, spec: LearnMatch) -> bytes | None:
    """An NXFlowSpecMatch: header (src type, dst type 0 = match, n_bits), source, dst subfield.

    The source is a subfield (4-byte OXM/NXM header, offset) or an immediate
    value in whole 16-bit words enough for n_bits.
    """
    if type(spec) is not LearnMatch or (SPEC_UNWRITTEN
                                        and not defaults_only(spec, SPEC_UNWRITTEN)):
        return None
    n_bits, dst_ofs, src = spec.n_bits, spec.dst_ofs, spec.src
    if not (type(n_bits) is int and 0 < n_bits <= 0x3FF and type(dst_ofs) is int
            and 0 <= dst_ofs <= 0xFFFF):
        return None
    dst = move_header(ofp, spec.dst)
    if dst is None or len(dst) != 4:
        return None
    if src is not None:
        if spec.value is not None:
            return None  # LearnMatch refuses both; ofcodec would write src
        src_ofs, header = spec.src_ofs, move_header(ofp, src)
        if header is None or len(header) != 4 or type(src_ofs) is not int \
                or not 0 <= src_ofs <= 0xFFFF:
            return None
        return H.pack(n_bits) + header + H.pack(src_ofs) + dst + H.pack(dst_ofs)
    value, size = spec.value, (n_bits + 15) // 16 * 2
    if type(value) is not int or not 0 <= value < 1 << (8 * size):
        return None
    return (H.pack(1 << 13 | n_bits) + value.to_bytes(size, "big") + dst
            + H.pack(dst_ofs))
