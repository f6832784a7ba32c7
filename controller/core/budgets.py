"""Resource budgets: every shared resource of a switch, declared once, per feature.

A switch has a few namespaces that every feature draws from: table ids, the
cookie's feature byte, conntrack zones, meter and group ids, the bits of
ct_mark and ct_label, the registers reg0..reg7, and the priorities of the
tables features share (classify, route, l2: a feature hooks into them just
above the fabric's flows it overrides).  Each feature declares here what it
takes of each; `check` proves at import that no two budgets overlap, and
that the table layout (`controller.pipeline.tables`, each table naming its
owner) and the cookie scheme (`controller.pipeline.cookies.Feature`) agree.

The reconcilers own exactly the union of what is declared: a flow is the
hub's if its cookie carries the magic and a declared feature byte
(`owns_cookie`), a meter if its id lies in a declared meter range
(`owns_meter`), a group likewise (`owns_group`).  Whatever of theirs is no
longer desired is removed; anything else on a switch is never touched.

This module is data in the core: it names features by string and imports no
feature module.  A feature's class refers to its budget
(`budget = budgets.PERSONA`).  Budgets marked `reserved` belong to features
that do not exist yet; they are held now so that their arrival moves nothing.

The interface zones are the core's: `controller.core.interfaces` gives every
interface record a pair of them (epoch 0 and 1), unique across all bridges,
used by whichever feature firewalls the interface (personality; policy,
which compiles to the same per-interface firewall).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from controller.pipeline import cookies, tables
from controller.pipeline.actions import Conntrack, Learn, Move, Multipath, SetField, flat
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowSpec


class BudgetError(ValueError):
    """Two budgets claim the same resource, or the layout disagrees with them."""


@dataclass(frozen=True)
class Span:
    """An inclusive range of integers (ids, zones, priorities, bit positions)."""
    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last:
            raise BudgetError(f"bad span {self.first}..{self.last}")

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.first <= value <= self.last

    def __len__(self) -> int:
        return self.last - self.first + 1

    def overlaps(self, other: "Span") -> bool:
        return self.first <= other.last and other.first <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"

    @property
    def mask(self) -> int:
        """As bit positions: the mask of bits first..last."""
        return ((1 << len(self)) - 1) << self.first


@dataclass(frozen=True)
class Register:
    """Bits first..last of one of reg0..reg7."""
    reg: int
    bits: Span = Span(0, 31)

    def __post_init__(self) -> None:
        if not 0 <= self.reg <= 7 or self.bits.last > 31:
            raise BudgetError(f"reg{self.reg}[{self.bits}] is not within reg0..reg7 [0..31]")

    @property
    def name(self) -> str:
        return f"reg{self.reg}"

    def __str__(self) -> str:
        whole = self.bits == Span(0, 31)
        return self.name if whole else f"{self.name}[{self.bits}]"


@dataclass(frozen=True)
class Priorities:
    """A band of priorities in a table another feature owns (a hook into it)."""
    table: int
    band: Span

    def __str__(self) -> str:
        return f"{tables.BY_ID[self.table].name} {self.band}"


@dataclass(frozen=True)
class Budget:
    feature: str                          # the feature's name (registry, tables' owner)
    cookie: Feature | None = None         # its cookie feature byte
    tables: tuple[Span, ...] = ()         # table ids its tables may take
    zones: tuple[Span, ...] = ()          # conntrack zones
    meters: tuple[Span, ...] = ()         # meter ids
    groups: tuple[Span, ...] = ()         # group ids
    ct_mark: tuple[Span, ...] = ()        # bits of the 32-bit ct_mark
    ct_label: tuple[Span, ...] = ()       # bits of the 128-bit ct_label
    registers: tuple[Register, ...] = ()  # packet registers it sets or matches
    hooks: tuple[Priorities, ...] = ()    # priority bands in shared tables
    interface_zones: bool = False         # firewalls interfaces in their own zone pairs
    reserved: bool = False                # held for a feature still to come


T = tables
ZONE_SPACE, MARK_BITS, LABEL_BITS = Span(0, 0xFFFF), Span(0, 31), Span(0, 127)
METER_SPACE, GROUP_SPACE = Span(1, 0xFFFF0000), Span(0, 0xFFFFFF00)
TABLE_SPACE, PRIORITY_SPACE = Span(0, 254), Span(0, 0xFFFF)

INTERFACE = Budget("interface", zones=(Span(0x0002, 0x5FFF),))
FABRIC = Budget(
    "fabric", Feature.FABRIC,
    tables=(Span(T.CLASSIFY.id, T.CLASSIFY.id), Span(T.ARP.id, T.ARP.id),
            Span(T.ROUTE.id, T.ROUTE.id), Span(T.L2.id, T.L2.id)),
    registers=(Register(7, Span(0, 15)),),   # never set: the zero that clears in_port
    hooks=(Priorities(T.CLASSIFY.id, Span(0, 200)), Priorities(T.CLASSIFY.id, Span(65000, 65000)),
           Priorities(T.ROUTE.id, Span(0, 100)), Priorities(T.ROUTE.id, Span(200, 300)),
           Priorities(T.L2.id, Span(0, 100))))
PERSONALITY = Budget(
    "personality", Feature.PERSONALITY,
    tables=(Span(2, 5), Span(60, 69)),
    interface_zones=True,
    meters=(Span(2, 0xFFFF),),               # 2 * port + direction, per switch
    ct_mark=(Span(0, 5),),                   # controller.pipeline.ctmark
    hooks=(Priorities(T.CLASSIFY.id, Span(201, 214)),        # the interface's hook
           Priorities(T.CLASSIFY.id, Span(65001, 65049)),    # VPN tunnel ports
           Priorities(T.L2.id, Span(105, 114)),              # the interface's hook
           Priorities(T.L2.id, Span(125, 134))))             # a change's check probes
PERSONA = Budget(
    "persona", Feature.PERSONA,
    tables=(Span(6, 6), Span(70, 79)),
    zones=(Span(0x6000, 0x9FFF),),           # first + index - 1
    meters=(Span(0x10000, 0x1FFFF),),        # first + 2 * index (+1 inbound)
    ct_mark=(Span(6, 6),),                   # REAL_MARK
    registers=(Register(4), Register(5), Register(6)),
    hooks=(Priorities(T.CLASSIFY.id, Span(215, 224)), Priorities(T.ROUTE.id, Span(101, 199)),
           Priorities(T.L2.id, Span(115, 124))))
SHADOW = Budget(
    "shadow", Feature.SHADOW,
    tables=(Span(7, 9), Span(80, 89)),       # copies of what production sends; receives
    zones=(Span(0xC000, 0xCFFF),),
    meters=(Span(0x21000, 0x21FFF),),        # agent channel punts, copy policing
    groups=(Span(0x2000, 0x2FFF),),          # fan-out to shadow instances
    ct_mark=(Span(8, 15),),                  # sampled, instance
    ct_label=(Span(32, 47),),
    registers=(Register(0),),                # multipath hash of the connection
    hooks=(Priorities(T.CLASSIFY.id, Span(255, 269)),
           Priorities(T.CLASSIFY.id, Span(65100, 65199)),    # a shadow's port: above all
           Priorities(T.L2.id, Span(165, 179))))
SHARD = Budget(
    "shard", Feature.SHARD,
    tables=(Span(12, 19), Span(90, 99)),     # translation before routing; after l2
    zones=(Span(0xA000, 0xBFFF),),
    meters=(Span(0x20000, 0x20FFF),),        # RAP punts
    groups=(Span(0x1000, 0x1FFF),),          # services: select groups over resources
    ct_mark=(Span(16, 19),),
    ct_label=(Span(0, 31),),                 # the translation a connection was pinned to
    registers=(Register(1),),
    hooks=(Priorities(T.CLASSIFY.id, Span(225, 239)), Priorities(T.ROUTE.id, Span(301, 349)),
           Priorities(T.L2.id, Span(135, 149))))
POLICY = Budget(
    "policy", Feature.POLICY,
    tables=(Span(20, 29), Span(100, 109)),
    zones=(Span(0xD000, 0xDFFF),),
    meters=(Span(0x22000, 0x22FFF),),
    ct_mark=(Span(20, 23),),                 # would-deny (audit), override
    ct_label=(Span(48, 63),),                # the rule that admitted a connection
    registers=(Register(2),),
    hooks=(Priorities(T.CLASSIFY.id, Span(240, 254)), Priorities(T.L2.id, Span(150, 164))))

BUDGETS: tuple[Budget, ...] = (INTERFACE, FABRIC, PERSONALITY, PERSONA, SHARD, SHADOW, POLICY)
BY_FEATURE = {b.feature: b for b in BUDGETS}
INTERFACE_ZONES = INTERFACE.zones[0]


# ------------------------------------------------------------------ the check
def _claims(budget: Budget) -> Iterable[tuple[str, Span]]:
    """(namespace, span) for everything a budget takes."""
    plain = (("table", budget.tables, TABLE_SPACE), ("zone", budget.zones, ZONE_SPACE),
             ("meter", budget.meters, METER_SPACE), ("group", budget.groups, GROUP_SPACE),
             ("ct_mark bit", budget.ct_mark, MARK_BITS),
             ("ct_label bit", budget.ct_label, LABEL_BITS))
    for space, spans, limit in plain:
        for span in spans:
            if not (span.first in limit and span.last in limit):
                raise BudgetError(f"{budget.feature}: {space} {span} is outside {limit}")
            yield space, span
    for reg in budget.registers:
        yield f"{reg.name} bit", reg.bits
    for hook in budget.hooks:
        if hook.band.last not in PRIORITY_SPACE:
            raise BudgetError(f"{budget.feature}: priority band {hook} is outside 0..65535")
        yield f"{tables.BY_ID[hook.table].name} priority", hook.band


def check(budgets: Iterable[Budget] = BUDGETS) -> None:
    """Raise BudgetError unless no two budgets share anything and the layout agrees."""
    budgets = tuple(budgets)
    check_overlaps(budgets)
    _check_cookies(budgets)
    _check_layout(budgets)


def check_overlaps(budgets: Iterable[Budget]) -> None:
    """Raise BudgetError if two budgets share a name, or anything of any namespace."""
    budgets = tuple(budgets)
    names = [b.feature for b in budgets]
    if len(set(names)) != len(names):
        raise BudgetError(f"a feature with two budgets: {names}")
    taken: dict[str, list[tuple[Span, str]]] = {}
    for budget in budgets:
        for space, span in _claims(budget):
            for other, owner in taken.get(space, []):
                if span.overlaps(other):
                    raise BudgetError(f"{space} {span} of {budget.feature} overlaps "
                                      f"{space} {other} of {owner}")
            taken.setdefault(space, []).append((span, budget.feature))


def _check_cookies(budgets: tuple[Budget, ...]) -> None:
    bytes_ = [b.cookie for b in budgets if b.cookie is not None]
    if len(set(bytes_)) != len(bytes_):
        raise BudgetError(f"two budgets with one cookie feature byte: {bytes_}")
    unclaimed = set(Feature) - set(bytes_)
    if unclaimed:
        raise BudgetError(f"cookie feature bytes without a budget: {sorted(unclaimed)}")


def _check_layout(budgets: tuple[Budget, ...]) -> None:
    by_name = {b.feature: b for b in budgets}
    for table in tables.LAYOUT:
        owner = by_name.get(table.owner)
        if owner is None:
            raise BudgetError(f"table {table.name} names owner {table.owner!r}, which has "
                              "no budget")
        if not any(table.id in span for span in owner.tables):
            raise BudgetError(f"table {table.name} ({table.id}) is outside the tables of "
                              f"its owner {owner.feature} ({', '.join(map(str, owner.tables))})")
        shared = {h.table for b in budgets for h in b.hooks if b is not owner}
        if table.id in shared and not any(h.table == table.id for h in owner.hooks):
            raise BudgetError(f"table {table.name} is shared (others hook into it) but its "
                              f"owner {owner.feature} declares no band of its own there")


check()


# ------------------------------------------------------------------ ownership
def _union(kind: str) -> tuple[Span, ...]:
    return tuple(sorted((s for b in BUDGETS for s in getattr(b, kind)),
                        key=lambda s: s.first))


METERS, GROUPS = _union("meters"), _union("groups")
COOKIE_FEATURES = frozenset(b.cookie for b in BUDGETS if b.cookie is not None)
# The top 16 bits of a cookie: the magic byte and the feature byte.
COOKIE_PREFIXES = frozenset(cookies.make(f) >> 48 for f in COOKIE_FEATURES)


def owns_cookie(cookie: int) -> bool:
    """A flow the hub owns: the magic byte and a declared feature byte."""
    return cookie >> 48 in COOKIE_PREFIXES


def owns_meter(meter_id: int) -> bool:
    """A meter id inside some budget's meter ranges (the meter reconciler's to delete)."""
    return any(meter_id in span for span in METERS)


def owns_group(group_id: int) -> bool:
    """A group id inside some budget's group ranges (the group reconciler's to delete)."""
    return any(group_id in span for span in GROUPS)


# ------------------------------------------------------------------ audit
SHARED_TABLES = frozenset(h.table for b in BUDGETS for h in b.hooks)
_BY_COOKIE = {b.cookie: b for b in BUDGETS if b.cookie is not None}


def _register(name: str) -> int | None:
    return int(name[3:]) if name.startswith("reg") and name[3:].isdigit() else None


def _bits(value: object, full: int = 0xFFFFFFFF) -> int:
    """The bits a match on (value, mask) or on a plain value looks at."""
    return value[1] if isinstance(value, tuple) else full


def _in(bits: int, spans: Iterable[Span]) -> bool:
    allowed = 0
    for span in spans:
        allowed |= span.mask
    return bits & ~allowed == 0


def _register_bits(budget: Budget, reg: int, bits: int) -> bool:
    return _in(bits, [r.bits for r in budget.registers if r.reg == reg])


def _zones(budget: Budget) -> tuple[Span, ...]:
    return budget.zones + ((INTERFACE_ZONES,) if budget.interface_zones else ())


def _table_ok(budget: Budget, f: FlowSpec) -> bool:
    table = tables.BY_ID.get(f.table)
    if table is None:
        return False
    if f.table in SHARED_TABLES:   # owner and guests alike keep to their bands there
        return any(h.table == f.table and f.priority in h.band for h in budget.hooks)
    if table.owner == budget.feature:
        return True
    # a table's miss flow, as the layout describes it, is the fabric's to install
    return budget is FABRIC and f.priority == 0 and table.miss.startswith("goto:")


def audit(flows: Iterable[FlowSpec]) -> list[str]:
    """What in these flows lies outside the budget of the feature their cookie names.

    Checked: the cookie's feature byte is declared; the table is the
    feature's, or a shared table at a priority of its band; conntrack zones,
    meters, ct_mark bits (matched or committed), registers (matched, set or
    written by a move; reading another feature's is allowed only of the
    fabric's, which stays zero) and learn targets are the feature's.
    """
    problems = []
    for f in flows:
        info = cookies.parse(f.cookie)
        budget = _BY_COOKIE.get(info.feature) if info.feature is not None else None
        if budget is None:
            problems.append(f"cookie {f.cookie:#x} names no budget: {f}")
            continue
        why = _flow_problems(budget, f)
        problems += [f"{budget.feature}: {w}: {f}" for w in why]
    return problems


def _flow_problems(budget: Budget, f: FlowSpec) -> list[str]:
    why = []
    if not _table_ok(budget, f):
        why.append(f"table {f.table} at priority {f.priority} is not its own")
    if f.meter is not None and not any(f.meter in s for s in budget.meters):
        why.append(f"meter {f.meter}")
    for name, value in f.match:
        reg = _register(name)
        if reg is not None and not _register_bits(budget, reg, _bits(value)):
            why.append(f"matches {name}")
        if name == "ct_mark" and not _in(_bits(value), budget.ct_mark):
            why.append(f"matches ct_mark {value}")
    for a in flat(f.actions):   # what a Clone does to its copy is held to the budget too
        if isinstance(a, Conntrack):
            if not any(a.zone in s for s in _zones(budget)):
                why.append(f"conntrack zone {a.zone}")
            if a.mark is not None and not _in(a.mark_mask, budget.ct_mark):
                why.append(f"commits ct_mark bits {a.mark_mask:#x}")
        elif isinstance(a, SetField) and _register(a.field) is not None:
            if not _register_bits(budget, _register(a.field), 0xFFFFFFFF):
                why.append(f"sets {a.field}")
        elif isinstance(a, Move):
            mask = (1 << a.n_bits) - 1
            for name, writes in ((a.src, False), (a.dst, True)):
                reg = _register(name)
                if reg is None or _register_bits(budget, reg, mask):
                    continue
                if writes or not _register_bits(FABRIC, reg, mask):
                    why.append(f"{'writes' if writes else 'reads'} {name}")
        elif isinstance(a, Multipath):
            reg = _register(a.dst)
            if reg is None or not _register_bits(budget, reg, ((1 << a.n_bits) - 1) << a.ofs):
                why.append(f"multipath writes {a.dst}")
        elif isinstance(a, Learn):
            learned = tables.BY_ID.get(a.table)
            if learned is None or learned.owner != budget.feature or \
                    cookies.parse(a.cookie).feature != budget.cookie:
                why.append(f"learns into table {a.table} with cookie {a.cookie:#x}")
    return why
