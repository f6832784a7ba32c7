"""The shadow part of ``scripts/lab --demo``: h1_1's service gets a shadow on sp1.

sp1 is set aside as a shadow slot and runs hub-shadow-agent; the appliance
manifest mirrors every connection to h1_1's port 80 to a shadow instance that
runs IDS_Signature_Scan with remediation ``block``.  ext's ordinary request
is answered by production; a request carrying the signature becomes a
finding and a block of ext toward h1_1, which is lifted again.  Afterwards the
appliance and the slot are deleted.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import yaml

from topologies.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"
AGENT = Path(sys.executable).with_name("hub-shadow-agent")
SIGNATURE = "EVIL-PAYLOAD"


def _manifest(production: str) -> dict:
    return {"name": "web", "interfaces": [production],
            "service": [{"protocol": "tcp", "port": 80}],
            "appliance_image": f"{NETCHECK} serve 80 --name shadow",
            "shadowing": {"shadow_instance_count": 1, "shadow_traffic_percentage": 100.0,
                          "shadow_analysis_profiles": ["IDS_Signature_Scan"]},
            "profiles": {"IDS_Signature_Scan": {"signatures": [
                {"id": "evil", "content": SIGNATURE, "severity": "critical"}]}},
            "remediation": {"mode": "block", "ttl": "5m", "min_severity": "high"}}


def shadow_demo(net, api: str, hubctl, step) -> bool:
    prod, ext, spare = net.get("h1_1"), net.get("ext"), net.get("sp1")
    jget = lambda *args: json.loads(hubctl(api, "-o", "json", *args, show=False))  # noqa: E731
    interfaces = jget("interface", "list")
    iid = {h.name: next(i["id"] for i in interfaces if i["mac"] == h.MAC()) for h in (prod, spare)}
    pids: list[tuple[object, str]] = []

    def background(host, command: str) -> None:
        host.cmd(f"{command} >/dev/null 2>>/tmp/hub-lab-shadow.log &")
        pids.append((host, host.cmd("echo $!").strip()))

    def answered(send: str = "") -> bool:
        extra = f" --send {send}" if send else ""
        return "prod:80" in ext.cmd(f"{NETCHECK} connect {prod.IP()} 80 -t 2{extra}")

    step("shadows: sp1 set aside as a shadow slot, running hub-shadow-agent")
    slot = jget("shadow", "slot-add", iid["sp1"], "--id", "demo-slot")
    channel = slot["channel"]
    background(spare, f"{AGENT} --server {channel['server']} --port {channel['port']} "
                      f"--slot {slot['id']} --key {slot['key']} --interface {spare.defaultIntf()}")
    background(prod, f"{NETCHECK} serve 80 --name prod")
    manifest = Path(tempfile.mkdtemp(prefix="hub-lab-")) / "appliance-web.yaml"
    manifest.write_text(yaml.safe_dump(_manifest(iid["h1_1"]), sort_keys=False))
    ok = False
    try:
        step("shadows: an appliance manifest for h1_1:80, every connection mirrored")
        hubctl(api, "appliance", "create", "-f", str(manifest))
        wait_until("the shadow instance ready", lambda: [i["state"] for i in jget(
            "appliance", "get", "web")["instances"]] == ["ready"])
        wait_until("production answering", answered, 10)
        hubctl(api, "appliance", "get", "web")
        step(f"shadows: ext sends {SIGNATURE}; the shadow finds it and the hub blocks ext")
        answered(SIGNATURE)
        wait_until("a finding", lambda: jget("shadow", "findings", "web"), 10)
        hubctl(api, "shadow", "findings", "web")
        (block,) = wait_until("a block", lambda: jget("remediation", "list"), 10)
        hubctl(api, "remediation", "list")
        blocked = wait_until("ext refused", lambda: not answered(), 10)
        print(f"ext toward h1_1 while blocked: {'refused' if blocked else 'answered'}")
        hubctl(api, "remediation", "lift", block["id"])
        back = wait_until("ext answered again", answered, 10)
        counters = jget("appliance", "get", "web")["counters"]
        print(f"mirrored so far: {counters['connections']} connections, "
              f"{counters['packets']} packets")
        ok = blocked and back and counters["connections"] > 0
        return ok
    finally:
        step("shadows: the appliance and the slot deleted")
        hubctl(api, "appliance", "delete", "web", check=False)
        wait_until("the slot free", lambda: jget("shadow", "slots")[0]["state"] == "free", 15)
        for host, pid in reversed(pids):
            host.cmd(f"kill {pid}")
        hubctl(api, "shadow", "slot-delete", "demo-slot", check=False)
