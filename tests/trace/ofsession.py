"""A bare OpenFlow session to a bridge's management socket, messages built by os-ken.

For tests that must see exactly what a switch answers (flow stats as wire
bytes decoded by os-ken), without a controller in between.  One request at a
time; replies are read until the one with the request's xid.
"""
from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from os_ken.ofproto import ofproto_parser, ofproto_protocol

RUNDIR = Path("/var/run/openvswitch")


class OFSession:
    def __init__(self, bridge: str, version: int, timeout: float = 10.0) -> None:
        self.dp = ofproto_protocol.ProtocolDesc(version)
        self.parser, self.ofp = self.dp.ofproto_parser, self.dp.ofproto
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(RUNDIR / f"{bridge}.mgmt"))
        self.xid = 0
        self.send(self.parser.OFPHello(self.dp))
        hello = self.recv()   # the session speaks the lower of the two versions: ours
        assert hello.version >= version, f"switch only speaks OpenFlow {hello.version:#x}"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "OFSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, msg: Any) -> int:
        self.xid += 1
        msg.set_xid(self.xid)
        msg.serialize()
        self.sock.sendall(bytes(msg.buf))
        return self.xid

    def recv(self) -> Any:
        head = self._read(8)
        version, msg_type, length, xid = struct.unpack("!BBHI", head)
        return ofproto_parser.msg(self.dp, version, msg_type, length, xid,
                                  head + self._read(length - 8))

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the switch closed the session")
            buf += chunk
        return buf

    def barrier(self, msgs: list[Any]) -> None:
        """Send `msgs` then a barrier; fail on any error the switch answers."""
        for msg in msgs:
            self.send(msg)
        xid = self.send(self.parser.OFPBarrierRequest(self.dp))
        while True:
            reply = self.recv()
            if isinstance(reply, self.parser.OFPErrorMsg):
                raise AssertionError(f"switch refused a message: type={reply.type} "
                                     f"code={reply.code}")
            if reply.xid == xid:
                return

    def flow_stats(self, cookie: int = 0, cookie_mask: int = 0) -> list[Any]:
        """Every flow of every table whose cookie matches (OFPFlowStats entries)."""
        xid = self.send(self.parser.OFPFlowStatsRequest(
            self.dp, 0, self.ofp.OFPTT_ALL, self.ofp.OFPP_ANY, self.ofp.OFPG_ANY, cookie,
            cookie_mask, self.parser.OFPMatch()))
        out: list[Any] = []
        while True:
            reply = self.recv()
            if reply.xid != xid:
                continue
            out.extend(reply.body)
            if not reply.flags & self.ofp.OFPMPF_REPLY_MORE:
                return out
