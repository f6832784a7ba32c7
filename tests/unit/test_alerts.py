"""Alerts: stored, journaled, counted, raised once per condition until cleared."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from controller.features.persona import alerts
from controller.features.persona.usage import (
    Counters,
    Crossing,
    Sample,
    Thresholds,
    check_thresholds,
    checked_kinds,
    update,
)
from controller.core.metrics import Metrics
from controller.features.persona.metrics import PersonaMetrics
from controller.store import Store, open_store

T0 = 1_900_000_000.0        # wall clock of the first poll


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    yield s
    s.close()


@pytest.fixture
def journal(store: Store):
    """What the hub's journal does: one store event per call."""
    def journal(kind: str, subject: str, message: str, **data) -> None:
        store.append_event(kind, subject, message, data)
    return journal


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def raised_count(metrics: Metrics, kind: str, severity: str) -> float:
    value = metrics.registry.get_sample_value("hub_alerts_total",
                                              {"kind": kind, "severity": severity})
    return value or 0.0


def alert_events(store: Store) -> list:
    return store.events(kind="alert", limit=1000)


def bandwidth(store, journal, metrics, *, persona="p1", value=2e6, now=T0, **kw):
    return alerts.raise_alert(store, journal, metrics, persona_id=persona, kind="bandwidth",
                              value=value, threshold=1e6, now=now, **kw)


def test_raise_stores_journals_and_counts(store: Store, journal, metrics: Metrics) -> None:
    alert = bandwidth(store, journal, metrics, subject="TempDevNetwork")
    assert alert is not None and alert.active
    doc = store.get("alert", "p1:bandwidth")
    assert doc.body == {"kind": "bandwidth", "severity": "warning", "subject": "TempDevNetwork",
                        "persona_id": "p1", "message": "rate 2.0 Mbit/s exceeds 1.0 Mbit/s",
                        "value": 2e6, "threshold": 1e6, "at": "2030-03-17T17:46:40.000Z",
                        "cleared_at": None}
    [event] = alert_events(store)
    assert event.subject == "TempDevNetwork"
    assert event.message == "warning bandwidth: rate 2.0 Mbit/s exceeds 1.0 Mbit/s"
    assert event.data == {"state": "raised", "alert_kind": "bandwidth", "severity": "warning",
                          "persona_id": "p1", "value": 2e6, "threshold": 1e6,
                          "at": "2030-03-17T17:46:40.000Z"}
    assert raised_count(metrics, "bandwidth", "warning") == 1


def test_a_condition_that_holds_raises_once(store: Store, journal, metrics: Metrics) -> None:
    assert bandwidth(store, journal, metrics) is not None
    for i in range(1, 10):
        assert bandwidth(store, journal, metrics, value=3e6, now=T0 + i) is None
    assert len(alert_events(store)) == 1
    assert raised_count(metrics, "bandwidth", "warning") == 1
    assert store.get("alert", "p1:bandwidth").body["value"] == 2e6     # the first crossing


def test_cleared_then_raised_again(store: Store, journal, metrics: Metrics) -> None:
    bandwidth(store, journal, metrics)
    assert alerts.clear(store, journal, persona_id="p1", kind="bandwidth", now=T0 + 5)
    cleared = alerts.find(store, "p1", "bandwidth")
    assert cleared is not None and not cleared.active
    assert cleared.cleared_at == "2030-03-17T17:46:45.000Z"
    assert not alerts.clear(store, journal, persona_id="p1", kind="bandwidth", now=T0 + 6)
    again = bandwidth(store, journal, metrics, value=5e6, now=T0 + 9)
    assert again is not None and again.active and again.value == 5e6
    assert [e.data["state"] for e in alert_events(store)] == ["raised", "cleared", "raised"]
    assert raised_count(metrics, "bandwidth", "warning") == 2


def test_clearing_what_was_never_raised_does_nothing(store: Store, journal) -> None:
    assert not alerts.clear(store, journal, persona_id="p1", kind="bytes", now=T0)
    assert alert_events(store) == [] and store.list("alert") == []


def test_personas_and_kinds_are_independent(store: Store, journal, metrics: Metrics) -> None:
    assert bandwidth(store, journal, metrics, persona="p1") is not None
    assert bandwidth(store, journal, metrics, persona="p2") is not None
    assert alerts.raise_alert(store, journal, metrics, persona_id="p1", kind="security_events",
                              value=5, threshold=5, now=T0) is not None
    assert raised_count(metrics, "bandwidth", "warning") == 2
    assert raised_count(metrics, "security_events", "critical") == 1   # the default severity
    assert [a.id for a in alerts.alerts(store)] == ["p1:bandwidth", "p1:security_events",
                                                    "p2:bandwidth"]


def test_deduplication_survives_a_restart(store: Store, journal, metrics: Metrics) -> None:
    bandwidth(store, journal, metrics)
    fresh_metrics = Metrics(CollectorRegistry())     # a new controller process, same store
    assert bandwidth(store, journal, fresh_metrics, now=T0 + 60) is None
    assert raised_count(fresh_metrics, "bandwidth", "warning") == 0


def test_bad_severity_is_refused_and_nothing_is_written(store: Store, journal,
                                                       metrics: Metrics) -> None:
    with pytest.raises(ValueError):
        bandwidth(store, journal, metrics, severity="bad")
    assert store.list("alert") == [] and alert_events(store) == []


def test_a_failing_journal_leaves_no_alert_behind(store: Store, metrics: Metrics) -> None:
    def broken(*args, **kwargs) -> None:
        raise RuntimeError("journal down")
    with pytest.raises(RuntimeError):
        bandwidth(store, broken, metrics)
    assert store.list("alert") == []
    assert raised_count(metrics, "bandwidth", "warning") == 0


def test_explicit_severity_and_message(store: Store, journal, metrics: Metrics) -> None:
    alert = alerts.raise_alert(store, journal, metrics, persona_id="p1", kind="bytes",
                               value=10, threshold=5, now=T0, severity="critical",
                               message="quota used up")
    assert alert is not None and alert.message == "quota used up" and alert.severity == "critical"
    assert raised_count(metrics, "bytes", "critical") == 1


@pytest.mark.parametrize("kind, value, threshold, text", [
    ("bandwidth", 150e6, 100e6, "rate 150.0 Mbit/s exceeds 100.0 Mbit/s"),
    ("bytes", 2048, 1000, "2048 bytes exceed the threshold of 1000"),
    ("security_events", 7, 5, "7 denied attempts reach the threshold of 5"),
    ("latency", 0.0625, 0.05, "round trip 62.5 ms misses the 50 ms objective"),
    ("expiry_warning", 299.4, 300, "expires in 299 s"),
    ("other", 1.5, 1, "other: 1.5 (threshold 1)"),
])
def test_describe(kind: str, value: float, threshold: float, text: str) -> None:
    assert alerts.describe(kind, value, threshold) == text


def test_listing_filters(store: Store, journal, metrics: Metrics) -> None:
    bandwidth(store, journal, metrics, persona="p1", now=T0 + 2)
    bandwidth(store, journal, metrics, persona="p2", now=T0 + 1)
    alerts.raise_alert(store, journal, metrics, persona_id="p2", kind="bytes", value=9,
                       threshold=1, now=T0 + 3)
    alerts.clear(store, journal, persona_id="p2", kind="bytes", now=T0 + 4)
    assert [a.id for a in alerts.alerts(store)] == ["p2:bandwidth", "p1:bandwidth", "p2:bytes"]
    assert [a.id for a in alerts.alerts(store, persona_id="p2")] == ["p2:bandwidth", "p2:bytes"]
    assert [a.id for a in alerts.alerts(store, kind="bytes")] == ["p2:bytes"]
    assert [a.id for a in alerts.alerts(store, active=True)] == ["p2:bandwidth", "p1:bandwidth"]


def test_teardown_clears_and_removal_deletes(store: Store, journal, metrics: Metrics) -> None:
    bandwidth(store, journal, metrics, persona="p1")
    alerts.raise_alert(store, journal, metrics, persona_id="p1", kind="expiry_warning",
                       value=10, threshold=300, now=T0)
    bandwidth(store, journal, metrics, persona="p2")
    assert alerts.clear_persona(store, journal, persona_id="p1", now=T0 + 1) == 2
    assert alerts.clear_persona(store, journal, persona_id="p1", now=T0 + 2) == 0
    assert [a.active for a in alerts.alerts(store, persona_id="p1")] == [False, False]
    assert alerts.remove_persona(store, "p1") == 2
    assert [a.id for a in alerts.alerts(store)] == ["p2:bandwidth"]


def test_sync_raises_clears_and_leaves_unchecked_kinds(store: Store, journal,
                                                       metrics: Metrics) -> None:
    raised = alerts.sync(store, journal, metrics, persona_id="p1",
                         crossings=[Crossing("bandwidth", 2e6, 1e6), Crossing("latency", 0.2, 0.05)],
                         checked=["bandwidth", "latency"], now=T0)
    assert [a.kind for a in raised] == ["bandwidth", "latency"]
    # Next poll: bandwidth is fine, latency was not measured (not checked).
    raised = alerts.sync(store, journal, metrics, persona_id="p1", crossings=[],
                         checked=["bandwidth"], now=T0 + 1)
    assert raised == []
    assert {a.kind: a.active for a in alerts.alerts(store)} == {"bandwidth": False, "latency": True}


def test_polls_over_time_give_one_alert_per_crossing(store: Store, journal,
                                                     metrics: Metrics) -> None:
    """The runtime's loop: sample, check, sync.  The rate goes over the threshold
    for three polls, under for two, over again: two alerts, one clear between."""
    thresholds = Thresholds(bandwidth_bps=8000)
    usage = update(None, Sample.of(0.0, {"total": Counters()}))
    sent = 0
    for second, step in enumerate([2000, 2000, 2000, 100, 100, 5000, 5000], start=1):
        sent += step
        usage = update(usage, Sample.of(float(second), {"total": Counters(bytes_out=sent)}))
        now = T0 + second
        crossings = check_thresholds(usage, thresholds, None, None, None, now)
        alerts.sync(store, journal, metrics, persona_id="p1", crossings=crossings,
                    checked=checked_kinds(thresholds, None, None, None), now=now)
    assert [(e.data["state"], e.data["at"]) for e in alert_events(store)] == [
        ("raised", "2030-03-17T17:46:41.000Z"), ("cleared", "2030-03-17T17:46:44.000Z"),
        ("raised", "2030-03-17T17:46:46.000Z")]
    assert raised_count(metrics, "bandwidth", "warning") == 2


# -- persona metrics ---------------------------------------------------------------

def test_persona_gauges_and_forgetting_them(metrics: Metrics) -> None:
    get = metrics.registry.get_sample_value
    personas = PersonaMetrics(metrics.registry)
    personas.observe("p1", bytes_out=10, bytes_in=20, rate_out=80.0, rate_in=160.0, denied=3)
    personas.observe("p2", bytes_out=1, bytes_in=2, rate_out=0.0, rate_in=0.0, denied=0)
    personas.personas.labels("active").set(2)
    assert get("hub_persona_bytes", {"persona": "p1", "direction": "outbound"}) == 10
    assert get("hub_persona_bytes", {"persona": "p1", "direction": "inbound"}) == 20
    assert get("hub_persona_rate_bps", {"persona": "p1", "direction": "inbound"}) == 160.0
    assert get("hub_persona_denied", {"persona": "p1"}) == 3
    assert get("hub_personas", {"state": "active"}) == 2
    personas.forget("p1")
    personas.forget("p1")                 # twice, or never observed: no error
    personas.forget("never-seen")
    for name, labels in [("hub_persona_bytes", {"persona": "p1", "direction": "outbound"}),
                         ("hub_persona_rate_bps", {"persona": "p1", "direction": "inbound"}),
                         ("hub_persona_denied", {"persona": "p1"})]:
        assert get(name, labels) is None
    assert get("hub_persona_bytes", {"persona": "p2", "direction": "inbound"}) == 2
