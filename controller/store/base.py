"""Store interface: versioned documents plus an append-only event journal."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Document:
    """One stored record, identified by (kind, id) and versioned by revision."""

    kind: str
    id: str
    revision: int
    body: dict[str, Any]
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "revision": self.revision,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "body": self.body,
        }


@dataclass(frozen=True)
class Event:
    """One journal entry; seq is strictly increasing and never reused."""

    seq: int
    ts: float
    kind: str
    subject: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "subject": self.subject,
            "message": self.message,
            "data": self.data,
        }


class StoreError(Exception):
    """Base class for store failures."""


class NotFound(StoreError):
    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"{kind}/{id} not found")
        self.kind = kind
        self.id = id


class AlreadyExists(StoreError):
    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"{kind}/{id} already exists")
        self.kind = kind
        self.id = id


class RevisionConflict(StoreError):
    def __init__(self, kind: str, id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"{kind}/{id} revision conflict: expected revision {expected}, "
            f"current revision is {actual}"
        )
        self.kind = kind
        self.id = id
        self.expected = expected
        self.actual = actual


class Store(ABC):
    """Document store with optimistic concurrency and an event journal.

    Every write is durable once the call returns, unless it runs inside
    ``transaction()``, in which case it commits with the outermost block.
    """

    @abstractmethod
    def create(self, kind: str, id: str, body: dict[str, Any]) -> Document:
        """Insert a new document at revision 1; AlreadyExists if present."""

    @abstractmethod
    def update(
        self, kind: str, id: str, body: dict[str, Any], revision: int | None = None
    ) -> Document:
        """Replace the body and bump the revision.

        ``revision`` is the revision the caller last read; if it is stale the
        write is refused with RevisionConflict. ``None`` skips the check.
        """

    @abstractmethod
    def put(self, kind: str, id: str, body: dict[str, Any]) -> Document:
        """Unconditional upsert; the revision only moves if the body changed."""

    @abstractmethod
    def get(self, kind: str, id: str) -> Document:
        """Return the document or raise NotFound."""

    @abstractmethod
    def find(self, kind: str, id: str) -> Document | None:
        """Return the document or None."""

    @abstractmethod
    def list(self, kind: str) -> builtins.list[Document]:
        """All documents of one kind, sorted by id."""

    @abstractmethod
    def delete(self, kind: str, id: str, revision: int | None = None) -> None:
        """Remove a document; NotFound if absent, RevisionConflict if stale."""

    @abstractmethod
    def append_event(
        self,
        kind: str,
        subject: str,
        message: str,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """Append one entry to the journal."""

    @abstractmethod
    def events(
        self,
        after: int = 0,
        limit: int = 100,
        kind: str | None = None,
        subject: str | None = None,
    ) -> builtins.list[Event]:
        """Journal entries with seq > after, ascending, at most ``limit``."""

    @abstractmethod
    def last_event_seq(self) -> int:
        """Highest journal seq, 0 if the journal is empty."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group writes atomically; nested blocks join the outer one.

        An exception leaving a block undoes that block's writes.
        """

    @abstractmethod
    def close(self) -> None:
        """Release resources; safe to call more than once."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
