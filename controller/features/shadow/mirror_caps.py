"""What a switch must support for the mirror (`controller.features.shadow.mirror`): the
runtime checks a datapath before it mirrors an appliance there, and fails the
manifest with the reason rather than mirror anything partly."""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple


class Requirement(NamedTuple):
    action: str                      # as ovs-ofctl names it
    capabilities: tuple[str, ...]    # keys of OVSDB's Datapath:capabilities it needs
    why: str


REQUIREMENTS = (
    Requirement("ct", ("recirc", "ct_state", "ct_zone", "ct_mark"),
                "conntrack with zones and marks: a connection is decided once, by its first "
                "packet"),
    Requirement("multipath", (), "a flow-consistent hash of the connection in the switch "
                                 "(OpenFlow's, no datapath support needed; a switch that is "
                                 "not Open vSwitch refuses the flow)"),
    Requirement("clone", ("clone",), "copies that leave the packet itself as it was"),
)
TRUNCATE = Requirement("output_trunc", ("trunc",), "copies cut to the manifest's snaplen")


def required_actions(snaplen: bool = False) -> tuple[Requirement, ...]:
    """What a switch must support to mirror an appliance (with a snaplen: truncation too)."""
    return REQUIREMENTS + ((TRUNCATE,) if snaplen else ())


def unsupported(required: Iterable[Requirement], capabilities: Mapping[str, str]) -> str | None:
    """Why a datapath with these capabilities (OVSDB's Datapath:capabilities, "true"/"false")
    cannot mirror, or None when it can: the runtime fails the manifest with this reason
    rather than mirror anything partly."""
    missing = [r for r in required
               if any(capabilities.get(key, "false") != "true" for key in r.capabilities)]
    if not missing:
        return None
    return "the datapath lacks " + "; ".join(f"{r.action} ({r.why})" for r in missing)
