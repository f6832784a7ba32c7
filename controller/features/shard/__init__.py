"""The shard feature: ephemeral network shards (see docs/architecture.md for a feature's parts)."""
from controller.core.plugin import Plugin
from controller.features.shard import claims as _claims  # noqa: F401  (declares its claims)
from controller.features.shard import service_claims as _service_claims  # noqa: F401

PLUGIN = Plugin(name="shard",
                feature="controller.features.shard.feature:ShardFeature",
                api="controller.features.shard.api:router",
                cli="controller.features.shard.cli:register")
