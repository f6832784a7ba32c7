"""Typed intent documents (subnets, personalities) and their validation.

Models are pydantic v2 with unknown fields forbidden. ``validate_subnet`` and
``validate_personality`` raise ``DocumentInvalid``, whose ``errors`` are
problem+json ready: ``[{"field": "body.firewall_rules[2].port", "reason": ...}]``.
"""

from __future__ import annotations

from .common import DocumentInvalid, field_path, id_problem, slugify
from .personality import (ApplicationAccessPolicy, ApplicationRule, FirewallRule, Personality,
                          QosSettings, RouteEntry, VpnTunnelConfig, parse_personality, subnet_errors,
                          validate_personality)
from .subnet import Subnet, parse_subnet, subnet_id_from_cidr, validate_subnet

__all__ = [
    "ApplicationAccessPolicy",
    "ApplicationRule",
    "DocumentInvalid",
    "FirewallRule",
    "Personality",
    "QosSettings",
    "RouteEntry",
    "Subnet",
    "VpnTunnelConfig",
    "field_path",
    "id_problem",
    "parse_personality",
    "parse_subnet",
    "slugify",
    "subnet_errors",
    "subnet_id_from_cidr",
    "validate_personality",
    "validate_subnet",
]
