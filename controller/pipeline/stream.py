"""The FlowMods of one apply as wire bytes, in send order, joined into socket writes.

A large apply is sent while it is being encoded: the channel writes each chunk
as soon as it is full, so the switch parses the first BundleAdds while the
next ones are encoded (`apps.channel.OsKenChannel.apply`).  Both functions here
are lazy for that reason: nothing is encoded before it is asked for, and an
encoding error surfaces when the chunk holding that flow is asked for.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from controller.pipeline.flowspec import FlowSpec
from controller.pipeline.wire import bundle_add_wire, flow_mod_wire


class Bundle(NamedTuple):
    """Which bundle the mods are added to (OpenFlow 1.4+), and its flags."""
    bundle_id: int
    flags: int


def mod_messages(dp: Any, deletes: Sequence[FlowSpec], adds: Sequence[FlowSpec],
                 xids: Sequence[int], bundle: Bundle | None = None) -> Iterator[bytes]:
    """Strict deletes, then adds, each as one message with the next of `xids`.

    Plain FlowMods, or with `bundle` BundleAdds carrying them.  `xids` holds
    one xid per flow, in that order.
    """
    if len(xids) != len(deletes) + len(adds):
        raise ValueError(f"{len(xids)} xids for {len(deletes) + len(adds)} flow mods")
    n = len(deletes)
    if bundle is None:
        for spec, xid in zip(deletes, xids):
            yield flow_mod_wire(dp, spec, xid, True)
        for spec, xid in zip(adds, xids[n:]):
            yield flow_mod_wire(dp, spec, xid)
        return
    bundle_id, flags = bundle
    for spec, xid in zip(deletes, xids):
        yield bundle_add_wire(dp, bundle_id, flags, spec, xid, True)
    for spec, xid in zip(adds, xids[n:]):
        yield bundle_add_wire(dp, bundle_id, flags, spec, xid)


def chunked(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The pieces joined, in order, into chunks of at least `size` bytes (the last: the rest).

    A piece is never split: every chunk ends at a message boundary.  Nothing
    is yielded for no pieces.
    """
    if size < 1:
        raise ValueError(f"chunk size must be positive, got {size}")
    parts: list[bytes] = []
    length = 0
    for piece in pieces:
        parts.append(piece)
        length += len(piece)
        if length >= size:
            yield b"".join(parts)
            parts.clear()
            length = 0
    if parts:
        yield b"".join(parts)
