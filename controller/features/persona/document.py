"""Persona documents: a temporary, isolated segment's range, policy, QoS and expiration.

``parse_persona(doc, now)`` checks everything a document can check on its
own (the store checks, such as overlaps and unique names, live in
``controller.features.persona.store``) and raises ``DocumentInvalid``
naming every offending field. ``Persona.stored_body()`` is the normalized
form kept in the store: what the user wrote, plus parsed values the data
plane needs (``qos.bandwidth_kbps``, ``qos.latency_ms``,
``alert_thresholds.bandwidth_kbps``, ``alert_thresholds.expiry_warning_s``).
Those derived fields may be sent back (a GET body PUT back as it is), but
must agree with the text they come from.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Callable, ClassVar, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from controller.core.documents import (ANY_NETWORK, DURATION_SCHEMA, NOT_BLANK, NotBlank, PORT_SCHEMA, DocumentInvalid,
                                      DocumentModel, IPv4Cidr, cidr_schema, errors_of, fail, field_path,
                                      parse_duration, parse_port, rule)

KIND = "persona"

PROTOCOLS = ("tcp", "udp", "icmp", "sctp", "gre", "esp", "ah")
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
MIN_PREFIX, MAX_PREFIX = 16, 29
MAX_METER_KBPS = 2**32 - 1      # OpenFlow meter bands count kbit/s in 32 bits
MAX_LATENCY_MS = 60_000
DEFAULT_EXPIRY_WARNING_S = 300  # "5m"

RATE_UNITS = {"bps": 1, "kbps": 10**3, "mbps": 10**6, "gbps": 10**9}
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(bps|kbps|mbps|gbps)", re.IGNORECASE)
_LATENCY = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s)", re.IGNORECASE)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?P<tz>[Zz]|[+-]\d{2}:\d{2})?")

# What the text fields accept, as JSON Schema (the OpenAPI document states it).
_NUMBER = r"\s*[0-9]+(?:\.[0-9]+)?\s*"
RATE_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "pattern": rf"^{_NUMBER}(?:[bB]|[kK][bB]|[mM][bB]|[gG][bB])[pP][sS]\s*$",
               **rule(f"from 1Kbps up to {MAX_METER_KBPS}Kbps")}, {"type": "null"}]}
LATENCY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "pattern": rf"^{_NUMBER}[mM]?[sS]\s*$",
               **rule(f"longer than zero, at most {MAX_LATENCY_MS // 1000}s")}, {"type": "null"}]}
_HOUR, _MINUTE = "(?:[01][0-9]|2[0-3])", "[0-5][0-9]"
EXPIRATION_SCHEMA: dict[str, Any] = {
    "type": "string", "examples": ["2030-12-31T23:59:59Z"],
    "pattern": rf"^\s*[0-9]{{4}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt ]{_HOUR}:{_MINUTE}:"
               rf"{_MINUTE}(?:\.[0-9]+)?(?:[Zz]|[+-]{_HOUR}:{_MINUTE})\s*$",
    **rule("a day the month has, in the future")}
COMPUTED: dict[str, Any] = {"readOnly": True}
"""A stored field computed from another: left out of requests (or sent back unchanged)."""



# -- value parsers --------------------------------------------------------------------

def rate_kbps(value: Any) -> int:
    """ "100Mbps" -> 100000; decimal units bps/Kbps/Mbps/Gbps, case-insensitive."""
    usage = 'a rate such as "100Mbps" (units bps, Kbps, Mbps, Gbps)'
    if not isinstance(value, str):
        fail(f"must be text: {usage}")
    match = _RATE.fullmatch(value.strip())
    if not match:
        fail(f"{value!r} is not a rate; use {usage}")
    bps = Decimal(match[1]) * RATE_UNITS[match[2].lower()]
    kbps = int((bps / 1000).to_integral_value(ROUND_HALF_UP))  # nearest kbit/s
    if kbps < 1:
        fail(f"{value!r} is below 1Kbps, the smallest rate a meter enforces")
    if kbps > MAX_METER_KBPS:
        fail(f"{value!r} is above the largest rate a meter holds ({MAX_METER_KBPS}Kbps)")
    return kbps


def latency_ms(value: Any) -> float:
    """ "50ms" -> 50.0, "0.05s" -> 50.0."""
    usage = 'a latency such as "50ms" or "0.05s"'
    if not isinstance(value, str):
        fail(f"must be text: {usage}")
    match = _LATENCY.fullmatch(value.strip())
    if not match:
        fail(f"{value!r} is not a latency; use {usage}")
    ms = Decimal(match[1]) * (1000 if match[2].lower() == "s" else 1)
    if ms <= 0:
        fail("must be longer than zero")
    if ms > MAX_LATENCY_MS:
        fail(f"{value!r} is longer than {MAX_LATENCY_MS // 1000}s")
    return float(ms)


def parse_expiration(value: Any) -> float:
    """An RFC 3339 timestamp with a timezone (text, or a YAML timestamp) -> Unix time."""
    usage = 'an RFC 3339 time with a timezone, such as "2030-12-31T23:59:59Z"'
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            fail(f"{value.isoformat()} has no timezone; add Z or an offset such as +02:00")
        return value.timestamp()
    if isinstance(value, dt.date):
        fail(f"{value.isoformat()} is a date without a time; use {usage}")
    if not isinstance(value, str):
        fail(f"must be {usage}")
    text = value.strip()
    match = _RFC3339.fullmatch(text)
    if not match:
        fail(f"{value!r} is not {usage}")
    if match["tz"] is None:
        fail(f"{text} has no timezone; add Z or an offset such as +02:00")
    try:
        when = dt.datetime.fromisoformat(text.upper().replace(" ", "T"))
    except ValueError as exc:
        fail(f"{value!r} is not a valid time: {exc}")
    return when.timestamp()


def format_rfc3339(ts: float) -> str:
    """Unix time -> "2030-12-31T23:59:59Z" (fractions kept only when there are some)."""
    when = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    text = when.isoformat(timespec="microseconds" if when.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _expiration_text(value: Any) -> Any:
    """Keep text as written; a YAML timestamp becomes RFC 3339 text."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return format_rfc3339(value.timestamp())
    return value.strip() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Protocol = Annotated[Literal[PROTOCOLS], BeforeValidator(_lower)]


def _derived_agrees(given: Any, computed: Any, source: str, info: ValidationInfo) -> None:
    if source not in info.data:  # the source itself is invalid and already reported
        return
    if computed is None:
        fail(f"is computed from {source}; give {source} (or leave this out)")
    if isinstance(given, bool) or not isinstance(given, (int, float)) or given != computed:
        fail(f"is computed from {source} ({computed}); leave it out or make it agree")


# -- the model ------------------------------------------------------------------------

class SecurityPolicy(DocumentModel):
    """One policy; policies are checked in order and the first match decides."""

    model_config = ConfigDict(json_schema_extra={  # a port only with tcp, udp or sctp
        "if": {"properties": {"protocol": {"not": {"enum": list(PORT_PROTOCOLS)}}}, "required": ["protocol"]},
        "then": {"properties": {"port": {"type": "null"}}}})

    protocol: Protocol = Field(json_schema_extra=rule("one of the persona's protocols"))
    port: int | str | None = Field(default=None, description='Destination port or "A-B" range '
                                   "(tcp, udp, sctp only)", examples=[80, "8000-8080"],
                                   json_schema_extra=PORT_SCHEMA)
    action: Literal["allow", "deny"]
    source: IPv4Cidr = Field(default=ANY_NETWORK, description="Sender network (default any)")
    destination: IPv4Cidr = Field(default=ANY_NETWORK, description="Receiver network (default any)")

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any, info: ValidationInfo) -> int | str | None:
        port = parse_port(value)
        protocol = info.data.get("protocol")
        if port is not None and protocol is not None and protocol not in PORT_PROTOCOLS:
            fail(f"a port only applies to protocol tcp, udp or sctp, not {protocol}")
        return port


class _WithUnits(DocumentModel):
    """A section whose text fields ("100Mbps", "5m") are stored with their parsed value.

    ``UNITS`` maps a text field to (its computed field, the parser).  The text
    must parse; a computed field sent back (a GET body PUT back as is) must
    agree with its text, else it is refused by name.
    """

    UNITS: ClassVar[dict[str, tuple[str, Callable[[Any], Any]]]] = {}

    @field_validator("*", mode="before")
    @classmethod
    def _units(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if name in cls.UNITS:
            if value is not None:
                cls.UNITS[name][1](value)
            return value.strip() if isinstance(value, str) else value
        for source, (computed, parse) in cls.UNITS.items():
            if name == computed:
                text = info.data.get(source)
                _derived_agrees(value, parse(text) if text is not None else None, source, info)
        return value

    def derived(self) -> dict[str, Any]:
        return {computed: parse(getattr(self, source))
                for source, (computed, parse) in self.UNITS.items()
                if getattr(self, source) is not None}


class PersonaQos(_WithUnits):
    """Bandwidth limit (a meter each way) and latency objective (a priority class)."""

    UNITS = {"bandwidth": ("bandwidth_kbps", rate_kbps), "latency": ("latency_ms", latency_ms)}

    bandwidth: str | None = Field(default=None, examples=["100Mbps"], json_schema_extra=RATE_SCHEMA)
    latency: str | None = Field(default=None, examples=["50ms"], json_schema_extra=LATENCY_SCHEMA)
    bandwidth_kbps: Any = Field(default=None, description="Computed from bandwidth",
                                json_schema_extra=COMPUTED)
    latency_ms: Any = Field(default=None, description="Computed from latency", json_schema_extra=COMPUTED)


class AlertThresholds(_WithUnits):
    """When alerts fire; see docs/personas.md, *Usage, alerts, expiry*."""

    UNITS = {"bandwidth": ("bandwidth_kbps", rate_kbps),
             "expiry_warning": ("expiry_warning_s", parse_duration)}

    bandwidth: str | None = Field(default=None, description="Alert when the current rate exceeds it",
                                  examples=["80Mbps"], json_schema_extra=RATE_SCHEMA)
    bytes: Annotated[int, Field(strict=True, gt=0)] | None = Field(
        default=None, description="Alert when the bytes both ways exceed it")
    security_events: Annotated[int, Field(strict=True, gt=0)] | None = Field(
        default=None, description="Alert when denied attempts reach it")
    expiry_warning: int | str | None = Field(
        default=None, description='How long before expiry to warn: seconds, or "30s", "5m", "1h" '
                                  '(default "5m")', examples=["5m"],
        json_schema_extra={"anyOf": [*DURATION_SCHEMA["anyOf"], {"type": "null"}]})
    bandwidth_kbps: Any = Field(default=None, description="Computed from bandwidth",
                                json_schema_extra=COMPUTED)
    expiry_warning_s: Any = Field(default=None, description="Computed from expiry_warning",
                                  json_schema_extra=COMPUTED)


DERIVED = {section: tuple(computed for computed, _ in model.UNITS.values())
           for section, model in (("qos", PersonaQos), ("alert_thresholds", AlertThresholds))}
"""Fields of the stored form computed from the user's text (section -> names)."""


class Persona(DocumentModel):
    """A persona document. ``name``, ``ip_range``, ``protocols`` and ``expiration`` are required."""

    name: Annotated[str, Field(min_length=1, max_length=64), NotBlank] = Field(
        json_schema_extra={"pattern": NOT_BLANK})
    ip_range: IPv4Cidr = Field(description=f"IPv4 CIDR, prefix length {MIN_PREFIX}..{MAX_PREFIX}",
                               examples=["10.100.0.0/24"], json_schema_extra={
                                   **cidr_schema(MIN_PREFIX, MAX_PREFIX),
                                   **rule("a replace keeps the stored range")})
    protocols: Annotated[list[Protocol], Field(min_length=1)] = Field(
        description=f"Allowed protocols: {', '.join(PROTOCOLS)}", examples=[["tcp", "udp"]],
        json_schema_extra={"uniqueItems": True})
    qos: PersonaQos | None = None
    security_policies: list[SecurityPolicy] = Field(default_factory=list)
    expiration: Any = Field(description="RFC 3339 time with a timezone, in the future",
                            examples=["2030-12-31T23:59:59Z"], json_schema_extra=EXPIRATION_SCHEMA)
    description: Annotated[str, Field(max_length=1024)] | None = None
    owner: Annotated[str, Field(max_length=128)] | None = None
    alert_thresholds: AlertThresholds | None = None

    @field_validator("ip_range")
    @classmethod
    def _prefix(cls, cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not MIN_PREFIX <= cidr.prefixlen <= MAX_PREFIX:
            fail(f"{cidr} has prefix length {cidr.prefixlen}; a persona's range is a "
                 f"/{MIN_PREFIX} to /{MAX_PREFIX}")
        return cidr

    @field_validator("protocols")
    @classmethod
    def _unique(cls, protocols: list[str]) -> list[str]:
        seen: set[str] = set()
        for protocol in protocols:
            if protocol in seen:
                fail(f"{protocol} is listed more than once")
            seen.add(protocol)
        return protocols

    @field_validator("expiration", mode="before")
    @classmethod
    def _expiration(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            fail('is required: an RFC 3339 time with a timezone, such as "2030-12-31T23:59:59Z"')
        when = parse_expiration(value)
        now = (info.context or {}).get("now")
        if now is not None and when <= now:
            fail(f"{_expiration_text(value)} is in the past (now is {format_rfc3339(now)}); "
                 "give a future time")
        return _expiration_text(value)

    @property
    def expires_at(self) -> float:
        return parse_expiration(self.expiration)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The persona gateway's address: the first one of the range."""
        return self.ip_range.network_address + 1

    @property
    def bandwidth_kbps(self) -> int | None:
        return rate_kbps(self.qos.bandwidth) if self.qos and self.qos.bandwidth else None

    @property
    def latency_ms(self) -> float | None:
        return latency_ms(self.qos.latency) if self.qos and self.qos.latency else None

    @property
    def expiry_warning_s(self) -> int:
        t = self.alert_thresholds
        return parse_duration(t.expiry_warning) if t and t.expiry_warning is not None \
            else DEFAULT_EXPIRY_WARNING_S

    def stored_body(self) -> dict[str, Any]:
        """The normalized body kept in the store: what was given, plus the derived values."""
        body = self.model_dump(mode="json", exclude_unset=True)
        for section, model in (("qos", self.qos), ("alert_thresholds", self.alert_thresholds)):
            if model is not None:
                body[section] = {**body[section], **model.derived()}
        return body


def user_fields(body: dict[str, Any]) -> dict[str, Any]:
    """A stored body without its derived fields: the document as the user wrote it.

    A merge patch is applied to this form, so a new ``qos.bandwidth`` is not
    contradicted by the old ``qos.bandwidth_kbps``.
    """
    out = dict(body)
    for section, names in DERIVED.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in names}
    return out


def _cross_errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """A policy's protocol must be one of the persona's (checked on the raw input,
    so these errors are reported together with every other one)."""
    protocols = doc.get("protocols")
    policies = doc.get("security_policies")
    if not isinstance(protocols, list) or not isinstance(policies, list):
        return []
    listed = {_lower(p) for p in protocols if isinstance(p, str)} & set(PROTOCOLS)
    errors = []
    for i, policy in enumerate(policies):
        protocol = _lower(policy.get("protocol")) if isinstance(policy, dict) else None
        if protocol in PROTOCOLS and protocol not in listed:
            errors.append((field_path(("security_policies", i, "protocol")),
                           f"{protocol} is not one of the persona's protocols "
                           f"({', '.join(sorted(listed)) or 'none'}); add it to protocols"))
    return errors


def parse_persona(doc: Any, now: float | None) -> Persona:
    """Validate a persona body on its own (no store).

    ``now`` (Unix time) is when the document is written: its expiration must
    be later. ``None`` skips that check (reading a stored, possibly expired,
    document back).
    """
    if not isinstance(doc, dict):
        raise DocumentInvalid([("body", "must be an object (a mapping of fields)")], KIND)
    errors: list[tuple[str, str]] = []
    persona: Persona | None = None
    try:
        persona = Persona.model_validate(doc, context={"now": now})
    except ValidationError as exc:
        errors = errors_of(exc)
    errors += [e for e in _cross_errors(doc) if e[0] not in dict(errors)]
    if errors or persona is None:
        raise DocumentInvalid(errors, KIND)
    return persona


__all__ = ["AlertThresholds", "DEFAULT_EXPIRY_WARNING_S", "KIND", "PROTOCOLS", "Persona",
           "PersonaQos", "SecurityPolicy", "format_rfc3339", "latency_ms", "parse_expiration",
           "parse_persona", "rate_kbps", "user_fields"]

