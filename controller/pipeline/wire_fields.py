"""What the direct encoders share: the OXM field table, value checks, action field lists.

`controller.pipeline.wire` (FlowMods, OpenFlow actions) and
`controller.pipeline.wire_nicira` (conntrack, NAT, learn) write bytes from these:

- the match fields and set-field targets they write, with their OXM headers
  taken from os-ken for each OpenFlow version (`fields_of`);
- a value in canonical form as its wire bytes, or None so that os-ken judges
  it (`value_of`, `value_bytes`, `masked_oxm`);
- which fields of an action dataclass an encoder does not write, so that an
  action setting one of them to other than its default goes to os-ken
  (`unwritten`, `defaults_only`).
"""
from __future__ import annotations

import dataclasses
import re
import socket
import struct
from typing import Any, NamedTuple

OFPAT_SET_FIELD = 25
OFPAT_EXPERIMENTER = 0xFFFF
NX_EXPERIMENTER_ID = 0x00002320
FULL_MARK = 0xFFFFFFFF            # a ct_mark mask of every bit: the mark is set whole
HH = struct.Struct("!HH")
H = struct.Struct("!H")
I32 = struct.Struct("!I")

INT, MAC, IPV4 = "int", "mac", "ipv4"
# The match fields / set-field targets the compilers use, by value kind.  ct_state, ct_zone,
# ct_mark and the registers are Nicira (NXM_NX) fields: plain 4-byte OXM headers of class 1.
FAST_FIELDS = {
    "in_port": INT, "metadata": INT, "eth_dst": MAC, "eth_src": MAC, "eth_type": INT,
    "vlan_vid": INT, "ip_dscp": INT, "ip_proto": INT, "ipv4_src": IPV4, "ipv4_dst": IPV4,
    "tcp_src": INT, "tcp_dst": INT, "udp_src": INT, "udp_dst": INT,
    "icmpv4_type": INT, "icmpv4_code": INT, "arp_op": INT,
    "arp_spa": IPV4, "arp_tpa": IPV4, "arp_sha": MAC, "arp_tha": MAC,
    "ct_state": INT, "ct_zone": INT, "ct_mark": INT,
    **{f"reg{i}": INT for i in range(8)},
}
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}\Z")


class Field(NamedTuple):
    order: int        # OXM type number: the order os-ken sorts match fields in
    kind: str
    size: int
    limit: int        # 1 << (8 * size)
    header: bytes     # OXM header, no mask
    header_w: bytes   # OXM header, with mask


IPV4_ADDR = Field(0, IPV4, 4, 1 << 32, b"", b"")  # for value_of on NAT addresses
_FIELDS: dict[int, dict[str, Field]] = {}
_MOVE_HEADERS: dict[tuple[int, str], bytes] = {}


def fields_of(ofp: Any) -> dict[str, Field]:
    """The supported OXM fields of one OpenFlow version, headers taken from os-ken."""
    table = _FIELDS.get(ofp.OFP_VERSION)
    if table is None:
        table = _FIELDS[ofp.OFP_VERSION] = _build_fields(ofp)
    return table


def _build_fields(ofp: Any) -> dict[str, Field]:
    from os_ken.lib import type_desc

    table = {}
    for name, kind in FAST_FIELDS.items():
        num, desc = ofp.oxm_get_field_info_by_name(name)
        if isinstance(num, tuple):
            continue  # experimenter OXM: left to os-ken
        expected = {INT: type_desc.IntDescr, MAC: type_desc.MacAddr,
                    IPV4: type_desc.IPv4Addr}[kind]
        if not (desc is expected or isinstance(desc, expected)):
            continue
        size = desc.size
        plain, masked = bytearray(), bytearray()
        ofp.oxm_serialize(num, bytes(size), None, plain, 0)
        ofp.oxm_serialize(num, bytes(size), bytes(size), masked, 0)
        table[name] = Field(num, kind, size, 1 << (8 * size), bytes(plain[:4]),
                            bytes(masked[:4]))
    return table


def move_header(ofp: Any, name: str) -> bytes | None:
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


def value_bytes(f: Field, value: Any) -> bytes | None:
    """A user value in canonical form as its `f.size` wire bytes; None if os-ken should judge it."""
    kind = f.kind
    if kind == INT:
        if type(value) is int and 0 <= value < f.limit:
            return value.to_bytes(f.size, "big")
        return None
    if type(value) is not str:
        return None
    if kind == MAC:
        if _MAC_RE.match(value) is None:
            return None
        return bytes.fromhex(value.replace(":", ""))
    try:  # IPV4: dotted quad, exactly as it prints back (no shorthand, no leading zeros)
        packed = socket.inet_aton(value)
    except (OSError, ValueError):
        return None
    if socket.inet_ntoa(packed) != value:
        return None
    return packed


def value_of(f: Field, value: Any) -> int | None:
    """`value_bytes` as an integer."""
    raw = value_bytes(f, value)
    return None if raw is None else int.from_bytes(raw, "big")


def masked_oxm(f: Field, value: Any) -> bytes | None:
    """A masked match field as an OXM TLV, normalized (value & mask) as os-ken does.

    `value` is a (value, mask) tuple (or named tuple), or for IPv4 fields
    "a.b.c.d/len"; None for anything else.
    """
    if isinstance(value, tuple):
        if len(value) != 2:
            return None
        v, m = value_of(f, value[0]), value_of(f, value[1])
        if v is None or m is None:
            return None
    elif f.kind == IPV4 and type(value) is str and "/" in value:
        addr, _, plen = value.partition("/")
        v = value_of(f, addr)
        if v is None or not (plen.isdigit() and plen.isascii() and str(int(plen)) == plen
                             and int(plen) <= 32):
            return None
        m = (0xFFFFFFFF << (32 - int(plen))) & 0xFFFFFFFF
    else:
        return None
    size = f.size
    return f.header_w + (v & m).to_bytes(size, "big") + m.to_bytes(size, "big")


def padded(length: int) -> int:
    """`length` rounded up to a multiple of 8 (actions and matches are 8-byte aligned)."""
    return length + (-length % 8)


class _NoDefault:
    """The default of a field that has none: no value is ever of this type."""


_NO_DEFAULT = _NoDefault()


def unwritten(cls: type, written: frozenset[str]) -> tuple[tuple[str, Any], ...]:
    """The fields of an action dataclass an encoder does not write, with their defaults.

    An action gains fields over time (a ct mark, a learn flag); until the
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


def defaults_only(action: Any, fields: tuple[tuple[str, Any], ...]) -> bool:
    """True if every field in `fields` (from `unwritten`) holds its default (same type, equal value)."""
    for name, default in fields:
        value = getattr(action, name)
        if value is not default and (type(value) is not type(default) or value != default):
            return False
    return True
