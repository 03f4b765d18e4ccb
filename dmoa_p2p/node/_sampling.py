"""Cyclon-style peer sampling: a bounded partial view, shuffles, merging, and proposer draws.

Pure and deterministic: functions take a view, records, the time and a `random.Random`, and
return a new view and what to send; nothing here does I/O or knows trio.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterable, Sequence

import attrs

from dmoa_p2p.node._sampled_records import RecordVerifier, SignedPresence

MAX_CAPACITY = 256  # a view larger than this is all-to-all presence again
MAX_AGE = 1 << 16  # rounds; no partner's claim is taken above this


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be above 0, not {value}")


@attrs.frozen
class SamplingConfig:
    """Capacity C, shuffle length L, round period and record lifetime of a partial view.

    A peer is drawn for at most `ttl_s` after its last record, so the TTL bounds how long a
    crashed peer is still chosen. A record lives in the swarm about C rounds before shuffles
    push it out; with a TTL below `round_s`·C views run partly empty and their in-degrees
    spread, so the defaults shuffle twice a second (measured in tests/unit/test_sampling_swarm.py).
    """

    capacity: int = attrs.field(default=20, validator=attrs.validators.in_(range(1, 257)))
    shuffle_length: int = attrs.field(default=8)
    round_s: float = attrs.field(default=0.5, validator=_positive)
    ttl_s: float = attrs.field(default=9.0, validator=_positive)
    # shuffle requests answered per round; more are refused, so a popular node's cost is bounded
    max_answers_per_round: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    # a responder puts its own fresh record in its reply: twice the fresh records a round, but
    # a node answering often is then held by more views, answers more... (in-degrees spread)
    reply_with_self: bool = False
    max_per_ip: int = attrs.field(default=8, validator=attrs.validators.ge(1))

    @shuffle_length.validator
    def _check_length(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if not 1 <= value <= self.capacity:
            raise ValueError(f"shuffle_length must be in 1..{self.capacity}, not {value}")


@attrs.frozen
class ViewEntry:
    """One slot of a view: a peer's verified record and the rounds it has been passed around."""

    record: SignedPresence
    age: int
    # copies of the record's, which merges and draws read for every entry; see `of`
    peer_id: str
    issued_at: float

    @classmethod
    def of(cls, record: SignedPresence, age: int) -> ViewEntry:
        return cls(record, age, record.peer_id, record.issued_at)


@attrs.frozen
class Shuffle:
    """What a node sends in a shuffle (request or reply): at most L verified entries."""

    sender: str
    entries: tuple[ViewEntry, ...]

    def wire_entries(self) -> tuple[tuple[bytes, int], ...]:
        """Each record as its author sealed it, with its age: what goes on a direct stream."""
        return tuple((entry.record.sealed, entry.age) for entry in self.entries)


@attrs.frozen
class PendingShuffle:
    """A shuffle this node started: with whom, and the entries offered (given up once the
    partner answers)."""

    partner_id: str
    offer: Shuffle


def read_entries(
    raw: Sequence[tuple[bytes, int]],
    verifier: RecordVerifier,
    now: float,
    config: SamplingConfig,
) -> tuple[ViewEntry, ...]:
    """The verified entries of a partner's shuffle; at most L are read, the rest ignored.

    Only records whose signature holds become entries: a partner can pass on records,
    never make them, so it cannot put a peer into this node's choice of proposers. The age
    is the one unsigned figure; it only breaks ties (see `PartialView.start_shuffle`).
    """
    entries = []
    for sealed, age in raw[: config.shuffle_length]:
        if type(sealed) is not bytes or type(age) is not int:
            continue
        record = verifier.read(sealed, now)
        if record is not None:
            entries.append(ViewEntry.of(record, min(max(age, 0), MAX_AGE)))
    return tuple(entries)


@attrs.frozen
class PartialView:
    """At most C entries, one per peer, never this node's own; immutable."""

    self_id: str
    config: SamplingConfig
    entries: tuple[ViewEntry, ...] = ()
    answered: int = 0  # shuffle requests answered this round

    def peer_ids(self) -> list[str]:
        return [entry.peer_id for entry in self.entries]

    def live(self, now: float) -> list[ViewEntry]:
        """Entries whose record is younger than the TTL, in view order."""
        horizon = now - self.config.ttl_s
        return [e for e in self.entries if e.issued_at > horizon]

    def add(self, records: Iterable[SignedPresence], now: float) -> PartialView:
        """Merge records learnt outside shuffles (a bootstrap peer's, a joiner's) at age 0."""
        return self.merged([ViewEntry.of(record, 0) for record in records], now)

    def start_shuffle(
        self, own: SignedPresence, now: float, rng: random.Random, partner: str | None = None
    ) -> tuple[PartialView, PendingShuffle | None]:
        """A new round: ages grow, stale entries go, and the shuffle with `partner` starts.

        `partner` is a connected neighbour's peer id: its entry, if any, stays in the view
        (the link, not the view, says it is there) and is not offered back to it. Without
        one, Cyclon's rule: the oldest entry's peer is the partner and its entry leaves the
        view (if it answers, its reply brings fresher news; if it is gone, so is its slot).
        Oldest by the record's signed issue time, then by age: a partner can lie about an
        age, not about a signature, so it cannot make a record look old to steer this
        node's next shuffle. (Cyclon's age counts rounds since the peer made its entry;
        the issue time is that count, signed.)

        The offer is this node's fresh record at age 0 and L − 1 random others. None when
        no partner is given and the view is empty; with a partner and an empty view the
        offer is the own record alone (a joiner's first shuffle, with its contact).
        """
        horizon = now - self.config.ttl_s
        aged = [  # one round older; this runs for every entry of every view each round
            ViewEntry(e.record, e.age + 1, e.peer_id, e.issued_at)
            for e in self.entries
            if e.issued_at > horizon
        ]
        if partner is None:
            if not aged:
                return PartialView(self.self_id, self.config, (), self.answered), None
            oldest = 0
            for i, entry in enumerate(aged):  # the first of equals
                if _older(entry, aged[oldest]):
                    oldest = i
            partner = aged.pop(oldest).peer_id
            others = aged
        else:
            others = [e for e in aged if e.peer_id != partner]
        sent = rng.sample(others, min(self.config.shuffle_length - 1, len(others)))
        offer = Shuffle(self.self_id, (ViewEntry.of(own, 0), *sent))
        view = PartialView(self.self_id, self.config, tuple(aged), self.answered)
        return view, PendingShuffle(partner, offer)

    def answer(
        self,
        request: Shuffle,
        now: float,
        rng: random.Random,
        own: SignedPresence | None = None,
        give_away: bool = True,
    ) -> tuple[PartialView, Shuffle | None]:
        """Answer a partner's shuffle with L entries and merge its own; None over the budget.

        `own` (with `reply_with_self`) takes one of the L places, at age 0. Without
        `give_away` (a stranger asks) the entries sent stay unless room is short: a peer
        asking again and again could otherwise empty the view.
        """
        if self.answered >= self.config.max_answers_per_round:
            return self, None
        live = [e for e in self.live(now) if e.peer_id != request.sender]
        fresh = [ViewEntry.of(own, 0)] if own is not None and self.config.reply_with_self else []
        count = min(self.config.shuffle_length - len(fresh), len(live))
        sent = rng.sample(live, count)
        given = [e.peer_id for e in sent]
        if give_away:  # as many as it got: garbage back cannot empty the view
            view = self.without(given[: len(request.entries)]).merged(request.entries, now)
        else:
            view = self.merged(request.entries, now, replaceable=given)
        view = attrs.evolve(view, answered=self.answered + 1)
        return view, Shuffle(self.self_id, (*fresh, *sent))

    def complete(self, pending: PendingShuffle, reply: Shuffle, now: float) -> PartialView:
        """Give up the entries offered to the partner and merge its reply."""
        offered = [e.peer_id for e in pending.offer.entries[1:]]  # [0] is this node's own
        return self.without(offered[: len(reply.entries)]).merged(reply.entries, now)

    def without(self, peer_ids: Sequence[str]) -> PartialView:
        """The view less the entries of `peer_ids`. A shuffle gives away what it sends: a
        record passed on is moved, not copied, so no record is held by more views than its
        peer put it in (when copies stay behind, the records most held are copied most,
        in-degrees spread and the choice of proposers leaves uniform)."""
        gone = set(peer_ids)
        kept = tuple(e for e in self.entries if e.peer_id not in gone)
        return PartialView(self.self_id, self.config, kept, self.answered)

    def next_round(self) -> PartialView:
        """Forget how many requests were answered: the budget is per round."""
        return attrs.evolve(self, answered=0)

    def merged(
        self, received: Sequence[ViewEntry], now: float, replaceable: Sequence[str] = ()
    ) -> PartialView:
        """Cyclon's merge: never this node's id; of two entries for one peer, the fresher;
        new peers fill empty slots, then take the place of `replaceable` entries, in order;
        the rest are dropped. (A shuffle with a neighbour gives up what it sent first, see
        `without`, and replaces nothing.)"""
        horizon = now - self.config.ttl_s
        slots = {e.peer_id: e for e in self.entries if e.issued_at > horizon}
        spare = [peer_id for peer_id in replaceable if peer_id in slots]
        per_ip: dict[str, int] | None = None  # counted once a received record names an IP
        for entry in received:
            pid = entry.peer_id
            if pid == self.self_id or entry.issued_at <= horizon:
                continue
            current = slots.get(pid)
            if current is not None:
                if _fresher(entry, current):
                    slots[pid] = entry
                continue
            while len(slots) >= self.config.capacity and spare:
                slots.pop(spare.pop(0), None)
            if len(slots) >= self.config.capacity:
                continue
            ip = entry.record.ip
            if ip is not None:
                per_ip = _ip_counts(slots.values()) if per_ip is None else per_ip
                if per_ip.get(ip, 0) >= self.config.max_per_ip:
                    continue  # many records naming one address: likely one host's many keys
                per_ip[ip] = per_ip.get(ip, 0) + 1
            slots[pid] = entry
        return PartialView(self.self_id, self.config, tuple(slots.values()), self.answered)


def _older(entry: ViewEntry, than: ViewEntry) -> bool:
    if entry.issued_at != than.issued_at:
        return entry.issued_at < than.issued_at
    return entry.age > than.age


def _fresher(entry: ViewEntry, than: ViewEntry) -> bool:
    if entry.issued_at != than.issued_at:
        return entry.issued_at > than.issued_at
    return entry.age < than.age


def _ip_counts(entries: Iterable[ViewEntry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        if entry.record.ip is not None:
            counts[entry.record.ip] = counts.get(entry.record.ip, 0) + 1
    return counts


# Whether this node could reach a peer (has had an authenticated connection to it); the node
# wires this to its overlay. Until then every verified record counts.
Connectable = Callable[[str], bool]


def eligible_proposers(
    view: PartialView,
    now: float,
    connectable: Connectable | None = None,
    stream: SampleStream | None = None,
) -> list[SignedPresence]:
    """The live records of the view, then of `stream`, one per peer, that pass `connectable`.

    Every record in a view or stream was verified on receipt, so only peers that signed
    their own record can be drawn.
    """
    candidates = {e.peer_id: e.record for e in view.live(now)}
    if stream is not None:
        for record in stream.live(now):
            candidates.setdefault(record.peer_id, record)
    return [
        record for pid, record in candidates.items() if connectable is None or connectable(pid)
    ]


def choose_proposers(
    view: PartialView,
    count: int,
    now: float,
    rng: random.Random,
    connectable: Connectable | None = None,
    stream: SampleStream | None = None,
) -> list[SignedPresence]:
    """`count` distinct peers drawn uniformly among `eligible_proposers`; fewer if fewer."""
    eligible = eligible_proposers(view, now, connectable, stream)
    return rng.sample(eligible, min(count, len(eligible)))


class SampleStream:
    """The last `capacity` distinct peers whose verified records passed through shuffles.

    A peer held by many views passes by more often than one held by few, but counts once
    here: drawing from these (with the view) is closer to uniform than the view alone.
    Records expire by the same TTL as the view's; memory is bounded by `capacity`.
    """

    def __init__(self, capacity: int, ttl_s: float) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._records: collections.OrderedDict[str, SignedPresence] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def feed(self, entries: Iterable[ViewEntry], self_id: str) -> None:
        """Note the entries of one shuffle message (already verified)."""
        for entry in entries:
            pid = entry.peer_id
            if pid == self_id:
                continue
            known = self._records.pop(pid, None)
            fresher = known is None or entry.issued_at > known.issued_at
            self._records[pid] = entry.record if fresher or known is None else known
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)

    def live(self, now: float) -> list[SignedPresence]:
        horizon = now - self.ttl_s
        return [record for record in self._records.values() if record.issued_at > horizon]
