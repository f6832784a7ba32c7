"""Who a connection's peer is, in the words of a rule: a category, an address set,
a hub subnet, or (when nothing else fits) the exact address.

A policy learned from a handful of members must hold for the members that come
later, and for peers that change address within a known range.  So the peer of a
connection record is generalized before it becomes a rule key, in this order
(the first that fits wins):

1. the address belongs to a member of a category -> that category (the first of
   the member's categories in sorted order, so the answer never depends on the
   order categories were given in);
2. the address is inside a declared address set -> that set (the most specific
   one: the longest prefix among the set's CIDRs; equal prefixes: the smaller id);
3. the address is inside a hub subnet -> that subnet (the most specific, likewise);
4. otherwise -> the exact address.

`Generalizer.cidrs` answers the other way round (what a peer covers, as CIDRs),
for exports that speak in address blocks (Kubernetes `ipBlock`).

Pure: the categories, sets and subnets come in; nothing is read or written.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Mapping, NamedTuple, Sequence

from controller.features.policy.rules import Peer


class _Block(NamedTuple):
    """One CIDR of a set or subnet, in the order it is tried (most specific first)."""
    network: IPv4Network
    peer: Peer


def _blocks(kind: str, by_id: Mapping[str, Sequence[IPv4Network]]) -> tuple[_Block, ...]:
    blocks = [_Block(IPv4Network(net), Peer(kind, pid))             # type: ignore[arg-type]
              for pid, nets in by_id.items() for net in nets]
    return tuple(sorted(blocks, key=lambda b: (-b.network.prefixlen, b.peer.name)))


class Generalizer:
    """The peer of an address, for one snapshot of categories, sets and subnets.

    `member_categories` maps a member's IPv4 address to its categories (a member
    with no category is not a category peer); `address_sets` maps a set's id to
    its CIDRs; `subnets` maps a hub subnet's id to its CIDR.
    """

    def __init__(self, member_categories: Mapping[str, Sequence[str]],
                 address_sets: Mapping[str, Sequence[IPv4Network]],
                 subnets: Mapping[str, IPv4Network]) -> None:
        self._category: dict[IPv4Address, str] = {
            IPv4Address(ip): sorted(cats)[0] for ip, cats in member_categories.items() if cats}
        self._sets = _blocks("set", address_sets)
        self._subnets = _blocks("subnet", {sid: (net,) for sid, net in subnets.items()})
        self._cidrs: dict[Peer, tuple[str, ...]] = {}
        for block in self._sets + self._subnets:
            self._cidrs[block.peer] = self._cidrs.get(block.peer, ()) + (str(block.network),)
        self._memo: dict[str, Peer] = {}

    def peer(self, ip: str) -> Peer:
        """The generalized peer of `ip` (ValueError if it is not an IP address).

        An IPv6 address is never inside an IPv4 set or subnet: it stays exact."""
        known = self._memo.get(ip)
        if known is None:
            known = self._memo[ip] = self._generalize(ip)
        return known

    def _generalize(self, ip: str) -> Peer:
        address = ip_address(ip)
        if not isinstance(address, IPv4Address):
            return Peer("address", str(address))
        category = self._category.get(address)
        if category is not None:
            return Peer("category", category)
        for block in self._sets + self._subnets:
            if address in block.network:
                return block.peer
        return Peer("address", str(address))

    def cidrs(self, peer: Peer) -> list[str]:
        """The address blocks a peer covers: a set's CIDRs (most specific first), a
        subnet's CIDR, an address as a host route (/32, /128).  A category is not
        an address block (its members are found by label): []; so is an unknown
        set or subnet."""
        if peer.kind == "address":
            address = ip_address(peer.name)
            return [f"{address}/{address.max_prefixlen}"]
        return list(self._cidrs.get(peer, ()))
