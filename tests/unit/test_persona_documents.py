"""Persona documents: the issue's example, units, and every refusal with its field name."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import pytest
import yaml

from controller.core.documents import DocumentInvalid
from controller.features.persona.document import (DEFAULT_EXPIRY_WARNING_S, format_rfc3339, parse_persona,
                                          user_fields)

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
PAST = "2024-12-31T23:59:59Z"
FUTURE = "2030-12-31T23:59:59Z"
FUTURE_TS = dt.datetime(2030, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc).timestamp()

ISSUE_EXAMPLE = {"name": "TempDevNetwork", "ip_range": "10.100.0.0/24", "protocols": ["tcp", "udp"],
                 "qos": {"bandwidth": "100Mbps", "latency": "50ms"},
                 "security_policies": [{"protocol": "tcp", "port": 80, "action": "allow"},
                                       {"protocol": "tcp", "port": 22, "action": "deny"}],
                 "expiration": PAST}


def persona(**fields: Any) -> dict[str, Any]:
    return {**ISSUE_EXAMPLE, "expiration": FUTURE, **fields}


def refused(doc: Any, now: float | None = NOW) -> dict[str, str]:
    with pytest.raises(DocumentInvalid) as exc:
        parse_persona(doc, now)
    assert exc.value.what == "persona"
    return {e["field"]: e["reason"] for e in exc.value.errors}


# -- the issue's example -------------------------------------------------------------------

def test_issue_example_as_written_is_refused_only_for_its_past_date() -> None:
    errors = refused(ISSUE_EXAMPLE)
    assert list(errors) == ["body.expiration"]
    assert "2024-12-31T23:59:59Z is in the past" in errors["body.expiration"]
    assert "future" in errors["body.expiration"]


def test_issue_example_with_a_future_date_is_accepted_and_normalized() -> None:
    p = parse_persona(persona(), NOW)
    assert p.name == "TempDevNetwork"
    assert p.ip_range == ipaddress.IPv4Network("10.100.0.0/24")
    assert p.gateway == ipaddress.IPv4Address("10.100.0.1")
    assert p.expires_at == FUTURE_TS
    assert (p.bandwidth_kbps, p.latency_ms, p.expiry_warning_s) == (100_000, 50.0, DEFAULT_EXPIRY_WARNING_S)
    assert p.stored_body() == {
        "name": "TempDevNetwork", "ip_range": "10.100.0.0/24", "protocols": ["tcp", "udp"],
        "qos": {"bandwidth": "100Mbps", "latency": "50ms", "bandwidth_kbps": 100_000, "latency_ms": 50.0},
        "security_policies": [{"protocol": "tcp", "port": 80, "action": "allow"},
                              {"protocol": "tcp", "port": 22, "action": "deny"}],
        "expiration": FUTURE}


def test_issue_example_as_yaml_with_an_unquoted_timestamp() -> None:
    text = """
name: TempDevNetwork
ip_range: 10.100.0.0/24
protocols: [tcp, udp]
qos: {bandwidth: 100Mbps, latency: 50ms}
security_policies:
  - {protocol: tcp, port: 80, action: allow}
  - {protocol: tcp, port: 22, action: deny}
expiration: 2030-12-31T23:59:59Z
"""
    doc = yaml.safe_load(text)
    assert isinstance(doc["expiration"], dt.datetime)  # YAML made it a timestamp
    p = parse_persona(doc, NOW)
    assert p.stored_body()["expiration"] == FUTURE and p.expires_at == FUTURE_TS
    assert "in the past" in refused(yaml.safe_load(text.replace("2030", "2024")))["body.expiration"]


def test_the_stored_form_reads_back_unchanged() -> None:
    full = persona(alert_thresholds={"bandwidth": "80Mbps", "bytes": 10**9, "security_events": 5,
                                     "expiry_warning": "10m"},
                   description="dev", owner="team-a")
    stored = parse_persona(full, NOW).stored_body()
    assert stored["alert_thresholds"] == {"bandwidth": "80Mbps", "bytes": 10**9, "security_events": 5,
                                          "expiry_warning": "10m", "bandwidth_kbps": 80_000,
                                          "expiry_warning_s": 600}
    assert parse_persona(stored, NOW).stored_body() == stored  # a GET body can be PUT back
    assert user_fields(stored) == {**full, "expiration": FUTURE}


def test_a_computed_field_must_agree_with_its_text() -> None:
    errors = refused(persona(qos={"bandwidth": "100Mbps", "bandwidth_kbps": 5}))
    assert list(errors) == ["body.qos.bandwidth_kbps"]
    assert "100000" in errors["body.qos.bandwidth_kbps"]
    errors = refused(persona(qos={"latency_ms": 50}))
    assert "give latency" in errors["body.qos.latency_ms"]
    errors = refused(persona(alert_thresholds={"expiry_warning": "5m", "expiry_warning_s": 60}))
    assert list(errors) == ["body.alert_thresholds.expiry_warning_s"]
    # A bad source is reported once, on the source.
    assert list(refused(persona(qos={"bandwidth": "fast", "bandwidth_kbps": 5}))) == ["body.qos.bandwidth"]


# -- units ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kbps", [
    ("100Mbps", 100_000), ("100mbps", 100_000), ("100MBPS", 100_000), ("100 Mbps", 100_000),
    ("1.5Gbps", 1_500_000), ("64Kbps", 64), ("1000bps", 1), ("2500bps", 3), ("4Gbps", 4_000_000),
])
def test_bandwidth_units(text: str, kbps: int) -> None:
    p = parse_persona(persona(qos={"bandwidth": text}), NOW)
    assert p.bandwidth_kbps == kbps
    assert p.stored_body()["qos"] == {"bandwidth": text, "bandwidth_kbps": kbps}


@pytest.mark.parametrize("value, words", [
    ("fast", "'fast' is not a rate"), ("100", "is not a rate"), ("100MB", "is not a rate"),
    ("-5Mbps", "is not a rate"), ("0Mbps", "below 1Kbps"), ("400bps", "below 1Kbps"),
    ("5000Gbps", "above the largest rate"), (100, "must be text"), ("", "is not a rate"),
])
def test_bad_bandwidth(value: Any, words: str) -> None:
    errors = refused(persona(qos={"bandwidth": value}))
    assert list(errors) == ["body.qos.bandwidth"] and words in errors["body.qos.bandwidth"]


@pytest.mark.parametrize("text, ms", [("50ms", 50.0), ("0.05s", 50.0), ("2S", 2000.0), ("0.5ms", 0.5),
                                      ("10 ms", 10.0)])
def test_latency_units(text: str, ms: float) -> None:
    assert parse_persona(persona(qos={"latency": text}), NOW).latency_ms == ms


@pytest.mark.parametrize("value, words", [("fast", "is not a latency"), ("50", "is not a latency"),
                                          ("0ms", "longer than zero"), ("61s", "longer than 60s"),
                                          (50, "must be text")])
def test_bad_latency(value: Any, words: str) -> None:
    errors = refused(persona(qos={"latency": value}))
    assert list(errors) == ["body.qos.latency"] and words in errors["body.qos.latency"]


@pytest.mark.parametrize("value, seconds", [("30s", 30), ("5m", 300), ("1h", 3600), (90, 90),
                                            ("1h30m", 5400), ("120", 120)])
def test_expiry_warning_durations(value: Any, seconds: int) -> None:
    p = parse_persona(persona(alert_thresholds={"expiry_warning": value}), NOW)
    assert p.expiry_warning_s == seconds
    assert p.stored_body()["alert_thresholds"] == {"expiry_warning": value, "expiry_warning_s": seconds}


@pytest.mark.parametrize("value", ["soon", 0, -5, True, 1.5])
def test_bad_expiry_warning(value: Any) -> None:
    assert list(refused(persona(alert_thresholds={"expiry_warning": value}))) == [
        "body.alert_thresholds.expiry_warning"]


@pytest.mark.parametrize("field, value", [("bytes", 0), ("bytes", "10GB"), ("security_events", -1),
                                          ("security_events", 2.5), ("bandwidth", "fast")])
def test_bad_thresholds(field: str, value: Any) -> None:
    assert list(refused(persona(alert_thresholds={field: value}))) == [f"body.alert_thresholds.{field}"]


# -- fields -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, words", [
    ("10.100.0.300/24", "not a valid IPv4 network"), ("10.100.0.1/24", "host bits set"),
    ("10.100.0.0", "no prefix length"), ("10.0.0.0/8", "prefix length 8"),
    ("10.100.0.0/30", "prefix length 30"), ("not-a-cidr", "not a valid IPv4 network"),
    (None, "must be an IPv4 network"),
])
def test_bad_ip_range(value: Any, words: str) -> None:
    errors = refused(persona(ip_range=value))
    assert list(errors) == ["body.ip_range"] and words in errors["body.ip_range"]


@pytest.mark.parametrize("cidr", ["10.100.0.0/16", "10.100.0.0/29"])
def test_range_sizes_at_the_limits(cidr: str) -> None:
    assert str(parse_persona(persona(ip_range=cidr), NOW).ip_range) == cidr


def test_protocols() -> None:
    p = parse_persona(persona(protocols=["TCP", " udp", "icmp", "sctp", "gre", "esp", "ah"],
                              security_policies=[]), NOW)
    assert p.stored_body()["protocols"] == ["tcp", "udp", "icmp", "sctp", "gre", "esp", "ah"]
    errors = refused(persona(protocols=["tcp", "http"]))
    assert list(errors) == ["body.protocols[1]"] and "'http' is not allowed" in errors["body.protocols[1]"]
    assert "must not be empty" in refused(persona(protocols=[]))["body.protocols"]
    assert "more than once" in refused(persona(protocols=["tcp", "TCP"]))["body.protocols"]
    assert "is required" in refused({k: v for k, v in persona().items() if k != "protocols"})["body.protocols"]


def test_security_policies() -> None:
    p = parse_persona(persona(protocols=["tcp", "udp", "icmp"], security_policies=[
        {"protocol": "tcp", "port": "8000-8080", "action": "allow", "source": "192.0.2.0/24"},
        {"protocol": "icmp", "action": "deny", "destination": "10.0.0.0/8"},
        {"protocol": "udp", "port": "53", "action": "allow"}]), NOW)
    assert p.stored_body()["security_policies"] == [
        {"protocol": "tcp", "port": "8000-8080", "action": "allow", "source": "192.0.2.0/24"},
        {"protocol": "icmp", "action": "deny", "destination": "10.0.0.0/8"},
        {"protocol": "udp", "port": 53, "action": "allow"}]
    assert p.security_policies[0].destination == ipaddress.IPv4Network("0.0.0.0/0")


@pytest.mark.parametrize("policy, field, words", [
    ({"protocol": "icmp", "port": 8, "action": "allow"}, "port", "only applies to protocol tcp, udp or sctp"),
    ({"protocol": "tcp", "port": 70000, "action": "allow"}, "port", "out of range"),
    ({"protocol": "tcp", "port": "90-80", "action": "allow"}, "port", "reversed"),
    ({"protocol": "tcp", "action": "permit"}, "action", "'permit' is not allowed"),
    ({"protocol": "tcp"}, "action", "is required"),
    ({"protocol": "http", "action": "allow"}, "protocol", "'http' is not allowed"),
    ({"protocol": "sctp", "action": "allow"}, "protocol", "not one of the persona's protocols (icmp, tcp, udp)"),
    ({"protocol": "tcp", "action": "allow", "source": "10.1.1.1/8"}, "source", "host bits"),
    ({"protocol": "tcp", "action": "allow", "direction": "in"}, "direction", "not a known field"),
])
def test_bad_policy(policy: dict[str, Any], field: str, words: str) -> None:
    errors = refused(persona(protocols=["tcp", "udp", "icmp"],
                             security_policies=[{"protocol": "udp", "action": "allow"}, policy]))
    key = f"body.security_policies[1].{field}"
    assert list(errors) == [key] and words in errors[key], errors


@pytest.mark.parametrize("value, words", [
    ("2030-12-31T23:59:59", "has no timezone"), ("2030-12-31", "is not an RFC 3339 time"),
    ("tomorrow", "is not an RFC 3339 time"), ("2030-13-01T00:00:00Z", "is not a valid time"),
    (1924905599, "must be an RFC 3339 time"), (None, "is required"),
    (dt.datetime(2030, 12, 31), "has no timezone"), (dt.date(2030, 12, 31), "a date without a time"),
])
def test_bad_expiration(value: Any, words: str) -> None:
    errors = refused(persona(expiration=value))
    assert list(errors) == ["body.expiration"] and words in errors["body.expiration"], errors


def test_expiration_forms() -> None:
    offset = parse_persona(persona(expiration="2030-12-31T23:59:59+02:00"), NOW)
    assert offset.expires_at == FUTURE_TS - 7200
    assert offset.stored_body()["expiration"] == "2030-12-31T23:59:59+02:00"  # kept as written
    assert parse_persona(persona(expiration="2030-12-31t23:59:59.5z"), NOW).expires_at == FUTURE_TS + 0.5
    assert parse_persona(persona(expiration="2030-12-31 23:59:59Z"), NOW).expires_at == FUTURE_TS
    # The deadline is compared with the injected now, to the second.
    assert "in the past" in refused(persona(), now=FUTURE_TS)["body.expiration"]
    assert parse_persona(persona(), FUTURE_TS - 1).expires_at == FUTURE_TS
    # Reading a stored (expired) document back skips the check.
    assert parse_persona(persona(expiration=PAST), None).expires_at < NOW
    assert format_rfc3339(FUTURE_TS) == FUTURE and format_rfc3339(FUTURE_TS + 0.25) == "2030-12-31T23:59:59.250000Z"


def test_other_fields() -> None:
    assert "must not be blank" in refused(persona(name="  "))["body.name"]
    assert "is required" in refused({k: v for k, v in persona().items() if k != "name"})["body.name"]
    assert "not a known field" in refused(persona(colour="blue"))["body.colour"]
    assert list(refused(persona(description="x" * 1025))) == ["body.description"]
    assert list(refused(persona(owner=5))) == ["body.owner"]
    assert refused(["not", "a", "mapping"]) == {"body": "must be an object (a mapping of fields)"}


def test_every_bad_field_is_named_at_once() -> None:
    errors = refused({"name": "x", "ip_range": "10.100.0.0/33", "protocols": ["tcp", "http"],
                      "qos": {"bandwidth": "fast"}, "expiration": PAST,
                      "security_policies": [{"protocol": "udp", "action": "allow"}]})
    assert set(errors) == {"body.ip_range", "body.protocols[1]", "body.qos.bandwidth", "body.expiration",
                           "body.security_policies[0].protocol"}
