"""Shard pools: REST through the CRUD layer, range claims, and the probe drop on every switch."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.core import budgets
from controller.core.hub import ROUTER_MAC
from controller.features.shard.translate import PROBE_DROP, probe_cookie
from controller.pipeline import tables
from controller.store import Store, open_store
from tests.unit.hubtest import A, B, Fabric

PROBLEM = "application/problem+json"
POOL = {"name": "web", "pool": "10.200.0.0/16", "external_range": "198.51.100.64/26"}


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    yield s
    s.close()


def test_a_pool_is_created_read_and_deleted(client, hub):
    r = client.post("/v1/shard-pools", json=POOL)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["id"] == "web" and doc["revision"] == 1 and doc["shard_prefix"] == 28
    assert {"created_at", "updated_at"} <= set(doc)
    assert r.headers["location"] == "/v1/shard-pools/web"
    assert client.get("/v1/shard-pools/web").json()["pool"] == "10.200.0.0/16"
    assert [p["id"] for p in client.get("/v1/shard-pools").json()] == ["web"]
    assert hub.changed_kinds == ["shard-pool"]
    r = client.delete("/v1/shard-pools/web", headers={"If-Match": '"1"'})
    assert r.status_code == 200 and client.get("/v1/shard-pools/web").status_code == 404


@pytest.mark.parametrize("change, field", [
    ({"shard_prefix": 27}, "body.shard_prefix"),
    ({"lifespan": {"min": "15m", "max": "5m"}}, "body.lifespan.max"),
])
def test_bad_pools_are_problems_naming_the_field_and_nothing_is_stored(client, store, change,
                                                                       field):
    r = client.post("/v1/shard-pools", json={**POOL, **change})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    assert field in [e["field"] for e in r.json()["errors"]]
    assert store.list("shard-pool") == []


def test_a_pool_may_not_overlap_a_subnet_or_another_pool(client, store):
    assert client.post("/v1/subnets", json={"id": "seg1", "cidr": "10.200.1.0/24",
                                            "gateway": "10.200.1.254"}).status_code == 201
    r = client.post("/v1/shard-pools", json=POOL)
    assert r.status_code == 409, r.text
    problem = r.json()
    assert "subnet" in r.text and "seg1" in r.text
    assert any(e["field"] == "body.pool" for e in problem["errors"]), problem
    assert store.list("shard-pool") == []
    ok = {**POOL, "pool": "10.201.0.0/16"}
    assert client.post("/v1/shard-pools", json=ok).status_code == 201
    r = client.post("/v1/shard-pools", json={**ok, "name": "two", "pool": "10.201.128.0/17",
                                             "external_range": "198.51.100.128/26"})
    assert r.status_code == 409 and "body.pool" in r.text
    r = client.post("/v1/shard-pools", json={**ok, "name": "three", "pool": "10.202.0.0/16"})
    assert r.status_code == 409 and "body.external_range" in r.text


def test_every_switch_drops_routed_probes_into_a_pool():
    fab = Fabric()
    fab.connect()
    fab.settle()
    fab.store.put("shard-pool", "web", {**POOL, "shard_prefix": 28})
    fab.hub.documents_changed("shard-pool")
    fab.settle()
    for sw in (fab.a, fab.b):
        drops = [f for f in sw.flows.values() if f.cookie == probe_cookie("web")]
        assert len(drops) == 1
        (drop,) = drops
        assert (drop.table, drop.priority, drop.actions) == (tables.ROUTE.id, PROBE_DROP, ())
        assert dict(drop.match)["eth_dst"] == ROUTER_MAC
    assert budgets.audit(fab.a.flows.values()) == []
    fab.store.delete("shard-pool", "web")
    fab.hub.documents_changed("shard-pool")
    fab.settle()
    assert not [f for sw in (fab.a, fab.b) for f in sw.flows.values()
                if f.cookie == probe_cookie("web")]
    assert A in fab.hub.channels and B in fab.hub.channels


def test_hubctl_shard_pool_commands(tmp_path, capsys, http):
    from tests.unit.conftest import run_cli
    path = tmp_path / "pool.yaml"
    path.write_text("name: web\npool: 10.200.0.0/16\nexternal_range: 198.51.100.64/26\n")
    code, out, err = run_cli(capsys, http, "shard-pool", "create", "-f", str(path))
    assert code == 0, err
    code, out, _ = run_cli(capsys, http, "shard-pool", "list")
    assert code == 0 and "10.200.0.0/16" in out and "300-900 s" in out
    code, out, _ = run_cli(capsys, http, "shard-pool", "delete", "web")
    assert code == 0
    code, out, _ = run_cli(capsys, http, "shard-pool", "list")
    assert "(no shard pools)" in out
