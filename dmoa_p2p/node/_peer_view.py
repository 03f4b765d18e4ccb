"""What a node knows of its peers: presence, earned by a connection, bounded, expired if silent."""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable

import attrs

from dmoa_p2p.wire import Presence

MAX_PEERS = 256  # verified peers in the view; more than a node can use as proposers
MAX_PENDING = 64  # peers heard of but not yet reached, kept apart
MAX_PER_IP = 8  # records claiming one (non-loopback) IP address, like GossipSub's colocation
_REMEMBERED_VERIFIED = 4096  # peer ids this node has had an authenticated connection with


@attrs.frozen
class PeerRecord:
    """A peer's latest presence, when (node clock, seconds) it was heard, and whether this node
    has completed an authenticated connection to its peer id."""

    presence: Presence
    last_seen: float
    expires_at: float
    verified: bool

    @property
    def peer_id(self) -> str:
        return self.presence.peer_id


def claimed_ip(presence: Presence) -> str | None:
    """The first non-loopback IP the presence claims to listen on, if any.

    Not a relay's: every node behind one relay names the relay's IP, and the relay bounds
    how many nodes it keeps reservations for.
    """
    for addr in presence.listen_addrs:
        if "/p2p-circuit" in addr:
            continue
        parts = addr.split("/")
        if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
            try:
                ip = ipaddress.ip_address(parts[2])
            except ValueError:
                continue
            if not ip.is_loopback:
                return str(ip)
    return None


class PeerView:
    """Live peers of one node; a peer that misses `missed_limit` presence periods expires.

    A presence alone makes a peer *pending*. It joins the view proper (`live`, the proposer
    candidates) only once this node has had an authenticated libp2p connection to that peer
    id (`verify`): a presence signed by a made-up key for an address nobody answers at never
    becomes a proposer. Pending peers are bounded (the oldest make way), the verified ones
    too, and at most `max_per_ip` records may claim one IP address.
    """

    def __init__(
        self,
        self_id: str,
        missed_limit: float,
        *,
        max_peers: int = MAX_PEERS,
        max_pending: int = MAX_PENDING,
        max_per_ip: int = MAX_PER_IP,
    ) -> None:
        self.self_id = self_id
        self.missed_limit = missed_limit
        self.max_peers = max_peers
        self.max_pending = max_pending
        self.max_per_ip = max_per_ip
        self._records: dict[str, PeerRecord] = {}
        self._verified: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.refused: collections.Counter[str] = collections.Counter()  # presences not kept

    def verify(self, peer_ids: Iterable[str]) -> list[str]:
        """Note authenticated connections to `peer_ids`; return the pending peers this promotes."""
        promoted = []
        for peer_id in peer_ids:
            self._verified[peer_id] = None
            self._verified.move_to_end(peer_id)
            record = self._records.get(peer_id)
            if record is not None and not record.verified and self._room_for_verified():
                self._records[peer_id] = attrs.evolve(record, verified=True)
                promoted.append(peer_id)
        while len(self._verified) > _REMEMBERED_VERIFIED:
            self._verified.popitem(last=False)
        return promoted

    def observe(self, presence: Presence, now: float) -> bool:
        """Record a presence; True when it makes a verified peer new (or back after expiring)."""
        peer_id = presence.peer_id
        if peer_id == self.self_id:
            return False
        previous = self._records.get(peer_id)
        verified = peer_id in self._verified
        if previous is None and not self._admissible(presence, verified):
            return False
        if verified and not (previous and previous.verified) and not self._room_for_verified():
            verified = False  # the view is full: it waits with the pending ones
        record = PeerRecord(presence, now, now + presence.interval_s * self.missed_limit, verified)
        self._records[peer_id] = record
        if not verified:
            self._trim_pending()
        was_live = previous is not None and previous.verified and previous.expires_at > now
        return verified and not was_live

    def expire(self, now: float) -> list[str]:
        """Forget peers whose presence expired; return the ids of the verified ones."""
        gone = [pid for pid, rec in self._records.items() if rec.expires_at <= now]
        for pid in gone:
            del self._records[pid]
        return [pid for pid in gone if pid in self._verified]

    def live(self, now: float) -> list[PeerRecord]:
        """Verified peers heard from recently enough, sorted by peer id."""
        return sorted(
            (rec for rec in self._records.values() if rec.verified and rec.expires_at > now),
            key=lambda rec: rec.peer_id,
        )

    def pending(self, now: float) -> list[PeerRecord]:
        """Peers heard of but not reached yet, oldest first."""
        return [r for r in self._records.values() if not r.verified and r.expires_at > now]

    def live_ids(self, now: float) -> frozenset[str]:
        return frozenset(rec.peer_id for rec in self.live(now))

    def __len__(self) -> int:
        return len(self._records)

    def _admissible(self, presence: Presence, verified: bool) -> bool:
        ip = claimed_ip(presence)
        if ip is not None:
            same_ip = sum(claimed_ip(r.presence) == ip for r in self._records.values())
            if same_ip >= self.max_per_ip:
                self.refused["same_ip"] += 1
                return False
        if verified and not self._room_for_verified() and self.max_pending == 0:
            self.refused["view_full"] += 1
            return False
        return True

    def _room_for_verified(self) -> bool:
        return sum(r.verified for r in self._records.values()) < self.max_peers

    def _trim_pending(self) -> None:
        pending = [pid for pid, r in self._records.items() if not r.verified]
        for pid in pending[: max(0, len(pending) - self.max_pending)]:  # oldest first
            del self._records[pid]
            self.refused["pending_full"] += 1
