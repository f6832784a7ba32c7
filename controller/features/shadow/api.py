"""Shadow appliances over REST: ``/v1/appliances``, served by the CRUD layer, with each
appliance's findings, the shadow slots (``slots_api``) and the remediations
(``remediations_api``).

A manifest is checked where it is written, in the write's transaction:
every production interface is a stored interface that no other feature
holds exclusively (a personality may run on it; a persona member, a shard
resource or a shadow slot may not be one), and the shadow instances it asks
for fit in the slots other enabled appliances leave free.

Every answer shows, beside the manifest, what the runtime keeps of the
appliance (``shadow-state``): its instances, the current percentage and
why, and the mirror's counters.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import Field

from controller.api.context import ApiContext, Ctx
from controller.api.crud import Change, DocumentKind, StoredMeta, crud_router
from controller.api.problems import Problem, field_error, problem_responses
from controller.api.revisions import DocId
from controller.core import claims
from controller.core.documents import DocumentInvalid, slugify
from controller.core.interfaces import KIND as INTERFACE
from controller.features.shadow import remediations_api, slots_api
from controller.features.shadow.adaptive import kept_percentage
from controller.features.shadow.document import (CAPABILITY, FINDING, KIND, SLOT, STATE, Appliance,
                                                 parse_manifest)
from controller.features.shadow.mirror_caps import describe
from controller.features.shadow.records import (Counters, Finding, Hold, Instance, Percentage,
                                                ShadowState, read, read_all)
from controller.store import Document, Store

SHARED_WITH = frozenset({"personality"})
"""Features whose hold on an interface leaves it free to be an appliance's production
interface (a personality runs on the host; the appliance is what it serves)."""


# -- documentation models (answers are built from the store) ----------------------------

class ApplianceView(StoredMeta, Appliance):
    instances: list[Instance] = Field(description="The shadow instances, one per slot taken")
    percentage: Percentage
    counters: Counters = Field(description="Since the manifest was created")
    holds: list[Hold] = Field(description="Sources whose new connections are all mirrored "
                                          "for a while (sample and hold, adaptive mode)")
    added_instances: int = Field(description="Instances added on load beyond the manifest's "
                                             "count (adaptive mode)")
    unmirrored: str | None = Field(description="Why nothing is mirrored although shadowing is "
                                               "enabled: a production switch lacks an action "
                                               "the mirror needs (the capability probe's "
                                               "answer), or is not probed yet; null: mirrored")


# -- checks ------------------------------------------------------------------------------

def _interface_errors(store: Store, interfaces: list[str]) -> tuple[list[tuple[str, str]],
                                                                     list[dict[str, str]]]:
    """(unknown interfaces, interfaces another feature holds), each naming ``body.interfaces[i]``."""
    unknown, held = [], []
    for i, iid in enumerate(interfaces):
        field = f"body.interfaces[{i}]"
        if store.find(INTERFACE, iid) is None:
            unknown.append((field, f"no interface {iid!r} is known (see GET /v1/interfaces)"))
            continue
        for row in claims.holders(store, claims.INTERFACE, iid):
            if row.feature not in SHARED_WITH:
                held.append({"field": field, "reason": row.reason, "owner": row.owner,
                             "interface_id": iid})
    return unknown, held


def slots_taken(store: Store, but: str | None = None) -> dict[str, int]:
    """The slots each enabled appliance (other than ``but``) asks for, by appliance id."""
    taken = {}
    for doc in store.list(KIND):
        shadowing = doc.body.get("shadowing") or {}
        if doc.id != but and shadowing.get("shadow_enabled"):
            taken[doc.id] = int(shadowing.get("shadow_instance_count") or 0)
    return taken


def _count_error(store: Store, id: str | None, appliance: Appliance) -> list[tuple[str, str]]:
    shadowing = appliance.shadowing
    if not shadowing.shadow_enabled:
        return []
    slots = len(store.list(SLOT))
    taken = slots_taken(store, but=id)
    free = max(0, slots - sum(taken.values()))
    if shadowing.shadow_instance_count <= free:
        return []
    others = ", ".join(f"{n} by {a!r}" for a, n in sorted(taken.items()) if n)
    return [("body.shadowing.shadow_instance_count",
             f"asks for {shadowing.shadow_instance_count} instance(s), but {free} of "
             f"{slots} shadow slot(s) are free" + (f" ({others})" if others else "")
             + "; add slots (POST /v1/shadow-slots) or ask for fewer")]


# -- the runtime's part of an answer -----------------------------------------------------

def runtime_view(store: Store, doc: Document) -> dict[str, Any]:
    """``instances``, ``percentage`` and ``counters`` of an appliance, from ``shadow-state``
    (before the runtime wrote any: none, the manifest's percentage, zero).  The percentage
    is the manager's rule (`kept_percentage`) over the manifest as stored now, so a new
    fixed percentage shows at once, not when the runtime next rewrites its state."""
    stored = store.find(STATE, doc.id)
    state = (read(ShadowState, stored) if stored is not None else None) or ShadowState()
    try:
        manifest = parse_manifest(doc.body)
    except DocumentInvalid:
        manifest = None                  # the feature ignores it: nothing is mirrored
    percentage = kept_percentage(state.percentage, manifest)
    return {"instances": [i.model_dump(exclude_none=True) for i in state.instances],
            "percentage": percentage.model_dump(), "counters": state.counters.model_dump(),
            "holds": [h.model_dump() for h in state.holds], "added_instances": state.added,
            "unmirrored": state.unmirrored if manifest is not None
            and manifest.shadowing.shadow_enabled else None}


# -- the kind ----------------------------------------------------------------------------

class ApplianceKind(DocumentKind):
    kind = KIND
    path = "/v1/appliances"
    model = Appliance
    tag = "appliances"
    plural = "appliances"
    merge_patch = True
    stored = ApplianceView
    descriptions = {
        "create": "The id is the body's `id`, or made from the name. 422 for an unknown "
                  "interface or more instances than free shadow slots; 409 when a production "
                  "interface is a persona member, a shard resource or a shadow slot.",
        "patch": "The percentage, the profiles, the remediation (or anything else) change "
                 "live: a new percentage applies to new connections only. `null` removes an "
                 "optional section (its defaults apply).",
        "delete": "The runtime stops its shadow instances and frees their slots.",
    }

    def parse(self, change: Change) -> Appliance:
        return parse_manifest(change.body)

    def derive_id(self, document: Any) -> str:
        id = slugify(document.name)
        if not id:
            raise DocumentInvalid([("body.name", "has no letters or digits to make an id "
                                                 "from; give an id")], KIND)
        return id

    def check(self, change: Change, document: Any) -> None:
        unknown, held = _interface_errors(change.store, document.interfaces)
        invalid = unknown + _count_error(change.store, change.id, document) \
            + _capability_error(change.store, document)
        if invalid:
            raise DocumentInvalid(invalid, KIND)
        if held:
            first = held[0]
            raise Problem(409, "Claimed",
                          detail=f"interface {first['interface_id']} {first['reason']}",
                          errors=[field_error(h["field"], f"{h['interface_id']} {h['reason']}")
                                  for h in held],
                          extra={"owner": first["owner"], "interface_id": first["interface_id"],
                                 "holders": held})

    def shown(self, ctx: ApiContext, doc: Document) -> dict[str, Any]:
        return runtime_view(ctx.store, doc)


def _capability_error(store: Store, document: Appliance) -> list[tuple[str, str]]:
    """`interfaces` refused when a production switch is known (its last probe, stored by the
    feature as ``shadow-capability``) to lack an action the mirror needs.  Read from the
    store, never asked of the hub's worker: this runs inside the write's transaction,
    which the worker may be waiting for."""
    if not document.shadowing.shadow_enabled:
        return []
    docs = [store.find(INTERFACE, i) for i in document.interfaces]
    reasons = []
    for dpid in sorted({d.body["datapath"] for d in docs if d is not None}):
        probed = store.find(CAPABILITY, dpid)
        why = probed and describe(int(dpid, 16), probed.body.get("missing") or {},
                                  document.mirror.snaplen is not None)
        if why:
            reasons.append(why)
    return [("body.interfaces", "cannot be mirrored: " + "; ".join(reasons))] if reasons else []


# -- findings ----------------------------------------------------------------------------

findings = APIRouter(prefix="/v1/appliances", tags=["appliances"],
                     responses=problem_responses(500))


@findings.get("/{id}/findings", summary="An appliance's findings, newest first",
              description="What the analysis profiles found: the profile, the severity, the "
                          "connection's 5-tuple, the evidence, when, and the action taken. "
                          "They are alerts too.",
              responses={200: {"model": list[Finding]}, **problem_responses(404, 422)})
def list_findings(id: DocId, ctx: Ctx,
                  limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
                  ) -> JSONResponse:
    ctx.store.get(KIND, id)
    found = [f for f in read_all(ctx.store, FINDING, Finding) if f.appliance_id == id]
    found.sort(key=lambda f: (f.at, f.id), reverse=True)
    return JSONResponse([f.model_dump() for f in found[:limit]])


router = APIRouter()
router.include_router(crud_router(ApplianceKind()))
router.include_router(findings)
router.include_router(slots_api.router)
router.include_router(remediations_api.router)
