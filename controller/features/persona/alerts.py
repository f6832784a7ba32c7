"""Alerts: stored documents, raised once per condition and cleared when it goes away.

An alert is about one persona and one kind of condition (a threshold, the
latency objective, the coming expiry).  The runtime checks every persona at
each poll, so the same condition is seen again and again: an alert of one
(persona_id, kind) is raised once and not again until ``clear`` says the
condition went away.  The state lives in the store, under the id
``persona_id:kind``, so a restarted controller does not raise everything
again; the document keeps the latest alert of its key (``cleared_at`` None
while active), and every raise and clear is also a journal event, which
keeps the history.

Each raise counts ``hub_alerts_total{kind,severity}``.  Runs on the hub's
worker thread; REST reads the documents from the store.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from controller.features.persona.usage import (
    BANDWIDTH,
    BYTES,
    EXPIRY_WARNING,
    LATENCY,
    SECURITY_EVENTS,
    Crossing,
)
from controller.core.metrics import Metrics
from controller.store import Store

from controller.core.alerts import CRITICAL, KIND, SEVERITIES, WARNING, rfc3339  # noqa: F401
DEFAULT_SEVERITY = {BANDWIDTH: WARNING, BYTES: WARNING, SECURITY_EVENTS: CRITICAL,
                    LATENCY: WARNING, EXPIRY_WARNING: WARNING}

# The hub's ``journal(kind, subject, message, **data)``: appends to the store's journal.
# Event data names the alert's kind ``alert_kind`` (``kind`` is the event's own, "alert").
Journal = Callable[..., None]


def alert_id(persona_id: str, kind: str) -> str:
    return f"{persona_id}:{kind}"


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: str
    subject: str
    persona_id: str
    message: str
    value: float
    threshold: float
    at: str                         # RFC 3339, when raised
    cleared_at: str | None = None   # RFC 3339, when the condition went away

    @property
    def id(self) -> str:
        return alert_id(self.persona_id, self.kind)

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    def to_body(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Alert:
        return cls(**{k: body.get(k) for k in cls.__dataclass_fields__})


def describe(kind: str, value: float, threshold: float) -> str:
    """A sentence for operators, in the units of the kind."""
    if kind == BANDWIDTH:
        return f"rate {_rate(value)} exceeds {_rate(threshold)}"
    if kind == BYTES:
        return f"{int(value)} bytes exceed the threshold of {int(threshold)}"
    if kind == SECURITY_EVENTS:
        return f"{int(value)} denied attempts reach the threshold of {int(threshold)}"
    if kind == LATENCY:
        return f"round trip {value * 1000:.1f} ms misses the {threshold * 1000:g} ms objective"
    if kind == EXPIRY_WARNING:
        return f"expires in {int(value)} s"
    return f"{kind}: {value:g} (threshold {threshold:g})"


def _rate(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.1f} {unit}"
    return f"{bps:.0f} bit/s"


def find(store: Store, persona_id: str, kind: str) -> Alert | None:
    doc = store.find(KIND, alert_id(persona_id, kind))
    return Alert.from_body(doc.body) if doc else None


def raise_alert(store: Store, journal: Journal, metrics: Metrics, *, persona_id: str, kind: str,
                value: float, threshold: float, now: float, severity: str | None = None,
                subject: str | None = None, message: str | None = None) -> Alert | None:
    """Raise the alert unless the same (persona_id, kind) is already active.

    Returns the new alert, or None when it was already raised.  ``now`` is
    wall-clock seconds; ``subject`` (default the persona id) names what the
    journal entry is about, such as the persona's name.
    """
    current = find(store, persona_id, kind)
    if current is not None and current.active:
        return None
    severity = severity or DEFAULT_SEVERITY.get(kind, WARNING)
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
    alert = Alert(kind=kind, severity=severity, subject=subject or persona_id,
                  persona_id=persona_id, message=message or describe(kind, value, threshold),
                  value=value, threshold=threshold, at=rfc3339(now))
    with store.transaction():
        store.put(KIND, alert.id, alert.to_body())
        journal(KIND, alert.subject, f"{severity} {kind}: {alert.message}", state="raised",
                alert_kind=kind, severity=severity, persona_id=persona_id, value=value,
                threshold=threshold, at=alert.at)
    metrics.alerts.labels(kind, severity).inc()
    return alert


def clear(store: Store, journal: Journal, *, persona_id: str, kind: str, now: float) -> bool:
    """The condition went away: the next crossing raises a new alert.

    Returns whether an active alert was cleared."""
    current = find(store, persona_id, kind)
    if current is None or not current.active:
        return False
    body = {**current.to_body(), "cleared_at": rfc3339(now)}
    with store.transaction():
        store.put(KIND, current.id, body)
        journal(KIND, current.subject, f"cleared {kind}", state="cleared", alert_kind=kind,
                severity=current.severity, persona_id=persona_id, at=body["cleared_at"])
    return True


def sync(store: Store, journal: Journal, metrics: Metrics, *, persona_id: str,
         crossings: Iterable[Crossing], checked: Iterable[str], now: float,
         subject: str | None = None) -> list[Alert]:
    """Apply one poll's result: raise every crossing (deduplicated), clear every
    checked kind that no longer crosses.  Kinds not checked this time (no
    latency measured yet) are left as they are.  Returns the alerts raised."""
    crossings = list(crossings)
    raised = [alert for c in crossings
              if (alert := raise_alert(store, journal, metrics, persona_id=persona_id,
                                       kind=c.kind, value=c.value, threshold=c.threshold,
                                       now=now, subject=subject)) is not None]
    crossed = {c.kind for c in crossings}
    for kind in checked:
        if kind not in crossed:
            clear(store, journal, persona_id=persona_id, kind=kind, now=now)
    return raised


def alerts(store: Store, *, persona_id: str | None = None, kind: str | None = None,
           active: bool | None = None) -> list[Alert]:
    """Alerts (the latest of each persona and kind), oldest raise first, filtered
    as ``GET /v1/alerts?persona_id=&kind=`` asks."""
    found = [Alert.from_body(doc.body) for doc in store.list(KIND)]
    found = [a for a in found
             if (persona_id is None or a.persona_id == persona_id)
             and (kind is None or a.kind == kind)
             and (active is None or a.active == active)]
    return sorted(found, key=lambda a: (a.at, a.id))


def clear_persona(store: Store, journal: Journal, *, persona_id: str, now: float) -> int:
    """Clear every active alert of a persona (torn down: its conditions are gone).
    Returns how many were cleared."""
    return sum(clear(store, journal, persona_id=persona_id, kind=a.kind, now=now)
               for a in alerts(store, persona_id=persona_id, active=True))


def remove_persona(store: Store, persona_id: str) -> int:
    """Delete a persona's alert documents (its record is gone; the journal keeps
    the history).  Returns how many were deleted."""
    gone = alerts(store, persona_id=persona_id)
    with store.transaction():
        for alert in gone:
            store.delete(KIND, alert.id)
    return len(gone)
