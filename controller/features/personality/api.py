"""Personalities over REST: the documents, and the changes that put them on interfaces.

``/v1/personalities`` is served by the CRUD layer (``controller.api.crud``); a
replace also starts an ``update`` operation on every interface running the
personality. The changes themselves (switch, revert, A/B apply, operations)
are ``controller.features.personality.changes_api``; ``router`` serves both.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import Field

from controller.api.crud import Change, DocumentKind, Written, crud_router, stored_model
from controller.api.problems import Problem, field_error
from controller.core import interfaces
from controller.core.documents import slugify
from controller.features.personality import operations
from controller.features.personality.changes_api import changes
from controller.features.personality.document import KIND, Personality, check_personality
from controller.store import Store

INTERFACE = interfaces.KIND
OPERATION = operations.KIND


# -- the documents ----------------------------------------------------------------------------

StoredPersonality = stored_model(Personality)


class UpdatedPersonality(StoredPersonality):  # type: ignore[misc, valid-type]
    operations: list[str] = Field(description="ids of the update operations started by this version")


def _update_operations(store: Store, id: str, revision: int) -> list[str]:
    """One ``update`` operation per interface running personality ``id`` (busy ones are skipped
    and noted in the journal: their unfinished operation keeps the interface)."""
    created = []
    for iface in store.list(INTERFACE):
        if iface.body.get("personality_id") != id:
            continue
        try:
            op = operations.create(store, iface.id, id, kind="update", now=time.time(),
                                   reason=f"personality {id} revision {revision}")
        except operations.Busy as exc:
            store.append_event(KIND, id, "update skipped: interface busy",
                               {"revision": revision, "interface_id": iface.id,
                                "operation_id": exc.operation_id})
            continue
        created.append(op.id)
    return created


class PersonalityKind(DocumentKind):
    kind = KIND
    path = "/v1/personalities"
    model = Personality
    tag = "personalities"
    plural = "personalities"
    stored = StoredPersonality
    replaced = UpdatedPersonality
    descriptions = {
        "create": "The id is the body's `id`, or the slug of `name` (\"Web Front\" -> `web-front`).",
        "replace": "Every interface running the personality gets an `update` operation applying "
                   "the new version; their ids are listed in the answer's `operations` (busy "
                   "interfaces are skipped and noted in the journal).",
        "delete": "409 while an interface uses it, or an unfinished operation may apply it or "
                  "roll back to it.",
    }

    def derive_id(self, document: Any) -> str:
        id = slugify(document.name)
        if not id:
            raise Problem(422, detail="cannot derive an id from the name", errors=[field_error(
                "body.name", "has no letters or digits to make an id from; give an id")])
        return id

    def check(self, change: Change, document: Any) -> None:
        check_personality(document, change.store)

    def replace(self, change: Change, revision: int | None) -> Written:
        written = super().replace(change, revision)
        doc = written.document
        ops = _update_operations(change.store, doc.id, doc.revision)
        return Written(doc, {"operations": ops}, (OPERATION,) if ops else ())

    def check_delete(self, change: Change) -> None:
        id, store = change.id, change.store
        users = [d.id for d in store.list(INTERFACE)
                 if id in (d.body.get("personality_id"), d.body.get("default_personality_id"))]
        # An unfinished operation may still apply it, or roll back to it.
        ops = [d.id for d in store.list(OPERATION)
               if d.body.get("state") not in operations.FINAL
               and id in (d.body.get("to_personality_id"), d.body.get("from_personality_id"))]
        if users or ops:
            by = [f"{what} {', '.join(ids)}" for what, ids in
                  (("interface", users), ("unfinished operation", ops)) if ids]
            raise Problem(409, detail=f"{KIND} {id!r} is in use by {' and '.join(by)}",
                          extra={"kind": KIND, "id": id,
                                 "used_by": [f"{INTERFACE}/{u}" for u in users]
                                 + [f"{OPERATION}/{o}" for o in ops]})


router = APIRouter()
router.include_router(crud_router(PersonalityKind()))
router.include_router(changes)
