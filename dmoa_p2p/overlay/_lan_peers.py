"""The peers mDNS told of on the local network: their addresses and when to dial each again."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

import attrs

from dmoa_p2p.identity import public_key_from_peer_id
from dmoa_p2p.overlay._providers import MAX_EXAMINED, usable_addr

# The service nodes advertise and browse for. Not libp2p's "_p2p._udp.local.": every libp2p
# program on the LAN (an IPFS daemon, say) answers that one, and dialling those gains nothing.
# A name of its own also keeps swarms apart: a node browses for its own name only, so the test
# suite's nodes and `dmoa-p2p swarm`'s (which run with mDNS off unless a test asks for it,
# under a name made for that test) never join each other nor a user's nodes on the same LAN.
MDNS_SERVICE = "dmoa-p2p"
_SERVICE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?")  # DNS-SD: 15 bytes at most
MAX_HEARD = 64  # peers remembered: a crowded (or hostile) LAN cannot grow the table
MAX_ADDRS_TRIED = 4  # per dial of one peer, loopback last
FIRST_RETRY_S = 2.0
MAX_RETRY_S = 300.0


def mdns_service_type(name: str) -> str:
    """The DNS-SD service type of mDNS name `name` ("dmoa-p2p": "_dmoa-p2p._udp.local.")."""
    if not _SERVICE_NAME.fullmatch(name):
        raise ValueError(
            f"an mDNS service name is 1 to 15 lowercase letters, digits or inner '-', not {name!r}"
        )
    return f"_{name}._udp.local."


def lan_addrs(addrs: Sequence[str], most: int = 8) -> list[str]:
    """What to advertise on the LAN of `addrs` (concrete ones, see `concrete_addrs`): the
    non-loopback ones, unless there are none (nodes on one machine then still meet). A peer
    on another machine that dialled 127.0.0.1 would reach itself, or a stranger."""
    reachable = [addr for addr in addrs if not _is_loopback(addr)]
    return (reachable or list(addrs))[:most]


@attrs.define
class _Heard:
    addrs: tuple[str, ...]
    instance: str  # the mDNS service instance that named it
    retry_at: float = 0.0
    backoff_s: float = FIRST_RETRY_S


class HeardPeers:
    """Who to dial, and when, among the peers heard of: never this node, each peer's checked
    addresses (at most MAX_ADDRS_TRIED), a pause after every attempt that doubles on each
    failure up to MAX_RETRY_S, and at most `max_dials` attempts at once."""

    def __init__(self, own_peer_id: str, *, max_dials: int = 3) -> None:
        self._own = own_peer_id
        self._max_dials = max_dials
        self._heard: dict[str, _Heard] = {}
        self.dialling: set[str] = set()

    def __contains__(self, peer_id: str) -> bool:
        return peer_id in self._heard

    def addrs(self, peer_id: str) -> tuple[str, ...]:
        heard = self._heard.get(peer_id)
        return () if heard is None else heard.addrs

    def heard_of(self, instance: str, peer_id: str, addrs: Iterable[str]) -> bool:
        """Note what one mDNS record says; False if it names no peer worth dialling.

        News of a peer (a new record, new addresses) makes it due at once.
        """
        if peer_id == self._own or public_key_from_peer_id(peer_id) is None:
            return False
        usable = [full for a in list(addrs)[:MAX_EXAMINED] if (full := usable_addr(a, peer_id))]
        ordered = sorted(dict.fromkeys(usable), key=_is_loopback)
        if not ordered:
            return False
        if peer_id not in self._heard and len(self._heard) >= MAX_HEARD:
            del self._heard[next(iter(self._heard))]  # the one heard of longest ago
        self._heard[peer_id] = _Heard(tuple(ordered[:MAX_ADDRS_TRIED]), instance)
        return True

    def lost(self, instance: str) -> None:
        """Forget the peer an mDNS record named, now withdrawn (its node stopped)."""
        for peer_id, heard in list(self._heard.items()):
            if heard.instance == instance:
                del self._heard[peer_id]

    def due(self, now: float, connected: Collection[str], room: int) -> list[str]:
        """Peers to dial now, at most `room` (connections still wanted) and within max_dials;
        each is marked as being dialled until `attempted`."""
        room = min(room, self._max_dials - len(self.dialling))
        chosen = [
            peer_id
            for peer_id, heard in self._heard.items()
            if peer_id not in connected and peer_id not in self.dialling and heard.retry_at <= now
        ][: max(room, 0)]
        self.dialling.update(chosen)
        return chosen

    def attempted(self, peer_id: str, connected: bool, now: float) -> None:
        """One dial of `peer_id` ended: pause before the next, longer after each failure."""
        self.dialling.discard(peer_id)
        heard = self._heard.get(peer_id)
        if heard is None:
            return
        if connected:  # checked again later: the connection may close
            heard.retry_at, heard.backoff_s = now + FIRST_RETRY_S, FIRST_RETRY_S
        else:
            heard.retry_at = now + heard.backoff_s
            heard.backoff_s = min(heard.backoff_s * 2, MAX_RETRY_S)


def _is_loopback(addr: str) -> bool:
    return addr.startswith(("/ip4/127.", "/ip6/::1/"))
