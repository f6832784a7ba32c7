"""Schemathesis hooks: a schema-valid request may be refused only for a rule the schema names.

A JSON Schema cannot say everything the API checks: a gateway inside its
subnet's CIDR, a port range that is not reversed, a reference to a stored
document, an expiration in the future.  The OpenAPI document marks each field
with such a rule by ``x-rule`` (``controller.core.documents.rule``).  So
``schemathesis.toml`` lets schema-valid requests be answered 422, and this
check holds every such 422 to it: each field the problem names must carry
an ``x-rule`` (on itself or on a field containing it).  A 422 naming any
other field means the schema says less than the server checks: a failure.

Loaded by ``schemathesis.toml`` (``hooks``) for ``schemathesis run``, and by
``tests/unit/test_openapi_fuzz.py``.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

import schemathesis
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case

RULE = "x-rule"
_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _branches(node: Any) -> Iterator[dict[str, Any]]:
    """``node`` and every subschema that applies to the same value."""
    if not isinstance(node, dict):
        return
    yield node
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(key, ()):
            yield from _branches(sub)
    for key in ("then", "else"):
        yield from _branches(node.get(key))


def _explained(schema: dict[str, Any], path: str) -> bool:
    """Whether a field at ``path`` ("firewall_rules[2].port") or one containing it has a rule."""
    nodes = list(_branches(schema))
    for name, index in _TOKEN.findall(path):
        if any(RULE in n for n in nodes):
            return True
        nodes = [sub for n in nodes for sub in _branches(
            n.get("items") if index else n.get("properties", {}).get(name))]
    return any(RULE in n for n in nodes)


def _request_schema(operation: Any, field: str) -> tuple[dict[str, Any] | None, str]:
    """The schema ``field`` ("body.x", "query.state", "path.id") refers to, and the rest of it."""
    where, _, rest = field.partition(".")
    definition = operation.definition.raw
    if where == "body":
        content = definition.get("requestBody", {}).get("content", {})
        return next((c["schema"] for c in content.values() if "schema" in c), None), rest
    name, _, rest = rest.partition(".")
    for param in definition.get("parameters", ()):
        if param.get("in") == where and param.get("name", "").lower() == name.lower():
            return {**param.get("schema", {}), **({RULE: param[RULE]} if RULE in param else {})}, rest
    return None, rest


@schemathesis.check
def refused_for_a_stated_rule(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request answered 422 names only fields whose rules the schema states."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    if is_unexpected_http_status_case(case):
        return None
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        errors = []
    fields = [e.get("field", "") for e in errors]
    unexplained = []
    for field in fields or ["(no field named)"]:
        schema, rest = _request_schema(case.operation, field)
        if schema is None or not _explained(schema, rest):
            unexplained.append(field)
    if unexplained:
        raise AssertionError(
            f"a schema-valid request was refused (422) for {', '.join(unexplained)}, "
            f"which the schema states no further rule for (x-rule)")
    return True


def _dry_run(case: Any) -> bool:
    return str((case.query or {}).get("dry_run", "")).lower() in ("true", "1")


@schemathesis.check
def created_resources_are_available(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis's ``ensure_resource_availability``, knowing that a dry run creates
    nothing: a POST with ``?dry_run=true`` is answered 200 with what *would* be stored,
    and the document is rightly not found afterwards.  Everything else is checked as
    the built-in check does (which ``tests/unit/test_openapi_fuzz.py`` replaces by this)."""
    from schemathesis.specs.openapi.checks import ensure_resource_availability
    parent = ctx.internals.find_parent(case_id=case.id)
    if parent is not None and _dry_run(parent):
        return None
    return ensure_resource_availability(ctx, response, case)
