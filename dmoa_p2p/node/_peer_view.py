"""What a node knows of its peers: their latest presence, expired after missed heartbeats."""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from dmoa_p2p.wire import Presence


@attrs.frozen
class PeerRecord:
    """A peer's latest presence and when (node clock, seconds) it was heard."""

    presence: Presence
    last_seen: float
    expires_at: float

    @property
    def peer_id(self) -> str:
        return self.presence.peer_id


class PeerView:
    """Live peers of one node; a peer that misses `missed_limit` presence periods expires."""

    def __init__(self, self_id: str, missed_limit: float) -> None:
        self.self_id = self_id
        self.missed_limit = missed_limit
        self._records: dict[str, PeerRecord] = {}

    def observe(self, presence: Presence, now: float) -> bool:
        """Record a presence; True when the peer is new (or back after expiring)."""
        if presence.peer_id == self.self_id:
            return False
        previous = self._records.get(presence.peer_id)
        self._records[presence.peer_id] = PeerRecord(
            presence=presence,
            last_seen=now,
            expires_at=now + presence.interval_s * self.missed_limit,
        )
        return previous is None or previous.expires_at <= now

    def expire(self, now: float) -> list[str]:
        """Forget peers whose presence expired; return their ids."""
        gone = [pid for pid, rec in self._records.items() if rec.expires_at <= now]
        for pid in gone:
            del self._records[pid]
        return gone

    def live(self, now: float) -> list[PeerRecord]:
        """Peers heard from recently enough, sorted by peer id."""
        return sorted(
            (rec for rec in self._records.values() if rec.expires_at > now),
            key=lambda rec: rec.peer_id,
        )

    def live_ids(self, now: float) -> frozenset[str]:
        return frozenset(rec.peer_id for rec in self.live(now))

    def __iter__(self) -> Iterator[PeerRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)
