"""Bounds on what a peer sends: each accepts its limit and rejects just past it, as MALFORMED."""

from __future__ import annotations

import math
from typing import Any

import attrs
import msgpack
import pytest

from dmoa_p2p.backends import GenerationParams
from dmoa_p2p.config import NodeConfig
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.moa import DEFAULT_LAYER_TIMEOUT_S, MAX_LAYERS
from dmoa_p2p.simulate import UNBOUNDED_QUEUE, RunConfig
from dmoa_p2p.wire import (
    ChatTurn,
    Message,
    Presence,
    Proposal,
    Refusal,
    RejectReason,
    Task,
    WireError,
    decode_envelope,
    limits,
    seal,
)

NOW = 1_700_000_000.0
ALICE = NodeIdentity.from_seed(b"a" * 32)
BOB = NodeIdentity.from_seed(b"b" * 32)

PRESENCE = Presence(
    peer_id=ALICE.peer_id,
    listen_addrs=("/ip4/127.0.0.1/tcp/4001",),
    models=("llama3.2:1b",),
    mean_service_s=2.5,
    service_var_s2=0.25,
    service_samples=64,
    queue_length=1,
    queue_capacity=8,
    arrival_rate=0.1,
    admitted_rate=0.05,
    interval_s=2.0,
)
BASE: dict[type[Message], Message] = {
    Presence: PRESENCE,
    Task: Task(
        query_id="q1",
        layer=1,
        origin=ALICE.peer_id,
        recipient=BOB.peer_id,
        messages=(ChatTurn("user", "hello"),),
        max_tokens=256,
        temperature=0.7,
        seed=7,
        deadline_s=300.0,
    ),
    Proposal: Proposal(
        query_id="q1",
        layer=1,
        origin=ALICE.peer_id,
        recipient=ALICE.peer_id,
        text="an answer",
        model="llama3.2:1b",
        queue_wait_s=0.5,
        service_s=2.0,
        prompt_tokens=12,
        completion_tokens=40,
    ),
    Refusal: Refusal(
        query_id="q1",
        layer=1,
        origin=ALICE.peer_id,
        recipient=ALICE.peer_id,
        reason="queue full",
        retry_after_s=4.0,
    ),
}


def above(limit: float) -> float:
    return math.nextafter(limit, math.inf)


def below(limit: float) -> float:
    return math.nextafter(limit, -math.inf)


# (kind, field, the last value accepted, the first one rejected)
EDGES: list[tuple[type[Message], str, Any, Any]] = [
    (Presence, "interval_s", limits.MIN_INTERVAL_S, below(limits.MIN_INTERVAL_S)),
    (Presence, "interval_s", limits.MAX_INTERVAL_S, above(limits.MAX_INTERVAL_S)),
    (Presence, "mean_service_s", limits.MAX_SERVICE_S, above(limits.MAX_SERVICE_S)),
    (Presence, "mean_service_s", 0.0, below(0.0)),
    (Presence, "service_var_s2", limits.MAX_SERVICE_VAR_S2, above(limits.MAX_SERVICE_VAR_S2)),
    (Presence, "service_samples", limits.MAX_SERVICE_SAMPLES, limits.MAX_SERVICE_SAMPLES + 1),
    (Presence, "queue_capacity", 1, 0),
    (Presence, "queue_length", 8, 9),  # the base presence's capacity
    (Presence, "queue_length", 0, -1),
    (Presence, "arrival_rate", limits.MAX_RATE_PER_S, above(limits.MAX_RATE_PER_S)),
    (Presence, "admitted_rate", limits.MAX_RATE_PER_S, above(limits.MAX_RATE_PER_S)),
    (Task, "layer", limits.MAX_LAYER, limits.MAX_LAYER + 1),
    (Task, "max_tokens", limits.MAX_TASK_TOKENS, limits.MAX_TASK_TOKENS + 1),
    (Task, "max_tokens", 1, 0),
    (Task, "temperature", limits.MAX_TEMPERATURE, above(limits.MAX_TEMPERATURE)),
    (Task, "seed", limits.MAX_SEED, limits.MAX_SEED + 1),
    (Task, "seed", 0, -1),
    (Task, "deadline_s", limits.MAX_DEADLINE_S, above(limits.MAX_DEADLINE_S)),
    (Task, "deadline_s", above(0.0), 0.0),
    (Proposal, "layer", limits.MAX_LAYER, limits.MAX_LAYER + 1),
    (Proposal, "queue_wait_s", limits.MAX_REPORTED_S, above(limits.MAX_REPORTED_S)),
    (Proposal, "service_s", limits.MAX_REPORTED_S, above(limits.MAX_REPORTED_S)),
    (Proposal, "prompt_tokens", limits.MAX_TOKEN_COUNT, limits.MAX_TOKEN_COUNT + 1),
    (Proposal, "completion_tokens", limits.MAX_TOKEN_COUNT, limits.MAX_TOKEN_COUNT + 1),
    (Refusal, "layer", limits.MAX_LAYER, limits.MAX_LAYER + 1),
    (Refusal, "retry_after_s", limits.MAX_RETRY_AFTER_S, above(limits.MAX_RETRY_AFTER_S)),
]
IDS = [f"{kind.KIND}.{name}={ok!r}" for kind, name, ok, _ in EDGES]


def pack(value: Any) -> bytes:
    data = msgpack.packb(value, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


@pytest.mark.parametrize(("kind", "name", "ok", "bad"), EDGES, ids=IDS)
def test_the_limit_itself_is_accepted(kind: type[Message], name: str, ok: Any, bad: Any) -> None:
    body = attrs.evolve(BASE[kind], **{name: ok})
    assert decode_envelope(seal(body, ALICE, NOW)).body == body


@pytest.mark.parametrize(("kind", "name", "ok", "bad"), EDGES, ids=IDS)
def test_just_past_the_limit_is_malformed(
    kind: type[Message], name: str, ok: Any, bad: Any
) -> None:
    fields = msgpack.unpackb(seal(BASE[kind], ALICE, NOW), raw=False)
    fields[6][name] = bad
    with pytest.raises(WireError) as info:
        decode_envelope(pack(fields))
    assert info.value.reason is RejectReason.MALFORMED
    assert name in info.value.detail
    # and no node can build such a message to send
    with pytest.raises(ValueError, match=name):
        attrs.evolve(BASE[kind], **{name: bad})


def test_the_largest_queue_is_full_at_its_capacity() -> None:
    full = attrs.evolve(
        PRESENCE,
        queue_length=limits.MAX_QUEUE_CAPACITY,
        queue_capacity=limits.MAX_QUEUE_CAPACITY,
    )
    assert decode_envelope(seal(full, ALICE, NOW)).body == full
    with pytest.raises(ValueError, match="queue_capacity"):
        attrs.evolve(full, queue_capacity=limits.MAX_QUEUE_CAPACITY + 1)


def test_the_wire_layer_bound_follows_the_engines() -> None:
    # layers 1..MAX_LAYERS propose; traces number the final aggregation MAX_LAYERS + 1
    assert limits.MAX_LAYER == MAX_LAYERS + 1


def default(cls: type, name: str) -> Any:
    return attrs.fields_dict(cls)[name].default


def test_honest_defaults_are_inside_the_bounds() -> None:
    interval = default(NodeConfig, "presence_interval_s")
    assert limits.MIN_INTERVAL_S <= interval <= limits.MAX_INTERVAL_S
    assert 1 <= default(NodeConfig, "queue_capacity") <= limits.MAX_QUEUE_CAPACITY
    interval = default(RunConfig, "presence_interval_s")
    assert limits.MIN_INTERVAL_S <= interval <= limits.MAX_INTERVAL_S
    assert UNBOUNDED_QUEUE <= limits.MAX_QUEUE_CAPACITY
    params = GenerationParams()
    assert 1 <= params.max_tokens <= limits.MAX_TASK_TOKENS
    assert 0 <= params.temperature <= limits.MAX_TEMPERATURE
    assert 0 < DEFAULT_LAYER_TIMEOUT_S <= limits.MAX_DEADLINE_S
