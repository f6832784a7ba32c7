"""The persona record: allocation (index, gateway, NAT), updates, attachments, expiry."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

import controller.registry  # noqa: F401  (every feature declares its claims)
from controller.core import interfaces
from controller.core.documents import DocumentInvalid
from controller.features.persona import allocation
from controller.features.persona import store as ps
from controller.features.personality import operations
from controller.features.persona.store import PersonaConflict, PersonaRecord
from controller.core import claims
from controller.core.claims import ClaimConflict
from controller.store import ClaimRow
from controller.store import AlreadyExists, NotFound, RevisionConflict, Store, open_store
from controller.core.topology import Host, Subnet

NOW = 1_800_000_000.0
FUTURE = "2030-12-31T23:59:59Z"
SOONER = "2029-06-30T12:00:00Z"
SEG1 = Subnet("seg1", IPv4Network("10.0.1.0/24"), IPv4Address("10.0.1.254"))
POOL = IPv4Network("100.64.0.0/10")
IF1, IF2, IF3 = "0000000000000a01:2", "0000000000000a01:3", "0000000000000a02:1"


def utc(*when: int) -> float:
    return dt.datetime(*when, tzinfo=dt.timezone.utc).timestamp()


def doc(name: str = "TempDevNetwork", ip_range: str = "10.100.0.0/24", **fields: Any) -> dict[str, Any]:
    return {"name": name, "ip_range": ip_range, "protocols": ["tcp", "udp"],
            "qos": {"bandwidth": "100Mbps", "latency": "50ms"},
            "security_policies": [{"protocol": "tcp", "port": 80, "action": "allow"},
                                  {"protocol": "tcp", "port": 22, "action": "deny"}],
            "expiration": FUTURE, **fields}


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    for mac, ip, dpid, port in (("02:00:00:00:00:01", "10.0.9.1", 0xA01, 2),
                                ("02:00:00:00:00:02", "10.0.9.2", 0xA01, 3),
                                ("02:00:00:00:00:03", "10.0.9.3", 0xA02, 1)):
        interfaces.record_host(s, Host(mac, (ip,), dpid, port))
    yield s
    s.close()


def create(store: Store, body: dict[str, Any], subnets: tuple[Subnet, ...] = (SEG1,),
           pool: IPv4Network = POOL, id: str | None = None) -> ps.Created:
    return ps.create(store, body, NOW, subnets, pool, id=id)


def record(store: Store, id: str) -> PersonaRecord:
    return PersonaRecord.from_document(store.get(ps.KIND, id))


def nat(store: Store, id: str) -> str | None:
    n = store.get(ps.KIND, id).body["nat"]
    return n and n["hub_range"]


def messages(store: Store, subject: str) -> list[str]:
    return [e.message for e in store.events(kind=ps.KIND, subject=subject)]


def holders(rows: list[ClaimRow]) -> set[str]:
    return {r.holder_id for r in rows}


def assert_hub_ranges_disjoint(store: Store, subnets: tuple[Subnet, ...] = (SEG1,)) -> None:
    """The invariant NAT exists for: every live persona is reachable at a range of its own."""
    ranges = [r.hub_range for r in ps.live_records(store)] + [s.cidr for s in subnets]
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            assert not a.overlaps(b), (a, b)


# -- create ------------------------------------------------------------------------------------

def test_create_allocates_index_gateway_and_no_nat(store: Store) -> None:
    created = create(store, doc())
    d = created.document
    assert d.id == "tempdevnetwork" and d.revision == 1 and created.remapped == {}
    assert d.body == {"document": {**doc(), "qos": {"bandwidth": "100Mbps", "latency": "50ms",
                                                    "bandwidth_kbps": 100_000, "latency_ms": 50.0}},
                      "index": 1, "gateway": "10.100.0.1", "nat": None, "attachments": [],
                      "expires_at": utc(2030, 12, 31, 23, 59, 59), "state": "active", "expired_at": None}
    r = record(store, d.id)
    assert (r.index, r.gateway, r.nat_range, r.hub_range) == (1, IPv4Address("10.100.0.1"), None,
                                                              IPv4Network("10.100.0.0/24"))
    assert r.active and r.persona.bandwidth_kbps == 100_000 and r.to_body() == d.body
    assert messages(store, d.id) == ["created"]


def test_create_refuses_bad_documents_and_stores_nothing(store: Store) -> None:
    with pytest.raises(DocumentInvalid) as exc:
        create(store, doc(expiration="2024-12-31T23:59:59Z"))
    assert [e["field"] for e in exc.value.errors] == ["body.expiration"]
    with pytest.raises(DocumentInvalid) as exc:
        create(store, doc(ip_range="10.0.1.128/25"))
    assert exc.value.errors == [{"field": "body.ip_range",
                                 "reason": "10.0.1.128/25 overlaps hub subnet 'seg1' (10.0.1.0/24)"}]
    assert store.list(ps.KIND) == [] and store.events(kind=ps.KIND) == []


def test_ids(store: Store) -> None:
    assert create(store, doc(), id="dev").document.id == "dev"
    with pytest.raises(AlreadyExists):
        create(store, doc("other"), id="dev")
    with pytest.raises(DocumentInvalid) as exc:
        create(store, doc("other"), id="-bad id")
    assert exc.value.errors[0]["field"] == "body.id"
    assert create(store, doc("Ünïcode Net!", "10.101.0.0/24")).document.id == "unicode-net"
    assert create(store, doc("!!!", "10.102.0.0/24")).document.id == "persona"


def test_names_are_unique_among_live_personas(store: Store) -> None:
    create(store, doc())
    with pytest.raises(PersonaConflict) as exc:
        create(store, doc(ip_range="10.101.0.0/24"))
    assert exc.value.errors[0]["field"] == "body.name" and "tempdevnetwork" in exc.value.errors[0]["reason"]
    ps.mark_expired(store, "tempdevnetwork", NOW)
    again = create(store, doc(ip_range="10.101.0.0/24"))  # the expired record keeps its id
    assert again.document.id == "tempdevnetwork-2"
    assert create(store, doc("tempdevnetwork!", "10.102.0.0/24")).document.id == "tempdevnetwork-3"


def test_index_is_the_lowest_free_among_live_personas(store: Store) -> None:
    for i in range(3):
        create(store, doc(f"p{i}", f"10.{100 + i}.0.0/24"))
    assert [record(store, f"p{i}").index for i in range(3)] == [1, 2, 3]
    ps.delete(store, "p1")
    assert create(store, doc("p3", "10.103.0.0/24")).document.body["index"] == 2
    ps.mark_expired(store, "p0", NOW)
    assert record(store, "p0").index is None
    assert create(store, doc("p4", "10.104.0.0/24")).document.body["index"] == 1


def test_all_indexes_in_use_is_a_conflict(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocation, "MAX_INDEX", 2)
    create(store, doc("a", "10.100.0.0/24"))
    create(store, doc("b", "10.101.0.0/24"))
    with pytest.raises(PersonaConflict, match="all 2 persona indexes are in use"):
        create(store, doc("c", "10.102.0.0/24"))


# -- NAT --------------------------------------------------------------------------------------

def test_nat_for_three_overlapping_personas(store: Store) -> None:
    a = create(store, doc("a"))
    assert a.document.body["nat"] is None  # alone in its range: no mapping

    b = create(store, doc("b"))
    assert b.remapped == {"a": "100.64.0.0/24"}
    assert (nat(store, "a"), nat(store, "b")) == ("100.64.0.0/24", "100.64.1.0/24")
    assert store.get(ps.KIND, "a").revision == 2
    assert messages(store, "a") == ["created", "NAT mapping 100.64.0.0/24 (range shared with b)"]

    c = create(store, doc("c", "10.100.0.128/25"))  # overlaps both; both are mapped already
    assert c.remapped == {} and nat(store, "c") == "100.64.2.0/25"
    assert store.get(ps.KIND, "a").revision == 2
    assert record(store, "c").hub_range == IPv4Network("100.64.2.0/25")

    d = create(store, doc("d", "10.100.1.0/24"))  # next door: no overlap, no mapping
    assert d.document.body["nat"] is None
    assert [record(store, x).index for x in "abcd"] == [1, 2, 3, 4]
    assert_hub_ranges_disjoint(store)


def test_an_overlapping_persona_without_mapping_is_mapped_even_when_others_are(store: Store) -> None:
    create(store, doc("a"))
    create(store, doc("b"))                       # a, b mapped
    create(store, doc("wide", "10.100.0.0/23"))   # overlaps a and b: mapped to a /23
    assert nat(store, "wide") == "100.64.2.0/23"
    create(store, doc("e", "10.100.1.0/24"))      # overlaps wide only (mapped): e mapped
    assert nat(store, "e") == "100.64.4.0/24"
    assert_hub_ranges_disjoint(store)


def test_a_range_on_another_personas_nat_block_is_mapped(store: Store) -> None:
    create(store, doc("a"))
    create(store, doc("b"))  # a -> 100.64.0.0/24, b -> 100.64.1.0/24
    created = create(store, doc("inpool", "100.64.0.0/24"))  # its own range is a's block
    assert created.remapped == {} and nat(store, "a") == "100.64.0.0/24"
    assert nat(store, "inpool") == "100.64.2.0/24"
    assert_hub_ranges_disjoint(store)


def test_nat_blocks_avoid_subnets_and_live_ranges_in_the_pool(store: Store) -> None:
    in_pool = Subnet("cgn", IPv4Network("100.64.0.0/24"), IPv4Address("100.64.0.254"))
    subnets = (SEG1, in_pool)
    create(store, doc("real", "100.64.1.0/24"), subnets)
    create(store, doc("x", "10.1.0.0/24"), subnets)
    created = create(store, doc("y", "10.1.0.0/24"), subnets)
    assert created.remapped == {"x": "100.64.2.0/24"} and nat(store, "y") == "100.64.3.0/24"
    assert_hub_ranges_disjoint(store, subnets)


def test_expiry_and_delete_release_nat_blocks(store: Store) -> None:
    create(store, doc("a"))
    create(store, doc("b"))
    create(store, doc("c"))  # a .0, b .1, c .2
    expired = ps.mark_expired(store, "a", NOW + 5)
    assert expired.body["nat"] is None and expired.body["state"] == "expired"
    assert expired.body["expired_at"] == NOW + 5 and expired.body["index"] is None
    created = create(store, doc("e"))  # b and c keep their blocks; e takes a's
    assert created.remapped == {} and nat(store, "e") == "100.64.0.0/24"
    assert (nat(store, "b"), nat(store, "c")) == ("100.64.1.0/24", "100.64.2.0/24")
    ps.delete(store, "b")
    assert nat(store, create(store, doc("f")).document.id) == "100.64.1.0/24"
    assert_hub_ranges_disjoint(store)


def test_nat_pool_exhausted_is_a_conflict_and_changes_nothing(store: Store) -> None:
    small = IPv4Network("100.64.0.0/24")
    create(store, doc("a"), pool=small)
    with pytest.raises(PersonaConflict) as exc:
        create(store, doc("b"), pool=small)
    assert exc.value.title == "NAT pool exhausted"
    assert exc.value.errors[0]["field"] == "body.ip_range"
    assert "no free /24 block" in exc.value.errors[0]["reason"]
    assert [d.id for d in store.list(ps.KIND)] == ["a"]
    assert nat(store, "a") is None and store.get(ps.KIND, "a").revision == 1

    with pytest.raises(PersonaConflict, match="no free /16 block"):
        create(store, doc("c", "10.100.0.0/16"), pool=small)  # larger than the pool
    assert [d.id for d in store.list(ps.KIND)] == ["a"]


def test_allocate_block_alignment() -> None:
    n = ipaddress.IPv4Network
    pool = n("100.64.0.0/22")
    assert ps.allocate_block(pool, 24, []) == n("100.64.0.0/24")
    assert ps.allocate_block(pool, 24, [n("100.64.0.0/25")]) == n("100.64.1.0/24")
    assert ps.allocate_block(pool, 23, [n("100.64.1.0/24")]) == n("100.64.2.0/23")
    assert ps.allocate_block(pool, 25, [n("100.64.0.0/25"), n("100.64.0.128/26")]) == n("100.64.1.0/25")
    assert ps.allocate_block(pool, 24, [n("10.0.0.0/8"), n("100.64.0.0/24"), n("100.64.2.0/24")]) == \
        n("100.64.1.0/24")
    assert ps.allocate_block(pool, 23, [n("100.64.1.0/24"), n("100.64.3.0/24")]) is None
    assert ps.allocate_block(pool, 21, []) is None
    assert ps.allocate_block(pool, 24, [n("100.0.0.0/8")]) is None


# -- update ------------------------------------------------------------------------------------

def test_put_replaces_the_document(store: Store) -> None:
    create(store, doc())
    new = doc(protocols=["tcp"], security_policies=[], qos={"bandwidth": "10Mbps"},
              expiration="2031-01-01T00:00:00Z", owner="ops")
    updated = ps.update(store, "tempdevnetwork", new, NOW, merge=False, revision=1)
    assert updated.revision == 2
    assert updated.body["document"] == {**new, "qos": {"bandwidth": "10Mbps", "bandwidth_kbps": 10_000}}
    assert updated.body["expires_at"] == utc(2031, 1, 1)
    assert (updated.body["index"], updated.body["gateway"]) == (1, "10.100.0.1")
    with pytest.raises(RevisionConflict):
        ps.update(store, "tempdevnetwork", new, NOW, merge=False, revision=1)
    assert messages(store, "tempdevnetwork") == ["created", "updated"]


def test_update_refusals(store: Store) -> None:
    create(store, doc())
    create(store, doc("other", "10.101.0.0/24"))
    with pytest.raises(DocumentInvalid) as exc:
        ps.update(store, "tempdevnetwork", doc(ip_range="10.100.0.0/25"), NOW, merge=False)
    assert exc.value.errors[0]["field"] == "body.ip_range" and "cannot change" in exc.value.errors[0]["reason"]
    with pytest.raises(DocumentInvalid) as exc:
        ps.update(store, "tempdevnetwork", {"expiration": "2024-12-31T23:59:59Z"}, NOW, merge=True)
    assert exc.value.errors[0]["field"] == "body.expiration"
    with pytest.raises(DocumentInvalid) as exc:
        ps.update(store, "tempdevnetwork", {"qos": {"bandwidth": "fast"}}, NOW, merge=True)
    assert exc.value.errors[0]["field"] == "body.qos.bandwidth"
    with pytest.raises(PersonaConflict) as conflict:
        ps.update(store, "tempdevnetwork", {"name": "other"}, NOW, merge=True)
    assert conflict.value.errors[0]["field"] == "body.name"
    with pytest.raises(NotFound):
        ps.update(store, "nope", {}, NOW, merge=True)
    ps.mark_expired(store, "other", NOW)
    with pytest.raises(PersonaConflict, match="has expired"):
        ps.update(store, "other", {"expiration": FUTURE}, NOW, merge=True)
    assert store.get(ps.KIND, "tempdevnetwork").revision == 1


def test_patch_is_a_merge_patch(store: Store) -> None:
    create(store, doc(description="dev", alert_thresholds={"expiry_warning": "5m"}))
    patched = ps.update(store, "tempdevnetwork",
                        {"qos": {"bandwidth": "20Mbps"}, "description": None,
                         "security_policies": [{"protocol": "udp", "port": 53, "action": "deny"}],
                         "alert_thresholds": {"security_events": 3},
                         "expiration": "2031-06-01T00:00:00+00:00"}, NOW, merge=True)
    d = patched.body["document"]
    assert d["qos"] == {"bandwidth": "20Mbps", "latency": "50ms", "bandwidth_kbps": 20_000, "latency_ms": 50.0}
    assert "description" not in d
    assert d["security_policies"] == [{"protocol": "udp", "port": 53, "action": "deny"}]
    assert d["alert_thresholds"] == {"expiry_warning": "5m", "security_events": 3, "expiry_warning_s": 300}
    assert d["expiration"] == "2031-06-01T00:00:00+00:00" and patched.body["expires_at"] == utc(2031, 6, 1)
    with pytest.raises(RevisionConflict):
        ps.update(store, "tempdevnetwork", {"owner": "x"}, NOW, merge=True, revision=1)
    assert ps.update(store, "tempdevnetwork", {"owner": "x"}, NOW, merge=True, revision=2).revision == 3


def test_merge_patch_rules() -> None:
    assert ps.merge_patch({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": None, "e": 4}, "d": [1]}) == \
        {"a": {"c": 2, "e": 4}, "d": [1]}
    assert ps.merge_patch({"a": 1}, {"a": {"b": None}}) == {"a": {}}
    assert ps.merge_patch({"a": 1}, ["x"]) == ["x"]


# -- attachments --------------------------------------------------------------------------------

def test_attach_allocates_the_lowest_free_address(store: Store) -> None:
    create(store, doc())
    first = ps.attach(store, "tempdevnetwork", IF1)
    assert first.body["attachments"] == [{"interface_id": IF1, "ip": "10.100.0.2", "mac": "02:00:00:00:00:01"}]
    ps.attach(store, "tempdevnetwork", IF2, "10.100.0.3")
    ps.attach(store, "tempdevnetwork", IF3)
    r = record(store, "tempdevnetwork")
    assert [(a.interface_id, str(a.ip)) for a in r.attachments] == [
        (IF1, "10.100.0.2"), (IF2, "10.100.0.3"), (IF3, "10.100.0.4")]
    updated, gone = ps.detach(store, "tempdevnetwork", IF1)
    assert gone.ip == IPv4Address("10.100.0.2") and len(updated.body["attachments"]) == 2
    assert ps.attach(store, "tempdevnetwork", IF1).body["attachments"][-1]["ip"] == "10.100.0.2"
    assert messages(store, "tempdevnetwork") == [
        "created", f"attached {IF1} as 10.100.0.2", f"attached {IF2} as 10.100.0.3",
        f"attached {IF3} as 10.100.0.4", f"detached {IF1}", f"attached {IF1} as 10.100.0.2"]
    with pytest.raises(NotFound):
        ps.detach(store, "tempdevnetwork", "0000000000000a09:9")


@pytest.mark.parametrize("ip, words", [
    ("10.101.0.5", "outside the persona's range 10.100.0.0/24"),
    ("10.100.0.0", "network address"), ("10.100.0.255", "broadcast address"),
    ("10.100.0.1", "gateway address"), ("10.100.0.256", "not an IPv4 address"),
    (167772160, "not an IPv4 address"),
])
def test_attach_refuses_bad_addresses(store: Store, ip: Any, words: str) -> None:
    create(store, doc())
    with pytest.raises(DocumentInvalid) as exc:
        ps.attach(store, "tempdevnetwork", IF1, ip)
    assert exc.value.errors[0]["field"] == "body.ip" and words in exc.value.errors[0]["reason"]
    assert store.get(ps.KIND, "tempdevnetwork").body["attachments"] == []


def test_attach_refusals(store: Store) -> None:
    create(store, doc())
    create(store, doc("other", "10.101.0.0/24"))
    ps.attach(store, "tempdevnetwork", IF1, "10.100.0.9")
    cases = [
        (lambda: ps.attach(store, "tempdevnetwork", IF2, "10.100.0.9"), "body.ip", "taken by interface"),
        (lambda: ps.attach(store, "tempdevnetwork", IF1), "body.interface_id", "already attached to this persona"),
        (lambda: ps.attach(store, "other", IF1), "body.interface_id", "is attached to persona 'tempdevnetwork'"),
    ]
    for call, field, words in cases:
        with pytest.raises(PersonaConflict) as exc:
            call()
        assert exc.value.errors[0]["field"] == field and words in exc.value.errors[0]["reason"]
    with pytest.raises(DocumentInvalid) as invalid:
        ps.attach(store, "tempdevnetwork", "0000000000000a09:9")
    assert invalid.value.errors == [{"field": "body.interface_id",
                                     "reason": "no interface with id '0000000000000a09:9'"}]
    with pytest.raises(NotFound):
        ps.attach(store, "nope", IF2)


def test_an_interface_with_a_personality_cannot_attach(store: Store) -> None:
    create(store, doc())
    store.put("interface", IF2, {**store.get("interface", IF2).body, "personality_id": "web"})
    with pytest.raises(PersonaConflict) as exc:
        ps.attach(store, "tempdevnetwork", IF2)
    assert exc.value.title == "Interface in use" and exc.value.extra["personality_id"] == "web"
    assert exc.value.errors == [{"field": "body.interface_id", "reason": "runs personality 'web'"}]
    op = operations.create(store, IF3, "web", kind="switch", now=NOW)
    with pytest.raises(PersonaConflict, match=f"unfinished personality operation '{op.id}'"):
        ps.attach(store, "tempdevnetwork", IF3)
    # the coordinator ends the operation: state and interface lock in one transaction
    with store.transaction():
        store.put("operation", op.id, {**op.body, "state": "rolled_back"})
        store.put("interface", IF3, {**store.get("interface", IF3).body, "operation_id": None})
    assert ps.attach(store, "tempdevnetwork", IF3).revision == 2
    assert store.get("persona", "tempdevnetwork").body["attachments"][0]["interface_id"] == IF3


def test_a_persona_member_takes_no_personality_operation(store: Store) -> None:
    create(store, doc())
    ps.attach(store, "tempdevnetwork", IF1)
    with pytest.raises(ClaimConflict) as exc:
        operations.create(store, IF1, "web", kind="switch", now=NOW)
    assert (exc.value.owner, exc.value.field) == ("persona tempdevnetwork", "body.personality_id")
    assert store.list("operation") == [] and store.get("interface", IF1).body.get("operation_id") is None
    ps.detach(store, "tempdevnetwork", IF1)
    assert operations.create(store, IF1, "web", kind="switch", now=NOW).body["state"] == "pending"


def test_a_subnet_in_the_store_is_a_range_claim(store: Store) -> None:
    """Beyond the subnets the caller passes, every stored claim of another feature counts."""
    store.create("subnet", "lab", {"cidr": "10.100.0.0/16", "gateway": "10.100.255.254"})
    with pytest.raises(PersonaConflict) as exc:
        create(store, doc())
    assert exc.value.title == "Addresses in use" and exc.value.extra == {"subnet_id": "lab"}
    assert exc.value.errors == [{"field": "body.ip_range", "reason": "is subnet 'lab'"}]
    assert "10.100.0.0/24 overlaps 10.100.0.0/16" in exc.value.detail
    assert store.list(ps.KIND) == []


def test_create_reads_claims_not_records(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Allocation at any number of personas reads a few claim rows, never every record."""
    for i in range(20):
        create(store, doc(f"p{i}", f"10.{100 + i}.0.0/24"))
    ps.attach(store, "p0", IF1)
    monkeypatch.setattr(store, "list", lambda kind: pytest.fail(f"create listed every {kind}"))
    made = create(store, doc("again", "10.100.0.0/24"))  # overlaps p0: NAT for both
    assert made.document.body["index"] == 21 and made.remapped == {"p0": "100.64.0.0/24"}
    with pytest.raises(PersonaConflict, match="'p3' is the name of live persona 'p3'"):
        create(store, doc("p3", "10.200.0.0/24"))
    with pytest.raises(PersonaConflict, match="is attached to persona 'p0'"):
        ps.attach(store, "p1", IF1)


def test_claims_follow_the_record(store: Store) -> None:
    create(store, doc("a"))
    create(store, doc("b"))
    ps.attach(store, "a", IF1)
    held = {(r.space, r.key) for r in store.claims_of(ps.KIND, "a")}
    assert held == {("persona.name", "a"), ("persona.index", "1"), ("ipv4", "10.100.0.0/24"),
                    ("ipv4", "100.64.0.0/24"), ("interface", IF1)}
    ps.mark_expired(store, "a", NOW)
    assert store.claims_of(ps.KIND, "a") == [] and claims.holders(store, "interface", IF1) == []
    assert holders(claims.overlapping(store, IPv4Network("100.64.0.0/16"))) == {"b"}  # b's block
    assert holders(claims.overlapping(store, IPv4Network("10.100.0.0/16"))) == {"b"}
    ps.delete(store, "b")
    assert store.claims_of(ps.KIND, "b") == [] and claims.overlapping(store, IPv4Network("0.0.0.0/0")) == []


def test_a_full_range_refuses_one_more(store: Store) -> None:
    create(store, doc(ip_range="10.100.0.0/29"))  # .1 gateway, .2-.6 hosts
    for i in range(5):
        store.put("interface", f"x:{i}", {"mac": f"02:00:00:00:01:0{i}", "personality_id": None})
        ps.attach(store, "tempdevnetwork", f"x:{i}")
    assert [a["ip"] for a in store.get(ps.KIND, "tempdevnetwork").body["attachments"]] == [
        f"10.100.0.{i}" for i in range(2, 7)]
    with pytest.raises(PersonaConflict, match="every address of 10.100.0.0/29 is taken"):
        ps.attach(store, "tempdevnetwork", IF1)


def test_an_expired_persona_holds_nothing(store: Store) -> None:
    create(store, doc("a"))
    create(store, doc("b"))
    ps.attach(store, "a", IF1)
    expired = ps.mark_expired(store, "a", NOW)
    assert expired.body["attachments"] == [] and expired.body["nat"] is None
    assert expired.body["document"]["name"] == "a" and expired.body["gateway"] == "10.100.0.1"
    assert ps.mark_expired(store, "a", NOW + 10) == expired  # idempotent
    with pytest.raises(PersonaConflict, match="has expired"):
        ps.attach(store, "a", IF2)
    assert ps.attach(store, "b", IF1).body["attachments"][0]["interface_id"] == IF1  # released
    assert [r.id for r in ps.live_records(store)] == ["b"] and len(ps.records(store)) == 2
    r = record(store, "a")
    assert (r.state, r.index, r.expired_at, r.hub_range) == ("expired", None, NOW, IPv4Network("10.100.0.0/24"))
    event = store.events(kind=ps.KIND, subject="a")[-1]
    assert event.message == "expired"
    assert event.data["released"]["attachments"][0]["interface_id"] == IF1


def test_delete(store: Store) -> None:
    create(store, doc())
    with pytest.raises(RevisionConflict):
        ps.delete(store, "tempdevnetwork", revision=7)
    gone = ps.delete(store, "tempdevnetwork")
    assert gone.id == "tempdevnetwork" and store.find(ps.KIND, "tempdevnetwork") is None
    assert messages(store, "tempdevnetwork") == ["created", "deleted"]
    with pytest.raises(NotFound):
        ps.delete(store, "tempdevnetwork")


def test_plan_writes_nothing(store: Store) -> None:
    create(store, doc("a"))
    plan = ps.plan(store, doc("b"), NOW, (SEG1,), POOL)
    assert plan.id == "b" and plan.remapped == {"a": "100.64.0.0/24"}
    assert plan.body["nat"] == {"hub_range": "100.64.1.0/24"} and plan.body["index"] == 2
    assert [d.id for d in store.list(ps.KIND)] == ["a"] and nat(store, "a") is None
    assert PersonaRecord.from_body(plan.id, plan.body).hub_range == IPv4Network("100.64.1.0/24")
