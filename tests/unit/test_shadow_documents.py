"""Appliance manifests: defaults, the seed's field names, bad input refused naming the field;
the feature keeps the valid ones."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.core.documents import DocumentInvalid
from controller.features.shadow.document import KIND, SLOT, Slot, parse_manifest
from controller.features.shadow.feature import ShadowFeature
from controller.store import open_store
from tests.unit.fakecontext import FakeCore, fake_context

IF1, IF2 = "0000000000000a01:2", "0000000000000a01:3"
GOOD: dict[str, Any] = {"name": "web", "interfaces": [IF1], "appliance_image": "python3 -m http.server 80",
                        "shadowing": {"shadow_traffic_percentage": 50}}


def with_(**sections: Any) -> dict[str, Any]:
    """GOOD with sections replaced; ``shadowing`` entries are merged into GOOD's."""
    body = {**GOOD, **sections}
    if "shadowing" in sections:
        body["shadowing"] = {**GOOD["shadowing"], **sections["shadowing"]}
    return body


def refused(body: Any) -> dict[str, str]:
    with pytest.raises(DocumentInvalid) as info:
        parse_manifest(body)
    return {e["field"]: e["reason"] for e in info.value.errors}


def signatures(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"IDS_Signature_Scan": {"signatures": list(rules)}}


def test_the_defaults():
    m = parse_manifest(GOOD)
    s = m.shadowing
    assert (s.shadow_enabled, s.shadow_instance_count, s.shadow_traffic_percentage,
            s.shadow_analysis_profiles) == (True, 1, 50.0, [])
    assert (m.service, m.profiles, m.mirror.snaplen) == (None, None, None)
    assert (m.adjustment.mode, m.adjustment.min, m.adjustment.max) == ("fixed", 1.0, 50.0)
    assert (m.remediation.mode, m.remediation.ttl, m.remediation.min_severity) == \
        ("alert", 300, "high")
    p = parse_manifest(with_(profiles={"Anomaly_Detection": {}, "Fuzzing": {},
                                       "Performance_Profiling": {}})).profiles
    assert p is not None and p.IDS_Signature_Scan is None
    # (the settings of those three are the agent's: checked with its own readers)
    assert (p.Anomaly_Detection, p.Fuzzing, p.Performance_Profiling) == ({}, {}, {})


def test_the_seeds_fields_and_every_section():
    m = parse_manifest(with_(
        service=[{"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 53}],
        shadowing={"shadow_enabled": False, "shadow_instance_count": 2,
                   "shadow_traffic_percentage": 12.3,
                   "shadow_analysis_profiles": ["IDS_Signature_Scan", "Fuzzing"]},
        profiles={**signatures({"id": "evil", "content": "EVIL", "severity": "critical"},
                               {"id": "sqli", "pattern": r"(?i)union\s+select", "severity": "high"}),
                  "Anomaly_Detection": {"baseline": 120, "scan_ports": 20}},
        adjustment={"mode": "adaptive", "min": 0.5, "max": 20},
        remediation={"mode": "block", "ttl": "10m", "min_severity": "medium"},
        mirror={"snaplen": 128}))
    assert m.shadowing.shadow_traffic_percentage == 12.3 and m.shadowing.shadow_instance_count == 2
    assert [s.id for s in m.profiles.IDS_Signature_Scan.signatures] == ["evil", "sqli"]
    assert (m.profiles.Anomaly_Detection["baseline"], m.remediation.ttl, m.mirror.snaplen) == \
        (120, 600, 128)
    stored = m.stored_body()
    assert stored["shadowing"]["shadow_analysis_profiles"] == ["IDS_Signature_Scan", "Fuzzing"]
    assert parse_manifest(stored) == m      # what is stored parses back to the same manifest


@pytest.mark.parametrize("percentage", [0, 0.1, 12.3, 33.3, 99.9, 100, 100.0])
def test_percentages_in_steps_of_a_tenth_are_taken(percentage):
    assert parse_manifest(with_(shadowing={"shadow_traffic_percentage": percentage})
                          ).shadowing.shadow_traffic_percentage == pytest.approx(percentage)


PERCENT = "body.shadowing.shadow_traffic_percentage"
PROFILE_LIST = "body.shadowing.shadow_analysis_profiles"
SIGNATURE = "body.profiles.IDS_Signature_Scan.signatures"


@pytest.mark.parametrize("body, field, reason", [
    (with_(shadowing={"shadow_traffic_percentage": 120}), PERCENT, "100"),
    (with_(shadowing={"shadow_traffic_percentage": -0.1}), PERCENT, "0"),
    (with_(shadowing={"shadow_traffic_percentage": 12.34}), PERCENT, "more than one decimal"),
    (with_(shadowing={"shadow_traffic_percentage": 0.05}), PERCENT, "more than one decimal"),
    (with_(shadowing={"shadow_traffic_percentage": "50"}), PERCENT, "number"),
    (with_(shadowing={"shadow_analysis_profiles": ["Fuzzing", "Port_Knocking"]}),
     f"{PROFILE_LIST}[1]", "'Port_Knocking' is not allowed"),
    (with_(shadowing={"shadow_analysis_profiles": ["Fuzzing", "Fuzzing"]}), PROFILE_LIST,
     "more than once"),
    (with_(shadowing={"shadow_instance_count": -1}), "body.shadowing.shadow_instance_count", "0"),
    (with_(shadowing={"shadow_instance_count": 1.5}), "body.shadowing.shadow_instance_count",
     "whole number"),
    (with_(shadowing={"shadow_enabled": "yes"}), "body.shadowing.shadow_enabled", "boolean"),
    (with_(shadowing={"shadow_percentage": 5}), "body.shadowing.shadow_percentage",
     "not a known field"),
    ({k: v for k, v in GOOD.items() if k != "shadowing"}, "body.shadowing", "required"),
    (with_(interfaces=[]), "body.interfaces", "must not be empty"),
    (with_(interfaces=[IF1, IF1]), "body.interfaces", "more than once"),
    (with_(interfaces=[IF1, "eth0"]), "body.interfaces[1]", "pattern"),
    (with_(appliance_image="  "), "body.appliance_image", "blank"),
    (with_(name=""), "body.name", "at least 1"),
    (with_(service=[]), "body.service", "must not be empty"),
    (with_(service=[{"protocol": "icmp", "port": 1}]), "body.service[0].protocol", "'icmp'"),
    (with_(service=[{"protocol": "tcp", "port": 0}]), "body.service[0].port", "1"),
    (with_(service=[{"protocol": "tcp", "port": 80}] * 2), "body.service", "tcp/80"),
    (with_(profiles=signatures({"id": "a", "content": "x", "pattern": "x", "severity": "low"})),
     f"{SIGNATURE}[0]", "exactly one of content and pattern"),
    (with_(profiles=signatures({"id": "a", "severity": "low"})), f"{SIGNATURE}[0]",
     "exactly one of content and pattern"),
    (with_(profiles=signatures({"id": "a", "pattern": "(unclosed", "severity": "low"})),
     f"{SIGNATURE}[0].pattern", "not a regular expression"),
    (with_(profiles=signatures({"id": "a", "content": "x", "severity": "severe"})),
     f"{SIGNATURE}[0].severity", "'severe'"),
    (with_(profiles=signatures({"id": "a", "content": "x", "severity": "low"},
                               {"id": "a", "content": "y", "severity": "low"})),
     SIGNATURE, "signature id 'a' is listed more than once"),
    (with_(profiles={"Anomaly_Detection": {"baseline": "2m"}}),
     "body.profiles.Anomaly_Detection", "baseline"),
    (with_(profiles={"Fuzzing": {"rate": 0}}), "body.profiles.Fuzzing", "setting rate: 0"),
    (with_(profiles={"Performance_Profiling": {"p99": 5}}), "body.profiles.Performance_Profiling",
     "p99"),
    (with_(profiles={"Port_Knocking": {}}), "body.profiles.Port_Knocking", "not a known field"),
    (with_(adjustment={"min": 60}), "body.adjustment.max", "below min (60.0)"),
    (with_(adjustment={"min": 20, "max": 10}), "body.adjustment.max", "below min"),
    (with_(adjustment={"max": 101}), "body.adjustment.max", "100"),
    (with_(adjustment={"mode": "smart"}), "body.adjustment.mode", "'smart'"),
    (with_(remediation={"mode": "quarantine"}), "body.remediation.mode", "'quarantine'"),
    (with_(remediation={"ttl": 0}), "body.remediation.ttl", "zero"),
    (with_(remediation={"min_severity": "urgent"}), "body.remediation.min_severity", "'urgent'"),
    (with_(mirror={"snaplen": 63}), "body.mirror.snaplen", "64"),
    (with_(mirror={"snaplen": 65536}), "body.mirror.snaplen", "65535"),
    (with_(surprise=1), "body.surprise", "not a known field"),
])
def test_bad_manifests_are_refused_naming_the_field(body, field, reason):
    errors = refused(body)
    assert field in errors and reason in errors[field], errors


def test_every_bad_field_is_named_at_once():
    errors = refused(with_(shadowing={"shadow_traffic_percentage": 120,
                                      "shadow_analysis_profiles": ["Nope"]},
                           adjustment={"min": 30, "max": 20}))
    assert set(errors) == {PERCENT, f"{PROFILE_LIST}[0]", "body.adjustment.max"}


def test_a_manifest_needs_its_fields_and_an_object():
    assert {"body.name", "body.interfaces", "body.appliance_image", "body.shadowing"} == \
        set(refused({}))
    assert "body" in refused([])
    assert set(refused({**GOOD, "shadowing": {}})) == {PERCENT}


def test_the_documented_example_is_a_valid_manifest():
    path = Path(__file__).resolve().parents[2] / "docs/examples/appliance-web.yaml"
    m = parse_manifest(yaml.safe_load(path.read_text()))
    assert (m.shadowing.shadow_traffic_percentage, m.remediation.mode, m.remediation.ttl) == \
        (10.0, "block", 300)
    assert [s.id for s in m.profiles.IDS_Signature_Scan.signatures] == ["evil-marker", "sql-union"]


def test_the_feature_keeps_the_valid_manifests_and_slots(caplog):
    store, core = open_store(":memory:"), FakeCore()
    store.put(KIND, "web", parse_manifest(GOOD).stored_body())
    store.put(KIND, "bad", {**GOOD, "shadowing": {"shadow_traffic_percentage": 120}})
    store.put(SLOT, "slot-1", {"interface_id": IF2, "key": "ab" * 24, "created_at": 1.0})
    store.put(SLOT, "slot-2", {"interface_id": IF2})
    feature = ShadowFeature(fake_context(core, store))
    feature.load()
    assert list(feature.appliances) == ["web"] and feature.appliances["web"] == parse_manifest(GOOD)
    assert feature.slots == {"slot-1": Slot("slot-1", IF2, "ab" * 24)}
    assert "invalid appliance manifest bad" in caplog.text and "shadow slot slot-2" in caplog.text
    generation = core.generation
    feature.documents_changed(SLOT)                      # nothing changed: nothing to recompile
    assert core.generation == generation
    store.put(KIND, "web", with_(shadowing={"shadow_traffic_percentage": 5}))
    feature.documents_changed(KIND)
    assert core.generation == generation + 1
    assert feature.appliances["web"].shadowing.shadow_traffic_percentage == 5.0
    store.close()
