"""One node's peer sampling as the node will drive it: wire entries in, wire entries out, no I/O."""

from __future__ import annotations

import collections
import random
from collections.abc import Collection, Iterable, Sequence

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node._sampled_records import RecordVerifier, SignedPresence, issue_signed_presence
from dmoa_p2p.node._sampling import (
    PartialView,
    PendingShuffle,
    SamplingConfig,
    Shuffle,
    ViewEntry,
    eligible_proposers,
    read_entries,
)
from dmoa_p2p.wire import Presence

# own records remembered (a record lives `ttl_s`, 18 rounds by default)
ISSUED_KEPT = 32

# A shuffle on the wire: each record as its author sealed it, and its age in rounds.
WireEntries = tuple[tuple[bytes, int], ...]


class PeerSampler:
    """A partial view kept by shuffles, fed only records whose signatures it checked.

    The node's service calls `begin_round` every `config.round_s` and sends what it returns
    to its partner on a direct stream; hands a request from an authenticated peer to
    `answer` and sends the result back; hands the reply to `complete` (or calls
    `partner_failed`); and calls `end_round` once a round. Times are wall-clock seconds
    (records carry their signer's wall clock). Every record costs at most one signature
    check (`verifier`); a round costs one signature of this node's own.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        config: SamplingConfig,
        *,
        max_future_s: float = 5.0,
    ) -> None:
        self.identity = identity
        self.config = config
        self.verifier = RecordVerifier(config.ttl_s, max_future_s)
        self.view = PartialView(identity.peer_id, config)
        self._own: SignedPresence | None = None
        self._pending: PendingShuffle | None = None
        # this node's own recent records: a record of its id that is none of these was
        # signed by a second node running with the same key
        self._issued: collections.deque[bytes] = collections.deque(maxlen=ISSUED_KEPT)
        self.collisions = 0
        self._answered: set[str] = set()  # senders answered this round
        # each neighbour's latest own record, from its shuffles: proposer candidates
        self._neighbour_records: dict[str, SignedPresence] = {}
        self._unknown_answered = 0  # of them, peers this node never shuffled with
        self.last_collision: SignedPresence | None = None

    @property
    def own(self) -> SignedPresence | None:
        """This node's latest record, the one it hands out."""
        return self._own

    def bootstrap(self, sealed_records: Iterable[bytes], now: float) -> int:
        """Add records learnt outside shuffles (a bootstrap peer's); how many were accepted."""
        records = [r for d in sealed_records if (r := self.verifier.read(d, now)) is not None]
        self.view = self.view.add(records, now)
        return len(records)

    def begin_round(
        self, presence: Presence, now: float, rng: random.Random, partner: str | None = None
    ) -> WireEntries | None:
        """Sign this node's record and choose what to offer `partner` (a connected neighbour;
        None: Cyclon's own choice, the oldest entry, see `partner_of_round`).

        None when there is nobody to shuffle with. A shuffle still pending from the last
        round counts as failed.
        """
        self._own = issue_signed_presence(presence, self.identity, now)
        self._issued.append(self._own.sealed)
        self.view, self._pending = self.view.start_shuffle(self._own, now, rng, partner)
        if self._pending is None:
            return None
        return self._pending.offer.wire_entries()

    def pending_partner(self) -> str | None:
        """The peer this round's shuffle waits for, if any."""
        return None if self._pending is None else self._pending.partner_id

    def answer(
        self,
        sender: str,
        raw: Sequence[tuple[bytes, int]],
        now: float,
        rng: random.Random,
        known: bool = True,
    ) -> WireEntries | None:
        """The reply to `sender`'s shuffle (the peer its stream authenticated); None when this
        round's answer budget is spent (then nothing in `raw` is read, nor verified)."""
        # one answer per sender a round: a neighbour sending request after request takes
        # no more of the round's budget than any other
        if self.view.answered >= self.config.max_answers_per_round or sender in self._answered:
            return None
        # peers this node never shuffled with (newcomers, or made-up identities by the
        # hundred) get half the budget: they cannot starve its neighbours' shuffles
        if not known:
            if self._unknown_answered >= self.config.max_answers_per_round // 2:
                return None
            self._unknown_answered += 1
        self._answered.add(sender)
        entries = self._read(raw, now)
        if entries and entries[0].peer_id == sender:  # a request starts with its sender's own
            self._neighbour_records[sender] = entries[0].record
        request = Shuffle(sender, entries)
        self.view, reply = self.view.answer(request, now, rng, self._own, give_away=known)
        if reply is None:
            return None
        # and so does a reply: the partner keeps it aside (see `eligible`), out of the view
        own = () if self._own is None else ((self._own.sealed, 0),)
        return own + reply.wire_entries()

    def complete(self, partner: str, raw: Sequence[tuple[bytes, int]], now: float) -> bool:
        """Merge the reply of the pending shuffle's partner; False if none was pending for it."""
        pending = self._pending
        if pending is None or pending.partner_id != partner:
            return False
        self._pending = None
        first = self.verifier.read(raw[0][0], now) if raw else None
        if first is not None and first.peer_id == partner:
            self._neighbour_records[partner] = first
            raw = raw[1:]
        entries = self._read(raw, now)
        self.view = self.view.complete(pending, Shuffle(partner, entries), now)
        return True

    def _read(self, raw: Sequence[tuple[bytes, int]], now: float) -> tuple[ViewEntry, ...]:
        entries = read_entries(raw, self.verifier, now, self.config)
        for entry in entries:
            if entry.peer_id == self.identity.peer_id and entry.record.sealed not in self._issued:
                self.collisions += 1
                self.last_collision = entry.record
        return entries

    def partner_failed(self) -> None:
        """The partner did not answer: its entry is gone already, the offer stays."""
        self._pending = None

    def end_round(self) -> None:
        self.view = self.view.next_round()
        self._answered.clear()
        self._unknown_answered = 0

    def eligible(self, now: float, connected: Collection[str] = ()) -> list[SignedPresence]:
        """The verified live records of the view, one per peer; with those of the `connected`
        neighbours (each shuffle brings its sender's own) while view and neighbours together
        name at most half a view's capacity (a swarm that small is drawn from whole), or the
        view holds less than a quarter of it (a node just started).

        Not otherwise: a node with more connections is in more neighbour sets, and every
        task to a peer holds a connection to it a while, so the peers drawn most would be
        drawn ever more (n = 30 at 0.7 λ*: draw shares of 0.83 to 1.18 times the uniform
        one, correlated 0.98 with connections; from the view, 0.89 to 1.08; n = 100, 0.88
        to 1.09)."""
        horizon = now - self.config.ttl_s
        for peer_id, record in list(self._neighbour_records.items()):
            if record.issued_at <= horizon or peer_id not in connected:
                del self._neighbour_records[peer_id]
        view = {r.peer_id: r for r in eligible_proposers(self.view, now)}
        whole = dict(view)
        for peer_id, record in self._neighbour_records.items():
            if peer_id not in whole or record.issued_at > whole[peer_id].issued_at:
                whole[peer_id] = record
        capacity = self.config.capacity
        if len(whole) <= capacity // 2 or len(view) < capacity // 4:
            return list(whole.values())
        return list(view.values())
