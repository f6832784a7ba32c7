"""``--wait``: follow personality operations until they finish.

Each unfinished operation is read again (``GET /v1/operations/{id}``) every
0.3 s.  On a table output one line is printed per state change, and a live
connection count while draining (rewritten in place on a terminal); with
``-o json|yaml`` only the finished operations are written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from controller.cli.client import EXIT_NOT_SUCCEEDED, EXIT_OK, HubClient
from controller.cli.output import Output, plural
from controller.features.personality.cli_tables import connection_count, operation_table, operations_table
from controller.features.personality.operations import FINAL

POLL_INTERVAL_S = 0.3

_sleep: Callable[[float], None] = time.sleep  # replaced by tests


class _Follower:
    """Prints what changes in the operations being waited for."""

    def __init__(self, labelled: bool, tty: bool) -> None:
        self.labelled, self.tty = labelled, tty
        self.states: dict[str, str] = {}
        self.counts: dict[str, int | None] = {}
        self.drain_seen: dict[str, float] = {}
        self.open_line = False

    def _print(self, text: str) -> None:
        if self.open_line:
            sys.stdout.write("\n")
            self.open_line = False
        print(text)
        sys.stdout.flush()

    def see(self, op: dict[str, Any]) -> None:
        prefix = f"{op['interface_id']}: " if self.labelled else ""
        state = op["state"]
        if self.states.get(op["id"]) != state:
            self.states[op["id"]] = state
            if state in FINAL and state != "succeeded":
                note = op.get("reason") or op.get("result") or _last_message(op, state)
            else:
                note = _last_message(op, state)
            self._print(f"{prefix}{state}" + (f": {note}" if note else ""))
        if state == "draining":
            self._progress(op, prefix)

    def _progress(self, op: dict[str, Any], prefix: str) -> None:
        count = connection_count(op.get("connections"))
        started = _entered(op, "draining")
        if started is None:
            started = self.drain_seen.setdefault(op["id"], time.time())
        elapsed = max(0.0, time.time() - started)
        limit = (op.get("drain") or {}).get("max_seconds", 30)
        what = "" if count is None else f"{plural(count, 'connection')}, "
        line = f"{prefix}draining: {what}{elapsed:.1f} s of {limit:g} s"
        if self.tty and not self.labelled:
            sys.stdout.write("\r\x1b[K" + line)
            sys.stdout.flush()
            self.open_line = True
        elif op["id"] not in self.counts or self.counts[op["id"]] != count:
            self._print(line)
        self.counts[op["id"]] = count

    def close(self) -> None:
        if self.open_line:
            sys.stdout.write("\n")
            self.open_line = False


def _last_message(op: dict[str, Any], state: str) -> str | None:
    entries = [e for e in op.get("log") or [] if e.get("state") == state]
    return entries[-1].get("message") if entries else None


def _entered(op: dict[str, Any], state: str) -> float | None:
    entries = [e for e in op.get("log") or [] if e.get("state") == state and e.get("at") is not None]
    return float(entries[-1]["at"]) if entries else None


def wait_for(api: HubClient, ops: list[dict[str, Any]], out: Output, *, several: bool = False) -> int:
    """Follow ``ops`` until each is finished; 0 when all succeeded, else 1.

    ``several``: lines name the interface (always so for more than one operation).
    """
    several = several or len(ops) > 1
    follow = _Follower(labelled=several, tty=sys.stdout.isatty()) if out.format == "table" else None
    latest = {op["id"]: op for op in ops}
    try:
        for op in ops:
            if follow:
                follow.see(op)
        while any(op["state"] not in FINAL for op in latest.values()):
            _sleep(POLL_INTERVAL_S)
            for id, op in latest.items():
                if op["state"] not in FINAL:
                    latest[id] = api.get(f"/v1/operations/{id}")
                    if follow:
                        follow.see(latest[id])
    finally:
        if follow:
            follow.close()
    done = list(latest.values())
    if not follow:
        out.emit(done if several else done[0], operations_table if several else operation_table)
    failed = [op for op in done if op["state"] != "succeeded"]
    if failed and follow and several:
        print(f"{len(failed)} of {len(done)} operations did not succeed: "
              + ", ".join(f"{op['interface_id']} {op['state']}" for op in failed))
    return EXIT_NOT_SUCCEEDED if failed else EXIT_OK
