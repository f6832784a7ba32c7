"""The personality feature's claims: the interfaces it binds (see controller.core.claims).

An interface is the personality feature's while it runs a personality or has
an operation in flight (its record's ``operation_id``: set when the operation
is created, in that transaction, and cleared when it ends).  Such an
interface cannot join a persona, and a persona's interface cannot take a
personality.
"""
from __future__ import annotations

from typing import Any

from controller.core import claims
from controller.core.claims import Claim, Owner
from controller.core.interfaces import KIND as INTERFACE


def interface_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    personality, operation = body.get("personality_id"), body.get("operation_id")
    if personality:
        return [Claim.interface(id, "body.personality_id", f"runs personality {personality!r}",
                                Owner("personality", personality))]
    if operation:
        return [Claim.interface(id, "body.personality_id",
                                f"has an unfinished personality operation {operation!r}",
                                Owner("operation", operation))]
    return []


claims.declare(INTERFACE, interface_claims, feature="personality")
