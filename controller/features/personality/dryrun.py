"""What a personality change would do, without doing it: the flow diff and the
connections it would cut (read from the switch without blocking the worker)."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Mapping

from controller.core import interfaces
from controller.core.context import FeatureContext
from controller.features.personality.binding import Binding
from controller.features.personality.compile import (PersonalityPolicy, compile_personality,
                                                     connection_cookie, decode_connection,
                                                     interface_zone)
from controller.features.personality.run import ALL_BITS, compile_context, interface_of
from controller.pipeline import ofctl, tables
from controller.reconcile.flows import diff as flow_diff


def dry_run(ctx: FeatureContext, current_bindings: Mapping[str, Binding], iid: str,
            personality_id: str) -> dict[str, Any] | Future:
    """The answer, or a Future of it when the live connections must be read first."""
    iface_doc = ctx.store.find(interfaces.KIND, iid)
    if iface_doc is None:
        raise LookupError(f"no interface {iid!r}")
    doc = ctx.store.find("personality", personality_id)
    if doc is None:
        raise LookupError(f"no personality {personality_id!r}")
    iface = interface_of(iface_doc)
    current = current_bindings.get(iid)
    epoch = 1 - (current.zone & 1) if current else 0
    policy = PersonalityPolicy.from_body(doc.id, doc.body, doc.revision)
    compiled = compile_context(ctx)
    new = compile_personality(iface, policy, interface_zone(iface, epoch), compiled)
    change = flow_diff(new, current.flows(compiled) if current else ())

    def answer(connections: list[dict[str, Any]]) -> dict[str, Any]:
        return {"interface_id": iid,
                "from_personality_id": current.personality_id if current else None,
                "to_personality_id": personality_id,
                "flows": {"add": [ofctl.render_flow(f) for f in change.add],
                          "delete": [ofctl.render_flow(f) for f in change.delete]},
                "connections": connections, "would_cut": len(connections)}

    if current is None:
        return answer([])
    result: Future = Future()

    def read(done: Future) -> None:
        flows = [] if done.exception() is not None else done.result()
        result.set_result(answer([decode_connection(dict(f.match)) for f in flows]))

    cookie = connection_cookie(iface, current.zone)
    if not ctx.request(iface.dpid, lambda channel: channel.flow_stats(
            tables.PERSONALITY_CONNECTIONS.id, cookie, ALL_BITS), read):
        return answer([])
    return result
