"""Forgetting a conntrack zone: the Nicira NXT_CT_FLUSH_ZONE message.

A zone's connection state outlives the flows that used it (a TCP entry lives
for minutes after its last packet).  When a zone is given up (a persona torn
down, an interface's other epoch), its entries are flushed, so whoever gets
the zone next starts from nothing.  os-ken has no class for this message; it
is 24 bytes: the OpenFlow header, the Nicira experimenter id and subtype,
six bytes of padding and the zone (`struct nx_zone_id` in Open vSwitch's nicira-ext.h).
"""
from __future__ import annotations

import struct

OFPT_EXPERIMENTER = 4
NX_VENDOR_ID = 0x00002320
NXT_CT_FLUSH_ZONE = 29
LENGTH = 24


def ct_flush_zone(version: int, xid: int, zone: int) -> bytes:
    if not 0 <= zone <= 0xFFFF:
        raise ValueError(f"conntrack zone {zone} is outside 0..65535")
    return (struct.pack("!BBHI", version, OFPT_EXPERIMENTER, LENGTH, xid)
            + struct.pack("!II", NX_VENDOR_ID, NXT_CT_FLUSH_ZONE)
            + struct.pack("!6xH", zone))
