"""Provenance cookies: layout, round trips and masks."""
from __future__ import annotations

import zlib

import pytest

from controller.pipeline import cookies
from controller.pipeline.cookies import MAGIC, Feature


def matches(cookie: int, pair: tuple[int, int]) -> bool:
    value, mask = pair
    return cookie & mask == value


@pytest.mark.parametrize("feature", list(Feature))
@pytest.mark.parametrize("doc_id,version", [("", 0), ("base", 0), ("host:00:00:00:00:00:01", 7),
                                            ("subnet:a", 0xFFFF)])
def test_make_parse_roundtrip(feature, doc_id, version):
    cookie = cookies.make(feature, doc_id, version)
    info = cookies.parse(cookie)
    assert info.ours
    assert info.feature is feature
    assert info.doc_key == cookies.doc_key(doc_id)
    assert info.version == version
    assert 0 <= cookie < 1 << 64


def test_bit_layout():
    cookie = cookies.make(Feature.PERSONA, "doc", 0x1234)
    assert cookie >> 56 == MAGIC == 0xB5
    assert (cookie >> 48) & 0xFF == int(Feature.PERSONA) == 3
    assert (cookie >> 16) & 0xFFFFFFFF == zlib.crc32(b"doc")
    assert cookie & 0xFFFF == 0x1234


def test_doc_key():
    assert cookies.doc_key("") == 0
    assert cookies.doc_key("abc") == zlib.crc32(b"abc")
    assert cookies.doc_key("a") != cookies.doc_key("b")


def test_version_wraps_to_16_bits_without_touching_doc_key():
    c = cookies.make(Feature.FABRIC, "x", 0x1_0005)
    info = cookies.parse(c)
    assert info.version == 5
    assert info.doc_key == cookies.doc_key("x")
    assert info.feature is Feature.FABRIC


@pytest.mark.parametrize("cookie", [0, 1, 0x1234, (1 << 64) - 1, 0xB4 << 56, 0xB6 << 56 | 1 << 48])
def test_foreign_cookies_are_not_ours(cookie):
    info = cookies.parse(cookie)
    assert not info.ours
    assert info.feature is None
    assert (info.doc_key, info.version) == (0, 0)


def test_magic_with_unknown_feature_is_not_a_known_feature():
    info = cookies.parse(MAGIC << 56 | 0x99 << 48 | 5)
    assert info.feature is None and not info.ours


def test_masks_are_self_consistent():
    for pair in [cookies.hub_mask()] + [cookies.feature_mask(f) for f in Feature] + \
            [cookies.document_mask(f, d) for f in Feature for d in ("", "a", "host:x")]:
        value, mask = pair
        assert value & mask == value


def test_hub_mask_selects_every_hub_flow_and_nothing_else():
    pair = cookies.hub_mask()
    assert pair == (0xB5 << 56, 0xFF << 56)
    for f in Feature:
        assert matches(cookies.make(f), pair)
        assert matches(cookies.make(f, "doc", 0xFFFF), pair)
    for foreign in (0, 0x1234, 0xB4FF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF):
        assert not matches(foreign, pair)


def test_feature_mask_selects_exactly_one_feature():
    for f in Feature:
        pair = cookies.feature_mask(f)
        assert matches(cookies.make(f), pair)
        assert matches(cookies.make(f, "any-doc", 42), pair)
        for other in Feature:
            if other is not f:
                assert not matches(cookies.make(other, "any-doc", 42), pair)
        # the feature byte without the magic is not the hub's
        assert not matches(int(f) << 48, pair)


def test_document_mask_selects_exactly_one_document_of_one_feature():
    pair = cookies.document_mask(Feature.FABRIC, "host:aa")
    assert matches(cookies.make(Feature.FABRIC, "host:aa"), pair)
    # any version of the document
    assert matches(cookies.make(Feature.FABRIC, "host:aa", 1), pair)
    assert matches(cookies.make(Feature.FABRIC, "host:aa", 0xFFFF), pair)
    # another document of the same feature, the same document of another feature
    assert not matches(cookies.make(Feature.FABRIC, "host:bb"), pair)
    assert not matches(cookies.make(Feature.FABRIC, ""), pair)
    assert not matches(cookies.make(Feature.POLICY, "host:aa"), pair)
    # the same bits without the magic byte
    assert not matches(cookies.make(Feature.FABRIC, "host:aa") & ((1 << 56) - 1), pair)
    assert pair[1] == ((1 << 64) - 1) ^ 0xFFFF
