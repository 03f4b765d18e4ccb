"""Envelope encoding, sealing, verification and decode-side rejections."""

from __future__ import annotations

import math
import struct
from typing import Any

import attrs
import msgpack
import pytest

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.wire import (
    MAX_ENVELOPE_BYTES,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Presence,
    RejectReason,
    WireError,
    decode_envelope,
    encode_envelope,
    limits,
    seal,
    verify_envelope,
)
from dmoa_p2p.wire.codec import signed_payload

NOW = 1_700_000_000.0
NONCE = bytes(range(16))
ALICE = NodeIdentity.from_seed(b"a" * 32)
BOB = NodeIdentity.from_seed(b"b" * 32)


def presence(identity: NodeIdentity = ALICE, **changes: Any) -> Presence:
    fields: dict[str, Any] = {
        "peer_id": identity.peer_id,
        "listen_addrs": ("/ip4/127.0.0.1/tcp/4001",),
        "models": ("llama3.2:1b", "qwen2.5:0.5b"),
        "mean_service_s": 2.5,
        "service_var_s2": 0.25,
        "service_samples": 64,
        "queue_length": 1,
        "queue_capacity": 8,
        "arrival_rate": 0.1,
        "admitted_rate": 0.05,
        "interval_s": 5.0,
    }
    fields.update(changes)
    return Presence(**fields)


def wire_fields(data: bytes) -> list[Any]:
    fields = msgpack.unpackb(data, raw=False)
    assert isinstance(fields, list)
    return fields


def pack(fields: Any) -> bytes:
    data = msgpack.packb(fields, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def reason_of(data: bytes) -> RejectReason:
    with pytest.raises(WireError) as info:
        decode_envelope(data)
    return info.value.reason


def verify_reason(data: bytes) -> RejectReason:
    env = decode_envelope(data)
    with pytest.raises(WireError) as info:
        verify_envelope(env)
    return info.value.reason


MAXIMAL = presence(
    peer_id="p" * 128,
    listen_addrs=tuple("a" * 256 for _ in range(16)),
    models=tuple("m" * 128 for _ in range(16)),
    mean_service_s=limits.MAX_SERVICE_S,
    service_var_s2=limits.MAX_SERVICE_VAR_S2,
    service_samples=limits.MAX_SERVICE_SAMPLES,
    queue_length=limits.MAX_QUEUE_CAPACITY,
    queue_capacity=limits.MAX_QUEUE_CAPACITY,
    arrival_rate=limits.MAX_RATE_PER_S,
    admitted_rate=limits.MAX_RATE_PER_S,
    interval_s=limits.MAX_INTERVAL_S,
)


@pytest.mark.parametrize(
    "body",
    [
        presence(),
        presence(listen_addrs=(), models=()),
        presence(mean_service_s=None, service_var_s2=None, arrival_rate=None),
        presence(mean_service_s=0.0, queue_length=0, queue_capacity=1, interval_s=0.1),
        presence(models=("ünïcödé-模型",), arrival_rate=1000),
        MAXIMAL,
    ],
)
def test_round_trip(body: Presence) -> None:
    data = seal(body, ALICE, NOW, NONCE)
    env = decode_envelope(data)
    verify_envelope(env)
    assert env.body == body
    assert (env.version, env.kind, env.author) == (PROTOCOL_VERSION, "presence", ALICE.peer_id)
    assert (env.author_key, env.timestamp, env.nonce) == (ALICE.public_key, NOW, NONCE)
    assert len(data) <= Presence.MAX_BYTES


def test_ints_given_for_floats_are_stored_as_floats() -> None:
    body = presence(mean_service_s=3, interval_s=5)
    assert type(body.mean_service_s) is float
    assert type(body.interval_s) is float
    assert decode_envelope(seal(body, ALICE, 1_700_000_000, NONCE)).body == body


def test_same_envelope_gives_same_bytes() -> None:
    first = seal(presence(), ALICE, NOW, NONCE)
    assert seal(presence(), ALICE, NOW, NONCE) == first
    assert encode_envelope(decode_envelope(first)) == first


def test_nonce_is_random_when_not_given() -> None:
    nonces = {decode_envelope(seal(presence(), ALICE, NOW)).nonce for _ in range(4)}
    assert len(nonces) == 4


def test_body_map_keys_are_sorted() -> None:
    body = wire_fields(seal(presence(), ALICE, NOW, NONCE))[6]
    assert list(body) == sorted(body)
    assert len(body) == len(attrs.fields(Presence))


def test_registry_is_consistent() -> None:
    assert MESSAGE_TYPES["presence"] is Presence
    for kind, cls in MESSAGE_TYPES.items():
        assert kind == cls.KIND
        assert cls.MAX_BYTES <= MAX_ENVELOPE_BYTES


def test_seal_refuses_an_envelope_over_the_kind_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Presence, "MAX_BYTES", 100)
    with pytest.raises(WireError) as info:
        seal(presence(), ALICE, NOW, NONCE)
    assert info.value.reason is RejectReason.OVERSIZE


def test_tampered_body_byte_is_bad_signature() -> None:
    data = seal(presence(), ALICE, NOW, NONCE)
    at = data.index(b"llama3.2")
    tampered = data[:at] + b"L" + data[at + 1 :]
    body = decode_envelope(tampered).body
    assert isinstance(body, Presence)
    assert body.models[0] == "Llama3.2:1b"
    assert verify_reason(tampered) is RejectReason.BAD_SIGNATURE


def test_tampered_timestamp_is_bad_signature() -> None:
    data = seal(presence(), ALICE, NOW, NONCE)
    encoded = b"\xcb" + struct.pack(">d", NOW)
    at = data.index(encoded) + len(encoded) - 1
    tampered = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
    assert decode_envelope(tampered).timestamp != NOW
    assert verify_reason(tampered) is RejectReason.BAD_SIGNATURE


def test_tampered_signature_is_bad_signature() -> None:
    fields = wire_fields(seal(presence(), ALICE, NOW, NONCE))
    fields[7] = bytes([fields[7][0] ^ 0x80]) + fields[7][1:]
    assert verify_reason(pack(fields)) is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "change",
    [
        {"peer_id": BOB.peer_id},
        {"listen_addrs": ("/ip4/10.0.0.1/tcp/4001",)},
        {"models": ("llama3.2:1b",)},
        {"mean_service_s": None},
        {"service_var_s2": 0.5},
        {"queue_length": 2},
        {"queue_capacity": 9},
        {"arrival_rate": None},
        {"interval_s": 10.0},
    ],
)
def test_signature_covers_every_body_field(change: dict[str, Any]) -> None:
    env = decode_envelope(seal(presence(), ALICE, NOW, NONCE))
    forged = attrs.evolve(env, body=attrs.evolve(env.body, **change))
    with pytest.raises(WireError) as info:
        verify_envelope(forged)
    assert info.value.reason is RejectReason.BAD_SIGNATURE


def test_signed_payload_is_domain_separated_and_covers_the_kind() -> None:
    env = decode_envelope(seal(presence(), ALICE, NOW, NONCE))
    payload = msgpack.unpackb(signed_payload(env), raw=False)
    assert payload[:3] == ["dmoa-p2p/envelope", PROTOCOL_VERSION, "presence"]


def test_key_of_alice_claiming_author_bob_is_key_mismatch() -> None:
    unsigned = decode_envelope(seal(presence(), ALICE, NOW, NONCE))
    claimed = attrs.evolve(unsigned, author=BOB.peer_id)
    forged = attrs.evolve(claimed, signature=ALICE.sign(signed_payload(claimed)))
    assert verify_reason(encode_envelope(forged)) is RejectReason.KEY_MISMATCH


def test_int_timestamp_on_the_wire_is_read_as_the_same_float() -> None:
    fields = wire_fields(seal(presence(), ALICE, NOW, NONCE))
    fields[4] = int(NOW)
    env = decode_envelope(pack(fields))
    assert type(env.timestamp) is float
    verify_envelope(env)


def test_other_versions_are_unknown_whatever_their_layout() -> None:
    fields = wire_fields(seal(presence(), ALICE, NOW, NONCE))
    assert reason_of(pack([PROTOCOL_VERSION + 1, *fields[1:]])) is RejectReason.UNKNOWN_VERSION
    # version 1 had no service_samples and admitted_rate in presence
    assert reason_of(pack([1, *fields[1:]])) is RejectReason.UNKNOWN_VERSION
    assert reason_of(pack([PROTOCOL_VERSION + 1])) is RejectReason.UNKNOWN_VERSION
    assert reason_of(pack([0, "x", "y"])) is RejectReason.UNKNOWN_VERSION


def test_unknown_kind() -> None:
    fields = wire_fields(seal(presence(), ALICE, NOW, NONCE))
    fields[1] = "task-from-the-future"
    assert reason_of(pack(fields)) is RejectReason.UNKNOWN_KIND


def test_over_the_global_cap_is_oversize_before_parsing() -> None:
    assert reason_of(b"\xff" * (MAX_ENVELOPE_BYTES + 1)) is RejectReason.OVERSIZE


def test_over_the_kind_cap_is_oversize() -> None:
    fields = wire_fields(seal(presence(), ALICE, NOW, NONCE))
    fields[6]["models"] = ["m" * (Presence.MAX_BYTES + 1)]
    data = pack(fields)
    assert Presence.MAX_BYTES < len(data) < MAX_ENVELOPE_BYTES
    assert reason_of(data) is RejectReason.OVERSIZE


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        pack(1),
        pack({"version": 1}),
        pack([]),
        pack([True]),
        pack([1.0]),
        pack([PROTOCOL_VERSION, "presence"]),
        pack([PROTOCOL_VERSION, 7, 0, 0, 0, 0, 0, 0]),
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        b"\x91" * 100_000,  # nesting far deeper than any message
        b"\xd4\x05\x00",  # extension type
    ],
)
def test_garbage_is_malformed(data: bytes) -> None:
    assert reason_of(data) is RejectReason.MALFORMED


def test_trailing_bytes_are_malformed() -> None:
    assert reason_of(seal(presence(), ALICE, NOW, NONCE) + b"\x00") is RejectReason.MALFORMED


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (2, 12),
        (2, ""),
        (3, b"k" * 31),
        (3, "k" * 32),
        (4, True),
        (4, "1700000000"),
        (4, math.inf),
        (4, math.nan),
        (5, b"n" * 15),
        (5, b"n" * 17),
        (6, []),
        (6, None),
        (7, b"s" * 63),
        (7, None),
    ],
)
def test_bad_envelope_fields_are_malformed(index: int, value: Any) -> None:
    fields = wire_fields(seal(presence(), ALICE, NOW, NONCE))
    fields[index] = value
    assert reason_of(pack(fields)) is RejectReason.MALFORMED


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("peer_id", 5),
        ("peer_id", ""),
        ("listen_addrs", "/ip4/127.0.0.1/tcp/4001"),
        ("listen_addrs", [1]),
        ("listen_addrs", ["a"] * 17),
        ("listen_addrs", ["a" * 257]),
        ("models", ["m" * 129]),
        ("models", {"a": 1}),
        ("mean_service_s", "2.5"),
        ("mean_service_s", -0.1),
        ("mean_service_s", math.nan),
        ("service_var_s2", math.inf),
        ("service_var_s2", False),
        ("service_samples", -1),
        ("service_samples", None),
        ("queue_length", True),
        ("queue_length", "1"),
        ("queue_length", 1.0),
        ("queue_length", -1),
        ("queue_capacity", 2**64 - 1),
        ("arrival_rate", [0.1]),
        ("interval_s", 0.0),
        ("interval_s", None),
        ("interval_s", -5),
    ],
)
def test_bad_body_fields_are_malformed(name: str, value: Any) -> None:
    fields = wire_fields(seal(presence(), ALICE, NOW, NONCE))
    fields[6][name] = value
    with pytest.raises(WireError) as info:
        decode_envelope(pack(fields))
    assert info.value.reason is RejectReason.MALFORMED
    assert name in str(info.value)


def test_missing_and_extra_body_fields_are_malformed() -> None:
    fields = wire_fields(seal(presence(), ALICE, NOW, NONCE))
    del fields[6]["arrival_rate"]
    assert reason_of(pack(fields)) is RejectReason.MALFORMED
    fields = wire_fields(seal(presence(), ALICE, NOW, NONCE))
    fields[6]["load"] = 1
    assert reason_of(pack(fields)) is RejectReason.MALFORMED


@pytest.mark.parametrize(
    "change",
    [
        {"queue_length": True},
        {"models": ["llama"]},
        {"models": "llama"},
        {"interval_s": 0},
        {"arrival_rate": math.nan},
        {"peer_id": "p" * 129},
    ],
)
def test_presence_validates_on_construction(change: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        presence(**change)


def test_envelope_rejects_a_body_of_another_kind() -> None:
    env = decode_envelope(seal(presence(), ALICE, NOW, NONCE))
    with pytest.raises(TypeError):
        attrs.evolve(env, kind="proposal")


def test_error_message_is_readable() -> None:
    error = WireError(RejectReason.STALE, "x" * 1000)
    assert str(error).startswith("stale: ")
    assert len(str(error)) < 400
