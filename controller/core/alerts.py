"""Alerts, the hub's and every feature's: ``alert`` documents, listed by ``GET /v1/alerts``.

A feature raises an alert by writing an ``alert`` document (and a journal
entry of kind ``alert``, and a count in ``hub_alerts_total{kind,severity}``).
Its body has at least ``kind``, ``severity`` (`SEVERITIES`), ``subject``,
``message``, ``at`` (RFC 3339, `rfc3339`) and ``cleared_at`` (None while
active); a feature adds what names its own subject (``persona_id``,
``appliance_id`` and ``finding_id``, ...).  The personas' thresholds are in
``controller.features.persona.alerts``; the shadows' findings in
``controller.features.shadow.findings``.
"""
from __future__ import annotations

from datetime import UTC, datetime

KIND = "alert"
WARNING, CRITICAL = "warning", "critical"
SEVERITIES = (WARNING, CRITICAL)


def rfc3339(ts: float) -> str:
    """Unix time as RFC 3339 text in UTC, to the millisecond."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")
