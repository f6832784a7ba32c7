"""The mirror's capability probe, over OpenFlow: `run_probe(channel, requirements)`.

How the shadow feature uses it (through `mirror_caps.Capabilities`, which
runs it with `ctx.request`, off the worker):

1. each production switch of an appliance is probed when the mirror first
   needs it and again after it reconnects (`Capabilities.forget` on the
   disconnect, `probe` on the connect);
2. an appliance whose production switch lacks a requirement is not mirrored
   at all (no hook, no copy: never a partial mirror), and its GET shows the
   reason; a switch not probed yet (or not connected) is waited for;
3. a POST/PATCH whose production interfaces sit on a switch known to lack
   one is refused 422 naming `interfaces`.

The probe asks the switch to accept one flow per requirement, carrying
exactly the action shape the mirror writes, each in a change of its own (a
bundle, or a FlowMod on OpenFlow 1.3, then a barrier), then deletes them all
in one more change: five changes, one request (`ctx.request`).  One change
per flow, not one bundle: a bundle stops at its first refusal, and the
channel's error does not say which flow it was; alone, each refusal names its
requirement, and every missing one is found.  An OpenFlow error to a
requirement's flow marks that requirement missing, with the switch's error
type and code in the reason.  The probe flows carry `PROBE_COOKIE`, a cookie
of the shadow feature: the hub owns them, so a probe flow left behind (the
controller died between the add and the delete) is deleted by the next
reconcile of that switch, as any flow of the hub that nothing desires.  They
sit in classify at the lowest priority of the shadow's classify band (below
its hooks) and match `reg0` bit 31 set: every packet enters classify with
its registers zero, so no packet matches one for the instant it is there
(and the truncated output's port is 0xfeff, the highest port number).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, NamedTuple, Sequence

from controller.core import budgets
from controller.features.shadow.mirror_net import ETH_IPV4, HASH_REGISTER, PROTOCOLS
from controller.pipeline import cookies, tables
from controller.pipeline.flowspec import FlowSpec, flow
from controller.reconcile.flows import ApplyError, FlowDiff, FlowChannel

if TYPE_CHECKING:
    from controller.features.shadow.mirror_caps import Requirement

PROBE_COOKIE = cookies.make(cookies.Feature.SHADOW, "probe")
PROBE_TABLE = tables.CLASSIFY.id
PROBE_PRIORITY = min(h.band.first for h in budgets.SHADOW.hooks if h.table == PROBE_TABLE)
PROBE_BIT = 1 << 31                      # of reg0: never set in classify
PROBE_PORT = 0xFEFF                      # where a probe's copy would go: nowhere

# OpenFlow 1.3/1.4 error types, and the codes of the ones a refused action answers.
ERROR_TYPES = {0: "OFPET_HELLO_FAILED", 1: "OFPET_BAD_REQUEST", 2: "OFPET_BAD_ACTION",
               3: "OFPET_BAD_INSTRUCTION", 4: "OFPET_BAD_MATCH", 5: "OFPET_FLOW_MOD_FAILED",
               17: "OFPET_BUNDLE_FAILED", 0xFFFF: "OFPET_EXPERIMENTER"}
ERROR_CODES: Mapping[int, tuple[str, ...]] = {
    2: ("OFPBAC_BAD_TYPE", "OFPBAC_BAD_LEN", "OFPBAC_BAD_EXPERIMENTER",
        "OFPBAC_BAD_EXP_TYPE", "OFPBAC_BAD_OUT_PORT", "OFPBAC_BAD_ARGUMENT", "OFPBAC_EPERM",
        "OFPBAC_TOO_MANY", "OFPBAC_BAD_QUEUE", "OFPBAC_BAD_OUT_GROUP",
        "OFPBAC_MATCH_INCONSISTENT", "OFPBAC_UNSUPPORTED_ORDER", "OFPBAC_BAD_TAG",
        "OFPBAC_BAD_SET_TYPE", "OFPBAC_BAD_SET_LEN", "OFPBAC_BAD_SET_ARGUMENT"),
    3: ("OFPBIC_UNKNOWN_INST", "OFPBIC_UNSUP_INST", "OFPBIC_BAD_TABLE_ID",
        "OFPBIC_UNSUP_METADATA", "OFPBIC_UNSUP_METADATA_MASK", "OFPBIC_BAD_EXPERIMENTER",
        "OFPBIC_BAD_EXP_TYPE", "OFPBIC_BAD_LEN", "OFPBIC_EPERM"),
    4: ("OFPBMC_BAD_TYPE", "OFPBMC_BAD_LEN", "OFPBMC_BAD_TAG", "OFPBMC_BAD_DL_ADDR_MASK",
        "OFPBMC_BAD_NW_ADDR_MASK", "OFPBMC_BAD_WILDCARDS", "OFPBMC_BAD_FIELD",
        "OFPBMC_BAD_VALUE", "OFPBMC_BAD_MASK", "OFPBMC_BAD_PREREQ", "OFPBMC_DUP_FIELD",
        "OFPBMC_EPERM"),
}
_TYPE_CODE = re.compile(r"type=(\d+) code=(\d+)")


class Refusal(NamedTuple):
    """A requirement whose probe flow the switch refused, and how it said so."""
    action: str                          # Requirement.action
    error: str                           # e.g. "OFPET_BAD_ACTION/OFPBAC_BAD_ARGUMENT (type 2, code 5)"


@dataclass(frozen=True)
class ProbeResult:
    """What one probe of one switch found: the requirements it refused (none: able)."""
    dpid: int
    refused: tuple[Refusal, ...] = ()

    def missing(self) -> dict[str, str]:
        """Refused requirement -> the switch's error."""
        return {r.action: r.error for r in self.refused}


def error_text(exc: ApplyError) -> str:
    """The switch's error as names and numbers, from the channel's ApplyError (which
    says `type=T code=C`); the error's own text when it does not."""
    found = _TYPE_CODE.search(str(exc))
    if found is None:
        return str(exc)
    kind, code = int(found.group(1)), int(found.group(2))
    codes = ERROR_CODES.get(kind, ())
    name = ERROR_TYPES.get(kind, f"type {kind}")
    if code < len(codes):
        name += f"/{codes[code]}"
    return f"{name} (type {kind}, code {code})"


def probe_flow(index: int, requirement: "Requirement") -> FlowSpec:
    """The flow that asks for `requirement`: its match and actions, in the probe's place."""
    match = {"eth_type": ETH_IPV4, "ip_proto": PROTOCOLS["tcp"],
             HASH_REGISTER: (PROBE_BIT | index, PROBE_BIT | 0xFF), **dict(requirement.match)}
    return flow(PROBE_TABLE, PROBE_PRIORITY, match, requirement.actions, goto=requirement.goto,
                cookie=PROBE_COOKIE)


def probe_flows(requirements: Sequence["Requirement"]) -> tuple[FlowSpec, ...]:
    if len(requirements) > 0xFF:
        raise ValueError("at most 255 requirements in one probe")
    flows = tuple(probe_flow(k, r) for k, r in enumerate(requirements))
    tables.check(flows)
    return flows


def run_probe(channel: FlowChannel, dpid: int,
              requirements: Sequence["Requirement"]) -> ProbeResult:
    """Off the worker: each requirement's flow added alone, then every probe flow deleted.

    Only a refusal (ApplyError) marks a requirement missing; a lost channel or a
    timeout raises (the switch stays unknown).  The deletes are strict and harmless
    for a flow that was refused (not there), and run even when an add raised."""
    flows = probe_flows(requirements)
    refused = []
    try:
        for r, f in zip(requirements, flows):
            try:
                channel.apply(FlowDiff(add=(f,)))
            except ApplyError as exc:
                refused.append(Refusal(r.action, error_text(exc)))
    finally:
        channel.apply(FlowDiff(delete=flows))
    return ProbeResult(dpid, tuple(refused))
