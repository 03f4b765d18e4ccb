"""What the user must hear (model loaded, swarm joined, all peers lost) and the peers it keeps."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import trio

from dmoa_p2p.backends import Backend, load_backend
from dmoa_p2p.logs import EVENTS
from dmoa_p2p.node._dialer import PeerDialer
from dmoa_p2p.node._known_peers import KnownPeers
from dmoa_p2p.node._sampled_records import SignedPresence
from dmoa_p2p.overlay import BadAddress, Overlay, address_host, check_peer_address

events = logging.getLogger(EVENTS)

# checks (one per presence interval) a non-empty view may keep growing before it is reported
_MAX_SETTLE_CHECKS = 3
SAVE_KNOWN_PEERS_S = 30.0  # how often the remembered peers are written, if they changed


class SwarmWatch:
    """Told the number of live peers once per presence interval, says when the node joins the
    swarm and when it loses all its peers, each once per change.

    A joining node meets its peers one presence at a time: "joined" waits until the count
    held still for one check (or `_MAX_SETTLE_CHECKS` passed) so it names the swarm's size,
    not the first peer heard.
    """

    def __init__(self, live_count: Callable[[], int]) -> None:
        self._live_count = live_count
        self.joined = False
        self._last = 0
        self._growing = 0  # checks since the view became non-empty, while not joined

    def check(self) -> None:
        count = self._live_count()
        if self.joined:
            if count == 0:
                self.joined = False
                events.warning(
                    "lost all peers: this node is alone until a bootstrap or remembered peer "
                    "answers, or a peer dials it"
                )
        elif count > 0:
            self._growing += 1
            if count == self._last or self._growing >= _MAX_SETTLE_CHECKS:
                self.joined = True
                self._growing = 0
                events.info("joined the swarm: %d peer%s", count, "" if count == 1 else "s")
        else:
            self._growing = 0
        self._last = count


class PeerKeeper:
    """Once per presence interval: tells the user of joins and losses (`SwarmWatch`),
    remembers the peers the node is connected to (`KnownPeers`, saved now and then) and
    redials remembered ones while the node has no peer at all."""

    def __init__(
        self,
        overlay: Overlay,
        records: Callable[[], Sequence[SignedPresence]],
        known: KnownPeers,
        interval_s: float,
        wall_clock: Callable[[], float],
        events: Counter[str],
    ) -> None:
        self._overlay = overlay
        self._records = records
        self.known = known
        self._interval_s = interval_s
        self._wall_clock = wall_clock
        self.watch = SwarmWatch(lambda: len(records()))
        self._events = events
        self._live: frozenset[str] = frozenset()

    async def run(self, dialer: PeerDialer, has_bootstrap: bool) -> None:
        dialer.dial_known(self.known.peers())
        if not has_bootstrap and not len(self.known):
            events.info("no bootstrap peer given and none remembered: waiting to be dialled")
        saved_at = redialled_at = trio.current_time()
        while True:
            await trio.sleep(self._interval_s)
            now = trio.current_time()
            self.watch.check()
            self._count_changes()
            connected = self._overlay.connected_peers()
            for record in self._records():
                if record.peer_id in connected:
                    own = own_addresses(self._overlay, record.peer_id, record.presence.listen_addrs)
                    self.known.remember(record.peer_id, own, self._wall_clock())
            # no sooner than the budget would allow each peer again (no refusals counted)
            if not connected and now - redialled_at >= dialer.budget.per_peer_s:
                dialer.dial_known(self.known.peers())
                redialled_at = now
            if now - saved_at >= SAVE_KNOWN_PEERS_S:
                await self.known.save()
                saved_at = now


    def _count_changes(self) -> None:
        """Peers that came into the sample, and peers that left it, since the last check."""
        live = frozenset(record.peer_id for record in self._records())
        self._events["peer_joined"] += len(live - self._live)
        self._events["peer_expired"] += len(self._live - live)
        self._live = live


def own_addresses(overlay: Overlay, peer_id: str, claimed: Iterable[str]) -> tuple[str, ...]:
    """Those of `claimed` (a connected peer's own list) that end in /p2p/`peer_id` and name
    the IP its live connection comes from: all a peer can make this node remember and dial
    later are ports of its own host."""
    host = overlay.remote_host(peer_id)
    if host is None:
        return ()
    return tuple(addr for addr in claimed if _names(addr, peer_id, host))


def _names(addr: str, peer_id: str, host: str) -> bool:
    try:
        return check_peer_address(addr) == peer_id and address_host(addr) == host
    except BadAddress:
        return False


def load_backend_announced(name: str, options: Mapping[str, str]) -> Backend:
    """`backends.load_backend`, and the user told which model it loaded and how fast."""
    started = time.monotonic()
    backend = load_backend(name, options)
    elapsed = time.monotonic() - started
    events.info("model %s loaded in %.1f s (backend %s)", backend.model_name, elapsed, name)
    return backend
