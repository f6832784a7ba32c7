"""Store interface: versioned documents plus an append-only event journal."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
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


@dataclass(frozen=True)
class ClaimRow:
    """One stored claim: document (holder_kind, holder_id) holds ``key`` of ``space``.

    What claims mean, and who may hold what, is ``controller.core.claims``'s
    business; the store keeps the rows, in the transactions of the writes
    that make them, and answers the few lookups claims need. ``first`` and
    ``last`` are the integer bounds of a range (or a numeric key's value,
    else 0) so that overlap and "lowest free number" are index lookups.
    """

    space: str
    key: str
    first: int   # a range is an aligned block (a CIDR): first is a multiple of its size
    last: int
    holder_kind: str
    holder_id: str
    feature: str
    owner: str   # "<kind> <id>" of whom the claim is held for, e.g. "personality web"
    reason: str  # what holding it means, e.g. "runs personality 'web'"
    field: str   # where the holder's body makes the claim, e.g. "body.ip_range"


def claim_order(row: ClaimRow) -> tuple[int, str, str, str]:
    """The order the store answers claim rows in: by ``first``, key, then holder."""
    return row.first, row.key, row.holder_kind, row.holder_id


WriteHook = Callable[["Store", str, str, "dict[str, Any] | None"], None]
"""``hook(store, kind, id, body)``: called inside the transaction of every
document write, before the row changes (``body`` None on delete). An
exception undoes the write."""

_WRITE_HOOKS: list[WriteHook] = []


def add_write_hook(hook: WriteHook) -> None:
    """Run ``hook`` on every document write of every store (once, however often added)."""
    if hook not in _WRITE_HOOKS:
        _WRITE_HOOKS.append(hook)


def remove_write_hook(hook: WriteHook) -> None:
    if hook in _WRITE_HOOKS:
        _WRITE_HOOKS.remove(hook)


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

    # -- claims (see controller.core.claims) -------------------------------

    @abstractmethod
    def claims_of(self, holder_kind: str, holder_id: str) -> builtins.list[ClaimRow]:
        """Every claim one document holds (all claim answers are in ``claim_order``)."""

    @abstractmethod
    def set_claims(self, holder_kind: str, holder_id: str, rows: Sequence[ClaimRow]) -> None:
        """Replace the claims one document holds with ``rows`` (theirs)."""

    @abstractmethod
    def claims_on(self, space: str, key: str) -> builtins.list[ClaimRow]:
        """The claims on one key of a space."""

    @abstractmethod
    def claims_overlapping(self, space: str, first: int, last: int) -> builtins.list[ClaimRow]:
        """The claims of a space of aligned blocks whose [first, last] overlaps the bounds."""

    @abstractmethod
    def lowest_free_number(self, space: str, lo: int, hi: int) -> int | None:
        """The lowest number in lo..hi no claim of ``space`` holds (``first``), or None."""

    @abstractmethod
    def clear_claims(self) -> None:
        """Drop every claim row (before they are rebuilt from the documents)."""

    @abstractmethod
    def get_meta(self, key: str) -> str | None:
        """A value of the store's own bookkeeping, None when unset."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Set a bookkeeping value (part of the current transaction)."""

    def _written(self, kind: str, id: str, body: dict[str, Any] | None) -> None:
        """Run the write hooks; implementations call it inside the write's transaction."""
        for hook in tuple(_WRITE_HOOKS):
            hook(self, kind, id, body)

    # -- journal ----------------------------------------------------------

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
        newest: bool = False,
    ) -> builtins.list[Event]:
        """Journal entries with seq > after, ascending, at most ``limit``: the first ones,
        or with ``newest`` the last ones."""

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
