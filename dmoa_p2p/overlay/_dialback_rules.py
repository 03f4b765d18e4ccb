"""The dial-back protocol's pure rules: its messages, their checks, rate limits and the verdict."""

from __future__ import annotations

import collections
import enum
import ipaddress
import re
from collections.abc import Hashable, Iterable, Sequence

import attrs
import trio

from dmoa_p2p.overlay._addresses import canonical_ip

PROTOCOL_ID = "/dmoa-p2p/dialback/1.0.0"
# Request: a 2-byte big-endian length, then that many bytes of UTF-8: the addresses to dial,
# one a line, each /ip4|ip6/<ip>/tcp/<port>, optionally ending in /p2p/<the requester's id>.
# Answer: one outcome byte, a 2-byte length, then the reason in UTF-8.
LENGTH_BYTES = 2
MAX_REQUEST_BYTES = 1024
MAX_ADDRS = 4  # asked for; a node has a few listen addresses
MAX_DIALS = 2  # of those, dialled (the ones at the requester's IP)
MAX_REASON_BYTES = 600
DIAL_TIMEOUT_S = 3.0  # TCP connect and Noise handshake, per address
READ_TIMEOUT_S = 5.0  # for a request, once its stream is open
# how long an answering peer takes at most, plus the request's way there and back
ANSWER_TIMEOUT_S = READ_TIMEOUT_S + MAX_DIALS * DIAL_TIMEOUT_S + 4.0
# what one node answers: per requester and in all, in a sliding window
PER_PEER_REQUESTS = 4
PER_PEER_WINDOW_S = 600.0
ALL_REQUESTS = 30
ALL_WINDOW_S = 60.0
DIALS_IN_FLIGHT = 8  # requests being dialled back at once, at most one per requester
CONFIRMATIONS = 2  # peers whose dial-back must agree for a verdict
ASK_PEERS = 3  # asked in one check, when connected to that many
RECHECK_S = 300.0  # after a verdict
FIRST_RETRY_S = 10.0  # after a check without one, doubling up to RECHECK_S

_ADDRESS = re.compile(r"/(ip4|ip6)/([^/]+)/tcp/(\d{1,5})(?:/p2p/([^/]+))?")


class Outcome(enum.IntEnum):
    """What a dial-back found: the outcome byte of an answer."""

    REACHABLE = 1  # a fresh connection reached the requester, who proved its peer id
    UNREACHABLE = 2  # dialled in vain, or none of its addresses is at the IP it comes from
    REFUSED = 3  # not tried (rate limit, bad request, relayed connection): says nothing


class BadMessage(ValueError):
    """A dial-back request or answer that breaks the protocol's rules; says which."""


@attrs.frozen
class DialAddr:
    """A TCP address to dial back, its IP in canonical form."""

    ip: str
    port: int

    @property
    def multiaddr(self) -> str:
        return f"/{'ip6' if ':' in self.ip else 'ip4'}/{self.ip}/tcp/{self.port}"


@attrs.frozen
class Answer:
    outcome: Outcome
    reason: str


def encode_request(addrs: Sequence[str]) -> bytes:
    body = "\n".join(addrs).encode()
    if len(addrs) > MAX_ADDRS or len(body) > MAX_REQUEST_BYTES:
        raise BadMessage(f"at most {MAX_ADDRS} addresses in {MAX_REQUEST_BYTES} bytes")
    return len(body).to_bytes(LENGTH_BYTES, "big") + body


def parse_request(body: bytes, requester: str) -> list[DialAddr]:
    """The distinct addresses a request's body names; BadMessage unless each is a TCP address
    over IPv4 or IPv6 of the requester itself, and there are 1 to MAX_ADDRS of them."""
    if len(body) > MAX_REQUEST_BYTES:
        raise BadMessage(f"request of {len(body)} bytes, over {MAX_REQUEST_BYTES}")
    try:
        lines = body.decode().split("\n")
    except UnicodeDecodeError as exc:
        raise BadMessage("request is not UTF-8") from exc
    if not 1 <= len(lines) <= MAX_ADDRS:
        raise BadMessage(f"{len(lines)} addresses, not 1 to {MAX_ADDRS}")
    return list(dict.fromkeys(parse_address(line, requester) for line in lines))


def parse_address(text: str, requester: str) -> DialAddr:
    match = _ADDRESS.fullmatch(text)
    if match is None:
        raise BadMessage(f"{text[:80]!r} is not /ip4|ip6/<ip>/tcp/<port>")
    family, ip_text, port_text, peer = match.groups()
    if peer is not None and peer != requester:
        raise BadMessage(f"{text[:80]!r} names another peer")
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError as exc:
        raise BadMessage(f"{ip_text[:50]!r} is not an IP address") from exc
    scoped = isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None
    wrong = ip.version != (4 if family == "ip4" else 6) or scoped
    if wrong or ip.is_unspecified or ip.is_multicast:
        raise BadMessage(f"{ip_text!r} is not a unicast /{family} address")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise BadMessage(f"port {port} out of range")
    return DialAddr(str(canonical_ip(str(ip))), port)


def encode_answer(answer: Answer) -> bytes:
    reason = answer.reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore").encode()
    return bytes([answer.outcome]) + len(reason).to_bytes(LENGTH_BYTES, "big") + reason


def parse_answer_head(head: bytes) -> tuple[Outcome, int]:
    """The outcome and reason length an answer's first 3 bytes give; BadMessage if out of bounds."""
    if len(head) != 1 + LENGTH_BYTES:
        raise BadMessage("answer cut short")
    try:
        outcome = Outcome(head[0])
    except ValueError as exc:
        raise BadMessage(f"unknown outcome {head[0]}") from exc
    length = int.from_bytes(head[1:], "big")
    if length > MAX_REASON_BYTES:
        raise BadMessage(f"reason of {length} bytes, over {MAX_REASON_BYTES}")
    return outcome, length


def at_ip(addrs: Iterable[DialAddr], observed: str) -> list[DialAddr]:
    """The addresses a dial-back may try: those at `observed`, the IP the requester's
    connection comes from (never another host: no one can aim our dials at a third party)."""
    return [addr for addr in addrs if addr.ip == observed][:MAX_DIALS]


def verdict(outcomes: Iterable[Outcome]) -> bool | None:
    """Public if CONFIRMATIONS peers reached the node; private if as many failed and none did;
    else undecided (None). Refusals count for neither."""
    counts = collections.Counter(outcomes)
    if counts[Outcome.REACHABLE] >= CONFIRMATIONS:
        return True
    if counts[Outcome.REACHABLE] == 0 and counts[Outcome.UNREACHABLE] >= CONFIRMATIONS:
        return False
    return None


class RequestLimits:
    """Which dial-back requests a node takes on: at most one in flight per requester and
    DIALS_IN_FLIGHT in all, PER_PEER_REQUESTS per requester per PER_PEER_WINDOW_S and
    ALL_REQUESTS per ALL_WINDOW_S in all. Only requests taken on count: a refusal costs a read."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, collections.deque[float]] = {}
        self._all: collections.deque[float] = collections.deque()
        self._in_flight: set[Hashable] = set()

    def admit(self, peer: Hashable) -> str | None:
        """None if `peer`'s request may go ahead (then `release` it), else why not."""
        now = trio.current_time()
        _expire(self._all, now - ALL_WINDOW_S)
        for times in list(self._seen.values()):
            _expire(times, now - PER_PEER_WINDOW_S)
        self._seen = {key: times for key, times in self._seen.items() if times}
        times = self._seen.setdefault(peer, collections.deque())
        if peer in self._in_flight:
            return "rate limited: a dial-back for this peer is already under way"
        if len(times) >= PER_PEER_REQUESTS:
            return f"rate limited: {PER_PEER_REQUESTS} requests per {PER_PEER_WINDOW_S:g} s"
        if len(self._all) >= ALL_REQUESTS or len(self._in_flight) >= DIALS_IN_FLIGHT:
            return "rate limited: too many dial-back requests from all peers"
        times.append(now)
        self._all.append(now)
        self._in_flight.add(peer)
        return None

    def release(self, peer: Hashable) -> None:
        self._in_flight.discard(peer)


def _expire(times: collections.deque[float], before: float) -> None:
    while times and times[0] <= before:
        times.popleft()


def choose_peers(
    candidates: Sequence[tuple[str, str]], last_asked: dict[str, float], count: int
) -> list[str]:
    """Up to `count` of `candidates` ((peer, its IP) pairs): one per distinct IP first, then
    more from IPs already chosen; the least recently asked first within each IP."""
    by_ip: dict[str, list[str]] = {}
    for peer, ip in candidates:
        by_ip.setdefault(ip, []).append(peer)
    for peers in by_ip.values():
        peers.sort(key=lambda peer: last_asked.get(peer, float("-inf")))
    chosen: list[str] = []
    while len(chosen) < count and any(by_ip.values()):
        for peers in by_ip.values():
            if peers and len(chosen) < count:
                chosen.append(peers.pop(0))
    return chosen


class CheckSchedule:
    """When a node next checks its reachability: at once, RECHECK_S after a verdict, sooner
    (FIRST_RETRY_S, doubling) after a check without one, and at once when it has peers again
    after having none; never with fewer than CONFIRMATIONS peers to ask."""

    def __init__(self) -> None:
        self._next = float("-inf")
        self._retry_s = FIRST_RETRY_S
        self._alone = False

    def due(self, peers: int) -> bool:
        if peers == 0:
            self._alone = True
            return False
        if self._alone:
            self._alone, self._next, self._retry_s = False, float("-inf"), FIRST_RETRY_S
        return peers >= CONFIRMATIONS and trio.current_time() >= self._next

    def checked(self, decided: bool) -> None:
        if decided:
            self._next, self._retry_s = trio.current_time() + RECHECK_S, FIRST_RETRY_S
        else:
            self._next = trio.current_time() + self._retry_s
            self._retry_s = min(self._retry_s * 2, RECHECK_S)
