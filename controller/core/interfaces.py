"""Interface records: one per discovered host-facing port, the handle features bind to.

Body: {datapath, port, mac, ips, zone, personality_id, default_personality_id,
personality_state}.  The hub creates and refreshes the discovery fields; the
personality fields belong to the personality coordinator and are kept as they
are when discovery refreshes a record.  So are `categories` (user-defined names,
`CATEGORY_PATTERN`, written over REST with ``PATCH /v1/interfaces/{id}``; a
record without them has none).

`zone` is the first of the interface's two conntrack zones (epoch 0 and 1;
`controller.features.personality.interface.interface_zone`), taken from the
interface zones of `controller.core.budgets` when the record is made (or
first refreshed, for a record from before zones) and kept for as long as the
record lives.  Zones are allocated per store, so they are unique across every
bridge the hub runs: all bridges of one Open vSwitch share one connection
table, and two interfaces there must never share a zone (and so TCP state).
A counter hands out pairs in order, so a pair is not reused soon after a
record goes; once the counter has run through the range, the lowest pair no
record holds is taken.
"""
from __future__ import annotations

from controller.core import budgets
from controller.core.topology import Host, Subnet, dpid_str, subnet_of
from controller.store import Store

KIND = "interface"
ID_PATTERN = r"^[0-9a-f]{16}:[0-9]{1,10}$"
"""An interface id as `interface_id` makes it: "<datapath>:<port>", e.g. 0000000000000a01:2."""
CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
"""A category's name: 1-64 characters of lower-case letters, digits, '_', '.' or '-', starting
with a letter or digit (it is a document id too: a category's policy is stored under it)."""
STATES = ("active", "transition", "fallback")
ZONES = budgets.INTERFACE_ZONES
ALLOCATION_KIND, ZONE_COUNTER = "allocation", "interface-zone"  # body: {"next": <zone>}


class ZonesExhausted(RuntimeError):
    """Every pair of interface zones is held by an interface record."""


def interface_id(dpid: int, port: int) -> str:
    return f"{dpid_str(dpid)}:{port}"


def record_host(store: Store, host: Host) -> bool:
    """Create or refresh the interface record of the port a host was seen on."""
    iid = interface_id(host.dpid, host.port)
    with store.transaction():
        doc = store.find(KIND, iid)
        body = dict(doc.body) if doc else {"personality_id": None, "default_personality_id": None,
                                           "personality_state": "active"}
        body.update(datapath=dpid_str(host.dpid), port=host.port, mac=host.mac,
                    ips=list(host.ips))
        if body.get("zone") is None:
            body["zone"] = allocate_zone(store)
        if doc and doc.body == body:
            return False
        store.put(KIND, iid, body)
        return True


def allocate_zone(store: Store) -> int:
    """The first zone of a pair no interface record holds (call inside a transaction)."""
    counter = store.find(ALLOCATION_KIND, ZONE_COUNTER)
    zone = counter.body["next"] if counter else ZONES.first
    if zone + 1 > ZONES.last:   # the counter ran through the range once: reuse a free pair
        held = {d.body.get("zone") for d in store.list(KIND)}
        zone = next((z for z in range(ZONES.first, ZONES.last, 2) if z not in held), None)
        if zone is None:
            raise ZonesExhausted(f"all {len(ZONES) // 2} interface zone pairs ({ZONES}) are "
                                 "held by interface records")
        return zone
    store.put(ALLOCATION_KIND, ZONE_COUNTER, {"next": zone + 2})
    return zone


def gateway_of(store: Store, body: dict) -> str | None:
    """The gateway of the stored subnet that holds one of an interface record's addresses
    (where an agent on that host talks to the hub), or None."""
    subnets = []
    for doc in store.list("subnet"):
        try:
            subnets.append(Subnet.from_body(doc.id, doc.body))
        except (KeyError, TypeError, ValueError):
            continue
    for ip in body.get("ips") or ():
        if (subnet := subnet_of(ip, subnets)) is not None:
            return str(subnet.gateway)
    return None
