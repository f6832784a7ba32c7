"""A live persona's claims (see controller.core.claims); an expired one holds none.

* its range and its NAT block (``ipv4``): no other feature's range may
  overlap them.  Personas may overlap each other: that is what NAT blocks
  are allocated for (``controller.features.persona.store``);
* its name (``persona.name``): names are unique among live personas;
* its index (``persona.index``, 1..32767: its conntrack zone and meters);
* each attached interface (``interface``): one persona, and no personality.
"""
from __future__ import annotations

from typing import Any

from controller.core import claims
from controller.core.claims import Claim

KIND = "persona"
ACTIVE = "active"
NAME, INDEX = "persona.name", "persona.index"


def persona_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    if body.get("state") != ACTIVE:
        return []
    document, nat, index = body["document"], body.get("nat"), body.get("index")
    out = [Claim.unique(NAME, document["name"], "body.name",
                        f"is the name of live persona {id!r}; names are unique among live "
                        "personas"),
           Claim.range(document["ip_range"], "body.ip_range", f"is the range of persona {id!r}")]
    if index is not None:
        out.append(Claim.unique(INDEX, int(index), "body.index", f"is the index of persona {id!r}"))
    if nat:
        out.append(Claim.range(nat["hub_range"], "body.nat.hub_range",
                               f"is the NAT block of persona {id!r}"))
    out += [Claim.interface(a["interface_id"], "body.interface_id",
                            f"is attached to persona {id!r}")
            for a in body.get("attachments") or ()]
    return out


claims.declare(KIND, persona_claims, feature="persona")
