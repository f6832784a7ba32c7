"""Shadow appliances on a real hub: a slot's agent launches a shadow of h1_1's service,
and half of the clients' connections are mirrored to it, whole, while production
answers every one of them and nothing of the shadow reaches anyone.

Mininet hub with one segment (h1_1 production, h1_2 spare), the spare host sp1
as the shadow slot running the real `hub-shadow-agent`, and ext as the client.
The share mirrored is counted by a capture on the shadow's interface.  Names
start with ``lw`` (scripts/test cleans that prefix).
"""
from __future__ import annotations

import time

import pytest

from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import wait_for
from tests.lab.shadowlab import AGENT, NETCHECK, flags_by_port, guard_drops, whole

pytestmark = pytest.mark.lab
LAB_PREFIX = "lw"
CONNECTIONS = 400
BLOCK_TTL = 10


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=1, hosts=2, spares=2)
    try:
        lab.net.pingAll(timeout=2)
        prod, ext, spare = lab.host("h1_1"), lab.host("ext"), lab.host("sp1")
        lab.bg(prod, f"{NETCHECK} serve 80 --name prod")
        wait_for("production serving", lambda: ":80" in prod.cmd("ss -ltn"), 10)
        lab.bg(lab.host("h1_2"), f"{NETCHECK} serve 80 --name ids")
        interfaces = lab.controller.get("/v1/interfaces")
        iid = {h: next(i["id"] for i in interfaces if lab.host(h).IP() in i["ips"])
               for h in ("h1_1", "h1_2", "sp1", "sp2")}
        for n, host in ((1, spare), (2, lab.host("sp2"))):
            slot = api(lab, "POST", "/v1/shadow-slots",
                       {"interface_id": iid[f"sp{n}"], "id": f"s{n}"}, expect=201)
            server, port = slot["channel"]["server"], slot["channel"]["port"]
            lab.bg(host, f"bash -c 'exec {AGENT} --server {server} --port {port} --slot s{n} "
                         f"--key {slot['key']} --interface {host.intf()} "
                         f"2>>/tmp/{LAB_PREFIX}-agent{n}.log'")
        manifest = {"name": "web", "interfaces": [iid["h1_1"]],
                    "service": [{"protocol": "tcp", "port": 80}],
                    "appliance_image": f"{NETCHECK} serve 80 --name shadow",
                    "shadowing": {"shadow_instance_count": 1, "shadow_traffic_percentage": 50.0,
                                  "shadow_analysis_profiles": []}}
        api(lab, "POST", "/v1/appliances", manifest, expect=201)
        ids = {**manifest, "name": "ids", "interfaces": [iid["h1_2"]],
               "appliance_image": f"{NETCHECK} serve 80 --name ids-shadow",
               "shadowing": {"shadow_instance_count": 1, "shadow_traffic_percentage": 100.0,
                             "shadow_analysis_profiles": ["IDS_Signature_Scan"]},
               "profiles": {"IDS_Signature_Scan": {"signatures": [
                   {"id": "evil", "content": "EVIL-PAYLOAD", "severity": "critical"}]}},
               "remediation": {"mode": "block", "ttl": f"{BLOCK_TTL}s", "min_severity": "high"}}
        api(lab, "POST", "/v1/appliances", ids, expect=201)

        def ready():
            states = [[i["state"] for i in api(lab, "GET", f"/v1/appliances/{a}",
                                                expect=200)["instances"]] for a in ("web", "ids")]
            return states == [["ready"], ["ready"]]
        wait_for("both shadow instances ready", ready, 30)
        lab.controller.wait_in_sync(lab.dpids)
        yield lab
    finally:
        stop_lab(lab)


def shadow_host(lab, appliance: str):
    """The host of the slot the appliance's instance runs on (slot sN is host spN)."""
    (instance,) = api(lab, "GET", f"/v1/appliances/{appliance}", expect=200)["instances"]
    return lab.host("sp" + instance["slot_id"][1:])


def mirrored(lab, count: int) -> tuple[float, int]:
    """Run `count` client connections; the share the shadow saw whole, and how many it saw."""
    prod, ext, spare = lab.host("h1_1"), lab.host("ext"), shadow_host(lab, "web")
    capture = f"/tmp/{LAB_PREFIX}-capture.txt"
    spare.cmd(f"rm -f {capture}")
    lab.bg(spare, f"bash -c 'exec tcpdump -i {spare.intf()} -nn -l -U tcp port 80 "
                  f"> {capture} 2>/dev/null'")
    time.sleep(1.0)
    out = ext.cmd(f"{NETCHECK} many {prod.IP()} 80 {count} prod:80")
    # Every connection answered by production, byte for byte: nothing of the shadow's.
    assert out.strip().splitlines()[-1] == f"ok {count} bad 0 failed 0", out
    time.sleep(1.0)
    host, pid = lab.background.pop()                  # stop the capture
    host.cmd(f"kill {pid}")
    seen = flags_by_port(spare.cmd(f"cat {capture}"), ext.IP())   # client port -> TCP flags
    complete = [p for p, flags in seen.items() if whole(flags)]
    assert len(complete) == len(seen), "every connection the shadow saw, it saw from SYN to FIN"
    return len(complete) / count, len(seen)


def test_half_the_connections_are_mirrored_whole_and_production_answers_all(lab):
    before = guard_drops(lab)
    share, _ = mirrored(lab, CONNECTIONS)
    assert 0.43 <= share <= 0.57, share
    assert guard_drops(lab) > before                 # the shadow answered; nobody got it


def test_a_new_percentage_applies_to_new_connections(lab):
    api(lab, "PATCH", "/v1/appliances/web",
        {"shadowing": {"shadow_traffic_percentage": 10.0}}, expect=200)
    wait_for("the new percentage in force", lambda: api(lab, "GET", "/v1/appliances/web")
             ["percentage"]["current"] == 10.0, 10)
    lab.controller.wait_in_sync(lab.dpids)
    share, _ = mirrored(lab, CONNECTIONS)
    assert 0.05 <= share <= 0.15, share


def test_a_signature_raises_a_finding_and_blocks_its_source_for_the_ttl(lab):
    ext, other, target = lab.host("ext"), lab.host("h1_1"), lab.host("h1_2")

    def connects(host) -> bool:
        return "ids:80" in host.cmd(f"{NETCHECK} connect {target.IP()} 80 -t 2")
    assert connects(ext) and connects(other)
    sent = time.monotonic()
    ext.cmd(f"{NETCHECK} connect {target.IP()} 80 -t 2 --send EVIL-PAYLOAD")
    findings = wait_for("a finding", lambda: api(lab, "GET", "/v1/appliances/ids/findings",
                                                 expect=200), 5)
    assert time.monotonic() - sent < 5
    (finding,) = findings
    assert (finding["profile"], finding["severity"], finding["action"]) == \
        ("IDS_Signature_Scan", "critical", "block")
    assert finding["five_tuple"]["src"] == ext.IP()
    (block,) = api(lab, "GET", "/v1/remediations", expect=200)
    lab.controller.wait_in_sync(lab.dpids)
    assert not connects(ext), "the source's new connections are refused"
    assert connects(other), "other clients still work"
    wait_for("the block over", lambda: api(lab, "GET", "/v1/remediations", expect=200) == [],
             BLOCK_TTL + 10)
    lab.controller.wait_in_sync(lab.dpids)
    assert connects(ext)
    audit = [e["message"] for e in lab.controller.events(kind="shadow-remediation")]
    assert any("blocked" in m for m in audit) and any("TTL" in m for m in audit), audit


def test_a_killed_controller_keeps_the_mirroring_and_the_blocks(lab):
    ext, target = lab.host("ext"), lab.host("h1_2")
    ext.cmd(f"{NETCHECK} connect {target.IP()} 80 -t 2 --send EVIL-PAYLOAD")
    wait_for("a block", lambda: api(lab, "GET", "/v1/remediations", expect=200), 5)
    lab.controller.kill9()
    lab.controller.start()
    lab.controller.wait_in_sync(lab.dpids)
    assert "ids:80" not in ext.cmd(f"{NETCHECK} connect {target.IP()} 80 -t 2")   # still blocked
    app = api(lab, "GET", "/v1/appliances/web", expect=200)
    assert [i["state"] for i in app["instances"]] == ["ready"]
    share, _ = mirrored(lab, CONNECTIONS)             # still mirrored, at the 10% set before
    assert 0.05 <= share <= 0.15, share
