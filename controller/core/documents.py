"""Shared pieces of the typed documents: value types, errors, field names.

Every value type parses strictly and fails with a sentence a person can act
on; ``DocumentInvalid`` carries those sentences as ``{"field", "reason"}``
entries whose field names read ``body.firewall_rules[2].port``.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, NoReturn

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Document ids: 1-64 characters, letters, digits, '.', '_' or '-', not starting with a symbol."""

ANY_NETWORK = ipaddress.IPv4Network("0.0.0.0/0")


class DocumentInvalid(ValueError):
    """A document failed validation; ``errors`` lists every offending field.

    Each entry is ``{"field": "body.<path>", "reason": "<plain words>"}``,
    the shape of a problem document's ``errors`` member.
    """

    def __init__(self, errors: Iterable[tuple[str, str]], what: str = "document") -> None:
        self.errors = [{"field": f, "reason": r} for f, r in errors]
        self.what = what
        fields = ", ".join(dict.fromkeys(e["field"] for e in self.errors))
        self.detail = f"invalid {what}: {fields}" if fields else f"invalid {what}"
        super().__init__(self.detail + "".join(f"\n  {e['field']}: {e['reason']}" for e in self.errors))


class DocumentModel(BaseModel):
    """Base of every document model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


# -- failing from validators ---------------------------------------------------

def fail(reason: str) -> NoReturn:
    """Reject the value being validated with ``reason`` as the whole message."""
    raise PydanticCustomError("value_error", "{reason}", {"reason": reason})


# -- field names ------------------------------------------------------------------

def field_path(loc: Sequence[int | str], root: str = "body") -> str:
    """("firewall_rules", 2, "port") -> "body.firewall_rules[2].port"."""
    name = root
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def _reason(err: Any) -> str:
    kind = err.get("type")
    ctx = err.get("ctx") or {}
    if kind == "value_error" and "reason" in ctx:
        return str(ctx["reason"])
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "literal_error":
        return f"{err.get('input')!r} is not allowed; use {ctx.get('expected', 'one of the listed values')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be an object (a mapping of fields)"
    if kind == "list_type":
        return "must be a list"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be a whole number"
    if kind in ("string_type",):
        return "must be text"
    msg = str(err.get("msg", "invalid value"))
    return msg[:1].lower() + msg[1:]


def errors_of(exc: ValidationError, root: str = "body") -> list[tuple[str, str]]:
    """Pydantic's errors as (field, reason) pairs, one reason per field."""
    out: dict[str, list[str]] = {}
    for err in exc.errors():
        reasons = out.setdefault(field_path(err.get("loc", ()), root), [])
        reason = _reason(err)
        if reason not in reasons:
            reasons.append(reason)
    return [(field, "; ".join(reasons)) for field, reasons in out.items()]


# -- value parsers ------------------------------------------------------------------

def parse_ipv4(value: Any) -> ipaddress.IPv4Address:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    if not isinstance(value, str):
        fail("must be an IPv4 address written as text, such as 10.0.1.10")
    try:
        return ipaddress.IPv4Address(value.strip())
    except ValueError:
        fail(f"{value!r} is not a valid IPv4 address (expected four numbers 0-255, such as 10.0.1.10)")


def parse_cidr(value: Any) -> ipaddress.IPv4Network:
    if isinstance(value, ipaddress.IPv4Network):
        return value
    if not isinstance(value, str):
        fail("must be an IPv4 network written as text in CIDR form, such as 10.0.1.0/24")
    text = value.strip()
    if "/" not in text:
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            fail(f"{value!r} is not a valid IPv4 network in CIDR form, such as 10.0.1.0/24")
        fail(f"{value!r} has no prefix length; write the network in CIDR form, such as {text}/32")
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        fail(f"{value!r} is not a valid IPv4 network in CIDR form, such as 10.0.1.0/24")
    fail(f"{text} has host bits set; the network address is {loose}")


def parse_duration(value: Any) -> int:
    """Seconds as a positive whole number, or text such as "45s", "30m", "2h", "1d", "1h30m"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        fail('must be a number of seconds or a duration such as "45s", "30m", "2h" or "1d"')
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            seconds = int(text)
        elif re.fullmatch(r"(?:\d+[smhd])+", text):
            unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
            seconds = sum(int(n) * unit[u] for n, u in re.findall(r"(\d+)([smhd])", text))
        else:
            fail(f'{value!r} is not a duration; use seconds or a number with s, m, h or d, such as "30m"')
    else:
        seconds = value
    if seconds <= 0:
        fail("must be longer than zero seconds")
    return seconds


def parse_port(value: Any) -> int | str | None:
    """A port 1-65535, a range "A-B" with A <= B (kept as text), or None for any port."""
    if value is None:
        return None
    usage = 'must be a port 1-65535, a range such as "8000-8080", or null for any port'
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        fail(usage)
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            fail(f"port {value} is out of range; ports are 1-65535")
        return value
    text = value.strip()
    if text.isdigit():
        return parse_port(int(text))
    match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
    if not match:
        fail(f"{value!r} is not a port; " + usage.removeprefix("must be "))
    low, high = int(match[1]), int(match[2])
    for port in (low, high):
        if not 1 <= port <= 65535:
            fail(f"port {port} in range {text!r} is out of range; ports are 1-65535")
    if low > high:
        fail(f"range {text!r} is reversed; the first port must not be larger than the second")
    return low if low == high else f"{low}-{high}"


# -- what the value types accept, as JSON Schema (stated by the OpenAPI document) ----------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_UNIT = "[smhdSMHD]"

IPV4_SCHEMA: dict[str, Any] = {"type": "string", "pattern": rf"^{_OCTET}(?:\.{_OCTET}){{3}}$",
                               "examples": ["10.0.1.10"]}
NOT_BLANK = (r"[^\t\n\u000b\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029"
             r"\u202f\u205f\u3000]")
"""Pattern of text that is not only whitespace: one character that is not what Python's
``str.isspace`` calls space (the same class for the schema and for `NotBlank`; ECMA's
``\S`` disagrees with Python's on \x1c-\x1f)."""


def not_blank(value: str) -> str:
    if not re.search(NOT_BLANK, value):
        fail("must not be blank")
    return value


NotBlank = AfterValidator(not_blank)
"""Annotate a text field that must not be only whitespace (its schema: ``NOT_BLANK``)."""


def cidr_schema(min_prefix: int = 0, max_prefix: int = 32) -> dict[str, Any]:
    """A network in CIDR form, host bits zero, prefix length min..max (one branch per length)."""
    branches = []
    for prefix in range(min_prefix, max_prefix + 1):
        octets = []
        for k in range(4):
            kept = min(max(prefix - 8 * k, 0), 8)  # the bits of this octet inside the prefix
            step = 1 << (8 - kept)
            octets.append(_OCTET if kept == 8 else "0" if kept == 0 else
                          "(?:" + "|".join(str(v) for v in range(0, 256, step)) + ")")
        branches.append(r"\.".join(octets) + f"/{prefix}")
    return {"type": "string", "pattern": "^(?:" + "|".join(branches) + ")$",
            "examples": ["10.0.1.0/24"]}


PORT_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "integer", "minimum": 1, "maximum": 65535},
    {"type": "string", "pattern": rf"^\s*0*{_PORT}\s*(?:-\s*0*{_PORT}\s*)?$",
     "x-rule": "in a range A-B, A is not larger than B"},
    {"type": "null"}]}
"""``parse_port``: a port, a range "A-B" as text, or null for any."""

DURATION_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "integer", "minimum": 1},
    {"type": "string", "pattern": rf"^\s*(?:0*[1-9][0-9]*|(?:[0-9]+{_UNIT})*0*[1-9][0-9]*{_UNIT}"
                                  rf"(?:[0-9]+{_UNIT})*)\s*$"}]}
"""``parse_duration``: seconds, or text such as "30m" or "1h30m" (longer than zero)."""


def rule(text: str) -> dict[str, Any]:
    """``json_schema_extra`` of a field checked beyond what its schema says (against other
    fields or stored documents): the OpenAPI document names the rule as ``x-rule``."""
    return {"x-rule": text}


IPv4 = Annotated[ipaddress.IPv4Address, BeforeValidator(parse_ipv4), WithJsonSchema(IPV4_SCHEMA)]
"""An IPv4 address given as text; stored as text."""

IPv4Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(parse_cidr), WithJsonSchema(cidr_schema())]
"""An IPv4 network in CIDR form with no host bits set; stored as text."""

Seconds = Annotated[int, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]
"""A positive duration in seconds (accepts "30m", "2h", ...)."""

StrictPositiveInt = Annotated[int, Field(strict=True, gt=0)]


# -- ids --------------------------------------------------------------------------

def slugify(text: str, limit: int = 64) -> str:
    """"Web Frontend (EU)" -> "web-frontend-eu"; "" if nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:limit].rstrip("-")


def id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a document id, or None if it can."""
    if not isinstance(value, str):
        return "must be text"
    if not ID_PATTERN.fullmatch(value):
        return ("must be 1-64 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit")
    return None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge, ``null`` removes a member, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out
