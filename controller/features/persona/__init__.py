"""The persona feature (see docs/architecture.md for the parts of a feature)."""
from controller.core.plugin import Plugin

PLUGIN = Plugin(name="persona",
                feature="controller.features.persona.feature:PersonaFeature",
                api="controller.features.persona.api:router",
                cli="controller.features.persona.cli:register",
                settings_key="personas",
                settings="controller.features.persona.settings:parse")
