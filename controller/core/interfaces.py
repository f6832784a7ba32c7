"""Interface records: one per discovered host-facing port, the handle personalities bind to.

Body: {datapath, port, mac, ips, personality_id, default_personality_id,
personality_state}.  The hub creates and refreshes the discovery fields; the
personality fields belong to the personality coordinator and are kept as they
are when discovery refreshes a record.
"""
from __future__ import annotations

from controller.store import Store
from controller.core.topology import Host, dpid_str

KIND = "interface"
STATES = ("active", "transition", "fallback")


def interface_id(dpid: int, port: int) -> str:
    return f"{dpid_str(dpid)}:{port}"


def record_host(store: Store, host: Host) -> bool:
    """Create or refresh the interface record of the port a host was seen on."""
    iid = interface_id(host.dpid, host.port)
    doc = store.find(KIND, iid)
    body = dict(doc.body) if doc else {"personality_id": None, "default_personality_id": None,
                                       "personality_state": "active"}
    body.update(datapath=dpid_str(host.dpid), port=host.port, mac=host.mac, ips=list(host.ips))
    if doc and doc.body == body:
        return False
    store.put(KIND, iid, body)
    return True
