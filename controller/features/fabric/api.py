"""Subnets over REST: ``/v1/subnets``, served by the CRUD layer (``controller.api.crud``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controller.api.crud import Change, DocumentKind, crud_router
from controller.api.problems import Problem, field_error
from controller.core.documents import DocumentInvalid
from controller.core.topology import Subnet as TopologySubnet
from controller.features.fabric.document import KIND, Subnet, check_subnet, subnet_id_from_cidr
from controller.features.personality.document import parse_personality, subnet_errors
from controller.store import Document, Store

PERSONALITY = "personality"


def _personalities_using(store: Store, subnet_id: str) -> list[Document]:
    return [d for d in store.list(PERSONALITY) if d.body.get("subnet_id") == subnet_id]


def _personalities_fit(store: Store, id: str, subnet: Subnet) -> None:
    """A subnet may not change under the personalities that use it (409 naming the field)."""
    new = TopologySubnet(id, subnet.cidr, subnet.gateway)
    errors = []
    for doc in _personalities_using(store, id):
        try:
            personality = parse_personality(doc.body)
        except DocumentInvalid:
            continue
        for field, reason in subnet_errors(personality, new):
            target = "body.gateway" if " is the gateway of " in reason else "body.cidr"
            errors.append(field_error(target, f"personality {doc.id!r} would become invalid: "
                                      f"{field.removeprefix('body.')}: {reason}"))
    if errors:
        raise Problem(409, detail=f"subnet {id!r} is used by personalities whose addresses or "
                      "next hops would no longer fit it", errors=errors, extra={"kind": KIND, "id": id})


class SubnetKind(DocumentKind):
    kind = KIND
    path = "/v1/subnets"
    model = Subnet
    tag = "subnets"
    plural = "subnets"
    descriptions = {
        "create": "The id is the body's `id`, or made from the CIDR (10.0.7.0/24 -> `10-0-7-0-24`).",
        "replace": "409 when a personality using the subnet would no longer fit it.",
        "delete": "409 while a personality uses the subnet.",
    }

    def derive_id(self, document: Any) -> str:
        return subnet_id_from_cidr(document.cidr)

    def check(self, change: Change, document: Any) -> None:
        check_subnet(document, change.store, id=change.prior.id if change.prior else None)
        if change.prior is not None:
            assert change.id is not None
            _personalities_fit(change.store, change.id, document)

    def check_delete(self, change: Change) -> None:
        assert change.id is not None
        users = [d.id for d in _personalities_using(change.store, change.id)]
        if users:
            raise Problem(409, detail=f"subnet {change.id!r} is in use by personality {', '.join(users)}",
                          extra={"kind": KIND, "id": change.id,
                                 "used_by": [f"{PERSONALITY}/{u}" for u in users]})


router: APIRouter = crud_router(SubnetKind())
