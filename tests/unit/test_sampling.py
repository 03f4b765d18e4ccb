"""Peer sampling's pure core: signed records, Cyclon's shuffle and merge rules, proposer draws."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import attrs
import pytest

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import (
    PartialView,
    RecordVerifier,
    SampleStream,
    SamplingConfig,
    Shuffle,
    SignedPresence,
    ViewEntry,
    choose_proposers,
    eligible_proposers,
    issue_signed_presence,
    read_entries,
)
from dmoa_p2p.wire import Presence, Refusal, RejectReason, seal

NOW = 1_000_000.0
CONFIG = SamplingConfig(capacity=6, shuffle_length=3, ttl_s=10.0, max_answers_per_round=2)


def identity(name: str) -> NodeIdentity:
    return NodeIdentity.from_seed(hashlib.sha256(name.encode()).digest())


def presence(peer_id: str, addrs: tuple[str, ...] = ()) -> Presence:
    return Presence(peer_id, addrs, ("m",), 1.0, 0.1, 8, 0, 64, 0.1, 0.1, 2.0)


def record(peer_id: str, issued_at: float = NOW, addrs: tuple[str, ...] = ()) -> SignedPresence:
    # built directly, as the simulation does: the view trusts what verification let through
    return SignedPresence(presence(peer_id, addrs), issued_at, b"")


def entry(peer_id: str, age: int = 0, issued_at: float = NOW) -> ViewEntry:
    return ViewEntry.of(record(peer_id, issued_at), age)


def view(*entries: ViewEntry, config: SamplingConfig = CONFIG) -> PartialView:
    return PartialView("me", config, tuple(entries))


# ---- records ----------------------------------------------------------------------------


def test_a_record_reads_back_and_is_verified_once() -> None:
    alice = identity("alice")
    issued = issue_signed_presence(presence(alice.peer_id), alice, NOW)
    verifier = RecordVerifier(ttl_s=10.0)
    first = verifier.read(issued.sealed, NOW + 1)
    again = verifier.read(issued.sealed, NOW + 2)
    assert first == issued and again == issued
    assert verifier.signature_checks == 1
    assert not verifier.refused


def test_nobody_can_sign_a_record_for_another_peer() -> None:
    mallory, alice = identity("mallory"), identity("alice")
    forged = seal(presence(alice.peer_id), mallory, now=NOW)  # seal does not look inside
    verifier = RecordVerifier(ttl_s=10.0)
    assert verifier.read(forged, NOW) is None
    assert verifier.refused == Counter({RejectReason.KEY_MISMATCH: 1})
    with pytest.raises(ValueError, match="cannot be issued"):
        issue_signed_presence(presence(alice.peer_id), mallory, NOW)


def test_tampered_stale_future_garbage_and_other_kinds_are_refused() -> None:
    alice = identity("alice")
    sealed = issue_signed_presence(presence(alice.peer_id), alice, NOW).sealed
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])  # the signature's last byte
    refusal = seal(Refusal("q", 1, alice.peer_id, alice.peer_id, "busy", None), alice, now=NOW)
    verifier = RecordVerifier(ttl_s=10.0, max_future_s=5.0)
    assert verifier.read(tampered, NOW) is None
    assert verifier.read(sealed, NOW + 10.0) is None  # exactly one TTL old
    assert verifier.read(sealed, NOW - 5.5) is None
    assert verifier.read(b"\xc1junk", NOW) is None  # 0xc1: no msgpack value
    assert verifier.read(refusal, NOW) is None
    assert verifier.refused == Counter(
        {
            RejectReason.BAD_SIGNATURE: 1,
            RejectReason.STALE: 1,
            RejectReason.FUTURE: 1,
            RejectReason.MALFORMED: 1,
            RejectReason.WRONG_CHANNEL: 1,
        }
    )


def test_a_partner_cannot_put_a_made_up_peer_into_the_choice_of_proposers() -> None:
    alice, mallory = identity("alice"), identity("mallory")
    genuine = issue_signed_presence(presence(alice.peer_id), alice, NOW).sealed
    forged = seal(presence("12D3KooWmadeup"), mallory, now=NOW)
    raw = [(forged, 0), (genuine, 3), (b"junk", 0)]
    entries = read_entries(raw, RecordVerifier(ttl_s=10.0), NOW, CONFIG)
    assert [e.peer_id for e in entries] == [alice.peer_id]
    merged = view().merged(entries, NOW)
    drawn = choose_proposers(merged, 3, NOW, random.Random(1))
    assert [r.peer_id for r in drawn] == [alice.peer_id]


def test_read_entries_takes_at_most_l_and_clamps_ages() -> None:
    peers = [identity(f"p{i}") for i in range(5)]
    sealed = [issue_signed_presence(presence(p.peer_id), p, NOW).sealed for p in peers]
    raw = [(sealed[0], -4), (sealed[1], 10**9), (sealed[2], True), (sealed[3], 1), (sealed[4], 1)]
    entries = read_entries(raw, RecordVerifier(ttl_s=10.0), NOW, CONFIG)  # L = 3
    ages = [(e.peer_id, e.age) for e in entries]
    assert ages == [(peers[0].peer_id, 0), (peers[1].peer_id, 1 << 16)]  # a bool is no age
    offer = Shuffle("me", entries)
    assert offer.wire_entries() == ((sealed[0], 0), (sealed[1], 1 << 16))


# ---- the merge ------------------------------------------------------------------------------


def test_merge_drops_own_id_and_keeps_the_fresher_duplicate() -> None:
    held = view(entry("a", age=5, issued_at=NOW - 4), entry("b", age=1))
    merged = held.merged(
        [entry("me"), entry("a", age=7, issued_at=NOW - 1), entry("b", age=3)], NOW
    )
    assert [(e.peer_id, e.age, e.issued_at) for e in merged.entries] == [
        ("a", 7, NOW - 1),  # fresher record wins, whatever its age
        ("b", 1, NOW),  # equal records: the younger entry stays
    ]


def test_merge_fills_empty_slots_and_drops_the_rest() -> None:
    held = view(*(entry(p) for p in "abcde"))  # capacity 6
    merged = held.merged([entry(p) for p in "xyzw"], NOW)
    assert merged.peer_ids() == ["a", "b", "c", "d", "e", "x"]  # y, z, w: no room
    assert merged.without(["c", "a"]).merged([entry(p) for p in "yzw"], NOW).peer_ids() == [
        "b", "d", "e", "x", "y", "z"
    ]


def test_merge_drops_expired_records_and_caps_records_per_ip() -> None:
    config = attrs.evolve(CONFIG, max_per_ip=2)
    held = view(entry("old", issued_at=NOW - 10.0), config=config)
    crowd = [ViewEntry.of(record(f"s{i}", addrs=("/ip4/10.0.0.9/tcp/1",)), 0) for i in range(4)]
    merged = held.merged([*crowd, entry("late", issued_at=NOW - 11)], NOW)
    assert merged.peer_ids() == ["s0", "s1"]


# ---- a shuffle ------------------------------------------------------------------------------


def test_a_shuffle_ages_the_view_and_starts_with_the_oldest() -> None:
    held = view(
        entry("a", 1, issued_at=NOW - 3),
        entry("b", 4, issued_at=NOW - 5),
        entry("c", 9, issued_at=NOW - 5),
        entry("d", 0, issued_at=NOW - 10),
    )
    after, pending = held.start_shuffle(record("me"), NOW, random.Random(3))
    assert pending is not None
    assert pending.partner_id == "c"  # oldest record (d expired); of equals, the older entry
    assert [(e.peer_id, e.age) for e in after.entries] == [("a", 2), ("b", 5)]
    offered = pending.offer.entries
    assert offered[0].peer_id == "me" and offered[0].age == 0
    assert sorted(e.peer_id for e in offered[1:]) == ["a", "b"]  # L − 1 = 2


def test_a_lied_age_does_not_choose_the_next_partner() -> None:
    held = view(entry("honest", 2, issued_at=NOW - 4), entry("steered", 1 << 16))
    _, pending = held.start_shuffle(record("me"), NOW, random.Random(3))
    assert pending is not None and pending.partner_id == "honest"
    empty, nothing = view().start_shuffle(record("me"), NOW, random.Random(3))
    assert nothing is None and empty.entries == ()


def test_a_shuffle_with_a_neighbour_keeps_its_entry_and_does_not_offer_it_back() -> None:
    held = view(
        entry("a", 1, issued_at=NOW - 3),
        entry("b", 4, issued_at=NOW - 5),  # the oldest: Cyclon's partner, not this one
        entry("c", 2, issued_at=NOW - 2),
        entry("d", 0, issued_at=NOW - 10),
    )
    for seed in range(20):
        after, pending = held.start_shuffle(record("me"), NOW, random.Random(seed), "c")
        assert pending is not None and pending.partner_id == "c"
        assert [(e.peer_id, e.age) for e in after.entries] == [("a", 2), ("b", 5), ("c", 3)]
        offered = pending.offer.entries
        assert offered[0].peer_id == "me" and offered[0].age == 0
        assert sorted(e.peer_id for e in offered[1:]) == ["a", "b"]  # L − 1 = 2, never c
    # a neighbour the view does not hold: nothing leaves, L − 1 of the live entries go
    after, pending = held.start_shuffle(record("me"), NOW, random.Random(1), "z")
    assert pending is not None and pending.partner_id == "z"
    assert after.peer_ids() == ["a", "b", "c"] and len(pending.offer.entries) == 3


def test_a_joiners_first_shuffle_offers_its_own_record_alone() -> None:
    empty, pending = view().start_shuffle(record("me"), NOW, random.Random(3), "contact")
    assert empty.entries == ()
    assert pending is not None and pending.partner_id == "contact"
    assert [(e.peer_id, e.age) for e in pending.offer.entries] == [("me", 0)]
    reply = Shuffle("contact", (entry("contact"), entry("x"), entry("y")))
    assert empty.complete(pending, reply, NOW).peer_ids() == ["contact", "x", "y"]


def test_an_answer_gives_l_entries_and_the_budget_bounds_answers() -> None:
    config = attrs.evolve(CONFIG, reply_with_self=True)
    held = view(*(entry(p) for p in "abcdef"), config=config)
    request = Shuffle("a", (entry("a"), entry("x"), entry("y")))
    rng = random.Random(5)
    answered, reply = held.answer(request, NOW, rng, record("me"))
    assert reply is not None and len(reply.entries) == CONFIG.shuffle_length
    assert reply.entries[0].peer_id == "me"
    assert "a" not in [e.peer_id for e in reply.entries]  # not the requester's own record
    assert {"x", "y"} <= set(answered.peer_ids()) and len(answered.entries) == 6
    twice, second = answered.answer(request, NOW, rng, record("me"))
    third, refused = twice.answer(request, NOW, rng, record("me"))
    assert second is not None and refused is None and third == twice
    started, _ = twice.start_shuffle(record("me"), NOW, rng)
    assert started.answered == 2  # its own shuffle does not renew the budget, a round does
    assert twice.next_round().answered == 0


def test_completing_a_shuffle_replaces_the_entries_offered() -> None:
    held = view(*(entry(p, issued_at=NOW - 6 + i) for i, p in enumerate("fedcba")))
    after, pending = held.start_shuffle(record("me"), NOW, random.Random(2))
    assert pending is not None and pending.partner_id == "f"
    offered = {e.peer_id for e in pending.offer.entries[1:]}
    reply = Shuffle("f", (entry("f"), entry("x"), entry("y")))
    done = after.complete(pending, reply, NOW)
    assert len(done.entries) == CONFIG.capacity
    assert {"f", "x", "y"} <= set(done.peer_ids())
    # f fills the partner's slot; x and y take the places of the two entries offered
    assert offered.isdisjoint(done.peer_ids())


def test_config_bounds() -> None:
    with pytest.raises(ValueError, match="shuffle_length"):
        SamplingConfig(capacity=4, shuffle_length=5)
    with pytest.raises(ValueError, match="ttl_s"):
        SamplingConfig(ttl_s=0.0)


# ---- drawing proposers ----------------------------------------------------------------------


def test_proposers_are_distinct_live_reachable_and_uniform() -> None:
    held = view(*(entry(p) for p in "abcde"), entry("gone", issued_at=NOW - 10))
    rng = random.Random(7)
    counts: Counter[str] = Counter()
    for _ in range(6000):
        drawn = choose_proposers(held, 2, NOW, rng, connectable=lambda pid: pid != "e")
        assert len({r.peer_id for r in drawn}) == 2
        counts.update(r.peer_id for r in drawn)
    assert set(counts) == set("abcd")
    assert all(abs(c - 3000) < 200 for c in counts.values())  # 12000 draws over 4 peers
    assert len(choose_proposers(held, 9, NOW, rng)) == 5  # fewer when fewer


def test_a_sample_stream_is_bounded_fresh_and_adds_candidates() -> None:
    stream = SampleStream(capacity=3, ttl_s=10.0)
    stream.feed([entry("a", issued_at=NOW - 1), entry("me"), entry("b")], "me")
    stream.feed([entry("a", issued_at=NOW - 5), entry("c"), entry("d")], "me")
    assert len(stream) == 3
    assert [(r.peer_id, r.issued_at) for r in stream.live(NOW)] == [
        ("a", NOW - 1),  # the fresher record kept
        ("c", NOW),
        ("d", NOW),
    ]
    assert [r.peer_id for r in stream.live(NOW + 9.5)] == ["c", "d"]
    eligible = eligible_proposers(view(entry("c"), entry("z")), NOW, stream=stream)
    assert [r.peer_id for r in eligible] == ["c", "z", "a", "d"]
