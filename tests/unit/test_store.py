"""Unit tests for the embedded document store."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from controller.store import (
    AlreadyExists,
    ClaimRow,
    Document,
    NotFound,
    RevisionConflict,
    SQLiteStore,
    Store,
    StoreError,
    add_write_hook,
    open_store,
    remove_write_hook,
)


class FakeClock:
    """Deterministic clock: every reading advances by one second."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Iterator[Store]:
    s = open_store(":memory:", clock=clock)
    yield s
    s.close()


# -- documents ---------------------------------------------------------------


def test_create_and_get(store: Store) -> None:
    created = store.create("hub", "h1", {"name": "one", "ports": [1, 2]})
    assert created == Document("hub", "h1", 1, {"name": "one", "ports": [1, 2]}, 1001.0, 1001.0)
    assert store.get("hub", "h1") == created
    assert store.find("hub", "h1") == created
    assert created.to_dict() == {
        "kind": "hub",
        "id": "h1",
        "revision": 1,
        "created_at": 1001.0,
        "updated_at": 1001.0,
        "body": {"name": "one", "ports": [1, 2]},
    }


def test_list_is_sorted_by_id_and_scoped_to_kind(store: Store) -> None:
    for id in ("c", "a", "b"):
        store.create("hub", id, {"id": id})
    store.create("spoke", "a", {})
    assert [d.id for d in store.list("hub")] == ["a", "b", "c"]
    assert [d.id for d in store.list("spoke")] == ["a"]
    assert store.list("nothing") == []


def test_create_twice_raises_already_exists(store: Store) -> None:
    store.create("hub", "h1", {"v": 1})
    with pytest.raises(AlreadyExists) as info:
        store.create("hub", "h1", {"v": 2})
    assert (info.value.kind, info.value.id) == ("hub", "h1")
    assert isinstance(info.value, StoreError)
    assert store.get("hub", "h1").body == {"v": 1}


def test_update_with_current_revision_bumps_it(store: Store) -> None:
    store.create("hub", "h1", {"v": 1})
    updated = store.update("hub", "h1", {"v": 2}, revision=1)
    assert (updated.revision, updated.body) == (2, {"v": 2})
    assert (updated.created_at, updated.updated_at) == (1001.0, 1002.0)
    assert store.get("hub", "h1") == updated


def test_update_without_revision_is_unconditional(store: Store) -> None:
    store.create("hub", "h1", {"v": 1})
    store.update("hub", "h1", {"v": 2})
    assert store.update("hub", "h1", {"v": 2}).revision == 3


def test_update_with_stale_revision_conflicts_and_keeps_body(store: Store) -> None:
    store.create("hub", "h1", {"v": 1})
    store.update("hub", "h1", {"v": 2}, revision=1)
    with pytest.raises(RevisionConflict) as info:
        store.update("hub", "h1", {"v": 3}, revision=1)
    err = info.value
    assert (err.kind, err.id, err.expected, err.actual) == ("hub", "h1", 1, 2)
    assert "1" in str(err) and "2" in str(err)
    current = store.get("hub", "h1")
    assert (current.revision, current.body) == (2, {"v": 2})


def test_put_is_idempotent(store: Store) -> None:
    first = store.put("state", "s1", {"a": 1, "b": 2})
    assert first.revision == 1
    again = store.put("state", "s1", {"b": 2, "a": 1})
    assert again == first
    changed = store.put("state", "s1", {"a": 1, "b": 3})
    assert (changed.revision, changed.created_at) == (2, first.created_at)


def test_delete(store: Store) -> None:
    store.create("hub", "h1", {})
    store.delete("hub", "h1", revision=1)
    assert store.find("hub", "h1") is None
    store.create("hub", "h1", {})
    store.delete("hub", "h1")
    assert store.list("hub") == []


def test_delete_with_stale_revision_is_refused(store: Store) -> None:
    store.create("hub", "h1", {"v": 1})
    store.update("hub", "h1", {"v": 2})
    with pytest.raises(RevisionConflict) as info:
        store.delete("hub", "h1", revision=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert store.get("hub", "h1").revision == 2


def test_not_found_paths(store: Store) -> None:
    assert store.find("hub", "nope") is None
    for call in (
        lambda: store.get("hub", "nope"),
        lambda: store.update("hub", "nope", {}),
        lambda: store.update("hub", "nope", {}, revision=1),
        lambda: store.delete("hub", "nope"),
    ):
        with pytest.raises(NotFound) as info:
            call()
        assert (info.value.kind, info.value.id) == ("hub", "nope")


def test_body_must_be_a_dict(store: Store) -> None:
    with pytest.raises(TypeError):
        store.create("hub", "h1", ["not", "a", "dict"])  # type: ignore[arg-type]
    assert store.find("hub", "h1") is None


def test_returned_body_is_a_copy(store: Store) -> None:
    body = {"v": 1}
    store.create("hub", "h1", body)
    body["v"] = 99
    store.get("hub", "h1").body["v"] = 42
    assert store.get("hub", "h1").body == {"v": 1}


# -- journal -----------------------------------------------------------------


def test_journal_ordering_and_pagination(store: Store) -> None:
    assert store.last_event_seq() == 0
    assert store.events() == []
    appended = [store.append_event("hub", f"h{i}", f"message {i}") for i in range(5)]
    assert [e.seq for e in appended] == [1, 2, 3, 4, 5]
    assert appended[0].data == {}
    assert appended[0].ts == 1001.0
    assert store.last_event_seq() == 5
    assert store.events() == appended
    assert store.events(after=0, limit=2) == appended[:2]
    assert store.events(after=2, limit=2) == appended[2:4]
    assert store.events(after=4, limit=2) == appended[4:]
    assert store.events(after=5) == []
    assert store.events(limit=0) == []


def test_journal_event_payload(store: Store) -> None:
    event = store.append_event("flow", "sw1", "installed", {"cookie": 7, "match": {"in_port": 1}})
    assert store.events() == [event]
    assert event.to_dict() == {
        "seq": 1,
        "ts": 1001.0,
        "kind": "flow",
        "subject": "sw1",
        "message": "installed",
        "data": {"cookie": 7, "match": {"in_port": 1}},
    }


def test_journal_filters_by_kind_and_subject(store: Store) -> None:
    store.append_event("flow", "sw1", "a")
    store.append_event("port", "sw1", "b")
    store.append_event("flow", "sw2", "c")
    store.append_event("flow", "sw1", "d")
    assert [e.message for e in store.events(kind="flow")] == ["a", "c", "d"]
    assert [e.message for e in store.events(subject="sw1")] == ["a", "b", "d"]
    assert [e.message for e in store.events(kind="flow", subject="sw1")] == ["a", "d"]
    assert [e.message for e in store.events(after=1, limit=1, kind="flow")] == ["c"]


# -- transactions --------------------------------------------------------------


def test_transaction_commits_all_writes(store: Store) -> None:
    with store.transaction():
        store.create("hub", "h1", {})
        store.append_event("hub", "h1", "created")
    assert store.get("hub", "h1").revision == 1
    assert store.last_event_seq() == 1


def test_transaction_rollback_on_exception_leaves_nothing(store: Store) -> None:
    store.create("hub", "keep", {"v": 1})
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.create("hub", "h1", {})
            store.update("hub", "keep", {"v": 2})
            store.append_event("hub", "h1", "created")
            raise RuntimeError("boom")
    assert store.find("hub", "h1") is None
    assert store.get("hub", "keep").body == {"v": 1}
    assert store.events() == []
    assert store.last_event_seq() == 0


def test_nested_transaction_is_part_of_outer(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.create("hub", "outer", {})
            with store.transaction():
                store.create("hub", "inner", {})
            raise RuntimeError("boom")
    assert store.list("hub") == []


def test_failed_inner_transaction_rolls_back_only_itself(store: Store) -> None:
    with store.transaction():
        store.create("hub", "outer", {})
        with pytest.raises(RevisionConflict):
            with store.transaction():
                store.create("hub", "inner", {})
                store.update("hub", "outer", {}, revision=5)
    assert [d.id for d in store.list("hub")] == ["outer"]


def test_failed_write_outside_transaction_leaves_store_usable(store: Store) -> None:
    store.create("hub", "h1", {})
    with pytest.raises(AlreadyExists):
        store.create("hub", "h1", {})
    store.create("hub", "h2", {})
    assert [d.id for d in store.list("hub")] == ["h1", "h2"]


# -- write hooks and claim rows ---------------------------------------------------


def test_write_hooks_see_every_write_inside_its_transaction(store: Store) -> None:
    seen: list[tuple[str, str, dict | None, bool]] = []

    def hook(s: Store, kind: str, id: str, body: dict | None) -> None:
        seen.append((kind, id, body, s.find(kind, id) is not None))
        if body is not None and body.get("refuse"):
            raise ValueError("refused")

    add_write_hook(hook)
    add_write_hook(hook)  # once only
    try:
        store.create("hub", "h1", {"v": 1})
        store.update("hub", "h1", {"v": 2})
        store.put("hub", "h1", {"v": 2})  # unchanged: no write, no call
        store.put("hub", "h2", {"v": 3})
        store.delete("hub", "h1")
        with pytest.raises(ValueError):
            store.put("hub", "h2", {"refuse": True})
    finally:
        remove_write_hook(hook)
    store.create("hub", "h3", {})
    assert seen == [("hub", "h1", {"v": 1}, False), ("hub", "h1", {"v": 2}, True),
                    ("hub", "h2", {"v": 3}, False), ("hub", "h1", None, True),
                    ("hub", "h2", {"refuse": True}, True)]
    assert store.get("hub", "h2").body == {"v": 3}  # the refused write changed nothing


def row(space: str, key: str, holder: str, first: int = 0, last: int | None = None) -> ClaimRow:
    return ClaimRow(space, key, first, first if last is None else last, "doc", holder, "f",
                    f"doc {holder}", "", "body")


def test_claim_rows(store: Store) -> None:
    a, b = row("ipv4", "0.0.1.0/24", "a", 256, 511), row("ipv4", "0.0.2.0/24", "b", 512, 767)
    wide = row("ipv4", "0.0.0.0/16", "w", 0, 65535)
    store.set_claims("doc", "a", [a, row("port", "p1", "a")])
    store.set_claims("doc", "b", [b, row("n", "2", "b", 2)])
    assert store.claims_of("doc", "a") == [row("port", "p1", "a"), a]
    assert store.claims_on("port", "p1") == [row("port", "p1", "a")] and store.claims_on("port", "p2") == []
    assert store.claims_overlapping("ipv4", 511, 512) == [a, b]
    assert store.claims_overlapping("ipv4", 300, 301) == [a] and store.claims_overlapping("ipv4", 0, 256) == [a]
    assert store.claims_overlapping("ipv4", 768, 900) == [] and store.claims_overlapping("n", 0, 1) == []
    store.set_claims("doc", "w", [wide])
    assert store.claims_overlapping("ipv4", 768, 900) == [wide]             # contains it
    assert store.claims_overlapping("ipv4", 0, 1 << 20) == [wide, a, b]     # inside it
    assert store.claims_overlapping("ipv4", 65535, 70000) == [wide]         # its last address
    assert store.claims_overlapping("ipv4", 65536, 70000) == []
    assert store.lowest_free_number("n", 1, 3) == 1
    store.set_claims("doc", "c", [row("n", "1", "c", 1)])
    assert store.lowest_free_number("n", 1, 3) == 3 and store.lowest_free_number("n", 1, 2) is None
    store.set_claims("doc", "d", [row("n", "4", "d", 4)])
    assert store.lowest_free_number("n", 1, 9) == 3 and store.lowest_free_number("n", 2, 9) == 3
    store.set_claims("doc", "c", [])
    assert store.lowest_free_number("n", 1, 9) == 1 and store.lowest_free_number("n", 2, 9) == 3
    store.set_claims("doc", "a", [])
    assert store.claims_of("doc", "a") == [] and store.claims_on("port", "p1") == []
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.set_claims("doc", "b", [])
            raise RuntimeError("boom")
    assert len(store.claims_of("doc", "b")) == 2  # claim rows are part of the transaction
    store.clear_claims()
    assert store.claims_of("doc", "b") == []
    assert store.get_meta("k") is None
    store.set_meta("k", "v")
    store.set_meta("k", "w")
    assert store.get_meta("k") == "w"


# -- persistence ----------------------------------------------------------------


def test_everything_survives_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = str(tmp_path / "nested" / "dir" / "store.db")
    with open_store(path, clock=clock) as s:
        s.create("hub", "h1", {"v": 1})
        s.update("hub", "h1", {"v": 2}, revision=1)
        s.put("state", "s1", {"up": True})
        with s.transaction():
            s.create("hub", "h2", {})
            s.append_event("hub", "h2", "created", {"by": "test"})
        docs, events = s.list("hub"), s.events()

    reopened = open_store(path, clock=clock)
    try:
        assert reopened.list("hub") == docs
        assert reopened.get("state", "s1").body == {"up": True}
        assert reopened.events() == events
        assert reopened.append_event("hub", "h1", "after reopen").seq == 2
    finally:
        reopened.close()


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    open_store(str(path)).close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]


def test_a_version_1_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    open_store(str(path)).close()
    with closing(sqlite3.connect(path)) as db, db:  # back to version 1: no claims, no meta
        db.execute("DROP TABLE claims")
        db.execute("DROP TABLE meta")
        db.execute("UPDATE schema_version SET version = 1")
        db.execute("INSERT INTO documents VALUES ('hub', 'h1', 1, '{}', 1.0, 1.0)")
    with open_store(str(path)) as s:
        assert s.get("hub", "h1").revision == 1 and s.claims_of("hub", "h1") == []
        assert s.get_meta("claims") is None
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    open_store(str(path)).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError):
        open_store(str(path))


def test_wal_mode_is_on(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    s = SQLiteStore(str(path))
    try:
        assert s._db().execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        with closing(sqlite3.connect(path)) as other:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        s.close()


def test_closed_store_refuses_use(store: Store) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreError):
        store.get("hub", "h1")


# -- concurrency ------------------------------------------------------------------


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    s = open_store(str(tmp_path / "store.db"))
    threads, per_thread = 4, 200
    start = threading.Barrier(threads)
    seqs: list[list[int]] = [[] for _ in range(threads)]

    def worker(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            seqs[n].append(s.append_event("load", f"t{n}", str(i)).seq)

    try:
        pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        all_seqs = [q for chunk in seqs for q in chunk]
        assert len(set(all_seqs)) == threads * per_thread
        assert sorted(all_seqs) == list(range(1, threads * per_thread + 1))
        assert s.last_event_seq() == threads * per_thread
        for n in range(threads):
            assert seqs[n] == sorted(seqs[n])
            assert [e.message for e in s.events(limit=1000, subject=f"t{n}")] == [
                str(i) for i in range(per_thread)
            ]
    finally:
        s.close()


def test_concurrent_optimistic_updates_lose_nothing(store: Store) -> None:
    store.create("counter", "c", {"n": 0})
    threads, per_thread = 4, 50

    def worker() -> None:
        done = 0
        while done < per_thread:
            current = store.get("counter", "c")
            try:
                store.update("counter", "c", {"n": current.body["n"] + 1}, current.revision)
            except RevisionConflict:
                continue
            done += 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    final = store.get("counter", "c")
    assert final.body == {"n": threads * per_thread}
    assert final.revision == threads * per_thread + 1
