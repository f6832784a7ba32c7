"""Small traffic tools run inside Mininet hosts (stdlib only).

    netcheck.py serve PORT [PORT ...] [--name N]   TCP servers: answer each line with "<N>:<port> <line>"
    netcheck.py connect HOST PORT [-t S] [--send TEXT] [--lines N]
                                             one connection, N lines (default 1: "hello", or
                                             TEXT then "line 2".. "line N"); exit 0 if each
                                             line is answered
    netcheck.py stream HOST PORT LOG         one long-lived connection, a line every 0.1 s;
                                             LOG gets "ok N" / "fail N reason" lines
    netcheck.py udpstream HOST PORT SECONDS RATE   send numbered datagrams at RATE per second
    netcheck.py udpsink PORT LOG             count numbered datagrams; LOG gets "received N max M"
    netcheck.py udpecho PORT                 answer each datagram with "echo <datagram>"
    netcheck.py udpask HOST PORT TEXT [-t S] one datagram; exit 0 if answered
    netcheck.py many HOST PORT N EXPECT      N connections one after another, a line each;
                                             prints "ok K bad B failed F" (an answer not
                                             starting with EXPECT is bad)
    netcheck.py whoami PORT                  TCP and UDP on PORT: answer each line (datagram)
                                             with "local=<its local address> peer=<address>"
"""
from __future__ import annotations

import socket
import socketserver
import sys
import threading
import time


def serve(ports: list[int], name: str) -> None:
    class Echo(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            port = self.server.server_address[1]
            for line in self.rfile:
                self.wfile.write(f"{name}:{port} ".encode() + line)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    servers = [Server(("0.0.0.0", p), Echo) for p in ports]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("serving", ports, flush=True)
    servers[0].serve_forever()


def connect(host: str, port: int, timeout: float, first: str = "hello", lines: int = 1) -> int:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            for n in range(1, lines + 1):
                s.sendall((first if n == 1 else f"line {n}").encode() + b"\n")
                answer = s.recv(200)
                if not answer:
                    break
    except OSError as exc:
        print(f"fail {exc}", flush=True)
        return 1
    print(answer.decode(errors="replace").strip(), flush=True)
    return 0 if answer else 1


def stream(host: str, port: int, log: str) -> None:
    with open(log, "a", buffering=1) as out:
        try:
            s = socket.create_connection((host, port), timeout=2)
        except OSError as exc:
            out.write(f"fail 0 {exc}\n")
            return
        s.settimeout(1.0)
        n = 0
        while True:
            n += 1
            try:
                s.sendall(f"{n}\n".encode())
                if not s.recv(200):
                    out.write(f"fail {n} closed\n")
                    return
                out.write(f"ok {n}\n")
            except OSError as exc:
                out.write(f"fail {n} {exc}\n")
            time.sleep(0.1)


def udpstream(host: str, port: int, seconds: float, rate: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    interval, n, start = 1.0 / rate, 0, time.monotonic()
    while time.monotonic() - start < seconds:
        n += 1
        s.sendto(f"{n}".encode().ljust(64, b"."), (host, port))
        time.sleep(max(0.0, start + n * interval - time.monotonic()))
    print(f"sent {n}", flush=True)


def udpsink(port: int, log: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    received, top = 0, 0
    s.settimeout(0.5)
    while True:
        try:
            data, _ = s.recvfrom(2048)
        except socket.timeout:
            pass
        else:
            received += 1
            top = max(top, int(data.split(b".")[0]))
        with open(log, "w") as out:
            out.write(f"received {received} max {top}\n")


def udpecho(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(b"echo " + data, peer)


def udpask(host: str, port: int, text: str, timeout: float) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.sendto(text.encode(), (host, port))
    try:
        answer, _ = s.recvfrom(2048)
    except OSError as exc:
        print(f"fail {exc}", flush=True)
        return 1
    print(answer.decode(errors="replace"), flush=True)
    return 0


def many(host: str, port: int, count: int, expect: str) -> int:
    ok = bad = failed = 0
    for n in range(count):
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(2)
                s.sendall(f"conn {n}\n".encode())
                answer = s.recv(200).decode(errors="replace")
        except OSError:
            failed += 1
            continue
        if answer.startswith(expect) and answer.rstrip().endswith(f"conn {n}"):
            ok += 1
        else:
            bad += 1
    print(f"ok {ok} bad {bad} failed {failed}", flush=True)
    return 0 if ok == count else 1


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def whoami(port: int) -> None:
    """What this host sees of each peer: its own local address and the peer's."""
    class Who(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            local, peer = self.connection.getsockname()[0], self.client_address[0]
            for line in self.rfile:
                self.wfile.write(f"local={local} peer={peer} ".encode() + line)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    tcp = Server(("0.0.0.0", port), Who)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    udp.bind(("0.0.0.0", port))
    while True:
        data, ancillary, _, peer = udp.recvmsg(2048, 64)
        local = next((socket.inet_ntoa(d[8:12]) for level, kind, d in ancillary
                      if level == socket.IPPROTO_IP and kind == IP_PKTINFO), "?")
        udp.sendto(f"local={local} peer={peer[0]} ".encode() + data, peer)


def main(argv: list[str]) -> int:
    cmd, args = argv[1], argv[2:]
    if cmd == "serve":
        name = args[args.index("--name") + 1] if "--name" in args else socket.gethostname()
        serve([int(p) for p in args if p.isdigit()], name)
    elif cmd == "many":
        return many(args[0], int(args[1]), int(args[2]), args[3])
    elif cmd == "whoami":
        whoami(int(args[0]))
    elif cmd == "connect":
        timeout = float(args[args.index("-t") + 1]) if "-t" in args else 1.0
        first = args[args.index("--send") + 1] if "--send" in args else "hello"
        lines = int(args[args.index("--lines") + 1]) if "--lines" in args else 1
        return connect(args[0], int(args[1]), timeout, first, lines)
    elif cmd == "stream":
        stream(args[0], int(args[1]), args[2])
    elif cmd == "udpstream":
        udpstream(args[0], int(args[1]), float(args[2]), float(args[3]))
    elif cmd == "udpsink":
        udpsink(int(args[0]), args[1])
    elif cmd == "udpecho":
        udpecho(int(args[0]))
    elif cmd == "udpask":
        timeout = float(args[args.index("-t") + 1]) if "-t" in args else 1.0
        return udpask(args[0], int(args[1]), args[2], timeout)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
