"""Hold one TCP connection to each of many servers, a line every 0.1 s on each (stdlib only).

    python3 shard_hold.py TARGETS PORT STATUS [--interval 0.1] [--timeout 1.0]
                          [--connect-within 30]

Run on the benchmark lab's `ext` by `benchmarks/shard_lab.py`.  TARGETS has one
"NAME ADDRESS" per line; each gets one connection to ADDRESS:PORT (a
`tests/lab/netcheck.py whoami` server, which answers every line with
"local=<its address> peer=<ours> <line>").  Each connection sends its next
line once the previous one was answered and `--interval` has passed.  One
process, one `selectors` loop, no threads: gentler on a 2-core machine than
one process per connection.

Connections that fail to open are tried again for `--connect-within`
seconds; from then on a connection that is reset or closed is dead and stays
dead (it is counted, never reopened).  A line not answered within
`--timeout` is counted late once (the connection keeps waiting for it).
STATUS is rewritten (atomically) every 0.5 s and at SIGTERM: JSON with each
connection's counters, the local address the server reported first and last,
the longest round trip and the longest gap between two answers.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

WRITE_EVERY = 0.5


@dataclass
class Conn:
    name: str
    target: str
    state: str = "connecting"       # open, reset, closed, failed
    error: str = ""
    sent: int = 0
    answered: int = 0
    late: int = 0
    max_rtt: float = 0.0
    max_gap: float = 0.0
    local_first: str = ""
    local_last: str = ""
    sent_at: float | None = field(default=None, repr=False)     # awaiting an answer since
    late_counted: bool = field(default=False, repr=False)
    last_answer: float | None = field(default=None, repr=False)
    buffer: bytes = field(default=b"", repr=False)
    sock: socket.socket | None = field(default=None, repr=False)


PUBLIC = ("name", "target", "state", "error", "sent", "answered", "late", "max_rtt", "max_gap",
          "local_first", "local_last")


def public(c: Conn) -> dict:
    return {k: getattr(c, k) for k in PUBLIC}


class Holder:
    def __init__(self, targets: list[tuple[str, str]], port: int, status: str,
                 interval: float, timeout: float, connect_within: float) -> None:
        self.conns = [Conn(name, ip) for name, ip in targets]
        self.port, self.status = port, status
        self.interval, self.timeout = interval, timeout
        self.connect_within = connect_within
        self.sel = selectors.DefaultSelector()
        self.started = time.time()
        self.stopping = False

    def connect_all(self, within: float) -> None:
        """Connect every target, trying the failed ones again for `within` seconds (the
        lab's last routes may still be on their way); then measuring starts."""
        deadline = time.monotonic() + within
        while True:
            for c in self.conns:
                if c.state in ("connecting", "failed"):
                    self.connect(c)
            self.write_status()
            if self.stopping or time.monotonic() > deadline or \
                    all(c.state == "open" for c in self.conns):
                return
            time.sleep(0.5)

    def connect(self, c: Conn) -> None:
        try:
            c.sock = socket.create_connection((c.target, self.port), timeout=2)
        except OSError as exc:
            c.sock, c.state, c.error = None, "failed", str(exc)
            return
        c.sock.setblocking(False)
        c.state, c.error = "open", ""
        self.sel.register(c.sock, selectors.EVENT_READ, c)

    def dead(self, c: Conn, state: str, error: str) -> None:
        c.state, c.error = state, error
        if c.sock is not None:
            self.sel.unregister(c.sock)
            c.sock.close()
            c.sock = None

    def send(self, c: Conn, now: float) -> None:
        try:
            c.sock.send(f"{c.sent + 1}\n".encode())
        except OSError as exc:
            return self.dead(c, "reset", f"send: {exc}")
        c.sent += 1
        c.sent_at, c.late_counted = now, False

    def receive(self, c: Conn, now: float) -> None:
        try:
            data = c.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            return self.dead(c, "reset", f"recv: {exc}")
        if not data:
            return self.dead(c, "closed", "closed by the peer")
        c.buffer += data
        while b"\n" in c.buffer:
            line, c.buffer = c.buffer.split(b"\n", 1)
            fields = dict(f.split("=", 1) for f in line.decode(errors="replace").split()
                          if "=" in f)
            c.local_last = fields.get("local", "?")
            c.local_first = c.local_first or c.local_last
            c.answered += 1
            if c.sent_at is not None:
                c.max_rtt = max(c.max_rtt, now - c.sent_at)
            if c.last_answer is not None:
                c.max_gap = max(c.max_gap, now - c.last_answer)
            c.last_answer, c.sent_at = now, None

    def write_status(self) -> None:
        body = {"started": self.started, "at": time.time(), "port": self.port,
                "interval": self.interval, "timeout": self.timeout,
                "connections": [public(c) for c in self.conns]}
        tmp = self.status + ".tmp"
        with open(tmp, "w") as out:
            json.dump(body, out)
        os.replace(tmp, self.status)

    def run(self) -> None:
        self.connect_all(self.connect_within)
        next_write = 0.0
        while not self.stopping:
            now = time.monotonic()
            for c in self.conns:
                if c.sock is None:
                    continue
                if c.sent_at is None:
                    if c.last_answer is None or now >= c.last_answer + self.interval:
                        self.send(c, now)
                elif not c.late_counted and now - c.sent_at > self.timeout:
                    c.late += 1
                    c.late_counted = True
            for key, _ in self.sel.select(timeout=0.01):
                self.receive(key.data, time.monotonic())
            if now >= next_write:
                self.write_status()
                next_write = now + WRITE_EVERY
        self.write_status()


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    targets_file, port, status = argv[1], int(argv[2]), argv[3]
    opts = dict(zip(argv[4::2], argv[5::2]))
    with open(targets_file) as f:
        targets = [tuple(line.split()[:2]) for line in f if line.strip()]
    holder = Holder(targets, port, status, float(opts.get("--interval", 0.1)),
                    float(opts.get("--timeout", 1.0)), float(opts.get("--connect-within", 30)))

    def stop(signum, frame):
        holder.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    holder.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
