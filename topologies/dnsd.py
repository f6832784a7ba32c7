#!/usr/bin/env python3
"""A tiny DNS responder (and client) for lab hosts; stdlib only.

Server::

    python3 topologies/dnsd.py --listen 10.0.1.3 --answer 192.0.2.10 [--port 53]

answers every A query (class IN) with ``--answer`` (TTL 5), and every other
query type with an empty NOERROR; the question is echoed, QR and RA are set,
RD is copied.  Non-QUERY opcodes get NOTIMP, unparseable questions FORMERR.
One line per query goes to stdout.

Client::

    python3 topologies/dnsd.py --query NAME --server IP [--port 53] [--timeout 2]

prints the first A answer and exits 0; exits 1 on timeout, 3 if the server
answered without an A record (the rcode goes to stderr); 2 is usage.
"""
from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import threading
import time

QTYPE_A = 1
CLASS_IN = 1
ANSWER_TTL = 5
RCODE_FORMERR, RCODE_NOTIMP = 1, 4
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 65: "HTTPS", 255: "ANY"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


# -- wire format ---------------------------------------------------------------

def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode()
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def read_name(msg: bytes, off: int) -> tuple[str, int]:
    """The name at ``off`` (following compression pointers) and the offset after it."""
    labels: list[str] = []
    end = None
    for _ in range(128):  # bounds pointer loops
        length = msg[off]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((length & 0x3F) << 8) | msg[off + 1]
            continue
        if length & 0xC0:
            raise ValueError("bad label type")
        off += 1
        if length == 0:
            return ".".join(labels) + ".", end if end is not None else off
        label = msg[off:off + length]
        if len(label) < length:
            raise IndexError("truncated label")
        labels.append(label.decode("ascii", "replace"))
        off += length
    raise ValueError("name pointer loop")


def build_query(name: str, query_id: int, qtype: int = QTYPE_A) -> bytes:
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + encode_name(name) \
        + struct.pack("!HH", qtype, CLASS_IN)


def respond(query: bytes, answer: str) -> tuple[bytes | None, str]:
    """The response to ``query`` and a log line; None if it is no query at all."""
    if len(query) < 12:
        return None, "short packet ignored"
    qid, flags, qdcount = struct.unpack_from("!HHH", query, 0)
    if flags & 0x8000:
        return None, "response ignored"
    opcode = (flags >> 11) & 0xF
    base = 0x8000 | (opcode << 11) | (flags & 0x0100) | 0x0080  # QR, opcode, RD copied, RA

    def error(rcode: int, why: str) -> tuple[bytes, str]:
        return struct.pack("!HHHHHH", qid, base | rcode, 0, 0, 0, 0), why

    if opcode != 0:
        return error(RCODE_NOTIMP, f"opcode {opcode} -> NOTIMP")
    if qdcount != 1:
        return error(RCODE_FORMERR, f"qdcount {qdcount} -> FORMERR")
    try:
        qname, off = read_name(query, 12)
        qtype, qclass = struct.unpack_from("!HH", query, off)
    except (IndexError, ValueError, struct.error):
        return error(RCODE_FORMERR, "bad question -> FORMERR")
    question = query[12:off + 4]
    qtype_name = QTYPES.get(qtype, str(qtype))
    if qtype == QTYPE_A and qclass == CLASS_IN:
        rr = b"\xc0\x0c" + struct.pack("!HHIH", QTYPE_A, CLASS_IN, ANSWER_TTL, 4) \
            + socket.inet_aton(answer)
        head = struct.pack("!HHHHHH", qid, base, 1, 1, 0, 0)
        return head + question + rr, f"{qname} {qtype_name} -> {answer}"
    head = struct.pack("!HHHHHH", qid, base, 1, 0, 0, 0)
    return head + question, f"{qname} {qtype_name} -> NOERROR (empty)"


def parse_response(msg: bytes) -> tuple[int, int, list[str]]:
    """(query id, rcode, A addresses in the answer section) of a response."""
    qid, flags, qdcount, ancount = struct.unpack_from("!HHHH", msg, 0)
    off = 12
    for _ in range(qdcount):
        off = read_name(msg, off)[1] + 4
    addrs = []
    for _ in range(ancount):
        off = read_name(msg, off)[1]
        rtype, rclass, _, rdlen = struct.unpack_from("!HHIH", msg, off)
        off += 10
        rdata = msg[off:off + rdlen]
        off += rdlen
        if rtype == QTYPE_A and rclass == CLASS_IN and len(rdata) == 4:
            addrs.append(socket.inet_ntoa(rdata))
    return qid, flags & 0xF, addrs


# -- server --------------------------------------------------------------------

def bind(listen: str, port: int = 53) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((listen, port))
    return sock


def serve(sock: socket.socket, answer: str, stop: threading.Event | None = None,
          out=None) -> None:
    """Answer queries on ``sock`` until ``stop`` is set (checked every 0.2 s)."""
    socket.inet_aton(answer)  # fail now on a bad address, not per query
    out = out or sys.stdout
    sock.settimeout(0.2)
    while stop is None or not stop.is_set():
        try:
            data, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        except OSError:
            if stop is not None and stop.is_set():
                break
            raise
        reply, line = respond(data, answer)
        if reply is not None:
            try:
                sock.sendto(reply, peer)
            except OSError as exc:
                line += f" (send failed: {exc})"
        print(f"{peer[0]}:{peer[1]} {line}", file=out, flush=True)


# -- client --------------------------------------------------------------------

def query(name: str, server: str, port: int = 53, timeout: float = 2.0) -> tuple[int, list[str]] | None:
    """Ask ``server`` for the A records of ``name``: (rcode, addresses), or None on timeout.

    The query is resent every second until ``timeout``; only a response with
    our id from the server's address and port counts.
    """
    qid = random.randrange(1 << 16)
    msg = build_query(name, qid)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if now >= next_send:
                try:
                    sock.sendto(msg, (server, port))
                except OSError:
                    pass  # e.g. no route yet: keep trying until the deadline
                next_send = now + 1.0
            sock.settimeout(max(0.01, min(deadline, next_send) - now))
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:  # TimeoutError included
                continue
            if peer[:2] != (server, port):
                continue
            try:
                rid, rcode, addrs = parse_response(data)
            except (IndexError, ValueError, struct.error):
                continue
            if rid == qid and data[2] & 0x80:
                return rcode, addrs


# -- command line --------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", help="address to serve on")
    ap.add_argument("--answer", help="address every A query is answered with")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--query", metavar="NAME", help="client mode: resolve NAME")
    ap.add_argument("--server", help="client mode: server address")
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args(argv)
    if args.query:
        if not args.server:
            ap.error("--query needs --server")
        result = query(args.query, args.server, args.port, args.timeout)
        if result is None:
            print(f"timeout: no answer from {args.server}:{args.port}", file=sys.stderr)
            return 1
        rcode, addrs = result
        if not addrs:
            print(f"no A record: {RCODES.get(rcode, rcode)}", file=sys.stderr)
            return 3
        print(addrs[0], flush=True)
        return 0
    if not (args.listen and args.answer):
        ap.error("server mode needs --listen and --answer (or use --query NAME --server IP)")
    try:
        socket.inet_aton(args.answer)
    except OSError:
        ap.error(f"--answer {args.answer!r} is not an IPv4 address")
    sock = bind(args.listen, args.port)
    print(f"dnsd: serving on {args.listen}:{args.port}, A -> {args.answer}", file=sys.stderr,
          flush=True)
    try:
        serve(sock, args.answer)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
