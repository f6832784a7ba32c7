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
                                         Conntrack, DecTtl, Move, Output, SetField)
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


def field_name(name: str) -> str:
    return FIELD_NAMES.get(name, name)


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
        return f"move:{field_name(action.src)}{bits}->{field_name(action.dst)}{bits}"
    if isinstance(action, DecTtl):
        return "dec_ttl"
    if isinstance(action, Conntrack):
        args = (["commit"] if action.commit else []) + [f"zone={action.zone}"]
        if action.table is not None:
            args.append(f"table={action.table}")
        return f"ct({','.join(args)})"
    raise TypeError(f"cannot render {action!r} for ovs-ofctl")


def render_actions(spec: FlowSpec) -> str:
    parts = [render_action(a) for a in spec.actions]
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
