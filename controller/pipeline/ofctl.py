"""FlowSpec -> `ovs-ofctl add-flows` text (OpenFlow 1.3+ syntax).

The same flows the hub programs over OpenFlow, written the way an operator
would type them, so they can be loaded with

    ovs-ofctl --bundle -O OpenFlow14 add-flows BRIDGE FILE

and compared, traced or benchmarked against what the hub installs.  Field names
are translated from the OXM names the compilers use (`ipv4_src`, `icmpv4_type`)
to the ones ovs-ofctl accepts (`ip_src`, `icmp_type`).  Anything ovs-ofctl
could not express identically (an `Opaque` action) is refused.
"""
from __future__ import annotations

from typing import Iterable

from controller.pipeline.actions import (CONTROLLER, CT_FLAGS, IN_PORT, LOCAL, TABLE, Action,
                                         Clone, Conntrack, DecTtl, Learn, LearnMatch, Move,
                                         Multipath, Nat, Output, OutputTrunc, SetField)
from controller.pipeline.flowspec import FlowSpec, MatchValue

# OXM field name (as used in FlowSpec matches and actions) -> ovs-ofctl field name.
FIELD_NAMES = {
    "ipv4_src": "ip_src",
    "ipv4_dst": "ip_dst",
    "icmpv4_type": "icmp_type",
    "icmpv4_code": "icmp_code",
}

# Reserved OpenFlow ports, by the names ovs-ofctl uses for them.
PORT_NAMES = {
    IN_PORT: "IN_PORT",
    TABLE: "TABLE",
    0xFFFFFFFA: "NORMAL",
    0xFFFFFFFB: "FLOOD",
    0xFFFFFFFC: "ALL",
    LOCAL: "LOCAL",
}

_HEX_FIELDS = {"eth_type", "metadata"}

# Fields a learn spec may name -> (NXM/OXM name, width in bits), as ovs-ofctl dumps them.
LEARN_FIELDS = {
    "in_port": ("OXM_OF_IN_PORT", 32),
    "eth_src": ("NXM_OF_ETH_SRC", 48),
    "eth_dst": ("NXM_OF_ETH_DST", 48),
    "eth_type": ("NXM_OF_ETH_TYPE", 16),
    "ip_proto": ("NXM_OF_IP_PROTO", 8),
    "ipv4_src": ("NXM_OF_IP_SRC", 32),
    "ipv4_dst": ("NXM_OF_IP_DST", 32),
    "tcp_src": ("NXM_OF_TCP_SRC", 16),
    "tcp_dst": ("NXM_OF_TCP_DST", 16),
    "udp_src": ("NXM_OF_UDP_SRC", 16),
    "udp_dst": ("NXM_OF_UDP_DST", 16),
    **{f"reg{i}": (f"NXM_NX_REG{i}", 32) for i in range(8)},
}


def field_name(name: str) -> str:
    return FIELD_NAMES.get(name, name)


def _move_field(name: str) -> str:
    """in_port is moved as the 32-bit OXM field (ovs-ofctl's `in_port` is the 16-bit NXM one)."""
    return "OXM_OF_IN_PORT" if name == "in_port" else field_name(name)


def _port(port: int) -> str:
    return PORT_NAMES.get(port, str(port))


def _int(name: str, value: int) -> str:
    return f"0x{value:04x}" if name in _HEX_FIELDS else str(value)


def _ct_state(value: int, mask: int) -> str:
    """(0x21, 0x21) -> "+new+trk", in the bit order ovs-ofctl dumps them."""
    known = sum(CT_FLAGS.values())
    if mask & ~known or not mask:
        return f"0x{value:x}/0x{mask:x}"
    bits = sorted(CT_FLAGS.items(), key=lambda kv: kv[1])
    return "".join(("+" if value & bit else "-") + name for name, bit in bits if mask & bit)


def render_match_field(name: str, value: MatchValue) -> str:
    if name == "in_port" and not isinstance(value, tuple):
        return f"in_port={_port(int(value))}"
    if name == "ct_state" and isinstance(value, tuple):
        return f"ct_state={_ct_state(int(value[0]), int(value[1]))}"
    if isinstance(value, tuple):
        v, m = value
        if isinstance(v, int):
            return f"{field_name(name)}=0x{v:x}/0x{m:x}"
        return f"{field_name(name)}={v}/{m}"
    if isinstance(value, int):
        return f"{field_name(name)}={_int(name, value)}"
    return f"{field_name(name)}={value}"


def render_action(action: Action) -> str:
    if isinstance(action, Output):
        if action.port == CONTROLLER:
            return f"CONTROLLER:{action.max_len}"
        if action.port in PORT_NAMES:
            return PORT_NAMES[action.port]
        return f"output:{action.port}"
    if isinstance(action, SetField):
        return f"set_field:{action.value}->{field_name(action.field)}"
    if isinstance(action, Move):
        bits = f"[0..{action.n_bits - 1}]"
        return f"move:{_move_field(action.src)}{bits}->{_move_field(action.dst)}{bits}"
    if isinstance(action, DecTtl):
        return "dec_ttl"
    if isinstance(action, Conntrack):
        args = (["commit"] if action.commit else []) + [f"zone={action.zone}"]
        nat = [] if action.nat is None else [_nat(action.nat)]
        if action.mark is not None:
            # In the order the hub encodes them (mark, then nat), which ovs-ofctl keeps.
            mask = "" if action.mark_mask == 0xFFFFFFFF else f"/0x{action.mark_mask:x}"
            args.append(f"exec({','.join([f'set_field:0x{action.mark:x}{mask}->ct_mark'] + nat)})")
        else:
            args += nat
        if action.table is not None:
            args.append(f"table={action.table}")
        return f"ct({','.join(args)})"
    if isinstance(action, Learn):
        args = [f"table={action.table}"]
        if action.idle_timeout:
            args.append(f"idle_timeout={action.idle_timeout}")
        if action.hard_timeout:
            args.append(f"hard_timeout={action.hard_timeout}")
        if action.priority != 0x8000:
            args.append(f"priority={action.priority}")
        args.append(f"cookie=0x{action.cookie:x}")
        args += [_learn_match(m) for m in action.specs]
        return f"learn({','.join(args)})"
    if isinstance(action, Multipath):
        dst = _subfield(action.dst, action.ofs, action.n_bits)
        return (f"multipath({action.fields},{action.basis},{action.algorithm},{action.n_links},"
                f"{action.arg},{dst})")
    if isinstance(action, OutputTrunc):
        return f"output(port={action.port},max_len={action.max_len})"
    if isinstance(action, Clone):
        return f"clone({','.join(render_action(a) for a in action.actions)})"
    raise TypeError(f"cannot render {action!r} for ovs-ofctl")


def _nat(nat: Nat) -> str:
    if nat.dst is not None:
        port = "" if nat.dst_port is None else f":{nat.dst_port}"
        return f"nat(dst={nat.dst}{port})"
    if nat.src is not None:
        return f"nat(src={nat.src})"
    return "nat"


def _subfield(name: str, ofs: int, n_bits: int) -> str:
    """`NXM_NX_REG0[]` for a whole field, `NXM_NX_REG2[0..15]` for part of one."""
    if name not in LEARN_FIELDS:
        raise TypeError(f"cannot render learn field {name!r} for ovs-ofctl")
    nxm, width = LEARN_FIELDS[name]
    if ofs == 0 and n_bits == width:
        return f"{nxm}[]"
    return f"{nxm}[{ofs}..{ofs + n_bits - 1}]"


def _learn_match(m: LearnMatch) -> str:
    dst = _subfield(m.dst, m.dst_ofs, m.n_bits)
    if m.src is None:
        return f"{dst}=0x{m.value:x}"
    return f"{dst}={_subfield(m.src, m.src_ofs, m.n_bits)}"


def render_actions(spec: FlowSpec) -> str:
    """`meter:N` first (ovs-ofctl wants the meter before the actions), `goto_table:N` last."""
    parts = [] if spec.meter is None else [f"meter:{spec.meter}"]
    parts += [render_action(a) for a in spec.actions]
    if spec.goto is not None:
        parts.append(f"goto_table:{spec.goto}")
    return ",".join(parts) if parts else "drop"


def render_flow(spec: FlowSpec) -> str:
    """One `ovs-ofctl add-flow(s)` line for this flow (no trailing newline)."""
    head = [f"table={spec.table}", f"priority={spec.priority}", f"cookie=0x{spec.cookie:x}"]
    # Prerequisites first (eth_type before arp_op, ip_proto before icmp_type) reads
    # naturally; ovs-ofctl itself accepts any order.
    order = {"in_port": 0, "eth_type": 1, "ip_proto": 2}
    fields = sorted(spec.match, key=lambda kv: (order.get(kv[0], 3), kv[0]))
    body = [render_match_field(name, value) for name, value in fields]
    return ",".join(head + body + [f"actions={render_actions(spec)}"])


def render_flows(flows: Iterable[FlowSpec]) -> str:
    """An `ovs-ofctl add-flows` file: one line per flow, newline-terminated."""
    return "".join(render_flow(f) + "\n" for f in flows)
