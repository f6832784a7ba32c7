"""The port operations on a switch's OVSDB: bridges, ports with options, OpenFlow numbers.

`OvsdbSwitches` finds a switch's bridge (by name, checked against the
datapath id, or by datapath id alone), makes sure a port with a given
type/options/external_ids exists (one transaction that inserts the Interface
and Port and adds the Port to the bridge, guarded by a `wait` so that two
writers never create it twice), reads back its OpenFlow port number (a
server-side `wait` until ovs-vswitchd assigned it), lists the ports carrying an
external id, and deletes a port.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from controller.ovsdb.client import OvsdbClient
from controller.ovsdb.protocol import (OvsdbError, Where, map_value, named_uuid, ovs_map, ovs_set,
                                       set_values, uuid, uuid_value)

OFPORT_WAIT_MS = 5000      # how long ovs-vswitchd may take to give a new port its ofport


@dataclass(frozen=True)
class Bridge:
    uuid: str
    name: str
    datapath_id: int | None


@dataclass(frozen=True)
class PortSpec:
    """A port as the hub wants it: an Interface of `type` with `options`, on one Port."""
    name: str
    type: str
    options: Mapping[str, str] = field(default_factory=dict)
    external_ids: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PortState:
    """A port as OVSDB has it."""
    name: str
    port_uuid: str
    bridge: str | None             # name of the bridge holding it (None: none)
    type: str
    options: dict[str, str]
    external_ids: dict[str, str]
    ofport: int | None             # None: not assigned yet; -1: ovs-vswitchd could not add it
    error: str | None

    def matches(self, spec: PortSpec) -> bool:
        return (self.type == spec.type and self.options == dict(spec.options)
                and all(self.external_ids.get(k) == v for k, v in spec.external_ids.items()))


def _ofport(value: Any) -> int | None:
    values = set_values(value)
    return int(values[0]) if values else None


def _optional_text(value: Any) -> str | None:
    values = set_values(value)
    return str(values[0]) if values else None


def _datapath_id(value: Any) -> int | None:
    text = _optional_text(value)
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


class OvsdbSwitches:
    """Port configuration of the switches in one OVSDB (one Open vSwitch instance)."""

    def __init__(self, client: OvsdbClient) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"OvsdbSwitches({self.client!r})"

    @property
    def endpoint(self) -> str:
        return str(self.client.endpoint)

    # bridges
    def bridge(self, dpid: int, name: str | None = None) -> Bridge:
        """The bridge of datapath `dpid`: by `name` (its LOCAL port's name) and checked, or by id.

        Several bridges may carry the same datapath id (test labs built side
        by side); the name, which OpenFlow reports as the LOCAL port's, tells
        them apart.  Without a name the datapath id must be unique.
        """
        where = [Where("name", "==", name)] if name else []
        rows = self.client.transact({"op": "select", "table": "Bridge", "where": where,
                                     "columns": ["_uuid", "name", "datapath_id"]})[0]["rows"]
        bridges = [Bridge(uuid_value(r["_uuid"]), r["name"], _datapath_id(r["datapath_id"]))
                   for r in rows]
        if name:
            if not bridges:
                raise OvsdbError(f"no bridge named {name!r} in OVSDB at {self.endpoint}")
            bridge = bridges[0]
            if bridge.datapath_id is not None and bridge.datapath_id != dpid:
                raise OvsdbError(f"bridge {name!r} has datapath id {bridge.datapath_id:016x}, "
                                 f"not {dpid:016x}")
            return bridge
        found = [b for b in bridges if b.datapath_id == dpid]
        if len(found) != 1:
            what = "no bridge" if not found else f"{len(found)} bridges"
            raise OvsdbError(f"{what} with datapath id {dpid:016x} in OVSDB at {self.endpoint}")
        return found[0]

    # ports
    def port(self, name: str) -> PortState | None:
        """The port and interface called `name`, and which bridge holds it."""
        results = self.client.transact(
            {"op": "select", "table": "Interface", "where": [Where("name", "==", name)],
             "columns": ["type", "options", "ofport", "error"]},
            {"op": "select", "table": "Port", "where": [Where("name", "==", name)],
             "columns": ["_uuid", "external_ids"]})
        ifaces, ports = results[0]["rows"], results[1]["rows"]
        if not ports or not ifaces:
            return None
        port_uuid = uuid_value(ports[0]["_uuid"])
        owner = self.client.transact(
            {"op": "select", "table": "Bridge",
             "where": [Where("ports", "includes", uuid(port_uuid))], "columns": ["name"]})[0]["rows"]
        iface = ifaces[0]
        return PortState(name=name, port_uuid=port_uuid,
                         bridge=owner[0]["name"] if owner else None,
                         type=iface["type"], options=map_value(iface["options"]),
                         external_ids=map_value(ports[0]["external_ids"]),
                         ofport=_ofport(iface["ofport"]), error=_optional_text(iface["error"]))

    def ensure_port(self, bridge: Bridge, spec: PortSpec) -> int:
        """Make `spec` exist on `bridge` (created, or reconfigured if it differs); its ofport.

        Idempotent: an existing port with the same configuration is left
        alone.  A port of that name on another bridge is an error (interface
        names are unique in one Open vSwitch).
        """
        state = self.port(spec.name)
        if state is not None and state.bridge not in (None, bridge.name):
            raise OvsdbError(f"port {spec.name!r} already exists on bridge {state.bridge!r}")
        if state is None or state.bridge is None:
            self.client.transact(*self.insert_port_operations(bridge, spec))
        elif not state.matches(spec):
            self.client.transact(*self.update_port_operations(spec))
        return self.wait_ofport(spec.name)

    @staticmethod
    def insert_port_operations(bridge: Bridge, spec: PortSpec) -> list[dict[str, Any]]:
        """Interface + Port inserted and added to the bridge, unless a Port of that name exists.

        The `wait` (timeout 0) aborts the whole transaction if another writer
        created the port meanwhile, so the port is never created twice.
        """
        iface = {"name": spec.name, "type": spec.type, "options": ovs_map(spec.options)}
        port = {"name": spec.name, "interfaces": named_uuid("iface"),
                "external_ids": ovs_map(spec.external_ids)}
        return [
            {"op": "wait", "table": "Port", "where": [Where("name", "==", spec.name)],
             "columns": ["name"], "until": "==", "rows": [], "timeout": 0},
            {"op": "insert", "table": "Interface", "row": iface, "uuid-name": "iface"},
            {"op": "insert", "table": "Port", "row": port, "uuid-name": "port"},
            {"op": "mutate", "table": "Bridge", "where": [Where("_uuid", "==", uuid(bridge.uuid))],
             "mutations": [["ports", "insert", ovs_set([named_uuid("port")])]]},
            {"op": "comment", "comment": f"hubshift: add port {spec.name} to {bridge.name}"},
        ]

    @staticmethod
    def update_port_operations(spec: PortSpec) -> list[dict[str, Any]]:
        return [
            {"op": "update", "table": "Interface", "where": [Where("name", "==", spec.name)],
             "row": {"type": spec.type, "options": ovs_map(spec.options)}},
            {"op": "update", "table": "Port", "where": [Where("name", "==", spec.name)],
             "row": {"external_ids": ovs_map(spec.external_ids)}},
            {"op": "comment", "comment": f"hubshift: reconfigure port {spec.name}"},
        ]

    def wait_ofport(self, name: str, timeout_ms: int = OFPORT_WAIT_MS) -> int:
        """The OpenFlow port number ovs-vswitchd gave interface `name` (waits until it has one)."""
        where = [Where("name", "==", name)]
        try:
            results = self.client.transact(
                {"op": "wait", "table": "Interface", "where": where, "columns": ["ofport"],
                 "until": "!=", "rows": [{"ofport": ovs_set([])}], "timeout": timeout_ms},
                {"op": "select", "table": "Interface", "where": where,
                 "columns": ["ofport", "error"]},
                extra_seconds=timeout_ms / 1000)
        except OvsdbError as exc:
            raise OvsdbError(f"port {name!r} got no OpenFlow port number: {exc}") from None
        rows = results[1]["rows"]
        if not rows:
            raise OvsdbError(f"port {name!r} vanished")
        ofport, error = _ofport(rows[0]["ofport"]), _optional_text(rows[0]["error"])
        if ofport is None or ofport < 0:
            raise OvsdbError(f"Open vSwitch could not add port {name!r}: {error or 'no reason given'}")
        return ofport

    def ports_with(self, bridge: Bridge, key: str, value: str) -> list[str]:
        """Names of the bridge's ports whose external_ids has `key` = `value`."""
        results = self.client.transact(
            {"op": "select", "table": "Bridge", "where": [Where("_uuid", "==", uuid(bridge.uuid))],
             "columns": ["ports"]},
            {"op": "select", "table": "Port",
             "where": [Where("external_ids", "includes", ovs_map({key: value}))],
             "columns": ["_uuid", "name"]})
        rows = results[0]["rows"]
        on_bridge = {uuid_value(u) for u in set_values(rows[0]["ports"])} if rows else set()
        return sorted(r["name"] for r in results[1]["rows"] if uuid_value(r["_uuid"]) in on_bridge)

    def delete_port(self, bridge: Bridge, name: str) -> bool:
        """Remove port `name` from `bridge` (OVSDB drops the unreferenced rows); False if absent."""
        state = self.port(name)
        if state is None or state.bridge != bridge.name:
            return False
        self.client.transact(*self.delete_port_operations(bridge, state.port_uuid, name))
        return True

    @staticmethod
    def delete_port_operations(bridge: Bridge, port_uuid: str, name: str) -> list[dict[str, Any]]:
        return [
            {"op": "mutate", "table": "Bridge", "where": [Where("_uuid", "==", uuid(bridge.uuid))],
             "mutations": [["ports", "delete", ovs_set([uuid(port_uuid)])]]},
            {"op": "comment", "comment": f"hubshift: delete port {name} from {bridge.name}"},
        ]
