"""SQLite implementation of the store (WAL, durable commits, thread-safe)."""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .base import (AlreadyExists, ClaimRow, Document, Event, NotFound, RevisionConflict, Store,
                   StoreError, claim_order)

Clock = Callable[[], float]

SCHEMA_VERSION = 2

# MIGRATIONS[n] upgrades the schema from version n to version n + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE documents (
            kind       TEXT    NOT NULL,
            id         TEXT    NOT NULL,
            revision   INTEGER NOT NULL,
            body       TEXT    NOT NULL,
            created_at REAL    NOT NULL,
            updated_at REAL    NOT NULL,
            PRIMARY KEY (kind, id)
        )
        """,
        """
        CREATE TABLE journal (
            seq     INTEGER PRIMARY KEY AUTOINCREMENT,
            ts      REAL NOT NULL,
            kind    TEXT NOT NULL,
            subject TEXT NOT NULL,
            message TEXT NOT NULL,
            data    TEXT NOT NULL
        )
        """,
        "CREATE INDEX journal_kind_seq ON journal (kind, seq)",
        "CREATE INDEX journal_subject_seq ON journal (subject, seq)",
    ),
    (
        """
        CREATE TABLE claims (
            space       TEXT    NOT NULL,
            key         TEXT    NOT NULL,
            first       INTEGER NOT NULL,
            last        INTEGER NOT NULL,
            holder_kind TEXT    NOT NULL,
            holder_id   TEXT    NOT NULL,
            feature     TEXT    NOT NULL,
            owner       TEXT    NOT NULL,
            reason      TEXT    NOT NULL,
            field       TEXT    NOT NULL
        )
        """,
        "CREATE INDEX claims_key ON claims (space, key)",
        "CREATE INDEX claims_first ON claims (space, first)",
        "CREATE INDEX claims_holder ON claims (holder_kind, holder_id)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
)

_DOC_COLUMNS = "kind, id, revision, body, created_at, updated_at"
_EVENT_COLUMNS = "seq, ts, kind, subject, message, data"
_CLAIM_COLUMNS = "space, key, first, last, holder_kind, holder_id, feature, owner, reason, field"


def _dump(value: dict[str, Any]) -> str:
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict, got {type(value).__name__}")
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _document(row: tuple[Any, ...]) -> Document:
    kind, id, revision, body, created_at, updated_at = row
    return Document(kind, id, revision, json.loads(body), created_at, updated_at)


def _event(row: tuple[Any, ...]) -> Event:
    seq, ts, kind, subject, message, data = row
    return Event(seq, ts, kind, subject, message, json.loads(data))


class SQLiteStore(Store):
    """Store backed by one SQLite connection shared by all threads."""

    def __init__(self, path: str, clock: Clock = time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is closed")
        return self._conn

    def _migrate(self) -> None:
        with self.transaction():
            db = self._db()
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {version} is newer than supported {SCHEMA_VERSION}"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    db.execute(statement)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            db = self._db()
            savepoint = f"sp{self._depth}" if self._depth else None
            db.execute(f"SAVEPOINT {savepoint}" if savepoint else "BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if savepoint:
                    db.execute(f"ROLLBACK TO {savepoint}")
                    db.execute(f"RELEASE {savepoint}")
                elif db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if savepoint:
                db.execute(f"RELEASE {savepoint}")
                return
            try:
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _fetch(self, kind: str, id: str) -> Document | None:
        row = self._db().execute(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE kind = ? AND id = ?", (kind, id)
        ).fetchone()
        return None if row is None else _document(row)

    def _write(
        self, kind: str, id: str, body: str, revision: int, created_at: float | None = None
    ) -> Document:
        now = self._clock()
        if created_at is None:
            created_at = now
        self._db().execute(
            "INSERT OR REPLACE INTO documents (kind, id, revision, body, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (kind, id, revision, body, created_at, now),
        )
        return Document(kind, id, revision, json.loads(body), created_at, now)

    @staticmethod
    def _check(current: Document, revision: int | None) -> None:
        if revision is not None and revision != current.revision:
            raise RevisionConflict(current.kind, current.id, revision, current.revision)

    # -- documents --------------------------------------------------------

    def create(self, kind: str, id: str, body: dict[str, Any]) -> Document:
        text = _dump(body)
        with self.transaction():
            if self._fetch(kind, id) is not None:
                raise AlreadyExists(kind, id)
            self._written(kind, id, body)
            return self._write(kind, id, text, 1)

    def update(
        self, kind: str, id: str, body: dict[str, Any], revision: int | None = None
    ) -> Document:
        text = _dump(body)
        with self.transaction():
            current = self.get(kind, id)
            self._check(current, revision)
            self._written(kind, id, body)
            return self._write(kind, id, text, current.revision + 1, current.created_at)

    def put(self, kind: str, id: str, body: dict[str, Any]) -> Document:
        text = _dump(body)
        with self.transaction():
            current = self._fetch(kind, id)
            if current is not None and _dump(current.body) == text:
                return current
            self._written(kind, id, body)
            if current is None:
                return self._write(kind, id, text, 1)
            return self._write(kind, id, text, current.revision + 1, current.created_at)

    def get(self, kind: str, id: str) -> Document:
        document = self.find(kind, id)
        if document is None:
            raise NotFound(kind, id)
        return document

    def find(self, kind: str, id: str) -> Document | None:
        with self._lock:
            return self._fetch(kind, id)

    def list(self, kind: str) -> builtins.list[Document]:
        with self._lock:
            rows = self._db().execute(
                f"SELECT {_DOC_COLUMNS} FROM documents WHERE kind = ? ORDER BY id", (kind,)
            ).fetchall()
        return [_document(row) for row in rows]

    def delete(self, kind: str, id: str, revision: int | None = None) -> None:
        with self.transaction():
            self._check(self.get(kind, id), revision)
            self._written(kind, id, None)
            self._db().execute("DELETE FROM documents WHERE kind = ? AND id = ?", (kind, id))

    # -- claims -----------------------------------------------------------

    def _claims(self, where: str, params: Sequence[Any]) -> builtins.list[ClaimRow]:
        with self._lock:
            rows = self._db().execute(
                f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE {where}", tuple(params)).fetchall()
        # sorted here, not by SQL: an ORDER BY makes SQLite walk the whole space's index
        return sorted((ClaimRow(*row) for row in rows), key=claim_order)

    def claims_of(self, holder_kind: str, holder_id: str) -> builtins.list[ClaimRow]:
        return self._claims("holder_kind = ? AND holder_id = ?", (holder_kind, holder_id))

    def set_claims(self, holder_kind: str, holder_id: str, rows: Sequence[ClaimRow]) -> None:
        assert all((r.holder_kind, r.holder_id) == (holder_kind, holder_id) for r in rows), rows
        with self.transaction():
            db = self._db()
            db.execute("DELETE FROM claims WHERE holder_kind = ? AND holder_id = ?",
                       (holder_kind, holder_id))
            db.executemany(f"INSERT INTO claims ({_CLAIM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [tuple(vars(r).values()) for r in rows])

    def claims_on(self, space: str, key: str) -> builtins.list[ClaimRow]:
        return self._claims("space = ? AND key = ?", (space, key))

    def claims_overlapping(self, space: str, first: int, last: int) -> builtins.list[ClaimRow]:
        # A row overlapping [first, last] starts inside it, or starts before it and so,
        # being an aligned block, is one of the 32 blocks that contain ``first`` and
        # start lower: index lookups, not a walk over every range that starts lower.
        before = sorted({first - first % (1 << bits) for bits in range(1, 33)} - {first})
        marks = ", ".join("?" * len(before))
        return self._claims(f"space = ? AND first BETWEEN ? AND ? UNION ALL SELECT {_CLAIM_COLUMNS}"
                            f" FROM claims WHERE space = ? AND first IN ({marks}) AND last >= ?",
                            (space, first, last, space, *before, first))

    def lowest_free_number(self, space: str, lo: int, hi: int) -> int | None:
        with self._lock:
            db = self._db()
            where = "space = ? AND first BETWEEN ? AND ?"
            top = db.execute(f"SELECT MAX(first) FROM claims WHERE {where}", (space, lo, hi)).fetchone()[0]
            if top is None:
                return lo
            # No gap below the highest, the usual case, is counted in SQLite.  (A number
            # held twice, a recorded conflict, can hide a gap: the answer is then free but
            # not the lowest.)
            count = db.execute(f"SELECT COUNT(*) FROM claims WHERE {where}", (space, lo, hi)).fetchone()[0]
            expected = top + 1
            if count != top - lo + 1:
                expected = lo
                for (number,) in db.execute(f"SELECT DISTINCT first FROM claims WHERE {where}"
                                            " ORDER BY first", (space, lo, hi)):
                    if number != expected:
                        break
                    expected += 1
        return expected if expected <= hi else None

    def clear_claims(self) -> None:
        with self.transaction():
            self._db().execute("DELETE FROM claims")

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._db().execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- journal ----------------------------------------------------------

    def append_event(
        self,
        kind: str,
        subject: str,
        message: str,
        data: dict[str, Any] | None = None,
    ) -> Event:
        text = _dump({} if data is None else data)
        with self.transaction():
            ts = self._clock()
            cursor = self._db().execute(
                "INSERT INTO journal (ts, kind, subject, message, data) VALUES (?, ?, ?, ?, ?)",
                (ts, kind, subject, message, text),
            )
            seq = cursor.lastrowid
        assert seq is not None
        return Event(seq, ts, kind, subject, message, json.loads(text))

    def events(
        self,
        after: int = 0,
        limit: int = 100,
        kind: str | None = None,
        subject: str | None = None,
        newest: bool = False,
    ) -> builtins.list[Event]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        clauses, params = ["seq > ?"], [after]
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if subject is not None:
            clauses.append("subject = ?")
            params.append(subject)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM journal WHERE {' AND '.join(clauses)}"
            f" ORDER BY seq {'DESC' if newest else ''} LIMIT ?"
        )
        with self._lock:
            rows = self._db().execute(sql, (*params, limit)).fetchall()
        return [_event(row) for row in (reversed(rows) if newest else rows)]

    def last_event_seq(self) -> int:
        with self._lock:
            row = self._db().execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()
        return int(row[0])

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
