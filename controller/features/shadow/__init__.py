"""The shadow feature: shadow appliances (see docs/shadows.md and docs/architecture.md)."""
from controller.core.plugin import Plugin
from controller.features.shadow import claims as _claims  # noqa: F401  (declares its claims)

PLUGIN = Plugin(name="shadow",
                feature="controller.features.shadow.feature:ShadowFeature",
                api="controller.features.shadow.api:router",
                cli="controller.features.shadow.cli:register")
