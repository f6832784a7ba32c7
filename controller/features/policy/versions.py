"""A category's consolidated policy in the store: every version kept, the current one named.

``policy`` (id = the category) says which version is current; ``policy-version``
(id = ``<category>@<version>``) holds each version's rules (`Rules.to_json`), when
it was made and why.  Versions are never rewritten: a change is a new version
(`save`), so any two can be diffed.  Written by the runtime on the worker; REST
reads them.
"""
from __future__ import annotations

from typing import Any

from controller.features.policy.rules import POLICY, POLICY_VERSION, Rules
from controller.store import Store


def version_id(category: str, version: int) -> str:
    return f"{category}@{version}"


def current(store: Store, category: str) -> Rules | None:
    """The category's current rules, or None before its first version."""
    head = store.find(POLICY, category)
    if head is None:
        return None
    doc = store.find(POLICY_VERSION, version_id(category, int(head.body["version"])))
    return Rules.from_json(doc.body) if doc is not None else None


def save(store: Store, rules: Rules, reason: str, now: float, **extra: Any) -> Rules:
    """Store `rules` as the category's next version (one transaction); the saved rules."""
    with store.transaction():
        head = store.find(POLICY, rules.category)
        version = (int(head.body["version"]) if head else 0) + 1
        saved = Rules(rules.category, version, rules.rules)
        store.put(POLICY_VERSION, version_id(rules.category, version),
                  {**saved.to_json(), "created_at": now, "reason": reason, **extra})
        store.put(POLICY, rules.category, {"category": rules.category, "version": version,
                                           "updated_at": now})
    return saved
