"""The fabric feature (see docs/architecture.md for the parts of a feature)."""
from controller.core.plugin import Plugin
from controller.features.fabric import claims as _claims  # noqa: F401  (declares its claims)

PLUGIN = Plugin(name="fabric",
                feature="controller.features.fabric.feature:FabricFeature",
                api="controller.features.fabric.api:router",
                cli="controller.features.fabric.cli:register")
