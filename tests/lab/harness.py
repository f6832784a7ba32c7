"""The lab harness: a real hub-controller process and a Mininet hub, with deadlines."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[2]
HUB_CONTROLLER = ROOT / ".venv" / "bin" / "hub-controller"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], object], timeout: float = 20.0, interval: float = 0.1):
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # not ready yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Controller:
    """One hub-controller process (restartable on the same store and ports)."""

    def __init__(self, workdir: Path, subnets: list[dict], settle: float = 1.0) -> None:
        self.workdir = workdir
        self.of_port = free_port()
        self.api_port = free_port()
        self.db = workdir / "hub.db"
        self.config = workdir / "hub.yaml"
        self.config.write_text(yaml.safe_dump({"subnets": subnets, "settle_seconds": settle,
                                                  "log_level": "debug",
                                                  # the lab topology's gateway bridge (gw1)
                                                  "personas": {"gateway": "0000000000000b01"}}))
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"controller-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [str(HUB_CONTROLLER), "--config", str(self.config), "--of-port", str(self.of_port),
             "--api", f"127.0.0.1:{self.api_port}", "--db", str(self.db)],
            stdout=log, stderr=subprocess.STDOUT)
        wait_for("the hub API", lambda: self.get("/v1/health"))

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:]
                         for p in sorted(self.workdir.glob("controller-*.log")))

    def get(self, path: str):
        with urllib.request.urlopen(self.api + path, timeout=5) as resp:
            body = resp.read().decode()
            if resp.headers.get("content-type", "").startswith("application/json"):
                return json.loads(body)
            return body

    def request(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        """(status, decoded JSON body) of one REST call; 4xx/5xx are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        return status, json.loads(raw) if raw else None

    def datapaths(self) -> dict[str, dict]:
        return {d["id"]: d for d in self.get("/v1/datapaths")}

    def wait_in_sync(self, dpids: list[str], timeout: float = 30.0) -> dict[str, dict]:
        def ready():
            dps = self.datapaths()
            ok = all(d in dps and dps[d]["connected"] and dps[d]["flows"]["in_sync"] for d in dpids)
            return dps if ok else None
        return wait_for(f"datapaths {dpids} connected and in sync", ready, timeout)

    def events(self, kind: str | None = None, after: int = 0) -> list[dict]:
        q = f"/v1/events?after={after}&limit=1000" + (f"&kind={kind}" if kind else "")
        return self.get(q)["items"]

    def packet_ins(self) -> float:
        total = 0.0
        for line in self.get("/metrics").splitlines():
            if line.startswith("hub_packet_in_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def flow_durations(bridge: str) -> dict[str, float]:
    """{flow text without counters: duration seconds} of the hub's flows on a bridge."""
    out = {}
    for line in sh("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", bridge).splitlines():
        line = line.strip()
        if not line.startswith("cookie=0xb5"):
            continue
        fields = [f.strip() for f in line.split(",")]
        duration = next(float(f.split("=")[1].rstrip("s")) for f in fields if f.startswith("duration="))
        key = ",".join(f for f in fields if not f.startswith(("duration=", "n_packets=", "n_bytes=",
                                                               "idle_age=", "hard_age=")))
        out[key] = duration
    return out


def ping_loss(output: str) -> float:
    for line in output.splitlines():
        if "packet loss" in line:
            return float(line.split("%")[0].split()[-1])
    raise AssertionError(f"no ping summary in: {output!r}")


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
