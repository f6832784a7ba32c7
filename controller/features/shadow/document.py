"""Appliance manifests: a production appliance, and the shadows the hub gives it.

One model parses a manifest (`Appliance`); `parse_manifest` is the only
entry.  The ``shadowing`` section keeps the field names of the seed as they
are written (``shadow_enabled``, ``shadow_instance_count``,
``shadow_traffic_percentage``, ``shadow_analysis_profiles``).  What needs
the store (the interfaces exist and are nobody else's, enough shadow slots
are free) is checked when the manifest is written (``api``), not here.

The store kinds of the feature are named here too: the documents an
operator writes (``appliance``, ``shadow-slot``) and the records the
runtime writes and REST reads (``shadow-state``, ``shadow-slot-state``,
``shadow-finding``, ``shadow-remediation``).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, ConfigDict, Field, StrictBool, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from controller.agents.shadow import anomaly, fuzzing, performance
from controller.core.documents import (NOT_BLANK, DocumentInvalid, DocumentModel, NotBlank,
                                       Seconds, errors_of, fail, rule)
from controller.core.interfaces import ID_PATTERN as INTERFACE_ID

KIND = "appliance"
SLOT = "shadow-slot"                # a host interface set aside as shadow capacity
STATE = "shadow-state"              # runtime, id = appliance id: instances, percentage, counters
SLOT_STATE = "shadow-slot-state"    # runtime, id = slot id: what the slot's agent is doing
FINDING = "shadow-finding"          # runtime: one finding of an analysis profile
REMEDIATION = "shadow-remediation"  # runtime: one block in force
CAPABILITY = "shadow-capability"    # runtime, id = dpid: what its probe found missing

AGENT_PORT = 6700
"""UDP port of the hub's shadow agent channel (at the gateway of the slot's subnet)."""

PROFILES = ("IDS_Signature_Scan", "Anomaly_Detection", "Performance_Profiling", "Fuzzing")
SEVERITIES = ("low", "medium", "high", "critical")

Profile = Literal[PROFILES]  # type: ignore[valid-type]
Severity = Literal[SEVERITIES]  # type: ignore[valid-type]
Text = Annotated[str, Field(min_length=1, max_length=256), NotBlank]
Percent = Annotated[float, Field(strict=True, ge=0.0, le=100.0)]
Positive = Annotated[float, Field(strict=True, gt=0.0)]
InterfaceId = Annotated[str, Field(pattern=INTERFACE_ID, examples=["0000000000000a01:2"])]


def _distinct(values: list[Any], show: Any = str) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value in seen:
            fail(f"{show(value)} is listed more than once")
        seen.append(value)
    return values


def tenths(value: float) -> float:
    """``value`` if it has at most one decimal place (12.3), else refused (12.34)."""
    if abs(value * 10 - round(value * 10)) > 1e-6:
        fail(f"{value} has more than one decimal place; percentages go in steps of 0.1")
    return round(value, 1)


# -- the production side ----------------------------------------------------------------

class Service(DocumentModel):
    """One service of the appliance: the connections to it are the ones shadowed."""
    protocol: Literal["tcp", "udp"]
    port: Annotated[int, Field(strict=True, ge=1, le=65535)]


# -- shadowing, as the seed names it ----------------------------------------------------

class Shadowing(DocumentModel):
    shadow_enabled: StrictBool = Field(default=True, description="Whether shadows run at all")
    shadow_instance_count: Annotated[int, Field(strict=True, ge=0, le=64)] = Field(
        default=1, description="Shadow instances to run, each on a slot of its own",
        json_schema_extra=rule("no more than the shadow slots other appliances leave free"))
    shadow_traffic_percentage: Percent = Field(
        description="Share of connections mirrored, whole connections at a time",
        examples=[5.0, 12.5],
        json_schema_extra=rule("at most one decimal place (0.1 % steps)"))
    shadow_analysis_profiles: list[Profile] = Field(
        default_factory=list, description="Analysis the shadows run",
        json_schema_extra={"uniqueItems": True})

    @field_validator("shadow_traffic_percentage")
    @classmethod
    def _tenths(cls, percentage: float) -> float:
        return tenths(percentage)

    @field_validator("shadow_analysis_profiles")
    @classmethod
    def _profiles(cls, profiles: list[str]) -> list[str]:
        return _distinct(profiles)


# -- per-profile settings ---------------------------------------------------------------

class Signature(DocumentModel):
    """One IDS rule: a byte string (``content``) or a regular expression (``pattern``)."""
    model_config = ConfigDict(json_schema_extra=rule("exactly one of content and pattern"))

    id: Text = Field(json_schema_extra={"pattern": NOT_BLANK})
    content: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None, description="Bytes to find in a direction's payload, given as text")
    pattern: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None, description="A regular expression over a direction's payload bytes "
                                  "(Python syntax, applied to the payload as bytes)",
        json_schema_extra=rule("compiles as a regular expression"))
    severity: Severity

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern.encode("utf-8"))
            except re.error as exc:
                fail(f"is not a regular expression: {exc}")
        return pattern

    @model_validator(mode="after")
    def _one_of(self) -> Signature:
        if (self.content is None) == (self.pattern is None):
            fail("give exactly one of content and pattern")
        return self


class IdsSettings(DocumentModel):
    signatures: list[Signature] = Field(default_factory=list, json_schema_extra=rule(
        "signature ids are unique"))

    @field_validator("signatures")
    @classmethod
    def _ids(cls, signatures: list[Signature]) -> list[Signature]:
        _distinct([s.id for s in signatures], lambda i: f"signature id {i!r}")
        return signatures


def _checked_by_the_agent(read: Callable[[dict], Any]) -> Callable[[Any], Any]:
    """A profile's settings are the agent's to read: checked here with the agent's own
    reader, so a manifest the agent would refuse is refused at once, naming the setting."""
    def check(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            fail("is not an object of settings")
        try:
            read(value)
        except ValueError as exc:
            fail(str(exc))
        return value
    return check


ProfileSettings = dict[str, Any] | None
AGENT_READ = "the settings the agent's profile reads, each in its range (docs/shadow-agent.md)"
class Profiles(DocumentModel):
    """Settings of each profile; a profile not listed in ``shadow_analysis_profiles``
    keeps its settings but does not run."""
    IDS_Signature_Scan: IdsSettings | None = None
    Anomaly_Detection: Annotated[ProfileSettings, AfterValidator(_checked_by_the_agent(
        anomaly.AnomalySettings.read))] = Field(default=None, description=(
            "window, baseline, scan_ports, burst_factor, floor_attempts, floor_bytes, "
            "cooldown, severity, scan_severity: docs/shadow-agent.md"), json_schema_extra=rule(AGENT_READ))
    Performance_Profiling: Annotated[ProfileSettings, AfterValidator(_checked_by_the_agent(
        performance.PerformanceSettings.read))] = Field(default=None, description=(
            "rate, timeout, window, min_samples, p50_ms_max, p99_ms_max, cooldown, severity: "
            "docs/shadow-agent.md"), json_schema_extra=rule(AGENT_READ))
    Fuzzing: Annotated[ProfileSettings, AfterValidator(_checked_by_the_agent(
        fuzzing.settings_from))] = Field(default=None, description=(
            "seed, seed_bytes, corpus, mutations_per_seed, rate, timeout, error_pattern, "
            "crash_severity, max_findings: docs/shadow-agent.md"), json_schema_extra=rule(AGENT_READ))


# -- adjustment, remediation, mirror ----------------------------------------------------

class Adjustment(DocumentModel):
    """``fixed`` keeps the manifest's percentage and instance count; ``adaptive`` moves the
    percentage within min..max, holds a source a finding names at 100% for ``hold``, and
    adds instances when the shadows are overloaded, up to ``max_instances``."""
    mode: Literal["fixed", "adaptive"] = "fixed"
    min: Percent = 1.0
    max: Percent = Field(default=50.0, validate_default=True,
                         json_schema_extra=rule("not below min"))
    hold: Seconds = Field(default=60, description="How long a source a finding names has all "
                                                  "its new connections mirrored")
    max_instances: Annotated[int, Field(strict=True, ge=1, le=64)] | None = Field(
        default=None, description="At most this many instances when scaling on load "
                                  "(default: twice shadow_instance_count)")

    @field_validator("max")
    @classmethod
    def _ordered(cls, max: float, info: ValidationInfo) -> float:
        low = info.data.get("min")
        if low is not None and low > max:
            fail(f"is below min ({low})")
        return max


class Remediation(DocumentModel):
    """``alert`` raises alerts only; ``block`` also drops the offending source's traffic to
    the appliance for ``ttl``, for findings at or above ``min_severity``."""
    mode: Literal["alert", "block"] = "alert"
    ttl: Seconds = 300
    min_severity: Severity = "high"


class Mirror(DocumentModel):
    snaplen: Annotated[int, Field(strict=True, ge=64, le=65535)] | None = Field(
        default=None, description="Copies are cut to this many bytes (null: whole packets)")


# -- the manifest -----------------------------------------------------------------------

class Appliance(DocumentModel):
    name: Annotated[str, Field(min_length=1, max_length=64), NotBlank] = Field(
        json_schema_extra={"pattern": NOT_BLANK, **rule(
            "without an id, holds a letter or digit to make the id from")})
    interfaces: list[InterfaceId] = Field(
        min_length=1, description="The production instance's interface ids",
        json_schema_extra={"uniqueItems": True, **rule(
            "each names a stored interface that no persona, shard resource or shadow slot "
            "holds")})
    service: list[Service] | None = Field(
        default=None, min_length=1, description="The services shadowed (null: every "
                                                "connection to the interfaces)",
        json_schema_extra={"uniqueItems": True})
    appliance_image: Annotated[str, Field(min_length=1, max_length=4096), NotBlank] = Field(
        description="The command line a shadow instance runs", examples=["python3 -m http.server 80"],
        json_schema_extra={"pattern": NOT_BLANK})
    shadowing: Shadowing
    profiles: Profiles | None = None
    adjustment: Adjustment = Field(default_factory=Adjustment)
    remediation: Remediation = Field(default_factory=Remediation)
    mirror: Mirror = Field(default_factory=Mirror)

    @field_validator("interfaces")
    @classmethod
    def _interfaces(cls, interfaces: list[str]) -> list[str]:
        return _distinct(interfaces)

    @field_validator("service")
    @classmethod
    def _services(cls, service: list[Service] | None) -> list[Service] | None:
        if service is not None:
            _distinct([(s.protocol, s.port) for s in service], lambda s: f"{s[0]}/{s[1]}")
        return service

    def stored_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class Slot:
    """A stored shadow slot: the interface set aside, and its agent's key (hex)."""
    id: str
    interface_id: str
    key: str

    @classmethod
    def from_body(cls, id: str, body: dict[str, Any]) -> Slot:
        return cls(id, str(body["interface_id"]), str(body["key"]))


def parse_manifest(body: Any) -> Appliance:
    """Validate one manifest; DocumentInvalid lists every bad field (``body.<path>``)."""
    if not isinstance(body, dict):
        raise DocumentInvalid([("body", "must be an object (a mapping of fields)")], KIND)
    try:
        return Appliance.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), KIND) from None
