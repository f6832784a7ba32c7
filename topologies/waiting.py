"""What the lab demo's scenarios share: waiting for a condition, or giving up the demo."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T], timeout: float = 20.0) -> T:
    """`check()`'s first true value, tried every 0.2 s; SystemExit naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"lab: timed out waiting for {what}")
