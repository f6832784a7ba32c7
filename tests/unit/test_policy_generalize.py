"""The peer of a connection: category before set before subnet before address."""
from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from controller.features.policy.generalize import Generalizer
from controller.features.policy.rules import Peer

SETS = {"wide": [IPv4Network("10.0.0.0/8")], "lab": [IPv4Network("10.1.0.0/16")],
        "twin-b": [IPv4Network("192.0.2.0/25")], "twin-a": [IPv4Network("192.0.2.0/25")],
        "ext": [IPv4Network("198.51.100.0/24"), IPv4Network("203.0.113.0/26")]}
SUBNETS = {"seg1": IPv4Network("10.1.2.0/24"), "seg9": IPv4Network("172.16.0.0/12"),
           "seg9a": IPv4Network("172.16.5.0/24")}


@pytest.fixture
def gen() -> Generalizer:
    return Generalizer({"10.1.2.3": ("web",), "10.1.2.4": ("web", "db", "analytics"),
                        "10.1.2.5": ()}, SETS, SUBNETS)


def test_a_member_is_its_category_even_inside_a_set_and_a_subnet(gen):
    assert gen.peer("10.1.2.3") == Peer("category", "web")


def test_a_member_of_several_categories_is_the_first_in_sorted_order(gen):
    assert gen.peer("10.1.2.4") == Peer("category", "analytics")
    order = Generalizer({"10.9.9.9": ("web", "analytics")}, {}, {})
    assert order.peer("10.9.9.9") == Generalizer({"10.9.9.9": ("analytics", "web")}, {},
                                                 {}).peer("10.9.9.9")


def test_a_member_without_categories_is_generalized_by_its_address(gen):
    # 10.1.2.5 is in "lab" (a set), in "wide" (a wider set) and in seg1 (a subnet).
    assert gen.peer("10.1.2.5") == Peer("set", "lab")


def test_a_set_comes_before_a_more_specific_subnet(gen):
    # seg1 is a /24 inside "lab" (/16): the declared set still wins.
    assert gen.peer("10.1.2.200") == Peer("set", "lab")


def test_the_most_specific_set_wins(gen):
    assert gen.peer("10.1.7.7") == Peer("set", "lab")
    assert gen.peer("10.200.0.1") == Peer("set", "wide")


def test_sets_with_the_same_prefix_are_told_apart_by_id(gen):
    assert gen.peer("192.0.2.1") == Peer("set", "twin-a")


def test_any_of_a_sets_cidrs_makes_a_member_of_the_set(gen):
    assert gen.peer("198.51.100.9") == Peer("set", "ext")
    assert gen.peer("203.0.113.63") == Peer("set", "ext")
    assert gen.peer("203.0.113.64") == Peer("address", "203.0.113.64")


def test_outside_every_set_a_subnet_the_most_specific(gen):
    assert gen.peer("172.16.5.1") == Peer("subnet", "seg9a")
    assert gen.peer("172.20.0.1") == Peer("subnet", "seg9")


def test_otherwise_the_exact_address(gen):
    assert gen.peer("8.8.8.8") == Peer("address", "8.8.8.8")
    assert gen.peer("2001:db8::1") == Peer("address", "2001:db8::1")


def test_the_answer_does_not_depend_on_what_was_asked_before(gen):
    first = [gen.peer(ip) for ip in ("10.1.2.3", "10.1.7.7", "8.8.8.8")]
    assert [gen.peer(ip) for ip in ("8.8.8.8", "10.1.7.7", "10.1.2.3")] == first[::-1]


def test_not_an_address_is_refused(gen):
    with pytest.raises(ValueError):
        gen.peer("10.1.2")


def test_cidrs_of_each_kind_of_peer(gen):
    assert gen.cidrs(Peer("set", "ext")) == ["203.0.113.0/26", "198.51.100.0/24"]
    assert gen.cidrs(Peer("subnet", "seg1")) == ["10.1.2.0/24"]
    assert gen.cidrs(Peer("address", "8.8.8.8")) == ["8.8.8.8/32"]
    assert gen.cidrs(Peer("address", "2001:db8::1")) == ["2001:db8::1/128"]
    assert gen.cidrs(Peer("category", "web")) == []
    assert gen.cidrs(Peer("set", "nowhere")) == []
