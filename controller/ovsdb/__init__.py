"""A small OVSDB client (RFC 7047 JSON-RPC) for the ports the hub must configure.

OpenFlow cannot create ports; a tunnel port is a row in the switch's OVSDB
(`Interface` + `Port`, referenced from `Bridge.ports`).  This package speaks
the management protocol directly (stdlib socket + json), with only what the
hub needs, so the controller reaches a remote fabric exactly as it reaches a
local one: `unix:/var/run/openvswitch/db.sock` or `tcp:HOST:6640`.  It never
runs ovs-vsctl.

- `protocol`: endpoints, values and messages (`transact_request`, `uuid`,
  `named_uuid`, `ovs_set`, `ovs_map`, `Where`), transaction results; pure.
- `client`: `OvsdbClient`, one connection, `transact(*operations)`.
- `switches`: `OvsdbSwitches`, the operations on a switch's bridge and ports.

Blocking I/O: meant for the hub's worker thread (which already blocks on
switch replies), never the os-ken event thread.
"""
from controller.ovsdb.client import OvsdbClient
from controller.ovsdb.protocol import (DB, DEFAULT_ENDPOINT, Endpoint, OvsdbError, Where,
                                       check_results, echo_reply, map_value, named_uuid,
                                       ovs_map, ovs_set, set_values, transact_request, uuid,
                                       uuid_value)
from controller.ovsdb.switches import OFPORT_WAIT_MS, Bridge, OvsdbSwitches, PortSpec, PortState

__all__ = ["DB", "DEFAULT_ENDPOINT", "OFPORT_WAIT_MS", "Bridge", "Endpoint", "OvsdbClient",
           "OvsdbError", "OvsdbSwitches", "PortSpec", "PortState", "Where", "check_results",
           "echo_reply", "map_value", "named_uuid", "ovs_map", "ovs_set", "set_values",
           "transact_request", "uuid", "uuid_value"]
