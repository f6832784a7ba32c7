"""Shadow analysis profiles on a real hub: what GET /v1/appliances/{id} and /metrics show of
the mirror and the profiles, with the real `hub-shadow-agent` on the slots.

* the mirror's counters follow the connections mirrored (appliance and instance);
* Anomaly_Detection: a port scan from one client is a finding naming it, and an alert;
* Performance_Profiling: the shadow's latency figures in GET and in /metrics, and a
  threshold miss is a finding;
* Fuzzing: a shadow service built to crash on one malformed input gives a finding with
  that input, no fuzzed packet reaches production (a capture there), and the crashed
  instance is replaced;
* adaptive mode: real analysis lag (expensive IDS patterns under a burst) brings the
  percentage down, and it climbs back once the traffic stops;
* sample and hold: a source a finding names has all its new connections mirrored
  while another client's stay at the appliance's percentage.

Mininet hub with one segment (h1_1 production, h1_2 a second client), three spare
hosts sp1..sp3 as shadow slots s1..s3, and ext as the client.  Each test makes its
own appliance on h1_1 and deletes it; each checks that production answered every
client connection byte for byte.  Names start with ``ly`` (scripts/test cleans that
prefix).
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from controller.features.shadow.adaptive import LAG_LIMIT_MS
from controller.features.shadow.mirror import COPY, HELD
from controller.pipeline import tables
from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import ROOT, sh, wait_for
from tests.lab.shadowlab import NETCHECK, Capture, add_slot, interface_ids, whole

pytestmark = pytest.mark.lab
LAB_PREFIX = "ly"
SLOTS = 3
TOOLS = f"python3 {ROOT}/tests/lab/shadowtraffic.py"
SHADOW_IMAGE = f"{NETCHECK} serve 80 --name shadow"
SERVICE = [{"protocol": "tcp", "port": 80}]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=1, hosts=2, spares=SLOTS)
    try:
        lab.net.pingAll(timeout=2)
        prod = lab.host("h1_1")
        lab.bg(prod, f"{NETCHECK} serve 80 --name prod")
        wait_for("production serving", lambda: ":80" in prod.cmd("ss -ltn"), 10)
        spares = [f"sp{n}" for n in range(1, SLOTS + 1)]
        lab.iid = interface_ids(lab, ["h1_1", *spares])
        for h in spares:
            add_slot(lab, lab.host(h), f"s{h[2:]}", lab.iid[h])
        yield lab
    finally:
        stop_lab(lab)


# ---------------------------------------------------------------- helpers
def slots(lab) -> list[dict]:
    return api(lab, "GET", "/v1/shadow-slots", expect=200)


def get(lab, app: str) -> dict:
    return api(lab, "GET", f"/v1/appliances/{app}", expect=200)


def ready_instances(lab, app: str) -> list[dict]:
    return [i for i in get(lab, app)["instances"] if i["state"] == "ready"]


def copy_flows(lab) -> int:
    """Copy flows toward instances in the production switch's shadow_to table."""
    out = sh("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", lab.switch("a1").name,
             f"table={tables.SHADOW_TO.id}")
    return sum(f"priority={COPY}," in line for line in out.splitlines())


@contextmanager
def appliance(lab, name: str, image: str = SHADOW_IMAGE, analysis: tuple[str, ...] = (),
              percentage: float = 100.0, service: list[dict] | None = SERVICE, **sections):
    """An appliance on h1_1 with one instance running the `analysis` profiles, ready and
    copied to in the switch; deleted (its slot free again) afterwards.  `sections`: the
    manifest's optional sections (profiles, adjustment, remediation, mirror)."""
    manifest = {"name": name, "interfaces": [lab.iid["h1_1"]], "service": service,
                "appliance_image": image,
                "shadowing": {"shadow_instance_count": 1,
                              "shadow_traffic_percentage": percentage,
                              "shadow_analysis_profiles": list(analysis)}, **sections}
    api(lab, "POST", "/v1/appliances", manifest, expect=201)
    try:
        wait_for(f"{name}'s instance ready", lambda: ready_instances(lab, name), 30)
        wait_for(f"{name} copied to in the switch", lambda: copy_flows(lab) == 1, 20)
        lab.controller.wait_in_sync(lab.dpids)
        yield name
    finally:
        api(lab, "DELETE", f"/v1/appliances/{name}")
        wait_for("every slot free again", lambda: all(s["state"] == "free" for s in slots(lab)),
                 30)
        wait_for("no copy flow left", lambda: copy_flows(lab) == 0, 20)


def shadow_host(lab, instance: dict):
    """The host of an instance's slot (slot sN is host spN)."""
    return lab.host("sp" + instance["slot_id"][1:])


def production_answers(lab, count: int, client: str = "ext") -> None:
    """`count` connections from `client`, each answered by production byte for byte."""
    out = lab.host(client).cmd(f"{NETCHECK} many {lab.host('h1_1').IP()} 80 {count} prod:80")
    assert out.strip().splitlines()[-1] == f"ok {count} bad 0 failed 0", out


def metric(lab, family: str, /, **labels: str) -> float | None:
    """One sample of the hub's /metrics with exactly these labels, or None."""
    for line in lab.controller.get("/metrics").splitlines():
        m = re.fullmatch(rf"{family}\{{(.*)\}} (\S+)", line)
        if m and dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) == labels:
            return float(m.group(2))
    return None


def findings(lab, app: str, profile: str) -> list[dict]:
    return [f for f in api(lab, "GET", f"/v1/appliances/{app}/findings", expect=200)
            if f["profile"] == profile]


def alert_of(lab, app: str, finding: dict) -> dict | None:
    return next((a for a in api(lab, "GET", f"/v1/alerts?appliance_id={app}", expect=200)
                 if a["kind"] == "shadow_finding" and a["finding_id"] == finding["id"]), None)


# ---------------------------------------------------------------- tests
def test_the_counters_follow_the_connections_mirrored(lab):
    count = 100
    with appliance(lab, "ly-count") as app:
        before = get(lab, app)["counters"]
        assert before == {"connections": 0, "packets": 0, "bytes": 0, "dropped": 0}, before
        production_answers(lab, count)
        done = time.monotonic()
        wait_for("the connections counted", lambda: get(lab, app)["counters"]["connections"]
                 >= count - 2, 10)
        took = time.monotonic() - done
        time.sleep(2.5)                                 # one more reading: nothing more
        view = get(lab, app)
        counters, (instance,) = view["counters"], view["instances"]
        assert count - 2 <= counters["connections"] <= count + 2, counters
        # a connection of netcheck is at least SYN, request, FIN, last ACK one way
        assert counters["packets"] >= 4 * count and counters["bytes"] > 0, counters
        assert instance["counters"] == counters, (instance, counters)
        assert (view["unmirrored"], view["holds"], view["added_instances"]) == (None, [], 0)
        assert metric(lab, "hub_shadow_mirrored_total", appliance=app,
                      what="connections") == counters["connections"]
        assert metric(lab, "hub_shadow_mirrored_total", appliance=app,
                      what="bytes") == counters["bytes"]
        print(f"counters {took:.1f} s after the last connection: {counters}")


def test_a_port_scan_is_an_anomaly_finding_naming_its_source(lab):
    prod, ext = lab.host("h1_1"), lab.host("ext")
    settings = {"Anomaly_Detection": {"baseline": 5, "window": 2}}
    with appliance(lab, "ly-anomaly", analysis=("Anomaly_Detection",), service=None,
                   profiles=settings) as app:
        ready = time.monotonic()
        while time.monotonic() - ready < 7:             # normal traffic through the baseline
            production_answers(lab, 3)
            time.sleep(0.5)
        assert findings(lab, app, "Anomaly_Detection") == [], "normal traffic is no anomaly"
        out = ext.cmd(f"{TOOLS} scan {prod.IP()} 1000 30")
        assert out.strip().splitlines()[-1] == "open 0 closed 30 silent 0", out
        scanned = time.monotonic()
        (finding,) = wait_for("a port scan finding",
                              lambda: findings(lab, app, "Anomaly_Detection"), 15)
        took = time.monotonic() - scanned
        assert finding["five_tuple"]["src"] == ext.IP(), finding
        assert finding["five_tuple"]["dst"] == prod.IP(), finding
        assert finding["severity"] == "high", finding
        assert finding["evidence"]["text"].startswith("port_scan: "), finding
        alert = wait_for("its alert", lambda: alert_of(lab, app, finding), 5)
        assert alert["severity"] == "critical" and alert["profile"] == "Anomaly_Detection", alert
        production_answers(lab, 20)
        print(f"finding {took:.1f} s after the scan: {finding['evidence']['text']}")


def test_the_shadows_latency_is_shown_and_a_threshold_miss_is_a_finding(lab):
    settings = {"Performance_Profiling": {"min_samples": 10, "p99_ms_max": 0.001}}
    with appliance(lab, "ly-perf", analysis=("Performance_Profiling",),
                   profiles=settings) as app:
        production_answers(lab, 40)
        sent = time.monotonic()

        seen: list[dict] = []

        def figures():
            (instance,) = ready_instances(lab, app)
            m = instance["metrics"]
            seen[:] = [m]
            done = m.get("replays", 0) >= 40 and m.get("latency_p50_ms", 0) > 0 \
                and m.get("latency_p99_ms", 0) > 0
            return (instance, m) if done else None
        try:
            instance, m = wait_for("the latency figures in GET", figures, 20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the instance's figures: {seen}") from None
        took = time.monotonic() - sent
        assert m["latency_p50_ms"] <= m["latency_p99_ms"], m
        assert m["throughput_bps"] > 0 and m["memory_bytes"] > 0 and "cpu_percent" in m, m
        for name in ("latency_p50_ms", "latency_p99_ms"):
            assert metric(lab, "hub_shadow_profile", appliance=app, instance=instance["id"],
                          name=name) == m[name], name
        (finding,) = wait_for("a threshold finding",
                              lambda: findings(lab, app, "Performance_Profiling"), 10)
        assert finding["five_tuple"] is None and finding["severity"] == "low", finding
        assert "p99_ms_max 0.001" in finding["evidence"]["text"], finding
        assert wait_for("its alert", lambda: alert_of(lab, app, finding), 5)
        print(f"figures {took:.1f} s after the connections: {m}")


class Pcap:
    """Every IPv4 packet on a host's interface, written to a pcap file until stopped."""

    def __init__(self, lab, host, name: str) -> None:
        self.lab, self.host = lab, host
        self.out, err = f"/tmp/{lab.prefix}-{name}.pcap", f"/tmp/{lab.prefix}-{name}.err"
        host.cmd(f"rm -f {self.out} {err}")
        lab.bg(host, f"bash -c 'exec tcpdump -i {host.intf()} -nn -U --immediate-mode -s 0 "
                     f"-w {self.out} ip 2> {err}'")
        self.pid = lab.background[-1][1]
        wait_for(f"tcpdump listening on {host.name}",
                 lambda: "listening on" in host.cmd(f"cat {err}"), 15)

    def packets(self) -> list:
        self.host.cmd(f"kill {self.pid}; while kill -0 {self.pid} 2>/dev/null; do sleep 0.1; done")
        self.lab.background.remove((self.host, self.pid))
        return list(rdpcap(self.out))


def test_fuzzing_finds_the_crashing_input_and_no_fuzzed_packet_reaches_production(lab):
    prod, ext = lab.host("h1_1"), lab.host("ext")
    image = f"{TOOLS} fragile 80 --name shadow"               # crashes unless "conn ..."
    capture = Pcap(lab, prod, "fuzz-prod")
    try:
        with appliance(lab, "ly-fuzz", image=image, analysis=("Fuzzing",),
                       profiles={"Fuzzing": {"seed": 1}}) as app:
            (first,) = ready_instances(lab, app)
            production_answers(lab, 5)                       # "conn 0" .. "conn 4"
            sent = time.monotonic()
            crashes = wait_for("a crash finding", lambda: [
                f for f in findings(lab, app, "Fuzzing")
                if f["evidence"]["text"].startswith("crash: ")], 20)
            took = time.monotonic() - sent
            finding = crashes[-1]
            text = finding["evidence"]["text"]
            shown = text.rsplit(": ", 1)[1]
            assert re.fullmatch(r"[0-9a-f]+", shown), text
            crashing = bytes.fromhex(shown)
            assert not crashing.startswith(b"conn "), (text, crashing)  # what crashes it
            assert finding["severity"] == "high" and finding["five_tuple"]["dport"] == 80
            assert finding["five_tuple"]["dst"] == prod.IP(), finding  # sent to itself
            assert wait_for("its alert", lambda: alert_of(lab, app, finding), 5)

            def replaced():
                found = {i["id"]: i for i in get(lab, app)["instances"]}
                new = [i for i in found.values() if i["state"] == "ready"]
                return new if found[first["id"]]["state"] == "failed" and new else None
            (new,) = wait_for("the crashed instance replaced", replaced, 20)
            failed = next(i for i in get(lab, app)["instances"] if i["id"] == first["id"])
            assert new["slot_id"] != first["slot_id"], (first, new)
            assert "exited with status 3" in failed["reason"], failed
            print(f"crash found {took:.1f} s after the connections: {text}; "
                  f"{first['id']} failed ({failed['reason']}), {new['id']} ready on "
                  f"{new['slot_id']}")
    finally:
        packets = capture.packets()
    ip_of = {prod.IP(), ext.IP()}
    strangers = [p.summary() for p in packets if IP in p and {p[IP].src, p[IP].dst} != ip_of]
    assert strangers == [], f"production saw packets other than the client's: {strangers[:5]}"
    requests = [p for p in packets if TCP in p and p[IP].dst == prod.IP() and p[TCP].dport == 80]
    assert {p[IP].src for p in requests} == {ext.IP()}
    assert len({p[TCP].sport for p in requests}) == 5, "the five client connections, no other"
    payloads = {bytes(p[TCP].payload) for p in requests} - {b""}
    assert payloads == {f"conn {n}\n".encode() for n in range(5)}, payloads


EXPENSIVE = 50                   # IDS patterns that each cost ~0.4 ms per 5 kB searched
BURST, BURST_SIZE = 300, 1500    # connections, each one line of that many bytes


def test_real_lag_brings_the_percentage_down_and_it_climbs_back_once_healthy(lab):
    """The lag is the agent's own: 50 patterns of the shape `(a|b|c)*x.{0,200}y` over
    every mirrored segment make its IDS slower than a burst of connections."""
    prod, ext = lab.host("h1_1"), lab.host("ext")
    sections = {"profiles": {"IDS_Signature_Scan": {"signatures": [
                    {"id": f"slow-{n}", "pattern": f"(?s)(a|b|c)*x-{n:03d}.{{0,200}}y",
                     "severity": "low"} for n in range(EXPENSIVE)]}},
                "adjustment": {"mode": "adaptive", "min": 1.0, "max": 50.0}}
    with appliance(lab, "ly-adapt", analysis=("IDS_Signature_Scan",), percentage=50.0,
                   **sections) as app:
        wait_for("a first heartbeat", lambda: ready_instances(lab, app)[0].get("load"), 10)
        assert get(lab, app)["percentage"] == {"current": 50.0, "reason": "as configured"}
        log = f"/tmp/{LAB_PREFIX}-burst.txt"
        ext.cmd(f"rm -f {log}")
        lab.bg(ext, f"bash -c '{TOOLS} send {prod.IP()} 80 {BURST} burst prod:80 "
                    f"--size {BURST_SIZE} > {log}'")
        seen = Trace()

        def burst_done():
            seen.add(get(lab, app))
            return "ok " in ext.cmd(f"cat {log}")
        wait_for("the burst sent", burst_done, 60, interval=0.25)
        assert ext.cmd(f"cat {log}").strip() == f"ok {BURST} bad 0 failed 0"
        wait_for("the lowest percentage left behind",
                 lambda: seen.add(get(lab, app)) and seen.rises() >= 1, 120, interval=0.25)
        wait_for("two points back", lambda: seen.add(get(lab, app)) and seen.rises() >= 2,
                 30, interval=0.25)
        start = seen.steps[0][0]
        print(f"lag up to {seen.lag:.0f} ms; percentage: " + ", ".join(
            f"{at - start:.1f} s {pct:g} ({why})" for at, pct, why in seen.steps))
        assert seen.lag > LAG_LIMIT_MS, seen.lag
        downs = [(pct, why) for _, pct, why in seen.steps if "reports a lag of" in why]
        assert downs and downs[0][0] == 25.0, seen.steps    # halved, the lag named
        lowest = min(pct for _, pct, _ in seen.steps)
        (t1, up1, why1), (t2, up2, why2) = seen.steps[-2:]
        assert (up1, up2) == (lowest + 1, lowest + 2), seen.steps
        assert why1.startswith("healthy for") and why2.startswith("healthy for")
        assert t2 - t1 >= 4.0, "one point per healthy 5 s"
        # overloaded for seconds with a slot free: one more instance (max_instances 2)
        view = get(lab, app)
        assert view["added_instances"] == 1, view
        assert len([i for i in view["instances"] if i["state"] == "ready"]) == 2, view
        production_answers(lab, 20)


class Trace:
    """What GET showed of an adaptive appliance over time: each percentage change
    (time, new percentage, reason) and the largest lag an instance reported."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float, str]] = []
        self.lag = 0.0

    def add(self, view: dict) -> bool:
        current, reason = view["percentage"]["current"], view["percentage"]["reason"]
        if not self.steps or self.steps[-1][1:] != (current, reason):
            self.steps.append((time.monotonic(), current, reason))
        self.lag = max([self.lag] + [(i.get("load") or {}).get("lag_ms", 0.0)
                                     for i in view["instances"]])
        return True

    def rises(self) -> int:
        """Steps up in a row at the end."""
        n = 0
        while n + 1 < len(self.steps) and self.steps[-1 - n][1] > self.steps[-2 - n][1]:
            n += 1
        return n


def test_a_source_named_by_a_finding_has_all_its_connections_mirrored(lab):
    prod, ext, other = lab.host("h1_1"), lab.host("ext"), lab.host("h1_2")
    sections = {"profiles": {"IDS_Signature_Scan": {"signatures": [
                    {"id": "evil", "content": "EVIL-PAYLOAD", "severity": "high"}]}},
                "adjustment": {"mode": "adaptive", "min": 1.0, "max": 1.0, "hold": 300},
                "remediation": {"mode": "alert"}}
    with appliance(lab, "ly-hold", analysis=("IDS_Signature_Scan",), percentage=1.0,
                   **sections) as app:
        (instance,) = ready_instances(lab, app)
        capture = Capture(lab, shadow_host(lab, instance), "hold")
        # At 1% a connection carrying the signature is seldom mirrored: the client sends
        # it, in connections of its own, ten at a time, until one of them is.
        tries = 0
        while not findings(lab, app, "IDS_Signature_Scan") and tries < 2000:
            out = ext.cmd(f"{TOOLS} send {prod.IP()} 80 10 EVIL-PAYLOAD prod:80")
            assert out.strip().splitlines()[-1] == "ok 10 bad 0 failed 0", out
            tries += 10
            time.sleep(0.5)
        found = wait_for("a signature finding",
                         lambda: findings(lab, app, "IDS_Signature_Scan"), 5)
        assert all(f["five_tuple"]["src"] == ext.IP() and f["action"] == "alert"
                   for f in found), found
        (hold,) = wait_for("the source held", lambda: get(lab, app)["holds"], 5)
        assert hold["source"] == ext.IP(), hold
        assert hold["finding_id"] in {f["id"] for f in found}, (hold, found)
        assert get(lab, app)["percentage"]["current"] == 1.0
        wait_for("the held source's flows in the switch", lambda: held_flows(lab, ext.IP()), 10)
        lab.controller.wait_in_sync(lab.dpids)
        before = set(capture.connections(ext.IP()))
        production_answers(lab, 20)
        production_answers(lab, 300, client="h1_2")

        def all_twenty():
            new = {p: f for p, f in capture.connections(ext.IP()).items() if p not in before}
            return new if len(new) == 20 and all(whole(f) for f in new.values()) else None
        new = wait_for("the held source's 20 connections mirrored whole", all_twenty, 10)
        others = capture.connections(other.IP())
        capture.stop()
        assert len(others) <= 9, f"{len(others)} of 300 of another client mirrored at 1%"
        print(f"signature mirrored after {tries} connections; held {ext.IP()}: "
              f"{len(new)}/20 mirrored, the other client {len(others)}/300")


def held_flows(lab, source: str) -> int:
    """The production switch's flows that sample every new connection of `source`."""
    out = sh("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", lab.switch("a1").name,
             f"table={tables.SHADOW_TO_DECIDE.id}")
    return sum(f"priority={HELD}," in line and f"nw_src={source}" in line
               for line in out.splitlines())
