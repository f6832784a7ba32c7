"""A manifest's capability question to the hub is asked before the write's store
transaction: the hub's worker, which answers it, may itself be waiting for the store
(a heartbeat to record), and asked inside the transaction the question would wait for
the transaction, and the worker with it, until the query's timeout."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.features.shadow.document import SLOT
from controller.store import Store
from tests.unit.fakes import FakeHub
from tests.unit.test_shadow_api import APPLIANCES, IF1, IF6, WEB, fields, problem, store  # noqa: F401

WHY = "switch 0000000000000a01 lacks what the mirror needs: clone (...)"


class WorkerHub(FakeHub):
    """Answers ("shadow", "lacking") as the hub's worker does: after its own store work,
    done on another thread (it waits for the store as the worker would)."""

    def __init__(self, store: Store, lacking: str | None) -> None:
        super().__init__()
        self.store, self.lacking, self.store_free = store, lacking, []

    def query(self, feature: str, name: str, **args: Any) -> Any:
        if (feature, name) == ("shadow", "unmirrored"):
            return None
        if (feature, name) != ("shadow", "lacking"):
            return super().query(feature, name, **args)
        worker = threading.Thread(target=lambda: self.store.find(SLOT, "s1"), daemon=True)
        worker.start()
        worker.join(2.0)
        self.store_free.append(not worker.is_alive())
        return self.lacking


@pytest.fixture
def hub(store: Store) -> WorkerHub:                     # noqa: F811 (the module's store)
    store.create(SLOT, "s1", {"interface_id": IF6, "key": "k" * 48})
    return WorkerHub(store, lacking=None)


def test_the_question_is_asked_outside_the_transaction(client: TestClient, hub: WorkerHub):
    assert client.post(APPLIANCES, json=WEB).status_code == 201
    patched = client.patch(f"{APPLIANCES}/web",
                           json={"shadowing": {"shadow_traffic_percentage": 10}})
    assert patched.status_code == 200, patched.text
    assert hub.store_free == [True, True], "the worker could use the store meanwhile"


def test_a_switch_known_to_lack_an_action_still_refuses_the_manifest(client: TestClient,
                                                                      hub: WorkerHub):
    hub.lacking = WHY
    body = problem(client.post(APPLIANCES, json=WEB), 422)
    assert fields(body) == ["body.interfaces"], body
    assert WHY in body["errors"][0]["reason"], body
    assert hub.store_free == [True]
    hub.lacking = None
    assert client.post(APPLIANCES, json=WEB).status_code == 201
    hub.lacking = WHY
    body = problem(client.patch(f"{APPLIANCES}/web", json={"name": "web2"}), 422)
    assert fields(body) == ["body.interfaces"], body


def test_a_bad_manifest_asks_nothing_and_is_refused_naming_its_field(client: TestClient,
                                                                     hub: WorkerHub):
    bad = {**WEB, "shadowing": {**WEB["shadowing"], "shadow_traffic_percentage": 120}}
    body = problem(client.post(APPLIANCES, json=bad), 422)
    assert "body.shadowing.shadow_traffic_percentage" in fields(body)
    assert hub.store_free == []
