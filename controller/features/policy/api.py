"""The policy feature over REST.

* ``/v1/address-sets``: CRUD through the common document layer (the id from the
  name, like other kinds);
* ``/v1/mirroring-profiles``: CRUD likewise (the id "<source>-to-<target>"), and
  ``GET .../{id}/preview``: every rule of the source's current policy, in or
  out at the profile's strength, with the reason (`strength.select`);
* ``/v1/categories`` (`categories_api`), ``/v1/learning-sessions``
  (`sessions_api`), ``/v1/policies`` (`policies_api`),
  ``/v1/interfaces/{id}/policy-overrides`` (`overrides_api`), ``/v1/policy-reviews``
  (`reviews_api`) and ``/v1/audit`` (`audit_api`).

Every committed write of a profile (create, replace, patch, delete) records one
audit entry (`audit.record`) with the profile before and after, inside the
write's transaction (a dry run rolls it back with the write).

Categories themselves are set on interface records by the core's
``PATCH /v1/interfaces/{id}``.  A profile is refused (422 naming the field) when
its strength is outside 0-100 (``body.strength``), its target is its source
(``body.target_category``), or its source is a category no interface has and no
policy exists for (``body.source_category``); the target may be a category
nobody has yet.  A target gets one profile: a second one for it is 409.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controller.api.context import Ctx
from controller.api.crud import Change, DocumentKind, Written, crud_router, view
from controller.api.problems import Problem, field_error, problem_responses
from controller.api.revisions import DocId
from controller.core.documents import DocumentInvalid, slugify
from controller.features.policy import (audit, audit_api, categories_api, overrides_api,
                                        policies_api, reviews_api, sessions_api, strength,
                                        versions)
from controller.features.policy.categories_api import members_by_category
from controller.features.policy.document import AddressSet, MirroringProfile, PreviewView
from controller.features.policy.rules import ADDRESS_SET, POLICY, PROFILE, Rules
from controller.store import Document, Store


# -- address sets --------------------------------------------------------------------------

class AddressSetKind(DocumentKind):
    kind = ADDRESS_SET
    path = "/v1/address-sets"
    model = AddressSet
    tag = "address sets"
    plural = "address-sets"
    merge_patch = True
    descriptions = {
        "create": "The id is the body's `id`, or made from the name. A peer address inside "
                  "one of its networks is this set in learned rules (the most specific set "
                  "when several hold it).",
    }

    def derive_id(self, document: Any) -> str:
        id = slugify(document.name)
        if not id:
            raise DocumentInvalid([("body.name", "has no letters or digits to make an id "
                                                 "from; give an id")], ADDRESS_SET)
        return id


# -- mirroring profiles --------------------------------------------------------------------

def known_category(store: Store, category: str) -> bool:
    """Some interface has it, or a policy exists for it."""
    return category in members_by_category(store) or store.find(POLICY, category) is not None


def profile_id(document: MirroringProfile) -> str:
    """"<source>-to-<target>", each cut to 30 characters so the id fits 64."""
    return f"{document.source_category[:30]}-to-{document.target_category[:30]}"


class ProfileKind(DocumentKind):
    kind = PROFILE
    path = "/v1/mirroring-profiles"
    model = MirroringProfile
    tag = "mirroring profiles"
    plural = "mirroring-profiles"
    merge_patch = True
    descriptions = {
        "create": "The id is the body's `id`, or \"<source>-to-<target>\". 422 for a strength "
                  "outside 0-100, a target equal to the source, or a source category no "
                  "interface has and no policy exists for; 409 when another profile has the "
                  "same target.",
        "patch": "A new strength or mode applies to the target's members at once.",
    }

    def derive_id(self, document: Any) -> str:
        return profile_id(document)

    def check(self, change: Change, document: Any) -> None:
        source, target = document.source_category, document.target_category
        if not known_category(change.store, source):
            raise DocumentInvalid([("body.source_category",
                                    f"no interface has category {source!r} and it has no "
                                    "policy (see GET /v1/categories)")], PROFILE)
        other = next((d.id for d in change.store.list(PROFILE)
                      if d.id != change.id and d.body.get("target_category") == target), None)
        if other is not None:
            raise Problem(409, "Target taken",
                          detail=f"category {target!r} already gets profile {other!r}; a "
                                 "category is the target of one profile",
                          errors=[field_error("body.target_category",
                                              f"is the target of profile {other}")],
                          extra={"profile_id": other})

    # every write is in the audit trail, before and after (inside the write's transaction)
    def create(self, change: Change) -> Written:
        return self._audited(change, "created", super().create(change))

    def replace(self, change: Change, revision: int | None) -> Written:
        return self._audited(change, "updated", super().replace(change, revision))

    def delete(self, change: Change, revision: int | None) -> Written:
        return self._audited(change, "deleted", super().delete(change, revision))

    def _audited(self, change: Change, verb: str, written: Written) -> Written:
        before = view(change.prior) if change.prior is not None else None
        after = view(written.document) if verb != "deleted" else None
        audit.record(change.store, "rest", f"{PROFILE}.{verb}", None, before, after,
                     change.now, subject=written.document.id)
        return written


def preview(store: Store, doc: Document) -> dict[str, Any]:
    """Every rule of the source's current policy, in or out at the profile's strength."""
    profile = MirroringProfile.model_validate(doc.body)
    rules = versions.current(store, profile.source_category)
    selection = strength.select(rules or Rules(profile.source_category), profile.strength)
    by_id = rules.rules if rules is not None else {}
    rows = []
    for row in selection.rows:
        key = by_id[row.rule_id].key
        rows.append({**row.to_json(), "direction": key.direction, "protocol": key.protocol,
                     "port": key.port, "peer": str(key.peer),
                     "support": by_id[row.rule_id].support})
    return {"profile_id": doc.id, "source_category": profile.source_category,
            "target_category": profile.target_category, "strength": profile.strength,
            "mode": profile.mode, "policy_version": rules.version if rules is not None else None,
            "ranked": selection.ranked, "cut": selection.cut, "rows": rows}


previews = APIRouter(prefix=ProfileKind.path, tags=[ProfileKind.tag],
                     responses=problem_responses(500))


@previews.get("/{id}/preview", summary="Which of the source's rules the target gets",
              description="Every rule of the source category's current policy, ranked by "
                          "support (most members first), then first seen, then id; strength s "
                          "keeps the first ceil(N*s/100). Each row says in or out and why, "
                          "e.g. \"support 1/2, rank 3 of 3, cut at 2\". No rows while the "
                          "source has no policy (the target gets default deny).",
              responses={200: {"model": PreviewView}, **problem_responses(404)})
def preview_profile(id: DocId, ctx: Ctx) -> JSONResponse:
    return JSONResponse(preview(ctx.store, ctx.store.get(PROFILE, id)))


router = APIRouter()
router.include_router(categories_api.router)
router.include_router(crud_router(AddressSetKind()))
router.include_router(sessions_api.router)
router.include_router(policies_api.router)
router.include_router(crud_router(ProfileKind()))
router.include_router(previews)
router.include_router(overrides_api.router)
router.include_router(reviews_api.router)
router.include_router(audit_api.router)
