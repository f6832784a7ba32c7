"""The persona section of the controller configuration (key `personas`)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from controller.features.persona.store import DEFAULT_NAT_POOL

KEYS = ("gateway", "nat_pool", "poll_seconds")


@dataclass(frozen=True)
class PersonaSettings:
    """Where personas are realized: the gateway switch, the NAT pool, the usage poll."""
    gateway: int | None = None                     # datapath id of the persona gateway
    nat_pool: ipaddress.IPv4Network = DEFAULT_NAT_POOL
    poll_seconds: float = 1.0


def parse(value: Any) -> PersonaSettings:
    """The validated section; ValueError naming the field (`personas.<field>: ...`)."""
    if value is None:
        return PersonaSettings()
    if not isinstance(value, dict) or not set(value) <= set(KEYS):
        raise ValueError("personas: must be a mapping of gateway, nat_pool, poll_seconds")
    out: dict = {}
    gw = value.get("gateway")
    if gw is not None:
        try:
            out["gateway"] = int(gw, 16) if isinstance(gw, str) else int(gw)
        except ValueError:
            raise ValueError(f"personas.gateway: {gw!r} is not a datapath id "
                             "(16 hex digits or an integer)") from None
        if isinstance(gw, bool) or not 0 < out["gateway"] < 2**64:
            raise ValueError(f"personas.gateway: {gw!r} is not a datapath id")
    if "nat_pool" in value:
        try:
            out["nat_pool"] = ipaddress.IPv4Network(value["nat_pool"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"personas.nat_pool: {exc}") from None
    if "poll_seconds" in value:
        s = value["poll_seconds"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.1 <= s <= 60:
            raise ValueError("personas.poll_seconds: must be a number of seconds 0.1-60")
        out["poll_seconds"] = float(s)
    return PersonaSettings(**out)
