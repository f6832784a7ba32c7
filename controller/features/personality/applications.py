"""Application access policy: which applications an interface's connections may carry.

Pure: `ApplicationPolicy.of` converts a personality's
`application_access_policy` as its document model parsed it; `PortPolicy.decide`
is the verdict on a connection's first payload; `firewall_flows` and
`count_flows` are the flows that enforce it, added by
`controller.features.personality.compile` to the interface's firewall and
count tables.

Semantics (docs/personalities.md has the user-facing version):

- Rules are keyed by (protocol, port): the destination port of the packet
  that opens a connection, in either direction (opened by the interface or
  toward it).  Ports no rule names are left to the firewall alone.
- The policy applies only after the firewall has allowed a connection: an
  application `allow` never admits what the firewall refuses.
- On a port with a `deny` rule without signature, every connection is
  refused (deny wins over allow): a flow drops it.
- On a port with signature rules, the first payload decides: a matching deny
  signature refuses, else a matching allow signature admits, else the
  port's fallback does: admit if the port also has an allow rule without
  signature, refuse if it has allow signatures only (only the recognized
  applications may use it), admit if it has deny signatures only.
- A port with allow rules without signature only changes nothing.
- A plain signature matches when its text (UTF-8) occurs anywhere in the
  payload; "re:<regex>" when `re.search` of the regex (compiled as a bytes
  pattern) finds it.

How signature ports are enforced (the ct_mark bits are in
`controller.pipeline.ctmark`; each firewall table writes and reads its own
field, OUT for connections the interface opened, IN for connections opened
toward it): the packet that opens the connection is admitted by a rule and
committed, then, in the count table, committed again with the APP_INSPECT
verdict.  A TCP SYN goes on (it has no payload); a UDP packet is the
payload, so it goes to the controller.  From then on, packets
of the opener's side carrying APP_INSPECT go to the controller (the
firewall table, `APP_INSPECT_PUNT`); replies pass.  The controller
(`controller.features.personality.inspector`) sends payload-less packets on and judges
the first payload, then re-commits the connection with APP_ALLOWED (and
sends the packet on) or APP_DENIED (and drops it).  Later packets of a
denied connection are dropped by `APP_DENIED_DROP`.  If the opener sends
`MAX_EMPTY_PACKETS` packets without payload, the port's fallback decides.

The count table tells a packet the firewall just admitted and committed
from any other by `ct_state=-trk`: after a `ct(commit)` without a table,
OVS clears the conntrack fields for the rest of the pass (ovs-actions(7)),
while established packets arrive tracked, and packets resumed by
`ct(table=count)` (DNS, the controller's verdicts) are tracked again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from controller.features.personality import document
from controller.pipeline import ctmark
from controller.pipeline.actions import Action, Conntrack, Output, ct_state
from controller.pipeline.flowspec import FlowSpec, MatchValue, flow

IP_PROTOS = {"tcp": 6, "udp": 17}
PORT_FIELDS = {"tcp": "tcp_dst", "udp": "udp_dst"}
MAX_EMPTY_PACKETS = 4    # opener packets without payload before the fallback decides

# Priorities.  Firewall tables: below CT_INVALID (65000), above every other flow
# there (established, related, committed +new, DNS, rules).  Count tables:
# above the per-protocol counting flows (20).
APP_DENIED_DROP = 64600
APP_INSPECT_PUNT = 64500
APP_ADMITTED = 30

INSPECT = "inspect"
DENY = "deny"
ALLOW = "allow"


@dataclass(frozen=True)
class Signature:
    """Payload bytes as text, or "re:<regex>" (a bytes pattern)."""
    text: str
    pattern: Any = field(default=None, compare=False, hash=False, repr=False)

    @classmethod
    def of(cls, text: str) -> "Signature":
        """A signature the document model has validated (its regex compiles as bytes)."""
        body = text.encode("utf-8")
        return cls(text, re.compile(body[3:]) if text.startswith("re:") else body)

    def matches(self, payload: bytes) -> bool:
        if isinstance(self.pattern, bytes):
            return self.pattern in payload
        return self.pattern.search(payload) is not None


@dataclass(frozen=True)
class AppRule:
    name: str
    action: str                      # allow | deny
    protocol: str                    # tcp | udp
    port: int
    signature: Signature | None = None

    @classmethod
    def of(cls, rule: document.ApplicationRule, action: str) -> "AppRule":
        return cls(rule.name, action, rule.protocol, rule.port,
                   None if rule.signature is None else Signature.of(rule.signature))


@dataclass(frozen=True)
class Verdict:
    action: str            # allow | deny
    reason: str            # for logs and people

    @property
    def allowed(self) -> bool:
        return self.action == ALLOW


@dataclass(frozen=True)
class PortPolicy:
    """Every rule for one (protocol, port), and what they make of a connection to it."""
    protocol: str
    port: int
    rules: tuple[AppRule, ...]

    def _names(self, action: str, signed: bool) -> list[AppRule]:
        return [r for r in self.rules
                if r.action == action and (r.signature is not None) == signed]

    @property
    def treatment(self) -> str:
        """DENY (a flow refuses every connection), INSPECT (the first payload decides), ALLOW."""
        if self._names(DENY, False):
            return DENY
        if any(r.signature is not None for r in self.rules):
            return INSPECT
        return ALLOW

    def fallback(self, why: str) -> Verdict:
        """What a connection no signature recognized gets."""
        plain_allow = self._names(ALLOW, False)
        if self._names(DENY, False):
            return Verdict(DENY, f"{why}; {self._key} is denied ({self._list(DENY, False)})")
        if plain_allow:
            return Verdict(ALLOW, f"{why}; {self._key} is allowed ({self._list(ALLOW, False)})")
        if self._names(ALLOW, True):
            return Verdict(DENY, f"{why}; {self._key} admits only {self._list(ALLOW, True)}")
        return Verdict(ALLOW, f"{why}; {self._key} refuses only {self._list(DENY, True)}")

    def decide(self, payload: bytes) -> Verdict:
        """The verdict on a connection's first payload (deny signatures first)."""
        for action in (DENY, ALLOW):
            for rule in self._names(action, True):
                assert rule.signature is not None
                if rule.signature.matches(payload):
                    return Verdict(action, f"{action} rule {rule.name!r}: signature "
                                           f"{rule.signature.text!r} matched")
        return self.fallback("no signature matched")

    @property
    def _key(self) -> str:
        return f"{self.protocol}/{self.port}"

    def _list(self, action: str, signed: bool) -> str:
        return ", ".join(repr(r.name) for r in self._names(action, signed))


@dataclass(frozen=True)
class ApplicationPolicy:
    rules: tuple[AppRule, ...] = ()

    @classmethod
    def of(cls, policy: document.ApplicationAccessPolicy | None) -> "ApplicationPolicy":
        """The rules of a parsed `application_access_policy`: allow first, each in order."""
        if policy is None:
            return cls()
        return cls(tuple(AppRule.of(r, ALLOW) for r in policy.allow)
                   + tuple(AppRule.of(r, DENY) for r in policy.deny))

    def ports(self) -> tuple[PortPolicy, ...]:
        """One PortPolicy per (protocol, port) named, sorted."""
        keys = sorted({(r.protocol, r.port) for r in self.rules})
        return tuple(PortPolicy(p, n, tuple(r for r in self.rules
                                            if (r.protocol, r.port) == (p, n)))
                     for p, n in keys)

    def port(self, protocol: str, port: int) -> PortPolicy | None:
        rules = tuple(r for r in self.rules if (r.protocol, r.port) == (protocol, port))
        return PortPolicy(protocol, port, rules) if rules else None

    def enforced(self) -> tuple[PortPolicy, ...]:
        """The ports that need flows (DENY or INSPECT); ALLOW-only ports need none."""
        return tuple(p for p in self.ports() if p.treatment != ALLOW)


# ------------------------------------------------------------------- the flows
def mark_commit(zone: int, direction: str, verdict: int, table: int | None = None) -> Conntrack:
    """Commit (again) a connection the `direction` firewall admitted, with a verdict.

    Only the direction's own ct_mark field is written (a masked set).
    """
    mark, mask = ctmark.commit(direction, verdict)
    return Conntrack(commit=True, zone=zone, table=table, mark=mark, mark_mask=mask)


def firewall_flows(policy: ApplicationPolicy, table: int, direction: str,
                   ip: Mapping[str, MatchValue], cookie: int) -> list[FlowSpec]:
    """Firewall table of `direction`: drop denied connections, punt those being inspected.

    `ip` is the direction's IPv4 match (interface hook fields and eth_type).
    The opener's packets (-rpl) are judged by the table's own mark field, the
    replies (+rpl) by the other one (see controller.pipeline.ctmark).  Only
    the opener's side is punted: replies pass, and related packets (ICMP
    errors) take the table's related flow.
    """
    enforced = policy.enforced()
    if not enforced:
        return []
    denied = ctmark.APP_DENIED
    out = [flow(table, APP_DENIED_DROP, {**ip, "ct_state": ct_state("+trk-rpl"),
                                         "ct_mark": ctmark.app(direction, denied)},
                cookie=cookie),
           flow(table, APP_DENIED_DROP, {**ip, "ct_state": ct_state("+trk+rpl"),
                                         "ct_mark": ctmark.app(ctmark.replied(direction), denied)},
                cookie=cookie)]
    if any(p.treatment == INSPECT for p in enforced):
        out.append(flow(table, APP_INSPECT_PUNT,
                        {**ip, "ct_state": ct_state("+trk-rpl-rel"),
                         "ct_mark": ctmark.app(direction, ctmark.APP_INSPECT)},
                        [Output.controller()], cookie=cookie))
    return out


@dataclass(frozen=True)
class Counted:
    """What the count table does with a packet of one protocol: actions, goto, meter."""
    actions: tuple[Action, ...]
    goto: int | None
    meter: int | None


def count_flows(policy: ApplicationPolicy, table: int, direction: str, zone: int,
                ip: Mapping[str, MatchValue], counted: Mapping[str, Counted],
                cookie: int) -> list[FlowSpec]:
    """Count table of `direction`: a connection its firewall just admitted to an enforced port.

    DENY: re-committed APP_DENIED, dropped.  INSPECT: re-committed
    APP_INSPECT; TCP (the SYN) counted and sent on as usual, UDP (its first
    packet is the payload) sent to the controller.
    """
    out = []
    for port in policy.enforced():
        match = {**ip, "ct_state": ct_state("-trk"), "ip_proto": IP_PROTOS[port.protocol],
                 PORT_FIELDS[port.protocol]: port.port}
        if port.treatment == DENY:
            out.append(flow(table, APP_ADMITTED, match,
                            [mark_commit(zone, direction, ctmark.APP_DENIED)], cookie=cookie))
        elif port.protocol == "tcp":
            c = counted["tcp"]
            out.append(flow(table, APP_ADMITTED, match,
                            [mark_commit(zone, direction, ctmark.APP_INSPECT), *c.actions],
                            goto=c.goto, cookie=cookie, meter=c.meter))
        else:
            out.append(flow(table, APP_ADMITTED, match,
                            [mark_commit(zone, direction, ctmark.APP_INSPECT),
                             Output.controller()],
                            cookie=cookie))
    return out


def verdict_actions(zone: int, direction: str, verdict: Verdict | None,
                    count_table: int) -> tuple[Action, ...]:
    """Packet-out actions for a punted packet of a connection `direction`'s firewall inspects.

    None (no payload yet): on to the count table, the connection unchanged.
    Allowed: re-committed APP_ALLOWED and on to the count table.  Denied:
    re-committed APP_DENIED, and the packet goes nowhere.
    """
    if verdict is None:
        return (Conntrack(zone=zone, table=count_table),)
    if verdict.allowed:
        return (mark_commit(zone, direction, ctmark.APP_ALLOWED, count_table),)
    return (mark_commit(zone, direction, ctmark.APP_DENIED),)
