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
from controller.pipeline.cookies import Feature


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
    "shadow", Feature.SHADOW, reserved=True,
    tables=(Span(7, 9), Span(80, 89)),       # sample on the way in; clone on the way out
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
    "shard", Feature.SHARD, reserved=True,
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
    "policy", Feature.POLICY, reserved=True,
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
    bytes_ = [b.cookie for b in budgets if b.cookie is not None]
    if len(set(bytes_)) != len(bytes_):
        raise BudgetError(f"two budgets with one cookie feature byte: {bytes_}")
    unclaimed = set(Feature) - set(bytes_)
    if unclaimed:
        raise BudgetError(f"cookie feature bytes without a budget: {sorted(unclaimed)}")
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


def owns_cookie(cookie: int) -> bool:
    """A flow the hub owns: the magic byte and a declared feature byte."""
    return cookies.parse(cookie).feature in COOKIE_FEATURES


def owns_meter(meter_id: int) -> bool:
    """A meter id inside some budget's meter ranges (the meter reconciler's to delete)."""
    return any(meter_id in span for span in METERS)


def owns_group(group_id: int) -> bool:
    """A group id inside some budget's group ranges (the group reconciler's to delete)."""
    return any(group_id in span for span in GROUPS)
