"""How soon after its deadline an expiry takes effect: personas and temporary personalities.

The lab tests check that expiries are correct by the controller's own timestamps
(never before the deadline, within a generous bound after it); how *soon* is a
goal, measured here against the goals the tests used to assert on the wall clock:

  persona       the expiry event in the journal ("expired: torn down"), its
                timestamp against the record's `expires_at`; `start` is that
                time less the teardown's own duration (the event's `ms`), i.e.
                when the hub noticed the deadline.  Goal: torn down within
                1.0 s of the deadline.
  personality   a temporary personality (`expires_after`) reverting to the
                interface's default: the expiry operation's `at` (created) and
                `finished_at` against the interface's `expires_at`.  Goal:
                reverted within 2.0 s of the deadline.

One netdev bridge `bx<pid>` (datapath id 0xb5e0000000 + pid, the persona
gateway; one internal port, administratively down, with a host record seeded in
the store so that its interface exists) under a real hub-controller
(tests/lab/harness.py Controller, log level info).  No Mininet, no traffic: the
figures are the hub's scheduling and reconciling, not the data plane.  Each
expiry is measured `--runs` times, one after the other; the report gives the
median and the largest latency and their ratio to the goal (below 1.00x meets
it).

Measurements, not tests: nothing passes or fails.  Needs root and Open vSwitch
(scripts/ovs start is called).

    sudo .venv/bin/python benchmarks/expiry.py [--runs 5] [--lead 2]

It removes what it creates (the bridge, the controller by PID, its temporary
directory), also on error or Ctrl-C.  See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.labtools import sh  # noqa: E402
from controller.core.topology import Host, dpid_str  # noqa: E402
from controller.store import open_store  # noqa: E402
from tests.lab.harness import Controller, wait_for  # noqa: E402

PERSONA_GOAL = 1.0          # seconds after the deadline, torn down
PERSONALITY_GOAL = 2.0      # seconds after the deadline, reverted
SUBNET = {"id": "bx", "cidr": "10.0.1.0/24", "gateway": "10.0.1.254"}
HOST_MAC, HOST_IP, HOST_PORT = "02:00:0a:00:01:0a", "10.0.1.10", 1


class Latency(NamedTuple):
    """One expiry: seconds from the deadline to when the hub started, and finished."""
    start: float
    done: float


# ---------------------------------------------------------------- the rig
class Rig:
    """A bridge and a hub-controller for it; `close` removes both."""

    def __init__(self, workdir: Path) -> None:
        self.bridge = f"bx{os.getpid() % 100000}"
        self.dpid = 0xB5E0000000 + os.getpid()
        self.ctl = Controller(workdir, [SUBNET])
        self.ctl.config.write_text(yaml.safe_dump({
            "subnets": [SUBNET], "settle_seconds": 0.2, "log_level": "info",
            "personas": {"gateway": dpid_str(self.dpid)}}))

    def open(self) -> None:
        sh(str(REPO / "scripts" / "ovs"), "start")
        sh("ovs-vsctl", "--if-exists", "del-br", self.bridge)
        port = f"{self.bridge}p{HOST_PORT}"
        sh("ovs-vsctl", "add-br", self.bridge, "--", "set", "bridge", self.bridge,
           "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13,OpenFlow14",
           f"other-config:datapath-id={self.dpid:016x}", "other-config:disable-in-band=true",
           "--", "add-port", self.bridge, port,
           "--", "set", "interface", port, "type=internal", f"ofport_request={HOST_PORT}")
        store = open_store(str(self.ctl.db))
        try:
            with store.transaction():
                store.put("subnet", SUBNET["id"], {"cidr": SUBNET["cidr"],
                                                   "gateway": SUBNET["gateway"]})
                store.put("host", HOST_MAC,
                          Host(HOST_MAC, (HOST_IP,), self.dpid, HOST_PORT, time.time()).to_body())
        finally:
            store.close()
        self.ctl.start()
        sh("ovs-vsctl", "set-controller", self.bridge, f"tcp:127.0.0.1:{self.ctl.of_port}",
           "--", "set", "controller", self.bridge, "max_backoff=1000",
           "connection_mode=out-of-band")
        self.ctl.wait_in_sync([dpid_str(self.dpid)])

    def close(self) -> None:
        try:
            self.ctl.stop()
        finally:
            sh("ovs-vsctl", "--if-exists", "del-br", self.bridge, check=False)

    def api(self, method: str, path: str, body: object = None, expect: int = 200):
        status, data = self.ctl.request(method, path, body)
        if status != expect:
            raise RuntimeError(f"{method} {path}: {status} {data}\n{self.ctl.log()}")
        return data


# ------------------------------------------------------------ measurements
def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def persona_expiry(rig: Rig, run: int, lead: int) -> Latency:
    """A persona (the issue's example, no members) expiring `lead` s after its creation."""
    body = {"name": f"bx-{run}", "ip_range": f"10.200.{run}.0/24", "protocols": ["tcp", "udp"],
            "qos": {"bandwidth": "100Mbps", "latency": "50ms"},
            "security_policies": [{"protocol": "tcp", "port": 80, "action": "allow"}],
            "expiration": rfc3339(time.time() + lead)}
    p = rig.api("POST", "/v1/personas", body, 201)
    wait_for(f"persona {p['id']} expired",
             lambda: rig.api("GET", f"/v1/personas/{p['id']}")["state"] == "expired", lead + 30)
    event = wait_for("its journal entry", lambda: next(
        (e for e in rig.ctl.events("persona") if e["subject"] == p["id"]
         and "torn down" in e["message"]), None), 10)
    done = event["ts"] - p["expires_at"]
    return Latency(done - event["data"].get("ms", 0) / 1000, done)


def interface_id(rig: Rig) -> str:
    return wait_for("the seeded interface", lambda: next(
        (i["id"] for i in rig.api("GET", "/v1/interfaces") if i["mac"] == HOST_MAC), None), 10)


def switch(rig: Rig, iid: str, personality: str) -> None:
    op = rig.api("POST", f"/v1/interfaces/{iid}/switch",
                 {"personality_id": personality, "drain": {"max_seconds": 0}}, 202)
    done = wait_for(f"switch to {personality}", lambda: (lambda o: o if o["state"] in (
        "succeeded", "rolled_back", "failed") else None)(
        rig.api("GET", f"/v1/operations/{op['id']}")), 30)
    if done["state"] != "succeeded":
        raise RuntimeError(f"switch to {personality}: {done}")


def personality_expiry(rig: Rig, iid: str, lead: int) -> Latency:
    """The interface switched to bx-temp (expires_after `lead`), until it is back on bx-base."""
    switch(rig, iid, "bx-temp")
    deadline = rig.api("GET", f"/v1/interfaces/{iid}")["expires_at"]
    wait_for("reverted", lambda: rig.api("GET", f"/v1/interfaces/{iid}")["personality_id"]
             == "bx-base", lead + 30)
    back = wait_for("the expiry finished", lambda: (lambda h: h if h["kind"] == "expiry"
                                                    and h["finished_at"] else None)(
        rig.api("GET", f"/v1/interfaces/{iid}/history")[-1]), 10)
    return Latency(back["at"] - deadline, back["finished_at"] - deadline)


# ------------------------------------------------------------------ report
def report(what: str, runs: list[Latency], goal: float) -> None:
    print(f"{what}, {len(runs)} runs (seconds after the deadline):")
    for name in ("start", "done"):
        values = [getattr(r, name) for r in runs]
        line = (f"  {name:5}  median {1000 * statistics.median(values):7.1f} ms"
                f"  max {1000 * max(values):7.1f} ms"
                f"  runs {', '.join(f'{1000 * v:.0f}' for v in values)}")
        if name == "done":
            line += (f"\n         goal {1000 * goal:.0f} ms: median "
                     f"{statistics.median(values) / goal:.2f}x, max {max(values) / goal:.2f}x")
        print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="expiries measured of each kind")
    ap.add_argument("--lead", type=int, default=2,
                    help="whole seconds from creation (or switch) to the deadline")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("expiry: needs root (Open vSwitch)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="bx-expiry-"))
    rig = Rig(workdir)
    try:
        rig.open()
        personas = [persona_expiry(rig, run, args.lead) for run in range(args.runs)]
        iid = interface_id(rig)
        rig.api("POST", "/v1/personalities", {"id": "bx-base", "name": "bx-base",
                                              "ip_addresses": [HOST_IP], "default_action": "allow"},
                201)
        rig.api("POST", "/v1/personalities", {"id": "bx-temp", "name": "bx-temp",
                                              "ip_addresses": [HOST_IP], "default_action": "allow",
                                              "expires_after": args.lead}, 201)
        switch(rig, iid, "bx-base")
        personalities = [personality_expiry(rig, iid, args.lead) for _ in range(args.runs)]
    finally:
        rig.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report("persona expiry: deadline -> torn down (journal)", personas, PERSONA_GOAL)
    report("personality expiry: deadline -> reverted (operation)", personalities,
           PERSONALITY_GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
