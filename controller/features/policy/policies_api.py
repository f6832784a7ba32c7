"""Consolidated policies over REST: ``/v1/policies``, read only.

The runtime stores each category's policy as versions (`versions`: ``policy``
names the current one, ``policy-version`` keeps every one).  REST answers:

* ``GET /v1/policies``: every category with a policy, its version and rule count;
* ``GET /v1/policies/{category}``: ``{category, version, rules}`` of the current
  version (``?version=N`` an older one), or ``?format=graph`` (node-link JSON),
  ``dot`` (Graphviz) or ``k8s`` (a Kubernetes NetworkPolicy, YAML);
* ``GET .../versions``: every version, oldest first;
* ``GET .../diff?from=V1&to=V2``: what changed (`graph.diff`); ``to`` defaults to
  the current version, ``from`` to the one before it (0: before the first, no rules);
* ``GET .../drift?unused=SECONDS``: rules unused that long, support over the current
  members (`drift.drift`).

404 when the category has no policy (or not that version).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from ipaddress import IPv4Network
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from controller.api.context import Ctx
from controller.api.problems import Problem, field_error, problem_responses
from controller.core.documents import rule
from controller.core.interfaces import CATEGORY_PATTERN, KIND as INTERFACE
from controller.features.policy import graph, versions
from controller.features.policy.drift import DEFAULT_UNUSED, drift
from controller.features.policy.document import (FORMATS, DiffView, NodeLinkView, PolicySummary,
                                                 PolicyView, VersionView)
from controller.features.policy.generalize import Generalizer
from controller.features.policy.rules import ADDRESS_SET, POLICY, POLICY_VERSION, Peer, Rules
from controller.store import Document, NotFound, Store

DOT, YAML = "text/vnd.graphviz", "application/yaml"

CategoryPath = Annotated[str, Path(description="The category, e.g. web",
                                   json_schema_extra={"pattern": CATEGORY_PATTERN})]
"""A path category; one that breaks the pattern has no policy (404)."""
Version = Annotated[int | None, Query(ge=1, le=2**53, description="A version (default: the "
                                                                  "current one)")]
DiffFrom = Annotated[int | None, Query(alias="from", ge=0, le=2**53, description=(
    "The older version (default: the one before `to`; 0: before the first, no rules)"))]
DiffTo = Annotated[int | None, Query(ge=0, le=2**53, description="The newer version (default: "
                                                                  "the current one)")]


# -- reading -----------------------------------------------------------------------------

def current_version(store: Store, category: str) -> int | None:
    head = store.find(POLICY, category)
    return int(head.body["version"]) if head is not None else None


def version_doc(store: Store, category: str, version: int | None) -> Document:
    """The stored version (the current one when None); NotFound when there is none."""
    if version is None:
        version = current_version(store, category)
        if version is None:
            raise NotFound(POLICY, category)
    doc = store.find(POLICY_VERSION, versions.version_id(category, version))
    if doc is None:
        raise NotFound(POLICY_VERSION, versions.version_id(category, version))
    return doc


def rules_at(store: Store, category: str, version: int | None) -> Rules:
    """A category's rules at `version` (0: none yet; None: the current version)."""
    if version == 0:
        store.get(POLICY, category)                 # 404 for a category with no policy
        return Rules(category, 0)
    return Rules.from_json(version_doc(store, category, version).body)


def policy_view(doc: Document) -> dict[str, Any]:
    return {**Rules.from_json(doc.body).to_json(), "created_at": doc.body.get("created_at"),
            "reason": doc.body.get("reason")}


def cidrs_of(store: Store) -> Callable[[Peer], list[str]]:
    """What a set or subnet covers, as CIDRs, from the stored sets and subnets
    (`Generalizer.cidrs`, for the Kubernetes export's ipBlocks)."""
    sets, subnets = {}, {}
    for doc in store.list(ADDRESS_SET):
        sets[doc.id] = [IPv4Network(c) for c in doc.body.get("cidrs") or ()]
    for doc in store.list("subnet"):
        if doc.body.get("cidr"):
            subnets[doc.id] = IPv4Network(doc.body["cidr"])
    return Generalizer({}, sets, subnets).cidrs


def exported(store: Store, rules: Rules, format: str) -> Response:
    """The rules in ``format`` (see `document.FORMATS`)."""
    if format == "graph":
        return JSONResponse(graph.node_link(rules))
    if format == "dot":
        return Response(graph.dot(rules), media_type=DOT)
    try:
        return Response(graph.k8s(rules, cidrs_of(store)), media_type=YAML)
    except ValueError as exc:
        raise Problem(422, detail=f"no Kubernetes export: {exc}",
                      errors=[field_error("query.format", str(exc))]) from None


# -- the routes --------------------------------------------------------------------------

router = APIRouter(prefix="/v1/policies", tags=["policies"], responses=problem_responses(500))


@router.get("", summary="Every category with a policy: its current version and rule count",
            responses={200: {"model": list[PolicySummary]}})
def list_policies(ctx: Ctx) -> JSONResponse:
    out = []
    for head in sorted(ctx.store.list(POLICY), key=lambda d: d.id):
        version = int(head.body["version"])
        doc = ctx.store.find(POLICY_VERSION, versions.version_id(head.id, version))
        out.append({"category": head.id, "version": version,
                    "rules": len((doc.body.get("rules") or ()) if doc else ()),
                    "updated_at": head.body.get("updated_at")})
    return JSONResponse(out)


@router.get("/{category}", summary="A category's consolidated policy",
            description="`{category, version, rules}` of the current version, or of "
                        "`version`. `format=graph` answers node-link JSON, `dot` Graphviz, "
                        "`k8s` a Kubernetes NetworkPolicy (the category's pods by the label "
                        "hubshift/category).",
            responses={200: {"model": PolicyView | NodeLinkView,
                             "content": {DOT: {"schema": {"type": "string"}},
                                         YAML: {"schema": {"type": "string"}}}},
                       **problem_responses(404, 422)})
def get_policy(
    category: CategoryPath, ctx: Ctx, version: Version = None,
    format: Annotated[Literal[FORMATS], Query(  # type: ignore[valid-type]
        description="json (default), graph, dot or k8s", json_schema_extra=rule(
            "k8s: every category the policy names is a Kubernetes label value (at most 63 "
            "characters, a letter or digit at both ends)"))] = "json",
) -> Response:
    if format == "json":
        return JSONResponse(policy_view(version_doc(ctx.store, category, version)))
    return exported(ctx.store, rules_at(ctx.store, category, version), format)


@router.get("/{category}/versions", summary="Every version of a category's policy, oldest first",
            responses={200: {"model": list[VersionView]}, **problem_responses(404)})
def list_versions(category: CategoryPath, ctx: Ctx) -> JSONResponse:
    ctx.store.get(POLICY, category)
    docs = [d for d in ctx.store.list(POLICY_VERSION) if d.body.get("category") == category]
    docs.sort(key=lambda d: int(d.body.get("version") or 0))
    return JSONResponse([{"category": category, "version": int(d.body.get("version") or 0),
                          "rules": len(d.body.get("rules") or ()),
                          "created_at": d.body.get("created_at"), "reason": d.body.get("reason")}
                         for d in docs])


@router.get("/{category}/diff", summary="What changed between two versions of a policy",
            description="`to` defaults to the current version, `from` to the one before it "
                        "(0: before the first version, so every rule is added).",
            responses={200: {"model": DiffView}, **problem_responses(404, 422)})
def diff_versions(category: CategoryPath, ctx: Ctx,
                  from_: DiffFrom = None, to: DiffTo = None) -> JSONResponse:
    if to is None:
        to = current_version(ctx.store, category)
        if to is None:
            raise NotFound(POLICY, category)
    old = rules_at(ctx.store, category, from_ if from_ is not None else max(0, to - 1))
    return JSONResponse(graph.diff(old, rules_at(ctx.store, category, to)))


@router.get("/{category}/drift", summary="Rules unused for a while, support over today's members",
            description="Every rule of the current version with `idle_seconds` (since a "
                        "learning session or a review last saw it), `unused` (idle at least "
                        "`unused` seconds, default a week), `current_support` (over the "
                        "category's members now) and `orphaned` (a learned rule none of whose "
                        "members is in the category any more).",
            responses={200: {"model": dict[str, Any]}, **problem_responses(404, 422)})
def policy_drift(category: CategoryPath, ctx: Ctx,
                 unused: Annotated[int, Query(ge=0, le=2**31, description="Seconds")]
                 = DEFAULT_UNUSED) -> JSONResponse:
    rules = rules_at(ctx.store, category, None)          # the current version; 404 if none
    members = [d.id for d in ctx.store.list(INTERFACE)
               if category in (d.body.get("categories") or ())]
    return JSONResponse(drift(rules, members, time.time(), unused))
