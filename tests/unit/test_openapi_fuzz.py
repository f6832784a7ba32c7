"""The OpenAPI document says exactly what the server accepts: schemathesis, every check.

The app runs in process over a store in a temporary directory and the fake
hub, with a few documents for requests to find.  The run is schemathesis's own
(examples, coverage, fuzzing and stateful phases, ``--checks all``) with the
project's ``schemathesis.toml`` (which loads ``tests/unit/openapi_rules.py``),
a fixed seed and a bounded number of examples, so it is the same run each time.
Any failure (a schema-valid request refused for a rule the schema does not
state, a server error, an answer the schema does not describe, a wrong
``Allow``) fails the test with schemathesis's description of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from prometheus_client import CollectorRegistry
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, from_schema
from schemathesis.engine.events import FatalError, NonFatalError, ScenarioFinished

from controller.api import ApiContext, create_app
from controller.core import interfaces
from controller.core.topology import Host
from controller.store import Store, open_store
from tests.unit import openapi_rules  # noqa: F401  (registers the check the config names)
from tests.unit.fakes import FakeHub

ROOT = Path(__file__).resolve().parents[2]
SEED = 20240611
MAX_EXAMPLES = 8


def _seed(store: Store) -> None:
    """Documents for requests to find (ids as the schema's examples name them)."""
    store.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    store.create("personality", "web", {"name": "web", "subnet_id": "seg1",
                                        "ip_addresses": ["10.0.1.10"]})
    for port in (2, 3):
        interfaces.record_host(store, Host(f"02:00:00:00:00:0{port}", (f"10.0.1.{port}",), 0xA01, port))


def _failures(event: ScenarioFinished) -> list[str]:
    out = []
    for case_id, checks in event.recorder.checks.items():
        for check in checks:
            if check.status != Status.FAILURE or check.failure_info is None:
                continue
            case = event.recorder.cases[case_id].value
            failure = check.failure_info.failure
            out.append(f"{event.label} [{event.phase.value}] {check.name}: {failure.title}: "
                       f"{failure.message}\n    {case.method} {case.formatted_path} "
                       f"query={case.query} headers={case.headers} body={case.body!r}")
    return out


def _run(schema: Any) -> tuple[list[str], int]:
    failures: list[str] = []
    errors: list[str] = []
    scenarios = 0
    for event in from_schema(schema).execute():
        if isinstance(event, ScenarioFinished):
            scenarios += 1
            failures += _failures(event)
        elif isinstance(event, (NonFatalError, FatalError)):
            errors.append(str(getattr(event, "info", event)))
    assert not errors, "\n".join(errors)
    return failures, scenarios


@pytest.mark.timeout(180)
def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "hub.db"))
    _seed(store)
    app = create_app(ApiContext(store, FakeHub(), CollectorRegistry(), "0"))
    config = SchemathesisConfig.from_path(ROOT / "schemathesis.toml")
    config.update(seed=SEED, max_failures=None)
    project = config.projects.override
    # openapi_rules.created_resources_are_available stands in for the built-in check
    # (it knows a dry run creates nothing).
    project.checks.update(included_check_names=["all"],
                          excluded_check_names=["ensure_resource_availability"])
    project.generation.update(max_examples=MAX_EXAMPLES, database="none")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    failures, scenarios = _run(schema)
    store.close()
    assert scenarios > 0
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
