"""Traffic tools of the shadow profile labs, run inside Mininet hosts (stdlib only).

    shadowtraffic.py fragile PORT [--name N] [--method M]
        a line server like `netcheck.py serve`, answering each line with "<N>:<port> <line>",
        built to crash on one malformed input: a request line that does not start with
        the method M (default "conn ", what `netcheck.py many` sends) ends the whole
        process at once (os._exit(3)), with no answer
    shadowtraffic.py scan HOST FIRST COUNT [-t S]
        a TCP connect to each of COUNT ports from FIRST, one after another; prints
        "open K closed C silent S"
    shadowtraffic.py send HOST PORT COUNT TEXT EXPECT [--size N]
        COUNT connections one after another, each sending one line, TEXT (with --size,
        filled up to N bytes with "abcdefgh..."), and reading its answer; prints
        "ok K bad B failed F" (an answer must be EXPECT, a space and the line)
"""
from __future__ import annotations

import os
import socket
import socketserver
import sys


def fragile(port: int, name: str, method: bytes) -> None:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                if not line.startswith(method):
                    os._exit(3)                     # the crash: no answer, no clean-up
                self.wfile.write(f"{name}:{port} ".encode() + line)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    server = Server(("0.0.0.0", port), Handler)
    print("serving", port, flush=True)
    server.serve_forever()


def scan(host: str, first: int, count: int, timeout: float) -> int:
    opened = closed = silent = 0
    for port in range(first, first + count):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened += 1
        except ConnectionRefusedError:
            closed += 1
        except OSError:
            silent += 1
    print(f"open {opened} closed {closed} silent {silent}", flush=True)
    return 0


def send(host: str, port: int, count: int, text: str, expect: str, size: int) -> int:
    line = text.encode()
    line += (b" " + b"abcdefgh" * (size // 8 + 1))[:max(0, size - len(line))]
    ok = bad = failed = 0
    for _ in range(count):
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(5)
                s.sendall(line + b"\n")
                answer = s.makefile("rb").readline()
        except OSError:
            failed += 1
            continue
        ok, bad = (ok + 1, bad) if answer == f"{expect} ".encode() + line + b"\n" \
            else (ok, bad + 1)
    print(f"ok {ok} bad {bad} failed {failed}", flush=True)
    return 0 if ok == count else 1


def _option(args: list[str], flag: str, default: str) -> str:
    return args[args.index(flag) + 1] if flag in args else default


def main(argv: list[str]) -> int:
    cmd, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    if cmd == "fragile":
        fragile(int(args[0]), _option(args, "--name", socket.gethostname()),
                _option(args, "--method", "conn ").encode())
    elif cmd == "scan":
        return scan(args[0], int(args[1]), int(args[2]), float(_option(args, "-t", "0.5")))
    elif cmd == "send":
        return send(args[0], int(args[1]), int(args[2]), args[3], args[4],
                    int(_option(args, "--size", "0")))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
