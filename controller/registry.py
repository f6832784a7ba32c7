"""The features of the hub, in order: one line each.

Order matters where it shows: contributions are concatenated in this order,
packet-ins are dispatched by table owner, REST routers are mounted and hubctl
command groups listed in it.  Adding a feature is a folder under
`controller/features/` plus one line here (see docs/architecture.md).
"""
from __future__ import annotations

from typing import Any, Mapping

from controller.core.feature import FeatureFactory
from controller.core.plugin import Plugin
from controller.features import fabric, persona, personality, policy, shadow, shard

FEATURES: tuple[Plugin, ...] = (
    fabric.PLUGIN,
    personality.PLUGIN,
    persona.PLUGIN,
    shard.PLUGIN,
    shadow.PLUGIN,
    policy.PLUGIN,
)


def feature_factories(settings: Mapping[str, Any] | None = None) -> list[FeatureFactory]:
    """How the hub builds each feature: `build(ctx) -> Feature`, with its validated settings."""
    settings = settings or {}
    return [FeatureFactory(p.name, lambda ctx, p=p: p.feature_class()(ctx, settings.get(p.name)))
            for p in FEATURES]
