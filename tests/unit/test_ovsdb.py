"""The OVSDB client: message building (pure) and the JSON-RPC exchange against a
scripted server on a unix socket.  The port operations against the real
ovsdb-server are in tests/trace/test_ovsdb_trace.py.
"""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from controller.ovsdb import (Bridge, Endpoint, OvsdbClient, OvsdbError, OvsdbSwitches, PortSpec,
                              check_results, echo_reply, map_value, named_uuid, ovs_map, ovs_set,
                              set_values, transact_request, uuid)


# ------------------------------------------------------------------- pure
def test_endpoints_parse_and_print():
    assert Endpoint.parse("unix:/var/run/openvswitch/db.sock") == Endpoint(
        "unix", path="/var/run/openvswitch/db.sock")
    assert Endpoint.parse("tcp:10.0.0.5:6640") == Endpoint("tcp", host="10.0.0.5", port=6640)
    assert Endpoint.parse("tcp:[fd00::1]:6640") == Endpoint("tcp", host="fd00::1", port=6640)
    for text in ("unix:/x.sock", "tcp:10.0.0.5:6640", "tcp:[fd00::1]:6640"):
        assert str(Endpoint.parse(text)) == text
    for bad in ("", "unix:", "tcp:host", "tcp::6640", "tcp:h:0", "tcp:h:70000", "ssl:h:6640",
                "/var/run/db.sock"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)


def test_values():
    assert uuid("u1") == ["uuid", "u1"] and named_uuid("p") == ["named-uuid", "p"]
    assert ovs_set([1, 2]) == ["set", [1, 2]]
    assert ovs_map({"b": "2", "a": "1"}) == ["map", [["a", "1"], ["b", "2"]]]
    assert set_values(["set", []]) == [] and set_values(5) == [5]
    assert set_values(["set", [1, 2]]) == [1, 2]
    assert map_value(["map", [["k", "v"]]]) == {"k": "v"}
    with pytest.raises(OvsdbError):
        map_value(["set", []])


def test_transact_request_and_echo_reply():
    msg = transact_request(7, [{"op": "select", "table": "Bridge", "where": []}])
    assert msg == {"method": "transact", "id": 7,
                   "params": ["Open_vSwitch", {"op": "select", "table": "Bridge", "where": []}]}
    assert echo_reply({"method": "echo", "id": "echo", "params": [1]}) == {
        "result": [1], "error": None, "id": "echo"}


def test_results_name_the_failed_operation():
    ops = [{"op": "wait"}, {"op": "insert"}]
    assert check_results(ops, [{}, {"uuid": ["uuid", "x"]}]) == [{}, {"uuid": ["uuid", "x"]}]
    with pytest.raises(OvsdbError, match="wait failed: timed out"):
        check_results(ops, [{"error": "timed out"}, None])
    with pytest.raises(OvsdbError, match="commit failed: constraint violation: dup"):
        check_results(ops, [{}, {}, {"error": "constraint violation", "details": "dup"}])
    with pytest.raises(OvsdbError, match="1 results for 2"):
        check_results(ops, [{}])
    with pytest.raises(OvsdbError, match="malformed"):
        check_results(ops, {"error": "x"})


def test_insert_is_one_guarded_transaction():
    bridge = Bridge("b-uuid", "br0", 1)
    spec = PortSpec("hsv00000001", "vxlan", {"remote_ip": "198.18.0.2", "key": "5"},
                    {"hubshift-datapath": "0000000000000001"})
    ops = OvsdbSwitches.insert_port_operations(bridge, spec)
    assert [o["op"] for o in ops] == ["wait", "insert", "insert", "mutate", "comment"]
    guard = ops[0]
    assert guard == {"op": "wait", "table": "Port", "where": [["name", "==", "hsv00000001"]],
                     "columns": ["name"], "until": "==", "rows": [], "timeout": 0}
    assert ops[1]["row"] == {"name": "hsv00000001", "type": "vxlan",
                             "options": ["map", [["key", "5"], ["remote_ip", "198.18.0.2"]]]}
    assert ops[2]["row"]["interfaces"] == ["named-uuid", ops[1]["uuid-name"]]
    assert ops[2]["row"]["external_ids"] == ["map", [["hubshift-datapath", "0000000000000001"]]]
    assert ops[3]["where"] == [["_uuid", "==", ["uuid", "b-uuid"]]]
    assert ops[3]["mutations"] == [["ports", "insert", ["set", [["named-uuid", ops[2]["uuid-name"]]]]]]
    delete = OvsdbSwitches.delete_port_operations(bridge, "p-uuid", "hsv00000001")
    assert delete[0]["mutations"] == [["ports", "delete", ["set", [["uuid", "p-uuid"]]]]]


# -------------------------------------------------------- scripted server
class ScriptedServer:
    """A unix-socket OVSDB stand-in: answers each request with `answer(request)`.

    `chunks` splits every answer into pieces sent separately (to exercise the
    framing), and `echo_first` sends an echo request before the answer.
    """

    def __init__(self, path: Path, answer, chunks: int = 1, echo_first: bool = False,
                 close_after: int | None = None) -> None:
        self.path = str(path)
        self.answer, self.chunks, self.echo_first = answer, chunks, echo_first
        self.close_after = close_after
        self.requests: list[dict] = []
        self.echo_replies: list[dict] = []
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        decoder, buf, served = json.JSONDecoder(), "", 0
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data.decode()
                while buf.strip():
                    try:
                        msg, end = decoder.raw_decode(buf.lstrip())
                    except json.JSONDecodeError:
                        break
                    buf = buf.lstrip()[end:]
                    if msg.get("id") == "echo":
                        self.echo_replies.append(msg)
                        continue
                    self.requests.append(msg)
                    if self.echo_first:
                        conn.sendall(json.dumps({"method": "echo", "id": "echo",
                                                 "params": ["ping"]}).encode())
                    text = json.dumps({"id": msg["id"], "error": None,
                                       "result": self.answer(msg)})
                    step = max(1, len(text) // self.chunks)
                    for i in range(0, len(text), step):
                        conn.sendall(text[i:i + step].encode())
                    served += 1
                    if self.close_after is not None and served >= self.close_after:
                        return

    def stop(self) -> None:
        self.sock.close()


def _selects(msg):
    return [{"rows": [{"name": "é-br"}]} for _ in msg["params"][1:]]


def test_answers_split_across_reads_and_echo_requests_are_answered(tmp_path):
    server = ScriptedServer(tmp_path / "db.sock", _selects, chunks=7, echo_first=True)
    try:
        client = OvsdbClient(f"unix:{server.path}")
        for _ in range(3):
            result = client.transact({"op": "select", "table": "Bridge", "where": []})
            assert result == [{"rows": [{"name": "é-br"}]}]
        assert len(server.requests) == 3 and server.connections == 1
        assert server.echo_replies and server.echo_replies[0]["result"] == ["ping"]
        ids = [r["id"] for r in server.requests]
        assert len(set(ids)) == 3
    finally:
        client.close()
        server.stop()


def test_a_connection_the_server_closed_while_idle_is_replaced(tmp_path):
    server = ScriptedServer(tmp_path / "db.sock", _selects, close_after=1)
    try:
        client = OvsdbClient(f"unix:{server.path}")
        client.transact({"op": "select", "table": "Bridge", "where": []})
        assert client.transact({"op": "select", "table": "Bridge", "where": []})
        assert server.connections == 2 and len(server.requests) == 2
    finally:
        client.close()
        server.stop()


def test_errors_are_ovsdb_errors(tmp_path):
    with pytest.raises(OvsdbError, match="cannot connect"):
        OvsdbClient(f"unix:{tmp_path}/nothing.sock").transact({"op": "comment", "comment": "x"})
    server = ScriptedServer(tmp_path / "db.sock", lambda m: [{"error": "referential integrity "
                                                                       "violation"}])
    try:
        with pytest.raises(OvsdbError, match="referential integrity"):
            OvsdbClient(f"unix:{server.path}").transact({"op": "insert", "table": "Port", "row": {}})
    finally:
        server.stop()


def test_an_unanswered_request_times_out(tmp_path):
    path = tmp_path / "db.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    try:
        client = OvsdbClient(f"unix:{path}", timeout=0.2)
        with pytest.raises(OvsdbError, match="no answer within 0.2 s"):
            client.transact({"op": "comment", "comment": "x"})
    finally:
        listener.close()
