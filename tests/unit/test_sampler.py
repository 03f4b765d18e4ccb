"""A few real PeerSamplers shuffling signed records as bytes, with a lying peer among them."""

from __future__ import annotations

import hashlib
import random

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import (
    PartialView,
    PeerSampler,
    RecordVerifier,
    SamplingConfig,
    WireEntries,
    issue_signed_presence,
)
from dmoa_p2p.wire import Presence, RejectReason, seal

START = 1_700_000_000.0
CONFIG = SamplingConfig(capacity=6, shuffle_length=3, ttl_s=9.0)


def identity(name: str) -> NodeIdentity:
    return NodeIdentity.from_seed(hashlib.sha256(name.encode()).digest())


def presence(peer_id: str) -> Presence:
    return Presence(peer_id, (), ("m",), None, None, 0, 0, 64, None, None, 1.0)


class Liar:
    """Answers every shuffle with records it forged for others and one of a key of its own."""

    def __init__(self, victims: list[str]) -> None:
        self.identity = identity("mallory")
        self.sybil = identity("sybil")  # a real key: its record is genuine, its host is not
        self.victims = victims

    def answer(self, now: float) -> WireEntries:
        forged = [seal(presence(v), self.identity, now=now) for v in self.victims[:2]]
        sybil = issue_signed_presence(presence(self.sybil.peer_id), self.sybil, now).sealed
        return ((forged[0], 0), (forged[1], 0), (sybil, 0))


def run(rounds: int) -> tuple[dict[str, PeerSampler], Liar]:
    names = [identity(f"honest{i}") for i in range(8)]
    samplers = {i.peer_id: PeerSampler(i, CONFIG) for i in names}
    liar = Liar([i.peer_id for i in names])
    liar_record = issue_signed_presence(presence(liar.identity.peer_id), liar.identity, START)
    rng = random.Random(9)
    ids = list(samplers)
    for n, peer_id in enumerate(ids):  # each knows the next one, and the first two the liar
        contact = samplers[ids[(n + 1) % len(ids)]]
        first = issue_signed_presence(presence(ids[(n + 1) % len(ids)]), contact.identity, START)
        known = [first.sealed, liar_record.sealed] if n < 2 else [first.sealed]
        assert samplers[peer_id].bootstrap(known, START) == len(known)
    # each is linked to the next and the one before in a ring, the first two to the liar too
    links = {
        peer_id: [ids[(n + 1) % len(ids)], ids[n - 1]] + [liar.identity.peer_id] * (n < 2)
        for n, peer_id in enumerate(ids)
    }
    for r in range(rounds):
        now = START + r * CONFIG.round_s
        for peer_id in ids:
            sampler = samplers[peer_id]
            partner = links[peer_id][r % len(links[peer_id])]
            offer = sampler.begin_round(presence(peer_id), now, rng, partner)
            if offer is None:
                continue
            if partner == liar.identity.peer_id:
                assert sampler.complete(partner, liar.answer(now), now)
                continue
            if partner not in samplers:  # the sybil: nobody listens at its address
                sampler.partner_failed()
                continue
            reply = samplers[partner].answer(peer_id, offer, now, rng)
            if reply is None:
                sampler.partner_failed()
            else:
                assert sampler.complete(partner, reply, now)
        for sampler in samplers.values():
            sampler.end_round()
    return samplers, liar


def test_honest_samplers_find_each_other_and_hold_only_genuine_records() -> None:
    samplers, liar = run(rounds=12)
    honest = set(samplers)
    now = START + 11 * CONFIG.round_s
    fresh = RecordVerifier(CONFIG.ttl_s)
    for peer_id, sampler in samplers.items():
        assert peer_id not in sampler.view.peer_ids()
        # records move from view to view: 8 peers' records spread over 8 views
        assert sampler.view.entries
        for entry in sampler.view.entries:  # each signed by the peer it names
            record = fresh.read(entry.record.sealed, now)
            assert record is not None and record.peer_id == entry.peer_id
        # bounded work: at most L records read per shuffle message, each checked once
        messages = 12 * (1 + CONFIG.max_answers_per_round)
        assert sampler.verifier.signature_checks <= messages * CONFIG.shuffle_length
    assert sum(s.verifier.refused[RejectReason.KEY_MISMATCH] for s in samplers.values()) > 0
    drawn: set[str] = set()
    rng = random.Random(1)
    for sampler in samplers.values():
        # as a node draws: among its view and its neighbours' own records, those it can reach
        eligible = sampler.eligible(now, honest)
        reachable = [r for r in eligible if r.peer_id in honest]
        for _ in range(20):
            drawn.update(r.peer_id for r in rng.sample(reachable, min(2, len(reachable))))
    # every honest node is drawn; the liar and its sybil (not reachable) never are
    assert drawn == honest
    assert liar.sybil.peer_id not in drawn


def test_a_sampler_with_an_empty_view_asks_for_a_bootstrap() -> None:
    alone = PeerSampler(identity("alone"), CONFIG)
    assert alone.begin_round(presence(alone.identity.peer_id), START, random.Random(1)) is None
    assert alone.own is not None and alone.own.issued_at == START
    assert alone.bootstrap([b"junk"], START) == 0
    assert not alone.complete("someone", (), START)  # no shuffle pending


def test_neighbours_are_drawn_in_a_small_swarm_and_only_the_view_in_a_large_one() -> None:
    """A connected neighbour's own record (brought by its shuffle) is a proposer candidate only
    while view and neighbours name at most half a view's capacity, or the view is nearly
    empty: else the best-connected peers would be drawn most."""
    me = PeerSampler(identity("me"), CONFIG)
    half = CONFIG.capacity // 2
    peers = [identity(f"peer{i}") for i in range(half + 2)]
    records = [issue_signed_presence(presence(p.peer_id), p, START) for p in peers]
    for neighbour, record in zip(peers[2:], records[2:], strict=True):
        # the others shuffle with me, their own record first
        reply = me.answer(neighbour.peer_id, ((record.sealed, 0),), START, random.Random(1))
        assert reply is not None
        me.end_round()
    me.view = PartialView(me.identity.peer_id, CONFIG).add(records[:2], START)  # two peers
    view = {p.peer_id for p in peers[:2]}
    connected = {p.peer_id for p in peers[2:]}
    few = {p.peer_id for p in peers[2 : 2 + half - 2]}
    # more than half a capacity: the view alone
    assert {r.peer_id for r in me.eligible(START, connected)} == view
    # at most (the others' connections closed): view and neighbours together
    assert {r.peer_id for r in me.eligible(START, few)} == view | few
    # no view yet: the neighbours
    alone = PeerSampler(identity("alone"), CONFIG)
    alone.answer(peers[0].peer_id, ((records[0].sealed, 0),), START, random.Random(1))
    alone.view = PartialView(alone.identity.peer_id, CONFIG)
    assert [r.peer_id for r in alone.eligible(START, {peers[0].peer_id})] == [peers[0].peer_id]
