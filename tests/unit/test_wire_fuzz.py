"""Property tests: hostile or random input only ever yields WireError."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.wire import (
    MessageGate,
    Presence,
    RejectReason,
    WireError,
    decode_envelope,
    limits,
    seal,
)

NOW = 1_700_000_000.0
ALICE = NodeIdentity.from_seed(b"a" * 32)
BODY = Presence(
    peer_id=ALICE.peer_id,
    listen_addrs=("/ip4/127.0.0.1/tcp/4001", "/ip6/::1/tcp/4001"),
    models=("llama3.2:1b",),
    mean_service_s=2.5,
    service_var_s2=None,
    service_samples=0,
    queue_length=1,
    queue_capacity=8,
    arrival_rate=0.2,
    admitted_rate=0.1,
    interval_s=5.0,
)
VALID = seal(BODY, ALICE, NOW)
VALID_FIELDS: list[Any] = msgpack.unpackb(VALID, raw=False)

FUZZ = settings(max_examples=300, deadline=None)
# Drawing structured values costs more per example than decoding them; keep the file quick.
FUZZ_STRUCTURED = settings(max_examples=200, deadline=None)

# One strategy per msgpack type, so "any type but these" needs no filtering.
BY_TYPE: dict[type, st.SearchStrategy[Any]] = {
    type(None): st.none(),
    bool: st.booleans(),
    int: st.integers(min_value=-(2**63), max_value=2**64 - 1),
    float: st.floats(),
    str: st.text(max_size=20),
    bytes: st.binary(max_size=70),
}
scalars = st.one_of(*BY_TYPE.values())
BY_TYPE[list] = st.lists(scalars, max_size=4)
BY_TYPE[dict] = st.dictionaries(st.text(max_size=8), scalars, max_size=4)
msgpack_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)

# The Python types a decoder may legitimately see at each position, before range checks.
ENVELOPE_TYPES: list[tuple[type, ...]] = [
    (int,),
    (str,),
    (str,),
    (bytes,),
    (int, float),
    (bytes,),
    (dict,),
    (bytes,),
]
OPTIONAL_FLOAT = (float, int, type(None))
BODY_TYPES: dict[str, tuple[type, ...]] = {
    "peer_id": (str,),
    "listen_addrs": (list,),
    "models": (list,),
    "mean_service_s": OPTIONAL_FLOAT,
    "service_var_s2": OPTIONAL_FLOAT,
    "service_samples": (int,),
    "queue_length": (int,),
    "queue_capacity": (int,),
    "arrival_rate": OPTIONAL_FLOAT,
    "admitted_rate": OPTIONAL_FLOAT,
    "interval_s": (float, int),
}


def wrong_type(allowed: tuple[type, ...]) -> st.SearchStrategy[Any]:
    # exact types: bool is not in `allowed` for an int field, so True is drawn as a wrong value
    return st.one_of(*(strategy for t, strategy in BY_TYPE.items() if t not in allowed))


def pack(value: Any) -> bytes:
    data = msgpack.packb(value, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):  # the one exception decoding may raise
        decode_envelope(data)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=8))]
        else:
            del data[at:]
    return bytes(data)


@FUZZ
@given(mutations())
def test_mutated_messages_only_raise_wire_error(data: bytes) -> None:
    gate = MessageGate(clock=lambda: NOW)
    try:
        env = gate.admit(data)
    except WireError as error:
        assert gate.rejections[error.reason] == 1
        assert gate.accepted == 0
    else:
        # only an encoding-preserving change can get through the signature check
        assert env.body == BODY
        assert gate.accepted == 1


@FUZZ_STRUCTURED
@given(st.data())
def test_wrong_types_in_envelope_fields_are_malformed(data: st.DataObject) -> None:
    positions = data.draw(
        st.sets(st.integers(min_value=0, max_value=7), min_size=1), label="positions"
    )
    fields = list(VALID_FIELDS)
    for i in positions:
        fields[i] = data.draw(wrong_type(ENVELOPE_TYPES[i]), label=f"field {i}")
    try:
        decode_envelope(pack(fields))
    except WireError as error:
        assert error.reason is RejectReason.MALFORMED
    else:
        raise AssertionError("a wrongly typed envelope was decoded")


@FUZZ_STRUCTURED
@given(st.data())
def test_wrong_types_in_body_fields_are_malformed(data: st.DataObject) -> None:
    names = data.draw(st.sets(st.sampled_from(sorted(BODY_TYPES)), min_size=1), label="names")
    fields = list(VALID_FIELDS)
    body = dict(fields[6])
    for name in names:
        body[name] = data.draw(wrong_type(BODY_TYPES[name]), label=name)
    fields[6] = body
    try:
        decode_envelope(pack(fields))
    except WireError as error:
        assert error.reason is RejectReason.MALFORMED
    else:
        raise AssertionError("a wrongly typed body was decoded")


@FUZZ_STRUCTURED
@given(st.lists(msgpack_values, max_size=10))
def test_random_arrays_only_raise_wire_error(fields: list[Any]) -> None:
    with pytest.raises(WireError):  # a random array never decodes, nor raises anything else
        decode_envelope(pack(fields))


short_text = st.text(min_size=1, max_size=40)


def optional_metric(high: float) -> st.SearchStrategy[float | None]:
    return st.none() | st.floats(min_value=0, max_value=high)


@st.composite
def presences(draw: st.DrawFn) -> Presence:
    """Any presence inside the bounds, the bounds themselves included."""
    capacity = draw(st.integers(min_value=1, max_value=limits.MAX_QUEUE_CAPACITY))
    return Presence(
        peer_id=ALICE.peer_id,
        listen_addrs=tuple(draw(st.lists(short_text, max_size=limits.MAX_LISTEN_ADDRS))),
        models=tuple(draw(st.lists(short_text, max_size=limits.MAX_MODELS))),
        mean_service_s=draw(optional_metric(limits.MAX_SERVICE_S)),
        service_var_s2=draw(optional_metric(limits.MAX_SERVICE_VAR_S2)),
        service_samples=draw(st.integers(min_value=0, max_value=limits.MAX_SERVICE_SAMPLES)),
        queue_length=draw(st.integers(min_value=0, max_value=capacity)),
        queue_capacity=capacity,
        arrival_rate=draw(optional_metric(limits.MAX_RATE_PER_S)),
        admitted_rate=draw(optional_metric(limits.MAX_RATE_PER_S)),
        interval_s=draw(st.floats(limits.MIN_INTERVAL_S, limits.MAX_INTERVAL_S)),
    )


@FUZZ
@given(
    presences(),
    st.floats(min_value=NOW - 60, max_value=NOW + 5),
    st.binary(min_size=16, max_size=16),
)
def test_valid_presences_round_trip_through_the_gate(
    body: Presence, timestamp: float, nonce: bytes
) -> None:
    data = seal(body, ALICE, timestamp, nonce)
    assert seal(body, ALICE, timestamp, nonce) == data
    env = MessageGate(clock=lambda: NOW).admit(data)
    assert (env.body, env.timestamp, env.nonce) == (body, timestamp, nonce)


# (field, lowest, highest) of each number in a presence; None passes where it is optional.
PRESENCE_RANGES: list[tuple[str, float, float]] = [
    ("mean_service_s", 0.0, limits.MAX_SERVICE_S),
    ("service_var_s2", 0.0, limits.MAX_SERVICE_VAR_S2),
    ("service_samples", 0, limits.MAX_SERVICE_SAMPLES),
    ("queue_length", 0, limits.MAX_QUEUE_CAPACITY),
    ("queue_capacity", 1, limits.MAX_QUEUE_CAPACITY),
    ("arrival_rate", 0.0, limits.MAX_RATE_PER_S),
    ("admitted_rate", 0.0, limits.MAX_RATE_PER_S),
    ("interval_s", limits.MIN_INTERVAL_S, limits.MAX_INTERVAL_S),
]
# around and beyond the bounds, on both sides, and far out
any_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1.0, max_value=2 * limits.MAX_SERVICE_VAR_S2),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-2, max_value=2 * limits.MAX_QUEUE_CAPACITY),
)


@FUZZ_STRUCTURED
@given(st.data())
def test_a_decoded_presence_is_always_within_bounds(data: st.DataObject) -> None:
    fields = list(VALID_FIELDS)
    body = dict(fields[6])
    for name, _low, _high in PRESENCE_RANGES:
        if data.draw(st.booleans(), label=f"change {name}"):
            body[name] = data.draw(any_number, label=name)
    fields[6] = body
    try:
        env = decode_envelope(pack(fields))
    except WireError as error:
        assert error.reason is RejectReason.MALFORMED
        return
    decoded = env.body
    assert isinstance(decoded, Presence)
    for name, low, high in PRESENCE_RANGES:
        value = getattr(decoded, name)
        assert value is None or low <= value <= high, (name, value)
    assert decoded.queue_length <= decoded.queue_capacity
