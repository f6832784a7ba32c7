"""The persona feature (see docs/architecture.md for the parts of a feature)."""
from controller.core.plugin import Plugin
from controller.features.persona import claims as _claims  # noqa: F401  (declares its claims)

PLUGIN = Plugin(name="persona",
                feature="controller.features.persona.feature:PersonaFeature",
                api="controller.features.persona.api:router",
                cli="controller.features.persona.cli:register",
                settings_key="personas",
                settings="controller.features.persona.settings:parse")
