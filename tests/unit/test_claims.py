"""Claims: declared per kind by features, kept by the store, checked in the write's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network
from typing import Any

import pytest

from controller.core import claims
from controller.core.claims import Claim, ClaimConflict, Owner
from controller.store import Store, open_store


def net_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    """A "net" document claims its ranges, its ports, and a number of space "net.slot"."""
    out = [Claim.range(cidr, f"body.ranges[{i}]", f"is a range of net {id!r}")
           for i, cidr in enumerate(body.get("ranges", []))]
    out += [Claim.interface(port, "body.ports", f"belongs to net {id!r}") for port in body.get("ports", [])]
    if "slot" in body:
        out.append(Claim.unique("net.slot", body["slot"], "body.slot", f"is the slot of net {id!r}"))
    return out


def pool_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    """A "pool" document (another feature) claims a range, and ports for someone else."""
    owner = Owner("tenant", body["tenant"]) if "tenant" in body else None
    return [Claim.range(body["cidr"], "body.cidr", f"is pool {id!r}", owner),
            *(Claim.interface(p, "body.ports", "is a pool port", owner) for p in body.get("ports", []))]


@pytest.fixture
def declared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only this module's two kinds are declared while a test runs."""
    monkeypatch.setattr(claims, "_DECLARED", {})
    claims.declare("net", net_claims, feature="nets")
    claims.declare("pool", pool_claims, feature="pools")


@pytest.fixture
def store(declared: None) -> Iterator[Store]:
    s = open_store(":memory:")
    yield s
    s.close()


def write(store: Store, kind: str, id: str, body: dict[str, Any] | None) -> None:
    """What a request handler does: check and write in one transaction."""
    with store.transaction():
        claims.check_write(store, kind, id, body)
        if body is None:
            store.delete(kind, id)
        else:
            store.put(kind, id, body)


def held(store: Store, kind: str, id: str) -> set[tuple[str, str]]:
    return {(r.space, r.key) for r in store.claims_of(kind, id)}


def test_ranges_of_different_features_may_not_overlap(store: Store) -> None:
    write(store, "net", "n1", {"ranges": ["10.1.0.0/16"]})
    with pytest.raises(ClaimConflict) as exc:
        write(store, "pool", "p1", {"cidr": "10.1.2.0/24"})
    e = exc.value
    assert (e.owner, e.owner_kind, e.owner_id, e.field) == ("net n1", "net", "n1", "body.cidr")
    assert e.message == "10.1.2.0/24 overlaps 10.1.0.0/16, which is a range of net 'n1'"
    assert e.reason == "is a range of net 'n1'" and e.held is not None and e.held.holder_id == "n1"
    assert store.find("pool", "p1") is None and store.claims_of("pool", "p1") == []
    write(store, "pool", "p1", {"cidr": "10.2.0.0/24"})  # next door: fine
    with pytest.raises(ClaimConflict, match="which is pool 'p1'"):
        write(store, "net", "n2", {"ranges": ["10.0.0.0/8"]})  # wider, around both


def test_ranges_of_one_feature_may_overlap(store: Store) -> None:
    """A feature allocates among its own ranges (personas and their NAT blocks)."""
    write(store, "net", "n1", {"ranges": ["10.1.0.0/16"]})
    write(store, "net", "n2", {"ranges": ["10.1.0.0/24", "10.1.0.0/16"]})
    assert held(store, "net", "n2") == {("ipv4", "10.1.0.0/24"), ("ipv4", "10.1.0.0/16")}
    overlapping = claims.overlapping(store, IPv4Network("10.1.0.128/25"))
    assert sorted((r.holder_id, r.key) for r in overlapping) == [
        ("n1", "10.1.0.0/16"), ("n2", "10.1.0.0/16"), ("n2", "10.1.0.0/24")]


def test_delete_releases_every_claim(store: Store) -> None:
    write(store, "net", "n1", {"ranges": ["10.1.0.0/16"], "ports": ["a:1"], "slot": 1})
    write(store, "net", "n1", None)
    assert store.claims_of("net", "n1") == []
    write(store, "pool", "p1", {"cidr": "10.1.0.0/16", "ports": ["a:1"]})
    write(store, "net", "n2", {"slot": 1})
    assert claims.holders(store, "interface", "a:1")[0].owner == "pool p1"


def test_two_owners_of_one_interface(store: Store) -> None:
    write(store, "net", "n1", {"ports": ["a:1", "a:2"]})
    with pytest.raises(ClaimConflict) as exc:
        write(store, "net", "n2", {"ports": ["a:3", "a:2"]})  # the same feature: still one holder
    assert (exc.value.owner, exc.value.field) == ("net n1", "body.ports")
    assert exc.value.message == "interface a:2 belongs to net 'n1'"
    assert store.find("net", "n2") is None and claims.holders(store, "interface", "a:3") == []
    with pytest.raises(ClaimConflict) as exc:
        write(store, "pool", "p1", {"cidr": "10.9.0.0/24", "ports": ["a:1"]})
    assert exc.value.owner == "net n1"
    write(store, "pool", "p1", {"cidr": "10.9.0.0/24", "ports": ["b:1"], "tenant": "acme"})
    with pytest.raises(ClaimConflict) as exc:
        write(store, "net", "n1", {"ports": ["a:1", "b:1"]})
    assert exc.value.owner == "tenant acme" and exc.value.owner_id == "acme"  # held for someone
    assert held(store, "net", "n1") == {("interface", "a:1"), ("interface", "a:2")}


def test_the_same_owner_rewrites_its_own_claims(store: Store) -> None:
    write(store, "net", "n1", {"ranges": ["10.1.0.0/16"], "ports": ["a:1"], "slot": 4})
    write(store, "net", "n1", {"ranges": ["10.1.0.0/16"], "ports": ["a:1"], "slot": 4, "note": "x"})
    write(store, "net", "n1", {"ranges": ["10.1.0.0/17"], "ports": ["a:1", "a:2"], "slot": 5})
    assert held(store, "net", "n1") == {("ipv4", "10.1.0.0/17"), ("interface", "a:1"),
                                        ("interface", "a:2"), ("net.slot", "5")}
    assert claims.holders(store, "net.slot", "4") == []  # released by the rewrite


def test_unique_values_and_the_lowest_free_number(store: Store) -> None:
    assert claims.lowest_free(store, "net.slot", 1, 3) == 1
    for id, slot in (("n1", 1), ("n2", 2), ("n4", 4)):
        write(store, "net", id, {"slot": slot})
    assert claims.lowest_free(store, "net.slot", 1, 5) == 3
    with pytest.raises(ClaimConflict, match="'2' is the slot of net 'n2'"):
        write(store, "net", "n3", {"slot": 2})
    write(store, "net", "n3", {"slot": 3})
    assert claims.lowest_free(store, "net.slot", 1, 5) == 5
    assert claims.lowest_free(store, "net.slot", 1, 4) is None
    assert claims.lowest_free(store, "net.slot", 2, 9) == 5


def test_a_refused_claim_undoes_the_whole_transaction(store: Store) -> None:
    write(store, "net", "n1", {"ports": ["a:1"]})
    with pytest.raises(ClaimConflict):
        with store.transaction():
            write(store, "net", "n2", {"ports": ["a:2"]})
            write(store, "pool", "p1", {"cidr": "10.0.0.0/24", "ports": ["a:1"]})
    assert store.find("net", "n2") is None and claims.holders(store, "interface", "a:2") == []


def test_every_write_is_recorded_even_unchecked(store: Store) -> None:
    """Writers that do not check (discovery, the coordinator) still keep the rows true."""
    store.put("net", "n1", {"ports": ["a:1"]})
    assert claims.holders(store, "interface", "a:1")[0].holder_id == "n1"
    store.put("net", "n1", {"ports": []})
    assert claims.holders(store, "interface", "a:1") == []
    store.create("pool", "p1", {"cidr": "10.0.0.0/24", "ports": ["a:1"]})
    store.put("net", "n1", {"ports": ["a:1"]})  # recorded, not refused: a checked write refuses
    assert {r.holder_id for r in claims.holders(store, "interface", "a:1")} == {"n1", "p1"}
    store.delete("pool", "p1")
    assert [r.holder_id for r in claims.holders(store, "interface", "a:1")] == ["n1"]


def test_a_holder_keeps_what_it_held_before_the_rule(store: Store) -> None:
    """A conflict recorded unchecked does not block the holder's unrelated changes."""
    store.put("net", "n1", {"ranges": ["10.0.0.0/24"]})
    store.put("pool", "p1", {"cidr": "10.0.0.0/16"})
    write(store, "net", "n1", {"ranges": ["10.0.0.0/24"], "slot": 1})
    with pytest.raises(ClaimConflict):
        write(store, "net", "n1", {"ranges": ["10.0.0.0/24", "10.0.1.0/24"]})


def test_a_dry_run_is_a_rolled_back_transaction(store: Store) -> None:
    """What a dry run does (the CRUD layer): check and write, then undo it all."""
    write(store, "net", "n1", {"ports": ["a:1"]})
    with pytest.raises(RuntimeError):
        with store.transaction():
            write(store, "net", "n2", {"ports": ["a:2"]})
            raise RuntimeError("dry run")
    assert store.claims_of("net", "n2") == [] and claims.holders(store, "interface", "a:2") == []


def test_unreadable_bodies_claim_nothing(store: Store) -> None:
    store.put("net", "bad", {"ranges": ["not a cidr"], "ports": ["a:1"]})
    assert store.claims_of("net", "bad") == []
    store.put("pool", "bad", {"no": "cidr"})
    assert store.claims_of("pool", "bad") == []


def test_rows_are_rebuilt_when_the_declarations_change(store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("net", "n1", {"ports": ["a:1"]})
    store.put("other", "o1", {"port": "a:9"})   # no declaration yet: no claims
    assert claims.holders(store, "interface", "a:9") == []
    claims.declare("other", lambda id, body: [Claim.interface(body["port"], "body.port", "is other's")],
                   feature="others")
    assert claims.holders(store, "interface", "a:9")[0].holder_id == "o1"  # rebuilt on first use
    assert store.get_meta(claims.META_KEY) == claims.signature()
    assert claims.holders(store, "interface", "a:1")[0].holder_id == "n1"


def test_a_rolled_back_rebuild_is_done_again(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("net", "n1", {"ports": ["a:1"]})
    claims.declare("other", lambda id, body: [], feature="others")  # the rows are now stale
    with pytest.raises(RuntimeError):
        with store.transaction():
            assert claims.holders(store, "interface", "a:1")  # rebuilt here ...
            raise RuntimeError("refused")                      # ... and rolled back
    assert store.get_meta(claims.META_KEY) != claims.signature()
    with pytest.raises(ClaimConflict):  # rebuilt again, so refused (and rolled back again)
        write(store, "net", "n2", {"ports": ["a:1"]})
    write(store, "net", "n2", {"ports": ["a:2"]})
    assert store.get_meta(claims.META_KEY) == claims.signature()  # kept with a committed write


def test_a_reopened_store_keeps_its_rows(declared: None, tmp_path: Any) -> None:
    path = str(tmp_path / "store.db")
    with open_store(path) as s:
        s.put("net", "n1", {"ports": ["a:1"]})
    with open_store(path) as s:
        with pytest.raises(ClaimConflict):
            write(s, "net", "n2", {"ports": ["a:1"]})


def test_the_features_declare_their_kinds() -> None:
    import controller.registry  # noqa: F401  (every feature package is imported)
    sig = claims.signature()
    for kind, feature in (("persona", "persona"), ("subnet", "fabric"), ("interface", "personality")):
        assert f"{kind}={feature}:" in sig
