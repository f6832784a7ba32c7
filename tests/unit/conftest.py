"""Fixtures shared by the API and CLI tests: a fake hub and the REST app over a test store.

Each module provides its own `store` fixture (what it needs in it); a module
may override any of these.
"""
from __future__ import annotations

from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from controller.cli import main as cli
from controller.api.app import create_app
from controller.api.context import ApiContext
from controller.store import Store
from tests.unit.fakes import FakeHub
from tests.unit.purity import pure, pytest_make_collect_report  # noqa: F401 (the tier is pure)


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def client(store: Store, hub: FakeHub) -> Iterator[TestClient]:
    """The REST app, for requests made by the tests themselves."""
    with TestClient(create_app(ApiContext(store, hub, CollectorRegistry(), "0"))) as c:
        yield c


@pytest.fixture
def http(client: TestClient) -> TestClient:
    """The same app, as the HTTP client hubctl talks through."""
    return client


def run_cli(capsys: pytest.CaptureFixture[str], http: TestClient, *argv: str) -> tuple[int, str, str]:
    """hubctl argv against the test app: (exit code, stdout, stderr)."""
    code = cli.main(list(argv), client=http)
    out, err = capsys.readouterr()
    return code, out, err
