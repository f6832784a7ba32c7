"""The policy feature: categories, learning and mirrored policies (see docs/policy.md)."""
from controller.core.plugin import Plugin

PLUGIN = Plugin(name="policy",
                feature="controller.features.policy.feature:PolicyFeature",
                api="controller.features.policy.api:router",
                cli="controller.features.policy.cli:register")
