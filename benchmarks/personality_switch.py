"""Personality switch under traffic: packets lost, hub vs a naive delete-then-add.

One interface gets personality A, then is switched A -> B -> A ... while a UDP
stream of an allowed, established flow runs toward it.  A and B have N firewall
rules each (default 1,000): N-1 `deny tcp` rules on distinct ports (A and B deny
different ports, so they share no rule flow), then one allowing udp to the
stream's port.  Rules keep the default direction `both`, so each personality
compiles to 2N + 28 flows.  Default action deny.

  hub    A small hub lab (tests/lab/conftest.py start_lab, prefix "bp", two
         segments with one host each, no spare) under the real hub-controller.
         Sink h2_1, sender h1_1 (routed through the hub).  Each switch is
         `POST /v1/interfaces/{id}/switch` with drain {"max_seconds": 0,
         "until": "timeout"}: transition flows, no wait, the new personality in
         one bundle.  It uses the interface's other conntrack zone, where the
         stream is `+new` and admitted again by the udp rule.  `applied_ms`
         (drain end -> realized) is read from the operation.
  naive  The same personality flows installed by hand, on a plain netdev bridge
         built here (no controller) with two network namespaces on veth pairs
         (TX offload off, static ARP): sender on port 1, sink on port 2.  A
         5-flow base stands in for the hub's fabric (tables 0/5/10 -> l2; l2
         forwards by eth_dst at priority 100, cookie 0x1).  The personality
         flows are what the hub installs: `compile_personality` for (bridge,
         port 2, sink MAC) with the same zones (A: epoch 0, B: epoch 1),
         rendered by `controller.pipeline.ofctl.render_flows` in compile order.
         The switch is two commands, no bundle:

             ovs-ofctl -O OpenFlow14 del-flows BR cookie=<old>/-1
             ovs-ofctl -O OpenFlow14 add-flows BR <new file>

Both sides use the same traffic tools (tests/lab/netcheck.py udpsink and
udpstream), rate and length, and switch `--switch-at` seconds into the stream.
Conntrack only calls a UDP flow established (`+est`) once it has seen a reply,
and udpsink never answers: so, right after the stream starts, the sink answers
it once (one datagram from its port to the stream's source port, on a raw
socket); the answer reaching the sender shows it went through the sink's
firewall.  `--one-way` leaves that out (the stream is then `+new` throughout).

Figures, per run:
  applied_ms  hub: drain end -> the new personality realized (the operation's
          field), and its ratio to the 50 ms goal; `op s` is the whole
          operation, first to last entry of its log;
  del+add ms  naive: del-flows + add-flows, as timed here;
  lost    datagrams sent - received;
  sock    of those, dropped at the sink's own socket buffer (Udp RcvbufErrors in
          the sink's namespace: the sink process was late, not the network);
  path    lost - sock: lost in the switches;
  bypass  datagrams delivered by the plain l2 flow (the fabric's on the hub, the
          base's on the naive bridge), i.e. through no firewall.  Naive: exact,
          the plain flow also copies to an internal port whose tx counter is
          read.  Hub: the fabric flow's n_packets (a flow never in any datapath
          path stays at 0; OVS credits revalidated datapath flows loosely, so a
          non-zero value there is an upper bound).
One control run per side without a switch gives the stream's own noise floor.

Measurements, not tests: figures and ratios are printed, nothing passes or
fails.  Needs root, Open vSwitch (scripts/ovs start is called) and Mininet.

    sudo .venv/bin/python benchmarks/personality_switch.py [--rules 1000]
        [--rate 2000] [--runs 3] [--seconds 5] [--switch-at 1.5] [--one-way]
        [--log-level info] [--verbose]

The lab harness starts the controller at log level debug, where the reconciler
logs each flow it changes; the benchmark restarts it (same store and ports) at
`--log-level`, default info, the controller's own default.

It removes what it creates (the lab via stop_lab, the bridge bpx<pid>, the
namespaces bpx<pid>s and bpx<pid>r with their veths, the traffic processes by
PID), also on error or Ctrl-C.  See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.labtools import Procs, TmpFactory, ofctl, sh  # noqa: E402
from benchmarks.personality_naive import NaiveSide  # noqa: E402
from benchmarks.udpstream import SINK_PORT, stream_once  # noqa: E402

OVS_SCRIPT = REPO / "scripts" / "ovs"
LAB_PREFIX = "bp"
GOAL_MS = 50.0
DRAIN = {"max_seconds": 0, "until": "timeout"}


def bodies(n: int, ip: str) -> dict[str, dict]:
    """Personalities A and B: n rules each, n-1 distinct tcp denies, then allow udp/SINK_PORT."""
    out = {}
    for i, name in enumerate(("A", "B")):
        base = 2000 + i * n
        rules = [{"protocol": "tcp", "port": base + k, "action": "deny"} for k in range(n - 1)]
        rules.append({"protocol": "udp", "port": SINK_PORT, "action": "allow"})
        out[name] = {"ip_addresses": [ip], "firewall_rules": rules, "default_action": "deny"}
    return out


def plain_forwarding_packets(bridge: str, mac: str) -> int:
    """n_packets of the plain l2 flow (table 50, priority 100, eth_dst=mac): firewall bypassed."""
    total = 0
    for line in ofctl("dump-flows", bridge, f"table=50,dl_dst={mac}").splitlines():
        if re.search(r"\bpriority=100\b", line):
            m = re.search(r"n_packets=(\d+)", line)
            total += int(m.group(1)) if m else 0
    return total


# --------------------------------------------------------------------- hub

class HubSide:
    def __init__(self, tmp: Path, procs: Procs, args) -> None:
        from mininet.log import setLogLevel
        setLogLevel("warning")
        self.args, self.procs, self.tmp = args, procs, tmp
        self.name = "hub"
        self.lab = None

    def start(self) -> None:
        from tests.lab.conftest import start_lab
        self.lab = start_lab(TmpFactory(self.tmp), LAB_PREFIX, segments=2, hosts=1, spares=0)
        self.ctl = self.lab.controller
        if self.args.log_level != "debug":
            # The lab harness runs the controller at debug, where the reconciler logs every
            # flow it adds or deletes; restart it (same store and ports) at the given level.
            import yaml
            config = yaml.safe_load(self.ctl.config.read_text())
            config["log_level"] = self.args.log_level
            self.ctl.stop()
            self.ctl.config.write_text(yaml.safe_dump(config))
            self.ctl.start()
            self.ctl.wait_in_sync(self.lab.dpids)
        self.sender, self.sink = self.lab.host("h1_1"), self.lab.host("h2_1")
        loss = self.lab.net.pingAll(timeout=2)
        if loss:
            print(f"  hub lab: pingAll lost {loss}% (hosts may not all be known)", flush=True)
        self.bridge = next(s.name for s in self.lab.net.switches if any(
            i.link and self.sink in (i.link.intf1.node, i.link.intf2.node) for i in s.intfList()))
        self.mac = self.sink.MAC()
        self.sink_ip, self.sender_ip = self.sink.IP(), self.sender.IP()

    # what stream_once needs of a side
    def sink_popen(self, cmd: list[str]) -> subprocess.Popen:
        return self.sink.popen(cmd)

    def sender_popen(self, cmd: list[str]) -> subprocess.Popen:
        return self.sender.popen(cmd)

    def sink_run(self, cmd: list[str]) -> str:
        return self.sink.popen(cmd).communicate(timeout=30)[0].decode()

    def sender_run(self, cmd: list[str]) -> str:
        return self.sender.popen(cmd).communicate(timeout=30)[0].decode()

    def stop(self) -> None:
        if self.lab is not None:
            from tests.lab.conftest import stop_lab
            stop_lab(self.lab)
            self.lab = None

    def api(self, method: str, path: str, body=None, expect: int | None = None):
        status, data = self.ctl.request(method, path, body)
        if expect is not None and status != expect:
            raise RuntimeError(f"{method} {path}: {status} {data}")
        return data

    def setup(self, n: int) -> None:
        from tests.lab.harness import wait_for
        ip = self.sink.IP()
        self.iid = wait_for(f"interface of {ip}", lambda: next(
            (i["id"] for i in self.api("GET", "/v1/interfaces") if ip in i["ips"]), None))
        for name, body in bodies(n, ip).items():
            self.api("POST", "/v1/personalities",
                     {"id": f"bench-{name}", "name": name, **body}, 201)
        op = self.switch("A")
        if op["state"] != "succeeded":
            raise RuntimeError(f"putting A on {self.iid}: {op}")
        self.ctl.wait_in_sync(self.lab.dpids)

    def switch(self, to: str) -> dict:
        from tests.lab.harness import wait_for
        op = self.api("POST", f"/v1/interfaces/{self.iid}/switch",
                      {"personality_id": f"bench-{to}", "drain": DRAIN}, 202)

        def done():
            o = self.api("GET", f"/v1/operations/{op['id']}", expect=200)
            return o if o["state"] in ("succeeded", "rolled_back", "failed") else None
        # Polled gently: the API shares the controller process (and this machine's CPUs).
        final = wait_for(f"operation {op['id']}", done, 60, 0.1)
        log = final.get("log") or []
        final["op_s"] = log[-1]["at"] - log[0]["at"] if len(log) > 1 else None
        return final

    def run(self, to: str | None) -> dict:
        before = plain_forwarding_packets(self.bridge, self.mac)

        def during():
            op = self.switch(to)
            return {"applied_ms": op.get("applied_ms"), "state": op["state"],
                    "op_s": op["op_s"], "op_log": op.get("log", [])}
        info = stream_once(self, self.procs, self.args, during if to else None)
        info["bypass"] = plain_forwarding_packets(self.bridge, self.mac) - before
        return info


# -------------------------------------------------------------------- main
def fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def report(args, hub_runs, naive_runs, nflows) -> None:
    print()
    print(f"personality switch under a UDP stream: {args.rules:,} rules "
          f"({nflows:,} flows per personality), {args.rate:,} pkt/s for {args.seconds:g} s, "
          f"switch at {args.switch_at:g} s, stream "
          f"{'one-way (+new)' if args.one_way else 'answered once (+est)'}")
    print("lost = sent - received; sock = of those, dropped at the sink's socket buffer; "
          "path = lost - sock;\nbypass = delivered through no firewall")
    print()
    hub_cols = (f"{'sent':>6} {'lost':>5} {'sock':>5} {'path':>5} {'applied_ms':>10} "
                f"{'/50ms':>6} {'op s':>5} {'bypass':>6}")
    naive_cols = (f"{'sent':>6} {'lost':>5} {'sock':>5} {'path':>5} {'del+add ms':>10} "
                  f"{'bypass':>6}")
    print(f"{'':<8} | {'hub':^{len(hub_cols)}} | {'naive delete-then-add':^{len(naive_cols)}}")
    print(f"{'run':<8} | {hub_cols} | {naive_cols}")
    for i, (h, nv) in enumerate(zip(hub_runs, naive_runs)):
        label = "control" if i == 0 else f"{i} ->{h['to']}"
        ams = h.get("applied_ms")
        ratio = "-" if ams is None else f"{ams / GOAL_MS:.2f}x"
        print(f"{label:<8} | {h['sent']:>6} {h['lost']:>5} {h['sock']:>5} {h['path']:>5} "
              f"{fmt(ams, '10.1f'):>10} {ratio:>6} {fmt(h.get('op_s'), '5.2f'):>5} "
              f"{h['bypass']:>6} | {nv['sent']:>6} {nv['lost']:>5} {nv['sock']:>5} "
              f"{nv['path']:>5} {fmt(nv.get('naive_ms'), '10.1f'):>10} {nv['bypass']:>6}")
    hs, ns = hub_runs[1:], naive_runs[1:]
    if not hs:
        return

    def pct(rows, key):
        return 100 * sum(r[key] for r in rows) / max(1, sum(r["sent"] for r in rows))

    print()
    for what, key in (("lost in the switches (path)", "path"), ("lost in all", "lost")):
        hl, nl = [h[key] for h in hs], [n[key] for n in ns]
        ratio = f"; hub/naive {sum(hl) / sum(nl):.2f}" if sum(nl) else ""
        print(f"{what}, goal 0: hub {', '.join(map(str, hl))} ({pct(hs, key):.3f}% of sent), "
              f"naive {', '.join(map(str, nl))} ({pct(ns, key):.3f}% of sent){ratio}")
    print(f"  control runs (no switch): hub lost {hub_runs[0]['lost']}, "
          f"naive lost {naive_runs[0]['lost']}")
    ams = [h["applied_ms"] for h in hs if h.get("applied_ms") is not None]
    if ams:
        med = statistics.median(ams)
        naive_ms = statistics.median(n["naive_ms"] for n in ns)
        print(f"drain end -> realized, goal <= {GOAL_MS:g} ms: hub median {med:.1f} ms = "
              f"{med / GOAL_MS:.2f}x the goal (max {max(ams):.1f} ms = "
              f"{max(ams) / GOAL_MS:.2f}x); naive del-flows + add-flows median "
              f"{naive_ms:.1f} ms = {naive_ms / GOAL_MS:.2f}x")
    print(f"bypass, delivered through no firewall: hub {sum(h['bypass'] for h in hs)}, "
          f"naive {sum(n['bypass'] for n in ns)}")
    for i, h in enumerate(hs, 1):
        if h.get("state") != "succeeded" or h.get("note"):
            print(f"  hub run {i}: operation {h.get('state')}; {h.get('note', '')}")
        if ns[i - 1].get("note"):
            print(f"  naive run {i}: {ns[i - 1]['note']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=int, default=1000,
                    help="firewall rules per personality (default 1000)")
    ap.add_argument("--rate", type=int, default=2000,
                    help="UDP datagrams per second (default 2000)")
    ap.add_argument("--runs", type=int, default=3,
                    help="switches per side, alternating A->B->A (default 3)")
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="length of each stream (default 5)")
    ap.add_argument("--switch-at", type=float, default=1.5,
                    help="seconds into the stream the switch starts (default 1.5)")
    ap.add_argument("--one-way", action="store_true",
                    help="do not answer the stream: conntrack then never holds it as "
                         "established (+est), only as +new")
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                    help="the hub-controller's log level (default info, its own default; "
                         "the lab harness starts it at debug)")
    ap.add_argument("--verbose", action="store_true", help="print each hub operation's log")
    args = ap.parse_args(argv)
    if not 2 <= args.rules <= 10000:
        ap.error("--rules must be within 2..10000")

    if os.geteuid() != 0:
        print("personality_switch: needs root (Mininet, Open vSwitch, namespaces)", file=sys.stderr)
        return 2
    sh(str(OVS_SCRIPT), "start", timeout=120)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    tmp = Path(tempfile.mkdtemp(prefix="personality_switch-"))
    procs = Procs()
    hub = naive = None
    hub_runs: list[dict] = []
    naive_runs: list[dict] = []
    failed = False
    try:
        print(f"ovs-vswitchd {sh('ovs-vsctl', 'get', 'open_vswitch', '.', 'ovs_version').strip()}, "
              f"python {sys.version.split()[0]}, work dir {tmp}", flush=True)
        hub = HubSide(tmp, procs, args)
        hub.start()   # before the naive bridge: start_lab cleans every "bp*" bridge and veth
        hub.setup(args.rules)
        print(f"hub lab up: sink {hub.sink.name} {hub.sink.IP()} on {hub.bridge}, "
              f"interface {hub.iid}, A applied", flush=True)
        naive = NaiveSide(tmp, procs, args)
        naive.create()
        naive.setup(bodies(args.rules, naive.SINK_IP))
        print(f"naive bridge {naive.br} up: {naive.nbase} base flows + {naive.nflows['A']} of A",
              flush=True)
        order = [None] + ["B" if i % 2 == 0 else "A" for i in range(args.runs)]
        for i, to in enumerate(order):
            h = hub.run(to)
            h["to"] = to
            hub_runs.append(h)
            if args.verbose and to:
                for e in h["op_log"]:
                    print(f"    {e.get('at')} {e.get('state')}: {e.get('message')}")
            nv = naive.run(to)
            naive_runs.append(nv)
            what = "control (no switch)" if to is None else f"run {i} (-> {to})"
            applied = "" if to is None else f", applied_ms {h.get('applied_ms')}"
            est = "" if args.one_way else (f" (stream +est: hub {h['established']}, "
                                           f"naive {nv['established']})")
            print(f"{what}: hub lost {h['lost']}/{h['sent']}{applied}; "
                  f"naive lost {nv['lost']}/{nv['sent']}{est}", flush=True)
        report(args, hub_runs, naive_runs, naive.nflows["A"])
    except KeyboardInterrupt:
        print("personality_switch: interrupted", file=sys.stderr)
        failed = True
        return 130
    except Exception:
        failed = True
        raise
    finally:
        procs.stop_all()
        if naive is not None:
            naive.destroy()
        if hub is not None:
            if failed and hub.lab is not None:
                print("--- controller log (tail) ---\n" + hub.ctl.log(), file=sys.stderr)
            hub.stop()
            if hub.lab is None:   # start_lab may have failed half way
                subprocess.run([str(REPO / "scripts" / "clean"), LAB_PREFIX], capture_output=True)
        if failed:
            print(f"personality_switch: work dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
