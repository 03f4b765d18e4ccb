"""MessageGate: authenticity, consistency, freshness, replay and the rejection counters."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import attrs
import msgpack
import pytest

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.wire import (
    MAX_ENVELOPE_BYTES,
    MOA_KINDS,
    PRESENCE_KINDS,
    PROTOCOL_VERSION,
    ChatTurn,
    Envelope,
    MessageGate,
    Presence,
    RejectReason,
    Task,
    WireError,
    decode_envelope,
    encode_envelope,
    seal,
)
from dmoa_p2p.wire.codec import signed_payload

NOW = 1_700_000_000.0
ALICE = NodeIdentity.from_seed(b"a" * 32)
BOB = NodeIdentity.from_seed(b"b" * 32)


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def presence(identity: NodeIdentity = ALICE, **changes: Any) -> Presence:
    fields: dict[str, Any] = {
        "peer_id": identity.peer_id,
        "listen_addrs": ("/ip4/127.0.0.1/tcp/4001",),
        "models": ("llama3.2:1b",),
        "mean_service_s": None,
        "service_var_s2": None,
        "service_samples": 0,
        "queue_length": 0,
        "queue_capacity": 4,
        "arrival_rate": None,
        "admitted_rate": None,
        "interval_s": 5.0,
    }
    fields.update(changes)
    return Presence(**fields)


def sealed(at: float = NOW, identity: NodeIdentity = ALICE, **changes: Any) -> bytes:
    return seal(presence(identity, **changes), identity, at)


def pack(fields: Any) -> bytes:
    data = msgpack.packb(fields, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def with_field(data: bytes, index: int, value: Any) -> bytes:
    fields = msgpack.unpackb(data, raw=False)
    fields[index] = value
    return pack(fields)


def tamper_body(data: bytes) -> bytes:
    at = data.index(b"llama")
    return data[:at] + b"L" + data[at + 1 :]


def claiming_bob(data: bytes) -> bytes:
    env = attrs.evolve(decode_envelope(data), author=BOB.peer_id)
    return encode_envelope(attrs.evolve(env, signature=ALICE.sign(signed_payload(env))))


def rejection(gate: MessageGate, data: bytes) -> RejectReason:
    with pytest.raises(WireError) as info:
        gate.admit(data)
    return info.value.reason


def test_admits_a_genuine_fresh_message() -> None:
    gate = MessageGate(clock=FakeClock())
    env = gate.admit(sealed())
    assert env.body == presence()
    assert env.author == ALICE.peer_id
    assert gate.accepted == 1
    assert gate.rejections == collections.Counter()


BAD_INPUTS: list[tuple[str, Callable[[], bytes], RejectReason]] = [
    ("garbage", lambda: b"\x00\x01", RejectReason.MALFORMED),
    (
        "next version",
        lambda: with_field(sealed(), 0, PROTOCOL_VERSION + 1),
        RejectReason.UNKNOWN_VERSION,
    ),
    ("unknown kind", lambda: with_field(sealed(), 1, "gossip"), RejectReason.UNKNOWN_KIND),
    ("over global cap", lambda: b"\x90" * (MAX_ENVELOPE_BYTES + 1), RejectReason.OVERSIZE),
    (
        "over kind cap",
        lambda: sealed() + b"\x00" * Presence.MAX_BYTES,
        RejectReason.OVERSIZE,
    ),
    ("tampered body", lambda: tamper_body(sealed()), RejectReason.BAD_SIGNATURE),
    ("key A claims author B", lambda: claiming_bob(sealed()), RejectReason.KEY_MISMATCH),
    (
        "presence for another peer",
        lambda: seal(presence(BOB), ALICE, NOW),
        RejectReason.KEY_MISMATCH,
    ),
    ("stale", lambda: sealed(at=NOW - 61), RejectReason.STALE),
    ("future", lambda: sealed(at=NOW + 6), RejectReason.FUTURE),
]


@pytest.mark.parametrize(
    ("make", "reason"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_each_rejection_is_counted_once(make: Callable[[], bytes], reason: RejectReason) -> None:
    gate = MessageGate(clock=FakeClock())
    assert rejection(gate, make()) is reason
    assert gate.rejections == collections.Counter({reason: 1})
    assert gate.accepted == 0
    assert gate.replay_cache_size == 0


def test_same_bytes_twice_is_a_replay() -> None:
    gate = MessageGate(clock=FakeClock())
    data = sealed()
    gate.admit(data)
    assert rejection(gate, data) is RejectReason.REPLAY
    assert gate.accepted == 1
    assert gate.rejections == collections.Counter({RejectReason.REPLAY: 1})


def test_same_nonce_from_another_author_is_not_a_replay() -> None:
    gate = MessageGate(clock=FakeClock())
    nonce = bytes(16)
    gate.admit(seal(presence(ALICE), ALICE, NOW, nonce))
    gate.admit(seal(presence(BOB), BOB, NOW, nonce))
    assert gate.accepted == 2


def test_a_forgery_does_not_poison_the_replay_cache() -> None:
    gate = MessageGate(clock=FakeClock())
    genuine = sealed()
    assert rejection(gate, tamper_body(genuine)) is RejectReason.BAD_SIGNATURE
    assert gate.admit(genuine).body == presence()


def test_freshness_bounds_are_inclusive() -> None:
    gate = MessageGate(clock=FakeClock(), freshness_s=60.0, max_future_s=5.0)
    gate.admit(sealed(at=NOW - 60))
    gate.admit(sealed(at=NOW + 5))
    assert gate.accepted == 2


def test_counters_accumulate_across_messages() -> None:
    gate = MessageGate(clock=FakeClock())
    data = sealed()
    gate.admit(data)
    gate.admit(sealed())
    for bad in (data, data, sealed(at=NOW - 100), b""):
        with pytest.raises(WireError):
            gate.admit(bad)
    assert gate.accepted == 2
    assert gate.rejections == collections.Counter(
        {RejectReason.REPLAY: 2, RejectReason.STALE: 1, RejectReason.MALFORMED: 1}
    )


def test_replay_cache_stays_bounded_under_a_flood() -> None:
    gate = MessageGate(clock=FakeClock(), replay_capacity=8)
    for _ in range(100):
        gate.admit(sealed())
    assert gate.accepted == 100
    assert gate.replay_cache_size == 8
    assert gate.replay_evictions == 92


def test_eviction_lets_an_evicted_fresh_message_through() -> None:
    # the documented cost of a bounded cache; raising the capacity avoids it
    gate = MessageGate(clock=FakeClock(), replay_capacity=2)
    first = sealed()
    gate.admit(first)
    gate.admit(sealed())
    assert rejection(gate, first) is RejectReason.REPLAY
    gate.admit(sealed())
    assert gate.admit(first).body == presence()


def test_stale_entries_are_forgotten_and_stay_rejected() -> None:
    clock = FakeClock()
    gate = MessageGate(clock=clock, replay_capacity=1000)
    old = [sealed() for _ in range(10)]
    for data in old:
        gate.admit(data)
    assert gate.replay_cache_size == 10
    clock.now += 61
    gate.admit(sealed(at=clock.now))
    assert gate.replay_cache_size == 1
    assert gate.replay_evictions == 0
    assert rejection(gate, old[0]) is RejectReason.STALE


@pytest.mark.parametrize(
    "kwargs",
    [{"freshness_s": 0.0}, {"max_future_s": -1.0}, {"replay_capacity": 0}],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MessageGate(**kwargs)


def task(identity: NodeIdentity = ALICE) -> Task:
    return Task(
        query_id="q1",
        layer=1,
        origin=identity.peer_id,
        recipient=BOB.peer_id,
        messages=(ChatTurn("user", "hello"),),
        max_tokens=256,
        temperature=0.7,
        seed=7,
        deadline_s=300.0,
    )


def test_the_signature_is_verified_even_when_the_author_published() -> None:
    # the transport's own signature is the overlay's business: ours is checked regardless
    tampered = tamper_body(sealed())
    # another publisher is refused first, before the signature is worth checking
    cases = {
        None: RejectReason.BAD_SIGNATURE,
        ALICE.peer_id: RejectReason.BAD_SIGNATURE,
        BOB.peer_id: RejectReason.WRONG_PUBLISHER,
    }
    for publisher, reason in cases.items():
        gate = MessageGate(clock=FakeClock())
        with pytest.raises(WireError) as info:
            gate.admit(tampered, publisher)
        assert info.value.reason is reason
        assert gate.rejections == collections.Counter({reason: 1})
        assert gate.replay_cache_size == 0


def test_a_precheck_vouched_for_by_the_channel_runs_before_the_signature() -> None:
    seen: list[str] = []

    def over_rate(env: Envelope) -> None:
        seen.append(env.author)
        raise WireError(RejectReason.OVER_FAIR_RATE, f"{env.author} sends too much")

    tampered = tamper_body(sealed())
    gate = MessageGate(clock=FakeClock())
    # the channel authenticated Alice: refused for her rate, no signature checked
    with pytest.raises(WireError) as info:
        gate.admit(tampered, ALICE.peer_id, precheck=over_rate)
    assert info.value.reason is RejectReason.OVER_FAIR_RATE and seen == [ALICE.peer_id]
    # no channel vouches: the author is believed only once the signature holds
    with pytest.raises(WireError) as info:
        gate.admit(tampered, None, precheck=over_rate)
    assert info.value.reason is RejectReason.BAD_SIGNATURE and seen == [ALICE.peer_id]
    with pytest.raises(WireError) as info:
        gate.admit(sealed(), None, precheck=over_rate)
    assert info.value.reason is RejectReason.OVER_FAIR_RATE and len(seen) == 2
    assert gate.replay_cache_size == 0  # nothing refused is remembered


def test_the_key_must_belong_to_the_author_whoever_published() -> None:
    gate = MessageGate(clock=FakeClock())
    with pytest.raises(WireError) as info:
        gate.admit(claiming_bob(sealed()), BOB.peer_id)
    assert info.value.reason is RejectReason.KEY_MISMATCH


def test_a_message_republished_by_another_peer_does_not_take_the_authors_place() -> None:
    gate = MessageGate(clock=FakeClock())
    data = sealed()
    with pytest.raises(WireError) as info:
        gate.admit(data, BOB.peer_id)
    assert info.value.reason is RejectReason.WRONG_PUBLISHER
    # not remembered: the author's own copy still gets through, once
    assert gate.admit(data, ALICE.peer_id).author == ALICE.peer_id
    assert rejection(gate, data) is RejectReason.REPLAY
    assert gate.rejections == collections.Counter(
        {RejectReason.WRONG_PUBLISHER: 1, RejectReason.REPLAY: 1}
    )


def test_off_pubsub_there_is_no_publisher_to_compare() -> None:
    gate = MessageGate(clock=FakeClock())
    assert gate.admit(sealed(), None).author == ALICE.peer_id


def test_each_channel_admits_its_own_kinds() -> None:
    gate = MessageGate(clock=FakeClock())
    assert isinstance(gate.admit(sealed(), ALICE.peer_id, PRESENCE_KINDS).body, Presence)
    assert isinstance(gate.admit(seal(task(), ALICE, NOW), None, MOA_KINDS).body, Task)
    assert gate.accepted == 2


@pytest.mark.parametrize(
    ("make", "kinds"),
    [
        (lambda: sealed(), MOA_KINDS),
        (lambda: seal(task(), ALICE, NOW), PRESENCE_KINDS),
        # rejected before the signature is even checked
        (lambda: tamper_body(sealed()), MOA_KINDS),
    ],
    ids=["presence on the moa channel", "task on the presence topic", "tampered and misplaced"],
)
def test_a_kind_on_the_wrong_channel_is_rejected_and_counted(
    make: Callable[[], bytes], kinds: tuple[type[Any], ...]
) -> None:
    gate = MessageGate(clock=FakeClock())
    with pytest.raises(WireError) as info:
        gate.admit(make(), ALICE.peer_id, kinds)
    assert info.value.reason is RejectReason.WRONG_CHANNEL
    assert gate.rejections == collections.Counter({RejectReason.WRONG_CHANNEL: 1})
    assert gate.accepted == 0
    assert gate.replay_cache_size == 0


def test_without_kinds_every_kind_is_admitted() -> None:
    gate = MessageGate(clock=FakeClock())
    gate.admit(sealed())
    gate.admit(seal(task(), ALICE, NOW))
    assert gate.accepted == 2
