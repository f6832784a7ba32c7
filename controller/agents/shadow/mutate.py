"""The Fuzzing profile's inputs: seeds from the mirrored traffic, and their mutations.

Python standard library only, and pure (no socket; clocks and randomness passed in).

`Corpus`: segments in, seeds out.  Of each mirrored TCP connection toward a
production address, the client's bytes in sequence order (`ids.Stream`), the first
`seed_bytes`, up to the server's first answer, the connection's end (FIN or RST), a
copy cut short by the snaplen, or `SETTLE` s without a segment; of UDP, each client
datagram toward a production address.  A seed is its target (protocol, server
address, port) and bytes; at most `size` seeds, each once.

`Mutator`: a seed in, an input out, every operator a function of the input, another
seed of the same target (for a splice) and a `random.Random`, so one settings `seed`
gives the same inputs for the same seeds on every run.  The operators (`OPERATORS`):

- `bit_flip`: one bit of one byte flipped;
- `interesting_byte`: one byte set to 0x00, 0xff, 0x7f or 0x80 (one it was not);
- `insert_chunk`, `delete_chunk`, `duplicate_chunk`: a chunk of at most `CHUNK` bytes
  inserted (random bytes), taken out, or copied in after itself;
- `truncate`: the input cut short;
- `splice`: the beginning of the input and the end of another seed;
- `repeat_token`: a token (a run of ASCII letters, digits, `_`) repeated 2..`REPEAT` times;
- `boundary_number`: a number in ASCII (`-?[0-9]+`) replaced by a boundary value:
  0, -1, 2**31, 2**32+1 or a huge digit string.

`Mutator.mutate` picks one operator among those that apply (a splice needs another
seed, a token or number one in the input, most need a non-empty input) and cuts the
result to `MAX_INPUT` bytes.
"""
from __future__ import annotations

import collections
import random
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import NamedTuple

from controller.agents.shadow.capture import ACK, FIN, RST, SYN, Segment
from controller.agents.shadow.ids import Stream
from controller.agents.shadow.protocol import FiveTuple

SETTLE = 2.0                # s without a segment before a connection's request is a seed
CONNECTIONS = 1024          # requests gathered at once at most; beyond, the oldest is taken
INTERESTING = (0x00, 0xFF, 0x7F, 0x80)
BOUNDARIES = (b"0", b"-1", str(2 ** 31).encode(), str(2 ** 32 + 1).encode(),
              b"9" * 40, b"1" + b"0" * 100)
CHUNK = 64                  # bytes inserted, deleted or duplicated at most
REPEAT = 256                # times a token is repeated at most
MAX_INPUT = 65507           # bytes of an input at most: the largest UDP datagram's payload
TOKEN = re.compile(rb"\w+", re.ASCII)
NUMBER = re.compile(rb"-?[0-9]+")

Operator = Callable[[bytes, bytes, random.Random], bytes]


class Mutation(NamedTuple):
    operator: str           # its name in OPERATORS
    data: bytes


def bit_flip(data: bytes, other: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]


def interesting_byte(data: bytes, other: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data))
    value = rng.choice([v for v in INTERESTING if v != data[at]])
    return data[:at] + bytes([value]) + data[at + 1:]


def insert_chunk(data: bytes, other: bytes, rng: random.Random) -> bytes:
    at = rng.randint(0, len(data))
    return data[:at] + rng.randbytes(rng.randint(1, CHUNK)) + data[at:]


def _chunk(data: bytes, rng: random.Random) -> tuple[int, int]:
    start = rng.randrange(len(data))
    return start, min(len(data), start + rng.randint(1, CHUNK))


def delete_chunk(data: bytes, other: bytes, rng: random.Random) -> bytes:
    start, end = _chunk(data, rng)
    return data[:start] + data[end:]


def duplicate_chunk(data: bytes, other: bytes, rng: random.Random) -> bytes:
    start, end = _chunk(data, rng)
    return data[:end] + data[start:end] + data[end:]


def truncate(data: bytes, other: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def splice(data: bytes, other: bytes, rng: random.Random) -> bytes:
    return data[:rng.randint(0, len(data))] + other[rng.randrange(len(other)):]


def repeat_token(data: bytes, other: bytes, rng: random.Random) -> bytes:
    token = rng.choice(list(TOKEN.finditer(data)))
    start, end = token.span()
    return data[:start] + token.group() * rng.randint(2, REPEAT) + data[end:]


def boundary_number(data: bytes, other: bytes, rng: random.Random) -> bytes:
    number = rng.choice(list(NUMBER.finditer(data)))
    start, end = number.span()
    return data[:start] + rng.choice([b for b in BOUNDARIES if b != number.group()]) + data[end:]


OPERATORS: dict[str, Operator] = {f.__name__: f for f in (
    bit_flip, interesting_byte, insert_chunk, delete_chunk, duplicate_chunk, truncate,
    splice, repeat_token, boundary_number)}


def applicable(data: bytes, other: bytes | None) -> list[str]:
    """The names of the operators that can mutate `data` (with `other` to splice)."""
    if not data:
        return ["insert_chunk"] + (["splice"] if other else [])
    names = [n for n in OPERATORS if n not in ("splice", "repeat_token", "boundary_number")]
    if other:
        names.append("splice")
    if TOKEN.search(data):
        names.append("repeat_token")
    if NUMBER.search(data):
        names.append("boundary_number")
    return names


class Mutator:
    """Inputs from seeds, the same ones for the same `seed` and calls."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def mutate(self, data: bytes, others: Sequence[bytes] = ()) -> Mutation:
        """A mutation of `data`; a splice takes the end of one of `others`."""
        candidates = [o for o in others if o and o != data]
        other = self.rng.choice(candidates) if candidates else None
        name = self.rng.choice(applicable(data, other))
        return Mutation(name, OPERATORS[name](data, other or b"", self.rng)[:MAX_INPUT])


# -- the seeds -------------------------------------------------------------------------

class Target(NamedTuple):
    protocol: str           # "tcp" or "udp"
    address: IPv4Address    # a production address, which the instance holds
    port: int


class Seed(NamedTuple):
    target: Target
    data: bytes


@dataclass
class _Request:
    """A connection's client bytes being gathered."""
    stream: Stream
    data: bytearray
    seen: float


class Corpus:
    """Segments in (`feed`, `expire` on a monotonic clock), new seeds out; `seeds` are
    all of them, in the order they were taken."""

    def __init__(self, servers: Collection[IPv4Address], seed_bytes: int, size: int,
                 settle: float = SETTLE, limit: int = CONNECTIONS) -> None:
        self.servers, self.seed_bytes, self.size = set(servers), seed_bytes, size
        self.settle, self.limit = settle, limit
        self.seeds: list[Seed] = []
        self._known: set[Seed] = set()
        self.requests: collections.OrderedDict[FiveTuple, _Request] = \
            collections.OrderedDict()       # client -> server, the longest unseen first

    @property
    def full(self) -> bool:
        return len(self.seeds) >= self.size

    def feed(self, seg: Segment, now: float) -> list[Seed]:
        if self.full:
            return []
        if seg.protocol == "udp":
            if seg.dst not in self.servers:
                return []
            return self._take(Seed(Target("udp", seg.dst, seg.dport), seg.payload))
        way = FiveTuple("tcp", seg.src, seg.sport, seg.dst, seg.dport)
        back = FiveTuple("tcp", seg.dst, seg.dport, seg.src, seg.sport)
        if back in self.requests:           # the server's: its answer ends the request
            return self._done(back) if seg.payload or seg.flags & (FIN | RST) else []
        if seg.dst not in self.servers or seg.flags & (SYN | ACK) == SYN | ACK:
            return []
        found: list[Seed] = []
        request = self.requests.get(way)
        if request is None:
            if not (seg.payload or seg.flags & SYN):
                return []
            if len(self.requests) >= self.limit:
                found += self._done(next(iter(self.requests)))
            request = self.requests[way] = _Request(Stream(0), bytearray(), now)
        request.seen = now
        self.requests.move_to_end(way)
        if seg.flags & SYN:
            request.stream.syn(seg.seq)
        data_seq = (seg.seq + 1) & 0xFFFFFFFF if seg.flags & SYN else seg.seq
        for run in request.stream.add(data_seq, seg.payload, seg.size):
            request.data += run.data[run.start:]
        if len(request.data) >= self.seed_bytes or seg.flags & (FIN | RST) \
                or seg.size > len(seg.payload):
            found += self._done(way)
        return found

    def expire(self, now: float) -> list[Seed]:
        """The requests unseen for `settle` s, as seeds."""
        found: list[Seed] = []
        while self.requests:
            way, request = next(iter(self.requests.items()))
            if now - request.seen < self.settle:
                break
            found += self._done(way)
        return found

    def _done(self, way: FiveTuple) -> list[Seed]:
        request = self.requests.pop(way)
        for run in request.stream.flush():
            request.data += run.data[run.start:]
        return self._take(Seed(Target("tcp", way.dst, way.dport), bytes(request.data)))

    def _take(self, seed: Seed) -> list[Seed]:
        seed = Seed(seed.target, seed.data[:self.seed_bytes])
        if not seed.data or seed in self._known or self.full:
            return []
        self._known.add(seed)
        self.seeds.append(seed)
        return [seed]
