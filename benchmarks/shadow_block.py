"""`shadows.py block`: from a malicious packet to the block of its source being in force.

The `ids` appliance (h1_2, tcp/80 mirrored at 100%, IDS_Signature_Scan with the
signature EVIL-PAYLOAD, remediation block).  Per trial, from ext
(benchmarks/shadow_traffic.py `block`): one connection sends a line holding the
signature (t0: the instant before its send), then new connections are tried
every `--interval` (default 5 ms), each given 0.3 s to be answered, until three in
a row are not (the block drops ext's SYNs).  Time to block = the start of the
first refused attempt after t0; the last answered one bounds it from below (the
resolution).  Where the time went comes from the hub's records of the trial:
the finding's `at` (the agent's clock when the signature matched) and the
block's `created_at` (stored by the hub); the rest, to the first refusal, is the
compile, the bundle to the switch and the probe's own resolution.  Between
trials the block is lifted over REST (`DELETE /v1/remediations/{id}`) and ext is
served again before the next one starts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from benchmarks.persona_common import pct
from benchmarks.shadow_lab import IDS, NETCHECK, SERVICE_PORT, SIGNATURE, TRAFFIC, ShadowLab


@dataclass(frozen=True)
class Trial:
    blocked: float | None          # seconds from t0 to the first refused connection
    last_ok: float | None          # the last answered one before it
    found: float | None            # t0 -> the finding's `at` (the agent matched)
    stored: float | None           # t0 -> the block's `created_at` (the hub stored it)
    probes: int


def lift_all(lab: ShadowLab) -> None:
    from tests.lab.harness import wait_for
    for r in lab.api("GET", "/v1/remediations", expect=200):
        lab.api("DELETE", f"/v1/remediations/{r['id']}", expect=200)
    target = lab.host("h1_2").IP()
    wait_for("ext served by ids again", lambda: "ids:" in lab.host("ext").cmd(
        f"{NETCHECK} connect {target} {SERVICE_PORT} -t 0.5"), 20, 0.05)
    lab.lab.controller.wait_in_sync(lab.lab.dpids)


def trial(lab: ShadowLab, interval: float) -> Trial:
    lift_all(lab)
    target = lab.host("h1_2").IP()
    out = lab.host("ext").cmd(f"{TRAFFIC} block {target} {SERVICE_PORT} {SIGNATURE} "
                              f"--interval {interval:g} --timeout 0.3 --give-up 10")
    got = json.loads(out.strip().splitlines()[-1])
    t0 = got["t0"]
    blocks = [r for r in lab.api("GET", "/v1/remediations", expect=200)
              if r["appliance_id"] == IDS and r["created_at"] >= t0]
    finding = None
    if blocks:
        finding = next((f for f in lab.api("GET", f"/v1/appliances/{IDS}/findings",
                                           expect=200) if f["id"] == blocks[0]["finding_id"]),
                       None)
    return Trial(got["first_refused"], got["last_ok"],
                 finding["at"] - t0 if finding else None,
                 blocks[0]["created_at"] - t0 if blocks else None, got["probes"])


def run(lab: ShadowLab, args) -> list[Trial]:
    print(f"block: {args.trials} trials ...", flush=True)
    out = []
    for n in range(args.trials):
        t = trial(lab, args.interval)
        out.append(t)
        shown = "never" if t.blocked is None else f"{t.blocked * 1000:.0f} ms"
        print(f"    trial {n + 1}: blocked after {shown}", flush=True)
    lift_all(lab)
    return out


def _ms(values: list[float]) -> str:
    if not values:
        return "       -        -        -"
    return (f"{min(values) * 1000:>8.0f} {pct(values, 50) * 1000:>8.0f} "
            f"{max(values) * 1000:>8.0f}")


def report(trials: list[Trial], interval: float) -> None:
    done = [t for t in trials if t.blocked is not None]
    print(f"time to block: a connection from ext carrying the signature to the ids appliance "
          f"(100% mirrored, remediation block), then a new connection every "
          f"{interval * 1000:g} ms until refused; {len(done)} of {len(trials)} trials blocked")
    print("  per trial, ms                                    min      p50      max")
    print(f"    sent -> the agent's match (finding.at)   {_ms([t.found for t in done if t.found is not None])}")
    stored = [t.stored - t.found for t in done if t.stored is not None and t.found is not None]
    print(f"    match -> block stored (created_at)       {_ms(stored)}")
    installed = [t.blocked - t.stored for t in done if t.stored is not None]
    print(f"    stored -> first refused connection       {_ms(installed)}")
    print(f"    sent -> first refused connection         {_ms([t.blocked for t in done])}")
    res = [t.blocked - t.last_ok for t in done if t.last_ok is not None]
    print(f"    resolution (first refused - last answered) {_ms(res)}")


def summary(trials: list[Trial]) -> str:
    done = [t.blocked for t in trials if t.blocked is not None]
    if not done:
        return f"time to block: never blocked in {len(trials)} trials"
    return (f"time to block over {len(trials)} trials: median {pct(done, 50) * 1000:.0f} ms, "
            f"max {max(done) * 1000:.0f} ms ({len(trials) - len(done)} never blocked)")
