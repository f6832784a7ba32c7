"""`shadows.py`'s lab: two shadowed appliances on a real hub, each with a real agent.

A hub lab (tests/lab/conftest.py `start_lab`, prefix "bw", one segment with two
hosts and two spares) under the real hub-controller, restarted at `--log-level`
(the harness starts it at debug, where the reconciler logs every flow).  As in
tests/lab/test_shadows.py:

  web  production h1_1 (netcheck `serve 80` and `iperf3 -s`), service tcp/80 and
       tcp/5201, no profile; its shadow runs netcheck `serve 80 5201` on slot s1.
  ids  production h1_2 (netcheck `serve 80`), service tcp/80 at 100%,
       IDS_Signature_Scan with one signature (EVIL-PAYLOAD, critical) and
       remediation block; its shadow runs on slot s2.

Each slot's host (sp1, sp2) runs the real `hub-shadow-agent` (tests/lab/shadowlab.py
`add_slot`, as the lab tests do).  `ext` is the client.
The flows the mirror compiled are read back with ovs-ofctl on the production
switch (a1), by cookie (controller/features/shadow/mirror_net.py), to check that
a mode is in force and to count what the switch sampled and copied.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

from benchmarks.labtools import TmpFactory, ofctl
from benchmarks.persona_common import REPO, Api
from tests.lab.shadowlab import NETCHECK

LAB_PREFIX = "bw"
TRAFFIC = f"python3 {REPO}/benchmarks/shadow_traffic.py"
WEB, IDS = "web", "ids"
IPERF_PORT, SERVICE_PORT = 5201, 80
SIGNATURE = "EVIL-PAYLOAD"
BLOCK_TTL = 300              # lifted over REST after each trial
SLOW = 2.0                   # seconds: a REST answer slower than this is reported


class Mode(NamedTuple):
    """How `web` is shadowed: `percentage` None means no mirror at all (disabled)."""
    name: str
    percentage: float | None


NO_MIRROR = Mode("no mirror", None)


def mode_of(text: str) -> Mode:
    return NO_MIRROR if text == "none" else Mode(f"{float(text):g}%", float(text))


@dataclass(frozen=True)
class Counters:
    """What the production switch did for web's instance, from its flows' counters."""
    sampled: int                 # connections decided sampled (decide tables, one packet each)
    copied_packets: int
    copied_bytes: int

    def __sub__(self, other: "Counters") -> "Counters":
        return Counters(self.sampled - other.sampled, self.copied_packets - other.copied_packets,
                        self.copied_bytes - other.copied_bytes)


class ShadowLab:
    def __init__(self, tmp: Path, log_level: str) -> None:
        from mininet.log import setLogLevel
        setLogLevel("warning")
        self.tmp, self.log_level = tmp, log_level
        self.lab = None
        self.rest: Api | None = None
        self.slow: list[str] = []                 # REST calls that took more than SLOW

    # ------------------------------------------------------------ setup
    def start(self) -> None:
        from tests.lab.conftest import start_lab
        self.lab = start_lab(TmpFactory(self.tmp), LAB_PREFIX, segments=1, hosts=2, spares=2)
        ctl = self.lab.controller
        if self.log_level != "debug":
            config = yaml.safe_load(ctl.config.read_text())
            config["log_level"] = self.log_level
            ctl.stop()
            ctl.config.write_text(yaml.safe_dump(config))
            ctl.start()
            ctl.wait_in_sync(self.lab.dpids)
        self.lab.net.pingAll(timeout=2)

    def host(self, name: str):
        return self.lab.host(name)

    @property
    def switch(self) -> str:
        """The production switch (both appliances' hosts hang off a1)."""
        return self.lab.switch("a1").name

    def api(self, method: str, path: str, body=None, expect: int | None = None):
        """One REST call (keep-alive, 120 s to answer); the slow ones are written down."""
        if self.rest is None:
            self.rest = Api(self.lab.controller.api_port)
        status, data, seconds = self.rest.call(method, path, body)
        if seconds > SLOW:
            self.slow.append(f"{method} {path} answered in {seconds:.1f} s")
        if expect is not None and status != expect:
            raise RuntimeError(f"{method} {path}: {status} {data}")
        return data

    def setup(self) -> None:
        from tests.lab.harness import wait_for
        from tests.lab.shadowlab import add_slot, interface_ids
        prod, ids = self.host("h1_1"), self.host("h1_2")
        self.lab.bg(prod, f"{NETCHECK} serve {SERVICE_PORT} --name prod")
        self.lab.bg(prod, f"iperf3 -s -p {IPERF_PORT}")
        self.lab.bg(ids, f"{NETCHECK} serve {SERVICE_PORT} --name ids")
        wait_for("production serving", lambda: all(
            f":{p}" in prod.cmd("ss -ltn") for p in (SERVICE_PORT, IPERF_PORT)), 10)
        iid = interface_ids(self.lab, ("h1_1", "h1_2", "sp1", "sp2"))
        for n in (1, 2):
            add_slot(self.lab, self.host(f"sp{n}"), f"s{n}", iid[f"sp{n}"])
        self.api("POST", "/v1/appliances", {
            "name": WEB, "interfaces": [iid["h1_1"]],
            "service": [{"protocol": "tcp", "port": p} for p in (SERVICE_PORT, IPERF_PORT)],
            "appliance_image": f"{NETCHECK} serve {SERVICE_PORT} {IPERF_PORT} --name shadow",
            "shadowing": {"shadow_instance_count": 1, "shadow_traffic_percentage": 0.0,
                          "shadow_analysis_profiles": []}}, expect=201)
        self.wait_instance(WEB)
        self.api("POST", "/v1/appliances", {
            "name": IDS, "interfaces": [iid["h1_2"]],
            "service": [{"protocol": "tcp", "port": SERVICE_PORT}],
            "appliance_image": f"{NETCHECK} serve {SERVICE_PORT} --name ids-shadow",
            "shadowing": {"shadow_instance_count": 1, "shadow_traffic_percentage": 100.0,
                          "shadow_analysis_profiles": ["IDS_Signature_Scan"]},
            "profiles": {"IDS_Signature_Scan": {"signatures": [
                {"id": "evil", "content": SIGNATURE, "severity": "critical"}]}},
            "remediation": {"mode": "block", "ttl": f"{BLOCK_TTL}s",
                            "min_severity": "high"}}, expect=201)
        self.wait_instance(IDS)
        self.lab.controller.wait_in_sync(self.lab.dpids)

    def wait_instance(self, app: str, timeout: float = 30) -> dict:
        """The appliance's one ready instance (`{id, slot_id, state, ...}`)."""
        from tests.lab.harness import wait_for

        def ready():
            live = [i for i in self.api("GET", f"/v1/appliances/{app}", expect=200)["instances"]
                    if i["state"] in ("launching", "ready", "stopping")]
            return live[0] if len(live) == 1 and live[0]["state"] == "ready" else None
        return wait_for(f"{app}'s shadow instance ready", ready, timeout, 0.1)

    def slot_host(self, app: str):
        """The host of the slot the appliance's instance runs on (slot sN is host spN)."""
        return self.host("sp" + self.wait_instance(app)["slot_id"][1:])

    # ------------------------------------------------------------ modes
    def set_mode(self, mode: Mode) -> None:
        """web shadowed as `mode`, and its flows on the switch as that mode compiles them."""
        from tests.lab.harness import wait_for
        enabled = mode.percentage is not None
        shadowing = {"shadow_enabled": enabled}
        if enabled:
            shadowing["shadow_traffic_percentage"] = mode.percentage
        self.api("PATCH", f"/v1/appliances/{WEB}", {"shadowing": shadowing}, expect=200)
        if enabled:
            slot = self.wait_instance(WEB)["slot_id"]
            want = 2 * len(_below(round(mode.percentage * 10)))    # both hooks' decide tables
            wait_for(f"web's flows at {mode.name}", lambda: self.in_range_flows(slot) == want
                     and self.appliance_flows() > 0, 30, 0.1)
        else:
            wait_for("web without a mirror flow", lambda: self.appliance_flows() == 0 and not [
                i for i in self.api("GET", f"/v1/appliances/{WEB}", expect=200)["instances"]
                if i["state"] in ("launching", "ready", "stopping")], 30, 0.1)
        self.lab.controller.wait_in_sync(self.lab.dpids)

    # ------------------------------------------------------------ flows
    def _flows(self, cookie: int) -> list[str]:
        return [line for line in ofctl("dump-flows", self.switch,
                                       f"cookie={cookie:#x}/-1").splitlines()
                if "cookie=" in line]

    def appliance_flows(self) -> int:
        from controller.features.shadow.mirror_net import appliance_cookie
        return len(self._flows(appliance_cookie(WEB)))

    def in_range_flows(self, slot: str) -> int:
        from controller.features.shadow.mirror import IN_RANGE
        from controller.features.shadow.mirror_net import instance_cookie
        return sum(f"priority={IN_RANGE}," in line and _table(line) in _decide_tables()
                   for line in self._flows(instance_cookie(WEB, slot)))

    def counters(self) -> Counters:
        """web's instance: connections sampled, and what was copied to it, so far."""
        from controller.features.shadow.mirror import COPY, IN_RANGE
        from controller.features.shadow.mirror_net import instance_cookie
        slot = self.wait_instance(WEB)["slot_id"]
        sampled = packets = nbytes = 0
        for line in self._flows(instance_cookie(WEB, slot)):
            n, b = _count(line, "n_packets"), _count(line, "n_bytes")
            if f"priority={IN_RANGE}," in line and _table(line) in _decide_tables():
                sampled += n
                packets, nbytes = packets + n, nbytes + b
            elif f"priority={COPY}," in line:
                packets, nbytes = packets + n, nbytes + b
        return Counters(sampled, packets, nbytes)

    def switch_packets(self) -> int:
        """Packets every port of the lab's switches received so far: the datapath's work."""
        return sum(int(n) for sw in self.lab.net.switches
                   for n in re.findall(r"port +\d+: rx pkts=(\d+)", ofctl("dump-ports", sw.name)))

    def guard_drops(self) -> int:
        """Packets the shadows sent that their ports' guards dropped (their answers), so far."""
        from tests.lab.shadowlab import guard_drops
        return guard_drops(self.lab)

    # ------------------------------------------------------------ teardown
    def stop(self) -> None:
        """stop_lab: the background processes by PID, Mininet, the controller, scripts/clean bw."""
        if self.rest is not None:
            self.rest.close()
        if self.lab is not None:
            from tests.lab.conftest import stop_lab
            stop_lab(self.lab)
            self.lab = None
        else:
            subprocess.run([str(REPO / "scripts" / "clean"), LAB_PREFIX], capture_output=True)
        for log in Path("/tmp").glob(f"{LAB_PREFIX}-agent-*.log"):   # add_slot's agent logs
            log.unlink(missing_ok=True)


def _below(permille: int):
    from controller.features.shadow.mirror_net import below
    return below(permille)


def _decide_tables() -> tuple[int, int]:
    from controller.pipeline import tables
    return tables.SHADOW_FROM_DECIDE.id, tables.SHADOW_TO_DECIDE.id


def _table(line: str) -> int:
    m = re.search(r"table=(\d+)", line)
    return int(m.group(1)) if m else 0


def _count(line: str, field: str) -> int:
    m = re.search(rf"{field}=(\d+)", line)
    return int(m.group(1)) if m else 0
