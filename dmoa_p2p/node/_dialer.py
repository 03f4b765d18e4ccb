"""Keeping a node connected: bootstrap peers with backoff, and direct links to peers it hears of."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence

import trio

from dmoa_p2p.logs import EVENTS
from dmoa_p2p.overlay import BadAddress, Overlay, OverlayError, check_peer_address

# A bootstrap peer that went away is redialled at most this long after it is back, so a
# restarted peer is found again within about 5 s. A failed dial costs one TCP connect
# (refused at once, or CONNECT_TIMEOUT_S against a silent host): at most 0.2 dials/s per
# bootstrap address, which no host notices.
MAX_BOOTSTRAP_BACKOFF_S = 5.0
_FIRST_BACKOFF_S = 0.5

log = logging.getLogger(__name__)
events = logging.getLogger(EVENTS)


class DialBudget:
    """How often records may make this node dial: per peer id, per address, and in all.

    A record names addresses its signer can choose; without limits one peer could make every node
    dial an address of its choosing again and again. Each peer id is dialled at most once per
    `per_peer_s`, each address at most once per `per_address_s`, and all dials together at
    `rate_per_s` on average (bursts of `burst`). A dial that reached its peer is not held
    against that peer: it may be dialled again at once, at that address (a proposer drawn
    again after its connection closed), within the overall rate. Memory is bounded: old
    entries are forgotten.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        per_peer_s: float = 30.0,
        per_address_s: float = 60.0,
        rate_per_s: float = 2.0,
        burst: int = 16,
        remembered: int = 4096,
    ) -> None:
        self._clock = clock
        self.per_peer_s = per_peer_s
        self.per_address_s = per_address_s
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._remembered = remembered
        self._peers: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._addresses: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._reached: collections.OrderedDict[str, str] = collections.OrderedDict()  # addr -> peer
        self._tokens = float(burst)
        self._filled_at = clock()
        self.refused: collections.Counter[str] = collections.Counter()

    def allow_peer(self, peer_id: str) -> bool:
        """True (and the dial counted) if `peer_id` may be dialled now."""
        now = self._clock()
        if not _due(self._peers, peer_id, now, self.per_peer_s):
            self.refused["peer_recently_dialled"] += 1
            return False
        self._tokens = min(self.burst, self._tokens + (now - self._filled_at) * self.rate_per_s)
        self._filled_at = now
        if self._tokens < 1:
            self.refused["dial_rate"] += 1
            return False
        self._tokens -= 1
        _remember(self._peers, peer_id, now, self._remembered)
        return True

    def allow_address(self, addr: str, peer_id: str) -> bool:
        """True (and the dial counted) if `addr` may be dialled for `peer_id` now; the address
        is its transport part (host and port), whatever /p2p/<id> a presence puts after it."""
        now = self._clock()
        where = _where(addr)
        if self._reached.get(where) == peer_id:
            return True
        if not _due(self._addresses, where, now, self.per_address_s):
            self.refused["address_recently_dialled"] += 1
            return False
        _remember(self._addresses, where, now, self._remembered)
        return True

    def reached(self, peer_id: str, addr: str) -> None:
        """A dial of `peer_id` at `addr` connected: neither is held against a redial of it."""
        self._peers.pop(peer_id, None)
        where = _where(addr)
        self._reached[where] = peer_id
        self._reached.move_to_end(where)
        while len(self._reached) > self._remembered:
            self._reached.popitem(last=False)


def _where(addr: str) -> str:
    # through a relay, the whole address: the relay's own part is shared by every peer
    return addr if "/p2p-circuit" in addr else addr.split("/p2p/", 1)[0]


def _due(last: collections.OrderedDict[str, float], key: str, now: float, every_s: float) -> bool:
    return key not in last or now - last[key] >= every_s


def _remember(last: collections.OrderedDict[str, float], key: str, now: float, limit: int) -> None:
    last[key] = now
    last.move_to_end(key)
    while len(last) > limit:
        last.popitem(last=False)


class AddressBook:
    """The addresses of the last `size` peers offered as proposers: a peer drawn from the view
    may have left it (shuffled away) by the time its task goes out, and must still be dialled."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._addrs: collections.OrderedDict[str, tuple[str, ...]] = collections.OrderedDict()

    def note(self, peer_id: str, addrs: Sequence[str]) -> None:
        self._addrs[peer_id] = tuple(addrs)
        self._addrs.move_to_end(peer_id)
        while len(self._addrs) > self._size:
            self._addrs.popitem(last=False)

    def get(self, peer_id: str) -> tuple[str, ...]:
        return self._addrs.get(peer_id, ())


class PeerDialer:
    """Dials bootstrap peers until connected (and again while the node has too few
    connections), and peers named by signed records, the latter within a `DialBudget`."""

    def __init__(
        self,
        overlay: Overlay,
        nursery: trio.Nursery,
        check_every_s: float,
        max_peers: int,
        budget: DialBudget | None = None,
        enough: int = 1,
    ) -> None:
        self._overlay = overlay
        self._nursery = nursery
        self._check_every_s = check_every_s
        self._max_peers = max_peers
        self._enough = max(1, enough)  # connections that make bootstrap peers unneeded
        self._dialing: dict[str, trio.Event] = {}  # set when that dial is over
        self.budget = budget or DialBudget(trio.current_time)

    async def keep_connected(self, addr: str) -> None:
        """Dial a bootstrap peer, retrying with exponential backoff, and redial if it drops.

        The user hears once that it is unreachable and why, again only when the reason
        changes, and once when it is reached after that.
        """
        target = check_peer_address(addr)
        backoff = _FIRST_BACKOFF_S
        said: str | None = None  # the reason last told the user
        while True:
            connected = self._overlay.connected_peers()
            # once the node has its neighbours, a bootstrap peer that left need not be back:
            # a swarm of thousands must not all hold a connection to its first node
            if target in connected or len(connected) >= self._enough:
                backoff = _FIRST_BACKOFF_S
                await trio.sleep(self._check_every_s)
                continue
            try:
                await self._overlay.connect(addr)
            except BadAddress as exc:
                events.error("bootstrap peer %s cannot be dialled: %s", addr, _reason(addr, exc))
                return
            except OverlayError as exc:
                reason = _reason(addr, exc)
                log.info("bootstrap %s failed (%s); retrying in %.1f s", addr, reason, backoff)
                if reason != said:
                    events.warning("bootstrap peer %s is unreachable: %s", addr, reason)
                    said = reason
            else:
                log.info("connected to bootstrap peer %s", addr)
                if said is not None:
                    events.info("reached bootstrap peer %s", addr)
                    said = None
                continue
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BOOTSTRAP_BACKOFF_S)

    def dial_known(self, peers: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Dial, once and within the budget, peers this node was connected to before it
        (re)started, so that a restarted node does not wait for others to find it."""
        for peer_id, addrs in peers:
            self._dial_soon(peer_id, addrs)

    def dial_record(self, peer_id: str, addrs: Sequence[str]) -> None:
        """Dial a peer whose signed record names `addrs`, once and within the budget."""
        self._dial_soon(peer_id, addrs)

    async def dial_now(self, peer_id: str, addrs: Sequence[str]) -> None:
        """Dial `peer_id` and return when connected or failed (within the budget; at once when
        the budget says no). A dial to it already under way (a neighbour's, a record's) is
        waited for: returning at once would send a task on a connection not there yet."""
        if (under_way := self._dialing.get(peer_id)) is not None:
            log.debug("waiting for the dial to %s under way", peer_id)
            await under_way.wait()
            return
        addrs = [addr for addr in addrs if not _wildcard(addr)]
        if not addrs or not self.budget.allow_peer(peer_id):
            log.debug("not dialling %s now: %s", peer_id, "over budget" if addrs else "no address")
            return
        self._dialing[peer_id] = trio.Event()
        await self._dial(peer_id, tuple(addrs))

    def _dial_soon(self, peer_id: str, addrs: Sequence[str]) -> None:
        connected = self._overlay.connected_peers()
        if peer_id in connected or peer_id in self._dialing or len(connected) >= self._max_peers:
            return
        addrs = [addr for addr in addrs if not _wildcard(addr)]
        if not addrs:  # none yet (a node behind NAT before its relay answered): keep the budget
            return
        if not self.budget.allow_peer(peer_id):
            return
        self._dialing[peer_id] = trio.Event()
        self._nursery.start_soon(self._dial, peer_id, tuple(addrs))

    async def _dial(self, peer_id: str, addrs: tuple[str, ...]) -> None:
        try:
            for addr in addrs:
                if not self.budget.allow_address(addr, peer_id):
                    continue
                try:
                    reached = await self._overlay.connect(addr)
                except OverlayError as exc:
                    log.debug("dialling %s failed: %s", addr, exc)
                else:
                    log.debug("dialled %s at %s: reached %s", peer_id, addr, reached)
                    if reached == peer_id:  # the address is that peer's, proven by the dial
                        self.budget.reached(peer_id, addr)
                    return
            log.debug("could not dial %s at any of %s", peer_id, addrs)
        finally:
            self._dialing.pop(peer_id).set()


def _wildcard(addr: str) -> bool:
    return "/ip4/0.0.0.0/" in addr or "/ip6/::/" in addr


def _reason(addr: str, exc: OverlayError) -> str:
    """The overlay's error without the address it starts with (the caller names it)."""
    return str(exc).removeprefix(f"cannot connect to {addr!r}: ")
