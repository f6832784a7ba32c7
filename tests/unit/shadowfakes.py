"""What the shadow agent's profile tests share: a capture fed by hand."""
from __future__ import annotations

BEHIND_MS = 250.0           # the lag a FakeCapture reports while frames are left waiting


class FakeCapture:
    """`capture.Capture` without a socket: `waiting` segments are read `limit` at a time;
    `lag_ms` is 0 once drained, else `BEHIND_MS`."""

    def __init__(self, interface):
        self.interface, self.waiting, self.closed = interface, [], False
        self.lag_ms, self.drained = 0.0, True

    def read(self, limit):
        out, self.waiting = self.waiting[:limit], self.waiting[limit:]
        self.drained = not self.waiting
        self.lag_ms = 0.0 if self.drained else BEHIND_MS
        return out

    def close(self):
        self.closed = True
