"""What the persona benchmarks share: request bodies, a timed REST client, percentiles.

Used by ``benchmarks/personas.py`` (the lab run and ``--create-only``).
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import time
from datetime import datetime, timezone
from ipaddress import IPv4Network
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
MEMBER_RANGE = "10.100.0.0/24"
FILL_POOL = IPv4Network("10.128.0.0/9")
CREATE_GOAL_MS = 50.0      # persona create p99 at 1,000 personas (issue 9)
pc = time.perf_counter


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def ms(values: list[float]) -> str:
    """p50 / p99 / max of durations in seconds, as milliseconds."""
    if not values:
        return "-"
    return (f"p50 {pct(values, 50) * 1000:.1f} ms, p99 {pct(values, 99) * 1000:.1f} ms, "
            f"max {max(values) * 1000:.1f} ms")


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def fmt_bps(bps: float | None) -> str:
    return "failed" if bps is None else f"{bps / 1e9:.2f} Gbit/s"


def member_body(expires: float) -> dict:
    return {"name": "bench-member", "ip_range": MEMBER_RANGE, "protocols": ["tcp", "udp"],
            "security_policies": [{"protocol": "tcp", "port": 5201, "action": "allow"}],
            "expiration": rfc3339(expires)}


def filler_body(i: int, expires: float) -> dict:
    """The issue's example request, on the i-th /24 of 10.128.0.0/9."""
    net = IPv4Network((int(FILL_POOL.network_address) + 256 * i, 24))
    return {"name": f"bench-{i:05d}", "ip_range": str(net), "protocols": ["tcp", "udp"],
            "qos": {"bandwidth": "100Mbps", "latency": "50ms"},
            "security_policies": [{"protocol": "tcp", "port": 80, "action": "allow"},
                                  {"protocol": "tcp", "port": 22, "action": "deny"}],
            "expiration": rfc3339(expires)}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Api:
    """REST calls on one keep-alive connection, each timed (seconds).

    uvicorn closes a connection idle for 5 s: one idle for 2 s is replaced
    before it is used, so that a write is never sent on a closing connection."""

    IDLE = 2.0

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self.last = 0.0

    def call(self, method: str, path: str, body=None, expect: int | None = None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            if self.conn is not None and pc() - self.last > self.IDLE:
                self.close()
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            t0 = pc()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt or method != "GET":   # never repeat a write
                    raise
                continue
            seconds = pc() - t0
            self.last = pc()
            out = json.loads(raw) if raw and resp.getheader("content-type", "").startswith(
                "application/json") else raw
            if expect is not None and resp.status != expect:
                raise RuntimeError(f"{method} {path}: {resp.status} {out}")
            return resp.status, out, seconds
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
