"""Clock skew between peers: the tolerance, and saying so when a peer's clock or ours is off."""

from __future__ import annotations

import logging
from collections import Counter

import trio

from dmoa_p2p.gossip import ClockSkew
from dmoa_p2p.wire import WireError

# how far a message's timestamp may be from this node's clock, either way: a node whose clock
# is off by more is refused by its peers, and told so when it sends them a task or an answer
CLOCK_TOLERANCE_S = 30.0
_LOG_EVERY_S = 60.0  # per peer: a peer must not be able to flood the log
_REMEMBERED = 1024

log = logging.getLogger(__name__)


class ClockWatch:
    """Counts and logs (at most once a minute per peer) what says a clock is off."""

    def __init__(self, events: Counter[str]) -> None:
        self.events = events
        self._logged_at: dict[str, float] = {}

    def refused_by(self, exc: ClockSkew) -> None:
        """A peer refused this node's message as too old or too new."""
        self.events["clock_skew_reported"] += 1
        if self._first_in_a_while(exc.peer_id):
            log.warning(
                "peer %s refused this node's message as %s: this node's clock is off from "
                "the peer's by more than %.0f s; set it right (NTP)",
                exc.peer_id,
                exc.detail,
                CLOCK_TOLERANCE_S,
            )

    def presence_off(self, publisher: str, exc: WireError) -> None:
        """A genuine presence arrived too old or too new for this node."""
        self.events["clock_skew_seen"] += 1
        if self._first_in_a_while(publisher):
            log.warning(
                "a presence from %s is %s: its clock or this node's is off by more than "
                "%.0f s (or the message was replayed); until that is fixed neither uses the "
                "other",
                publisher,
                exc.detail,
                CLOCK_TOLERANCE_S,
            )

    def _first_in_a_while(self, peer_id: str) -> bool:
        now = trio.current_time()
        last = self._logged_at.get(peer_id)
        if last is not None and now - last <= _LOG_EVERY_S:
            return False
        if len(self._logged_at) >= _REMEMBERED:
            self._logged_at.clear()
        self._logged_at[peer_id] = now
        return True
