"""FlowSpec <-> os-ken OpenFlow messages: the only place that knows the wire types.

Also MeterSpec <-> MeterMods and meter configuration replies (see the end).

Works for any OpenFlow 1.3+ datapath (or a bare `ProtocolDesc`), using the
parser and constants of the negotiated version.  These objects are the
reference encoding; `controller.pipeline.wire` writes the same FlowMods
straight to bytes for bulk applies.
"""
from __future__ import annotations

from typing import Any

from os_ken.ofproto import ofproto_v1_3_parser, ofproto_v1_4_parser, ofproto_v1_5_parser

from controller.pipeline.actions import (MULTIPATH_ALGORITHMS, MULTIPATH_FIELDS, Action, Clone,
                                         Conntrack, DecTtl, Learn, LearnMatch, Move, Multipath,
                                         Nat, Opaque, Output, OutputTrunc, SetField)
from controller.pipeline.flowspec import FlowSpec, Match, make_match
from controller.pipeline.meters import MeterSpec
from controller.pipeline import cookies

_HUB_COOKIE, _HUB_MASK = cookies.hub_mask()
_CT_COMMIT = 1           # NX_CT_F_COMMIT
_CT_NO_RECIRC = 0xFF     # NX_CT_RECIRC_NONE
_NAT_SRC, _NAT_DST = 1, 2  # NX_NAT_F_SRC, NX_NAT_F_DST
_FULL_MARK = 0xFFFFFFFF
_NXAST_CLONE = 42        # OVS's NXAST_RAW_CLONE: 6 pad bytes, then the nested actions
_MATCH_CLASSES: dict[type, type] = {}
_OXM_ORDER: dict[tuple[int, str], int] = {}


def _encoded_match_class(parser: Any) -> type:
    """A subclass of the version's OFPMatch that serializes from bytes computed once."""
    base = parser.OFPMatch
    cls = _MATCH_CLASSES.get(base)
    if cls is None:
        def serialize(self, buf, offset):
            wire = self._wire
            end = offset + len(wire)
            if len(buf) < end:
                buf += bytearray(end - len(buf))
            buf[offset:end] = wire
            self.length = self._wire_length
            return len(wire)
        cls = type(base.__name__, (base,), {"serialize": serialize,
                                            "__module__": __name__})
        _MATCH_CLASSES[base] = cls
    return cls


def _oxm_order(ofp: Any, name: str) -> int:
    key = (ofp.OFP_VERSION, name)
    order = _OXM_ORDER.get(key)
    if order is None:
        num = ofp.oxm_from_user_header(name)
        order = _OXM_ORDER[key] = num[0] if isinstance(num, tuple) else num
    return order


def encode_match(dp: Any, match: Match):
    """`parser.OFPMatch(**dict(match))`, byte for byte on the wire, built faster.

    os-ken's keyword constructor converts every value between its user and wire
    forms five times (netaddr for each MAC), which dominated bulk applies.  Here
    the fields take the same order (by OXM type, stable), masked values are
    normalized by os-ken as before, and the match is serialized once, right
    away: an invalid value still raises here, before anything is sent, and the
    message reuses those bytes when it is serialized.
    """
    parser, ofp = dp.ofproto_parser, dp.ofproto
    fields = []
    for name, value in match:
        if isinstance(value, (tuple, list)) or (isinstance(value, str) and "/" in value):
            name, value = ofp.oxm_normalize_user(name, value)  # applies the mask
        fields.append((name, value))
    fields.sort(key=lambda f: _oxm_order(ofp, f[0]))
    m = _encoded_match_class(parser)(_ordered_fields=fields)
    wire = bytearray()
    parser.OFPMatch.serialize(m, wire, 0)
    m._wire, m._wire_length = bytes(wire), m.length
    return m


def _oxm_name(name: str) -> str:
    """Switches answer with NXM headers (e.g. `eth_src_nxm`) for what was sent as OXM."""
    return name[:-4] if name.endswith("_nxm") else name


def _register_clone(parser: Any) -> None:
    """Give this version's os-ken parser an NXActionClone (os-ken has none) for encode and
    decode: the nested actions are parsed and serialized like NXActionCT's."""
    base = parser.NXAction

    class NXActionClone(base):
        _subtype = _NXAST_CLONE

        def __init__(self, actions, type_=None, len_=None, experimenter=None, subtype=None):
            super().__init__()
            self.actions = actions

        @classmethod
        def parser(cls, buf):
            rest, actions = buf[6:], []
            while len(rest) > 0:
                action = parser.OFPAction.parser(rest, 0)
                actions.append(action)
                rest = rest[action.len:]
            return cls(actions)

        def serialize_body(self):
            data = bytearray(6)
            for a in self.actions:
                a.serialize(data, len(data))
            return data

    NXActionClone.__module__ = parser.__name__
    parser.NXActionClone = NXActionClone
    base.register(NXActionClone)


for _parser in (ofproto_v1_3_parser, ofproto_v1_4_parser, ofproto_v1_5_parser):
    if not hasattr(_parser, "NXActionClone"):
        _register_clone(_parser)


def encode_action(parser: Any, action: Action):
    if isinstance(action, Output):
        return parser.OFPActionOutput(action.port, action.max_len)
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst,
                                      n_bits=action.n_bits, src_ofs=0, dst_ofs=0)
    if isinstance(action, DecTtl):
        return parser.OFPActionDecNwTtl()
    if isinstance(action, Conntrack):
        # The mark first: os-ken writes an NXActionNAT unpadded, which only
        # comes out right as the last nested action (the ct action is padded).
        nested = [] if action.mark is None else [_encode_mark(parser, action.mark,
                                                              action.mark_mask)]
        if action.nat is not None:
            nested.append(_encode_nat(parser, action.nat))
        return parser.NXActionCT(flags=_CT_COMMIT if action.commit else 0, zone_src="",
                                 zone_ofs_nbits=action.zone,
                                 recirc_table=_CT_NO_RECIRC if action.table is None else action.table,
                                 alg=0, actions=nested)
    if isinstance(action, Learn):
        return parser.NXActionLearn(
            table_id=action.table, specs=[_encode_learn_match(parser, m) for m in action.specs],
            idle_timeout=action.idle_timeout, hard_timeout=action.hard_timeout,
            priority=action.priority, cookie=action.cookie, flags=0,
            fin_idle_timeout=0, fin_hard_timeout=0)
    if isinstance(action, Multipath):
        return parser.NXActionMultipath(
            fields=MULTIPATH_FIELDS[action.fields], basis=action.basis,
            algorithm=MULTIPATH_ALGORITHMS[action.algorithm], max_link=action.n_links - 1,
            arg=action.arg, ofs_nbits=action.ofs << 6 | (action.n_bits - 1), dst=action.dst)
    if isinstance(action, OutputTrunc):
        return parser.NXActionOutputTrunc(port=action.port, max_len=action.max_len)
    if isinstance(action, Clone):
        return parser.NXActionClone([encode_action(parser, a) for a in action.actions])
    raise TypeError(f"cannot encode {action!r}")


def _encode_nat(parser: Any, nat: Nat):
    """As ovs-ofctl encodes `nat(dst=A:P)`: the minimum of each range only (max = min)."""
    if nat.dst is not None:
        return parser.NXActionNAT(flags=_NAT_DST, range_ipv4_min=nat.dst,
                                  range_proto_min=nat.dst_port)
    if nat.src is not None:
        return parser.NXActionNAT(flags=_NAT_SRC, range_ipv4_min=nat.src)
    return parser.NXActionNAT(flags=0)


def _encode_mark(parser: Any, mark: int, mask: int):
    """A whole ct_mark as set-field; a masked one as NXAST_REG_LOAD2.

    OpenFlow 1.3/1.4 set-field takes no mask (os-ken asserts on one).  OVS
    keeps the form it was given and answers flow stats with it.
    """
    if mask == _FULL_MARK:
        return parser.OFPActionSetField(ct_mark=mark)
    return parser.NXActionRegLoad2(dst="ct_mark", value=mark, mask=mask)


def _decode_mark(parser: Any, a: Any) -> tuple[int, int] | None:
    """(mark, mask) of a nested set-field or reg_load2 of ct_mark; None for anything else."""
    if isinstance(a, parser.OFPActionSetField) and a.key == "ct_mark" \
            and isinstance(a.value, int):
        return a.value, _FULL_MARK
    if isinstance(a, parser.NXActionRegLoad2) and _oxm_name(a.dst) == "ct_mark" \
            and isinstance(a.value, int) and isinstance(a.mask, int):
        return a.value, a.mask
    return None


def _encode_learn_match(parser: Any, m: LearnMatch):
    src = m.value if m.src is None else (m.src, m.src_ofs)
    return parser.NXFlowSpecMatch(src=src, dst=(m.dst, m.dst_ofs), n_bits=m.n_bits)


def decode_action(parser: Any, action: Any) -> Action:
    if isinstance(action, parser.OFPActionOutput):
        return Output(action.port, action.max_len)
    if isinstance(action, parser.OFPActionSetField):
        return SetField(action.key, action.value)
    if isinstance(action, parser.NXActionRegMove) and action.src_ofs == 0 and action.dst_ofs == 0:
        return Move(_oxm_name(action.src_field), _oxm_name(action.dst_field), action.n_bits)
    if isinstance(action, parser.OFPActionDecNwTtl):
        return DecTtl()
    if (isinstance(action, parser.NXActionCT) and not action.zone_src and not action.alg
            and not action.flags & ~_CT_COMMIT):
        ct = _decode_conntrack(parser, action)
        if ct is not None:
            return ct
    if isinstance(action, parser.NXActionLearn) and not (
            action.flags or action.fin_idle_timeout or action.fin_hard_timeout):
        specs = [_decode_learn_match(parser, s) for s in action.specs]
        if None not in specs:
            return Learn(action.table_id, action.cookie, action.idle_timeout,
                         action.hard_timeout, action.priority, tuple(specs))
    if isinstance(action, parser.NXActionMultipath):
        mp = _decode_multipath(action)
        if mp is not None:
            return mp
    if isinstance(action, parser.NXActionOutputTrunc):
        try:
            return OutputTrunc(action.port, action.max_len)
        except ValueError:
            pass
    if isinstance(action, getattr(parser, "NXActionClone", ())):
        nested = tuple(decode_action(parser, a) for a in action.actions)
        try:
            return Clone(nested)
        except ValueError:  # empty, or nesting what Clone refuses
            pass
    return Opaque(repr(action))


def _decode_multipath(action: Any) -> Multipath | None:
    """A Multipath for an NXActionMultipath of known fields and algorithm into a register."""
    fields = {v: k for k, v in MULTIPATH_FIELDS.items()}.get(action.fields)
    algorithm = {v: k for k, v in MULTIPATH_ALGORITHMS.items()}.get(action.algorithm)
    if fields is None or algorithm is None:
        return None
    try:
        return Multipath(action.max_link + 1, _oxm_name(action.dst),
                         n_bits=(action.ofs_nbits & 0x3F) + 1, ofs=action.ofs_nbits >> 6,
                         fields=fields, algorithm=algorithm, basis=action.basis, arg=action.arg)
    except ValueError:
        return None


def _decode_conntrack(parser: Any, action: Any) -> Conntrack | None:
    """Nested actions exactly as `encode_action` writes them: [ct_mark], then [nat]."""
    nested = list(action.actions)
    nat = mark = None
    if nested:
        mark = _decode_mark(parser, nested[0])
        if mark is not None:
            nested.pop(0)
    if nested:
        nat = _decode_nat(parser, nested.pop(0))
        if nat is None:
            return None
    if nested:
        return None
    table = None if action.recirc_table == _CT_NO_RECIRC else action.recirc_table
    try:
        return Conntrack(bool(action.flags & _CT_COMMIT), action.zone_ofs_nbits, table, nat,
                         *(mark or ()))
    except ValueError:  # e.g. nat with an address, or a mark, but no commit
        return None


def _decode_nat(parser: Any, a: Any) -> Nat | None:
    """A Nat for an NXActionNAT of at most one IPv4 address and port (max unset or = min)."""
    if not isinstance(a, parser.NXActionNAT) or a.range_ipv6_min or a.range_ipv6_max:
        return None
    addr, port = a.range_ipv4_min, a.range_proto_min
    if a.range_ipv4_max not in ("", addr) or a.range_proto_max not in (None, port):
        return None
    try:
        if a.flags == 0 and not addr and port is None:
            return Nat()
        if a.flags == _NAT_DST and addr:
            return Nat(dst=addr, dst_port=port)
        if a.flags == _NAT_SRC and addr and port is None:
            return Nat(src=addr)
    except ValueError:  # e.g. port 0
        pass
    return None


def _decode_learn_match(parser: Any, s: Any) -> LearnMatch | None:
    """A LearnMatch for an NXFlowSpecMatch; None for loads, outputs and what LearnMatch refuses."""
    if not isinstance(s, parser.NXFlowSpecMatch):
        return None
    (dst, dst_ofs), src = s.dst, s.src
    try:
        if isinstance(src, tuple):
            return LearnMatch(_oxm_name(dst), s.n_bits, dst_ofs, src=_oxm_name(src[0]),
                              src_ofs=src[1])
        return LearnMatch(_oxm_name(dst), s.n_bits, dst_ofs, value=src)
    except ValueError:
        return None


def _meter_instruction_class(parser: Any) -> type | None:
    """OFPInstructionMeter of OpenFlow 1.3/1.4 (1.5 replaced it with a meter action)."""
    return getattr(parser, "OFPInstructionMeter", None)


def instructions(dp: Any, spec: FlowSpec) -> list:
    """Meter, apply-actions, goto-table: the order OpenFlow executes (and OVS expects) them."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    out = []
    if spec.meter is not None:
        meter = _meter_instruction_class(parser)
        if meter is None:
            raise TypeError(f"cannot encode meter {spec.meter} for OpenFlow version "
                            f"{ofp.OFP_VERSION:#x}: no meter instruction")
        out.append(meter(spec.meter))
    if spec.actions:
        out.append(parser.OFPInstructionActions(
            ofp.OFPIT_APPLY_ACTIONS, [encode_action(parser, a) for a in spec.actions]))
    if spec.goto is not None:
        out.append(parser.OFPInstructionGotoTable(spec.goto))
    return out


def flow_add(dp: Any, spec: FlowSpec):
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPFlowMod(
        dp, cookie=spec.cookie, cookie_mask=0, table_id=spec.table, command=ofp.OFPFC_ADD,
        idle_timeout=0, hard_timeout=0, priority=spec.priority, buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, flags=0,
        match=encode_match(dp, spec.match), instructions=instructions(dp, spec))


def flow_delete(dp: Any, spec: FlowSpec):
    """Strict delete of exactly this flow, and only if it carries the hub's cookie."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPFlowMod(
        dp, cookie=_HUB_COOKIE, cookie_mask=_HUB_MASK, table_id=spec.table,
        command=ofp.OFPFC_DELETE_STRICT, idle_timeout=0, hard_timeout=0,
        priority=spec.priority, buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY, flags=0, match=encode_match(dp, spec.match),
        instructions=[])


def flow_stats_request(dp: Any, cookie: int, cookie_mask: int, table_id: int | None = None):
    """Flows of every table (or of `table_id`) whose cookie matches."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    table = ofp.OFPTT_ALL if table_id is None else table_id
    return parser.OFPFlowStatsRequest(dp, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                      cookie, cookie_mask, parser.OFPMatch())


def aggregate_request(dp: Any, table_id: int, cookie: int, cookie_mask: int):
    """Flow, packet and byte counts summed over one table's flows whose cookie matches."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPAggregateStatsRequest(dp, 0, table_id, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                           cookie, cookie_mask, parser.OFPMatch())


def decode_flow(dp: Any, stats: Any) -> FlowSpec:
    """A flow read back from a switch (an OFPFlowStats entry), as a FlowSpec."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    actions: list[Action] = []
    goto = meter = None
    meter_cls = _meter_instruction_class(parser)
    for inst in stats.instructions:
        if isinstance(inst, parser.OFPInstructionGotoTable):
            goto = inst.table_id
        elif meter_cls is not None and isinstance(inst, meter_cls) and meter is None:
            meter = inst.meter_id
        elif (isinstance(inst, parser.OFPInstructionActions)
              and inst.type == ofp.OFPIT_APPLY_ACTIONS):
            actions.extend(decode_action(parser, a) for a in inst.actions)
        else:
            actions.append(Opaque(repr(inst)))
    return FlowSpec(table=stats.table_id, priority=stats.priority,
                    match=make_match(stats.match.items()), actions=tuple(actions),
                    goto=goto, cookie=stats.cookie, meter=meter)


# ------------------------------------------------------------------ meters
# A meter the hub writes: KBPS (and BURST when it has a burst) with one drop band.
# OFPMF_STATS is tolerated on read-back: it only asks the switch to count.


def meter_flags(dp: Any, spec: MeterSpec) -> int:
    ofp = dp.ofproto
    return ofp.OFPMF_KBPS | (ofp.OFPMF_BURST if spec.burst_kbits else 0)


def _meter_mod(dp: Any, command: int, spec: MeterSpec):
    parser = dp.ofproto_parser
    return parser.OFPMeterMod(dp, command=command, flags=meter_flags(dp, spec),
                              meter_id=spec.meter_id,
                              bands=[parser.OFPMeterBandDrop(rate=spec.rate_kbps,
                                                             burst_size=spec.burst_kbits)])


def meter_add(dp: Any, spec: MeterSpec):
    """OFPMC_ADD of this meter (the switch refuses it if the id exists: METER_EXISTS)."""
    return _meter_mod(dp, dp.ofproto.OFPMC_ADD, spec)


def meter_modify(dp: Any, spec: MeterSpec):
    """OFPMC_MODIFY: replaces flags and bands of an existing meter; its flows keep it."""
    return _meter_mod(dp, dp.ofproto.OFPMC_MODIFY, spec)


def meter_delete(dp: Any, meter_id: int):
    """OFPMC_DELETE of one meter.  The switch also removes every flow that uses it."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, flags=0, meter_id=meter_id,
                              bands=[])


def meter_config_request(dp: Any):
    """The configuration (flags, bands) of every meter on the switch."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL)


def decode_meter(dp: Any, config: Any) -> MeterSpec:
    """A meter read back (an OFPMeterConfigStats entry) as a MeterSpec.

    Without OFPMF_BURST the band's burst_size is ignored (OpenFlow: only used
    with BURST; OVS's userspace datapath reports its own default there).  What
    the hub would not have written (packets per second, not exactly one drop
    band, BURST with a burst size of 0) decodes to rate_kbps 0, so that it
    never equals a desired meter.
    """
    parser, ofp = dp.ofproto_parser, dp.ofproto
    flags = config.flags & ~ofp.OFPMF_STATS
    bands = config.bands or []
    if (flags in (ofp.OFPMF_KBPS, ofp.OFPMF_KBPS | ofp.OFPMF_BURST) and len(bands) == 1
            and type(bands[0]) is parser.OFPMeterBandDrop and bands[0].rate > 0):
        band = bands[0]
        if not flags & ofp.OFPMF_BURST:
            return MeterSpec(config.meter_id, band.rate)
        if band.burst_size:
            return MeterSpec(config.meter_id, band.rate, band.burst_size)
    return MeterSpec(config.meter_id, 0)
