"""The core names no feature: what a feature is reaches it through the registry only."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Layers that must work for any set of features.
CORE = ["controller/core", "controller/reconcile", "controller/pipeline", "controller/store",
        "controller/ovsdb", "controller/api", "controller/cli", "apps"]
# The few places that read the registry (and through it, the features).
REGISTRY_READERS = {"controller/api/app.py", "controller/cli/main.py", "controller/config.py",
                    "controller/manager.py"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def modules(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", modules(*CORE), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_core_module_imports_a_feature(path):
    rel = str(path.relative_to(ROOT))
    named = {m for m in imports(path) if m.startswith("controller.features")}
    assert named == set(), f"{rel} imports {sorted(named)}"
    if rel not in REGISTRY_READERS:
        assert not {m for m in imports(path) if m.startswith("controller.registry")}, rel


def test_features_do_not_reach_into_the_hub():
    """A feature sees a FeatureContext, never the hub (nor its convergence or discovery)."""
    for path in modules("controller/features"):
        hub = {m for m in imports(path) if m.startswith(("controller.core.hub",
                                                         "controller.core.convergence",
                                                         "controller.core.discovery"))}
        assert hub == set(), f"{path.relative_to(ROOT)} imports {sorted(hub)}"


def test_the_registry_lists_every_feature_once():
    """Every feature package that declares its PLUGIN is registered, once; every
    registered plugin is a feature folder.  (A folder still being built, with no
    PLUGIN yet, is not a feature.)"""
    import importlib

    from controller.registry import FEATURES
    declared = sorted(p.name for p in (ROOT / "controller/features").iterdir()
                      if (p / "__init__.py").exists() and hasattr(
                          importlib.import_module(f"controller.features.{p.name}"), "PLUGIN"))
    registered = [p.name for p in FEATURES]
    assert sorted(registered) == declared and len(set(registered)) == len(registered)
