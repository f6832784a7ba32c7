"""The personality feature (see docs/architecture.md for the parts of a feature)."""
from controller.core.plugin import Plugin
from controller.features.personality import claims as _claims  # noqa: F401  (declares its claims)

PLUGIN = Plugin(name="personality",
                feature="controller.features.personality.feature:PersonalityFeature",
                api="controller.features.personality.api:router",
                cli="controller.features.personality.cli:register")
