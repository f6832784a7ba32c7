"""Provenance cookies: every flow says which feature and document produced it.

    bits 63..56  magic 0xB5: the flow belongs to hubshift
    bits 55..48  feature (FABRIC, PERSONALITY, ...)
    bits 47..16  document key: CRC-32 of the document id (0 = feature-wide)
    bits 15..0   document version (revision modulo 2**16)

Flows without the magic byte are never read back, diffed or deleted by the hub,
so an operator's own flows survive every reconcile.  Masks select everything of
the hub, of one feature, or of one document, for flow/aggregate stats and for
explaining a flow.
"""
from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass
from typing import NamedTuple

MAGIC = 0xB5
_MAGIC_SHIFT = 56
_FEATURE_SHIFT = 48
_DOC_SHIFT = 16
_FULL = (1 << 64) - 1


class Feature(enum.IntEnum):
    FABRIC = 1
    PERSONALITY = 2
    PERSONA = 3
    SHARD = 4
    SHADOW = 5
    POLICY = 6


def doc_key(doc_id: str) -> int:
    return zlib.crc32(doc_id.encode()) if doc_id else 0


def make(feature: Feature, doc_id: str = "", version: int = 0) -> int:
    return ((MAGIC << _MAGIC_SHIFT) | (int(feature) << _FEATURE_SHIFT)
            | (doc_key(doc_id) << _DOC_SHIFT) | (version & 0xFFFF))


@dataclass(frozen=True)
class CookieInfo:
    feature: Feature | None
    doc_key: int
    version: int

    @property
    def ours(self) -> bool:
        return self.feature is not None


def parse(cookie: int) -> CookieInfo:
    if cookie >> _MAGIC_SHIFT != MAGIC:
        return CookieInfo(None, 0, 0)
    try:
        feature = Feature((cookie >> _FEATURE_SHIFT) & 0xFF)
    except ValueError:
        feature = None
    return CookieInfo(feature, (cookie >> _DOC_SHIFT) & 0xFFFFFFFF, cookie & 0xFFFF)


class CookieMask(NamedTuple):
    """A cookie and the mask of its bits that matter (flow stats, strict deletes)."""
    cookie: int
    mask: int


def hub_mask() -> CookieMask:
    """Every flow of the hub."""
    return CookieMask(MAGIC << _MAGIC_SHIFT, 0xFF << _MAGIC_SHIFT)


def feature_mask(feature: Feature) -> CookieMask:
    """Every flow of one feature."""
    return CookieMask(make(feature), 0xFFFF << _FEATURE_SHIFT)


def document_mask(feature: Feature, doc_id: str) -> CookieMask:
    """Every flow of one document, whatever its version."""
    return CookieMask(make(feature, doc_id), _FULL ^ 0xFFFF)
