"""hub-rap: the RAP client of a resource, keeping its shard addresses on one interface.

Python standard library only, so it runs on a bare resource; docs/rap.md says
what it does ("The resource's state machine").  `Client` is that state machine:
it takes `send(data, (ip, port))`, a clock and an `Addresses`
(addresses.py), so tests drive it without a socket or root.  `main` wires the
real socket, the `select` loop and the signals (`controller.agents.loop`, shared
with the shadow agent).
"""
from __future__ import annotations

import argparse
import collections
import enum
import logging
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface

from controller.agents import flags
from controller.agents.loop import Send, run, sender
from controller.rap import protocol as rap
from controller.rap.addresses import FOREVER, AddressError, Addresses, IpAddresses

log = logging.getLogger("hub-rap")

BROADCAST = IPv4Address("255.255.255.255")
DEFAULT_PORT = 6699
REGISTER_FIRST = 1.0      # s: REGISTER retransmission starts here, doubling ...
REGISTER_MAX = 32.0       # ... up to this, then stays
RETRANSMIT = 2.0          # s: RENEW and REBIND retransmission
T1, T2 = 0.5, 0.875       # shares of the valid lifetime: RENEW, then REBIND

class State(enum.Enum):
    INIT = "init"              # not started
    SELECTING = "selecting"    # REGISTER sent, waiting for an OFFER
    BOUND = "bound"            # leased, before T1
    RENEWING = "renewing"      # past T1: RENEW to the server
    REBINDING = "rebinding"    # past T2: REBIND to 255.255.255.255
    STOPPED = "stopped"        # released everything


@dataclass(frozen=True)
class Held:
    """A shard address on the interface: its lease, and when (client clock) it arrived."""
    lease: rap.Lease
    since: float

    @property
    def address(self) -> IPv4Address:
        return self.lease.address

    @property
    def interface(self) -> IPv4Interface:
        return IPv4Interface(f"{self.lease.address}/{self.lease.prefix}")

    def at(self, share: float) -> float:
        """The time `share` of the valid lifetime has passed (1.0: it is over)."""
        return self.since + share * self.lease.valid


@dataclass(frozen=True)
class Request:
    """The request awaiting an OFFER: for its round-trip time (from its last try)."""
    type: rap.Type
    sent: float
    tries: int


class Client:
    """The resource's side of RAP.  Call `start()`, then `receive()` each datagram and
    `tick()` whenever `deadline()` has passed; `stop()` releases everything."""

    def __init__(self, resource: str, key: bytes, server: IPv4Address, port: int,
                 addresses: Addresses, send: Send, now: Callable[[], float] = time.monotonic,
                 counter: rap.Counter | None = None) -> None:
        self.resource, self.key, self.server, self.port = resource, key, server, port
        self.addresses, self._send_datagram, self.now = addresses, send, now
        self.counter = counter or rap.Counter(time.time)
        self.receiver = rap.Receiver(lambda rid: key if rid == resource else None)
        self.state = State.INIT
        self.epoch = 0                                  # the hub's, from its last OFFER/ANNOUNCE
        self.current: Held | None = None                # the lease being renewed
        self.deprecated: dict[IPv4Address, Held] = {}   # older addresses until RELEASE or expiry
        self.rejected: collections.Counter[str] = collections.Counter()
        self._request: Request | None = None
        self._backoff = REGISTER_FIRST
        self._next = now()

    # -- driving ---------------------------------------------------------------------

    def start(self) -> None:
        self._restart()

    def deadline(self) -> float | None:
        """When `tick` has something to do (client clock); None once stopped."""
        return None if self.state is State.STOPPED else self._next

    def tick(self) -> None:
        now = self.now()
        self._forget_expired(now)
        if self.state in (State.INIT, State.STOPPED) or now < self._next:
            return
        if self.state is State.SELECTING:
            self._register(now)
            return
        held = self.current
        assert held is not None
        if now >= held.at(1.0):
            log.info("lease of %s expired; registering again", held.interface)
            for gone in self._held():        # the hub forgot the deprecated ones with it
                self._remove(gone)
            self.current, self.deprecated = None, {}
            self._restart()
        elif now >= held.at(T2):
            if self.state is not State.REBINDING:
                log.info("no answer to RENEW: rebinding %s", held.address)
            self.state = State.REBINDING
            self._request_again(rap.Type.REBIND, BROADCAST, held.address, now)
            self._next = min(now + RETRANSMIT, held.at(1.0))
        elif now >= held.at(T1):
            if self.state is not State.RENEWING:
                log.info("renewing %s", held.address)
            self.state = State.RENEWING
            self._request_again(rap.Type.RENEW, self.server, held.address, now)
            self._next = min(now + RETRANSMIT, held.at(T2))
        else:
            self._next = held.at(T1)

    def receive(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            msg = self.receiver.accept(data)
        except rap.Rejected as exc:
            self.rejected[exc.reason] += 1
            log.debug("dropped a datagram from %s:%d (%s)", source[0], source[1], exc)
            return
        handler = {rap.Type.OFFER: self._on_offer, rap.Type.ANNOUNCE: self._on_announce,
                   rap.Type.RELEASE: self._on_release, rap.Type.NAK: self._on_nak}.get(msg.type)
        if handler is None or self.state in (State.INIT, State.STOPPED):
            log.debug("ignored %s in state %s", msg.type.name, self.state.value)
            return
        try:
            handler(msg)
        except AddressError as exc:
            log.error("%s failed: %s", msg.type.name, exc)

    def stop(self) -> None:
        """RELEASE every address held and remove it."""
        for held in self._held():
            self._send(rap.Type.RELEASE, self.server, held.address)
            self._remove(held)
            log.info("released %s (stopping)", held.address)
        self.current, self.deprecated = None, {}
        self.state = State.STOPPED

    # -- the hub's messages --------------------------------------------------------

    def _on_offer(self, msg: rap.Message) -> None:
        now, lease = self.now(), msg.lease
        assert lease is not None
        self._round_trip(now, msg.type)
        self._note_epoch(msg.epoch)
        held = Held(lease, now)
        if not self._refresh(held):
            self._add(held)
            log.info("leased %s (valid %d s, epoch %d)", held.interface, lease.valid, msg.epoch)
            self._alone(held, keep={lease.address, *self.deprecated})
        self._bind(held)

    def _refresh(self, held: Held) -> bool:
        """The current address again: new lifetimes only.  False if it is another one
        (or no longer on the interface)."""
        if self.current is None or self.current.address != held.address:
            return False
        try:
            self.addresses.change(held.interface, held.lease.valid, held.lease.preferred)
        except AddressError as exc:
            log.warning("%s: adding it again", exc)
            return False
        log.info("renewed %s (valid %d s)", held.interface, held.lease.valid)
        return True

    def _on_announce(self, msg: rap.Message) -> None:
        new, old = msg.lease, msg.address
        assert new is not None and old is not None
        if self.current is not None and self.current.address == new.address:
            log.debug("ANNOUNCE of %s again: ACK again", new.address)
            self._send(rap.Type.ACK, self.server, new.address)
            return
        now = self.now()
        self._note_epoch(msg.epoch)
        held = Held(new, now)
        gone = {h.address: h for h in (self.current, self.deprecated.get(old)) if h}
        self._add(held)
        self._alone(held, keep={new.address, *self.deprecated, *gone})
        for dep in gone.values():         # no new connections from it; open ones go on,
            # for as long as they last: the hub RELEASEs it once they are gone.
            self.addresses.change(dep.interface, FOREVER, 0)
            self.deprecated[dep.address] = replace(dep, lease=replace(dep.lease, valid=FOREVER))

        log.info("announced %s, %s deprecated", held.interface, old)
        self._bind(held)

    def _on_release(self, msg: rap.Message) -> None:
        address = msg.address
        if address in self.deprecated:
            self._remove(self.deprecated.pop(address))
            log.info("released %s", address)
        elif self.current is not None and self.current.address == address:
            self._remove(self.current)
            self.current = None
            log.info("released %s, the current lease; registering again", address)
            self._restart()
        else:
            log.debug("RELEASE of %s, not an address held", address)

    def _on_nak(self, msg: rap.Message) -> None:
        reason = msg.reason.name.lower() if msg.reason is not None else "?"
        for held in self._held():
            self._remove(held)
            log.info("removed %s (NAK)", held.interface)
        self.current, self.deprecated = None, {}
        log.info("NAK (%s) from the hub: registering again", reason)
        if self.state is not State.SELECTING:      # in SELECTING the REGISTER back-off goes on
            self._restart()

    # -- steps -----------------------------------------------------------------------

    def _restart(self) -> None:
        """INIT: REGISTER now, then from 1 s doubling."""
        self._backoff, self._request = REGISTER_FIRST, None
        self._register(self.now())

    def _register(self, now: float) -> None:
        self.state = State.SELECTING
        self._request_again(rap.Type.REGISTER, self._register_to(), None, now)
        self._next = now + self._backoff
        self._backoff = min(self._backoff * 2, REGISTER_MAX)

    def _register_to(self) -> IPv4Address:
        """The server, or 255.255.255.255 while the interface has no IPv4 address."""
        try:
            return self.server if self.addresses.ipv4() else BROADCAST
        except AddressError as exc:
            log.warning("%s", exc)
            return self.server

    def _add(self, held: Held) -> None:
        self.addresses.replace(held.interface, held.lease.valid, held.lease.preferred)

    def _alone(self, held: Held, keep: set[IPv4Address]) -> None:
        """No other address on the interface but those in `keep`; the default route on
        link, from `held` (so new connections start from it)."""
        for other in self.addresses.ipv4():
            if other.ip not in keep:
                self.addresses.delete(other)
                log.info("removed %s (not a shard address held)", other)
        self.addresses.default_route(held.address)
        log.info("default route on link, from %s", held.address)

    def _bind(self, held: Held) -> None:
        """BOUND on this lease, the one to renew: ACK it, RENEW at T1."""
        self.current = held
        self.state, self._request, self._backoff = State.BOUND, None, REGISTER_FIRST
        self._next = held.at(T1)
        self._send(rap.Type.ACK, self.server, held.address)

    def _remove(self, held: Held) -> None:
        try:
            self.addresses.delete(held.interface)
        except AddressError as exc:         # the kernel may have expired it already
            log.debug("%s", exc)

    def _forget_expired(self, now: float) -> None:
        """Deprecated addresses past their valid lifetime: the kernel removed them."""
        for address, held in list(self.deprecated.items()):
            if now >= held.at(1.0):
                del self.deprecated[address]
                log.info("%s expired (deprecated)", address)

    def _held(self) -> list[Held]:
        return ([self.current] if self.current else []) + list(self.deprecated.values())

    def _note_epoch(self, epoch: int) -> None:
        if self.epoch and epoch != self.epoch:
            log.info("hub restarted (epoch %d -> %d)", self.epoch, epoch)
        self.epoch = epoch

    def _round_trip(self, now: float, answer: rap.Type) -> None:
        request, self._request = self._request, None
        if request is not None:
            tries = f" (try {request.tries})" if request.tries > 1 else ""
            log.info("%s -> %s in %.1f ms%s", request.type.name, answer.name,
                     (now - request.sent) * 1000, tries)

    def _request_again(self, type_: rap.Type, to: IPv4Address, address: IPv4Address | None,
                       now: float) -> None:
        tries = self._request.tries + 1 if self._request and self._request.type == type_ else 1
        self._request = Request(type_, now, tries)
        self._send(type_, to, address)

    def _send(self, type_: rap.Type, to: IPv4Address, address: IPv4Address | None) -> None:
        epoch = 0 if type_ == rap.Type.REGISTER else self.epoch   # 0 is always allowed there
        msg = rap.Message(type_, self.resource, self.counter.next(), rap.new_nonce(), epoch,
                          address=address)
        self._send_datagram(rap.encode(msg, self.key), (str(to), self.port))


# -- the process -------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = flags.parser("hub-rap", "Keep this resource's shard addresses on an interface, leased "
                     "from the hub over RAP.", id_flag="resource", id_help="the resource id",
                     key_help="the resource's RAP key", port=DEFAULT_PORT,
                     port_help="the RAP port",
                     server_help="the hub's address for this resource (rap.server of its "
                                 "enrolment)",
                     interface_help="the interface facing the hub")
    return flags.parse(p, argv, "resource")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sock = flags.open_channel("hub-rap", args, log)
    if sock is None:
        return 1
    addresses = IpAddresses(args.interface, shlex.split(args.ip_command))
    client = Client(args.resource, rap.key_bytes(args.key), args.server, args.port,
                    addresses, sender(sock, log))
    log.info("resource %s on %s, server %s:%d", args.resource, args.interface, args.server,
             args.port)
    with sock:
        return run(client, sock)


if __name__ == "__main__":
    sys.exit(main())
