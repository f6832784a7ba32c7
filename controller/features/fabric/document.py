"""Subnet documents: an IPv4 network and the gateway address the hub answers for.

The hub reads store kind "subnet" with body ``{"cidr", "gateway"}``
(``controller.core.topology.Subnet.from_body``); these are the checks a subnet
passes before it is stored.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from controller.store import Store

from controller.core.documents import (DocumentInvalid, DocumentModel, IPv4, IPv4Cidr, errors_of, fail,
                                      field_path, rule)

KIND = "subnet"


class Subnet(DocumentModel):
    """An IPv4 segment routed by the hub."""

    cidr: IPv4Cidr = Field(description="The network, host bits zero", examples=["10.0.1.0/24"],
                           json_schema_extra=rule("overlaps no other subnet"))
    gateway: IPv4 = Field(description="Address inside cidr the hub answers ARP and ping for",
                          examples=["10.0.1.254"],
                          json_schema_extra=rule("inside cidr; up to a /30, not its network or "
                                                 "broadcast address"))
    description: Annotated[str, Field(max_length=256)] | None = None

    @field_validator("gateway")
    @classmethod
    def _gateway_inside(cls, gateway: ipaddress.IPv4Address, info: ValidationInfo) -> ipaddress.IPv4Address:
        cidr = info.data.get("cidr")
        if cidr is None:
            return gateway
        if gateway not in cidr:
            fail(f"gateway {gateway} is outside the subnet {cidr}")
        if cidr.prefixlen <= 30 and gateway == cidr.network_address:
            fail(f"gateway {gateway} is the network address of {cidr}, not a host address")
        if cidr.prefixlen <= 30 and gateway == cidr.broadcast_address:
            fail(f"gateway {gateway} is the broadcast address of {cidr}, not a host address")
        return gateway

    def stored_body(self) -> dict[str, Any]:
        """The body kept in the store (what ``topology.Subnet.from_body`` reads)."""
        return self.model_dump(mode="json", exclude_none=True)


def subnet_id_from_cidr(cidr: ipaddress.IPv4Network) -> str:
    """10.0.1.0/24 -> "10-0-1-0-24"."""
    return str(cidr).replace(".", "-").replace("/", "-")


def parse_subnet(doc: Any) -> Subnet:
    """Validate one subnet body on its own; DocumentInvalid lists every bad field."""
    if not isinstance(doc, dict):
        raise DocumentInvalid([("body", "must be an object (a mapping of fields)")], "subnet")
    try:
        return Subnet.model_validate(doc)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), "subnet") from None


def validate_subnet(doc: Any, store: Store | None = None, *, id: str | None = None) -> Subnet:
    """Validate a subnet body, and with ``store`` also against the other subnets.

    ``id`` is the subnet being replaced (it does not overlap itself). A subnet
    must not overlap another one: the hub could not tell which one an address
    belongs to.
    """
    subnet = parse_subnet(doc)
    if store is not None:
        check_subnet(subnet, store, id=id)
    return subnet


def check_subnet(subnet: Subnet, store: Store, *, id: str | None = None) -> None:
    """The store rules of a parsed subnet: it overlaps no other one (``id`` is the one replaced)."""
    errors: list[tuple[str, str]] = []
    for other in store.list(KIND):
        if other.id == id:
            continue
        try:
            other_cidr = ipaddress.IPv4Network(other.body["cidr"], strict=False)
        except (KeyError, TypeError, ValueError):
            continue
        if subnet.cidr.overlaps(other_cidr):
            errors.append((field_path(("cidr",)),
                           f"{subnet.cidr} overlaps subnet {other.id!r} ({other_cidr})"))
    if errors:
        raise DocumentInvalid(errors, "subnet")
