"""The client side of `shadows.py`, run inside a Mininet host (python3, stdlib only).

    shadow_traffic.py conns HOST PORT FIRST COUNT EXPECT [--workers K]
        COUNT TCP connections, each from its own source port FIRST, FIRST+1, ...
        (bound explicitly, so no two share a 4-tuple and the run is the same every
        time), K at a time: connect, one line, its answer (which must start with
        EXPECT), close.  Prints JSON {ok, bad, failed, seconds}.

    shadow_traffic.py block HOST PORT PAYLOAD [--interval S] [--timeout S] [--give-up S]
        One connection sends PAYLOAD (its sending instant is t0), then new connections
        are tried every S seconds (each given --timeout to be answered) until three in
        a row are refused (not answered: the block drops the SYN).  Prints JSON
        {t0, last_ok, first_refused, probes, answered} in seconds after t0 (wall
        clock t0 too, to set beside the hub's records).
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import time

REFUSED_IN_A_ROW = 3


def one(host: str, port: int, source_port: int | None, line: bytes, timeout: float) -> bytes:
    """One connection (from `source_port`, or any): the first answer to `line`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        if source_port is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", source_port))
        s.connect((host, port))
        s.sendall(line)
        return s.recv(200)
    finally:
        s.close()


def conns(host: str, port: int, first: int, count: int, expect: str, workers: int) -> dict:
    ports = iter(range(first, first + count))
    lock = threading.Lock()
    tally = {"ok": 0, "bad": 0, "failed": 0}

    def work() -> None:
        while True:
            with lock:
                sport = next(ports, None)
            if sport is None:
                return
            try:
                answer = one(host, port, sport, f"conn {sport}\n".encode(), 5.0).decode(
                    errors="replace")
                kind = "ok" if answer.startswith(expect) else "bad"
            except OSError:
                kind = "failed"
            with lock:
                tally[kind] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {**tally, "seconds": time.monotonic() - start}


def block(host: str, port: int, payload: str, interval: float, timeout: float,
          give_up: float) -> dict:
    s = socket.create_connection((host, port), timeout=2.0)
    try:
        wall0, t0 = time.time(), time.monotonic()
        s.sendall(payload.encode() + b"\n")
        s.recv(200)
    finally:
        s.close()
    last_ok = first_refused = None
    probes = answered = refused_run = 0
    while time.monotonic() - t0 < give_up:
        at = time.monotonic() - t0
        probes += 1
        try:
            ok = bool(one(host, port, None, b"probe\n", timeout))
        except OSError:
            ok = False
        if ok:
            answered += 1
            last_ok, first_refused, refused_run = at, None, 0
        else:
            if refused_run == 0:
                first_refused = at
            refused_run += 1
            if refused_run >= REFUSED_IN_A_ROW:
                break
        time.sleep(interval)
    if refused_run < REFUSED_IN_A_ROW:
        first_refused = None
    return {"t0": wall0, "last_ok": last_ok, "first_refused": first_refused,
            "probes": probes, "answered": answered}


def option(args: list[str], name: str, default: float) -> float:
    return float(args[args.index(name) + 1]) if name in args else default


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in ("conns", "block"):
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "conns":
        out = conns(args[0], int(args[1]), int(args[2]), int(args[3]), args[4],
                    int(option(args, "--workers", 4)))
    else:
        out = block(args[0], int(args[1]), args[2], option(args, "--interval", 0.005),
                    option(args, "--timeout", 0.3), option(args, "--give-up", 10.0))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
