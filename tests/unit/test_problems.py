"""read_document_body: JSON and YAML documents, and the problems it raises."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from controller.api.bodies import read_document_body
from controller.api.problems import Problem, register_problem_handlers


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    register_problem_handlers(app)

    @app.post("/doc")
    async def post_doc(request: Request) -> dict[str, Any]:
        return await read_document_body(request)

    return TestClient(app)


def post(client: TestClient, body: bytes, content_type: str | None) -> Any:
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/doc", content=body, headers=headers)


def test_json(client: TestClient) -> None:
    resp = post(client, b'{"name": "web", "ports": [80, 443]}', "application/json; charset=utf-8")
    assert resp.status_code == 200
    assert resp.json() == {"name": "web", "ports": [80, 443]}


@pytest.mark.parametrize("content_type", ["application/yaml", "application/x-yaml", "text/yaml"])
def test_yaml(client: TestClient, content_type: str) -> None:
    resp = post(client, b"name: web\nports:\n  - 80\n  - 443\n", content_type)
    assert resp.status_code == 200
    assert resp.json() == {"name": "web", "ports": [80, 443]}


@pytest.mark.parametrize("body, content_type, words", [
    (b'{"name": ', "application/json", "malformed JSON"),
    (b"name: [unclosed\n", "application/yaml", "malformed YAML"),
    (b"!!python/object:os.system {}", "application/yaml", "malformed YAML"),
    (b"[1, 2]", "application/json", "must be an object"),
    (b"just a string", "application/yaml", "must be an object"),
    (b"", "application/json", "empty"),
    (b"\xff\xfe\x00", "application/json", "UTF-8"),
])
def test_garbage_is_400(client: TestClient, body: bytes, content_type: str, words: str) -> None:
    resp = post(client, body, content_type)
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/problem+json"
    assert words in resp.json()["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_unsupported_type_is_415(client: TestClient, content_type: str | None) -> None:
    resp = post(client, b"name: web", content_type)
    assert resp.status_code == 415
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["title"] == "Unsupported Media Type"


def test_problem_document() -> None:
    p = Problem(409, detail="taken", errors=[{"field": "body.name", "reason": "in use"}])
    assert p.to_dict() == {"type": "about:blank", "title": "Conflict", "status": 409,
                           "detail": "taken", "errors": [{"field": "body.name", "reason": "in use"}]}
    assert str(p) == "409 Conflict: taken"
