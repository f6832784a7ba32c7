"""A registry entry: where a feature's runtime, REST router and hubctl group live.

Entries name their parts as "module:attribute" so that hubctl loads only the
command groups and the API only the routers, never the runtime it does not run.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


def resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Plugin:
    name: str                    # the feature's name (journal, metrics, settings)
    feature: str | None = None   # "module:Class", a `controller.core.feature.Feature`
    api: str | None = None       # "module:router", a FastAPI APIRouter
    cli: str | None = None       # "module:register", register(subparsers, common)
    settings_key: str | None = None   # its section of the configuration file
    settings: str | None = None  # "module:parse", parse(section or None) -> settings;
                                 # ValueError naming the field when it is invalid

    def feature_class(self) -> Any:
        return resolve(self.feature) if self.feature else None

    def router(self) -> Any:
        return resolve(self.api) if self.api else None

    def cli_register(self) -> Any:
        return resolve(self.cli) if self.cli else None

    def parse_settings(self, section: Any) -> Any:
        return resolve(self.settings)(section) if self.settings else None
