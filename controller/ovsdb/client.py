"""One JSON-RPC connection to an OVSDB server: `OvsdbClient.transact`.

Stdlib socket + json; answers the server's `echo` requests; reconnects once
when the server closed an idle connection before a request was sent.
Blocking I/O: meant for the hub's worker thread, never the os-ken event thread.
"""
from __future__ import annotations

import codecs
import itertools
import json
import select
import socket
from typing import Any, Mapping

from controller.ovsdb.protocol import (DB, DEFAULT_ENDPOINT, Endpoint, OvsdbError, check_results,
                                       echo_reply, transact_request)


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
