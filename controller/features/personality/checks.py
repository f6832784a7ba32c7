"""Health checks of a personality change: probes sent as the interface, replies punted.

After the apply, each check is a probe (ping, DNS query, TCP SYN) injected as
if the interface sent it, through its own new pipeline (packet-out to TABLE
with in_port = the interface), and a punt flow in l2 for its reply.  A check
passes when its reply comes back; an unanswered probe is resent every
`PROBE_RESEND` seconds until its timeout.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from controller import probes
from controller.core.view import FabricView
from controller.features.personality.compile import (HOOK_L2, Interface, PersonalityPolicy,
                                                     probe_cookie)
from controller.pipeline import tables
from controller.pipeline.actions import Output
from controller.pipeline.flowspec import FlowSpec, flow

PROBE_RESEND = 0.5       # an unanswered probe is sent again this often


@dataclass
class Check:
    desc: str
    probe: probes.Probe
    timeout: float
    deadline: float
    reset: bytes | None = None   # tcp: the RST that closes the probe's half-open connection
    passed: bool = False
    sent_at: float = -1.0


@dataclass(frozen=True)
class Due:
    """What the checks need now: probes to (re)send, a failure, or all passed."""
    send: tuple[Check, ...] = ()
    failure: str | None = None
    passed: bool = False


@dataclass(frozen=True)
class Reply:
    """A punted packet that answered a check: it passed, or (a TCP reset) it failed."""
    check: Check
    failure: str | None = None


def due(checks: list[Check], now: float) -> Due:
    """Past a deadline: failed; else the unanswered probes due for (re)sending."""
    send = []
    for check in checks:
        if check.passed:
            continue
        if now > check.deadline:
            return Due(failure=f"health check {check.desc} failed: no answer within "
                               f"{check.timeout:g} s")
        if now - check.sent_at >= PROBE_RESEND:
            check.sent_at = now
            send.append(check)
    return Due(send=tuple(send), passed=all(c.passed for c in checks))


def reply(checks: list[Check], data: bytes) -> Reply | None:
    """The check a punted packet answers (marked passed), or None."""
    for check in checks:
        if check.passed:
            continue
        if check.probe.is_reply(data):
            check.passed = True
            return Reply(check)
        if check.probe.kind == "tcp" and check.probe.refused(data):
            return Reply(check, f"health check {check.desc} failed: connection refused")
    return None


class NoTarget(ValueError):
    """A check has nothing to probe (no gateway or DNS server known)."""


def build_checks(specs: list[dict[str, Any]], policy: PersonalityPolicy | None,
                 iface: Interface, src_ip: str, view: FabricView, rng: random.Random,
                 now: float) -> list[Check]:
    """One Check per (spec, target); NoTarget if a spec has none."""
    checks = []
    for spec in specs:
        for target_ip in _targets(spec, policy, src_ip, view):
            if target_ip is None:
                raise NoTarget(f"{spec['type']} check: no target (no subnet gateway "
                               "or DNS server known)")
            probe, reset = _probe(spec, iface, src_ip, target_ip, view, rng)
            desc = f"{spec['type']} {target_ip}" + (f":{spec['port']}" if spec.get("port") else "")
            checks.append(Check(desc, probe, spec["timeout_seconds"],
                                now + spec["timeout_seconds"], reset))
    return checks


def reply_flows(op_id: str, checks: list[Check]) -> tuple[FlowSpec, ...]:
    """The l2 flows that punt the checks' replies to the controller."""
    return tuple(flow(tables.L2.id, HOOK_L2 + 20, c.probe.reply_match, [Output.controller()],
                      cookie=probe_cookie(op_id)) for c in checks)


def _targets(spec: dict[str, Any], policy: PersonalityPolicy | None, src_ip: str,
             view: FabricView) -> list[str | None]:
    if spec.get("target"):
        return [spec["target"]]
    if spec["type"] == "dns":
        return list(policy.dns_servers) if policy and policy.dns_servers else [None]
    subnet = view.subnet_of(src_ip)
    return [str(subnet.gateway) if subnet else None]


def _probe(spec: dict[str, Any], iface: Interface, src_ip: str, dst_ip: str,
           view: FabricView, rng: random.Random) -> tuple[probes.Probe, bytes | None]:
    dst_mac = view.next_mac(src_ip, dst_ip)
    sport = rng.randrange(33000, 60000)
    if spec["type"] in ("gateway", "ping"):
        return probes.ping_probe(iface.mac, src_ip, dst_mac, dst_ip,
                                 rng.randrange(1, 0xFFFF), 1), None
    if spec["type"] == "dns":
        return probes.dns_probe(iface.mac, src_ip, dst_mac, dst_ip, sport,
                                rng.randrange(1, 0xFFFF)), None
    isn = rng.randrange(1, 2**31)
    return (probes.tcp_probe(iface.mac, src_ip, dst_mac, dst_ip, spec["port"], sport, isn),
            probes.tcp_reset(iface.mac, src_ip, dst_mac, dst_ip, sport, spec["port"], isn + 1))
