"""The policy audit trail: one append-only entry per REST write of the policy feature.

``record(store, actor, what, why, before, after, now)`` appends a `rules.AUDIT`
document whose id is a zero-padded sequence (``"000000000042"``), so ids sort
as entries were written.  The sequence is kept in the store's meta under
``policy.audit.seq`` and advanced in the same transaction as the entry: call it
inside the write's transaction and the entry is written (or rolled back) with
the write.  Nothing updates or deletes an entry; it is in the store, so it
survives restarts.

Entries: ``{seq, at, actor, what, subject, why, before, after}``: who (``rest``
until tokens exist), when (Unix time), what (``"<kind>.<verb>"``, e.g.
``policy-override.created``), the document's id, why (the user's reason, when
the request gave one), and the document before and after (None for a create's
before and a delete's after).
"""
from __future__ import annotations

from typing import Any

from controller.features.policy.rules import AUDIT
from controller.store import Document, Store

SEQ_KEY = "policy.audit.seq"
WIDTH = 12


def entry_id(seq: int) -> str:
    return f"{seq:0{WIDTH}d}"


def record(store: Store, actor: str, what: str, why: str | None,
           before: dict[str, Any] | None, after: dict[str, Any] | None, now: float,
           subject: str | None = None) -> dict[str, Any]:
    """Append one entry (in one transaction with the sequence); the entry as stored."""
    with store.transaction():
        seq = int(store.get_meta(SEQ_KEY) or 0) + 1
        store.set_meta(SEQ_KEY, str(seq))
        body = {"seq": seq, "at": now, "actor": actor, "what": what, "subject": subject,
                "why": why, "before": before, "after": after}
        store.create(AUDIT, entry_id(seq), body)
    return {"id": entry_id(seq), **body}


def entries(store: Store, what: str | None = None, limit: int | None = None) -> list[Document]:
    """Newest first; ``what`` keeps entries whose what is it or starts with "<what>."."""
    docs = sorted(store.list(AUDIT), key=lambda d: int(d.body.get("seq") or 0), reverse=True)
    if what is not None:
        docs = [d for d in docs if d.body.get("what") == what
                or str(d.body.get("what", "")).startswith(what + ".")]
    return docs[:limit] if limit is not None else docs


def entry_view(doc: Document) -> dict[str, Any]:
    b = doc.body
    return {"id": doc.id, "seq": b.get("seq"), "at": b.get("at"), "actor": b.get("actor"),
            "what": b.get("what"), "subject": b.get("subject"), "why": b.get("why"),
            "before": b.get("before"), "after": b.get("after")}
