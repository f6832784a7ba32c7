"""ApiServer: uvicorn in a daemon thread on a real socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from controller.api import ApiContext, ApiServer, create_app
from tests.unit.fakes import FakeHub
from controller.store import open_store


@pytest.fixture
def app() -> Iterator[Any]:
    store = open_store(":memory:")
    yield create_app(ApiContext(store, FakeHub(), CollectorRegistry(), "0.1.0"))
    store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serves_health_and_stops(app: Any) -> None:
    port = free_port()
    server = ApiServer(app, "127.0.0.1", port)
    server.start(timeout=10)
    try:
        assert server.running and server.url == f"http://127.0.0.1:{port}"
        resp = httpx.get(f"{server.url}/v1/health", timeout=5)
        assert resp.status_code == 200 and resp.json()["status"] == "ok"
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)


def test_port_zero_picks_a_port(app: Any) -> None:
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    try:
        assert server.port != 0
        assert httpx.get(f"{server.url}/v1/datapaths", timeout=5).json() == []
    finally:
        server.stop()


def test_port_in_use_is_a_clear_error(app: Any) -> None:
    first = ApiServer(app, "127.0.0.1", 0)
    first.start()
    try:
        second = ApiServer(app, "127.0.0.1", first.port)
        with pytest.raises(OSError, match=rf"cannot listen for the API on 127.0.0.1:{first.port}"):
            second.start(timeout=5)
        assert not second.running
        assert httpx.get(f"{first.url}/v1/health", timeout=5).status_code == 200
    finally:
        first.stop()


def test_restart_on_same_port(app: Any) -> None:
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    server.stop()
    server.start()
    try:
        assert httpx.get(f"{server.url}/v1/health", timeout=5).status_code == 200
    finally:
        server.stop()
    server.stop()  # idempotent
