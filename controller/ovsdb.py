"""A small OVSDB client (RFC 7047 JSON-RPC) for the ports the hub must configure.

OpenFlow cannot create ports; a tunnel port is a row in the switch's OVSDB
(`Interface` + `Port`, referenced from `Bridge.ports`).  This module speaks
the management protocol directly (stdlib socket + json), with only what the
hub needs, so the controller reaches a remote fabric exactly as it reaches a
local one: `unix:/var/run/openvswitch/db.sock` or `tcp:HOST:6640`.  It never
runs ovs-vsctl.

Two layers:

- `OvsdbClient`: one connection, `transact(*operations)`; answers the
  server's `echo` requests; reconnects once when the server closed an idle
  connection before a request was sent.  The message builders
  (`transact_request`, `uuid`, `named_uuid`, `ovs_set`, `ovs_map`, `Where`)
  are pure.
- `OvsdbSwitches`: the operations on a switch: find its bridge (by name,
  checked against the datapath id, or by datapath id alone), make sure a
  port with a given type/options/external_ids exists (one transaction that
  inserts the Interface and Port and adds the Port to the bridge, guarded by
  a `wait` so that two writers never create it twice), read back its
  OpenFlow port number (a server-side `wait` until ovs-vswitchd assigned
  it), list the ports carrying an external id, delete a port.

Blocking I/O: meant for the hub's worker thread (which already blocks on
switch replies), never the os-ken event thread.
"""
from __future__ import annotations

import codecs
import itertools
import json
import select
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

DB = "Open_vSwitch"
DEFAULT_ENDPOINT = "unix:/var/run/openvswitch/db.sock"
OFPORT_WAIT_MS = 5000      # how long ovs-vswitchd may take to give a new port its ofport


class OvsdbError(RuntimeError):
    """The server refused a request, answered with an error, or could not be reached."""


# ------------------------------------------------------------------ endpoints
@dataclass(frozen=True)
class Endpoint:
    """Where the database is: a unix socket path, or a TCP host and port."""
    kind: str                 # "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        """`unix:PATH` or `tcp:HOST:PORT` (IPv6 hosts in brackets: `tcp:[::1]:6640`)."""
        if not isinstance(text, str):
            raise ValueError(f"OVSDB endpoint must be text, got {text!r}")
        kind, sep, rest = text.partition(":")
        if kind == "unix" and sep and rest:
            return cls("unix", path=rest)
        if kind == "tcp" and sep:
            host, sep2, port = rest.rpartition(":")
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            if not sep2 or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"OVSDB endpoint {text!r}: expected tcp:HOST:PORT")
            return cls("tcp", host=host, port=int(port))
        raise ValueError(f"OVSDB endpoint {text!r}: expected unix:PATH or tcp:HOST:PORT")

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


# ------------------------------------------------------- values and messages
def uuid(value: str) -> list:
    return ["uuid", value]


def named_uuid(name: str) -> list:
    """A row inserted earlier in the same transaction (its `uuid-name`)."""
    return ["named-uuid", name]


def ovs_set(values: Iterable[Any]) -> list:
    return ["set", list(values)]


def ovs_map(pairs: Mapping[str, str]) -> list:
    return ["map", [[k, v] for k, v in sorted(pairs.items())]]


def set_values(value: Any) -> list:
    """A set column as the server sends it (a bare atom when it has one element) -> list."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        return list(value[1])
    return [value]


def map_value(value: Any) -> dict[str, Any]:
    """A map column (`["map", [[k, v], ...]]`) -> dict."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "map":
        return {k: v for k, v in value[1]}
    raise OvsdbError(f"expected an OVSDB map, got {value!r}")


def uuid_value(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2 and value[0] == "uuid":
        return value[1]
    raise OvsdbError(f"expected an OVSDB uuid, got {value!r}")


def Where(column: str, function: str, value: Any) -> list:   # noqa: N802 (reads as a clause)
    return [column, function, value]


def transact_request(request_id: int, operations: Sequence[Mapping[str, Any]],
                     db: str = DB) -> dict[str, Any]:
    return {"method": "transact", "params": [db, *operations], "id": request_id}


def echo_reply(request: Mapping[str, Any]) -> dict[str, Any]:
    return {"result": request.get("params", []), "error": None, "id": request.get("id")}


def check_results(operations: Sequence[Mapping[str, Any]], results: Any) -> list[dict]:
    """The per-operation results of a transaction; OvsdbError naming the first failure.

    The server answers one result per operation; when the commit itself fails
    it appends one more, the error.  A failed operation makes the whole
    transaction void.
    """
    if not isinstance(results, list):
        raise OvsdbError(f"malformed transact result: {results!r}")
    for i, result in enumerate(results):
        if isinstance(result, dict) and result.get("error"):
            op = operations[i]["op"] if i < len(operations) else "commit"
            detail = result.get("details") or ""
            raise OvsdbError(f"{op} failed: {result['error']}" + (f": {detail}" if detail else ""))
    if len(results) < len(operations):
        raise OvsdbError(f"{len(results)} results for {len(operations)} operations")
    return results


# ---------------------------------------------------------------- connection
class _Closed(OSError):
    """The server closed the connection before answering."""


class OvsdbClient:
    """One JSON-RPC connection to an OVSDB server, opened when first needed."""

    def __init__(self, endpoint: str | Endpoint = DEFAULT_ENDPOINT, timeout: float = 5.0) -> None:
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else Endpoint.parse(endpoint)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._ids = itertools.count(1)
        self._decoder = json.JSONDecoder()

    def __repr__(self) -> str:
        return f"OvsdbClient({str(self.endpoint)!r})"

    # connection
    def _connect(self) -> socket.socket:
        ep = self.endpoint
        try:
            if ep.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(ep.path)
            else:
                sock = socket.create_connection((ep.host, ep.port), timeout=self.timeout)
        except OSError as exc:
            raise OvsdbError(f"cannot connect to OVSDB at {ep}: {exc.strerror or exc}") from None
        self._buffer = ""
        self._utf8.reset()
        return sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buffer = ""

    def _drain_idle(self) -> None:
        """Answer what the server sent while we were idle (echo); drop a closed connection."""
        sock = self._sock
        if sock is None:
            return
        try:
            while select.select([sock], [], [], 0)[0]:
                data = sock.recv(65536)
                if not data:
                    self.close()
                    return
                self._buffer += self._utf8.decode(data)
                for msg in self._parse():
                    if msg.get("method") == "echo":
                        self._send(echo_reply(msg))
        except (OSError, ValueError):
            self.close()

    def _send(self, message: Mapping[str, Any]) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(json.dumps(message, separators=(",", ":")).encode())
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _Closed(str(exc)) from None

    def _parse(self) -> list[dict]:
        """Complete JSON messages at the front of the buffer (the stream has no framing)."""
        out = []
        buf = self._buffer.lstrip()
        while buf:
            try:
                msg, end = self._decoder.raw_decode(buf)
            except json.JSONDecodeError:
                break          # incomplete: wait for more bytes
            out.append(msg)
            buf = buf[end:].lstrip()
        self._buffer = buf
        return out

    # requests
    def transact(self, *operations: Mapping[str, Any], db: str = DB,
                 extra_seconds: float = 0.0) -> list[dict]:
        """Run one transaction; the per-operation results, or OvsdbError.

        `extra_seconds`: time the server may take on top of the usual timeout
        (a `wait` operation with a timeout holds the answer back that long).
        """
        self._drain_idle()
        fresh = self._sock is None
        if fresh:
            self._sock = self._connect()
        request_id = next(self._ids)
        try:
            self._send(transact_request(request_id, operations, db))
            reply = self._await(request_id, self.timeout + extra_seconds)
        except _Closed as exc:
            # A kept connection the server had closed while idle: it never saw
            # this request, so sending it again on a new connection is safe.
            self.close()
            if fresh:
                raise OvsdbError(f"OVSDB at {self.endpoint}: {exc}") from None
            return self.transact(*operations, db=db, extra_seconds=extra_seconds)
        except (OSError, ValueError) as exc:
            self.close()
            raise OvsdbError(f"OVSDB at {self.endpoint}: {exc}") from None
        if reply.get("error") is not None:
            raise OvsdbError(f"OVSDB refused the transaction: {reply['error']}")
        return check_results(operations, reply.get("result"))

    def _await(self, request_id: int, timeout: float) -> dict:
        assert self._sock is not None
        self._sock.settimeout(timeout)
        while True:
            for msg in self._parse():
                if msg.get("method") == "echo":
                    self._send(echo_reply(msg))
                elif msg.get("id") == request_id and "method" not in msg:
                    return msg
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                raise OSError(f"no answer within {timeout:g} s") from None
            except ConnectionResetError as exc:
                # the server closed an idle connection with our request unread
                raise _Closed(str(exc)) from None
            if not data:
                raise _Closed("connection closed by the server")
            self._buffer += self._utf8.decode(data)


# ------------------------------------------------------------------ switches
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
