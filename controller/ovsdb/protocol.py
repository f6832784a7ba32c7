"""OVSDB (RFC 7047) as data: endpoints, values, JSON-RPC messages, transaction results.

Pure: nothing here opens a connection (see `controller.ovsdb.client`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

DB = "Open_vSwitch"
DEFAULT_ENDPOINT = "unix:/var/run/openvswitch/db.sock"


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
