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
    PROTOCOL_VERSION,
    MessageGate,
    Presence,
    RejectReason,
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


def test_signature_is_trusted_only_when_the_transport_verified_the_author() -> None:
    tampered = tamper_body(sealed())
    # no transport signature, or one by somebody else: our own check runs and rejects
    for publisher in (None, BOB.peer_id):
        gate = MessageGate(clock=lambda: NOW)
        with pytest.raises(WireError) as info:
            gate.admit(tampered, publisher)
        assert info.value.reason is RejectReason.BAD_SIGNATURE
    # GossipSub strict signing by the author covered these exact bytes already
    gate = MessageGate(clock=lambda: NOW)
    assert gate.admit(tampered, ALICE.peer_id).author == ALICE.peer_id
    # the key must still belong to the claimed author
    with pytest.raises(WireError) as info:
        gate.admit(claiming_bob(sealed()), BOB.peer_id)
    assert info.value.reason is RejectReason.KEY_MISMATCH
